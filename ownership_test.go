package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

func TestConnectionLedger(t *testing.T) {
	target := nvme.Target{Address: "10.0.0.1", Port: 4420, NQN: testPrefix + "a"}
	cases := []struct {
		name string
		// step leaves the ledger as a crash at that point would.
		step      func(t *testing.T, l *connectionLedger)
		connected bool // the kernel has the subsystem
		proves    bool
		kept      bool // the record is still there after owned()
	}{
		{name: "nothing recorded", step: func(*testing.T, *connectionLedger) {}, connected: true},
		{name: "intent written, connect never ran", step: func(t *testing.T, l *connectionLedger) { must(t, l.intend(target, false)) }},
		{name: "intent written, connected", connected: true, proves: true, kept: true,
			step: func(t *testing.T, l *connectionLedger) { must(t, l.intend(target, false)) }},
		{name: "connected, reconnected by this driver later", connected: true, proves: true, kept: true,
			step: func(t *testing.T, l *connectionLedger) {
				must(t, l.intend(target, false))
				must(t, l.intend(target, true))
			}},
		{name: "adopted: someone else's connection was there", connected: true, kept: true,
			step: func(t *testing.T, l *connectionLedger) { must(t, l.intend(target, true)) }},
		{name: "disconnect verified, record not yet removed",
			step: func(t *testing.T, l *connectionLedger) { must(t, l.intend(target, false)) }},
		{name: "disconnected and forgotten", connected: true,
			step: func(t *testing.T, l *connectionLedger) {
				must(t, l.intend(target, false))
				must(t, l.forget(target.NQN))
			}},
		{name: "record of an earlier boot", connected: true, kept: true, step: func(t *testing.T, l *connectionLedger) {
			old := &connectionLedger{dir: l.dir, bootID: "an-earlier-boot"}
			must(t, old.intend(target, false))
		}},
		{name: "truncated record", connected: true, kept: true, step: func(t *testing.T, l *connectionLedger) {
			must(t, os.WriteFile(l.path(target.NQN), []byte(`{"version":1,"nqn":`), 0o600))
		}},
		{name: "record of another version", connected: true, kept: true, step: func(t *testing.T, l *connectionLedger) {
			must(t, os.WriteFile(l.path(target.NQN), []byte(`{"version":2,"nqn":"`+target.NQN+`","bootId":"boot-1"}`), 0o600))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := openConnectionLedger(t.TempDir(), "boot-1")
			must(t, err)
			tc.step(t, l)
			if got := l.proves(target.NQN); tc.connected && got != tc.proves {
				t.Errorf("proves = %v, want %v", got, tc.proves)
			}
			owned, err := l.owned(map[string]bool{target.NQN: tc.connected})
			must(t, err)
			if owned[target.NQN] != tc.proves {
				t.Errorf("owned = %v, want %v", owned, tc.proves)
			}
			_, err = os.Stat(l.path(target.NQN))
			if kept := err == nil; kept != tc.kept {
				t.Errorf("record kept = %v, want %v", kept, tc.kept)
			}
		})
	}
}

func unownedGauge(n *nodeService) float64 {
	var m dto.Metric
	if err := n.m.unownedSubsystems.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// TestNodeSweepNeedsProof: the sweep disconnects only what this driver's own intent
// records prove it connected; everything else in the managed prefix stays connected and
// is counted, however unused.
func TestNodeSweepNeedsProof(t *testing.T) {
	e := newLoopEnv(t)
	foreign := e.createVolume("foreign", "16M", blockCap(rwoMode))
	ours := e.createVolume("ours", "16M", blockCap(rwoMode))
	connectForeign(t, e, foreign)
	connectOwned(t, e, ours)
	e.restart()
	e.n.sweep(nodeCtx(t))
	if len(attachedDevices(t, foreign)) != 1 {
		t.Fatal("the sweep disconnected a connection nothing proves it made")
	}
	if len(attachedDevices(t, ours)) != 0 {
		t.Fatal("the sweep left its own abandoned connection")
	}
	if g := unownedGauge(e.n); g != 1 {
		t.Fatalf("rds_csi_unowned_subsystems = %v, want 1", g)
	}
	if _, err := os.Stat(e.n.ledger.path(ours.nqn)); !os.IsNotExist(err) {
		t.Fatalf("the swept connection's record is still there (%v)", err)
	}
	must(t, e.unstage(foreign)) // kubelet's unstage lets go of it
	if len(attachedDevices(t, foreign)) != 0 || unownedGauge(e.n) != 0 {
		t.Fatalf("after NodeUnstageVolume: attached %d, unowned %v", len(attachedDevices(t, foreign)), unownedGauge(e.n))
	}
}

// TestNodeSweepLostState: a state directory that is deleted, emptied or holds an
// unreadable record is never a reason to disconnect a volume.
func TestNodeSweepLostState(t *testing.T) {
	for name, spoil := range map[string]func(t *testing.T, stateDir string){
		"deleted": func(t *testing.T, dir string) {
			for _, sub := range []string{"volumes", "connections"} {
				entries, _ := os.ReadDir(filepath.Join(dir, sub))
				for _, e := range entries {
					must(t, os.Remove(filepath.Join(dir, sub, e.Name())))
				}
				must(t, os.Remove(filepath.Join(dir, sub)))
			}
		},
		"truncated staging record": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "volumes", "pvc-lost.json"), []byte(`{"version":1,"volumeId":"pvc-lo`), 0o600))
		},
		"staging record of an older format": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "volumes", "pvc-lost.json"), []byte(`{"version":0,"volumeId":"pvc-lost"}`), 0o600))
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("lost", "16M", blockCap(rwoMode))
			must(t, e.stage(v))
			e.stop()
			spoil(t, e.cfg.StateDir)
			e.start()
			e.n.sweep(nodeCtx(t))
			if len(attachedDevices(t, v)) != 1 {
				t.Fatal("a spoilt state directory cost a staged volume its connection")
			}
			must(t, e.stage(v)) // kubelet stages it again: adopted
			must(t, e.unstage(v))
			if len(attachedDevices(t, v)) != 0 {
				t.Fatal("unstage after adoption left it connected")
			}
		})
	}
}

