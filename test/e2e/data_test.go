//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"os"
	"testing"
)

// pattern is n bytes that depend only on seed: data written on one node is recognised on
// another, and a block of zeroes (a reformatted or blank device) never matches.
func pattern(seed string, n int) []byte {
	r := rand.New(rand.NewChaCha8(sha256.Sum256([]byte(seed))))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// writeSync writes a file and fsyncs it, so the data is on the target, not in a cache.
func writeSync(t testing.TB, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
}

// checkFile requires path to hold exactly want.
func checkFile(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read back %s: %v", path, err)
	}
	sameData(t, path, got, want)
}

func sameData(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: read %d bytes, wrote %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: data differs from what was written, first at byte %d (got %#x, want %#x)", what, i, got[i], want[i])
		}
	}
}

// writeDevice writes data at off on a block device node and flushes it to the target.
func writeDevice(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatalf("write %s at %d: %v", path, off, err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync %s: %v", path, err)
	}
}

// checkDevice requires the block device node at path to hold want at off.
func checkDevice(t testing.TB, path string, off int64, want []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatalf("read %s at %d: %v", path, off, err)
	}
	sameData(t, path, got, want)
}
