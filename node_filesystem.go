package main

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// The volume's filesystem, for stage and heal alike: what the disk holds, formatting
// only a provably blank one, the check before a mount, and the mount itself.

// prepareFilesystem makes sure disk holds the volume's filesystem and that it may be
// mounted: a positively blank disk is formatted (when mayFormat), a known filesystem of
// the right type is checked (ext: e2fsck -p, which also replays the journal), and
// anything else fails with nothing written. A probe that cannot read the disk is never
// taken for "blank".
// It returns what the probe found.
func (n *nodeService) prepareFilesystem(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, mayFormat bool) (mount.ProbeResult, error) {
	p, err := n.fs.probe(ctx, disk.DevPath)
	if err != nil {
		return p, status.Errorf(codes.Unavailable, "volume %s: cannot read disk %s to see what it holds, so it is neither formatted nor mounted: %v; this is retried, check the NVMe/TCP path if it persists",
			rec.VolumeID, disk.DevPath, err)
	}
	return p, n.prepareProbed(ctx, rec, disk, p, mayFormat)
}

// growSlack is how much smaller than its disk a filesystem may be and still be taken
// as filling it: our volumes are whole MiB, and so is every size they are grown by.
const growSlack = 1 << 20

// growToDisk grows a mounted filesystem that the probe (p) found smaller than its disk:
// a volume restored from a snapshot, or cloned, into a larger size holds its source's
// smaller filesystem until it is grown. A freshly formatted, read-only or already full
// filesystem is left alone.
func (n *nodeService) growToDisk(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, p mount.ProbeResult) error {
	if rec.ReadOnly || p.Kind == mount.KindBlank || p.Size == 0 || disk.SizeBytes-p.Size < growSlack {
		return nil
	}
	if err := n.fs.grow(ctx, disk.DevPath, rec.StagingPath, rec.FSType); err != nil {
		// Unmounted again, so that kubelet's retry of the stage tries the grow again
		// (a stage that finds the volume mounted leaves it as it is). Nothing uses this
		// mount yet: it was made a moment ago by this stage.
		if uerr := mount.UnmountAll(ctx, rec.StagingPath); uerr != nil {
			err = errors.Join(err, fmt.Errorf("and unmounting it again failed: %w", uerr))
		}
		return status.Errorf(codes.Internal, "volume %s holds a %d-byte %s filesystem on a %d-byte disk (restored or cloned into a larger size), and growing it failed: %v; this is retried",
			rec.VolumeID, p.Size, rec.FSType, disk.SizeBytes, err)
	}
	n.log.Info("filesystem grown to fill its disk", "volume_id", rec.VolumeID, "device", disk.DevPath, "from", p.Size, "to", disk.SizeBytes)
	return nil
}

// prepareProbed is prepareFilesystem for a disk the caller has just probed (p).
func (n *nodeService) prepareProbed(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, p mount.ProbeResult, mayFormat bool) error {
	switch p.Kind {
	case mount.KindBlank:
		if !mayFormat {
			return status.Errorf(codes.FailedPrecondition, "volume %s: disk %s reads as blank (%s) after a reconnect, but the volume held a %s filesystem; refusing to format it: check the volume on the RDS",
				rec.VolumeID, disk.DevPath, p.Detail, rec.FSType)
		}
		if rec.ReadOnly {
			return status.Errorf(codes.FailedPrecondition, "volume %s is blank and its access mode is read-only, so it cannot be formatted; stage it read-write once first", rec.VolumeID)
		}
		if err := n.fs.format(ctx, disk.DevPath, rec.FSType); err != nil {
			return fmt.Errorf("format %s as %s: %w", disk.DevPath, rec.FSType, err)
		}
		n.log.Info("formatted a blank volume", "volume_id", rec.VolumeID, "device", disk.DevPath, "fstype", rec.FSType)
		return nil
	case mount.KindExt4, mount.KindExt3, mount.KindExt2:
		if rec.FSType != "ext4" {
			return fsMismatch(rec, disk, p)
		}
		if rec.ReadOnly {
			return nil // a read-only access mode must not write, and e2fsck -p writes
		}
		if err := n.fs.repair(ctx, disk.DevPath, "ext4"); err != nil {
			if errors.Is(err, mount.ErrNeedsRepair) {
				return status.Errorf(codes.FailedPrecondition, "volume %s needs a filesystem repair before it can be mounted: %v", rec.VolumeID, err)
			}
			return err
		}
		return nil
	case mount.KindXFS:
		// No xfs_repair here: a read-only check walks all metadata (minutes on a large
		// volume); the mount replays the log and the kernel verifies what it reads,
		// answering EUCLEAN for a filesystem that needs repair.
		if rec.FSType != "xfs" {
			return fsMismatch(rec, disk, p)
		}
		return nil
	default:
		return status.Errorf(codes.FailedPrecondition,
			"volume %s: disk %s holds %s (%s), not a %s filesystem; refusing to format or mount it, nothing was written. If the data is disposable, wipe the volume and retry",
			rec.VolumeID, disk.DevPath, p.Kind, p.Detail, rec.FSType)
	}
}

func fsMismatch(rec *stagingRecord, disk *nvme.Disk, p mount.ProbeResult) error {
	return status.Errorf(codes.FailedPrecondition,
		"volume %s: disk %s holds a %s filesystem (%s) but the volume capability asks for %s; nothing was changed: use fsType %s for this volume",
		rec.VolumeID, disk.DevPath, p.Kind, p.Detail, rec.FSType, fsFamily(p.Kind))
}

// fsFamily is the fsType that mounts a probed filesystem.
func fsFamily(k mount.Kind) string {
	if k == mount.KindXFS {
		return "xfs"
	}
	return "ext4"
}

// mountDisk mounts disk's filesystem at the staging path with the recorded options.
func (n *nodeService) mountDisk(ctx context.Context, rec *stagingRecord, disk *nvme.Disk) error {
	flags := rec.MountFlags
	if rec.ReadOnly {
		flags = append(flags[:len(flags):len(flags)], "ro")
	}
	if rec.FSType == "xfs" && !slices.Contains(flags, "nouuid") {
		// Restores and clones are byte copies that keep their source's filesystem UUID, and
		// xfs refuses a second mount of a UUID already mounted on the node. Staging never
		// mounts one volume twice, so the UUID check adds no safety here.
		flags = append(flags[:len(flags):len(flags)], "nouuid")
	}
	opts, err := mount.ParseOptions(rec.FSType, flags)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "mount options %q: %v", flags, err)
	}
	if err := n.storm.Mount(ctx, disk.DevPath, rec.StagingPath, rec.FSType, opts); err != nil {
		return err
	}
	n.log.Info("staged", "volume_id", rec.VolumeID, "device", disk.DevPath, "staging_path", rec.StagingPath, "fstype", rec.FSType)
	return nil
}
