package main

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"srvlab.io/rds-csi/routeros"
)

// ValidateVolumeCapabilities confirms capabilities (and parameters) for an existing
// volume, or says why it cannot.
func (c *controllerService) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	switch {
	case id == "":
		return nil, required("volume_id", "ValidateVolumeCapabilities")
	case len(req.GetVolumeCapabilities()) == 0:
		return nil, required("volume_capabilities", "ValidateVolumeCapabilities")
	}
	disk, err := c.lookupVolume(ctx, id, "validate volume "+id)
	if err != nil {
		return nil, err
	}
	var msg string
	minimum, err := checkCapabilities(req.GetVolumeCapabilities())
	switch {
	case err != nil:
		msg = status.Convert(err).Message()
	case disk.Size < minimum:
		msg = "volume " + id + " is " + humanBytes(disk.Size) + ", smaller than xfs allows (" + humanBytes(minimum) + ")"
	case len(req.GetParameters()) > 0:
		if _, err := c.parseParams(req.GetParameters()); err != nil {
			msg = status.Convert(err).Message()
		}
	}
	if msg == "" && len(req.GetMutableParameters()) > 0 {
		msg = "mutable parameters are not supported (no VolumeAttributesClass support)"
	}
	if msg != "" {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: msg}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext: req.GetVolumeContext(), VolumeCapabilities: req.GetVolumeCapabilities(), Parameters: req.GetParameters(),
	}}, nil
}

// lookupVolume returns the disk of a volume of this driver: NotFound when there is none,
// FailedPrecondition when the slot holds a disk this driver does not manage. `what` names
// the operation for messages.
func (c *controllerService) lookupVolume(ctx context.Context, id, what string) (*routeros.Disk, error) {
	if !isVolumeID(id) {
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist: it is not a volume ID this driver makes", id)
	}
	disk, err := c.client.GetDisk(ctx, id)
	switch {
	case errors.Is(err, routeros.ErrNotFound):
		return nil, status.Errorf(codes.NotFound, "volume %s does not exist: the RDS has no disk with slot %s", id, id)
	case err != nil:
		return nil, c.rdsStatus(what, err)
	}
	if why := c.managedDisk(disk); why != "" {
		return nil, status.Errorf(codes.FailedPrecondition, "%s: %s", what, why)
	}
	return disk, nil
}

// ControllerGetVolume reports a volume's size and the nodes it is published to.
func (c *controllerService) ControllerGetVolume(ctx context.Context, req *csi.ControllerGetVolumeRequest) (*csi.ControllerGetVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, required("volume_id", "ControllerGetVolume")
	}
	disk, err := c.lookupVolume(ctx, req.GetVolumeId(), "look up volume "+req.GetVolumeId())
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeResponse{
		Volume: &csi.Volume{VolumeId: disk.Slot, CapacityBytes: disk.Size},
		Status: &csi.ControllerGetVolumeResponse_VolumeStatus{PublishedNodeIds: c.fencing.nodes(disk.Slot)},
	}, nil
}

// ListVolumes lists this driver's volumes in ID order, with the nodes each is published to.
func (c *controllerService) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	after, err := decodeListToken(req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	if !c.fencing.isRebuilt() {
		// empty published nodes now would make the external-attacher detach live attachments
		return nil, status.Error(codes.Unavailable, "attachment records are not rebuilt from the cluster's VolumeAttachments yet; retry shortly")
	}
	disks, err := c.volumeDisks(ctx)
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{}
	disks, resp.NextToken = page(disks, func(d routeros.Disk) string { return d.Slot }, after, req.GetMaxEntries())
	for _, d := range disks {
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: &csi.Volume{VolumeId: d.Slot, CapacityBytes: d.Size},
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: c.fencing.nodes(d.Slot)},
		})
	}
	return resp, nil
}

// page keeps the items (in ID order) after the ID `after`, at most maxEntries, and returns
// the token that continues the listing ("" at its end): the last ID returned, so paging
// survives volumes and snapshots coming and going.
func page[T any](items []T, id func(T) string, after string, maxEntries int32) ([]T, string) {
	items = slices.DeleteFunc(items, func(x T) bool { return id(x) <= after })
	if limit := int(maxEntries); limit > 0 && len(items) > limit {
		return items[:limit], base64.RawURLEncoding.EncodeToString([]byte(id(items[limit-1])))
	}
	return items, ""
}

