// Package mount reads the mount table, mounts and unmounts through syscalls, and probes,
// formats, repairs and grows filesystems on block devices. It knows nothing of CSI or NVMe.
//
// Two rules, both learnt from drivers that lost data or wedged nodes:
//   - Doubt is an error. An unreadable mount table is an error, never "not mounted"; a
//     device whose superblock areas cannot be read completely, or hold anything but
//     zeroes, is never formatted.
//   - Every external call is bounded, by the caller's context or a default: mount-table
//     reads and syscalls return at the deadline even if the kernel call is stuck (its
//     goroutine lingers until the kernel returns); tools are killed at the deadline.
//
// The only binaries executed are mkfs.ext4, mkfs.xfs, e2fsck, xfs_repair, resize2fs and
// xfs_growfs; mounting never shells out.
package mount

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Sentinel errors, for errors.Is.
var (
	ErrNotBlank    = errors.New("device is not blank")           // Format refused: not provably blank
	ErrNeedsRepair = errors.New("filesystem needs repair")       // a human must repair it
	ErrInUse       = errors.New("in use")                        // mounted or busy: unsafe
	ErrMountStorm  = errors.New("too many mounts of one source") // see StormGuard
)

// defaultCallTimeout bounds a call whose context has no deadline: an unbounded call on a
// dead NVMe path hangs an RPC forever.
const defaultCallTimeout = 30 * time.Second

// withDefaultDeadline returns a child of ctx, bounded by d unless ctx already has a deadline.
func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// bounded runs fn in its own goroutine and returns its result, or an error when ctx ends
// first. A call stuck in the kernel (D state) cannot be interrupted: its goroutine lingers
// (the buffered channel lets it exit), and callers must read a deadline error as "unknown
// outcome": the call may still complete.
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

func boundedErr(ctx context.Context, what string, fn func() error) error {
	_, err := bounded(ctx, what, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// devNum is a device number split the way mountinfo shows it.
type devNum struct{ major, minor uint32 }

func devNumOf(dev uint64) devNum { return devNum{unix.Major(dev), unix.Minor(dev)} }

// blockNodeAt stats path, following symlinks; ok says whether it is a block device node.
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

// StatContext returns the usage of the filesystem at path under ctx's deadline (statfs
// blocks while the storage path is down). Available is what an unprivileged writer can
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
		TotalBytes: int64(st.Blocks) * unit, AvailableBytes: int64(st.Bavail) * unit,
		UsedBytes:   int64(st.Blocks-st.Bfree) * unit,
		TotalInodes: int64(st.Files), FreeInodes: int64(st.Ffree), UsedInodes: int64(st.Files - st.Ffree),
	}, nil
}

// Entry is one line of the mount table (/proc/thread-self/mountinfo). Major and Minor
// identify the mounted filesystem's device; for bind mounts Root is the directory of that
// filesystem that appears at Mountpoint.
type Entry = mountinfo.Info

// table is a source of mountinfo text; the zero value, processTable, reads the process's
// own table, and tests point open at a file (synthetic tables, reads that hang).
type table struct {
	open func() (io.ReadCloser, error)
}

var processTable table

// read parses the table under the context's deadline. Any failure is an error: callers
// must never take an unreadable table for "not mounted".
func (t table) read(ctx context.Context, filter mountinfo.FilterFunc) ([]*Entry, error) {
	entries, err := bounded(ctx, "reading the mount table", func() ([]*Entry, error) {
		if t.open == nil {
			return mountinfo.GetMounts(filter)
		}
		r, err := t.open()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return mountinfo.GetMountsFromReader(r, filter)
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read the mount table, so mount state is unknown: %w", err)
	}
	return entries, nil
}

func (t table) byMountPoint(ctx context.Context, path string) ([]*Entry, error) {
	mp, err := resolveMountPoint(ctx, path)
	if err != nil {
		return nil, err
	}
	return t.read(ctx, func(e *Entry) (skip, stop bool) { return e.Mountpoint != mp, false })
}

func (t table) bySource(ctx context.Context, major, minor uint32) ([]*Entry, error) {
	return t.read(ctx, func(e *Entry) (skip, stop bool) {
		return uint32(e.Major) != major || uint32(e.Minor) != minor, false
	})
}

// cleanMountPoint accepts only absolute paths: mountinfo shows absolute, clean paths, and
// a relative one would match nothing, which reads as "not mounted".
func cleanMountPoint(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("mount point %q is not an absolute path", path)
	}
	return filepath.Clean(path), nil
}

// resolveMountPoint spells path as the mount table does: the kernel records resolved
// paths, so a symlink among the parents (a relocated /var/lib/kubelet) would make a live
// mount look absent. The last component is kept as is: it may be a dead mount that must
// not be touched. A missing parent means nothing can be mounted there.
func resolveMountPoint(ctx context.Context, path string) (string, error) {
	clean, err := cleanMountPoint(path)
	if err != nil {
		return "", err
	}
	dir, base := filepath.Split(clean)
	if base == "" {
		return clean, nil // "/"
	}
	resolved, err := bounded(ctx, "resolving "+dir, func() (string, error) { return filepath.EvalSymlinks(dir) })
	switch {
	case err == nil:
		return filepath.Join(resolved, base), nil
	case errors.Is(err, fs.ErrNotExist):
		return clean, nil
	default:
		return "", fmt.Errorf("mount point %s: %w", path, err)
	}
}

// List returns every entry of the process's mount table.
func List(ctx context.Context) ([]*Entry, error) { return processTable.read(ctx, nil) }

// ByMountPoint returns every entry mounted at path (absolute), in mount order: more than
// one means stacked mounts, the last usually visible. Symlinks among its parents are
// resolved; a symlink as its last component is not followed.
func ByMountPoint(ctx context.Context, path string) ([]*Entry, error) {
	return processTable.byMountPoint(ctx, path)
}

// BySource returns every entry whose filesystem lives on the device major:minor: the
// filesystem mount itself and every bind mount of it.
func BySource(ctx context.Context, major, minor uint32) ([]*Entry, error) {
	return processTable.bySource(ctx, major, minor)
}

// IsMounted reports whether anything is mounted at path; an unreadable table is an error.
func IsMounted(ctx context.Context, path string) (bool, error) {
	entries, err := processTable.byMountPoint(ctx, path)
	return len(entries) > 0, err
}
