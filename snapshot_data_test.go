package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/nvme/loopback"
	"srvlab.io/rds-csi/routeros/sim"
)

// The data path of snapshots, restores and clones: the controller makes the volumes on the
// simulated RDS over SSH, the node service stages them through the loop-device stand-in for
// NVMe/TCP (which attaches what the simulator exports), and the tests write and read
// through the node's mounts and device nodes, as a pod would.

// dataEnv is a controller and a node service over one simulated RDS.
type dataEnv struct {
	*ctrlEnv
	root string // short: staging and target paths
	node *nodeService
}

func newDataEnv(t *testing.T) *dataEnv {
	t.Helper()
	if err := loopdev.Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %v", err)
		}
		t.Skip(err)
	}
	e := &dataEnv{ctrlEnv: newCtrlEnv(t)}
	root, err := os.MkdirTemp("", "sd")
	if err != nil {
		t.Fatal(err)
	}
	e.root = root
	t.Cleanup(e.cleanup)
	prefix := nqnPrefix + "pvc-"
	guard, err := nvme.NewGuard(prefix)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(root, "state")
	att, err := loopback.New(loopback.Config{ExportsDir: filepath.Join(e.sim.Dir(), sim.ExportsDirName),
		StateFile: filepath.Join(state, "loopback.json"), Guard: guard, Logger: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{NodeID: "node-1", ManagedNQNPrefix: prefix, StateDir: state, SysfsRoot: "/sys", DevRoot: "/dev",
		HealInterval: time.Hour, MountStormLimit: 100}
	if e.node, err = newNodeServiceWith(cfg, discardLog, newMetrics(), guard, att); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go e.node.run(ctx)
	t.Cleanup(func() { cancel(); e.node.close() })
	return e
}

// cleanup unmounts whatever a failed test left under the root (deepest first), detaches
// the loop devices of the simulator's files and removes the root.
func (e *dataEnv) cleanup() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries, _ := mount.List(ctx)
	var points []string
	for _, m := range entries {
		if strings.HasPrefix(m.Mountpoint, e.root+"/") && !slices.Contains(points, m.Mountpoint) {
			points = append(points, m.Mountpoint)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if err := mount.UnmountAll(ctx, p); err != nil {
			e.t.Errorf("cleanup: %v", err)
		}
	}
	_ = filepath.WalkDir(e.sim.Dir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".img") {
			devs, _ := loopdev.Find(p)
			for _, dev := range devs {
				if err := dev.Detach(); err != nil {
					e.t.Errorf("cleanup: %v", err)
				}
			}
		}
		return nil
	})
	if len(points) == 0 || !e.t.Failed() {
		os.RemoveAll(e.root)
	}
}

// use stages and publishes a volume, runs f on what a pod sees (a file in the mounted
// file system, or the block device node), then unpublishes and unstages it.
func (e *dataEnv) use(vol *csi.Volume, cap *csi.VolumeCapability, f func(file string)) {
	e.t.Helper()
	ctx := testCtx(e.t)
	staging := filepath.Join(e.root, "staging", vol.VolumeId)
	podDir := filepath.Join(e.root, "pods", vol.VolumeId)
	for _, d := range []string{staging, podDir} {
		if err := os.MkdirAll(d, 0o750); err != nil { // kubelet makes these
			e.t.Fatal(err)
		}
	}
	target := filepath.Join(podDir, "vol")
	if _, err := e.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging,
		VolumeCapability: cap, VolumeContext: vol.VolumeContext}); err != nil {
		e.t.Fatalf("stage %s: %v", vol.VolumeId, err)
	}
	if _, err := e.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging,
		TargetPath: target, VolumeCapability: cap, VolumeContext: vol.VolumeContext}); err != nil {
		e.t.Fatalf("publish %s: %v", vol.VolumeId, err)
	}
	file := target
	if cap.GetMount() != nil {
		file = filepath.Join(target, "data.bin")
	}
	f(file)
	if _, err := e.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol.VolumeId, TargetPath: target}); err != nil {
		e.t.Fatalf("unpublish %s: %v", vol.VolumeId, err)
	}
	if _, err := e.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol.VolumeId, StagingTargetPath: staging}); err != nil {
		e.t.Fatalf("unstage %s: %v", vol.VolumeId, err)
	}
}

