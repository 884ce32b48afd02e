package nvme

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestDisconnect(t *testing.T) {
	vol := testPrefix + "a"
	tests := []struct {
		name       string
		build      func(f *fakeSys)
		deleteFn   func(f *fakeSys) func(c int) error
		wantWrites []string // relative to class/nvme
		wantErr    error
		errHas     string
	}{
		{
			name:       "live controller",
			build:      func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}); f.addHead(1, 1, 1, 100) },
			wantWrites: []string{"nvme1/delete_controller=1"},
		},
		{
			name: "reconnecting controller: settings lowered first",
			build: func(f *fakeSys) {
				f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{state: "connecting"})
				f.addHead(1, 1, 1, 100)
			},
			wantWrites: []string{"nvme1/reconnect_delay=1", "nvme1/ctrl_loss_tmo=0", "nvme1/delete_controller=1"},
		},
		{
			name: "two paths",
			build: func(f *fakeSys) {
				f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}).addController(1, 2, ctrlSpec{state: "resetting", traddr: "10.0.0.2"})
				f.addHead(1, 1, 1, 100)
			},
			wantWrites: []string{"nvme1/delete_controller=1", "nvme2/reconnect_delay=1", "nvme2/ctrl_loss_tmo=0", "nvme2/delete_controller=1"},
		},
		{
			name:  "not connected is success",
			build: func(f *fakeSys) {},
		},
		{
			name: "only pvc-10 connected: pvc-1 is not connected",
			build: func(f *fakeSys) {
				f.addSubsystem(1, vol+"0").addController(1, 1, ctrlSpec{})
				f.addHead(1, 1, 1, 100)
			},
		},
		{
			name: "stale subsystem without controllers is not a connection",
			build: func(f *fakeSys) {
				f.held[1] = true
				f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{})
				f.addHead(1, 1, 1, 100)
				f.removeController(1)
			},
		},
		{
			name:  "controller vanishes before the delete (ctrl loss expired)",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(c int) error { f.removeController(c); return unix.ENOENT }
			},
			wantWrites: []string{"nvme1/delete_controller=1"},
		},
		{
			name:  "delete accepted but controller stays: error after the deadline",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(c int) error { f.set(fmt.Sprintf("class/nvme/nvme%d/state", c), "deleting"); return nil }
			},
			wantWrites: []string{"nvme1/delete_controller=1"},
			wantErr:    ErrTimeout, errHas: "nvme1 deleting",
		},
		{
			name:  "delete hangs (filesystem still mounted)",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(c int) error { time.Sleep(300 * time.Millisecond); return nil }
			},
			wantWrites: []string{"nvme1/delete_controller=1"},
			wantErr:    ErrTimeout, errHas: "unmount it first",
		},
		{
			name:  "controller not started yet",
			build: func(f *fakeSys) { f.addSubsystem(1, vol).addController(1, 1, ctrlSpec{state: "new"}) },
			deleteFn: func(f *fakeSys) func(int) error {
				return func(int) error { return fmt.Errorf("write: %w", unix.EBUSY) }
			},
			wantWrites: []string{"nvme1/reconnect_delay=1", "nvme1/ctrl_loss_tmo=0", "nvme1/delete_controller=1"},
			errHas:     "EBUSY",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
			f.addHead(0, 1, 1, 100)
			tt.build(f)
			if tt.deleteFn != nil {
				f.deleteFn = tt.deleteFn(f)
			}
			unmanaged := f.snapshot(f.ctrlDir(0), f.subsysDir(0))
			h := newTestHost(t, f, newFakeFabrics())
			if errors.Is(tt.wantErr, ErrTimeout) {
				h.cfg.OpTimeout = 100 * time.Millisecond
			}
			var observed []error
			h.cfg.Observe = func(ev string, err error) {
				if ev == "disconnect" {
					observed = append(observed, err)
				}
			}

			err := h.Disconnect(context.Background(), vol)
			var writes []string
			for _, w := range f.writeLog() {
				writes = append(writes, strings.TrimPrefix(w, f.root+"/class/nvme/"))
			}
			if fmt.Sprint(writes) != fmt.Sprint(tt.wantWrites) {
				t.Errorf("sysfs writes %v, want %v", writes, tt.wantWrites)
			}
			if f.snapshot(f.ctrlDir(0), f.subsysDir(0)) != unmanaged {
				t.Error("Disconnect changed the unmanaged subsystem")
			}
			if len(observed) != 1 || observed[0] != err {
				t.Errorf("observed %v, want the one result %v", observed, err)
			}
			if tt.wantErr != nil || tt.errHas != "" {
				if (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(fmt.Sprint(err), tt.errHas) {
					t.Fatalf("Disconnect = %v, want %v containing %q", err, tt.wantErr, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			if left, _ := h.sys.controllersOf(vol); len(left) != 0 {
				t.Fatalf("controllers left after Disconnect: %v", left)
			}
			if err := h.Disconnect(context.Background(), vol); err != nil {
				t.Fatalf("second Disconnect = %v, want nil (idempotent)", err)
			}
		})
	}
}

func TestDisconnectUnmanagedIsRefused(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{state: "connecting"})
	f.addHead(0, 1, 1, 100)
	before := f.snapshot(f.root, f.dev)
	err := newTestHost(t, f, newFakeFabrics()).Disconnect(context.Background(), nixosVar)
	if !errors.Is(err, ErrNotManaged) || !strings.Contains(err.Error(), nixosVar) {
		t.Fatalf("Disconnect(%s) = %v, want ErrNotManaged naming it", nixosVar, err)
	}
	if len(f.writeLog()) != 0 || f.snapshot(f.root, f.dev) != before {
		t.Fatalf("Disconnect of an unmanaged NQN wrote to sysfs: %v", f.writeLog())
	}
}

