package main

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// CreateVolume makes a file disk <volumePath>/<id>.img exported over NVMe/TCP, empty or a
// copy of a content source (createFromSource). It is idempotent by name: a retry, also
// after a create cut off once the RDS had made the disk, finds the disk and returns it.
func (c *controllerService) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, required("name", "CreateVolume")
	}
	minimum, err := checkCapabilities(req.GetVolumeCapabilities())
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
	size, err := volumeSize(req.GetCapacityRange(), minimum)
	if err != nil {
		return nil, err
	}
	id := volumeIDFor(req.GetName())
	if id != req.GetName() {
		logFrom(ctx).Debug("volume ID derived from the request name (not a valid RDS slot)", "volume_id", id)
	}
	release, err := c.lock("volume", id)
	if err != nil {
		return nil, err
	}
	defer release()
	if req.GetVolumeContentSource() != nil {
		return c.createFromSource(ctx, req, id, params, minimum)
	}
	filePath := path.Join(params.volumePath, volumeFileName(id))
	disk, err := c.client.CreateDisk(ctx, routeros.CreateDiskRequest{
		Slot: id, FilePath: filePath, SizeBytes: size, Port: params.ints[paramNVMePort], NQN: defaultNQN(id),
	})
	if errors.Is(err, routeros.ErrAlreadyExists) { // a retry, or another request of that name
		if disk, err = c.client.GetDisk(ctx, id); err == nil {
			if err := c.checkExisting(req, disk, filePath, params, minimum); err != nil {
				return nil, err
			}
		}
	}
	if err != nil {
		return nil, c.spaceStatus(ctx, "create volume "+id, fmt.Sprintf(" (%s in %s)", humanBytes(size), params.volumePath), params.volumePath, size, err)
	}
	return volumeResponse(req, disk, params), nil
}

// volumeResponse describes a created volume: the size the RDS holds, and its context.
func volumeResponse(req *csi.CreateVolumeRequest, disk *routeros.Disk, params *volumeParams) *csi.CreateVolumeResponse {
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId: disk.Slot, CapacityBytes: disk.Size, VolumeContext: params.volumeContext(disk), ContentSource: req.GetVolumeContentSource(),
	}}
}

// checkExisting is AlreadyExists when the disk found for a create's name cannot stand for
// the requested volume.
func (c *controllerService) checkExisting(req *csi.CreateVolumeRequest, d *routeros.Disk, filePath string, p *volumeParams, minimum int64) error {
	why := c.managedDisk(d)
	cr := req.GetCapacityRange()
	switch {
	case why != "":
	case d.FilePath != filePath:
		why = fmt.Sprintf("it is stored at %s, this request asks for %s", d.FilePath, filePath)
	case d.Size < max(cr.GetRequiredBytes(), minimum) || cr.GetLimitBytes() != 0 && d.Size > cr.GetLimitBytes():
		why = fmt.Sprintf("its size is %s (%d bytes), this request asks for %s", humanBytes(d.Size), d.Size, describeRange(cr, minimum))
	case !d.NVMeExport:
		why = "it is not exported over NVMe/TCP (nvme-tcp-export=no)"
	case d.NVMePort != 0 && d.NVMePort != p.ints[paramNVMePort]:
		why = fmt.Sprintf("it is exported on port %d, this request asks for %d", d.NVMePort, p.ints[paramNVMePort])
	default:
		return nil
	}
	return status.Errorf(codes.AlreadyExists, "volume %s (name %q) already exists and does not match this request: %s; use another name or delete the existing volume", d.Slot, req.GetName(), why)
}

// DeleteVolume removes the volume's disk and then its file (RouterOS keeps the file when
// the disk goes), completing an earlier delete cut off between the two. A volume still
// attached is refused.
func (c *controllerService) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, required("volume_id", "DeleteVolume")
	}
	if !isVolumeID(id) {
		return &csi.DeleteVolumeResponse{}, nil // no volume can have this ID
	}
	release, err := c.lock("volume", id)
	if err != nil {
		return nil, err
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
// volume could have it, but only a file no disk uses; never directories or other names.
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
		c.copies.forget(f.Path) // it may have been a copy still running
	}
	return nil
}

// ControllerExpandVolume grows the volume's disk, also while attached (the node rescans
// and grows the file system). It never shrinks: a smaller request returns the current size.
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
	cur, release, err := c.lockVolume(ctx, id, "expand volume "+id)
	if err != nil {
		return nil, err
	}
	defer release()
	disk, err := c.client.ResizeDisk(ctx, id, size)
	if err != nil {
		return nil, c.spaceStatus(ctx, "expand volume "+id, " to "+humanBytes(size), cur.FilePath, size-cur.Size, err)
	}
	// the node rescans the namespace of block volumes too
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: disk.Size, NodeExpansionRequired: true}, nil
}

const (
	defaultVolumeSize = int64(1) << 30   // when a request names no size
	xfsMinimumSize    = int64(300) << 20 // mkfs.xfs refuses smaller file systems
)

