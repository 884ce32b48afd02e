package mount

import (
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Block node permissions: read-write for owner and group, or read-only.
const (
	blockNodeMode         = 0o660
	blockNodeModeReadOnly = 0o440
)

// MakeBlockNode creates a block device node for major:minor at path, mode
// 0660 (0440 when readOnly), for publishing a raw block volume. This
// replaces bind-mounting the /dev node, whose devtmpfs mounts multiply
// through mount propagation until the node wedges.
//
// It is idempotent: an existing node for the same device is kept (with its
// mode corrected), and an empty regular file (a placeholder some container
// orchestrators create) is replaced. Anything else at path is refused and
// left untouched: a directory, a symlink, a file with data, or a node for
// another device.
func MakeBlockNode(path string, major, minor uint32, readOnly bool) error {
	if !filepath.IsAbs(path) {
		return fmt.Errorf("block node %q: not an absolute path", path)
	}
	mode := uint32(blockNodeMode)
	if readOnly {
		mode = blockNodeModeReadOnly
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
