package nvme

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

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
