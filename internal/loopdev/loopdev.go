// Package loopdev attaches files as loop block devices through
// /dev/loop-control and loop ioctls (no losetup). Tests use it for real
// mounts, and a loop-backed stand-in for NVMe namespaces uses it to give
// the node plugin real block devices.
package loopdev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	controlPath = "/dev/loop-control"
	sysBlock    = "/sys/block"
	// maxAttempts bounds the race with other processes that grab the same
	// free device between LOOP_CTL_GET_FREE and our configure call.
	maxAttempts = 50
	retryDelay  = 20 * time.Millisecond
)

// Device is an attached loop device.
type Device struct {
	Path         string // /dev/loopN
	Major, Minor uint32

	// backing identifies the file it was attached to, so Device.Detach
	// never detaches a device that was freed and then reused by someone
	// else (parallel test packages do exactly that).
	backing fileID
}

// fileID is a file's identity: device and inode.
type fileID struct {
	dev, ino uint64
}

// Available says why loop devices cannot be used here (not root, no
// /dev/loop-control), or nil when they can.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("loop devices need root")
	}
	f, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loop devices unavailable (load the loop module): %w", err)
	}
	return f.Close()
}

// Attach binds file to a free loop device, read-only when asked. Autoclear
// is off: the device stays attached until Detach, whoever closes it.
func Attach(ctx context.Context, file string, readOnly bool) (Device, error) {
	file, err := filepath.Abs(file)
	if err != nil {
		return Device{}, fmt.Errorf("attach %s to a loop device: %w", file, err)
	}
	mode := os.O_RDWR
	if readOnly {
		mode = os.O_RDONLY
	}
	backing, err := os.OpenFile(file, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return Device{}, fmt.Errorf("attach %s to a loop device: %w", file, err)
	}
	defer backing.Close()
	control, err := os.OpenFile(controlPath, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return Device{}, fmt.Errorf("attach %s to a loop device (is the loop module loaded?): %w", file, err)
	}
	defer control.Close()

	var lastErr error
	for range maxAttempts {
		if err := ctx.Err(); err != nil {
			return Device{}, fmt.Errorf("attach %s to a loop device: %w (last error: %v)", file, err, lastErr)
		}
		dev, err := tryAttach(control, backing, mode, readOnly)
		if err == nil {
			return dev, nil
		}
		// EBUSY: another process bound the device we were offered.
		// ENOENT/ENXIO: the device node is not there yet or went away.
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENXIO) {
			return Device{}, fmt.Errorf("attach %s to a loop device: %w", file, err)
		}
		lastErr = err
		time.Sleep(retryDelay)
	}
	return Device{}, fmt.Errorf("attach %s to a loop device: gave up after %d attempts: %w", file, maxAttempts, lastErr)
}

func tryAttach(control, backing *os.File, mode int, readOnly bool) (Device, error) {
	n, err := unix.IoctlRetInt(int(control.Fd()), unix.LOOP_CTL_GET_FREE)
	if err != nil {
		return Device{}, fmt.Errorf("LOOP_CTL_GET_FREE: %w", err)
	}
	path := fmt.Sprintf("/dev/loop%d", n)
	loop, err := os.OpenFile(path, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return Device{}, err
	}
	defer loop.Close()
	if err := configure(loop, backing, readOnly); err != nil {
		return Device{}, fmt.Errorf("%s: %w", path, err)
	}
	var st, bst unix.Stat_t
	if err := unix.Fstat(int(loop.Fd()), &st); err == nil {
		err = unix.Fstat(int(backing.Fd()), &bst)
	}
	if err != nil {
		_ = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
		return Device{}, fmt.Errorf("stat %s: %w", path, err)
	}
	return Device{
		Path: path, Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev),
		backing: fileID{dev: bst.Dev, ino: bst.Ino},
	}, nil
}

// configure binds backing to loop in one step with LOOP_CONFIGURE (Linux
// 5.8+), falling back to LOOP_SET_FD + LOOP_SET_STATUS64 on older kernels.
func configure(loop, backing *os.File, readOnly bool) error {
	var info unix.LoopInfo64
	if readOnly {
		info.Flags = unix.LO_FLAGS_READ_ONLY
	}
	copy(info.File_name[:unix.LO_NAME_SIZE-1], backing.Name())
	cfg := unix.LoopConfig{Fd: uint32(backing.Fd()), Info: info}
	err := unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
	if !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
		if err != nil {
			return fmt.Errorf("LOOP_CONFIGURE: %w", err)
		}
		return nil
	}
	if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_SET_FD, int(backing.Fd())); err != nil {
		return fmt.Errorf("LOOP_SET_FD: %w", err)
	}
	if err := unix.IoctlLoopSetStatus64(int(loop.Fd()), &info); err != nil {
		_ = unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0)
		return fmt.Errorf("LOOP_SET_STATUS64: %w", err)
	}
	return nil
}

// Detach unbinds the loop device at path, whatever it is attached to. A
// device that is not attached is success. While something still holds the
// device open (a mount), the kernel defers the detach to the last close.
// Prefer Device.Detach: a path may have been freed and reused since.
func Detach(path string) error {
	return withLoop(path, "detach", clearFD)
}

