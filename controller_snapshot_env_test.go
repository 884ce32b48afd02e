package main

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"
	"time"
)

// quickCopies shortens the copy timing for tests. The simulator's copies grow their file
// and reach the full size only when complete, so a short settle is still right there; the
// tests of preallocating copies set a settle that spans last-modified's one-second ticks.
func quickCopies(t *copyTracker) {
	t.settle, t.poll, t.margin = 20*time.Millisecond, 5*time.Millisecond, 100*time.Millisecond
}

// snapPattern is deterministic test data.
func snapPattern(seed string, n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", seed, i)))
		b.Write(sum[:])
	}
	return b.Bytes()[:n]
}

// snapWrite writes data at off into a file (created if missing) and syncs it.
func snapWrite(t testing.TB, file string, data []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// snapCheck fails the test unless the file holds want at off.
func snapCheck(t testing.TB, file string, want []byte, off int64) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, off); err != nil {
		t.Fatalf("read %s at %d: %v", file, off, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: the %d bytes at %d differ from what was written", file, len(want), off)
	}
}