func TestRescan(t *testing.T) {
	vol := testPrefix + "a"
	tests := []struct {
		name     string
		states   []string
		grow     bool
		wantSize int64
		wantErr  error
	}{
		{name: "grown", states: []string{"live"}, grow: true, wantSize: 400 * 512},
		{name: "not grown: same size after the settle time", states: []string{"live"}, wantSize: 200 * 512},
		{name: "two paths, one live", states: []string{"connecting", "live"}, grow: true, wantSize: 400 * 512},
		{name: "no live controller", states: []string{"connecting"}, wantErr: ErrNotLive},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSys(t)
			f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
			f.addHead(0, 1, 1, 100)
			f.addSubsystem(1, vol)
			for i, st := range tt.states {
				f.addController(1, 1+i, ctrlSpec{state: st, traddr: fmt.Sprintf("10.0.0.%d", i+1)})
			}
			name := f.addHead(1, 1, 1, 200)
			if tt.grow {
				f.pending[name] = 400 // the target grew; the kernel sees it on rescan
			}
			unmanaged := f.snapshot(f.ctrlDir(0), f.subsysDir(0))
			h := newTestHost(t, f, newFakeFabrics())
			h.settle = 50 * time.Millisecond
			d, err := h.Rescan(context.Background(), vol, 0)
			if f.snapshot(f.ctrlDir(0), f.subsysDir(0)) != unmanaged {
				t.Error("Rescan changed the unmanaged subsystem")
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Rescan = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || d.SizeBytes != tt.wantSize {
				t.Fatalf("Rescan = %+v, %v; want size %d", d, err, tt.wantSize)
			}
			for _, w := range f.writeLog() {
				if !strings.HasSuffix(w, "/rescan_controller=1") {
					t.Errorf("unexpected write %s", w)
				}
			}
		})
	}
	t.Run("unmanaged", func(t *testing.T) {
		f := newFakeSys(t)
		f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{})
		f.addHead(0, 1, 1, 100)
		_, err := newTestHost(t, f, newFakeFabrics()).Rescan(context.Background(), nixosVar, 1)
		if !errors.Is(err, ErrNotManaged) || len(f.writeLog()) != 0 {
			t.Fatalf("Rescan(unmanaged) = %v with writes %v", err, f.writeLog())
		}
	})
}