// TestSnapshotDataThroughTheNode writes a pattern on a volume through the node, snapshots
// it, changes the volume, and reads the pattern back from a restore (larger than the
// source), from a clone (which has the change), and from a restore made after the source
// volume was deleted — for a file system volume and for a raw block volume.
func TestSnapshotDataThroughTheNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		cap  *csi.VolumeCapability
		size int64
	}{
		{"ext4", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4"), 64 << 20},
		{"xfs", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs"), 320 << 20},
		{"block", blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER), 32 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newDataEnv(t)
			block := tc.cap.GetBlock() != nil
			data, later := snapPattern(tc.name, 1<<20), snapPattern(tc.name+"/later", 1<<20)
			// on a block volume: at the start and in the last MiB, so a short copy shows
			offsets := []int64{0}
			if block {
				offsets = append(offsets, tc.size-int64(len(data)))
			}
			write := func(d []byte) func(string) {
				return func(file string) {
					for _, off := range offsets {
						snapWrite(t, file, d, off)
					}
				}
			}
			read := func(d []byte) func(string) {
				return func(file string) {
					for _, off := range offsets {
						snapCheck(t, file, d, off)
					}
				}
			}
			create := func(req *csi.CreateVolumeRequest) *csi.Volume {
				req.VolumeCapabilities = []*csi.VolumeCapability{tc.cap}
				return e.mustCreate(req)
			}

			src := create(createReq("pvc-"+tc.name+"-src", tc.size))
			e.use(src, tc.cap, write(data))
			snap := e.mustSnapshot("snapshot-"+tc.name, src.VolumeId)
			e.use(src, tc.cap, write(later))

			restored := create(fromSnapshot(createReq("pvc-"+tc.name+"-restored", tc.size+16<<20), snap.SnapshotId))
			if restored.CapacityBytes != tc.size+16<<20 {
				t.Errorf("restore capacity %d, want %d", restored.CapacityBytes, tc.size+16<<20)
			}
			e.use(restored, tc.cap, read(data))

			clone := create(fromVolume(createReq("pvc-"+tc.name+"-clone", tc.size), src.VolumeId))
			e.use(clone, tc.cap, read(later))
			e.use(src, tc.cap, read(later)) // the restore and the clone left the source alone

			if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: src.VolumeId}); err != nil {
				t.Fatal(err)
			}
			again := create(fromSnapshot(createReq("pvc-"+tc.name+"-again", tc.size), snap.SnapshotId))
			e.use(again, tc.cap, read(data))
		})
	}
}

// TestSnapshotDataCopyFromMakesAnEmptyDisk pins why snapshots are file copies: an earlier
// driver made "snapshots" with `/disk add copy-from=[find …]`, RouterOS's generic argument
// for copying an item's settings. The disk it makes has the source's settings and an empty
// file: a pod reading it through the node sees zeros, not the data.
func TestSnapshotDataCopyFromMakesAnEmptyDisk(t *testing.T) {
	e := newDataEnv(t)
	cap := blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	src := e.mustCreate(createReq("pvc-src", 16<<20, cap))
	data := snapPattern("copy-from", 64<<10)
	e.use(src, cap, func(dev string) { snapWrite(t, dev, data, 0) })

	const slot = "pvc-copy-from"
	line := fmt.Sprintf(`/disk add copy-from=[find slot="%s"] slot=%s file-path=%s/%s.img nvme-tcp-server-nqn="%s"`,
		src.VolumeId, slot, testVolumePath, slot, defaultNQN(slot))
	if _, err := e.sim.Exec(context.Background(), line); err != nil {
		t.Fatal(err)
	}
	vc := maps.Clone(src.VolumeContext)
	vc[contextNQN] = defaultNQN(slot)
	e.use(&csi.Volume{VolumeId: slot, VolumeContext: vc}, cap, func(dev string) {
		snapCheck(t, dev, make([]byte, len(data)), 0)
	})
	// the same source, copied the way this driver copies, carries the data
	e.mustSnapshot("snapshot-good", src.VolumeId)
	restored := e.mustCreate(fromSnapshot(createReq("pvc-restored", 16<<20, cap), "snapshot-good"))
	e.use(restored, cap, func(dev string) { snapCheck(t, dev, data, 0) })
}
