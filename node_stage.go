package main

import (
	"context"
	"fmt"
	"os"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// NodeStageVolume connects the volume over NVMe/TCP, records it, and for filesystem
// volumes formats a provably blank disk and mounts it at the staging path. For raw block
// volumes nothing at all is put in the staging path.
func (n *nodeService) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := requireVolumeID(id); err != nil {
		return nil, err
	}
	if err := requirePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	mode, err := requestCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	t, paths, o, err := parseVolumeContext(req.GetVolumeContext(), n.guard)
	if err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	rec := newStagingRecord(id, req.GetStagingTargetPath(), t, paths, o, mode)
	if old, ok := n.records.get(id); ok {
		if !old.sameVolume(rec) {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %s is already staged at %s as %s (NQN %s); unstage it before staging it at %s as %s",
				id, old.StagingPath, old.kind(), old.NQN, rec.StagingPath, rec.kind())
		}
		rec.Published, rec.Healing, rec.Major, rec.Minor, rec.BootID = old.Published, old.Healing, old.Major, old.Minor, old.BootID
	}
	if err := n.breaker.allow(id); err != nil {
		return nil, err
	}
	if err := n.stage(ctx, &rec); err != nil {
		err = nodeStatus("stage volume "+id, err)
		n.breaker.failure(id, err)
		return nil, err
	}
	n.breaker.success(id)
	n.heals.Delete(id)
	return &csi.NodeStageVolumeResponse{}, nil
}

// stage does the work of NodeStageVolume; the caller holds the volume lock.
func (n *nodeService) stage(ctx context.Context, rec *stagingRecord) error {
	disk, err := n.connect(ctx, rec)
	if err != nil {
		return err
	}
	if rec.Block {
		if rec.dev() != diskDev(disk) {
			// Reconnected under new names: point the publish nodes at the new disk.
			return n.replaceBlockNodes(rec, disk)
		}
		return nil
	}
	return n.mountStaging(ctx, rec, disk)
}

// connect attaches the volume and records it before anything is mounted, so a crash or a
// sweep never finds a connected volume without its claim. A record from an earlier boot
// becomes this boot's: its old device number means nothing now.
func (n *nodeService) connect(ctx context.Context, rec *stagingRecord) (*nvme.Disk, error) {
	n.sweepMu.RLock()
	defer n.sweepMu.RUnlock()
	disk, err := n.attach(ctx, rec)
	if err != nil {
		return nil, err
	}
	if rec.BootID != n.bootID {
		rec.BootID, rec.Major, rec.Minor, rec.Healing = n.bootID, disk.Major, disk.Minor, false
	}
	if rec.Major == 0 && rec.Minor == 0 {
		// First stage: nothing mounted or published yet. Later the recorded device
		// changes only once the mounts or nodes of the old one were replaced.
		rec.Major, rec.Minor = disk.Major, disk.Minor
	}
	if err := n.records.put(*rec); err != nil {
		return nil, err
	}
	n.settleUnowned(rec.NQN) // adopted, if the sweep had left it alone
	return disk, nil
}

// mountStaging makes the staging path hold the volume's filesystem from disk. Already
// mounted from disk: nothing to do (no second mount, no check of a mounted filesystem).
// Mounted from the volume's previous device (the controller was lost and came back with
// new names): the stale mounts are replaced, publish bind mounts included.
func (n *nodeService) mountStaging(ctx context.Context, rec *stagingRecord, disk *nvme.Disk) error {
	entries, err := mount.ByMountPoint(ctx, rec.StagingPath)
	if err != nil {
		return err
	}
	if t := top(entries); t != nil {
		switch {
		case entryDev(t) == diskDev(disk) && (rec.ReadOnly || !mountReadOnly(t)) && !rec.Healing:
			return nil
		case entryDev(t) == diskDev(disk) || entryDev(t) == rec.dev() || rec.Healing:
			return n.replaceMounts(ctx, rec, disk, "stage found the staging mount stale or read-only")
		default:
			return status.Errorf(codes.FailedPrecondition,
				"staging path %s already has device %d:%d mounted (%s), which is not volume %s's disk %s (%d:%d) nor its previous one; unmount it by hand if it is stale",
				rec.StagingPath, t.Major, t.Minor, t.Source, rec.VolumeID, disk.DevPath, disk.Major, disk.Minor)
		}
	}
	if rec.Healing {
		// A heal had unmounted the stale mounts when it was interrupted: finish it.
		return n.replaceMounts(ctx, rec, disk, "stage found an interrupted heal")
	}
	if err := os.MkdirAll(rec.StagingPath, 0o750); err != nil {
		return fmt.Errorf("create the staging path: %w", err)
	}
	probed, err := n.prepareFilesystem(ctx, rec, disk, true)
	if err != nil {
		return err
	}
	if err := n.mountDisk(ctx, rec, disk); err != nil {
		return err
	}
	if err := n.growToDisk(ctx, rec, disk, probed); err != nil {
		return err
	}
	if rec.dev() != diskDev(disk) {
		rec.Major, rec.Minor = disk.Major, disk.Minor
		return n.records.put(*rec)
	}
	return nil
}
