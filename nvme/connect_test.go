package nvme

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const defaultOpts = "ctrl_loss_tmo=-1,reconnect_delay=5"

func wantOptions(nqn, tail string) string {
	return "transport=tcp,traddr=10.0.0.1,trsvcid=4420,nqn=" + nqn + ",hostnqn=" + testHostNQN + ",hostid=" + testHostID + "," + tail
}

func TestConnect(t *testing.T) {
	vol := testPrefix + "a"
	tests := []struct {
		name    string
		target  Target
		opts    Options
		build   func(f *fakeSys)
		kernel  func(k *fakeKernel, ff *fakeFabrics)
		want    string // disk name
		wantOpt string // exact option string written ("" = none)
		wantErr error
		errHas  string
		wait    time.Duration // bound on the disk wait; 0 = 10s
	}{
		{
			name:   "defaults",
			target: Target{Address: "10.0.0.1", NQN: vol},
			want:   "nvme1n1", wantOpt: wantOptions(vol, defaultOpts),
		},
		{
			name:   "all options",
			target: Target{Address: "10.0.0.1", Port: 4420, NQN: vol, NSID: 1},
			opts: Options{CtrlLossTmo: intp(600), ReconnectDelay: intp(2), KeepAliveTmo: intp(7),
				FastIOFailTmo: intp(30), NrIOQueues: intp(4), QueueSize: intp(64)},
			want:    "nvme1n1",
			wantOpt: wantOptions(vol, "ctrl_loss_tmo=600,reconnect_delay=2,keep_alive_tmo=7,fast_io_fail_tmo=30,nr_io_queues=4,queue_size=64"),
		},
		{
			name:   "nsid 9 is the second head",
			target: Target{Address: "10.0.0.1", NQN: testPrefix + "multi", NSID: 9},
			want:   "nvme1n2", wantOpt: wantOptions(testPrefix+"multi", defaultOpts),
		},
		{
			name:   "joins a subsystem held by a stale mount, disk renumbered",
			target: Target{Address: "10.0.0.1", NQN: vol},
			build: func(f *fakeSys) {
				f.held[3] = true
				f.addSubsystem(3, vol).addController(3, 5, ctrlSpec{})
				f.addHead(3, 1, 1, 100)
				f.removeController(5)
			},
			want: "nvme3n1", wantOpt: wantOptions(vol, defaultOpts), // the fake reuses h=1 once the old head is gone
		},
		{
			name:   "disk appears after the write returns",
			target: Target{Address: "10.0.0.1", NQN: vol},
			kernel: func(k *fakeKernel, _ *fakeFabrics) { k.diskDelay = 30 * time.Millisecond },
			want:   "nvme1n1", wantOpt: wantOptions(vol, defaultOpts),
		},
		{
			name:    "namespace never appears",
			target:  Target{Address: "10.0.0.1", NQN: vol, NSID: 2},
			wait:    200 * time.Millisecond,
			wantOpt: wantOptions(vol, defaultOpts),
			wantErr: ErrNoDisk, errHas: "namespace IDs 1",
		},
		{
			name:   "old kernel lists no options: all are sent",
			target: Target{Address: "10.0.0.1", NQN: vol},
			opts:   Options{FastIOFailTmo: intp(5)},
			kernel: func(_ *fakeKernel, ff *fakeFabrics) { ff.optErr = errnoErr("read", unix.EINVAL) },
			want:   "nvme1n1", wantOpt: wantOptions(vol, defaultOpts+",fast_io_fail_tmo=5"),
		},
		{
			name:   "option the kernel does not list",
			target: Target{Address: "10.0.0.1", NQN: vol},
			opts:   Options{FastIOFailTmo: intp(5)},
			kernel: func(_ *fakeKernel, ff *fakeFabrics) {
				ff.options = strings.Replace(kernelOptions, "fast_io_fail_tmo=%d,", "", 1)
			},
			wantErr: ErrBadOption, errHas: `does not support the NVMe connect option "fast_io_fail_tmo"`,
		},
		{name: "host name instead of IP", target: Target{Address: "rds.lan", NQN: vol}, wantErr: ErrBadOption, errHas: "not an IP"},
		{name: "port out of range", target: Target{Address: "10.0.0.1", Port: 70000, NQN: vol}, wantErr: ErrBadOption, errHas: "not a TCP port"},
		{name: "negative nsid", target: Target{Address: "10.0.0.1", NQN: vol, NSID: -1}, wantErr: ErrBadOption},
		{name: "unmanaged NQN", target: Target{Address: "10.0.0.1", NQN: nixosVar}, wantErr: ErrNotManaged, errHas: nixosVar},
		{name: "NQN with a comma", target: Target{Address: "10.0.0.1", NQN: vol + ",hostnqn=x"}, wantErr: ErrNotManaged},
		{
			name: "fabrics missing", target: Target{Address: "10.0.0.1", NQN: vol},
			kernel:  func(_ *fakeKernel, ff *fakeFabrics) { ff.optErr = errnoErr("open", unix.ENOENT) },
			wantErr: ErrFabricsMissing, errHas: "modprobe nvme-tcp",
		},
	}
	errnos := []struct {
		errno   unix.Errno
		wantErr error
		errHas  string
	}{
		{unix.EIO, ErrSubsystemUnknown, "nvme-tcp-export=yes"},
		{unix.ECONNREFUSED, ErrUnreachable, "nothing listens on 10.0.0.1:4420"},
		{unix.EHOSTUNREACH, ErrUnreachable, "network path"},
		{unix.ENETUNREACH, ErrUnreachable, "network path"},
		{unix.ETIMEDOUT, ErrUnreachable, "network path"},
		{unix.ECONNRESET, ErrUnreachable, "network path"},
		{unix.EINVAL, ErrBadOption, "dmesg"},
		{unix.EADDRINUSE, ErrBadOption, "EADDRINUSE"},
		{unix.ENOMEM, unix.ENOMEM, "cannot allocate memory"},
	}
	for _, e := range errnos {
		e := e
		tests = append(tests, struct {
			name    string
			target  Target
			opts    Options
			build   func(f *fakeSys)
			kernel  func(k *fakeKernel, ff *fakeFabrics)
			want    string
			wantOpt string
			wantErr error
			errHas  string
			wait    time.Duration
		}{
			name:   "errno " + unix.ErrnoName(e.errno),
			target: Target{Address: "10.0.0.1", NQN: vol},
			kernel: func(_ *fakeKernel, ff *fakeFabrics) {
				ff.connectFn = func(string) (string, error) { return "", errnoErr("write", e.errno) }
			},
			wantOpt: wantOptions(vol, defaultOpts), wantErr: e.wantErr, errHas: e.errHas,
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{}) // the node's own /var
			f.addHead(0, 1, 1, 1<<20)
			if tt.build != nil {
				tt.build(f)
			}
			unmanaged := f.snapshot(f.ctrlDir(0), f.subsysDir(0))
			k := &fakeKernel{f: f, exports: map[string][]int{vol: {1}, testPrefix + "multi": {3, 9}}}
			ff := newFakeFabrics()
			ff.connectFn = k.connect
			if tt.kernel != nil {
				tt.kernel(k, ff)
			}
			h := newTestHost(t, f, ff)
			if tt.wait > 0 {
				h.diskWait = tt.wait
			}
			var events []string
			h.cfg.Observe = func(ev string, err error) { events = append(events, fmt.Sprintf("%s:%v", ev, err == nil)) }

			d, err := h.Connect(context.Background(), tt.target, tt.opts)
			k.wg.Wait()
			if got := ff.writes(); (tt.wantOpt == "" && len(got) != 0) || (tt.wantOpt != "" && (len(got) != 1 || got[0] != tt.wantOpt)) {
				t.Errorf("written to /dev/nvme-fabrics:\n%q\nwant:\n%q", got, tt.wantOpt)
			}
			if fmt.Sprint(events) != fmt.Sprintf("[connect:%v]", tt.wantErr == nil) {
				t.Errorf("observed %v", events)
			}
			if f.snapshot(f.ctrlDir(0), f.subsysDir(0)) != unmanaged {
				t.Error("Connect changed the unmanaged subsystem")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(fmt.Sprint(err), tt.errHas) {
					t.Fatalf("Connect = %+v, %v; want %v containing %q", d, err, tt.wantErr, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Connect: %v", err)
			}
			if d.Name != tt.want || d.NQN != tt.target.NQN {
				t.Fatalf("Connect disk = %s (%s), want %s", d.Name, d.NQN, tt.want)
			}
			again, err := h.Resolve(tt.target.NQN, tt.target.NSID)
			if err != nil || again.Name != d.Name || again.Major != d.Major || again.Minor != d.Minor {
				t.Errorf("Resolve after Connect = %+v, %v; want %s", again, err, d.Name)
			}
		})
	}
}

func TestConnectEALREADY(t *testing.T) {
	vol := testPrefix + "a"
	tests := []struct {
		name       string
		existing   ctrlSpec
		want       string // controller reused; "" = error
		wantWrites []string
		wantErr    error
	}{
		{name: "live controller is reused", existing: ctrlSpec{},
			want: "nvme1", wantWrites: []string{"nvme1/ctrl_loss_tmo=-1"}},
		{name: "a reconnecting controller is reused too", existing: ctrlSpec{state: "connecting"},
			want: "nvme1", wantWrites: []string{"nvme1/ctrl_loss_tmo=-1"}},
		{name: "other port: not ours, and the kernel insists", existing: ctrlSpec{trsvcid: 4421}, wantErr: ErrNotConnected},
		{name: "other host NQN: not ours", existing: ctrlSpec{hostnqn: mikrotik + "other", hostid: testHostID}, wantErr: ErrNotConnected},
		{name: "deleting controller is not reused", existing: ctrlSpec{state: "deleting (no IO)"}, wantErr: ErrNotConnected},
		{name: "IPv6 spelled differently", existing: ctrlSpec{traddr: "fd00:0:0:0:0:0:0:1"},
			want: "nvme1", wantWrites: []string{"nvme1/ctrl_loss_tmo=-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
			f.addSubsystem(1, vol).addController(1, 1, tt.existing)
			f.set("class/nvme/nvme1/ctrl_loss_tmo", "600") // made earlier with the kernel's default
			f.addHead(1, 1, 1, 100)
			ff := newFakeFabrics()
			ff.connectFn = func(string) (string, error) { return "", errnoErr("write", unix.EALREADY) }
			h := newTestHost(t, f, ff)
			addr := "10.0.0.1"
			if strings.Contains(tt.existing.traddr, ":") {
				addr = "fd00::1"
			}
			d, err := h.Connect(context.Background(), Target{Address: addr, NQN: vol}, Options{})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Connect = %v, want %v", err, tt.wantErr)
				}
				if n := len(ff.writes()); n != 2 {
					t.Errorf("connect written %d times, want 2 (one retry)", n)
				}
				return
			}
			if err != nil || d.Name != "nvme1n1" || d.Controllers[0].Name != tt.want {
				t.Fatalf("Connect = %+v, %v; want disk nvme1n1 on %s", d, err, tt.want)
			}
			var writes []string
			for _, w := range f.writeLog() {
				writes = append(writes, strings.TrimPrefix(w, f.root+"/class/nvme/"))
			}
			if fmt.Sprint(writes) != fmt.Sprint(tt.wantWrites) {
				t.Errorf("sysfs writes %v, want %v", writes, tt.wantWrites)
			}
		})
	}
}