// volumeSize picks the size to allocate: the required bytes (1 GiB when none, within the
// limit), at least minimum, rounded up to the whole MiB the RDS allocates in, so a volume
// never gets less than asked for. A limit the rounding would exceed is OutOfRange.
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
		if limit > 0 {
			size = min(size, limit)
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

func describeRange(cr *csi.CapacityRange, minimum int64) string {
	lo := max(cr.GetRequiredBytes(), minimum)
	if cr.GetLimitBytes() > 0 {
		return fmt.Sprintf("%d to %d bytes", lo, cr.GetLimitBytes())
	}
	return fmt.Sprintf("at least %d bytes", lo)
}

// contentSource is what a new volume is copied from, and once resolved its file and size.
type contentSource struct {
	kind string // "snapshot" or "volume"
	id   string
	file string
	size int64
}

func sourceOf(cs *csi.VolumeContentSource) (contentSource, error) {
	var s contentSource
	switch t := cs.GetType().(type) {
	case *csi.VolumeContentSource_Snapshot:
		s = contentSource{kind: "snapshot", id: t.Snapshot.GetSnapshotId()}
	case *csi.VolumeContentSource_Volume:
		s = contentSource{kind: "volume", id: t.Volume.GetVolumeId()}
	default:
		return s, status.Error(codes.InvalidArgument, "volume_content_source names neither a snapshot nor a volume")
	}
	if s.id == "" {
		return s, required("volume_content_source."+s.kind+" ID", "CreateVolume")
	}
	if !isVolumeID(s.id) { // snapshot IDs have the same form
		return s, status.Errorf(codes.NotFound, "source %s %s does not exist: it is not an ID this driver makes", s.kind, s.id)
	}
	return s, nil
}

// comment is recorded on the new volume's disk, so a retry can tell a copy of this source.
func (s contentSource) comment() string { return "rds-csi: copy of " + s.kind + " " + s.id }

func (s contentSource) String() string { return s.kind + " " + s.id }

// copySize is the size of a volume copied from `from`: at least the source's and what was
// asked for (in whole MiB), at most the limit; asking for less than the source is OutOfRange.
func copySize(cr *csi.CapacityRange, minimum int64, from contentSource) (int64, error) {
	req, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	if req > 0 && req < from.size || limit > 0 && limit < from.size {
		return 0, status.Errorf(codes.OutOfRange, "%s holds %s (%d bytes) and the request asks for %s: ask for at least %d bytes",
			from, humanBytes(from.size), from.size, describeRange(cr, 0), from.size)
	}
	size := max(from.size, routeros.RoundUpMiB(max(req, minimum)))
	if limit > 0 && size > limit {
		return 0, status.Errorf(codes.OutOfRange, "a volume copied from %s (%s) must be at least %s (%d bytes; whole MiB, and xfs needs %s), above the limit of %d bytes",
			from, humanBytes(from.size), humanBytes(size), size, humanBytes(minimum), limit)
	}
	return size, nil
}

// existingCopy answers a create whose disk exists: a retry (grown if the earlier call was
// cut off before its grow), or a conflict.
func (c *controllerService) existingCopy(ctx context.Context, req *csi.CreateVolumeRequest, disk *routeros.Disk, dst string, params *volumeParams, src contentSource, minimum int64) (*csi.CreateVolumeResponse, error) {
	if disk.Comment != src.comment() {
		return nil, status.Errorf(codes.AlreadyExists, "volume %s (name %q) already exists and was not made from %s (its disk's comment is %q); use another name or delete the existing volume",
			disk.Slot, req.GetName(), src, disk.Comment)
	}
	want := routeros.RoundUpMiB(max(req.GetCapacityRange().GetRequiredBytes(), minimum))
	if disk.Size < want && disk.FilePath == dst && c.managedDisk(disk) == "" {
		var err error
		if disk, err = c.growCopy(ctx, disk.Slot, want, dst); err != nil {
			return nil, err
		}
	}
	if err := c.checkExisting(req, disk, dst, params, minimum); err != nil {
		return nil, err
	}
	return volumeResponse(req, disk, params), nil
}

func (c *controllerService) growCopy(ctx context.Context, id string, size int64, dst string) (*routeros.Disk, error) {
	disk, err := c.client.ResizeDisk(ctx, id, size)
	if err != nil {
		return nil, c.spaceStatus(ctx, "grow the copied volume "+id, fmt.Sprintf(" to %s (its data is in place; the retry grows it)", humanBytes(size)), path.Dir(dst), size, err)
	}
	return disk, nil
}

// resolveSource finds the source's file and size and takes its lock. A snapshot must be
// complete to be copied.
func (c *controllerService) resolveSource(ctx context.Context, src *contentSource, id string) (func(), error) {
	if src.kind == "volume" {
		if src.id == id {
			return nil, status.Errorf(codes.InvalidArgument, "volume %s cannot be cloned into itself", id)
		}
		disk, release, err := c.lockVolume(ctx, src.id, "clone volume "+src.id)
		if err != nil {
			return nil, err
		}
		src.file, src.size = disk.FilePath, disk.Size
		return release, nil
	}
	release, err := c.lock("snapshot", src.id)
	if err != nil {
		return nil, err
	}
	s, st, err := c.getSnapshot(ctx, src.id)
	if err == nil && st.phase != copyDone {
		err = status.Errorf(codes.Aborted, "snapshot %s is not ready yet (%s); retry when it is ready to use", src.id, st.detail)
	}
	if err != nil {
		release()
		return nil, err
	}
	src.file, src.size = s.file.Path, s.size
	return release, nil
}
