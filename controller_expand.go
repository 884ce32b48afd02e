package main

import (
	"context"
	"errors"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/routeros"
)

// ControllerExpandVolume grows the volume's file disk, also while it is attached (the
// node then rescans the namespace and, for a filesystem volume, grows the file system).
// It never shrinks: a request at or below the current size returns the current size.
func (c *controllerService) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id, cr := req.GetVolumeId(), req.GetCapacityRange()
	switch {
	case id == "":
		return nil, required("volume_id", "ControllerExpandVolume")
	case cr.GetRequiredBytes() <= 0 && cr.GetLimitBytes() <= 0:
		return nil, required("capacity_range with required_bytes", "ControllerExpandVolume")
	}
	size, err := volumeSize(cr, 0)
	if err != nil {
		return nil, err
	}
	release, ok := c.locks.tryLock(id)
	if !ok {
		return nil, busy(id)
	}
	defer release()
	cur, err := c.lookupVolume(ctx, id, "expand volume "+id)
	if err != nil {
		return nil, err
	}
	disk, err := c.client.ResizeDisk(ctx, id, size)
	switch {
	case errors.Is(err, routeros.ErrNoSpace):
		return nil, c.noSpaceStatus(ctx, "expand volume "+id, cur.FilePath, size-cur.Size, err)
	case err != nil:
		return nil, c.rdsStatus("expand volume "+id+" to "+humanBytes(size), err)
	}
	// The node rescans the namespace for block volumes too, so it is always asked to.
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: disk.Size, NodeExpansionRequired: true}, nil
}
