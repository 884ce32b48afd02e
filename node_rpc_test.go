package main

import (
	"context"
	"golang.org/x/sys/unix"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// TestNodeRequestValidation: malformed requests fail before anything is touched, with
// the codes csi-sanity expects.
func TestNodeRequestValidation(t *testing.T) {
	e := newLoopEnv(t)
	n, ctx := e.n, nodeCtx(t)
	cap := mountCap(rwoMode, "ext4")
	vc := map[string]string{contextNQN: testPrefix + "x", paramNVMeAddress: "127.0.0.1"}
	abs := filepath.Join(e.root, "p")
	call := func(f func() (any, error)) error { _, err := f(); return err }
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
	}{
		{"stage without volume id", call(func() (any, error) {
			return n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{StagingTargetPath: abs, VolumeCapability: cap, VolumeContext: vc})
		}), codes.InvalidArgument},
		{"stage without staging path", call(func() (any, error) {
			return n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-x", VolumeCapability: cap, VolumeContext: vc})
		}), codes.InvalidArgument},
		{"stage without capability", call(func() (any, error) {
			return n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-x", StagingTargetPath: abs, VolumeContext: vc})
		}), codes.InvalidArgument},
		{"stage with a relative path", call(func() (any, error) {
			return n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-x", StagingTargetPath: "rel", VolumeCapability: cap, VolumeContext: vc})
		}), codes.InvalidArgument},
		{"stage with a path in the volume id", call(func() (any, error) {
			return n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "../x", StagingTargetPath: abs, VolumeCapability: cap, VolumeContext: vc})
		}), codes.InvalidArgument},
		{"stage of an unmanaged NQN", call(func() (any, error) {
			return n.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "pvc-x", StagingTargetPath: abs, VolumeCapability: cap,
				VolumeContext: map[string]string{contextNQN: "nqn.2024-01.io.nixos:var", paramNVMeAddress: "127.0.0.1"}})
		}), codes.FailedPrecondition},
		{"publish without volume id", call(func() (any, error) { return n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{}) }), codes.InvalidArgument},
		{"publish without target", call(func() (any, error) {
			return n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-x"})
		}), codes.InvalidArgument},
		{"publish without capability", call(func() (any, error) {
			return n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-x", TargetPath: abs})
		}), codes.InvalidArgument},
		{"publish without staging path", call(func() (any, error) {
			return n.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "pvc-x", TargetPath: abs, VolumeCapability: cap})
		}), codes.InvalidArgument},
		{"unpublish without volume id", call(func() (any, error) { return n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{}) }), codes.InvalidArgument},
		{"unpublish without target", call(func() (any, error) {
			return n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "pvc-x"})
		}), codes.InvalidArgument},
		{"unstage without volume id", call(func() (any, error) {
			return n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{StagingTargetPath: abs})
		}), codes.InvalidArgument},
		{"unstage without staging path", call(func() (any, error) {
			return n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "pvc-x"})
		}), codes.InvalidArgument},
		{"stats without volume id", call(func() (any, error) {
			return n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumePath: "some/path"})
		}), codes.InvalidArgument},
		{"stats without path", call(func() (any, error) {
			return n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "pvc-x"})
		}), codes.InvalidArgument},
		{"stats of an unknown volume", call(func() (any, error) {
			return n.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: "pvc-x", VolumePath: "some/path"})
		}), codes.NotFound},
		{"expand without volume id", call(func() (any, error) {
			return n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumePath: abs})
		}), codes.InvalidArgument},
		{"expand without path", call(func() (any, error) {
			return n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "pvc-x"})
		}), codes.InvalidArgument},
		{"expand of an unknown volume", call(func() (any, error) {
			return n.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: "pvc-x", VolumePath: "some/path"})
		}), codes.NotFound},
		{"health of an unknown volume", call(func() (any, error) {
			return n.NodeGetVolumeHealth(ctx, &csi.NodeGetVolumeHealthRequest{VolumeId: "pvc-x"})
		}), codes.NotFound},
	} {
		t.Run(tc.name, func(t *testing.T) { nodeWantCode(t, tc.err, tc.code, "") })
	}
	info, err := n.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil || info.GetNodeId() != "node-1" || info.GetMaxVolumesPerNode() < 0 {
		t.Fatalf("NodeGetInfo %v %v", info, err)
	}
	caps, err := n.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	must(t, err)
	got := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range caps.GetCapabilities() {
		got[c.GetRpc().GetType()] = true
	}
	for _, want := range []csi.NodeServiceCapability_RPC_Type{csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME, csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME, csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH, csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER} {
		if !got[want] {
			t.Errorf("capability %v not advertised", want)
		}
	}
}

