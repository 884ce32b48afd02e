package mount

import (
	"context"
	"fmt"
)

// mkfsArgs are the arguments for each filesystem Format makes.
var mkfsArgs = map[string]func(device string) (string, []string){
	// No -F: the probe already proved the device blank, and without -F
	// mke2fs keeps its own refusal to touch a mounted device. It does not
	// prompt without a terminal. -m0: a volume is not a root filesystem
	// and users expect all of the capacity they asked for. nodiscard: the
	// device is a fresh sparse file on the appliance; discarding it only
	// costs time over the network.
	"ext4": func(device string) (string, []string) {
		return "mkfs.ext4", []string{"-q", "-m0", "-E", "nodiscard", device}
	},
	// No -f, so mkfs.xfs's own check for an existing signature stays as a
	// second safety net. -K: skip discard, as above.
	"xfs": func(device string) (string, []string) {
		return "mkfs.xfs", []string{"-q", "-K", device}
	},
}

// Format makes a fstype ("ext4" or "xfs") filesystem on device, but only
// when its own probe sees a blank device and nothing of it is mounted. Any
// doubt (a read error, a short device, any signature or non-zero byte)
// refuses with an error wrapping ErrNotBlank or the probe's error; the
// caller cannot skip the probe. After mkfs it probes again to confirm the
// filesystem is there.
func Format(ctx context.Context, device, fstype string) error {
	return systemTools.format(ctx, device, fstype)
}

func (t fsTools) format(ctx context.Context, device, fstype string) error {
	mkfs, ok := mkfsArgs[fstype]
	if !ok {
		return fmt.Errorf("format %s: unsupported filesystem type %q; supported: ext4, xfs", device, fstype)
	}
	if err := refuseIfMounted(ctx, device); err != nil {
		return fmt.Errorf("refusing to format %s: %w", device, err)
	}
	before, err := probeWith(ctx, device, t.open)
	if err != nil {
		return fmt.Errorf("refusing to format %s: %w; nothing was written", device, err)
	}
	if before.Kind != KindBlank {
		return fmt.Errorf("refusing to format %s: %w: found %s (%s); nothing was written. "+
			"If the volume should keep this data, use it with the filesystem it has; "+
			"if it really is disposable, wipe it yourself and retry",
			device, ErrNotBlank, before.Kind, before.Detail)
	}
	name, args := mkfs(device)
	if _, err := t.run(ctx, name, args...); err != nil {
		return fmt.Errorf("format %s as %s: %w", device, fstype, err)
	}
	after, err := probeWith(ctx, device, t.open)
	if err != nil {
		return fmt.Errorf("format %s as %s: checking the result: %w", device, fstype, err)
	}
	if after.Kind != Kind(fstype) {
		return fmt.Errorf("format %s as %s: %s reported success but the device now shows %s (%s)",
			device, fstype, name, after.Kind, after.Detail)
	}
	return nil
}

// refuseIfMounted returns an error wrapping ErrInUse when the block device
// at path has any mount-table entry. Regular files (test images) pass:
// they are only ever mounted through a loop device, which is checked.
func refuseIfMounted(ctx context.Context, path string) error {
	dev, isBlock, err := blockNodeAt(path)
	if err != nil || !isBlock {
		return err
	}
	entries, err := BySource(ctx, dev.major, dev.minor)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%w: device %d:%d is mounted at %s (%d mounts); unmount it first",
			ErrInUse, dev.major, dev.minor, entries[0].Mountpoint, len(entries))
	}
	return nil
}
