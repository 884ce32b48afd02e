package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// A restored snapshot or a clone is a byte copy of its source, so an xfs clone carries the
// source's filesystem UUID, and xfs refuses to mount a second filesystem with a UUID that
// is already mounted. Both must be usable on the same node at once (a KubeVirt VM cloned
// from a golden image next to it).
func TestNodeLoopStagesAnXFSCloneBesideItsSource(t *testing.T) {
	e := newLoopEnv(t)
	cap := mountCap(rwoMode, "xfs")
	src := e.createVolume("clone-src", "320M", cap)
	must(t, e.stage(src))
	srcTarget := e.target("src-pod")
	must(t, e.publish(src, srcTarget, false))
	data := pattern("golden-image", 64<<10)
	writeSync(t, filepath.Join(srcTarget, "disk.img"), data, 0)

	clone := e.createVolume("clone-dst", "320M", cap)
	copyFile(t, src.file, clone.file) // what /file copy does on the RDS
	must(t, e.stage(clone))
	cloneTarget := e.target("clone-pod")
	must(t, e.publish(clone, cloneTarget, false))
	checkData(t, filepath.Join(cloneTarget, "disk.img"), data, 0)
	if e.formats.Load() != 1 {
		t.Errorf("%d formats, want 1 (the source only): the clone's filesystem must be used as it is", e.formats.Load())
	}
	for _, v := range []struct {
		vol    *volume
		target string
	}{{clone, cloneTarget}, {src, srcTarget}} {
		must(t, e.unpublish(v.vol, v.target))
		must(t, e.unstage(v.vol))
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
