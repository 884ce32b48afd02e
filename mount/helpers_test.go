package mount

import (
	"context"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/testenv"
)

// requireLoop skips where real mounts cannot work (not root, no loop
// devices), except in CI, where a skipped test would hide a broken runner.
func requireLoop(t testing.TB) {
	t.Helper()
	testenv.Require(t, loopdev.Available())
}

// testCtx is a context bounded well inside the test timeout.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// minSize is the smallest image each filesystem's mkfs accepts.
var minSize = map[string]int64{"ext4": 32 << 20, "xfs": 320 << 20, "btrfs": 128 << 20}

// newImage creates a sparse file of size bytes.
func newImage(t testing.TB, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// mkfs formats path with the real tool, bypassing Format, to build test
// fixtures. Without mkfs.btrfs it writes the btrfs magic where the kernel
// and blkid look for it, which is all the probe needs.
func mkfs(t testing.TB, fstype, path string) {
	t.Helper()
	var cmd *exec.Cmd
	switch fstype {
	case "ext4", "ext3", "ext2":
		cmd = exec.Command("mkfs."+fstype, "-q", "-F", path)
	case "xfs":
		cmd = exec.Command("mkfs.xfs", "-q", "-f", path)
	case "btrfs":
		if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
			// The on-disk format, spelled out independently of probe.go.
			writeAt(t, path, 64<<10+64, []byte("_BHRfS_M"))
			return
		}
		cmd = exec.Command("mkfs.btrfs", "-q", "-f", path)
	default:
		t.Fatalf("mkfs: unknown type %q", fstype)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
}

func writeAt(t testing.TB, path string, off int64, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }

// attachLoop attaches file to a loop device and detaches it at cleanup.
func attachLoop(t testing.TB, file string, readOnly bool) loopdev.Device {
	t.Helper()
	dev, err := loopdev.Attach(testCtx(t), file, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dev.Detach(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dev
}

// formattedLoop returns a loop device holding a fresh fstype filesystem.
func formattedLoop(t testing.TB, fstype string) loopdev.Device {
	t.Helper()
	img := newImage(t, minSize[fstype])
	mkfs(t, fstype, img)
	return attachLoop(t, img, false)
}

// blankFormatted returns a loop device over a blank image that Format
// (not the test's mkfs) turned into fstype.
func blankFormatted(t testing.TB, fstype string) (loopdev.Device, string) {
	t.Helper()
	img := newImage(t, minSize[fstype])
	dev := attachLoop(t, img, false)
	if err := Format(testCtx(t), dev.Path, fstype); err != nil {
		t.Fatal(err)
	}
	return dev, img
}

// mountedLoop returns a loop device with a fresh fstype filesystem and the
// new mount point where it is mounted with default options.
func mountedLoop(t testing.TB, fstype string) (loopdev.Device, string) {
	t.Helper()
	dev := formattedLoop(t, fstype)
	target := mountPoint(t)
	if err := Mount(testCtx(t), dev.Path, target, fstype, Options{}); err != nil {
		t.Fatal(err)
	}
	return dev, target
}

// mountPoint makes an empty directory and, at cleanup, unmounts whatever
// is left there before the temp dir is removed: registered after
// t.TempDir, this cleanup runs first, so RemoveAll never walks into a
// mounted filesystem.
func mountPoint(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := UnmountAll(ctx, dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return dir
}

// mustOptions parses options that the test knows are valid.
func mustOptions(t testing.TB, fstype string, opts ...string) Options {
	t.Helper()
	o, err := ParseOptions(fstype, opts)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// mountedAt returns the entries at path, failing the test on a read error.
func mountedAt(t testing.TB, path string) []*Entry {
	t.Helper()
	entries, err := ByMountPoint(testCtx(t), path)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// fileTable reads mountinfo text from path.
func fileTable(path string) table {
	return table{open: func() (io.ReadCloser, error) { return os.Open(path) }}
}
