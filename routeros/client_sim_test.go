package routeros_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
)

const (
	pool = "storage-pool"
	base = "/storage-pool/metal-csi"
)

// startSim starts a simulator and a client for it that checks its host key.
func startSim(t testing.TB, opts sim.Options, tweak ...func(*routeros.Config)) (*sim.TestServer, *routeros.Client) {
	t.Helper()
	ts := sim.StartTest(t, opts)
	host, port := splitAddr(t, ts.Addr)
	cfg := routeros.Config{
		Address:        host,
		Port:           port,
		User:           ts.User,
		KeyFile:        ts.KeyFile,
		KnownHostsFile: ts.KnownHostsFile,
		DialTimeout:    5 * time.Second,
		AllowedBases:   []string{base},
		RedialBackoff:  20 * time.Millisecond,
	}
	for _, f := range tweak {
		f(&cfg)
	}
	c, err := routeros.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ts, c
}

func splitAddr(t testing.TB, addr string) (string, int) {
	t.Helper()
	i := strings.LastIndexByte(addr, ':')
	var port int
	if _, err := fmt.Sscan(addr[i+1:], &port); err != nil {
		t.Fatal(err)
	}
	return addr[:i], port
}

func slotN(i int) string { return fmt.Sprintf("pvc-%08d-8c1e-4d67-9a1b-0123456789ab", i) }

