package main

import (
	"context"
	"errors"
	"fmt"
	"path"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// CreateVolume makes a file disk <volumePath>/<id>.img exported over NVMe/TCP, empty or,
// with a content source, a copy of a snapshot or volume (createFromSource). It is
// idempotent by name: a retry — also one after a create that was cut off after the RDS had
// made the disk (deadline, dropped connection) — finds the disk and returns it, so there is
// never a duplicate or a leaked file.
func (c *controllerService) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, required("name", "CreateVolume")
	}
	use, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return nil, err
	}
	params, err := c.parseParams(req.GetParameters())
	if err != nil {
		return nil, err
	}
	if err := params.withAddress(c.cfg.RDSAddress); err != nil {
		return nil, err
	}
	size, err := volumeSize(req.GetCapacityRange(), use.minimum)
	if err != nil {
		return nil, err
	}
	id := volumeIDFor(req.GetName())
	if id != req.GetName() {
		logFrom(ctx).Debug("volume ID derived from the request name (not a valid RDS slot)", "volume_id", id)
	}
	release, ok := c.locks.tryLock(id)
	if !ok {
		return nil, busy(id)
	}
	defer release()
	if req.GetVolumeContentSource() != nil {
		return c.createFromSource(ctx, req, id, params, use.minimum)
	}

	filePath := path.Join(params.volumePath, volumeFileName(id))
	disk, err := c.client.CreateDisk(ctx, routeros.CreateDiskRequest{
		Slot: id, FilePath: filePath, SizeBytes: size, Port: params.ints[paramNVMePort], NQN: defaultNQN(id),
	})
	if errors.Is(err, routeros.ErrAlreadyExists) {
		// a retry, or a second request with the same name: the existing disk must fit it
		if disk, err = c.client.GetDisk(ctx, id); err == nil {
			if why := c.incompatible(disk, filePath, params, req.GetCapacityRange(), use.minimum); why != "" {
				return nil, status.Errorf(codes.AlreadyExists, "volume %s (name %q) already exists and does not match this request: %s; use another name or delete the existing volume", id, req.GetName(), why)
			}
		}
	}
	switch {
	case errors.Is(err, routeros.ErrNoSpace):
		return nil, c.noSpaceStatus(ctx, "create volume "+id, params.volumePath, size, err)
	case err != nil:
		return nil, c.rdsStatus(fmt.Sprintf("create volume %s (%s in %s)", id, humanBytes(size), params.volumePath), err)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      id,
		CapacityBytes: disk.Size, // exactly what the RDS holds
		VolumeContext: params.volumeContext(disk),
	}}, nil
}

// incompatible says why an existing disk cannot stand for the requested volume ("" when
// it can).
func (c *controllerService) incompatible(d *routeros.Disk, filePath string, p *volumeParams, cr *csi.CapacityRange, minimum int64) string {
	if why := c.managedDisk(d); why != "" {
		return why
	}
	switch {
	case d.FilePath != filePath:
		return fmt.Sprintf("it is stored at %s, this request asks for %s", d.FilePath, filePath)
	case !sizeFits(d.Size, cr, minimum):
		return fmt.Sprintf("its size is %s (%d bytes), this request asks for %s", humanBytes(d.Size), d.Size, describeRange(cr, minimum))
	case !d.NVMeExport:
		return "it is not exported over NVMe/TCP (nvme-tcp-export=no)"
	case d.NVMePort != 0 && d.NVMePort != p.ints[paramNVMePort]:
		return fmt.Sprintf("it is exported on port %d, this request asks for %d", d.NVMePort, p.ints[paramNVMePort])
	}
	return ""
}

func describeRange(cr *csi.CapacityRange, minimum int64) string {
	lo := max(cr.GetRequiredBytes(), minimum)
	if cr.GetLimitBytes() > 0 {
		return fmt.Sprintf("%d to %d bytes", lo, cr.GetLimitBytes())
	}
	return fmt.Sprintf("at least %d bytes", lo)
}