// decodeListToken returns the ID a listing continues after ("" from the start); a token
// this driver did not make is Aborted, as the CSI spec asks.
func decodeListToken(token string, maxEntries int32) (string, error) {
	if maxEntries < 0 {
		return "", status.Errorf(codes.InvalidArgument, "max_entries %d is negative", maxEntries)
	}
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || !isVolumeID(string(b)) || strings.ContainsRune(token, '=') {
		return "", status.Errorf(codes.Aborted, "starting_token %q was not returned by this driver: list again from the start without it", token)
	}
	return string(b), nil
}

// volumeDisks returns the disks that are volumes of this driver, sorted by ID.
func (c *controllerService) volumeDisks(ctx context.Context) ([]routeros.Disk, error) {
	all, err := c.client.ListDisks(ctx, "") // sorted by slot
	if err != nil {
		return nil, c.rdsStatus("list volumes", err)
	}
	return slices.DeleteFunc(all, func(d routeros.Disk) bool { return !isVolumeID(d.Slot) || c.managedDisk(&d) != "" }), nil
}

// baseFiles lists the files below the volume directories, each once (bases may nest).
func (c *controllerService) baseFiles(ctx context.Context, what string) ([]routeros.File, error) {
	var found []routeros.File
	seen := map[string]bool{}
	for _, b := range c.bases {
		files, err := c.client.ListFiles(ctx, b)
		if err != nil {
			return nil, c.rdsStatus(what+" in "+b, err)
		}
		for _, f := range files {
			if !seen[f.Path] {
				seen[f.Path] = true
				found = append(found, f)
			}
		}
	}
	return found, nil
}

// volumeFiles finds the regular files named <id>.img below the volume directories.
func (c *controllerService) volumeFiles(ctx context.Context, id string) ([]routeros.File, error) {
	files, err := c.baseFiles(ctx, "look for the file of volume "+id)
	return slices.DeleteFunc(files, func(f routeros.File) bool {
		fid, ok := volumeIDOfFile(f)
		return !ok || fid != id
	}), err
}

// volumeIDOfFile returns the volume ID a file would belong to: <id>.img with a valid ID.
func volumeIDOfFile(f routeros.File) (string, bool) {
	id, isImg := strings.CutSuffix(path.Base(f.Path), ".img")
	return id, f.Type != "directory" && isImg && isVolumeID(id)
}

// GetCapacity reports the free space of the pool holding the class's volumePath, less
// --capacity-reserve; file disks live in one pool, so a volume can be as large.
func (c *controllerService) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	volumePath := c.cfg.RDSVolumePath
	if v, ok := req.GetParameters()[paramVolumePath]; ok {
		if msg := c.checkVolumePath(v); msg != "" {
			return nil, status.Error(codes.InvalidArgument, msg)
		}
		volumePath = v
	}
	if len(req.GetVolumeCapabilities()) > 0 {
		if _, err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
			// no space at all for volumes this driver cannot make
			return &csi.GetCapacityResponse{AvailableCapacity: 0, MaximumVolumeSize: wrapperspb.Int64(0)}, nil
		}
	}
	pool, err := c.client.PoolCapacity(ctx, volumePath)
	switch {
	case errors.Is(err, routeros.ErrNotFound):
		return nil, status.Errorf(codes.FailedPrecondition, "volumePath %s: %v; the first component of volumePath must be the mount point of a pool on the RDS (see /disk print where mount-point)", volumePath, err)
	case err != nil:
		return nil, c.rdsStatus("read the free space of the pool holding "+volumePath, err)
	}
	c.recordPool(pool)
	free := max(pool.Free-c.cfg.CapacityReserve, 0)
	return &csi.GetCapacityResponse{AvailableCapacity: free, MaximumVolumeSize: wrapperspb.Int64(free)}, nil
}

