// Package mount reads the mount table, mounts and unmounts through
// syscalls, and probes, formats, repairs and grows filesystems on block
// devices. It knows nothing of CSI or NVMe.
//
// Two rules shape everything here, both learnt from drivers that lost data
// or wedged nodes:
//
//   - Doubt is an error. An unreadable mount table is an error, never "not
//     mounted"; a device whose superblock areas cannot be read completely, or
//     hold anything but zeroes, is never formatted.
//   - Every external call is bounded. Mount-table reads and mount syscalls
//     run under the caller's context (or a default bound when it has no
//     deadline) and return when it expires even if the kernel call is stuck;
//     the goroutine running a stuck call may linger until the kernel
//     returns. Tools (mkfs, fsck, resize) are killed at the deadline.
//
// The only binaries executed are mkfs.ext4, mkfs.xfs, e2fsck, xfs_repair,
// resize2fs and xfs_growfs; mounting never shells out.
package mount

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Sentinel errors let callers map failures to the right response (for CSI:
// FailedPrecondition, ResourceExhausted, ...) with errors.Is.
var (
	// ErrNotBlank: Format refused because the device is not provably blank.
	ErrNotBlank = errors.New("device is not blank")
	// ErrNeedsRepair: the filesystem has errors a safe automatic check
	// could not fix; a human must repair it.
	ErrNeedsRepair = errors.New("filesystem needs repair")
	// ErrInUse: the device or path is mounted or busy, so the operation
	// would be unsafe.
	ErrInUse = errors.New("in use")
	// ErrMountStorm: the source already has too many mounts.
	ErrMountStorm = errors.New("too many mounts of one source")
)

// defaultCallTimeout bounds a mount-table read or mount syscall whose
// context carries no deadline: callers forget, and an unbounded call on a
// dead NVMe path hangs an RPC forever.
const defaultCallTimeout = 30 * time.Second

// withDefaultDeadline returns a child of ctx, bounded by d unless ctx already has a deadline.
func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// bounded runs fn in its own goroutine and returns its result, or an error
// when ctx ends first. A syscall stuck in the kernel (D state) cannot be
// interrupted, so its goroutine lingers until the kernel lets go; the result
// channel is buffered so that goroutine never blocks on exit. Callers must
// treat a deadline error as "unknown outcome": the call may still complete.
func bounded[T any](ctx context.Context, what string, fn func() (T, error)) (T, error) {
	ctx, cancel := withDefaultDeadline(ctx, defaultCallTimeout)
	defer cancel()
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%s: not started: %w", what, err)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%s: no answer before the deadline; the call may still complete in the background "+
			"(a hung storage path or a stuck mount is the usual cause; check dmesg for blocked tasks): %w", what, ctx.Err())
	}
}

// boundedErr is bounded for calls that only return an error.
func boundedErr(ctx context.Context, what string, fn func() error) error {
	_, err := bounded(ctx, what, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// devNum is a device number split the way mountinfo shows it.
type devNum struct{ major, minor uint32 }

func devNumOf(dev uint64) devNum { return devNum{unix.Major(dev), unix.Minor(dev)} }

// blockNodeAt stats path, following symlinks, and returns the device
// number when it is a block device node; ok is false for anything else.
func blockNodeAt(path string) (dev devNum, ok bool, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return devNum{}, false, fmt.Errorf("stat %s: %w", path, err)
	}
	return devNumOf(st.Rdev), st.Mode&unix.S_IFMT == unix.S_IFBLK, nil
}

// blockDeviceOf returns the device number of path, which must be a block device node.
func blockDeviceOf(path string) (devNum, error) {
	dev, ok, err := blockNodeAt(path)
	if err == nil && !ok {
		err = fmt.Errorf("%s is not a block device", path)
	}
	return dev, err
}

// VolumeStats are a mounted filesystem's capacity and inode counts.
type VolumeStats struct {
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// StatContext returns the usage of the filesystem at path, under ctx's
// deadline (statfs on a filesystem whose storage path died blocks for as
// long as the path is down). Available is what an unprivileged writer can
// still use; Used counts everything else that is not free.
func StatContext(ctx context.Context, path string) (VolumeStats, error) {
	st, err := bounded(ctx, "statfs "+path, func() (unix.Statfs_t, error) {
		var st unix.Statfs_t
		return st, unix.Statfs(path, &st)
	})
	if err != nil {
		return VolumeStats{}, fmt.Errorf("volume stats of %s: %w", path, err)
	}
	unit := cmp.Or(st.Frsize, st.Bsize)
	return VolumeStats{
		TotalBytes:     int64(st.Blocks) * unit,
		AvailableBytes: int64(st.Bavail) * unit,
		UsedBytes:      int64(st.Blocks-st.Bfree) * unit,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
		UsedInodes:     int64(st.Files - st.Ffree),
	}, nil
}
