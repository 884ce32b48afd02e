package mount

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// statDev holds the device numbers found by stat.
type statDev struct {
	major, minor uint32
	mode         uint32
}

// of fills d with the device that holds path's filesystem (st_dev).
func (d *statDev) of(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	d.major, d.minor, d.mode = unix.Major(st.Dev), unix.Minor(st.Dev), st.Mode
	return nil
}

// ofDevice fills d with the device numbers of the block device node path.
func (d *statDev) ofDevice(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return fmt.Errorf("%s is not a block device", path)
	}
	d.major, d.minor, d.mode = unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Mode
	return nil
}