// recordPool keeps the pool's figures for /metrics, which never asks the RDS itself.
func (c *controllerService) recordPool(p routeros.Pool) {
	c.metrics.poolSizeBytes.WithLabelValues(p.Name).Set(float64(p.Size))
	c.metrics.poolFreeBytes.WithLabelValues(p.Name).Set(float64(p.Free))
}

// refreshPools reads the pool of every volume directory, once each.
func (c *controllerService) refreshPools(ctx context.Context) {
	for _, b := range onePathPerPool(c.bases) {
		p, err := c.client.PoolCapacity(ctx, b)
		if err != nil { // the health loop reports an unreachable RDS; this is the detail
			c.log.Debug("cannot read pool capacity for metrics", "path", b, "err", err)
			continue
		}
		c.recordPool(p)
	}
}

// onePathPerPool keeps the first of paths on each pool, in order.
func onePathPerPool(paths []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range paths {
		if pool := routeros.PoolName(p); !seen[pool] {
			seen[pool] = true
			out = append(out, p)
		}
	}
	return out
}

// Volume health (CSI 1.13's replacement of VOLUME_CONDITION): a volume is INACCESSIBLE
// when its disk stops exporting it over NVMe/TCP, or when only its file is left.
const (
	healthNotExported = "NotExported"
	healthDiskMissing = "DiskMissing"
)

// ControllerGetVolumeHealth reports one volume's health; with neither disk nor file the
// volume does not exist (NotFound).
func (c *controllerService) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, required("volume_id", "ControllerGetVolumeHealth")
	}
	disk, err := c.lookupVolume(ctx, id, "check the health of volume "+id)
	if status.Code(err) == codes.NotFound && isVolumeID(id) {
		files, ferr := c.volumeFiles(ctx, id)
		if ferr != nil || len(files) == 0 {
			return nil, cmp.Or(ferr, err)
		}
		return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: diskMissingHealth(id, files[0].Path)}, nil
	}
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: diskHealth(disk)}, nil
}

// ControllerListVolumeHealth lists the volumes with a known problem (disks that stopped
// exporting, files left without a disk), in ID order and paged like ListVolumes.
func (c *controllerService) ControllerListVolumeHealth(ctx context.Context, req *csi.ControllerListVolumeHealthRequest) (*csi.ControllerListVolumeHealthResponse, error) {
	after, err := decodeListToken(req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	disks, err := c.volumeDisks(ctx)
	if err != nil {
		return nil, err
	}
	var all []*csi.VolumeHealth
	seen := map[string]bool{} // volumes with a disk, or reported already
	for i := range disks {
		seen[disks[i].Slot] = true
		if h := diskHealth(&disks[i]); len(h.HealthStatuses) > 0 {
			all = append(all, h)
		}
	}
	files, err := c.baseFiles(ctx, "list volume files")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if id, ok := volumeIDOfFile(f); ok && !seen[id] {
			seen[id] = true
			all = append(all, diskMissingHealth(id, f.Path))
		}
	}
	slices.SortFunc(all, func(a, b *csi.VolumeHealth) int { return strings.Compare(a.VolumeId, b.VolumeId) })
	resp := &csi.ControllerListVolumeHealthResponse{}
	resp.Entries, resp.NextToken = page(all, (*csi.VolumeHealth).GetVolumeId, after, req.GetMaxEntries())
	return resp, nil
}

func diskHealth(d *routeros.Disk) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: d.Slot}
	if !d.NVMeExport {
		h.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: healthNotExported,
			Message: fmt.Sprintf("the RDS does not export disk %s over NVMe/TCP, so no node can attach it: run /disk set [find slot=%q] nvme-tcp-export=yes", d.Slot, d.Slot)}}
	}
	return h
}

func diskMissingHealth(id, file string) *csi.VolumeHealth {
	return &csi.VolumeHealth{VolumeId: id, HealthStatuses: []*csi.VolumeHealth_VolumeHealthEntry{{
		Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: healthDiskMissing,
		Message: fmt.Sprintf("the RDS has the volume's file %s but no disk for it, so nothing exports it: recreate it with /disk add type=file file-path=%s slot=%s nvme-tcp-export=yes", file, file, id),
	}}}
}
