package main

import (
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

// ValidateVolumeCapabilities confirms capabilities (and parameters) for an existing volume,
// or says in the message why it cannot.
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
	use, err := checkCapabilities(req.GetVolumeCapabilities())
	if err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	if disk.Size < use.minimum {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "volume " + id + " is " + humanBytes(disk.Size) + ", smaller than xfs allows (" + humanBytes(use.minimum) + ")"}, nil
	}
	if len(req.GetParameters()) > 0 {
		if _, err := c.parseParams(req.GetParameters()); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
		}
	}
	if len(req.GetMutableParameters()) > 0 {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: "mutable parameters are not supported (no VolumeAttributesClass support)"}, nil
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
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

// ListVolumes lists the volumes of this driver — file disks in the volume directories whose
// slot is their ID — in ID order, with the nodes each is published to. The token is the
// last ID returned (opaque to the CO), so paging survives volumes coming and going.
func (c *controllerService) ListVolumes(ctx context.Context, req *csi.ListVolumesRequest) (*csi.ListVolumesResponse, error) {
	after, err := decodeListToken(req.GetStartingToken(), req.GetMaxEntries())
	if err != nil {
		return nil, err
	}
	if !c.fencing.isRebuilt() {
		// an empty published-nodes list now would make the external-attacher mark live
		// attachments detached
		return nil, status.Error(codes.Unavailable, "attachment records are not rebuilt from the cluster's VolumeAttachments yet; retry shortly")
	}
	disks, err := c.volumeDisks(ctx)
	if err != nil {
		return nil, err
	}
	resp := &csi.ListVolumesResponse{}
	for _, d := range disks {
		if d.Slot <= after {
			continue
		}
		if limit := int(req.GetMaxEntries()); limit > 0 && len(resp.Entries) == limit {
			resp.NextToken = encodeListToken(resp.Entries[limit-1].Volume.VolumeId)
			break
		}
		resp.Entries = append(resp.Entries, &csi.ListVolumesResponse_Entry{
			Volume: &csi.Volume{VolumeId: d.Slot, CapacityBytes: d.Size},
			Status: &csi.ListVolumesResponse_VolumeStatus{PublishedNodeIds: c.fencing.nodes(d.Slot)},
		})
	}
	return resp, nil
}

// volumeDisks returns the disks that are volumes of this driver, sorted by ID.
func (c *controllerService) volumeDisks(ctx context.Context) ([]routeros.Disk, error) {
	all, err := c.client.ListDisks(ctx, "") // sorted by slot
	if err != nil {
		return nil, c.rdsStatus("list volumes", err)
	}
	disks := all[:0]
	for _, d := range all {
		if isVolumeID(d.Slot) && c.managedDisk(&d) == "" {
			disks = append(disks, d)
		}
	}
	return disks, nil
}

func encodeListToken(lastID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(lastID))
}

// decodeListToken returns the ID a listing continues after ("" from the start). A token
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

// GetCapacity reports the free space of the pool holding the class's volumePath, less
// --capacity-reserve. A volume can be as large as that (file disks live in one pool).
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
	if errors.Is(err, routeros.ErrNotFound) {
		return nil, status.Errorf(codes.FailedPrecondition, "volumePath %s: %v; the first component of volumePath must be the mount point of a pool on the RDS (see /disk print where mount-point)", volumePath, err)
	}
	if err != nil {
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

// refreshPools reads the pools of every volume directory, once each.
func (c *controllerService) refreshPools(ctx context.Context) {
	for _, b := range onePathPerPool(c.bases) {
		p, err := c.client.PoolCapacity(ctx, b)
		if err != nil {
			// the health loop reports an unreachable RDS; this is the detail
			c.log.Debug("cannot read pool capacity for metrics", "path", b, "err", err)
			continue
		}
		c.recordPool(p)
	}
}

// onePathPerPool keeps the first of paths on each pool, in order: the pool's capacity is
// the same from every path on it.
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
// when its disk no longer exports it over NVMe/TCP, or when only its file is left (the
// disk item was removed on the RDS). Each condition says how to repair it.
const (
	healthNotExported = "NotExported"
	healthDiskMissing = "DiskMissing"
)

// ControllerGetVolumeHealth reports one volume's health; a volume with neither disk nor
// file does not exist (NotFound).
func (c *controllerService) ControllerGetVolumeHealth(ctx context.Context, req *csi.ControllerGetVolumeHealthRequest) (*csi.ControllerGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, required("volume_id", "ControllerGetVolumeHealth")
	}
	disk, err := c.lookupVolume(ctx, id, "check the health of volume "+id)
	if status.Code(err) == codes.NotFound && isVolumeID(id) {
		files, ferr := c.volumeFiles(ctx, id)
		if ferr != nil {
			return nil, ferr
		}
		if len(files) == 0 {
			return nil, err
		}
		return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: diskMissingHealth(id, files[0].Path)}, nil
	}
	if err != nil {
		return nil, err
	}
	return &csi.ControllerGetVolumeHealthResponse{VolumeHealth: diskHealth(disk)}, nil
}

