package main

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

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