// TestNodeLoopStatsAndHealth: statfs figures for a filesystem, the size of a block
// volume, NotFound for paths that are not the volume's, and a healthy volume has no
// adverse condition.
func TestNodeLoopStatsAndHealth(t *testing.T) {
	e := newLoopEnv(t)
	fs := e.createVolume("stats-fs", "64M", mountCap(rwoMode, "ext4"))
	blk := e.createVolume("stats-blk", "16M", blockCap(rwoMode))
	fsT, blkT := e.target("fs"), e.target("blk")
	for _, p := range []struct {
		v *volume
		t string
	}{{fs, fsT}, {blk, blkT}} {
		must(t, e.stage(p.v))
		must(t, e.publish(p.v, p.t, false))
	}
	stats := func(v *volume, path string) (*csi.NodeGetVolumeStatsResponse, error) {
		return e.n.NodeGetVolumeStats(nodeCtx(t), &csi.NodeGetVolumeStatsRequest{VolumeId: v.id, VolumePath: path})
	}
	r, err := stats(fs, fsT)
	must(t, err)
	if u := r.GetUsage(); len(u) != 2 || u[0].GetTotal() < 50<<20 || u[0].GetAvailable() <= 0 || u[1].GetUnit() != csi.VolumeUsage_INODES || u[1].GetTotal() == 0 {
		t.Fatalf("filesystem usage %v", u)
	}
	r, err = stats(blk, blkT)
	must(t, err)
	if u := r.GetUsage(); len(u) != 1 || u[0].GetTotal() != 16<<20 {
		t.Fatalf("block usage %v", u)
	}
	// kubelet asks about its own copy of the device node (…/volumeDevices/<pv>/dev/<pod>,
	// a bind mount of our publish target): the same major:minor is the volume.
	kubeletCopy := filepath.Join(e.root, "volumeDevices", blk.id, "dev", "pod-uid")
	must(t, os.MkdirAll(filepath.Dir(kubeletCopy), 0o750))
	must(t, os.WriteFile(kubeletCopy, nil, 0o600))
	must(t, unix.Mount(blkT, kubeletCopy, "", unix.MS_BIND, ""))
	t.Cleanup(func() { _ = unix.Unmount(kubeletCopy, 0) })
	r, err = stats(blk, kubeletCopy)
	must(t, err)
	if u := r.GetUsage(); len(u) != 1 || u[0].GetTotal() != 16<<20 {
		t.Fatalf("block usage through kubelet's device path %v", u)
	}
	otherDev := filepath.Join(e.root, "volumeDevices", "other")
	must(t, unix.Mknod(otherDev, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 255))))
	_, err = stats(blk, otherDev)
	nodeWantCode(t, err, codes.NotFound, "")
	for _, path := range []string{"some/path", filepath.Join(e.root, "nowhere"), blkT} {
		_, err := stats(fs, path)
		nodeWantCode(t, err, codes.NotFound, "")
	}
	for _, v := range []*volume{fs, blk} {
		if h := e.health(v); len(h) != 0 {
			t.Fatalf("%s: health %v, want none", v.id, h)
		}
	}
	_, err = e.n.NodeGetVolumeHealth(nodeCtx(t), &csi.NodeGetVolumeHealthRequest{VolumeId: fs.id, StagingTargetPath: "/elsewhere"})
	nodeWantCode(t, err, codes.NotFound, "staged at")
}

