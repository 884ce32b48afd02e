package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/test/internal/scratch"
)

// How the node figures are measured.
const (
	stagedVolumes = 10
	volumeSize    = 1 << 30
	nodeIdle      = 5 * time.Second // after the 10 stages, before VmRSS is read
	stageRounds   = 3               // unstage + stage of every volume
	publishRounds = 5               // publish + unpublish of every volume
)

// nodeVolume is one volume as the node sees it: what the controller put in the volume
// context, and where kubelet would stage and publish it.
type nodeVolume struct {
	id, staging, target string
	context             map[string]string
}

// nodeFigures runs the node plugin (the loopnvme build, whose NVMe host is the loop-device
// stand-in attaching the simulator's exported files) and drives it over its gRPC socket
// as kubelet would: 10 volumes staged (ext4), idle, VmRSS; then NodeStage of the existing
// filesystems and NodePublish + NodeUnpublish, timed call by call.
func nodeFigures(ctx context.Context, bins binaries, work string) []figure {
	specs := []spec{figNodeRSS, figStage, figPublish}
	if bins.loopErr != nil {
		return naAll("the loopnvme build (node plugin with the loop-device stand-in) failed: "+bins.loopErr.Error(), specs...)
	}
	if err := loopdev.Available(); err != nil {
		return naAll("loop devices: "+err.Error(), specs...)
	}
	r, err := startRDS(filepath.Join(work, "rds-node"), 0)
	if err != nil {
		return naAll("simulator: "+err.Error(), specs...)
	}
	defer r.close()
	vols, err := createVolumes(ctx, r, filepath.Join(work, "kubelet"))
	if err != nil {
		return naAll(err.Error(), specs...)
	}
	d, err := newDriver("node", filepath.Join(work, "node"))
	if err != nil {
		return naAll(err.Error(), specs...)
	}
	metricsAddr, err := freeLoopbackAddr()
	if err != nil {
		return naAll(err.Error(), specs...)
	}
	args := append(d.commonArgs("node"), "--managed-nqn-prefix="+managedPrefix)
	d.env = []string{"RDS_CSI_LOOP_NVME_EXPORTS_DIR=" + r.exportsDir()}
	args = replaceArg(args, "--metrics-address=", metricsAddr)
	if err := d.start(bins.loop, args); err != nil {
		return naAll(err.Error(), specs...)
	}
	defer d.stop()
	if err := d.waitReady(30 * time.Second); err != nil {
		return naAll(err.Error(), specs...)
	}

	var figs []figure
	staged := 0
	unstageAll := func() error {
		// kubelet's order: unstage, then the plugin may stop. The loop devices must go
		// with the unstage; what is left is cleaned up (and reported) by sweepWork.
		var errs []error
		for _, v := range vols[:staged] {
			if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
				errs = append(errs, fmt.Errorf("NodeUnstageVolume %s: %w", v.id, err))
			}
		}
		staged = 0
		return errors.Join(errs...)
	}
	defer unstageAll()
	firstStage := make([]time.Duration, 0, len(vols))
	for _, v := range vols {
		took, err := stage(ctx, d, v)
		if err != nil {
			return naAll(nodeUnavailable("NodeStageVolume", err, d), specs...)
		}
		staged++
		firstStage = append(firstStage, took)
	}
	time.Sleep(nodeIdle)
	m, err := d.memory()
	if err != nil {
		figs = append(figs, figNodeRSS.na("%v", err))
	} else {
		figs = append(figs, figNodeRSS.measured(mib(m.RSS), "loopnvme build, --mode=node (metrics listener on, as deployed), %d ext4 volumes staged over gRPC (first stage, with mkfs: p50 %s), idle %v: %s; %s",
			stagedVolumes, ms(pct(firstStage, 50)), nodeIdle, m, goMemoryOf("http://"+metricsAddr+"/metrics")))
	}
	prof.heap(d, "node-10-staged")
	figs = append(figs, stageFigure(ctx, d, vols), publishFigure(ctx, d, vols))
	prof.cpu(d, "node-stage", 5, func() error {
		for _, v := range vols {
			if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
				return err
			}
			if _, err := stage(ctx, d, v); err != nil {
				return err
			}
		}
		return nil
	})
	prof.cpu(d, "node-publish-unpublish", 5, func() error {
		for _, v := range vols {
			if _, err := publishUnpublish(ctx, d, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err := errors.Join(unstageAll(), d.stop()); err != nil {
		noteAll(figs, err.Error())
	}
	if left := leftBehind(r, filepath.Join(work, "kubelet")); left != "" {
		noteAll(figs, "after unstaging everything and stopping, the node plugin left "+left)
	}
	return figs
}

// leftBehind lists mounts under the kubelet directory and loop devices on the simulator's
// files that outlived their volumes' unstage.
func leftBehind(r *rds, kubelet string) string {
	var left []string
	mps, err := scratch.MountsUnder(kubelet)
	if err != nil {
		left = append(left, "an unreadable mount table ("+err.Error()+")")
	}
	for _, mp := range mps {
		left = append(left, "a mount at "+mp)
	}
	files, _ := filepath.Glob(filepath.Join(r.Sim.HostPath(volumePath), "*.img"))
	for _, f := range files {
		if devs, err := loopdev.Find(f); err == nil {
			for _, dev := range devs {
				left = append(left, dev.Path+" on "+filepath.Base(f))
			}
		}
	}
	return strings.Join(left, ", ")
}

// createVolumes makes the disks on the simulator as the controller does and returns them
// with the volume context the controller gives (nqn, nvmeAddress, nvmePort, volumePath).
func createVolumes(ctx context.Context, r *rds, kubelet string) ([]nodeVolume, error) {
	c, err := r.client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var vols []nodeVolume
	for i := range stagedVolumes {
		id := fmt.Sprintf("pvc-%08d-0000-4000-8000-00000000cafe", i)
		disk, err := c.CreateDisk(ctx, routeros.CreateDiskRequest{
			Slot: id, FilePath: volumePath + "/" + id + ".img", SizeBytes: volumeSize, NQN: "nqn.2000-02.com.mikrotik:" + id,
		})
		if err != nil {
			return nil, fmt.Errorf("create disk %s on the simulator: %w", id, err)
		}
		staging := filepath.Join(kubelet, "plugins/kubernetes.io/csi/rds.csi.srvlab.io", id, "globalmount")
		target := filepath.Join(kubelet, "pods/bench-pod", "volumes/kubernetes.io~csi", id, "mount")
		// kubelet creates the staging directory and the target's parent; the driver the rest.
		if err := errors.Join(os.MkdirAll(staging, 0o750), os.MkdirAll(filepath.Dir(target), 0o750)); err != nil {
			return nil, err
		}
		vols = append(vols, nodeVolume{id: id, staging: staging, target: target, context: map[string]string{
			"nqn":         disk.NQN,
			"nvmeAddress": "127.0.0.1",
			"nvmePort":    strconv.Itoa(disk.NVMePort),
			"volumePath":  volumePath,
		}})
	}
	return vols, nil
}

func mountCapability() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
}

func stage(ctx context.Context, d *driver, v nodeVolume) (time.Duration, error) {
	start := time.Now()
	_, err := d.node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: mountCapability(), VolumeContext: v.context,
	})
	return time.Since(start), err
}

