package mount

import (
	"context"
	"fmt"
	"strings"
)

// Grow enlarges the filesystem on device, mounted at mountPoint, to fill
// the device, online: resize2fs on the device for ext2/3/4, xfs_growfs on
// the mount point for xfs. Make the kernel see the new device size first.
// It refuses unless mountPoint really holds device's filesystem, so a
// wrong pairing cannot grow another volume. Growing to the size the
// filesystem already has is a no-op.
func Grow(ctx context.Context, device, mountPoint, fstype string) error {
	return systemTools.grow(ctx, device, mountPoint, fstype)
}

func (t fsTools) grow(ctx context.Context, device, mountPoint, fstype string) error {
	dev, err := blockDeviceOf(device)
	if err != nil {
		return fmt.Errorf("grow %s: %w", device, err)
	}
	entries, err := ByMountPoint(ctx, mountPoint)
	if err != nil {
		return fmt.Errorf("grow %s: %w", device, err)
	}
	if len(entries) == 0 {
		return fmt.Errorf("grow %s: nothing is mounted at %s; online grow needs the filesystem mounted there", device, mountPoint)
	}
	if top := entries[len(entries)-1]; uint32(top.Major) != dev.major || uint32(top.Minor) != dev.minor {
		return fmt.Errorf("grow %s: %s holds device %d:%d, not %s (%d:%d)", device, mountPoint, top.Major, top.Minor, device, dev.major, dev.minor)
	}
	var name string
	var args []string
	switch fstype {
	case "ext4", "ext3", "ext2":
		name, args = "resize2fs", []string{device}
	case "xfs":
		name, args = "xfs_growfs", []string{"-d", mountPoint}
	default:
		return fmt.Errorf("grow %s: unsupported filesystem type %q; supported: ext4, ext3, ext2, xfs", device, fstype)
	}
	if res, err := t.run(ctx, name, args...); err != nil {
		if strings.Contains(res.output, resize2fsNoCapability) {
			return fmt.Errorf("grow %s at %s: online ext4 resize needs CAP_SYS_RESOURCE, which this process lacks; "+
				"run the node plugin as a privileged container: %w", device, mountPoint, err)
		}
		return fmt.Errorf("grow %s at %s: %w", device, mountPoint, err)
	}
	return nil
}

// resize2fsNoCapability is resize2fs's report of EPERM from the online
// resize ioctl, which the kernel returns without CAP_SYS_RESOURCE.
const resize2fsNoCapability = "Permission denied to resize filesystem"