// TestNodeBreakerLoop: three failed stages open the volume's breaker (the fourth answers
// at once, saying when it retries and what resets it); restarting the plugin resets it.
func TestNodeBreakerLoop(t *testing.T) {
	e := newLoopEnv(t)
	v := &volume{id: "pvc-missing", nqn: testPrefix + "missing", cap: mountCap(rwoMode, "ext4"),
		staging: filepath.Join(e.root, "kubelet", "pvc-missing"), vc: map[string]string{contextNQN: testPrefix + "missing", paramNVMeAddress: "127.0.0.1"}}
	for range breakerThreshold {
		nodeWantCode(t, e.stage(v), codes.NotFound, "does not export")
	}
	nodeWantCode(t, e.stage(v), codes.Unavailable, "a successful stage or restarting the node plugin resets it")
	if got := testutilGauge(e.n); got != 1 {
		t.Fatalf("breakers_open = %v, want 1", got)
	}
	e.restart()
	nodeWantCode(t, e.stage(v), codes.NotFound, "does not export")
}

// TestNodeConcurrentCallAborted: a second call for a volume busy with another answers
// Aborted at once instead of queueing behind it.
func TestNodeConcurrentCallAborted(t *testing.T) {
	e := newLoopEnv(t)
	v := e.createVolume("busy-lock", "64M", mountCap(rwoMode, "ext4"))
	release, ok := e.n.locks.tryLock(v.id)
	if !ok {
		t.Fatal("lock taken")
	}
	nodeWantCode(t, e.stage(v), codes.Aborted, "still running")
	nodeWantCode(t, e.unstage(v), codes.Aborted, "still running")
	release()
	must(t, e.stage(v))
	must(t, e.unstage(v))
}

// TestNodeLoopSweepAtStart: a restarted node plugin disconnects a managed volume that no
// record claims and nothing uses, and keeps the staged one and one that is mounted.
func TestNodeLoopSweepAtStart(t *testing.T) {
	e := newLoopEnv(t)
	staged := e.createVolume("sweep-staged", "64M", mountCap(rwoMode, "ext4"))
	orphan := e.createVolume("sweep-orphan", "16M", blockCap(rwoMode))
	used := e.createVolume("sweep-used", "64M", mountCap(rwoMode, "ext4"))
	must(t, e.stage(staged))
	for _, v := range []*volume{orphan, used} {
		if _, err := e.n.att.Connect(nodeCtx(t), nvme.Target{Address: "127.0.0.1", NQN: v.nqn}, nvme.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	dev := attachedDevices(t, used)[0]
	mkfsFile(t, "ext4", dev.Path)
	mnt := filepath.Join(e.root, "kubelet", "used-by-someone")
	must(t, os.MkdirAll(mnt, 0o750))
	opts, _ := mount.ParseOptions("ext4", nil)
	must(t, mount.Mount(nodeCtx(t), dev.Path, mnt, "ext4", opts))
	e.restart()
	if !nodeWaitFor(10*time.Second, func() bool { return len(attachedDevices(t, orphan)) == 0 }) {
		t.Fatal("the orphan was not swept")
	}
	if len(attachedDevices(t, staged)) != 1 || len(attachedDevices(t, used)) != 1 {
		t.Fatal("the sweep disconnected a claimed or mounted volume")
	}
	must(t, mount.UnmountAll(context.Background(), mnt))
	must(t, e.unstage(staged))
}

func testutilGauge(n *nodeService) float64 {
	var m dto.Metric
	if err := n.m.breakersOpen.Write(&m); err != nil {
		return -1
	}
	return m.GetGauge().GetValue()
}
