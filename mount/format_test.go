package mount

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// recordingRunner fails the test if any tool runs.
func forbidTools(t *testing.T) toolRunner {
	return func(_ context.Context, name string, args ...string) (toolResult, error) {
		t.Errorf("%s %v ran; nothing may be executed for a device that is not provably blank", name, args)
		return toolResult{exitCode: -1}, errors.New("forbidden")
	}
}

// fingerprint is what any write to an image file would change: its
// modification time and its first MiB.
func fingerprint(t *testing.T, path string) string {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, mib)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, _ := f.ReadAt(head, 0)
	return fmt.Sprintf("%d %d %x", st.Size(), st.ModTime().UnixNano(), sha256.Sum256(head[:n]))
}

// checkFormatRefuses runs Format, for real and with a runner that forbids
// mkfs, on an image the probe does not call blank.
func checkFormatRefuses(t *testing.T, path string) {
	t.Helper()
	before := fingerprint(t, path)
	for _, fstype := range []string{"ext4", "xfs"} {
		guarded := fsTools{open: openDevice, run: forbidTools(t)}
		if err := guarded.format(testCtx(t), path, fstype); !errors.Is(err, ErrNotBlank) {
			t.Errorf("format as %s = %v, want ErrNotBlank", fstype, err)
		}
		if err := Format(testCtx(t), path, fstype); !errors.Is(err, ErrNotBlank) {
			t.Errorf("Format as %s = %v, want ErrNotBlank", fstype, err)
		}
	}
	if fingerprint(t, path) != before {
		t.Fatal("a refused Format changed the device")
	}
}

func TestFormatRefusesUnreadable(t *testing.T) {
	for name, path := range failingDevices(t) {
		t.Run(name, func(t *testing.T) {
			guarded := fsTools{open: openDevice, run: forbidTools(t)}
			if err := guarded.format(testCtx(t), path, "ext4"); err == nil {
				t.Fatal("format succeeded, want an error")
			}
			if err := Format(testCtx(t), path, "xfs"); err == nil {
				t.Fatal("Format succeeded, want an error")
			}
		})
	}
	// Faults no real file can produce on demand: EIO, short reads and a
	// read that hangs, at the head, the btrfs mirror and the last byte.
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	image := newImage(t, mib) // real path for the mount check; reads go to the fake
	for _, mode := range []string{"eio", "short without error", "short with EOF", "hang"} {
		for _, failAt := range []int64{0, btrfsMirror + 64, 256*mib - 1} {
			dev := fakeDevice{size: 256 * mib, failAt: failAt, mode: mode, hang: hang}
			tools := fsTools{
				open: func(string) (io.ReaderAt, int64, func() error, error) {
					return dev, dev.size, func() error { return nil }, nil
				},
				run: forbidTools(t),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			if err := tools.format(ctx, image, "ext4"); err == nil {
				t.Errorf("%s at %d: format succeeded, want an error", mode, failAt)
			}
			cancel()
		}
	}
}

func TestFormatBlank(t *testing.T) {
	requireLoop(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			dev, _ := blankFormatted(t, fstype)
			got, err := Probe(ctx, dev.Path)
			if err != nil || got.Kind != Kind(fstype) {
				t.Fatalf("Probe after Format = %+v, %v; want %s", got, err, fstype)
			}
			if err := Format(ctx, dev.Path, fstype); !errors.Is(err, ErrNotBlank) {
				t.Fatalf("second Format = %v, want ErrNotBlank", err)
			}
			target := mountPoint(t)
			if err := Mount(ctx, dev.Path, target, fstype, Options{}); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(target, "f"), []byte("data"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := Format(ctx, dev.Path, fstype); !errors.Is(err, ErrInUse) {
				t.Fatalf("Format of a mounted device = %v, want ErrInUse", err)
			}
			if st, err := StatContext(ctx, target); err != nil || st.TotalBytes < minSize[fstype]/2 {
				t.Fatalf("Stat = %+v, %v; want at least half of %d bytes (no 5%% reserve)", st, err, minSize[fstype])
			}
		})
	}
}

func TestFormatUnsupportedType(t *testing.T) {
	path := newImage(t, 4*mib)
	for _, fstype := range []string{"btrfs", "ext3", "", "vfat"} {
		guarded := fsTools{open: openDevice, run: forbidTools(t)}
		if err := guarded.format(testCtx(t), path, fstype); err == nil {
			t.Errorf("format as %q succeeded", fstype)
		}
	}
}
