package main

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/nvme"
)

// expandWait bounds how long NodeExpandVolume waits for the disk to show the size the
// controller gave it, after the rescan.
const expandWait = 10 * time.Second

// NodeExpandVolume makes the node see a volume the controller grew: it rescans the
// namespace, waits for the new size, then grows an ext4 or xfs filesystem online. A block
// volume only needs the rescan. It returns the disk's size.
func (n *nodeService) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	rec, _, err := n.stagedAt(ctx, id, req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	want := req.GetCapacityRange().GetRequiredBytes()
	disk, err := n.att.Rescan(ctx, rec.NQN, rec.NSID)
	if err != nil {
		return nil, nodeStatus("expand volume "+id+": rescan", err)
	}
	if disk, err = n.waitSize(ctx, rec, disk, want); err != nil {
		return nil, err
	}
	block := rec.Block || req.GetVolumeCapability().GetBlock() != nil
	if !block {
		if err := n.fs.grow(ctx, disk.DevPath, rec.StagingPath, rec.FSType); err != nil {
			return nil, nodeStatus("expand volume "+id+": grow the filesystem", err)
		}
		n.log.Info("filesystem grown", "volume_id", id, "device", disk.DevPath, "size", disk.SizeBytes)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: disk.SizeBytes}, nil
}

// waitSize waits (bounded) until the disk shows at least want bytes: the kernel applies
// a rescan asynchronously.
func (n *nodeService) waitSize(ctx context.Context, rec stagingRecord, disk *nvme.Disk, want int64) (*nvme.Disk, error) {
	deadline := time.NewTimer(expandWait)
	defer deadline.Stop()
	for disk.SizeBytes < want {
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "expand volume %s: the disk shows %d bytes, not the %d requested, when the call's deadline passed", rec.VolumeID, disk.SizeBytes, want)
		case <-deadline.C:
			return nil, status.Errorf(codes.Unavailable,
				"expand volume %s: after a rescan the disk still shows %d bytes, less than the %d requested; the RDS has not grown the volume yet (ControllerExpandVolume must succeed first); retried automatically",
				rec.VolumeID, disk.SizeBytes, want)
		case <-time.After(100 * time.Millisecond):
		}
		d, err := n.att.Resolve(rec.NQN, rec.NSID)
		if err != nil {
			return nil, nodeStatus("expand volume "+rec.VolumeID, err)
		}
		disk = d
	}
	return disk, nil
}
