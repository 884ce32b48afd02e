package mount

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// devNum is a device number split the way mountinfo shows it.
type devNum struct {
	major, minor uint32
}

func devNumOf(dev uint64) devNum { return devNum{unix.Major(dev), unix.Minor(dev)} }

// blockNodeAt stats path, following symlinks, and returns the device
// number when it is a block device node; ok is false for anything else.
func blockNodeAt(path string) (dev devNum, ok bool, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return devNum{}, false, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, false, nil
	}
	return devNumOf(st.Rdev), true, nil
}

// blockDeviceOf returns the device number of path, which must be a block
// device node.
func blockDeviceOf(path string) (devNum, error) {
	dev, ok, err := blockNodeAt(path)
	if err == nil && !ok {
		err = fmt.Errorf("%s is not a block device", path)
	}
	return dev, err
}