func TestSweep(t *testing.T) {
	f := newFakeSys(t)
	// nvme-subsys0: the node's own /var (unmanaged), in use and reconnecting.
	f.addSubsystem(0, nixosVar).addController(0, 0, ctrlSpec{state: "connecting"})
	f.addHead(0, 1, 1, 100)
	// nvme-subsys1: another unmanaged subsystem of the same vendor, unused.
	f.addSubsystem(1, mikrotik+"nixos-var").addController(1, 1, ctrlSpec{})
	f.addHead(1, 1, 1, 100)
	// nvme-subsys2: claimed volume pvc-1.
	f.addSubsystem(2, testPrefix+"1").addController(2, 2, ctrlSpec{})
	f.addHead(2, 1, 1, 100)
	// nvme-subsys3: unclaimed pvc-10 whose disk is still mounted.
	f.addSubsystem(3, testPrefix+"10").addController(3, 3, ctrlSpec{})
	mounted := f.addHead(3, 1, 1, 100)
	// nvme-subsys4: unclaimed, unused, reconnecting: an orphan.
	f.addSubsystem(4, testPrefix+"11").addController(4, 4, ctrlSpec{state: "connecting"})
	f.addHead(4, 1, 1, 100)
	// nvme-subsys5: unclaimed, unused, no disk yet: an orphan.
	f.addSubsystem(5, testPrefix+"12").addController(5, 5, ctrlSpec{})
	// nvme-subsys6: stale subsystem left after ctrl loss, held by a stale mount.
	f.held[6] = true
	f.addSubsystem(6, testPrefix+"13").addController(6, 6, ctrlSpec{})
	f.addHead(6, 1, 1, 100)
	f.removeController(6)
	// nvme-subsys7: unclaimed, unused, two paths, one with a second namespace in use.
	f.addSubsystem(7, testPrefix+"14").addController(7, 7, ctrlSpec{}).addController(7, 8, ctrlSpec{traddr: "10.0.0.2"})
	f.addHead(7, 1, 1, 100)
	inUseNS5 := f.addHead(7, 2, 5, 100)
	// nvme-subsys8: unclaimed, unused, but nothing proves this driver connected it (the
	// earlier driver's, or ours from a lost state directory): never disconnected.
	f.addSubsystem(8, testPrefix+"15").addController(8, 9, ctrlSpec{})
	f.addHead(8, 1, 1, 100)

	unmanaged := f.snapshot(f.ctrlDir(0), f.subsysDir(0), f.ctrlDir(1), f.subsysDir(1))
	h := newTestHost(t, f, newFakeFabrics())
	var asked []string
	inUse := func(d Disk) bool {
		asked = append(asked, d.Name)
		return d.Name == mounted || d.Name == inUseNS5 || d.NQN == nixosVar
	}
	owned := map[string]bool{}
	for _, n := range []string{"1", "10", "11", "12", "13", "14"} {
		owned[testPrefix+n] = true
	}
	rep, err := h.Sweep(context.Background(), map[string]bool{testPrefix + "1": true}, owned, inUse)
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if got, want := fmt.Sprint(rep.Disconnected), fmt.Sprint([]string{testPrefix + "11", testPrefix + "12"}); got != want {
		t.Errorf("Disconnected %s, want %s", got, want)
	}
	kept := map[string]string{}
	for _, k := range rep.Kept {
		kept[k.NQN] = k.Reason
	}
	for nqn, reason := range map[string]string{
		nixosVar:               "outside the managed prefix",
		mikrotik + "nixos-var": "outside the managed prefix",
		testPrefix + "1":       "claimed",
		testPrefix + "10":      "disk in use: " + mounted,
		testPrefix + "13":      "no controllers left",
		testPrefix + "14":      "disk in use: " + inUseNS5,
		testPrefix + "15":      "not proven to be this driver's connection",
	} {
		if !strings.Contains(kept[nqn], reason) {
			t.Errorf("kept %s with reason %q, want %q", nqn, kept[nqn], reason)
		}
	}
	if len(rep.Kept) != 7 {
		t.Errorf("kept %d subsystems, want 7: %+v", len(rep.Kept), rep.Kept)
	}
	if len(rep.Unowned) != 1 || rep.Unowned[0].NQN != testPrefix+"15" {
		t.Errorf("unowned %+v, want only %s", rep.Unowned, testPrefix+"15")
	}
	for _, name := range asked {
		if strings.HasPrefix(name, "nvme0n") || strings.HasPrefix(name, "nvme1n") {
			t.Errorf("the in-use check was asked about unmanaged disk %s", name)
		}
	}
	if f.snapshot(f.ctrlDir(0), f.subsysDir(0), f.ctrlDir(1), f.subsysDir(1)) != unmanaged {
		t.Error("Sweep changed an unmanaged subsystem")
	}
	for _, w := range f.writeLog() {
		if !strings.Contains(w, "/class/nvme/nvme4/") && !strings.Contains(w, "/class/nvme/nvme5/") {
			t.Errorf("Sweep wrote outside the orphans: %s", w)
		}
	}
	for _, nqn := range rep.Disconnected {
		if left, _ := h.sys.controllersOf(nqn); len(left) != 0 {
			t.Errorf("%s still has controllers %v", nqn, left)
		}
	}
}

func TestSweepRequiresInUseCheck(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, testPrefix+"1").addController(0, 0, ctrlSpec{})
	_, err := newTestHost(t, f, newFakeFabrics()).Sweep(context.Background(), nil, map[string]bool{testPrefix + "1": true}, nil)
	if err == nil || len(f.writeLog()) != 0 {
		t.Fatalf("Sweep without inUse = %v, writes %v; want an error and no writes", err, f.writeLog())
	}
}

func TestSweepGoesOnAfterAFailure(t *testing.T) {
	f := newFakeSys(t)
	f.addSubsystem(0, testPrefix+"1").addController(0, 0, ctrlSpec{})
	f.addSubsystem(1, testPrefix+"2").addController(1, 1, ctrlSpec{})
	f.deleteFn = func(c int) error {
		if c == 0 {
			return fmt.Errorf("write delete_controller: %w", unix.EIO)
		}
		f.removeController(c)
		return nil
	}
	h := newTestHost(t, f, newFakeFabrics())
	owned := map[string]bool{testPrefix + "1": true, testPrefix + "2": true}
	rep, err := h.Sweep(context.Background(), nil, owned, func(Disk) bool { return false })
	if err == nil || !strings.Contains(err.Error(), testPrefix+"1") {
		t.Fatalf("Sweep error = %v, want the failure of %s", err, testPrefix+"1")
	}
	if fmt.Sprint(rep.Disconnected) != fmt.Sprint([]string{testPrefix + "2"}) || len(rep.Kept) != 1 || !strings.Contains(rep.Kept[0].Reason, "disconnect failed") {
		t.Fatalf("report %+v", rep)
	}
}
