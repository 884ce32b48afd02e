package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

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

// DeleteVolume removes the volume's disk and its backing file (RouterOS keeps the file
// when the disk goes). It is idempotent, and it completes an earlier delete that removed
// the disk but was cut off before the file. A volume still attached to a node is refused.
func (c *controllerService) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, required("volume_id", "DeleteVolume")
	}
	if !isVolumeID(id) {
		return &csi.DeleteVolumeResponse{}, nil // no volume can have this ID
	}
	release, ok := c.locks.tryLock(id)
	if !ok {
		return nil, busy(id)
	}
	defer release()
	nodes, err := c.fencing.attachedNodes(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(nodes) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is still attached to node %s: delete the pods using it and wait for Kubernetes to detach it, then the delete is retried",
			id, strings.Join(nodes, ", "))
	}
	disk, err := c.client.GetDisk(ctx, id)
	switch {
	case errors.Is(err, routeros.ErrNotFound):
		return &csi.DeleteVolumeResponse{}, c.removeLeftoverFiles(ctx, id)
	case err != nil:
		return nil, c.rdsStatus("delete volume "+id, err)
	}
	if why := c.managedDisk(disk); why != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s was not deleted: %s; it was left untouched", id, why)
	}
	if dst := c.copies.copyingFrom(disk.FilePath); dst != "" {
		return nil, status.Errorf(codes.Aborted, "volume %s is still being copied into %s (a snapshot or clone of it); retry when that has finished", id, dst)
	}
	if err := c.client.RemoveDisk(ctx, id); err != nil {
		return nil, c.rdsStatus("delete volume "+id+": remove its disk", err)
	}
	if err := c.client.RemoveFile(ctx, disk.FilePath); err != nil {
		return nil, c.rdsStatus(fmt.Sprintf("delete volume %s: remove its file %s (the disk is gone already; the retry removes the file)", id, disk.FilePath), err)
	}
	c.copies.forget(disk.FilePath)
	return &csi.DeleteVolumeResponse{}, nil
}

// removeLeftoverFiles finishes a delete whose disk is gone: it removes <id>.img wherever a
// volume of this driver could have it, but only a file no disk uses. Nothing else is ever
// removed: no directories, no other names.
func (c *controllerService) removeLeftoverFiles(ctx context.Context, id string) error {
	files, err := c.volumeFiles(ctx, id)
	if err != nil || len(files) == 0 {
		return err
	}
	disks, err := c.client.ListDisks(ctx, "")
	if err != nil {
		return c.rdsStatus("delete volume "+id+": check that no disk uses its leftover file", err)
	}
	for _, f := range files {
		if i := slices.IndexFunc(disks, func(d routeros.Disk) bool { return d.FilePath == f.Path }); i >= 0 {
			return status.Errorf(codes.FailedPrecondition, "volume %s: its file %s is used by disk %q, which this driver did not make for it; it was left untouched: remove or rename that disk on the RDS", id, f.Path, disks[i].Slot)
		}
		c.log.Info("removing the file of a volume whose disk was already removed (an interrupted delete)", "volume_id", id, "file", f.Path)
		if err := c.client.RemoveFile(ctx, f.Path); err != nil {
			return c.rdsStatus("delete volume "+id+": remove its leftover file "+f.Path, err)
		}
		c.copies.forget(f.Path) // it may have been a restore or clone still being copied
	}
	return nil
}

// volumeFiles finds the regular files named <id>.img below the volume directories.
func (c *controllerService) volumeFiles(ctx context.Context, id string) ([]routeros.File, error) {
	var found []routeros.File
	for _, b := range c.bases {
		files, err := c.client.ListFiles(ctx, b)
		if err != nil {
			return nil, c.rdsStatus(fmt.Sprintf("look for the file of volume %s in %s", id, b), err)
		}
		for _, f := range files {
			if f.Type != "directory" && path.Base(f.Path) == volumeFileName(id) &&
				!slices.ContainsFunc(found, func(g routeros.File) bool { return g.Path == f.Path }) {
				found = append(found, f)
			}
		}
	}
	return found, nil
}

const (
	// defaultVolumeSize is given when a request names no size.
	defaultVolumeSize = int64(1) << 30
	// xfsMinimumSize: mkfs.xfs refuses file systems smaller than 300 MiB.
	xfsMinimumSize = int64(300) << 20
)

// volumeSize picks the size to allocate for a capacity range: the required bytes (1 GiB
// when none are given, but within the limit), at least minimum, rounded up to a whole MiB
// (the unit the RDS allocates in, so a volume never gets less than asked for). A limit
// that the rounding would exceed is OutOfRange.
func volumeSize(cr *csi.CapacityRange, minimum int64) (int64, error) {
	required, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	switch {
	case required < 0 || limit < 0:
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range has a negative size (required_bytes %d, limit_bytes %d)", required, limit)
	case limit > 0 && required > limit:
		return 0, status.Errorf(codes.InvalidArgument, "capacity_range asks for at least %s but at most %s", humanBytes(required), humanBytes(limit))
	case required > routeros.MaxDiskSize:
		return 0, status.Errorf(codes.OutOfRange, "requested size %s is larger than the largest volume rds-csi makes (%s)", humanBytes(required), humanBytes(routeros.MaxDiskSize))
	}
	size := required
	if size == 0 {
		size = defaultVolumeSize
		if limit > 0 && limit < size {
			size = limit
		}
	}
	size = routeros.RoundUpMiB(max(size, minimum))
	if limit > 0 && size > limit {
		why := "volumes are allocated in whole MiB"
		if minimum > 0 && size == routeros.RoundUpMiB(minimum) {
			why = "xfs volumes are at least " + humanBytes(minimum)
		}
		return 0, status.Errorf(codes.OutOfRange, "capacity limit %s is below the smallest size that can be provisioned, %s (%s): raise the limit", humanBytes(limit), humanBytes(size), why)
	}
	return size, nil
}

// sizeFits reports whether an existing volume of size bytes satisfies a capacity range and
// a minimum (the idempotency check of CreateVolume).
func sizeFits(size int64, cr *csi.CapacityRange, minimum int64) bool {
	limit := cr.GetLimitBytes()
	return size >= max(cr.GetRequiredBytes(), minimum) && (limit == 0 || size <= limit)
}

// humanBytes renders a byte count for messages, e.g. "1.5 GiB".
func humanBytes(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	s := strings.TrimRight(strings.TrimRight(strconv.FormatFloat(v, 'f', 2, 64), "0"), ".")
	return s + " " + units[i]
}

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
