package loopback

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/routeros/sim"
)

const prefix = "nqn.2000-02.com.mikrotik:pvc-"

type fixture struct {
	dir, exports, state string
	guard               *nvme.Guard
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.Require(t, loopdev.Available())
	dir := t.TempDir()
	g, err := nvme.NewGuard(prefix)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{dir: dir, exports: filepath.Join(dir, "exports"), state: filepath.Join(dir, "state", "loopback.json"), guard: g}
	if err := os.MkdirAll(f.exports, 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) host(t *testing.T) *Host {
	t.Helper()
	h, err := New(Config{ExportsDir: f.exports, StateFile: f.state, Guard: f.guard})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// export creates a sparse backing file and its export link, and detaches every loop
// device of the file when the test ends, whatever happened.
func (f *fixture) export(t *testing.T, nqn string, size int64) string {
	t.Helper()
	file := filepath.Join(f.dir, nqn+".img")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	f.link(t, nqn, file)
	t.Cleanup(func() { detachAll(t, file) })
	return file
}

func (f *fixture) link(t *testing.T, nqn, file string) {
	t.Helper()
	if err := os.Symlink(file, filepath.Join(f.exports, nqn)); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) unlink(t *testing.T, nqn string) {
	t.Helper()
	if err := os.Remove(filepath.Join(f.exports, nqn)); err != nil {
		t.Fatal(err)
	}
}

func detachAll(t testing.TB, file string) {
	devs, err := loopdev.Find(file)
	if err != nil {
		return
	}
	for _, d := range devs {
		if err := d.Detach(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func target(nqn string) nvme.Target { return nvme.Target{Address: "127.0.0.1", Port: 4420, NQN: nqn} }

func TestLoopbackConnectResolveDisconnect(t *testing.T) {
	f := newFixture(t)
	nqn := prefix + "a"
	file := f.export(t, nqn, 8<<20)
	h := f.host(t)
	d, err := h.Connect(ctx(t), target(nqn), nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.SizeBytes != 8<<20 || d.NQN != nqn || d.NSID != 1 || d.Major == 0 {
		t.Fatalf("disk %+v", d)
	}
	devs, err := loopdev.Find(file)
	if err != nil || len(devs) != 1 || devs[0].Path != d.DevPath {
		t.Fatalf("loop devices of %s: %v %v, want %s", file, devs, err, d.DevPath)
	}
	again, err := h.Connect(ctx(t), target(nqn), nvme.Options{})
	if err != nil || again.DevPath != d.DevPath {
		t.Fatalf("second connect: %+v %v, want the same device %s", again, err, d.DevPath)
	}
	r, err := h.Resolve(nqn, 1)
	if err != nil || r.DevPath != d.DevPath || r.Major != d.Major || r.Minor != d.Minor {
		t.Fatalf("resolve: %+v %v", r, err)
	}
	hl, err := h.Health(nqn)
	if err != nil || !hl.Live || !hl.Connected || len(hl.Controllers) != 1 {
		t.Fatalf("health %+v %v", hl, err)
	}
	if err := h.Disconnect(ctx(t), nqn); err != nil {
		t.Fatal(err)
	}
	if devs, _ := loopdev.Find(file); len(devs) != 0 {
		t.Fatalf("still attached after disconnect: %v", devs)
	}
	if _, err := h.Resolve(nqn, 1); !errors.Is(err, nvme.ErrNotConnected) {
		t.Fatalf("resolve after disconnect: %v, want ErrNotConnected", err)
	}
	if hl, err := h.Health(nqn); err != nil || hl.Connected {
		t.Fatalf("health after disconnect %+v %v", hl, err)
	}
	if err := h.Disconnect(ctx(t), nqn); err != nil {
		t.Fatalf("second disconnect: %v", err)
	}
}

func TestLoopbackRefuses(t *testing.T) {
	f := newFixture(t)
	f.export(t, prefix+"ok", 4<<20)
	h := f.host(t)
	for _, tc := range []struct {
		name string
		t    nvme.Target
		want error
	}{
		{"outside the prefix", nvme.Target{Address: "127.0.0.1", NQN: "nqn.2024-01.io.nixos:var"}, nvme.ErrNotManaged},
		{"not exported", target(prefix + "missing"), nvme.ErrSubsystemUnknown},
		{"host name", nvme.Target{Address: "rds.local", NQN: prefix + "ok"}, nvme.ErrBadOption},
		{"port", nvme.Target{Address: "127.0.0.1", Port: 70000, NQN: prefix + "ok"}, nvme.ErrBadOption},
		{"namespace 2", nvme.Target{Address: "127.0.0.1", NQN: prefix + "ok", NSID: 2}, nvme.ErrSubsystemUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := h.Connect(ctx(t), tc.t, nvme.Options{}); !errors.Is(err, tc.want) {
				t.Fatalf("connect: %v, want %v", err, tc.want)
			}
		})
	}
	for name, call := range map[string]func(string) error{
		"resolve":    func(n string) error { _, err := h.Resolve(n, 1); return err },
		"health":     func(n string) error { _, err := h.Health(n); return err },
		"disconnect": func(n string) error { return h.Disconnect(ctx(t), n) },
		"rescan":     func(n string) error { _, err := h.Rescan(ctx(t), n, 1); return err },
	} {
		if err := call("nqn.2024-01.io.nixos:var"); !errors.Is(err, nvme.ErrNotManaged) {
			t.Errorf("%s of an unmanaged NQN: %v, want ErrNotManaged", name, err)
		}
	}
}

func TestLoopbackControllerLoss(t *testing.T) {
	for _, tc := range []struct {
		name        string
		ctrlLossTmo int
		outage      time.Duration
		lost        bool
	}{
		{"reconnects forever", -1, time.Hour, false},
		{"within ctrl_loss_tmo", 30, 29 * time.Second, false},
		{"ctrl_loss_tmo expired", 30, 31 * time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			nqn := prefix + "loss"
			file := f.export(t, nqn, 4<<20)
			h := f.host(t)
			clock := time.Unix(1000, 0)
			h.now = func() time.Time { return clock }
			d, err := h.Connect(ctx(t), target(nqn), nvme.Options{CtrlLossTmo: &tc.ctrlLossTmo})
			if err != nil {
				t.Fatal(err)
			}
			f.unlink(t, nqn)
			hl, err := h.Health(nqn)
			if err != nil || hl.Live || !hl.Connected {
				t.Fatalf("health with the export gone: %+v %v, want connected, not live", hl, err)
			}
			clock = clock.Add(tc.outage)
			_, err = h.Resolve(nqn, 1)
			if tc.lost != errors.Is(err, nvme.ErrNotConnected) || (!tc.lost && err != nil) {
				t.Fatalf("resolve after %v: %v, lost=%v", tc.outage, err, tc.lost)
			}
			f.link(t, nqn, file)
			hl, err = h.Health(nqn)
			if err != nil || hl.Live == tc.lost || hl.Connected == tc.lost {
				t.Fatalf("health with the export back: %+v %v", hl, err)
			}
			again, err := h.Connect(ctx(t), target(nqn), nvme.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.lost && again.DevPath != d.DevPath {
				t.Fatalf("reconnect within ctrl_loss_tmo changed the device %s → %s", d.DevPath, again.DevPath)
			}
			if devs, _ := loopdev.Find(file); len(devs) != 1 {
				t.Fatalf("loop devices of the file: %v, want exactly one", devs)
			}
		})
	}
}

func TestLoopbackRestartFindsAttachments(t *testing.T) {
	f := newFixture(t)
	nqn := prefix + "restart"
	file := f.export(t, nqn, 4<<20)
	d, err := f.host(t).Connect(ctx(t), target(nqn), nvme.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := f.host(t) // a new process over the same state file
	r, err := h.Resolve(nqn, 1)
	if err != nil || r.DevPath != d.DevPath {
		t.Fatalf("resolve after restart: %+v %v, want %s", r, err, d.DevPath)
	}
	if err := h.Disconnect(ctx(t), nqn); err != nil {
		t.Fatal(err)
	}
	if devs, _ := loopdev.Find(file); len(devs) != 0 {
		t.Fatalf("still attached: %v", devs)
	}
	// A record whose device was detached behind our back is dropped at start.
	if _, err := f.host(t).Connect(ctx(t), target(nqn), nvme.Options{}); err != nil {
		t.Fatal(err)
	}
	detachAll(t, file)
	if _, err := f.host(t).Resolve(nqn, 1); !errors.Is(err, nvme.ErrNotConnected) {
		t.Fatalf("resolve of a detached device after restart: %v, want ErrNotConnected", err)
	}
}

func TestLoopbackRescan(t *testing.T) {
	f := newFixture(t)
	nqn := prefix + "grow"
	file := f.export(t, nqn, 4<<20)
	h := f.host(t)
	if _, err := h.Connect(ctx(t), target(nqn), nvme.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, 12<<20); err != nil {
		t.Fatal(err)
	}
	d, err := h.Rescan(ctx(t), nqn, 1)
	if err != nil || d.SizeBytes != 12<<20 {
		t.Fatalf("rescan: %+v %v, want 12 MiB", d, err)
	}
}

func TestLoopbackSweep(t *testing.T) {
	f := newFixture(t)
	claimed, orphan, used, unowned := prefix+"claimed", prefix+"orphan", prefix+"used", prefix+"unowned"
	files := map[string]string{}
	h := f.host(t)
	disks := map[string]*nvme.Disk{}
	for _, nqn := range []string{claimed, orphan, used, unowned} {
		files[nqn] = f.export(t, nqn, 4<<20)
		d, err := h.Connect(ctx(t), target(nqn), nvme.Options{})
		if err != nil {
			t.Fatal(err)
		}
		disks[nqn] = d
	}
	owned := map[string]bool{claimed: true, orphan: true, used: true}
	delete(owned, unowned)
	rep, err := h.Sweep(ctx(t), map[string]bool{claimed: true}, owned, func(d nvme.Disk) bool { return d.DevPath == disks[used].DevPath })
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Disconnected) != 1 || rep.Disconnected[0] != orphan || len(rep.Kept) != 3 || len(rep.Unowned) != 1 || rep.Unowned[0].NQN != unowned {
		t.Fatalf("sweep report %+v", rep)
	}
	for nqn, file := range files {
		devs, _ := loopdev.Find(file)
		if want := nqn != orphan; (len(devs) == 1) != want {
			t.Errorf("%s attached=%v after the sweep, want %v", nqn, len(devs) == 1, want)
		}
	}
}

// TestLoopbackSimulatorExports pins the contract with routeros/sim: a disk added with
// nvme-tcp-export=yes appears as <dir>/.nvme-exports/<nqn>, and disappears with the export.
func TestLoopbackSimulatorExports(t *testing.T) {
	testenv.Require(t, loopdev.Available())
	s, err := sim.New(sim.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	nqn := prefix + "sim"
	if _, err := s.Exec(ctx(t), `/disk add type=file slot=pvc-sim file-path=/storage-pool/v/pvc-sim.img file-size=8M nvme-tcp-export=yes nvme-tcp-server-nqn="`+nqn+`"`); err != nil {
		t.Fatal(err)
	}
	g, _ := nvme.NewGuard(prefix)
	h, err := New(Config{ExportsDir: filepath.Join(s.Dir(), sim.ExportsDirName), StateFile: filepath.Join(t.TempDir(), "s.json"), Guard: g})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { detachAll(t, s.HostPath("/storage-pool/v/pvc-sim.img")) })
	d, err := h.Connect(ctx(t), target(nqn), nvme.Options{})
	if err != nil || d.SizeBytes != 8<<20 {
		t.Fatalf("connect to the simulator's export: %+v %v", d, err)
	}
	if _, err := s.Exec(ctx(t), `/disk set [find slot=pvc-sim] nvme-tcp-export=no`); err != nil {
		t.Fatal(err)
	}
	if hl, err := h.Health(nqn); err != nil || hl.Live {
		t.Fatalf("health after the simulator unexported the disk: %+v %v, want not live", hl, err)
	}
	if err := h.Disconnect(ctx(t), nqn); err != nil {
		t.Fatal(err)
	}
}