func TestConnectIdentityConflict(t *testing.T) {
	vol := testPrefix + "a"
	for _, other := range []ctrlSpec{
		{hostnqn: testHostNQN, hostid: "00000000-1111-2222-3333-444444444444"},    // same NQN, other ID
		{hostnqn: mikrotik + "someone-else", hostid: strings.ToUpper(testHostID)}, // same ID, other NQN
	} {
		f := newFakeSys(t)
		f.addSubsystem(0, nixosVar).addController(0, 0, other)
		ff := newFakeFabrics()
		ff.connectFn = func(string) (string, error) { return "", errnoErr("write", unix.EINVAL) }
		_, err := newTestHost(t, f, ff).Connect(context.Background(), Target{Address: "10.0.0.1", NQN: vol}, Options{})
		if !errors.Is(err, ErrIdentityConflict) || !strings.Contains(err.Error(), "controller nvme0") || !strings.Contains(err.Error(), "/etc/nvme/hostnqn") {
			t.Fatalf("Connect with %+v in use = %v; want ErrIdentityConflict naming nvme0 and the fix", other, err)
		}
	}
}

func TestConnectTimesOutWhileKernelBlocks(t *testing.T) {
	f := newFakeSys(t)
	release, entered := make(chan struct{}), make(chan struct{})
	var lateDone sync.WaitGroup
	lateDone.Add(1)
	ff := newFakeFabrics()
	ff.connectFn = func(string) (string, error) {
		defer lateDone.Done()
		close(entered)
		<-release // the kernel still trying to reach the target
		return "", errnoErr("write", unix.ETIMEDOUT)
	}
	h := newTestHost(t, f, ff)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := h.Connect(ctx, Target{Address: "10.0.0.1", NQN: testPrefix + "a"}, Options{})
	took := time.Since(start)
	<-entered
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v, want ErrTimeout wrapping the deadline", err)
	}
	if took > time.Second {
		t.Fatalf("Connect returned after %v; it must return at the deadline (50ms)", took)
	}
	close(release) // the late result is collected, not leaked
	lateDone.Wait()

	// With the deadline already past, nothing is written at all.
	_, err = h.Connect(ctx, Target{Address: "10.0.0.1", NQN: testPrefix + "b"}, Options{})
	if !errors.Is(err, ErrTimeout) || len(ff.writes()) != 1 {
		t.Fatalf("Connect after the deadline = %v with %d writes; want ErrTimeout and no new write", err, len(ff.writes()))
	}
}

