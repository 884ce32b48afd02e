//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/internal/vmsys"
)

// rpcTimeout bounds every CSI call the suite makes, as kubelet and the sidecars do.
const rpcTimeout = 2 * time.Minute

const mib = int64(1) << 20

func rpcContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), rpcTimeout)
}

func mountCap(fsType string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func blockCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func isBlock(c *csi.VolumeCapability) bool { return c.GetBlock() != nil }

// kind names a capability for volume names and messages: ext4, xfs or block.
func kind(c *csi.VolumeCapability) string {
	if isBlock(c) {
		return "block"
	}
	return c.GetMount().GetFsType()
}

// pvName is a name like the external-provisioner's: pvc-<uuid>.
func pvName(t testing.TB) string {
	t.Helper()
	u := make([]byte, 16)
	if _, err := rand.Read(u); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("pvc-%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// volume is a created volume; deleting it is registered as the test's cleanup.
type volume struct {
	*csi.Volume
	cap     *csi.VolumeCapability
	nqn     string
	deleted bool
}

// createVolume creates a volume through the controller (node 1) and registers its deletion.
func (e *env) createVolume(t *testing.T, size int64, c *csi.VolumeCapability, params map[string]string) *volume {
	t.Helper()
	ctx, cancel := rpcContext()
	defer cancel()
	r, err := e.node1.ctrl.CreateVolume(ctx, &csi.CreateVolumeRequest{
		Name:               pvName(t),
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{c},
		Parameters:         params,
	})
	if err != nil {
		t.Fatalf("CreateVolume (%s, %d bytes, %v): %v", kind(c), size, params, err)
	}
	v := &volume{Volume: r.GetVolume(), cap: c}
	v.nqn = v.GetVolumeContext()["nqn"]
	if v.nqn == "" {
		v.nqn = defaultNQNPrefix + v.GetVolumeId()
	}
	if v.GetCapacityBytes() < size {
		t.Fatalf("CreateVolume gave %d bytes, asked for %d", v.GetCapacityBytes(), size)
	}
	t.Logf("created %s (%s, %d bytes, nqn %s, context %v)", v.GetVolumeId(), kind(c), v.GetCapacityBytes(), v.nqn, v.GetVolumeContext())
	t.Cleanup(func() {
		if !v.deleted {
			e.deleteVolume(t, v)
		}
	})
	return v
}

// deleteVolume deletes the volume and proves it is gone from the RDS: no backing file, no
// nvmet subsystem.
func (e *env) deleteVolume(t *testing.T, v *volume) {
	ctx, cancel := rpcContext()
	defer cancel()
	if _, err := e.node1.ctrl.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: v.GetVolumeId()}); err != nil {
		t.Errorf("DeleteVolume %s: %v", v.GetVolumeId(), err)
		return
	}
	v.deleted = true
	if _, err := os.Stat(filepath.Join(simVolumeDir, v.GetVolumeId()+".img")); !os.IsNotExist(err) {
		t.Errorf("DeleteVolume %s left its file on the RDS (%v)", v.GetVolumeId(), err)
	}
	if _, err := os.Stat(filepath.Join(nvmetRoot, "subsystems", v.nqn)); !os.IsNotExist(err) {
		t.Errorf("DeleteVolume %s left nvmet subsystem %s (%v)", v.GetVolumeId(), v.nqn, err)
	}
}

// attachment is a volume on one node, with the paths kubelet would use. Whatever stage it
// reached is undone at the test's end (best effort), so one failure does not leak into
// the next scenario.
type attachment struct {
	e          *env
	d          *driver
	v          *volume
	staging    string
	target     string
	publishCtx map[string]string

	controllerPublished, staged, published bool
}

// attach publishes v to d's node (ControllerPublish) and stages it there.
func (e *env) attach(t *testing.T, d *driver, v *volume) *attachment {
	t.Helper()
	base := filepath.Join(e.work, "kubelet", d.nodeID, v.GetVolumeId())
	a := &attachment{e: e, d: d, v: v, staging: filepath.Join(base, "globalmount"), target: filepath.Join(base, "pod", "mount")}
	if isBlock(v.cap) {
		a.target = filepath.Join(base, "pod", "dev")
	}
	for _, dir := range []string{a.staging, filepath.Dir(a.target)} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { a.cleanUp(t) })
	ctx, cancel := rpcContext()
	defer cancel()
	r, err := e.node1.ctrl.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: v.GetVolumeId(), NodeId: d.nodeID, VolumeCapability: v.cap, VolumeContext: v.GetVolumeContext(),
	})
	if err != nil {
		t.Fatalf("ControllerPublishVolume %s to %s: %v", v.GetVolumeId(), d.nodeID, err)
	}
	a.publishCtx, a.controllerPublished = r.GetPublishContext(), true
	a.stage(t)
	return a
}

