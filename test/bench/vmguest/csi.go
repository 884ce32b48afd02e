package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const nodeID = "bench-vm"

// client talks CSI to the driver as the sidecars and kubelet do.
type client struct {
	conn  *grpc.ClientConn
	ident csi.IdentityClient
	ctrl  csi.ControllerClient
	node  csi.NodeClient
}

func dial(socket string) (*client, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return nil, err
	}
	return &client{conn: conn, ident: csi.NewIdentityClient(conn), ctrl: csi.NewControllerClient(conn), node: csi.NewNodeClient(conn)}, nil
}

func (c *client) close() { c.conn.Close() }

// volume is a created ext4 volume and the paths kubelet would stage and publish it at.
type volume struct {
	id, nqn         string
	context         map[string]string
	publishContext  map[string]string
	staging, target string
}

func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func (c *client) createVolume(params map[string]string) (*volume, error) {
	u := make([]byte, 16)
	if _, err := rand.Read(u); err != nil {
		return nil, err
	}
	name := fmt.Sprintf("pvc-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	ctx, cancel := rpcContext()
	defer cancel()
	r, err := c.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name: name, CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20},
		VolumeCapabilities: []*csi.VolumeCapability{mountCap()}, Parameters: params,
	})
	if err != nil {
		return nil, fmt.Errorf("CreateVolume %v: %w", params, err)
	}
	v := &volume{id: r.GetVolume().GetVolumeId(), context: r.GetVolume().GetVolumeContext()}
	v.nqn = v.context["nqn"]
	base := filepath.Join(work, "kubelet", v.id)
	v.staging, v.target = filepath.Join(base, "globalmount"), filepath.Join(base, "pod", "mount")
	return v, errors.Join(os.MkdirAll(v.staging, 0o750), os.MkdirAll(filepath.Dir(v.target), 0o750))
}

// attach publishes the volume to the node (controller), stages and publishes it (node).
func (c *client) attach(v *volume) error {
	ctx, cancel := rpcContext()
	defer cancel()
	r, err := c.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: v.id, NodeId: nodeID, VolumeCapability: mountCap(), VolumeContext: v.context,
	})
	if err != nil {
		return fmt.Errorf("ControllerPublishVolume: %w", err)
	}
	v.publishContext = r.GetPublishContext()
	if _, err := c.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: v.id, PublishContext: v.publishContext, StagingTargetPath: v.staging,
		VolumeCapability: mountCap(), VolumeContext: v.context,
	}); err != nil {
		return fmt.Errorf("NodeStageVolume: %w", err)
	}
	if _, err := c.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: v.id, PublishContext: v.publishContext, StagingTargetPath: v.staging, TargetPath: v.target,
		VolumeCapability: mountCap(), VolumeContext: v.context,
	}); err != nil {
		return fmt.Errorf("NodePublishVolume: %w", err)
	}
	return nil
}

// remove undoes attach and deletes the volume, reporting (not failing on) errors.
func (c *client) remove(v *volume) {
	ctx, cancel := rpcContext()
	defer cancel()
	_, err := c.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target})
	if err == nil {
		_, err = c.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging})
	}
	if err == nil {
		_, err = c.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: v.id, NodeId: nodeID})
	}
	if err == nil {
		_, err = c.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.id})
	}
	if err != nil {
		fmt.Printf("vmguest: clean-up of %s: %v\n", v.id, err)
	}
}

// waitHealthy polls NodeGetVolumeHealth every 20 ms until it reports the volume healthy
// (no statuses) or not, as asked.
func (c *client) waitHealthy(v *volume, healthy bool, d time.Duration) error {
	var last []*csi.VolumeHealth_VolumeHealthEntry
	var lastErr error
	if waitFor(d, 20*time.Millisecond, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := c.node.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{
			VolumeId: v.id, VolumePublishPath: v.target, StagingTargetPath: v.staging,
		})
		if lastErr = err; err != nil {
			return false
		}
		last = r.GetVolumeHealth().GetHealthStatuses()
		return (len(last) == 0) == healthy
	}) {
		return nil
	}
	want := "healthy"
	if !healthy {
		want = "unhealthy"
	}
	return fmt.Errorf("NodeGetVolumeHealth did not report %s within %v: last %v, %v", want, d, last, lastErr)
}
