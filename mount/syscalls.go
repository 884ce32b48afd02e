package mount

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// maxUnmounts bounds UnmountAll: more stacked mounts than this at one path
// is a storm to investigate, not something to peel off forever.
const maxUnmounts = 1000

// undoTimeout bounds the unmount that undoes a half-done read-only bind.
const undoTimeout = 10 * time.Second

// DefaultStormLimit is the number of mount-table entries one source may
// have before StormGuard refuses another. A node with a healthy workload
// has a handful per volume; thousands mean mount propagation is
// multiplying them (seen: 2048 devtmpfs mounts, a soft lockup, an OOM kill).
const DefaultStormLimit = 100

// StormGuard refuses to add a mount whose source device already has Limit
// or more entries in the mount table. The zero value uses DefaultStormLimit.
// Mount and Bind apply the default guard; use the guard's own methods for
// another limit.
type StormGuard struct {
	Limit int
}

// check returns an error wrapping ErrMountStorm when major:minor already has
// Limit or more entries in t, or when t cannot be read.
func (g StormGuard) check(ctx context.Context, t table, major, minor uint32) error {
	entries, err := t.bySource(ctx, major, minor)
	if err != nil {
		return fmt.Errorf("mount-storm guard for device %d:%d: %w", major, minor, err)
	}
	limit := g.Limit
	if limit <= 0 {
		limit = DefaultStormLimit
	}
	if n := len(entries); n >= limit {
		return fmt.Errorf("%w: refusing another mount of device %d:%d, which already has %d mount-table entries (limit %d); "+
			"this usually means mount propagation is multiplying mounts: list them with `grep ' %d:%d ' /proc/self/mountinfo`, "+
			"look for bind mounts of /dev or of a shared kubelet directory, and unmount the extras",
			ErrMountStorm, major, minor, n, limit, major, minor)
	}
	return nil
}

// Mount mounts the filesystem on the block device source at target with the
// default StormGuard. See StormGuard.Mount.
func Mount(ctx context.Context, source, target, fstype string, o Options) error {
	return StormGuard{}.Mount(ctx, source, target, fstype, o)
}

// Mount mounts the filesystem on the block device source at target (which
// must exist), with options o from ParseOptions(fstype, ...). It refuses
// when source already has g.Limit mounts. When the deadline passes first
// the mount may still happen later: check mountinfo before retrying.
func (g StormGuard) Mount(ctx context.Context, source, target, fstype string, o Options) error {
	err := checkOptionsFor(fstype, o)
	if err == nil {
		var src devNum
		src, err = bounded(ctx, "stat "+source, func() (devNum, error) { return blockDeviceOf(source) })
		if err == nil {
			err = g.check(ctx, processTable, src.major, src.minor)
		}
	}
	if err != nil {
		return fmt.Errorf("mount %s at %s: %w", source, target, err)
	}
	what := fmt.Sprintf("mount %s (%s, options %q) at %s", source, fstype, strings.Join(o.Strings, ","), target)
	return mountCall(ctx, what, source, target, fstype, o.Flags, o.Data)
}

// checkOptionsFor refuses flags ParseOptions cannot produce and data
// validated for another filesystem (or not validated at all).
func checkOptionsFor(fstype string, o Options) error {
	if extra := o.Flags &^ allowedFlags; extra != 0 {
		return fmt.Errorf("mount flags %#x are not allowed here; build options with ParseOptions", extra)
	}
	if o.Data != "" && o.fstype != fstype {
		return fmt.Errorf("options were validated for %q, not %q; build them with ParseOptions(%q, ...)", o.fstype, fstype, fstype)
	}
	return nil
}

// Bind bind-mounts the directory or file source at target with the default
// StormGuard. See StormGuard.Bind.
func Bind(ctx context.Context, source, target string, readOnly bool) error {
	return StormGuard{}.Bind(ctx, source, target, readOnly)
}

// Bind bind-mounts source (a directory or regular file) at target, then
// remounts it read-only when asked; if that remount fails the bind is
// undone, so a read-only request never leaves a writable mount behind.
// Device nodes and anything under /dev are refused: bind mounts of devtmpfs
// multiplied by mount propagation have wedged nodes; use MakeBlockNode.
func (g StormGuard) Bind(ctx context.Context, source, target string, readOnly bool) error {
	if _, err := cleanMountPoint(target); err != nil {
		return fmt.Errorf("bind %s: %w", source, err)
	}
	type checked struct {
		path string
		fs   devNum
	}
	src, err := bounded(ctx, "checking bind source "+source, func() (checked, error) {
		path, fs, err := bindSource(source)
		return checked{path, fs}, err
	})
	if err != nil {
		return err
	}
	if err := g.check(ctx, processTable, src.fs.major, src.fs.minor); err != nil {
		return fmt.Errorf("bind %s at %s: %w", source, target, err)
	}
	what := fmt.Sprintf("bind %s at %s", source, target)
	if err := mountCall(ctx, what, src.path, target, "", unix.MS_BIND, ""); err != nil || !readOnly {
		return err
	}
	if err := remount(ctx, target, true); err != nil {
		// The undo gets its own budget: ctx may be what just expired.
		undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		if _, undo := unmountOnce(undoCtx, target); undo != nil {
			return fmt.Errorf("%s: making it read-only failed (%w) and undoing the writable bind failed too, unmount it by hand: %w",
				what, err, undo)
		}
		return fmt.Errorf("%s: making it read-only failed, bind undone: %w", what, err)
	}
	return nil
}