// ControllerListVolumeHealth lists the volumes with a known problem, in ID order and with
// the same paging as ListVolumes: disks that stopped exporting, and files left without a
// disk.
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
	hasDisk := map[string]bool{}
	for i := range disks {
		hasDisk[disks[i].Slot] = true
		if h := diskHealth(&disks[i]); len(h.HealthStatuses) > 0 {
			all = append(all, h)
		}
	}
	seen := map[string]bool{}
	for _, b := range c.bases {
		files, err := c.client.ListFiles(ctx, b)
		if err != nil {
			return nil, c.rdsStatus("list volume files in "+b, err)
		}
		for _, f := range files {
			id, ok := volumeIDOfFile(f)
			if ok && !hasDisk[id] && !seen[id] {
				seen[id] = true
				all = append(all, diskMissingHealth(id, f.Path))
			}
		}
	}
	sortHealth(all)
	resp := &csi.ControllerListVolumeHealthResponse{}
	for _, h := range all {
		if h.VolumeId <= after {
			continue
		}
		if limit := int(req.GetMaxEntries()); limit > 0 && len(resp.Entries) == limit {
			resp.NextToken = encodeListToken(resp.Entries[limit-1].VolumeId)
			break
		}
		resp.Entries = append(resp.Entries, h)
	}
	return resp, nil
}

// volumeIDOfFile returns the volume ID a file would belong to: <id>.img with a valid ID.
func volumeIDOfFile(f routeros.File) (string, bool) {
	name := path.Base(f.Path)
	id := name[:len(name)-len(path.Ext(name))]
	return id, f.Type != "directory" && path.Ext(name) == ".img" && isVolumeID(id)
}

func diskHealth(d *routeros.Disk) *csi.VolumeHealth {
	h := &csi.VolumeHealth{VolumeId: d.Slot}
	if !d.NVMeExport {
		h.HealthStatuses = append(h.HealthStatuses, &csi.VolumeHealth_VolumeHealthEntry{
			Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: healthNotExported,
			Message: fmt.Sprintf("the RDS does not export disk %s over NVMe/TCP, so no node can attach it: run /disk set [find slot=%q] nvme-tcp-export=yes", d.Slot, d.Slot),
		})
	}
	return h
}

func diskMissingHealth(id, file string) *csi.VolumeHealth {
	return &csi.VolumeHealth{VolumeId: id, HealthStatuses: []*csi.VolumeHealth_VolumeHealthEntry{{
		Status: csi.VolumeHealthErrorType_INACCESSIBLE, Reason: healthDiskMissing,
		Message: fmt.Sprintf("the RDS has the volume's file %s but no disk for it, so nothing exports it: recreate it with /disk add type=file file-path=%s slot=%s nvme-tcp-export=yes", file, file, id),
	}}}
}

func sortHealth(hs []*csi.VolumeHealth) {
	slices.SortFunc(hs, func(a, b *csi.VolumeHealth) int { return strings.Compare(a.VolumeId, b.VolumeId) })
}
