package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"

	"github.com/moby/sys/mountinfo"
)

// Entry is one line of the mount table (/proc/thread-self/mountinfo).
// Major and Minor identify the mounted filesystem's device; for bind mounts
// Root is the directory of that filesystem that appears at Mountpoint.
type Entry = mountinfo.Info

// table is a source of mountinfo text. The zero value, processTable, reads the
// calling process's own table; tests point open at a file to feed synthetic
// tables or simulate a read that hangs.
type table struct {
	open func() (io.ReadCloser, error)
}

var processTable table

// read parses the table under the context's deadline. Any failure,
// including a read that does not finish in time, is an error: callers
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

// cleanMountPoint accepts only absolute paths and cleans them, because
// mountinfo shows absolute, clean paths and a relative one would silently
// match nothing, which reads as "not mounted".
func cleanMountPoint(path string) (string, error) {
	if !filepath.IsAbs(path) {
		return "", fmt.Errorf("mount point %q is not an absolute path", path)
	}
	return filepath.Clean(path), nil
}

// resolveMountPoint returns path as the mount table spells it: the kernel
// records resolved paths, so a symlink among the parents (a relocated
// /var/lib/kubelet) would otherwise make a live mount look absent. The
// last component is kept as is: it is the mount point itself, which may
// be a dead mount that must not be touched, and a symlink there is not a
// mount point. A missing parent means nothing can be mounted there.
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

// ByMountPoint returns every entry mounted at path, in mount order: more
// than one means mounts are stacked there, and the last is usually the
// visible one. path must be absolute; symlinks among its parents are
// resolved, a symlink as its last component is not followed.
func ByMountPoint(ctx context.Context, path string) ([]*Entry, error) {
	return processTable.byMountPoint(ctx, path)
}

// BySource returns every entry whose filesystem lives on the device
// major:minor: the filesystem mount itself and every bind mount of it.
func BySource(ctx context.Context, major, minor uint32) ([]*Entry, error) {
	return processTable.bySource(ctx, major, minor)
}

// IsMounted reports whether anything is mounted at path. An unreadable
// mount table is an error, never false.
func IsMounted(ctx context.Context, path string) (bool, error) {
	entries, err := processTable.byMountPoint(ctx, path)
	return len(entries) > 0, err
}
