package sim

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func writeAt(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

// /file copy copies the data: a snapshot made from it holds what the volume held.
func TestFileCopyCopiesData(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/metal-csi/pvc-a.img file-size=8M slot=pvc-a nvme-tcp-export=yes`)
	src := s.HostPath("/storage-pool/metal-csi/pvc-a.img")
	pattern := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	writeAt(t, src, 0, pattern)
	writeAt(t, src, 6<<20, pattern)
	mustExec(t, s, `/file copy "storage-pool/metal-csi/pvc-a.img" name="storage-pool/metal-csi/.snapshots/snap-1.img"`)
	want, _ := os.ReadFile(src)
	got, err := os.ReadFile(s.HostPath("/storage-pool/metal-csi/.snapshots/snap-1.img"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("copy differs from its source (len %d vs %d, %v)", len(got), len(want), err)
	}
	writeAt(t, src, 0, []byte("changed"))
	if got, _ := os.ReadFile(s.HostPath("/storage-pool/metal-csi/.snapshots/snap-1.img")); !bytes.Equal(got[:16], pattern[:16]) {
		t.Error("writing the source changed the copy")
	}
	out := mustExec(t, s, `/file print detail where name~"^storage-pool/metal-csi/"`)
	if !regexp.MustCompile(`name=storage-pool/metal-csi/.snapshots/snap-1.img type=.img file size=8192.0KiB last-modified=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`).MatchString(out) {
		t.Errorf("copy not listed as a file:\n%s", out)
	}
	if !strings.Contains(out, "name=storage-pool/metal-csi/.snapshots type=directory") {
		t.Errorf("snapshot directory not listed:\n%s", out)
	}
	if got := execErr(t, s, `/file copy "storage-pool/metal-csi/pvc-a.img" name="storage-pool/metal-csi/.snapshots/snap-1.img"`); got != `failure: file "storage-pool/metal-csi/.snapshots/snap-1.img" already exists` {
		t.Errorf("copy onto an existing file: %q", got)
	}
	if got := execErr(t, s, `/file copy "storage-pool/metal-csi/pvc-a.img" name="nowhere/x.img"`); got != `failure: file path "nowhere/x.img" is not on a mounted disk` {
		t.Errorf("copy outside the pools: %q", got)
	}
}

func TestFileCopyNeedsSpace(t *testing.T) {
	s := newSim(t, Options{Pools: []Pool{{Name: "p", Size: 100 << 20}}})
	mustExec(t, s, `/disk add type=file file-path=/p/a.img file-size=60M slot=a`)
	if got := execErr(t, s, `/file copy "p/a.img" name="p/b.img"`); got != "failure: not enough space" {
		t.Errorf("copy into a full pool: %q", got)
	}
	if _, err := os.Stat(s.HostPath("p/b.img")); !os.IsNotExist(err) {
		t.Errorf("refused copy left a file: %v", err)
	}
}

var sizeRe = regexp.MustCompile(`size=(\S+)`)

// With CopyDuration the copy runs in the background: the destination is listed at once and
// its size grows until it equals the source's.
func TestFileCopyInProgressIsObservable(t *testing.T) {
	s := newSim(t, Options{Width: -1, CopyDuration: 300 * time.Millisecond})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=20M slot=a`)
	writeAt(t, s.HostPath("storage-pool/a.img"), 19<<20, []byte("tail"))
	start := time.Now()
	mustExec(t, s, `/file copy "storage-pool/a.img" name="storage-pool/b.img"`)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("timed copy blocked the command for %v", d)
	}
	sizes := map[string]bool{}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		out := mustExec(t, s, `/file print detail where name="storage-pool/b.img"`)
		m := sizeRe.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("copy not listed while running:\n%s", out)
		}
		sizes[m[1]] = true
		if m[1] == "20.0MiB" {
			break
		}
	}
	if !sizes["20.0MiB"] || len(sizes) < 3 {
		t.Errorf("sizes seen during the copy: %v; want it to grow to 20.0MiB through intermediate sizes", sizes)
	}
	got, _ := os.ReadFile(s.HostPath("storage-pool/b.img"))
	if !bytes.Equal(got[19<<20:19<<20+4], []byte("tail")) {
		t.Error("finished copy lacks the source's data")
	}
}

// Removing a destination while its copy runs stops the copy; nothing re-creates the file.
func TestFileRemoveStopsRunningCopy(t *testing.T) {
	s := newSim(t, Options{CopyDuration: 10 * time.Second})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=20M slot=a`)
	mustExec(t, s, `/file copy "storage-pool/a.img" name="storage-pool/b.img"`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		mustExec(t, s, `/file remove [find name="storage-pool/b.img"]`)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("remove waited for the copy to finish")
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := os.Stat(s.HostPath("storage-pool/b.img")); !os.IsNotExist(err) {
		t.Errorf("file back after remove: %v", err)
	}
}

func TestFileCopySyncHonoursCallerContext(t *testing.T) {
	s := newSim(t, Options{})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a`)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Already cancelled: the copy still happens (the router does not know the client left),
	// the command just does not wait for it.
	_, _ = s.Exec(ctx, `/file copy "storage-pool/a.img" name="storage-pool/b.img"`)
	deadline := time.Now().Add(2 * time.Second)
	for fileSize(t, s.HostPath("storage-pool/b.img")) != 1<<20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := fileSize(t, s.HostPath("storage-pool/b.img")); got != 1<<20 {
		t.Errorf("copy size %d", got)
	}
}