// Detach unbinds d only while it is still attached to the file it was
// attached to; a device detached already, or since reused for another
// file, is left alone and counts as success.
func (d Device) Detach() error {
	return withLoop(d.Path, "detach", func(fd int) error {
		info, err := unix.IoctlLoopGetStatus64(fd)
		if errors.Is(err, unix.ENXIO) {
			return nil // not attached
		}
		if err != nil {
			return fmt.Errorf("LOOP_GET_STATUS64: %w", err)
		}
		if !d.backing.matches(info) {
			return nil // reused for another file: not ours any more
		}
		return clearFD(fd)
	})
}

// matches compares with the kernel's record of the backing file, whose
// device number is in the kernel's encoding.
func (id fileID) matches(info *unix.LoopInfo64) bool {
	return info.Inode == id.ino &&
		unix.Major(info.Device) == unix.Major(id.dev) && unix.Minor(info.Device) == unix.Minor(id.dev)
}

// clearFD detaches the loop device open as fd; not attached is success.
func clearFD(fd int) error {
	var err error
	for range maxAttempts {
		err = unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0)
		// Kernels before 5.x refuse with EBUSY while a prober holds
		// the device open for a moment.
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(retryDelay)
	}
	if errors.Is(err, unix.ENXIO) {
		return nil
	}
	return err
}

// SetCapacity makes the loop device at path take the new size of its
// backing file, after the file grew.
func SetCapacity(path string) error {
	return withLoop(path, "set capacity of", func(fd int) error {
		return unix.IoctlSetInt(fd, unix.LOOP_SET_CAPACITY, 0)
	})
}

// withLoop opens the loop device at path for an ioctl and wraps errors
// with what was being done.
func withLoop(path, what string, fn func(fd int) error) error {
	loop, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	defer loop.Close()
	if err := fn(int(loop.Fd())); err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	return nil
}

// backingOf is what identifies file as a loop device's backing file: its resolved path and
// its device and inode.
func backingOf(file string) (string, fileID, error) {
	want, err := filepath.Abs(file)
	if err != nil {
		return "", fileID{}, err
	}
	if resolved, err := filepath.EvalSymlinks(want); err == nil {
		want = resolved
	}
	var st unix.Stat_t
	if err := unix.Stat(want, &st); err != nil {
		return "", fileID{}, err
	}
	return want, fileID{dev: st.Dev, ino: st.Ino}, nil
}

// backedBy reports whether the loop device name is attached to the file at path want with
// identity id. sysfs's backing_file is the path as the kernel prints it for this process's
// mount namespace: a device attached from another namespace that has since gone (a
// restarted container that had the file's directory bind-mounted) shows the path inside
// that mount only, a tail of want. So a path that ends like want is confirmed by the
// kernel's record of the backing file's device and inode (LOOP_GET_STATUS64).
// A device detached while we look is not backed by it; a backing_file that cannot be read
// is an error, not a no.
func backedBy(name, want string, id fileID) (bool, error) {
	got, err := os.ReadFile(filepath.Join(sysBlock, name, "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	path := strings.TrimSuffix(string(got), "\n")
	if path != want && !strings.HasSuffix(want, path) {
		return false, nil
	}
	var info *unix.LoopInfo64
	err = withLoop("/dev/"+name, "read the status of", func(fd int) (err error) {
		info, err = unix.IoctlLoopGetStatus64(fd)
		return err
	})
	if err != nil {
		return path == want && strings.HasPrefix(path, "/"), nil // cannot ask the kernel: the full path must match
	}
	return id.matches(info), nil
}

// Find returns the loop devices whose backing file is file.
func Find(file string) ([]Device, error) {
	want, id, err := backingOf(file)
	if err != nil {
		return nil, fmt.Errorf("find loop devices of %s: %w", file, err)
	}
	names, err := filepath.Glob(filepath.Join(sysBlock, "loop*", "loop", "backing_file"))
	if err != nil {
		return nil, fmt.Errorf("find loop devices of %s: %w", file, err)
	}
	var found []Device
	for _, backingFile := range names {
		name := filepath.Base(filepath.Dir(filepath.Dir(backingFile)))
		backed, err := backedBy(name, want, id)
		if err != nil {
			return nil, fmt.Errorf("find loop devices of %s: %w", file, err)
		}
		if !backed {
			continue // another file's, or detached while we looked
		}
		dev, err := sysDevice(name)
		if err != nil {
			return nil, fmt.Errorf("find loop devices of %s: %w", file, err)
		}
		dev.backing = id
		found = append(found, dev)
	}
	return found, nil
}

func sysDevice(name string) (Device, error) {
	raw, err := os.ReadFile(filepath.Join(sysBlock, name, "dev"))
	if err != nil {
		return Device{}, err
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(raw)), "%d:%d", &major, &minor); err != nil {
		return Device{}, fmt.Errorf("%s/dev: %q: %w", name, raw, err)
	}
	return Device{Path: "/dev/" + name, Major: major, Minor: minor}, nil
}

// Backs reports whether d is still attached to file, reading only d's own entries (its
// device number and backing file): the cheap check for a device we attached, where Find
// would read every loop device. Device names are reused, so both the major:minor and the
// backing file must match.
func Backs(d Device, file string) bool {
	name := filepath.Base(d.Path)
	if d.Path != "/dev/"+name || !strings.HasPrefix(name, "loop") {
		return false
	}
	want, id, err := backingOf(file)
	if err != nil {
		return false
	}
	if backed, err := backedBy(name, want, id); err != nil || !backed {
		return false
	}
	cur, err := sysDevice(name)
	return err == nil && cur.Major == d.Major && cur.Minor == d.Minor
}
