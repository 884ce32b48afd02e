package mount

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// maxUnmounts bounds UnmountAll: more stacked mounts is a storm to investigate.
	maxUnmounts = 1000
	// undoTimeout bounds the unmount that undoes a half-done read-only bind.
	undoTimeout = 10 * time.Second
)

// DefaultStormLimit is how many mount-table entries one source may have before StormGuard
// refuses another: a healthy node has a handful per volume; thousands mean propagation is
// multiplying them (seen: 2048 devtmpfs mounts, a soft lockup, an OOM kill).
const DefaultStormLimit = 100

// StormGuard refuses a mount whose source device already has Limit (0: DefaultStormLimit)
// or more mount-table entries. Mount and Bind apply the default guard.
type StormGuard struct {
	Limit int
}

// check wraps ErrMountStorm when major:minor has Limit or more entries in t; an unreadable
// t is an error too.
func (g StormGuard) check(ctx context.Context, t table, major, minor uint32) error {
	entries, err := t.bySource(ctx, major, minor)
	if err != nil {
		return fmt.Errorf("mount-storm guard for device %d:%d: %w", major, minor, err)
	}
	limit := cmp.Or(max(g.Limit, 0), DefaultStormLimit)
	if n := len(entries); n >= limit {
		return fmt.Errorf("%w: refusing another mount of device %d:%d, which already has %d mount-table entries (limit %d); "+
			"this usually means mount propagation is multiplying mounts: list them with `grep ' %d:%d ' /proc/self/mountinfo`, "+
			"look for bind mounts of /dev or of a shared kubelet directory, and unmount the extras",
			ErrMountStorm, major, minor, n, limit, major, minor)
	}
	return nil
}

// Mount is StormGuard.Mount with the default guard.
func Mount(ctx context.Context, source, target, fstype string, o Options) error {
	return StormGuard{}.Mount(ctx, source, target, fstype, o)
}

// Mount mounts the filesystem on the block device source at the existing target, with
// options o from ParseOptions(fstype, ...), unless source already has g.Limit mounts. After
// a deadline the mount may still happen: check mountinfo before retrying.
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

// checkOptionsFor refuses flags ParseOptions cannot produce and data not validated for fstype.
func checkOptionsFor(fstype string, o Options) error {
	if extra := o.Flags &^ allowedFlags; extra != 0 {
		return fmt.Errorf("mount flags %#x are not allowed here; build options with ParseOptions", extra)
	}
	if o.Data != "" && o.fstype != fstype {
		return fmt.Errorf("options were validated for %q, not %q; build them with ParseOptions(%q, ...)", o.fstype, fstype, fstype)
	}
	return nil
}

// Bind is StormGuard.Bind with the default guard.
func Bind(ctx context.Context, source, target string, readOnly bool) error {
	return StormGuard{}.Bind(ctx, source, target, readOnly)
}

// Bind bind-mounts source (a directory or regular file) at target, then remounts it
// read-only when asked; if that fails the bind is undone, so a read-only request never
// leaves a writable mount. Device nodes and /dev are refused: devtmpfs bind mounts
// multiplied by propagation have wedged nodes (use MakeBlockNode).
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

// bindSource resolves source, refuses device nodes and /dev (also behind a symlink), and
// returns the resolved path and its filesystem's device.
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

// perMountFlagNames maps mountinfo's per-mount options to MS_* flags: a remount with
// MS_BIND replaces all of them, so each must be carried over.
var perMountFlagNames = map[string]uintptr{
	"ro": unix.MS_RDONLY, "nosuid": unix.MS_NOSUID, "nodev": unix.MS_NODEV, "noexec": unix.MS_NOEXEC,
	"nodiratime": unix.MS_NODIRATIME, "nosymfollow": unix.MS_NOSYMFOLLOW,
}

// remount makes the mount at target read-only or not, keeping its other per-mount flags;
// other mounts of the filesystem keep their mode.
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

// unmountOnce unmounts the top mount at target and reports whether one was removed;
// nothing mounted (EINVAL) or no such path (ENOENT) is no error. Never lazily: a detached
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

// UnmountAll unmounts target until the mount table shows nothing there (mounts stack),
// under one deadline. Only then may the mount point go, by rmdir or unlink, never recursively.
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

// mountHints say what usually causes an errno of mount(2).
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

// mountCall runs mount(2) under ctx's bound and explains a failure.
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

// MakeBlockNode creates a block device node for major:minor at path, mode 0660 (0440 when
// readOnly), to publish a raw block volume instead of bind-mounting its /dev node (whose
// devtmpfs mounts multiply through propagation until the node wedges). Idempotent: a node
// of the same device is kept (its mode corrected) and an empty regular file (a placeholder)
// replaced; anything else (a directory, a symlink, a file with data, another device's node)
// is refused and left untouched.
func MakeBlockNode(path string, major, minor uint32, readOnly bool) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("block node %q: not an absolute path", path)
	}
	mode := uint32(0o660)
	if readOnly {
		mode = 0o440
	}
	for range 2 { // a second round only after losing a creation race
		var st unix.Stat_t
		err := unix.Lstat(path, &st)
		switch {
		case errors.Is(err, unix.ENOENT):
		case err != nil:
			return fmt.Errorf("block node %s: %w", path, err)
		case st.Mode&unix.S_IFMT == unix.S_IFBLK && devNumOf(st.Rdev) == (devNum{major, minor}):
			return setNodeMode(path, st.Mode, mode)
		case st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0:
			// An empty file holds no data, so replacing it loses nothing.
			if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("block node %s: removing the empty placeholder file: %w", path, err)
			}
		default:
			return fmt.Errorf("block node %s: something else is there (%s); refusing to replace it, remove it if it is stale",
				path, describeNode(st))
		}
		switch err := unix.Mknod(path, unix.S_IFBLK|mode, int(unix.Mkdev(major, minor))); {
		case err == nil:
			return setNodeMode(path, unix.S_IFBLK, mode) // mknod applies the umask; the mode must be exact
		case !errors.Is(err, unix.EEXIST):
			return fmt.Errorf("block node %s for device %d:%d: %w", path, major, minor, err)
		}
	}
	return fmt.Errorf("block node %s: something keeps creating and removing it", path)
}

func setNodeMode(path string, current, want uint32) error {
	if current&0o7777 == want {
		return nil
	}
	if err := unix.Fchmodat(unix.AT_FDCWD, path, want, 0); err != nil {
		return fmt.Errorf("block node %s: setting mode %#o: %w", path, want, err)
	}
	return nil
}

func describeNode(st unix.Stat_t) string {
	switch dev := devNumOf(st.Rdev); st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		return fmt.Sprintf("block device %d:%d", dev.major, dev.minor)
	case unix.S_IFCHR:
		return fmt.Sprintf("character device %d:%d", dev.major, dev.minor)
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return fmt.Sprintf("a regular file of %d bytes", st.Size)
	default:
		return fmt.Sprintf("mode %#o", st.Mode)
	}
}
