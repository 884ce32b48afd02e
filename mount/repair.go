package mount

import (
	"context"
	"fmt"
	"strings"
)

// e2fsck exit-code bits (e2fsck(8)).
const (
	e2fsckCorrected       = 1 // errors corrected
	e2fsckCorrectedReboot = 2 // errors corrected, reboot if it was the root filesystem
	e2fsckUncorrected     = 4 // errors left uncorrected
)

// xfs_repair -n exit codes (xfs_repair(8)).
const (
	xfsRepairCorruption = 1 // corruption found
	xfsRepairDirtyLog   = 2 // the log holds changes that mounting replays
)

// xfsDirtyLogAlert is how xfs_repair -n says it ignored a dirty log; its
// findings are then spurious (it exits 1 anyway), as measured with
// xfsprogs 6.1 after a crash.
const xfsDirtyLogAlert = "valuable metadata changes in a log"

// Repair checks the filesystem on an unmounted device and applies only
// the repairs that are safe without a human: e2fsck -p for ext2/3/4 (it also
// replays a dirty journal), a read-only xfs_repair -n for xfs (a dirty xfs
// log is left for the mount to replay, and then the check is skipped). It refuses while any mount of the
// device exists (ErrInUse). nil means the filesystem may be mounted; an
// error wrapping ErrNeedsRepair means a human must repair it, and says how.
func Repair(ctx context.Context, device, fstype string) error {
	return systemTools.repair(ctx, device, fstype)
}

func (t fsTools) repair(ctx context.Context, device, fstype string) error {
	if err := refuseIfMounted(ctx, device); err != nil {
		return fmt.Errorf("refusing to check %s: %w", device, err)
	}
	switch fstype {
	case "ext4", "ext3", "ext2":
		return t.repairExt(ctx, device)
	case "xfs":
		return t.checkXFS(ctx, device)
	default:
		return fmt.Errorf("check %s: unsupported filesystem type %q; supported: ext4, ext3, ext2, xfs", device, fstype)
	}
}

func (t fsTools) repairExt(ctx context.Context, device string) error {
	// -p (preen) fixes only what is safe to fix unattended and exits 4
	// for anything else, instead of guessing with -y.
	res, err := t.run(ctx, "e2fsck", "-p", device)
	switch {
	case err == nil, res.exitCode >= 0 && res.exitCode&^(e2fsckCorrected|e2fsckCorrectedReboot) == 0:
		return nil
	case res.exitCode > 0 && res.exitCode&e2fsckUncorrected != 0:
		return fmt.Errorf("%w: e2fsck found errors on %s it cannot fix safely on its own. "+
			"Take a copy of the volume, run `e2fsck -f %s` by hand on the node (with the volume not in use), then retry. Details: %w",
			ErrNeedsRepair, device, device, err)
	default:
		return fmt.Errorf("check %s: %w", device, err)
	}
}

func (t fsTools) checkXFS(ctx context.Context, device string) error {
	// xfs has no safe unattended repair: xfs_repair rewrites metadata and
	// may move files to lost+found, so we only look (-n). With a dirty log
	// (after a crash) the look is meaningless; the mount replays the log
	// and the kernel checks what it reads.
	res, err := t.run(ctx, "xfs_repair", "-n", device)
	switch {
	case err == nil, res.exitCode == xfsRepairDirtyLog, strings.Contains(res.output, xfsDirtyLogAlert):
		return nil
	case res.exitCode == xfsRepairCorruption:
		return fmt.Errorf("%w: xfs_repair -n found corruption on %s. "+
			"Take a copy of the volume, run `xfs_repair %s` by hand on the node (with the volume not in use), then retry. Details: %w",
			ErrNeedsRepair, device, device, err)
	default:
		return fmt.Errorf("check %s: %w", device, err)
	}
}