// TestNodeTakeover: volumes of the earlier driver (connected without records, a
// filesystem mounted at the staging path) are adopted by kubelet's calls — never
// formatted again — and let go of completely by its unstage.
func TestNodeTakeover(t *testing.T) {
	e := newLoopEnv(t)
	fsVol := e.createVolume("old-fs", "64M", mountCap(rwoMode, "ext4"))
	disk := connectForeign(t, e, fsVol)
	mkfsFile(t, "ext4", disk.DevPath)
	opts, _ := mount.ParseOptions("ext4", nil)
	must(t, mount.Mount(nodeCtx(t), disk.DevPath, fsVol.staging, "ext4", opts))
	writeSync(t, filepath.Join(fsVol.staging, "data"), pattern("old", 4096), 0)
	target := e.target("pod-old")
	must(t, os.MkdirAll(target, 0o750))
	must(t, mount.Bind(nodeCtx(t), fsVol.staging, target, false))
	unstaged := e.createVolume("old-unstaged", "16M", blockCap(rwoMode))
	connectForeign(t, e, unstaged)
	e.restart()
	e.n.sweep(nodeCtx(t))
	if unownedGauge(e.n) != 2 || len(attachedDevices(t, fsVol)) != 1 || len(attachedDevices(t, unstaged)) != 1 {
		t.Fatalf("after the start: unowned %v, attached %d and %d", unownedGauge(e.n), len(attachedDevices(t, fsVol)), len(attachedDevices(t, unstaged)))
	}
	r, err := e.n.NodeGetVolumeStats(nodeCtx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: fsVol.id, VolumePath: target})
	if err != nil || r.GetUsage()[0].GetTotal() == 0 {
		t.Fatalf("stats of the earlier driver's volume before adoption: %v, %v", r, err)
	}
	must(t, e.stage(fsVol))
	must(t, e.publish(fsVol, target, false))
	if e.formats.Load() != 0 {
		t.Fatal("adopting the earlier driver's volume formatted it")
	}
	checkData(t, filepath.Join(target, "data"), pattern("old", 4096), 0)
	if unownedGauge(e.n) != 1 {
		t.Fatalf("unowned after adoption = %v, want 1", unownedGauge(e.n))
	}
	must(t, e.unpublish(fsVol, target))
	must(t, e.unstage(fsVol))
	must(t, e.unstage(unstaged)) // kubelet unstages a volume this plugin never staged
	for _, v := range []*volume{fsVol, unstaged} {
		if len(attachedDevices(t, v)) != 0 {
			t.Fatalf("%s is still connected after NodeUnstageVolume", v.id)
		}
	}
	if unownedGauge(e.n) != 0 {
		t.Fatalf("unowned at the end = %v", unownedGauge(e.n))
	}
}

// TestOwningAttacherUnmanaged: a connect outside the managed prefix is refused before any
// record is written.
func TestOwningAttacherUnmanaged(t *testing.T) {
	e := newLoopEnv(t)
	nqn := "nqn.2024-01.io.nixos:var"
	if _, err := e.n.att.Connect(nodeCtx(t), nvme.Target{Address: "127.0.0.1", NQN: nqn}, nvme.Options{}); !errors.Is(err, nvme.ErrNotManaged) {
		t.Fatalf("Connect(%s) = %v, want ErrNotManaged", nqn, err)
	}
	if _, err := os.Stat(e.n.ledger.path(nqn)); !os.IsNotExist(err) {
		t.Fatalf("an intent record was written for an unmanaged NQN (%v)", err)
	}
}
