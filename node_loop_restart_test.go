package main

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNodeLoopRestart: a new node plugin over the same state directory finds its staged
// volumes (records, mounts, loop attachments): publishing works, nothing is formatted or
// connected twice, and the old publish targets keep working.
func TestNodeLoopRestart(t *testing.T) {
	e := newLoopEnv(t)
	fs := e.createVolume("restart-fs", "64M", mountCap(rwoMode, "ext4"))
	blk := e.createVolume("restart-blk", "16M", blockCap(rwoMode))
	data := pattern("restart", 256<<10)
	fsA, blkA := e.target("fs-a"), e.target("blk-a")
	for _, v := range []*volume{fs, blk} {
		must(t, e.stage(v))
	}
	must(t, e.publish(fs, fsA, false))
	must(t, e.publish(blk, blkA, false))
	writeSync(t, filepath.Join(fsA, "data"), data, 0)
	writeSync(t, blkA, data, 1<<20)
	before := map[string]string{fs.id: attachedDevices(t, fs)[0].Path, blk.id: attachedDevices(t, blk)[0].Path}

	e.restart()

	fsB, blkB := e.target("fs-b"), e.target("blk-b")
	for _, v := range []*volume{fs, blk} {
		must(t, e.stage(v)) // kubelet may stage again after a plugin restart
	}
	must(t, e.publish(fs, fsB, false))
	must(t, e.publish(blk, blkB, false))
	checkData(t, filepath.Join(fsB, "data"), data, 0)
	checkData(t, blkB, data, 1<<20)
	checkData(t, filepath.Join(fsA, "data"), data, 0)
	for _, v := range []*volume{fs, blk} {
		devs := attachedDevices(t, v)
		if len(devs) != 1 || devs[0].Path != before[v.id] {
			t.Fatalf("%s: loop devices after restart %v, want only %s", v.id, devs, before[v.id])
		}
	}
	if e.formats.Load() != 1 {
		t.Fatalf("%d formats, want 1 (the first stage only)", e.formats.Load())
	}
	if m := mountsAt(t, fs.staging); len(m) != 1 {
		t.Fatalf("staging mounts after restart and restage: %d, want 1", len(m))
	}
	var st unix.Stat_t
	must(t, unix.Lstat(blkB, &st))
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("%s is not a block node", blkB)
	}
	for _, p := range [][2]any{{fs, fsA}, {fs, fsB}, {blk, blkA}, {blk, blkB}} {
		must(t, e.unpublish(p[0].(*volume), p[1].(string)))
	}
	for _, v := range []*volume{fs, blk} {
		must(t, e.unstage(v))
		if len(attachedDevices(t, v)) != 0 {
			t.Fatalf("%s still attached", v.id)
		}
	}
}