func (a *attachment) stage(t testing.TB) {
	t.Helper()
	ctx, cancel := rpcContext()
	defer cancel()
	if _, err := a.d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: a.v.GetVolumeId(), PublishContext: a.publishCtx, StagingTargetPath: a.staging,
		VolumeCapability: a.v.cap, VolumeContext: a.v.GetVolumeContext(),
	}); err != nil {
		t.Fatalf("NodeStageVolume %s on %s: %v", a.v.GetVolumeId(), a.d.nodeID, err)
	}
	a.staged = true
}

func (a *attachment) publish(t testing.TB) {
	t.Helper()
	ctx, cancel := rpcContext()
	defer cancel()
	if _, err := a.d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: a.v.GetVolumeId(), PublishContext: a.publishCtx, StagingTargetPath: a.staging,
		TargetPath: a.target, VolumeCapability: a.v.cap, VolumeContext: a.v.GetVolumeContext(),
	}); err != nil {
		t.Fatalf("NodePublishVolume %s on %s: %v", a.v.GetVolumeId(), a.d.nodeID, err)
	}
	a.published = true
}

func (a *attachment) unpublish(t testing.TB) {
	t.Helper()
	ctx, cancel := rpcContext()
	defer cancel()
	if _, err := a.d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: a.v.GetVolumeId(), TargetPath: a.target}); err != nil {
		t.Fatalf("NodeUnpublishVolume %s on %s: %v", a.v.GetVolumeId(), a.d.nodeID, err)
	}
	a.published = false
	if _, err := os.Lstat(a.target); !os.IsNotExist(err) {
		t.Fatalf("NodeUnpublishVolume left the target %s (%v)", a.target, err)
	}
}

// unstage unstages and proves the node let go of the volume: nothing mounted at the
// staging path and no controller of this node's host NQN left for the volume.
func (a *attachment) unstage(t testing.TB) {
	t.Helper()
	ctx, cancel := rpcContext()
	defer cancel()
	if _, err := a.d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: a.v.GetVolumeId(), StagingTargetPath: a.staging}); err != nil {
		t.Fatalf("NodeUnstageVolume %s on %s: %v", a.v.GetVolumeId(), a.d.nodeID, err)
	}
	a.staged = false
	if ms := mountsAt(t, a.staging); len(ms) != 0 {
		t.Fatalf("NodeUnstageVolume left mounts at %s: %+v", a.staging, ms)
	}
	host := a.d.identity(t).HostNQN
	for _, c := range vmsys.ControllersOf(a.v.nqn) {
		if c.HostNQN == host {
			t.Fatalf("NodeUnstageVolume left controller %s (%s) of %s connected", c.Name, c.State, a.v.nqn)
		}
	}
}

func (a *attachment) controllerUnpublish(t testing.TB) {
	t.Helper()
	ctx, cancel := rpcContext()
	defer cancel()
	if _, err := a.e.node1.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: a.v.GetVolumeId(), NodeId: a.d.nodeID}); err != nil {
		t.Fatalf("ControllerUnpublishVolume %s from %s: %v", a.v.GetVolumeId(), a.d.nodeID, err)
	}
	a.controllerPublished = false
}

// detach undoes everything: unpublish, unstage, ControllerUnpublish.
func (a *attachment) detach(t testing.TB) {
	t.Helper()
	if a.published {
		a.unpublish(t)
	}
	if a.staged {
		a.unstage(t)
	}
	if a.controllerPublished {
		a.controllerUnpublish(t)
	}
}

// cleanUp is detach for a test that already failed: every call is tried, errors logged.
func (a *attachment) cleanUp(t *testing.T) {
	if !a.published && !a.staged && !a.controllerPublished {
		return
	}
	ctx, cancel := rpcContext()
	defer cancel()
	id := a.v.GetVolumeId()
	if a.published && a.d.running() {
		if _, err := a.d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: a.target}); err != nil {
			t.Errorf("cleanup: NodeUnpublishVolume %s: %v", id, err)
		}
	}
	if a.staged && a.d.running() {
		if _, err := a.d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: a.staging}); err != nil {
			t.Errorf("cleanup: NodeUnstageVolume %s: %v", id, err)
		}
	}
	if a.controllerPublished {
		if _, err := a.e.node1.ctrl.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: a.d.nodeID}); err != nil {
			t.Logf("cleanup: ControllerUnpublishVolume %s: %v", id, err)
		}
	}
	a.published, a.staged, a.controllerPublished = false, false, false
}

// stats calls NodeGetVolumeStats on the publish target.
func (a *attachment) stats(t testing.TB) *csi.NodeGetVolumeStatsResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := a.d.node.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{
		VolumeId: a.v.GetVolumeId(), VolumePath: a.target, StagingTargetPath: a.staging,
	})
	if err != nil {
		t.Fatalf("NodeGetVolumeStats %s: %v", a.v.GetVolumeId(), err)
	}
	return r
}

// stagedDevice is the block device the node staged the volume on: the source of the
// staging mount for filesystems, the publish target's device node for block volumes.
func (a *attachment) stagedDevice(t testing.TB) string {
	t.Helper()
	if isBlock(a.v.cap) {
		return rdev(t, a.target)
	}
	return oneMount(t, a.staging).majmin
}
