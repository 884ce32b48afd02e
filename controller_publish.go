package main

import (
	"context"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ControllerPublishVolume admits a volume to a node. Nothing changes on the RDS (the node
// connects by itself, with what the volume context holds); this is the fence: a volume in
// a single-node mode goes to one node, a raw block volume in ReadWriteMany to at most the
// two nodes of a KubeVirt live migration. The readonly flag is not acted on here:
// PUBLISH_READONLY is not advertised, and the node mounts read-only when NodePublish asks.
func (c *controllerService) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, nodeID := req.GetVolumeId(), req.GetNodeId()
	switch {
	case id == "":
		return nil, required("volume_id", "ControllerPublishVolume")
	case nodeID == "":
		return nil, required("node_id", "ControllerPublishVolume")
	case req.GetVolumeCapability() == nil:
		return nil, required("volume_capability", "ControllerPublishVolume")
	}
	access, err := requestCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	release, ok := c.locks.tryLock(id)
	if !ok {
		return nil, busy(id)
	}
	defer release()
	disk, err := c.lookupVolume(ctx, id, "publish volume "+id)
	if err != nil {
		return nil, err
	}
	if !disk.NVMeExport {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not exported over NVMe/TCP, so no node can attach it: on the RDS run /disk set [find slot=%q] nvme-tcp-export=yes", id, id)
	}
	if err := c.checkNode(ctx, nodeID); err != nil {
		return nil, err
	}
	seconds, err := migrationTimeoutFrom(req.GetVolumeContext())
	if err != nil {
		logFrom(ctx).Warn("using the default migration timeout", "err", err)
	}
	if err := c.fencing.publish(ctx, id, nodeID, access.maxNodes, time.Duration(seconds)*time.Second); err != nil {
		return nil, err
	}
	return &csi.ControllerPublishVolumeResponse{}, nil
}

// checkNode answers NotFound for a node ID no CSINode lists for this driver. When the
// cluster cannot be asked the publish goes on: a node that does not exist cannot attach
// anything, so the check only gives a clearer error, and must never block a real attach.
func (c *controllerService) checkNode(ctx context.Context, nodeID string) error {
	if c.nodes == nil {
		return nil
	}
	ok, err := c.nodes.nodeRegistered(ctx, c.cfg.DriverName, nodeID)
	switch {
	case err != nil:
		logFrom(ctx).Warn("cannot check the node against the cluster's CSINodes; publishing anyway", "err", err)
		return nil
	case !ok:
		return status.Errorf(codes.NotFound, "node %s does not exist: no CSINode lists the %s node plugin with this node ID; check that the node plugin runs there (kubectl get csinode %s -o yaml)",
			nodeID, c.cfg.DriverName, nodeID)
	}
	return nil
}

// ControllerUnpublishVolume releases a volume from a node, or from every node when none is
// named. It always succeeds: the volume or the node may be long gone.
func (c *controllerService) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, required("volume_id", "ControllerUnpublishVolume")
	}
	if req.GetNodeId() == "" {
		c.fencing.unpublishAll(id)
	} else {
		c.fencing.unpublish(id, req.GetNodeId())
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}
