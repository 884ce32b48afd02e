package main

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