// bindSource resolves source, refuses device nodes and /dev also behind a
// symlink, and returns the resolved path and its filesystem's device.
func bindSource(source string) (string, devNum, error) {
	if !filepath.IsAbs(source) {
		return "", devNum{}, fmt.Errorf("bind source %q is not an absolute path", source)
	}
	resolved, err := filepath.EvalSymlinks(source)
	if err != nil {
		return "", devNum{}, fmt.Errorf("bind source %s: %w", source, err)
	}
	if resolved == "/dev" || strings.HasPrefix(resolved, "/dev/") {
		return "", devNum{}, fmt.Errorf("refusing to bind-mount %s (%s): bind mounts from /dev can multiply through mount propagation "+
			"and wedge the node; create a device node with MakeBlockNode instead", source, resolved)
	}
	var st unix.Stat_t
	if err := unix.Stat(resolved, &st); err != nil {
		return "", devNum{}, fmt.Errorf("bind source %s: %w", source, err)
	}
	if t := st.Mode & unix.S_IFMT; t == unix.S_IFBLK || t == unix.S_IFCHR {
		return "", devNum{}, fmt.Errorf("refusing to bind-mount device node %s; create a device node with MakeBlockNode instead", source)
	}
	return resolved, devNumOf(st.Dev), nil
}

// perMountFlagNames maps mountinfo's per-mount options to MS_* flags.
// A remount with MS_BIND replaces all per-mount flags, so each one must be
// carried over or it would be silently dropped.
var perMountFlagNames = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"nodiratime": unix.MS_NODIRATIME, "nosymfollow": unix.MS_NOSYMFOLLOW,
}

// remount changes only whether the mount at target is read-only, keeping its
// other per-mount flags; other mounts of the same filesystem keep their mode.
func remount(ctx context.Context, target string, readOnly bool) error {
	entries, err := ByMountPoint(ctx, target)
	if err != nil {
		return fmt.Errorf("remount %s: %w", target, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("remount %s: nothing is mounted there", target)
	}
	flags, atime := uintptr(0), uintptr(unix.MS_STRICTATIME)
	for opt := range strings.SplitSeq(entries[len(entries)-1].Options, ",") {
		flags |= perMountFlagNames[opt]
		switch opt {
		case "noatime":
			atime = unix.MS_NOATIME
		case "relatime":
			atime = unix.MS_RELATIME
		}
	}
	flags, what := flags&^unix.MS_RDONLY|atime, "remount "+target+" read-write"
	if readOnly {
		flags, what = flags|unix.MS_RDONLY, "remount "+target+" read-only"
	}
	return mountCall(ctx, what, "", target, "", unix.MS_REMOUNT|unix.MS_BIND|flags, "")
}

// unmountOnce unmounts the top mount at target once and reports whether a
// mount was removed. Nothing mounted there (EINVAL) or no such path
// (ENOENT) is no error. It never detaches lazily: a lazily detached
// filesystem stays alive and hides that it is busy.
func unmountOnce(ctx context.Context, target string) (bool, error) {
	what := "unmount " + target
	// UMOUNT_NOFOLLOW: a symlink planted at target must not redirect the unmount to another mount.
	err := boundedErr(ctx, what, func() error { return unix.Unmount(target, unix.UMOUNT_NOFOLLOW) })
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
		return false, nil
	case errors.Is(err, unix.EBUSY):
		return false, fmt.Errorf("%s: %w: a process has files open there or something is mounted below it "+
			"(find them with `fuser -vm %s` or in /proc/*/mountinfo): %w", what, ErrInUse, target, err)
	default:
		return false, fmt.Errorf("%s: %w", what, err)
	}
}

// UnmountAll unmounts target until the mount table shows nothing mounted
// there (mounts can be stacked), all under one deadline. Only then is it
// safe to remove the mount point; remove it with rmdir or unlink, never
// recursively.
func UnmountAll(ctx context.Context, target string) error {
	ctx, cancel := withDefaultDeadline(ctx, defaultCallTimeout)
	defer cancel()
	for range maxUnmounts {
		entries, err := ByMountPoint(ctx, target)
		if err != nil {
			return fmt.Errorf("unmount all at %s: %w", target, err)
		}
		if len(entries) == 0 {
			return nil
		}
		removed, err := unmountOnce(ctx, target)
		if err != nil {
			return fmt.Errorf("unmount all at %s (%d mounts left): %w", target, len(entries), err)
		}
		if !removed {
			return fmt.Errorf("unmount all at %s: the mount table shows %d mounts there but the kernel says it is not a mount point; "+
				"is the path a symlink or not in its resolved form?", target, len(entries))
		}
	}
	return fmt.Errorf("unmount all at %s: %w: still mounted after %d unmounts; look for a mount-propagation storm",
		target, ErrMountStorm, maxUnmounts)
}

// mountHints say what usually causes the errno mount(2) returned.
var mountHints = []struct {
	errno unix.Errno
	hint  string
}{
	{unix.EBUSY, "the device is in use or already mounted elsewhere with conflicting options"},
	{unix.EINVAL, "wrong filesystem type, a bad option, or no filesystem on the device; dmesg shows the kernel's reason"},
	{unix.EUCLEAN, "the filesystem is corrupted and needs repair"},
	{unix.ENODEV, "the kernel does not support this filesystem type"},
	{unix.EROFS, "the device is read-only; mount it read-only"},
}

// mountCall runs mount(2) under ctx's bound and explains a failure; what
// names the operation in errors.
func mountCall(ctx context.Context, what, source, target, fstype string, flags uintptr, data string) error {
	err := boundedErr(ctx, what, func() error { return unix.Mount(source, target, fstype, flags, data) })
	if err == nil {
		return nil
	}
	for _, h := range mountHints {
		if errors.Is(err, h.errno) {
			return fmt.Errorf("%s: %s: %w", what, h.hint, err)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
