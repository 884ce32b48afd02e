package mount

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

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
	unit := st.Frsize
	if unit == 0 {
		unit = st.Bsize
	}
	return VolumeStats{
		TotalBytes:     int64(st.Blocks) * unit,
		AvailableBytes: int64(st.Bavail) * unit,
		UsedBytes:      int64(st.Blocks-st.Bfree) * unit,
		TotalInodes:    int64(st.Files),
		FreeInodes:     int64(st.Ffree),
		UsedInodes:     int64(st.Files - st.Ffree),
	}, nil
}
