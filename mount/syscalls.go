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
	if err := checkOptionsFor(fstype, o); err != nil {
		return fmt.Errorf("mount %s at %s: %w", source, target, err)
	}
	src, err := bounded(ctx, "stat "+source, func() (devNum, error) { return blockDeviceOf(source) })
	if err != nil {
		return fmt.Errorf("mount %s at %s: %w", source, target, err)
	}
	if err := g.check(ctx, processTable, src.major, src.minor); err != nil {
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
	if err := mountCall(ctx, what, src.path, target, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if !readOnly {
		return nil
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

// bindSource resolves source and refuses what must never be bind-mounted:
// device nodes and anything under /dev, also when reached through a
// symlink. It returns the resolved path and its filesystem's device.
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

// remount changes only whether the mount at target is read-only, keeping
// its other per-mount flags (nodev, nosuid, noexec, atime). It changes the
// mount, not the filesystem: other mounts of the same filesystem keep
// their mode.
func remount(ctx context.Context, target string, readOnly bool) error {
	entries, err := ByMountPoint(ctx, target)
	if err != nil {
		return fmt.Errorf("remount %s: %w", target, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("remount %s: nothing is mounted there", target)
	}
	flags := perMountFlags(entries[len(entries)-1].Options)
	if readOnly {
		flags |= unix.MS_RDONLY
	} else {
		flags &^= unix.MS_RDONLY
	}
	what := "remount " + target + " read-write"
	if readOnly {
		what = "remount " + target + " read-only"
	}
	return mountCall(ctx, what, "", target, "", unix.MS_REMOUNT|unix.MS_BIND|flags, "")
}

// perMountFlags converts mountinfo's per-mount option field to MS_* flags.
// A remount with MS_BIND replaces all per-mount flags, so each one must be
// carried over or it would be silently dropped.
func perMountFlags(options string) uintptr {
	var flags uintptr
	atime := uintptr(unix.MS_STRICTATIME)
	for opt := range strings.SplitSeq(options, ",") {
		switch opt {
		case "ro":
			flags |= unix.MS_RDONLY
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "nodev":
			flags |= unix.MS_NODEV
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "nodiratime":
			flags |= unix.MS_NODIRATIME
		case "nosymfollow":
			flags |= unix.MS_NOSYMFOLLOW
		case "noatime":
			atime = unix.MS_NOATIME
		case "relatime":
			atime = unix.MS_RELATIME
		}
	}
	return flags | atime
}

// unmountOnce unmounts the top mount at target once and reports whether a
// mount was removed. Nothing mounted there (EINVAL) or no such path
// (ENOENT) is no error. It never detaches lazily: a lazily detached
// filesystem stays alive and hides that it is busy.
func unmountOnce(ctx context.Context, target string) (bool, error) {
	what := "unmount " + target
	err := boundedErr(ctx, what, func() error {
		// UMOUNT_NOFOLLOW: a symlink planted at target must not redirect
		// the unmount to another mount.
		return unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
	})
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

// mountCall runs mount(2) under ctx's bound and explains a failure; what
// names the operation in errors.
func mountCall(ctx context.Context, what, source, target, fstype string, flags uintptr, data string) error {
	err := boundedErr(ctx, what, func() error { return unix.Mount(source, target, fstype, flags, data) })
	return explainMountError(what, err)
}

// explainMountError adds what usually causes the errno mount(2) returned.
func explainMountError(what string, err error) error {
	var hint string
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EBUSY):
		hint = "the device is in use or already mounted elsewhere with conflicting options"
	case errors.Is(err, unix.EINVAL):
		hint = "wrong filesystem type, a bad option, or no filesystem on the device; dmesg shows the kernel's reason"
	case errors.Is(err, unix.EUCLEAN):
		hint = "the filesystem is corrupted and needs repair"
	case errors.Is(err, unix.ENODEV):
		hint = "the kernel does not support this filesystem type"
	case errors.Is(err, unix.EROFS):
		hint = "the device is read-only; mount it read-only"
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
	return fmt.Errorf("%s: %s: %w", what, hint, err)
}