func createReq(slot string, size int64) routeros.CreateDiskRequest {
	return routeros.CreateDiskRequest{
		Slot: slot, FilePath: base + "/" + slot + ".img", SizeBytes: size,
		NQN: "nqn.2000-02.com.mikrotik:" + slot,
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// countCommands counts logged commands containing all of the parts.
func countCommands(ts *sim.TestServer, parts ...string) int {
	n := 0
next:
	for _, c := range ts.Commands() {
		for _, p := range parts {
			if !strings.Contains(c, p) {
				continue next
			}
		}
		n++
	}
	return n
}

func TestSimDiskLifecycle(t *testing.T) {
	ts, c := startSim(t, sim.Options{})
	ctx := ctxT(t, 20*time.Second)
	slot := slotN(1)

	d, err := c.CreateDisk(ctx, createReq(slot, 3<<29)) // 1.5 GiB
	if err != nil {
		t.Fatal(err)
	}
	if d.Slot != slot || d.Type != "file" || d.Size != 3<<29 || d.FilePath != base+"/"+slot+".img" ||
		d.NQN != "nqn.2000-02.com.mikrotik:"+slot || d.NVMePort != 4420 || !d.NVMeExport || d.FileSizeText != "1536.0MiB" {
		t.Fatalf("created disk %+v", d)
	}
	if n := countCommands(ts, "/disk add", "file-size=1536M "); n != 1 {
		t.Errorf("want one create with file-size=1536M, log %q", ts.Commands())
	}

	got, err := c.GetDisk(ctx, slot)
	if err != nil || got.Size != d.Size || got.NQN != d.NQN {
		t.Fatalf("GetDisk: %+v, %v", got, err)
	}
	if _, err := c.GetDisk(ctx, slotN(99)); !errors.Is(err, routeros.ErrNotFound) {
		t.Errorf("GetDisk of a missing slot: %v, want ErrNotFound", err)
	}
	if _, err := c.CreateDisk(ctx, createReq(slot, 1<<30)); !errors.Is(err, routeros.ErrAlreadyExists) {
		t.Errorf("second create: %v, want ErrAlreadyExists", err)
	}

	if _, err := c.CreateDisk(ctx, createReq(slotN(2), 1)); err != nil {
		t.Fatal(err)
	}
	list, err := c.ListDisks(ctx, "pvc-")
	if err != nil || len(list) != 2 || list[0].Slot != slot || list[1].Slot != slotN(2) || list[1].Size != 1<<20 {
		t.Fatalf("ListDisks: %+v, %v", list, err)
	}
	if list, err := c.ListDisks(ctx, "vm-"); err != nil || len(list) != 0 {
		t.Errorf("ListDisks(vm-): %+v, %v", list, err)
	}

	p, err := c.PoolCapacity(ctx, base)
	if err != nil || p.Name != pool || p.Size != 1<<40 || p.Free <= 0 || p.Free > p.Size {
		t.Fatalf("PoolCapacity: %+v, %v", p, err)
	}
	if _, err := c.PoolCapacity(ctx, "/nopool/x"); !errors.Is(err, routeros.ErrNotFound) {
		t.Errorf("PoolCapacity of a missing pool: %v", err)
	}

	d, err = c.ResizeDisk(ctx, slot, 2<<30)
	if err != nil || d.Size != 2<<30 {
		t.Fatalf("ResizeDisk: %+v, %v", d, err)
	}
	if countCommands(ts, "/disk set", "file-size=2G") != 1 {
		t.Errorf("want one grow to 2G, log %q", ts.Commands())
	}
	if d, err = c.ResizeDisk(ctx, slot, 1<<30); err != nil || d.Size != 2<<30 {
		t.Errorf("shrink request: %+v, %v; want the disk unchanged", d, err)
	}
	if _, err := c.ResizeDisk(ctx, slotN(99), 1<<30); !errors.Is(err, routeros.ErrNotFound) {
		t.Errorf("ResizeDisk of a missing slot: %v", err)
	}

	host := "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
	if err := c.SetAllowedHost(ctx, slot, host); err != nil {
		t.Fatal(err)
	}
	if d, _ := c.GetDisk(ctx, slot); d.AllowHostName != host {
		t.Errorf("allow-host %q", d.AllowHostName)
	}
	if err := c.SetAllowedHost(ctx, slot, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.SetAllowedHost(ctx, slotN(99), host); !errors.Is(err, routeros.ErrNotFound) {
		t.Errorf("SetAllowedHost of a missing slot: %v", err)
	}

	snap := base + "/.snapshots/snap-1.img"
	if err := c.CopyFile(ctx, d.FilePath, snap); err != nil {
		t.Fatal(err)
	}
	files, err := c.ListFiles(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]routeros.File{}
	for _, f := range files {
		paths[f.Path] = f
	}
	if f := paths[d.FilePath]; f.Type != ".img" || f.Size != 2<<30 || f.LastModified.IsZero() {
		t.Errorf("file %+v in %+v", f, files)
	}
	if f, ok := paths[snap]; !ok || f.Size != 2<<30 {
		t.Errorf("snapshot copy %+v in %+v", f, files)
	}

	for range 2 { // idempotent
		if err := c.RemoveDisk(ctx, slot); err != nil {
			t.Fatal(err)
		}
		if err := c.RemoveFile(ctx, d.FilePath); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.GetDisk(ctx, slot); !errors.Is(err, routeros.ErrNotFound) {
		t.Errorf("disk still there: %v", err)
	}
	if files, _ := c.ListFiles(ctx, base); len(files) != 3 { // the other disk's file, .snapshots, the snapshot
		t.Errorf("files after remove: %+v", files)
	}
	if err := c.RemoveFile(ctx, base+"/.snapshots"); !errors.Is(err, routeros.ErrInvalidArgument) {
		t.Errorf("RemoveFile of a directory: %v, want ErrInvalidArgument", err)
	}
	if err := c.RemoveDisk(ctx, pool); !errors.Is(err, routeros.ErrInvalidArgument) {
		t.Errorf("RemoveDisk of the pool's disk: %v, want ErrInvalidArgument", err)
	}
	if v, err := c.Version(ctx); err != nil || v != "7.24.4 (stable)" {
		t.Errorf("Version: %q, %v", v, err)
	}
}

// TestSimReferenceRulesEndToEnd: whatever width the RDS wraps at, with CRLF or not, values
// come back exact (long paths cut inside, grouped sizes, quoted and unquoted values).
func TestSimReferenceRulesEndToEnd(t *testing.T) {
	for _, opts := range []sim.Options{
		{Width: 40}, {Width: 57}, {Width: 80}, {Width: 132, CRLF: true}, {Width: 230}, {Width: -1, CRLF: true},
	} {
		t.Run(fmt.Sprintf("width%d-crlf%v", opts.Width, opts.CRLF), func(t *testing.T) {
			opts.Pools = []sim.Pool{{Name: pool, Size: 8 << 40}}
			_, c := startSim(t, opts)
			ctx := ctxT(t, 20*time.Second)
			sizes := []int64{1, 3 << 29, 10 << 30, 1 << 40, 5<<40 + 7}
			for i, size := range sizes {
				if _, err := c.CreateDisk(ctx, createReq(slotN(i), size)); err != nil {
					t.Fatal(err)
				}
			}
			disks, err := c.ListDisks(ctx, "pvc-")
			if err != nil || len(disks) != len(sizes) {
				t.Fatalf("%d disks, %v", len(disks), err)
			}
			for _, d := range disks {
				var i int
				fmt.Sscanf(d.Slot, "pvc-%08d", &i)
				if d.Size != routeros.RoundUpMiB(sizes[i]) || d.FilePath != base+"/"+d.Slot+".img" ||
					d.NQN != "nqn.2000-02.com.mikrotik:"+d.Slot || d.Model != d.FilePath || d.Flags != "Bt" {
					t.Errorf("disk %d: %+v", i, d)
				}
				if _, ok := d.Props["status"]; ok {
					t.Errorf("file disks have no status: %+v", d.Props)
				}
			}
			if p, err := c.PoolCapacity(ctx, base+"/x"); err != nil || p.Size != 8<<40 || p.Free <= 0 {
				t.Errorf("pool %+v, %v", p, err)
			}
		})
	}
}

func TestSimExactSizes(t *testing.T) {
	ts, c := startSim(t, sim.Options{Pools: []sim.Pool{{Name: pool, Size: 8 << 40}}})
	ctx := ctxT(t, 20*time.Second)
	for i, tc := range []struct {
		size int64
		arg  string
	}{
		{1, "1M"}, {1 << 20, "1M"}, {3 << 29, "1536M"}, {2 << 30, "2G"}, {2<<30 + 1, "2049M"},
		{1 << 40, "1T"}, {1<<40 + 1<<30, "1025G"},
	} {
		d, err := c.CreateDisk(ctx, createReq(slotN(i), tc.size))
		if err != nil {
			t.Fatal(err)
		}
		if countCommands(ts, slotN(i), "file-size="+tc.arg+" ") != 1 {
			t.Errorf("size %d: no create with file-size=%s in %q", tc.size, tc.arg, ts.Commands())
		}
		if d.Size < tc.size || d.Size != routeros.RoundUpMiB(tc.size) {
			t.Errorf("size %d: the RDS reports %d", tc.size, d.Size)
		}
	}
}

// TestSimCreateOnExistingFile: SizeBytes 0 creates the disk on the file already there.
func TestSimCreateOnExistingFile(t *testing.T) {
	ts, c := startSim(t, sim.Options{})
	ctx := ctxT(t, 20*time.Second)
	src, err := c.CreateDisk(ctx, createReq(slotN(1), 3<<30))
	if err != nil {
		t.Fatal(err)
	}
	clone := base + "/" + slotN(2) + ".img"
	if err := c.CopyFile(ctx, src.FilePath, clone); err != nil {
		t.Fatal(err)
	}
	d, err := c.CreateDisk(ctx, createReq(slotN(2), 0))
	if err != nil {
		t.Fatal(err)
	}
	if d.Size != 3<<30 || d.FilePath != clone {
		t.Errorf("disk on existing file: %+v", d)
	}
	if countCommands(ts, "/disk add", slotN(2), "file-size=") != 0 {
		t.Errorf("a create on an existing file must not send file-size: %q", ts.Commands())
	}
}

// TestSimErrorStreams: RouterOS errors are recognised on stdout and stderr, with exit 0 or 1.
func TestSimErrorStreams(t *testing.T) {
	for _, stream := range []sim.Stream{sim.Stdout, sim.Stderr} {
		for _, exit := range []int{0, 1} {
			t.Run(fmt.Sprintf("stream%d-exit%d", stream, exit), func(t *testing.T) {
				ts, c := startSim(t, sim.Options{})
				ts.SetErrorOutput(stream, exit)
				ctx := ctxT(t, 20*time.Second)
				if _, err := c.CreateDisk(ctx, createReq(slotN(1), 1<<30)); err != nil {
					t.Fatal(err)
				}
				_, err := c.CreateDisk(ctx, createReq(slotN(1), 1<<30))
				var ce *routeros.CommandError
				if !errors.Is(err, routeros.ErrAlreadyExists) || !errors.As(err, &ce) || ce.Kind != routeros.KindAlreadyExists ||
					!strings.Contains(ce.Output, "already exists") || !strings.HasPrefix(ce.Command, "/disk add ") {
					t.Errorf("duplicate create: %v (%+v)", err, ce)
				}
				ts.SetDiskFull(true)
				if _, err := c.CreateDisk(ctx, createReq(slotN(2), 1<<30)); !errors.Is(err, routeros.ErrNoSpace) {
					t.Errorf("create on a full pool: %v, want ErrNoSpace", err)
				}
				if _, err := c.ResizeDisk(ctx, slotN(1), 2<<30); !errors.Is(err, routeros.ErrNoSpace) {
					t.Errorf("grow on a full pool: %v, want ErrNoSpace", err)
				}
				ts.SetDiskFull(false)
				if err := c.CopyFile(ctx, base+"/missing.img", base+"/copy.img"); !errors.Is(err, routeros.ErrNotFound) {
					t.Errorf("copy of a missing file: %v, want ErrNotFound", err)
				}
			})
		}
	}
}

// TestSimOldRouterOSWithoutNQN: before 7.21 the RDS rejects nvme-tcp-server-nqn; the client
// creates without it once, remembers, and reports the slot as the NQN.
func TestSimOldRouterOSWithoutNQN(t *testing.T) {
	for _, stream := range []sim.Stream{sim.Stdout, sim.Stderr} {
		for _, exit := range []int{0, 1} {
			t.Run(fmt.Sprintf("stream%d-exit%d", stream, exit), func(t *testing.T) {
				ts, c := startSim(t, sim.Options{Version: "7.20.8"})
				ts.SetErrorOutput(stream, exit)
				ctx := ctxT(t, 20*time.Second)
				for i := range 3 {
					d, err := c.CreateDisk(ctx, createReq(slotN(i), 1<<30))
					if err != nil {
						t.Fatal(err)
					}
					if d.NQN != slotN(i) || d.Size != 1<<30 {
						t.Errorf("disk on RouterOS 7.20: %+v, want the slot as NQN", d)
					}
				}
				if n := countCommands(ts, "/disk add", "nvme-tcp-server-nqn="); n != 1 {
					t.Errorf("%d creates sent the NQN, want exactly the first: %q", n, ts.Commands())
				}
				if n := countCommands(ts, "/disk add"); n != 4 {
					t.Errorf("%d creates, want 4 (one rejected, three without NQN)", n)
				}
			})
		}
	}
}

func TestSimPing(t *testing.T) {
	ts, c := startSim(t, sim.Options{})
	ctx := ctxT(t, 10*time.Second)
	if routeros.Connected(c) {
		t.Fatal("connected before first use: New must not dial")
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if !routeros.Connected(c) {
		t.Error("not connected after Ping")
	}
	st := ts.Stats()
	if st.Sessions != 1 || st.Connections != 1 || len(ts.Commands()) != 0 {
		t.Errorf("Ping should open one session and run nothing: %+v, %q", st, ts.Commands())
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx); !errors.Is(err, routeros.ErrTransport) {
		t.Errorf("Ping after Close: %v, want ErrTransport", err)
	}
}

// TestSimHungCommandGivesUpAtDeadline: a command the RDS never answers returns when its
// context ends, closes its session, and does not hold up the next command.
func TestSimHungCommandGivesUpAtDeadline(t *testing.T) {
	ts, c := startSim(t, sim.Options{}, func(cfg *routeros.Config) { cfg.MaxSessions = 1 })
	if err := c.Ping(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	hold := ts.Hang("/disk print")
	defer hold.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.GetDisk(ctx, slotN(1))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung GetDisk: %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("hung GetDisk returned after %v, want about its 200ms deadline", el)
	}
	if hold.Held() != 1 {
		t.Errorf("held %d commands", hold.Held())
	}
	// the one session slot comes back once the RDS ends the closed session
	v, err := c.Version(ctxT(t, 5*time.Second))
	if err != nil || v == "" {
		t.Fatalf("next command: %q, %v", v, err)
	}
	if !routeros.Connected(c) || ts.Stats().Connections != 1 {
		t.Errorf("a cancelled command must not cost the connection: %+v", ts.Stats())
	}
}

// TestSimCommandTimeout: CommandTimeout bounds an operation whose caller's deadline is
// later; CopyFile is bounded by its caller's context alone.
func TestSimCommandTimeout(t *testing.T) {
	const bound = 200 * time.Millisecond
	ts, c := startSim(t, sim.Options{}, func(cfg *routeros.Config) { cfg.CommandTimeout = bound })
	hold := ts.Hang("/disk print")
	start := time.Now()
	_, err := c.GetDisk(ctxT(t, 5*time.Second), slotN(1))
	if el := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || el > 2*time.Second {
		t.Fatalf("hung GetDisk with a 5s deadline: %v after %v, want DeadlineExceeded after about %v", err, el, bound)
	}
	hold.Release()

	ts.Hang("/file copy")
	ctx, cancel := context.WithTimeout(context.Background(), 4*bound)
	defer cancel()
	start = time.Now()
	err = c.CopyFile(ctx, base+"/a.img", base+"/b.img")
	if el := time.Since(start); !errors.Is(err, context.DeadlineExceeded) || el < 4*bound {
		t.Errorf("hung CopyFile: %v after %v, want DeadlineExceeded at its context's %v, not CommandTimeout's %v", err, el, 4*bound, bound)
	}
}

// TestSimSessionQueueFIFO: with every session busy, callers queue and run in arrival order,
// and never more than MaxSessions sessions are open.
func TestSimSessionQueueFIFO(t *testing.T) {
	ts, c := startSim(t, sim.Options{}, func(cfg *routeros.Config) { cfg.MaxSessions = 1 })
	ctx := ctxT(t, 20*time.Second)
	hold := ts.Hang("slot=\"" + slotN(0))
	var wg sync.WaitGroup
	errs := make([]error, 6)
	wg.Add(1)
	go func() { defer wg.Done(); _, errs[0] = c.GetDisk(ctx, slotN(0)) }()
	if err := hold.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(errs); i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = c.GetDisk(ctx, slotN(i)) }()
		time.Sleep(50 * time.Millisecond) // let it join the queue before the next one
	}
	if n := len(ts.Commands()); n != 1 {
		t.Fatalf("%d commands reached the RDS while its one session was busy: %q", n, ts.Commands())
	}
	hold.Release()
	wg.Wait()
	var order []string
	for _, cmd := range ts.Commands() {
		order = append(order, cmd[strings.Index(cmd, "pvc-"):][:12])
	}
	want := []string{"pvc-00000000", "pvc-00000001", "pvc-00000002", "pvc-00000003", "pvc-00000004", "pvc-00000005"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("commands ran in order %q, want %q", order, want)
	}
	for i, err := range errs {
		if !errors.Is(err, routeros.ErrNotFound) {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if st := ts.Stats(); st.PeakConcurrency != 1 {
		t.Errorf("peak sessions %d, want 1", st.PeakConcurrency)
	}
}

// TestSimQueuedCallerHonoursContext: a caller waiting for a session leaves at its deadline
// and its command never reaches the RDS.
func TestSimQueuedCallerHonoursContext(t *testing.T) {
	ts, c := startSim(t, sim.Options{}, func(cfg *routeros.Config) { cfg.MaxSessions = 1 })
	hold := ts.Hang("/disk print")
	defer hold.Release()
	go c.GetDisk(ctxT(t, 10*time.Second), slotN(0))
	if err := hold.Wait(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Version(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("queued Version: %v after %v", err, time.Since(start))
	}
	hold.Release()
	if countCommands(ts, ":put") != 0 {
		t.Errorf("the abandoned command reached the RDS: %q", ts.Commands())
	}
}

// TestSimServerSessionLimit: when the RDS refuses sessions beyond its own (lower) limit, the
// client waits and retries instead of failing.
func TestSimServerSessionLimit(t *testing.T) {
	// latency beyond the simulator's 50ms grace for a closing session, so it refuses
	ts, c := startSim(t, sim.Options{MaxSessions: 1, Latency: 100 * time.Millisecond},
		func(cfg *routeros.Config) { cfg.MaxSessions = 4 })
	ctx := ctxT(t, 20*time.Second)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = c.Version(ctx) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if st := ts.Stats(); st.Rejected == 0 || st.PeakConcurrency > 1 {
		t.Errorf("stats %+v: want refused sessions and at most 1 open", st)
	}
}

// TestSimDroppedConnection: a connection cut mid-command gives ErrTransport; the next
// command redials and works.
func TestSimDroppedConnection(t *testing.T) {
	for _, at := range []sim.DropPoint{sim.DropBeforeRun, sim.DropAfterRun} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			ts, c := startSim(t, sim.Options{})
			ctx := ctxT(t, 20*time.Second)
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			ts.DropConnection("/disk add", at)
			_, err := c.CreateDisk(ctx, createReq(slotN(1), 1<<30))
			if !errors.Is(err, routeros.ErrTransport) {
				t.Fatalf("create on a dropped connection: %v, want ErrTransport", err)
			}
			// the drop is noticed without another command
			for deadline := time.Now().Add(2 * time.Second); routeros.Connected(c) && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond)
			}
			if routeros.Connected(c) {
				t.Error("still connected after the connection was cut")
			}
			d, err := c.GetDisk(ctx, slotN(1))
			switch {
			case at == sim.DropAfterRun && (err != nil || d.Size != 1<<30):
				t.Errorf("after the drop the create had run: %+v, %v", d, err)
			case at == sim.DropBeforeRun && !errors.Is(err, routeros.ErrNotFound):
				t.Errorf("the create was dropped before it ran: %+v, %v", d, err)
			}
			if st := ts.Stats(); st.Connections != 2 {
				t.Errorf("connections %d, want 2 (one redial)", st.Connections)
			}
		})
	}
}

// TestRedialBackoff: an unreachable RDS is not hammered: after a failed dial, callers fail
// fast until the backoff has passed.
func TestRedialBackoff(t *testing.T) {
	ln := newCountingListener(t)
	c, err := routeros.New(routeros.Config{
		Address: "127.0.0.1", Port: ln.port, User: "admin", Signer: testSigner(t),
		InsecureSkipHostKey: true, DialTimeout: time.Second, RedialBackoff: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t, 10*time.Second)
	for range 20 {
		if err := c.Ping(ctx); !errors.Is(err, routeros.ErrTransport) {
			t.Fatalf("Ping of a server that hangs up: %v, want ErrTransport", err)
		}
	}
	if n := ln.accepted(); n != 1 {
		t.Errorf("%d dials during the backoff, want 1", n)
	}
	time.Sleep(350 * time.Millisecond)
	_ = c.Ping(ctx)
	if n := ln.accepted(); n != 2 {
		t.Errorf("%d dials after the backoff, want 2", n)
	}
}

func TestSimHostKeyMismatch(t *testing.T) {
	other := sim.StartTest(t, sim.Options{})
	_, c := startSim(t, sim.Options{}, func(cfg *routeros.Config) {
		// the other simulator's key, listed for this one's address
		cfg.KnownHostsFile = rewriteKnownHosts(t, other.KnownHostsFile, other.Addr, cfg.Address, cfg.Port)
	})
	err := c.Ping(ctxT(t, 10*time.Second))
	if !errors.Is(err, routeros.ErrTransport) || !strings.Contains(err.Error(), "key") {
		t.Errorf("Ping with a wrong host key: %v", err)
	}
}

func TestSimObserve(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	_, c := startSim(t, sim.Options{}, func(cfg *routeros.Config) {
		cfg.Observe = func(op string, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			if d <= 0 {
				op += "(no duration)"
			}
			if errors.Is(err, routeros.ErrNotFound) {
				op += "(not found)"
			}
			seen[op]++
		}
	})
	ctx := ctxT(t, 10*time.Second)
	if _, err := c.CreateDisk(ctx, createReq(slotN(1), 1<<30)); err != nil {
		t.Fatal(err)
	}
	_, _ = c.GetDisk(ctx, slotN(2))
	want := map[string]int{"CreateDisk": 1, "GetDisk(not found)": 1}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Errorf("observed %v, want %v (once per typed operation)", seen, want)
	}
}

// TestDialTimeout: an RDS that accepts TCP but never speaks SSH costs a caller at most
// DialTimeout, or its own shorter deadline.
func TestDialTimeout(t *testing.T) {
	ln := newSilentListener(t)
	c, err := routeros.New(routeros.Config{
		Address: "127.0.0.1", Port: ln, User: "admin", Signer: testSigner(t),
		InsecureSkipHostKey: true, DialTimeout: 300 * time.Millisecond, RedialBackoff: time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Ping(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Errorf("Ping with a 50ms deadline: %v after %v", err, time.Since(start))
	}
	start = time.Now()
	err = c.Ping(ctxT(t, 10*time.Second))
	if !errors.Is(err, routeros.ErrTransport) || time.Since(start) > 2*time.Second {
		t.Errorf("Ping of a silent server: %v after %v, want ErrTransport after the 300ms dial timeout", err, time.Since(start))
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.Version(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Version with a cancelled context: %v", err)
	}
}
