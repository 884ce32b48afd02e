package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
)

// TestHealLoopControllerLoss: the RDS reboots for longer than ctrl_loss_tmo, the
// controller is given up (its disk vanishes under the mounts), the RDS comes back, and
// the watcher — with no RPC — reconnects a new disk and replaces the stale staging mount
// and every publish bind mount at the same paths, with the data intact and writable.
func TestHealLoopControllerLoss(t *testing.T) {
	e := newLoopEnv(t)
	v := e.createVolume("heal", "64M", mountCap(rwoMode, "ext4"), paramCtrlLossTmo, "0")
	must(t, e.stage(v))
	rw, ro := e.target("writer"), e.target("reader")
	must(t, e.publish(v, rw, false))
	must(t, e.publish(v, ro, true))
	before := pattern("before", 1<<20)
	writeSync(t, filepath.Join(rw, "before.bin"), before, 0)
	old := mountsAt(t, v.staging)[0]
	if n := e.probes.Load(); n != 1 {
		t.Fatalf("the first stage probed the disk %d times, want once", n)
	}

	reasons := e.outage(v, 600*time.Millisecond)
	if len(reasons) == 0 {
		t.Fatal("volume health stayed normal during the outage")
	}
	t.Logf("health during the outage: %v", reasons)

	if !nodeWaitFor(20*time.Second, func() bool {
		s := mountsAt(t, v.staging)
		return len(s) == 1 && (s[0].Major != old.Major || s[0].Minor != old.Minor) && onlyMount(t, rw, s[0]) && onlyMount(t, ro, s[0])
	}) {
		t.Fatalf("not healed: staging %+v, writer %+v, reader %+v (was %d:%d)", mountsAt(t, v.staging), mountsAt(t, rw), mountsAt(t, ro), old.Major, old.Minor)
	}
	checkData(t, filepath.Join(rw, "before.bin"), before, 0)
	checkData(t, filepath.Join(ro, "before.bin"), before, 0)
	after := pattern("after", 1<<20)
	writeSync(t, filepath.Join(rw, "after.bin"), after, 0)
	checkData(t, filepath.Join(ro, "after.bin"), after, 0)
	if err := os.WriteFile(filepath.Join(ro, "x"), nil, 0o644); err == nil {
		t.Fatal("the healed read-only publish target is writable")
	}
	if !nodeWaitFor(5*time.Second, func() bool { return len(attachedDevices(t, v)) == 1 }) {
		t.Fatalf("loop devices after healing: %v, want only the new one", attachedDevices(t, v))
	}
	if h := e.health(v); len(h) != 0 {
		t.Fatalf("volume health after healing: %v, want healthy", h)
	}
	if e.formats.Load() != 1 {
		t.Fatalf("%d formats: healing must never format", e.formats.Load())
	}
	e.waitHealDone(v)
	if n := e.probes.Load(); n != 2 {
		t.Fatalf("%d probes after stage and heal, want 2: a heal probes the new disk once", n)
	}
	must(t, e.unpublish(v, rw))
	must(t, e.unpublish(v, ro))
	must(t, e.unstage(v))
	// The data survives a fresh stage too.
	must(t, e.stage(v))
	c := e.target("checker")
	must(t, e.publish(v, c, false))
	checkData(t, filepath.Join(c, "before.bin"), before, 0)
	checkData(t, filepath.Join(c, "after.bin"), after, 0)
}

// TestHealLoopBlockNode: a published raw block volume gets its device node pointed at
// the new disk after a controller loss (a VM holds the old device open meanwhile).
func TestHealLoopBlockNode(t *testing.T) {
	e := newLoopEnv(t)
	v := e.createVolume("healblk", "16M", blockCap(rwoMode), paramCtrlLossTmo, "0")
	must(t, e.stage(v))
	target := e.target("vm")
	must(t, e.publish(v, target, false))
	data := pattern("vm-disk", 64<<10)
	writeSync(t, target, data, 0)
	holder, err := os.Open(target) // the VM keeps its disk open across the outage
	must(t, err)
	defer holder.Close()
	var st unix.Stat_t
	must(t, unix.Lstat(target, &st))
	oldRdev := st.Rdev
	e.outage(v, 300*time.Millisecond)
	if !nodeWaitFor(20*time.Second, func() bool {
		return unix.Lstat(target, &st) == nil && st.Rdev != oldRdev && st.Mode&unix.S_IFMT == unix.S_IFBLK
	}) {
		t.Fatal("the block publish node still points at the lost device")
	}
	// Loop numbers are reused under parallel tests, so the new device is the attached
	// one that is not the old, not the highest-numbered one.
	devs := attachedDevices(t, v)
	isNew := false
	for _, d := range devs {
		isNew = isNew || unix.Mkdev(d.Major, d.Minor) == st.Rdev && st.Rdev != oldRdev
	}
	if !isNew || st.Mode&0o777 != 0o660 {
		t.Fatalf("node %d:%d mode %#o, want a new device of %v (old %d:%d), 0660", unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Mode&0o777, devs, unix.Major(oldRdev), unix.Minor(oldRdev))
	}
	checkData(t, target, data, 0)
	holder.Close()
	e.waitHealDone(v)
	must(t, e.unpublish(v, target))
	must(t, e.unstage(v))
}

// outage takes the RDS down for d (every export disappears) and returns the volume's
// health reasons seen meanwhile.
func (e *loopEnv) outage(v *volume, d time.Duration) []string {
	e.t.Helper()
	done := make(chan error, 1)
	go func() { done <- e.sim.Reboot(context.Background(), d) }()
	var reasons []string
	for {
		select {
		case err := <-done:
			must(e.t, err)
			return reasons
		case <-time.After(20 * time.Millisecond):
			for _, h := range e.health(v) {
				if !slices.Contains(reasons, h.GetReason()) {
					reasons = append(reasons, h.GetReason())
				}
			}
		}
	}
}

// waitHealDone waits for the watcher to let go of the volume's lock. Its repair is
// visible (new mounts, new device nodes) before it has written the record and released
// the lock; an RPC meanwhile answers Aborted, which kubelet retries and a test must not
// take for a failure.
func (e *loopEnv) waitHealDone(v *volume) {
	e.t.Helper()
	if !nodeWaitFor(10*time.Second, func() bool {
		release, ok := e.n.locks.tryLock(v.id)
		if ok {
			release()
		}
		return ok
	}) {
		e.t.Fatalf("the heal of %s still holds the volume lock after 10 s", v.id)
	}
}

func (e *loopEnv) health(v *volume) []*csi.VolumeHealth_VolumeHealthEntry {
	e.t.Helper()
	r, err := e.n.NodeGetVolumeHealth(nodeCtx(e.t), &csi.NodeGetVolumeHealthRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	must(e.t, err)
	return r.GetVolumeHealth().GetHealthStatuses()
}

// onlyMount reports whether path has exactly one mount, of the same device as want.
func onlyMount(t testing.TB, path string, want *mount.Entry) bool {
	m := mountsAt(t, path)
	return len(m) == 1 && m[0].Major == want.Major && m[0].Minor == want.Minor
}