func TestConnectUsesConnectTimeout(t *testing.T) {
	f := newFakeSys(t)
	ff := newFakeFabrics()
	block := make(chan struct{})
	defer close(block)
	ff.connectFn = func(string) (string, error) { <-block; return "", errnoErr("write", unix.EIO) }
	h := newTestHost(t, f, ff)
	h.cfg.ConnectTimeout = 30 * time.Millisecond
	start := time.Now()
	_, err := h.Connect(context.Background(), Target{Address: "10.0.0.1", NQN: testPrefix + "a"}, Options{})
	if !errors.Is(err, ErrTimeout) || time.Since(start) > time.Second {
		t.Fatalf("Connect without a caller deadline = %v after %v; want ErrTimeout at ConnectTimeout", err, time.Since(start))
	}
}

func TestConnectReplyOfAnotherSubsystemIsRefused(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
	ff := newFakeFabrics()
	ff.connectFn = func(string) (string, error) { return "instance=0,cntlid=1\n", nil }
	_, err := newTestHost(t, f, ff).Connect(context.Background(), Target{Address: "10.0.0.1", NQN: testPrefix + "a"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "belongs to") {
		t.Fatalf("Connect = %v, want a refusal of a controller of another subsystem", err)
	}
}

func TestProbe(t *testing.T) {
	tests := []struct {
		name    string
		options string
		optErr  error
		want    map[string]bool // options that must be supported
		wantNot []string
		wantErr error
	}{
		{name: "6.1 kernel", options: kernelOptions,
			want: map[string]bool{"hostnqn": true, "hostid": true, "ctrl_loss_tmo": true, "fast_io_fail_tmo": true, "discovery": true}, wantNot: []string{"instance", "cntlid", "tls"}},
		{name: "older kernel without fast_io_fail_tmo", options: "instance=-1,cntlid=-1,transport=%s,ctrl_loss_tmo=%d\n",
			want: map[string]bool{"ctrl_loss_tmo": true}, wantNot: []string{"fast_io_fail_tmo"}},
		{name: "kernel before 5.17 lists nothing", optErr: errnoErr("read", unix.EINVAL),
			want: map[string]bool{"fast_io_fail_tmo": true, "anything": true}},
		{name: "module not loaded", optErr: errnoErr("open", unix.ENOENT), wantErr: ErrFabricsMissing},
		{name: "node without driver", optErr: errnoErr("open", unix.ENODEV), wantErr: ErrFabricsMissing},
		{name: "read error", optErr: errnoErr("read", unix.EIO), wantErr: unix.EIO},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ff := newFakeFabrics()
			ff.options, ff.optErr = tt.options, tt.optErr
			got, err := newTestHost(t, newFakeSys(t), ff).Probe()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Probe = %v, want %v", err, tt.wantErr)
				}
				if errors.Is(err, ErrFabricsMissing) && !strings.Contains(err.Error(), "load the nvme-tcp module on the host (modprobe nvme-tcp)") {
					t.Errorf("error %q does not say how to fix it", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for o := range tt.want {
				if !got.Supports(o) {
					t.Errorf("Supports(%q) = false", o)
				}
			}
			for _, o := range tt.wantNot {
				if got.Supports(o) {
					t.Errorf("Supports(%q) = true", o)
				}
			}
		})
	}
}

