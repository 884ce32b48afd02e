package mount

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// devNum is a device number split the way mountinfo shows it.
type devNum struct {
	major, minor uint32
}

// blockDeviceOf returns the device number of the block device node path.
func blockDeviceOf(path string) (devNum, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return devNum{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, fmt.Errorf("%s is not a block device", path)
	}
	return devNum{unix.Major(st.Rdev), unix.Minor(st.Rdev)}, nil
}
