package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
)

// NodeUnpublishVolume removes a publish target: it unmounts until the mount table shows
// nothing at the target (mounts may be stacked), then removes only the target itself —
// rmdir for a directory, unlink for a device node or an empty file — never anything
// below it. A missing target is success.
func (n *nodeService) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := requireVolumeID(id); err != nil {
		return nil, err
	}
	if err := requirePath("target_path", req.GetTargetPath()); err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	target := filepath.Clean(req.GetTargetPath())
	if err := removePublishTarget(ctx, target); err != nil {
		return nil, nodeStatus("unpublish volume "+id+" from "+target, err)
	}
	if rec, ok := n.records.get(id); ok {
		if _, published := rec.Published[target]; published {
			delete(rec.Published, target)
			if err := n.records.put(rec); err != nil {
				return nil, nodeStatus("unpublish volume "+id, err)
			}
		}
	}
	n.log.Info("unpublished", "volume_id", id, "target", target)
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// removePublishTarget unmounts everything at target and removes the target alone.
// Whatever is left below a directory after every unmount is not ours to delete: rmdir
// fails on it and the call reports it.
func removePublishTarget(ctx context.Context, target string) error {
	var st unix.Stat_t
	if err := unix.Lstat(target, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("inspect %s: %w", target, err)
	}
	if err := mount.UnmountAll(ctx, target); err != nil {
		return err
	}
	if err := unix.Lstat(target, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("inspect %s: %w", target, err)
	}
	var err error
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFDIR:
		err = unix.Rmdir(target)
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			return status.Errorf(codes.FailedPrecondition,
				"target %s still holds files after every mount on it was removed; they are not the volume's and are left alone: remove them by hand, then retry", target)
		}
	case st.Mode&unix.S_IFMT == unix.S_IFBLK, st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0:
		err = unix.Unlink(target)
	default:
		return status.Errorf(codes.FailedPrecondition,
			"target %s is neither a directory, a block device node nor an empty file (mode %#o); refusing to remove it: remove it by hand if it is stale", target, st.Mode)
	}
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s: %w", target, err)
	}
	return nil
}