func TestNewHostWithoutFabricsStillStarts(t *testing.T) {
	f := newFakeSys(t) // its /dev has no nvme-fabrics
	g, _ := NewGuard(testPrefix)
	h, err := NewHost(Config{SysfsRoot: f.root, DevRoot: f.dev, HostDir: t.TempDir(), Guard: g})
	if err != nil {
		t.Fatalf("NewHost without /dev/nvme-fabrics: %v", err)
	}
	if _, err := h.Probe(); !errors.Is(err, ErrFabricsMissing) {
		t.Fatalf("Probe = %v, want ErrFabricsMissing", err)
	}
	_, err = h.Connect(context.Background(), Target{Address: "10.0.0.1", NQN: testPrefix + "a"}, Options{})
	if !errors.Is(err, ErrFabricsMissing) {
		t.Fatalf("Connect = %v, want ErrFabricsMissing", err)
	}
	if id := h.Identity(); !strings.HasPrefix(id.HostNQN, UUIDHostNQNPrefix) || id.HostID == "" {
		t.Fatalf("Identity() = %+v", id)
	}
	if _, err := NewHost(Config{SysfsRoot: f.root, DevRoot: f.dev, HostDir: t.TempDir()}); err == nil {
		t.Fatal("NewHost without a Guard must fail")
	}
}

// TestSent: Sent names exactly the options connectString writes, so the doctor's list of
// what a connect needs from the kernel cannot drift from what is sent.
func TestSent(t *testing.T) {
	id := Identity{HostNQN: testHostNQN, HostID: testHostID}
	for _, o := range []Options{{}, {KeepAliveTmo: intp(7)}, {CtrlLossTmo: intp(1), QueueSize: intp(64), NrIOQueues: intp(2), FastIOFailTmo: intp(-1)}} {
		s, err := connectString(Target{Address: "10.0.0.1", Port: 4420, NQN: testPrefix + "a", NSID: 1}, id, o, Features{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, kv := range strings.Split(s, ",") {
			name, _, _ := strings.Cut(kv, "=")
			names = append(names, name)
		}
		if got := o.Sent(); !slices.Equal(got, names) {
			t.Errorf("Sent() = %v, connect string %q", got, s)
		}
	}
}