// stageFigure unstages and stages every volume again (its ext4 filesystem exists now) and
// times each NodeStageVolume.
func stageFigure(ctx context.Context, d *driver, vols []nodeVolume) figure {
	var stages, unstages []time.Duration
	for range stageRounds {
		for _, v := range vols {
			start := time.Now()
			if _, err := d.node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.staging}); err != nil {
				return figStage.na("NodeUnstageVolume: %v", err)
			}
			unstages = append(unstages, time.Since(start))
			took, err := stage(ctx, d, v)
			if err != nil {
				return figStage.na("NodeStageVolume of an existing filesystem: %v", err)
			}
			stages = append(stages, took)
		}
	}
	return figStage.measured(msf(pct(stages, 50)), "%d NodeStageVolume calls over gRPC (loop device attached, existing ext4 checked and mounted): p50 %s, p99 %s; NodeUnstageVolume p50 %s",
		len(stages), ms(pct(stages, 50)), ms(pct(stages, 99)), ms(pct(unstages, 50)))
}

// publishFigure times NodePublishVolume + NodeUnpublishVolume of the staged volumes.
func publishFigure(ctx context.Context, d *driver, vols []nodeVolume) figure {
	var pairs, pubs []time.Duration
	for range publishRounds {
		for _, v := range vols {
			start := time.Now()
			published, err := publishUnpublish(ctx, d, v)
			if err != nil {
				return figPublish.na("%s", nodeUnavailable("", err, d))
			}
			pairs, pubs = append(pairs, time.Since(start)), append(pubs, published)
		}
	}
	return figPublish.measured(msf(pct(pairs, 50)), "%d NodePublishVolume + NodeUnpublishVolume pairs over gRPC (bind mount of the staged ext4 and its removal): p50 %s, p99 %s; NodePublishVolume alone p50 %s",
		len(pairs), ms(pct(pairs, 50)), ms(pct(pairs, 99)), ms(pct(pubs, 50)))
}

// publishUnpublish publishes the staged volume and unpublishes it again; it returns how
// long the publish took.
func publishUnpublish(ctx context.Context, d *driver, v nodeVolume) (time.Duration, error) {
	start := time.Now()
	_, err := d.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: v.target, VolumeCapability: mountCapability(), VolumeContext: v.context,
	})
	published := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("NodePublishVolume: %w", err)
	}
	if _, err := d.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: v.id, TargetPath: v.target}); err != nil {
		return 0, fmt.Errorf("NodeUnpublishVolume: %w", err)
	}
	return published, nil
}

// nodeUnavailable explains a failed node call (call names it unless err does);
// Unimplemented means that part of the node service has not been written yet.
func nodeUnavailable(call string, err error, d *driver) string {
	if status.Code(err) == codes.Unimplemented {
		return fmt.Sprintf("the node service does not implement it yet: %s %v", call, err)
	}
	msg := strings.TrimPrefix(fmt.Sprintf("%s: %v", call, err), ": ")
	if !d.running() {
		msg += "; the node plugin exited: " + d.tail(4)
	}
	return strings.TrimSpace(msg)
}
