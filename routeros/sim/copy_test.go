package sim

import (
	"bytes"
	"os"
	"regexp"
	"testing"
	"time"
)

var modifiedRe = regexp.MustCompile(`last-modified=(\S+ \S+)`)

// With CopyPreallocate the destination has its full size from the first listing while its
// data is still being written: only last-modified moves. This is the copy behaviour that
// makes "size equals the source's" an unsafe completion test on its own.
func TestFileCopyPreallocatedShowsFullSizeWhileWriting(t *testing.T) {
	s := newSim(t, Options{Width: -1, CopyDuration: 2500 * time.Millisecond, CopyPreallocate: true})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=20M slot=a`)
	src := s.HostPath("storage-pool/a.img")
	data := bytes.Repeat([]byte("fill every piece of the copy.."), (20<<20)/30+1)[:20<<20]
	writeAt(t, src, 0, data)
	mustExec(t, s, `/file copy "storage-pool/a.img" name="storage-pool/b.img"`)
	dst := s.HostPath("storage-pool/b.img")
	modified := map[string]bool{}
	sawIncomplete := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out := mustExec(t, s, `/file print detail where name="storage-pool/b.img"`)
		if m := sizeRe.FindStringSubmatch(out); m == nil || m[1] != "20.0MiB" {
			t.Fatalf("preallocated copy listed without its full size:\n%s", out)
		}
		modified[modifiedRe.FindStringSubmatch(out)[1]] = true
		got, _ := os.ReadFile(dst)
		if bytes.Equal(got, data) {
			break
		}
		sawIncomplete = true
	}
	if got, _ := os.ReadFile(dst); !bytes.Equal(got, data) {
		t.Fatal("the copy never completed")
	}
	if !sawIncomplete || len(modified) < 2 {
		t.Errorf("saw an incomplete copy: %v; last-modified values: %v; want the full size listed while last-modified advanced", sawIncomplete, modified)
	}
}

// Without CopyPreallocate, a timed copy's size is the progress: it reaches the source's
// only once every byte is written.
func TestFileCopyTimedSizeReachesFullOnlyWhenDone(t *testing.T) {
	s := newSim(t, Options{Width: -1, CopyDuration: 400 * time.Millisecond})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=20M slot=a`)
	data := bytes.Repeat([]byte{0x5a}, 20<<20)
	writeAt(t, s.HostPath("storage-pool/a.img"), 0, data)
	mustExec(t, s, `/file copy "storage-pool/a.img" name="storage-pool/b.img"`)
	dst := s.HostPath("storage-pool/b.img")
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == len(data) {
			if !bytes.Equal(got, data) {
				t.Fatal("the copy has the source's size before all of its data")
			}
			return
		}
	}
	t.Fatal("the copy never reached the source's size")
}
