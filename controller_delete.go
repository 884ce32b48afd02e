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
