package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// NodePublishVolume makes a staged volume visible at the target path: a bind mount of
// the staging mount (filesystem), or a block device node with the disk's major:minor (raw
// block) — never a bind mount from /dev, whose copies multiply through mount propagation.
// It heals a volume whose mounts went stale first. Repeats are no-ops.
func (n *nodeService) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkRequest(id, "target_path", req.GetTargetPath()); err != nil {
		return nil, err
	}
	mode, err := requestCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if req.GetStagingTargetPath() == "" {
		return nil, status.Error(codes.InvalidArgument, "staging_target_path is missing: this driver stages volumes (STAGE_UNSTAGE_VOLUME) and publishes from the staging path")
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	rec, ok := n.records.get(id)
	switch {
	case !ok:
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not staged on this node: NodeStageVolume must succeed before NodePublishVolume", id)
	case rec.StagingPath != filepath.Clean(req.GetStagingTargetPath()):
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is staged at %s, not at %s", id, rec.StagingPath, req.GetStagingTargetPath())
	case rec.Block != mode.block:
		return nil, status.Errorf(codes.InvalidArgument, "volume %s is staged as %s, but the publish request asks for the other access type", id, rec.kind())
	}
	target := filepath.Clean(req.GetTargetPath())
	if mode.singleWriter {
		for other := range rec.Published {
			if other != target {
				return nil, status.Errorf(codes.FailedPrecondition, "volume %s is ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) and already published at %s: only one pod may use it; stop that pod first", id, other)
			}
		}
	}
	readOnly := req.GetReadonly() || mode.readOnly
	disk, staged, err := n.healVolume(ctx, rec, true)
	if err != nil {
		return nil, nodeStatus("publish volume "+id, err)
	}
	rec, _ = n.records.get(id) // healing may have updated it
	if rec.Block {
		err = n.publishBlock(&rec, disk, target, readOnly)
	} else {
		err = n.publishFilesystem(ctx, &rec, disk, staged, target, readOnly)
	}
	if err != nil {
		return nil, nodeStatus("publish volume "+id+" at "+target, err)
	}
	if ro, ok := rec.Published[target]; !ok || ro != readOnly {
		if rec.Published == nil {
			rec.Published = map[string]bool{}
		}
		rec.Published[target] = readOnly
		if err := n.records.put(rec); err != nil {
			return nil, nodeStatus("publish volume "+id, err)
		}
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// publishFilesystem bind-mounts the staging mount at target. st is the staging mount as
// healVolume saw it under the volume lock (nil: read it).
func (n *nodeService) publishFilesystem(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, st *mount.Entry, target string, readOnly bool) error {
	var err error
	if st == nil {
		if st, err = topMount(ctx, rec.StagingPath); err != nil {
			return err
		}
	}
	if st == nil {
		return status.Errorf(codes.FailedPrecondition, "volume %s: nothing is mounted at the staging path %s; it must be staged again (NodeStageVolume)", rec.VolumeID, rec.StagingPath)
	}
	if entryDev(st) != diskDev(disk) {
		return status.Errorf(codes.Unavailable, "volume %s: the staging mount is on device %d:%d but the volume's disk is %s (%d:%d); the node plugin is replacing the stale mount, retry shortly",
			rec.VolumeID, st.Major, st.Minor, disk.Name, disk.Major, disk.Minor)
	}
	t, err := topMount(ctx, target)
	switch {
	case err != nil:
		return err
	case t == nil:
	case entryDev(t) != diskDev(disk) || t.Root != st.Root:
		return status.Errorf(codes.FailedPrecondition, "target %s already has another filesystem mounted (device %d:%d, %s); unpublish whatever uses it first",
			target, t.Major, t.Minor, t.Source)
	case hasOption(t.Options, "ro") != readOnly:
		return status.Errorf(codes.AlreadyExists, "volume %s is already published at %s with read-only=%v; unpublish it before publishing it with read-only=%v",
			rec.VolumeID, target, !readOnly, readOnly)
	default:
		return nil // already published
	}
	if err := ensureDir(target); err != nil {
		return status.Errorf(codes.FailedPrecondition, "publish target: %v", err)
	}
	if err := n.storm.Bind(ctx, rec.StagingPath, target, readOnly); err != nil {
		return err
	}
	n.log.Info("published", "volume_id", rec.VolumeID, "target", target, "read_only", readOnly)
	return nil
}

// publishBlock creates the block device node at target. A node of the volume's previous
// device is replaced; anything else at target is refused by MakeBlockNode.
func (n *nodeService) publishBlock(rec *stagingRecord, disk *nvme.Disk, target string, readOnly bool) error {
	if cur, ok, _ := blockNodeAt(target); ok && cur != diskDev(disk) && cur == rec.dev() {
		if err := unix.Unlink(target); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove the stale device node %s: %w", target, err)
		}
	}
	if err := mount.MakeBlockNode(target, disk.Major, disk.Minor, readOnly); err != nil {
		return status.Errorf(codes.FailedPrecondition, "%v", err)
	}
	n.log.Info("published", "volume_id", rec.VolumeID, "target", target, "device", fmt.Sprintf("%d:%d", disk.Major, disk.Minor), "read_only", readOnly)
	return nil
}

// NodeUnpublishVolume unmounts until nothing is mounted at the target (mounts may be
// stacked), then removes the target alone — rmdir for a directory, unlink for a device
// node or an empty file — never anything below it. A missing target is success.
func (n *nodeService) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkRequest(id, "target_path", req.GetTargetPath()); err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	target := filepath.Clean(req.GetTargetPath())
	if err := removePublishTarget(ctx, target); err != nil {
		return nil, nodeStatus("unpublish volume "+id+" from "+target, err)
	}
	if rec, ok := n.records.get(id); ok {
		if _, published := rec.Published[target]; published {
			delete(rec.Published, target)
			if err := n.records.put(rec); err != nil {
				return nil, nodeStatus("unpublish volume "+id, err)
			}
		}
	}
	n.log.Info("unpublished", "volume_id", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// removePublishTarget unmounts everything at target and removes the target alone.
// Whatever is left below a directory after every unmount is not ours: rmdir fails on it.
func removePublishTarget(ctx context.Context, target string) error {
	var st unix.Stat_t
	gone := func() (bool, error) {
		err := unix.Lstat(target, &st)
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return false, fmt.Errorf("inspect %s: %w", target, err)
		}
		return err != nil, nil
	}
	if g, err := gone(); g || err != nil {
		return err
	}
	if err := mount.UnmountAll(ctx, target); err != nil {
		return err
	}
	if g, err := gone(); g || err != nil {
		return err
	}
	var err error
	switch kind := st.Mode & unix.S_IFMT; {
	case kind == unix.S_IFDIR:
		err = unix.Rmdir(target)
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return status.Errorf(codes.FailedPrecondition,
				"target %s still holds files after every mount on it was removed; they are not the volume's and are left alone: remove them by hand, then retry", target)
		}
	case kind == unix.S_IFBLK, kind == unix.S_IFREG && st.Size == 0:
		err = unix.Unlink(target)
	default:
		return status.Errorf(codes.FailedPrecondition,
			"target %s is neither a directory, a block device node nor an empty file (mode %#o); refusing to remove it: remove it by hand if it is stale", target, st.Mode)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", target, err)
	}
	return nil
}
