package loopdev

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/testenv"
)

func newFile(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return path
}

func attach(t *testing.T, file string, readOnly bool) Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dev, err := Attach(ctx, file, readOnly)
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

func deviceSize(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var size uint64
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptrOf(&size)); errno != 0 {
		t.Fatal(errno)
	}
	return size
}

func TestAttachWriteFindDetach(t *testing.T) {
	testenv.Require(t, Available())
	file := newFile(t, 4<<20)
	dev := attach(t, file, false)

	var st unix.Stat_t
	if err := unix.Stat(dev.Path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != dev.Major || unix.Minor(st.Rdev) != dev.Minor {
		t.Fatalf("%s: mode %o rdev %d:%d, want a block device %d:%d", dev.Path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), dev.Major, dev.Minor)
	}

	want := bytes.Repeat([]byte("rds-csi!"), 512)
	f, err := os.OpenFile(dev.Path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuffer(len(want))
	copy(buf, want)
	if _, err := f.WriteAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, len(want))
	backing, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer backing.Close()
	if _, err := backing.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data written through the loop device is not in the backing file")
	}

	found, err := Find(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0] != dev {
		t.Fatalf("Find = %+v, want [%+v]", found, dev)
	}

	if err := dev.Detach(); err != nil {
		t.Fatal(err)
	}
	if err := dev.Detach(); err != nil {
		t.Fatalf("second Detach: %v, want nil (idempotent)", err)
	}
	if found, err := Find(file); err != nil || len(found) != 0 {
		t.Fatalf("Find after Detach = %+v, %v; want none", found, err)
	}
}

func TestAttachReadOnly(t *testing.T) {
	testenv.Require(t, Available())
	dev := attach(t, newFile(t, 1<<20), true)
	f, err := os.OpenFile(dev.Path, os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteAt(make([]byte, 512), 0)
		f.Close()
	}
	if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
		t.Fatalf("writing to a read-only loop device: %v, want EROFS/EACCES/EPERM", err)
	}
}

func TestAttachErrors(t *testing.T) {
	testenv.Require(t, Available())
	cases := []struct {
		name string
		file string
		ctx  func() context.Context
	}{
		{"missing file", filepath.Join(t.TempDir(), "missing.img"), context.Background},
		{"cancelled context", newFile(t, 1<<20), func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dev, err := Attach(tc.ctx(), tc.file, false)
			if err == nil {
				_ = dev.Detach()
				t.Fatalf("Attach succeeded with %+v, want an error", dev)
			}
		})
	}
}

func TestSetCapacity(t *testing.T) {
	testenv.Require(t, Available())
	file := newFile(t, 1<<20)
	dev := attach(t, file, false)
	if got := deviceSize(t, dev.Path); got != 1<<20 {
		t.Fatalf("size before = %d", got)
	}
	if err := os.Truncate(file, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := SetCapacity(dev.Path); err != nil {
		t.Fatal(err)
	}
	if got := deviceSize(t, dev.Path); got != 3<<20 {
		t.Fatalf("size after SetCapacity = %d, want %d", got, 3<<20)
	}
}

// TestAttachConcurrent races several attaches against each other, as
// parallel test packages do; each must end up with its own device.
func TestAttachConcurrent(t *testing.T) {
	testenv.Require(t, Available())
	const n = 6
	devs := make([]Device, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		file := newFile(t, 1<<20)
		wg.Go(func() {
			devs[i], errs[i] = Attach(context.Background(), file, false)
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("attach %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() { _ = devs[i].Detach() })
		if seen[devs[i].Path] {
			t.Errorf("%s handed out twice", devs[i].Path)
		}
		seen[devs[i].Path] = true
	}
}

// TestDetachLeavesReusedDevice: a device detached once may be handed to
// someone else; detaching the stale Device again must not touch theirs.
func TestDetachLeavesReusedDevice(t *testing.T) {
	testenv.Require(t, Available())
	mine := attach(t, newFile(t, 1<<20), false)
	theirsFile := newFile(t, 1<<20)
	theirs := attach(t, theirsFile, false)
	stale := mine
	stale.Path = theirs.Path // as if mine was freed and theirs reused the number
	if err := stale.Detach(); err != nil {
		t.Fatal(err)
	}
	if found, err := Find(theirsFile); err != nil || len(found) != 1 || found[0] != theirs {
		t.Fatalf("after a stale Detach, Find(theirs) = %+v, %v; want it still attached", found, err)
	}
	if err := Detach(theirs.Path); err != nil {
		t.Fatal(err)
	}
	if err := Detach(theirs.Path); err != nil {
		t.Fatalf("Detach of a free device = %v, want nil", err)
	}
	if found, err := Find(theirsFile); err != nil || len(found) != 0 {
		t.Fatalf("Find after Detach = %+v, %v", found, err)
	}
}

// TestBacks: the cheap check accepts the device attached to the file and refuses another
// file's device, a wrong device number, a non-loop path and a detached device.
func TestBacks(t *testing.T) {
	testenv.Require(t, Available())
	file, other := newFile(t, 1<<20), newFile(t, 1<<20)
	dev := attach(t, file, false)
	if !Backs(dev, file) {
		t.Fatalf("Backs(%+v, %s) = false for the device just attached", dev, file)
	}
	if Backs(dev, other) {
		t.Fatal("Backs accepted another file")
	}
	wrong := dev
	wrong.Minor++
	if Backs(wrong, file) {
		t.Fatal("Backs accepted a wrong device number")
	}
	if Backs(Device{Path: "/dev/sda", Major: dev.Major, Minor: dev.Minor}, file) {
		t.Fatal("Backs accepted a non-loop path")
	}
	if err := Detach(dev.Path); err != nil {
		t.Fatal(err)
	}
	if Backs(dev, file) {
		t.Fatal("Backs accepted a detached device")
	}
}

// A device attached through a mount that is gone since (a restarted container had the file's
// directory bind-mounted) shows sysfs a path inside that mount only: Find and Backs still
// know it by the file's device and inode, and not a file of the same name elsewhere.
func TestFindThroughAGoneMount(t *testing.T) {
	testenv.Require(t, Available())
	file := newFile(t, 1<<20)
	dir := filepath.Dir(file)
	bind := t.TempDir()
	if err := unix.Mount(dir, bind, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	dev := attach(t, filepath.Join(bind, filepath.Base(file)), false)
	if err := unix.Unmount(bind, unix.MNT_DETACH); err != nil {
		t.Fatalf("unmount: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(sysBlock, filepath.Base(dev.Path), "loop", "backing_file"))
	if err != nil {
		t.Fatal(err)
	}
	if got := string(bytes.TrimSpace(raw)); got == file {
		t.Fatalf("backing_file is still %s: the kernel printed the path in full, the test proves nothing", got)
	}
	for _, tc := range []struct {
		name string
		file string
		want bool
	}{
		{"the file itself", file, true},
		{"a file of the same name elsewhere", newFile(t, 1<<20), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			devs, err := Find(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			found := len(devs) == 1 && devs[0].Path == dev.Path
			if found != tc.want || len(devs) > 1 {
				t.Fatalf("Find(%s) = %+v, want found=%v", tc.file, devs, tc.want)
			}
			if got := Backs(dev, tc.file); got != tc.want {
				t.Fatalf("Backs = %v, want %v", got, tc.want)
			}
		})
	}
}
