package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// NodeGetVolumeStats reports capacity and inodes of a filesystem volume (statfs) or the
// size of a block volume, and wakes the healing watcher when the volume looks unwell.
func (n *nodeService) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	id := req.GetVolumeId()
	if _, recorded := n.records.get(id); !recorded {
		if r, ok := n.unrecordedStats(ctx, id, req.GetVolumePath()); ok {
			return r, nil
		}
	}
	rec, path, err := n.stagedAt(ctx, id, req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if statuses, err := n.conditions(ctx, rec); err == nil && len(statuses) > 0 {
		n.requestHeal()
	}
	if rec.Block {
		disk, err := n.att.Resolve(rec.NQN, rec.NSID)
		if err != nil {
			return nil, nodeStatus("volume stats of "+id, err)
		}
		return blockStats(disk.SizeBytes), nil
	}
	return filesystemStats(ctx, id, path)
}

// unrecordedStats answers for a volume staged without a record on this node (the earlier
// driver's, until kubelet stages it again): path must be a device node or the top mount
// of one of the volume's disks. ok is false when it is not provably the volume's.
func (n *nodeService) unrecordedStats(ctx context.Context, id, path string) (*csi.NodeGetVolumeStatsResponse, bool) {
	if id == "" || !filepath.IsAbs(path) {
		return nil, false
	}
	subs, err := n.subsystems(func(s nvme.Subsystem) bool { return isVolumeSubsystem(s, id) })
	if err != nil || len(subs) == 0 {
		return nil, false
	}
	dev, block, err := deviceAt(ctx, path)
	if err != nil || dev == (devNum{}) {
		return nil, false
	}
	for _, s := range subs {
		for _, d := range s.Disks {
			switch {
			case dev != diskDev(&d):
			case block:
				return blockStats(d.SizeBytes), true
			default:
				r, err := filesystemStats(ctx, id, path)
				return r, err == nil
			}
		}
	}
	return nil, false
}

// deviceAt is the device a volume path stands for: a block device node's (stat follows
// symlinks), else that of the mount visible there; zero for none.
func deviceAt(ctx context.Context, path string) (dev devNum, block bool, err error) {
	dev, block, err = deviceNodeAt(path, unix.Stat)
	if err != nil || block {
		return dev, block, err
	}
	t, err := topMount(ctx, path)
	if t == nil || err != nil {
		return devNum{}, false, err
	}
	return entryDev(t), false, nil
}

func blockStats(size int64) *csi.NodeGetVolumeStatsResponse {
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}}
}

func filesystemStats(ctx context.Context, id, path string) (*csi.NodeGetVolumeStatsResponse, error) {
	s, err := mount.StatContext(ctx, path)
	if err != nil {
		return nil, nodeStatus("volume stats of "+id, err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{
		{Unit: csi.VolumeUsage_BYTES, Total: s.TotalBytes, Available: s.AvailableBytes, Used: s.UsedBytes},
		{Unit: csi.VolumeUsage_INODES, Total: s.TotalInodes, Available: s.FreeInodes, Used: s.UsedInodes},
	}}, nil
}

// stagedAt validates a request naming a volume and one of its paths, and returns the
// record and the cleaned path: InvalidArgument for missing fields, NotFound (as the CSI
// spec asks) for a volume not staged here or a path that is not the volume's.
func (n *nodeService) stagedAt(ctx context.Context, id, path string) (stagingRecord, string, error) {
	if err := checkRequest(id); err != nil {
		return stagingRecord{}, "", err
	}
	if path == "" {
		return stagingRecord{}, "", status.Error(codes.InvalidArgument, "volume_path is missing")
	}
	rec, ok := n.records.get(id)
	if !ok {
		return stagingRecord{}, "", status.Errorf(codes.NotFound, "volume %s is not staged on this node", id)
	}
	notFound := status.Errorf(codes.NotFound, "volume %s is neither staged nor published at %q on this node", rec.VolumeID, path)
	if !filepath.IsAbs(path) {
		return rec, "", notFound
	}
	path = filepath.Clean(path)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return rec, "", notFound
	} else if err != nil {
		return rec, "", nodeStatus("volume path "+path, err)
	}
	if _, published := rec.Published[path]; published || path == rec.StagingPath {
		return rec, path, nil
	}
	// kubelet asks about its own copy of a block device node (…/volumeDevices/<pv>/dev/<pod-uid>).
	dev, block, err := deviceAt(ctx, path)
	if err != nil && !rec.Block {
		return rec, "", nodeStatus("volume path "+path, err)
	}
	if err == nil && block == rec.Block && dev == rec.dev() {
		return rec, path, nil
	}
	return rec, "", notFound
}

// expandWait bounds how long NodeExpandVolume waits for the disk to show its new size.
const expandWait = 10 * time.Second

// NodeExpandVolume rescans the namespace, waits (the kernel applies a rescan
// asynchronously) for the size the controller gave it, then grows an ext4 or xfs
// filesystem online. It returns the disk's size.
func (n *nodeService) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	rec, _, err := n.stagedAt(ctx, id, req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	want := req.GetCapacityRange().GetRequiredBytes()
	disk, err := n.att.Rescan(ctx, rec.NQN, rec.NSID)
	if err != nil {
		return nil, nodeStatus("expand volume "+id+": rescan", err)
	}
	deadline := time.NewTimer(expandWait)
	defer deadline.Stop()
	for disk.SizeBytes < want {
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "expand volume %s: the disk shows %d bytes, not the %d requested, when the call's deadline passed", id, disk.SizeBytes, want)
		case <-deadline.C:
			return nil, status.Errorf(codes.Unavailable,
				"expand volume %s: after a rescan the disk still shows %d bytes, less than the %d requested; the RDS has not grown the volume yet (ControllerExpandVolume must succeed first); retried automatically",
				id, disk.SizeBytes, want)
		case <-time.After(100 * time.Millisecond):
		}
		if disk, err = n.att.Resolve(rec.NQN, rec.NSID); err != nil {
			return nil, nodeStatus("expand volume "+id, err)
		}
	}
	if !rec.Block && req.GetVolumeCapability().GetBlock() == nil {
		if err := n.fs.grow(ctx, disk.DevPath, rec.StagingPath, rec.FSType); err != nil {
			return nil, nodeStatus("expand volume "+id+": grow the filesystem", err)
		}
		n.log.Info("filesystem grown", "volume_id", id, "device", disk.DevPath, "size", disk.SizeBytes)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: disk.SizeBytes}, nil
}

// Volume health reasons (CSI 1.13's NodeGetVolumeHealth replaced VolumeCondition).
const (
	nodeHealthEarlierBoot  = "StagedBeforeReboot"
	nodeHealthUnknown      = "HealthUnknown"
	nodeHealthLost         = "ControllerLost"
	nodeHealthNoLivePath   = "NoLivePath"
	nodeHealthDiskMissing  = "DiskMissing"
	nodeHealthNotMounted   = "NotMounted"
	nodeHealthStaleMount   = "StaleMount"
	nodeHealthReadOnly     = "ReadOnlyFilesystem"
	nodeHealthStaleNode    = "StaleDeviceNode"
	nodeHealthHealFailed   = "HealFailed"
	nodeHealthPathDown     = "PathDegraded"
	nodeHealthMultipathOff = "MultipathOff"
	nodeHealthAutoRepaired = "the node plugin replaces stale mounts by itself every --heal-interval"
)

// NodeGetVolumeHealth reports what is wrong with a staged volume from this node's view.
// An empty list means healthy; DEGRADED entries alone mean it works but not as
// configured (a path down, multipath off, a read-only filesystem); INACCESSIBLE means it
// does not work.
func (n *nodeService) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if err := checkRequest(id); err != nil {
		return nil, err
	}
	rec, ok := n.records.get(id)
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s is not staged on this node", id)
	}
	if p := req.GetStagingTargetPath(); p != "" && filepath.Clean(p) != rec.StagingPath {
		return nil, status.Errorf(codes.NotFound, "volume %s is staged at %s, not at %s", id, rec.StagingPath, p)
	}
	statuses, err := n.conditions(ctx, rec)
	if err != nil {
		return nil, nodeStatus("volume health of "+id, err)
	}
	if len(statuses) > 0 {
		n.requestHeal()
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: &csi.VolumeHealth{VolumeId: id, HealthStatuses: statuses}}, nil
}

// conditions lists the adverse conditions of a staged volume from one full look and its
// last failed heal.
func (n *nodeService) conditions(ctx context.Context, rec stagingRecord) ([]*csi.VolumeHealth_VolumeHealthEntry, error) {
	var failed *healOutcome
	if o, ok := n.heals.Load(rec.VolumeID); ok && o.(healOutcome).err != nil {
		h := o.(healOutcome)
		failed = &h
	}
	return volumeConditions(rec, n.look(ctx, rec, true), failed)
}

// volumeConditions turns one look at a staged volume, and its last failed heal (nil:
// none), into health entries, each saying what happens next or what to do. An
// unreadable mount table is an error when the entries depend on it.
func volumeConditions(rec stagingRecord, f stagedFacts, failed *healOutcome) ([]*csi.VolumeHealth_VolumeHealthEntry, error) {
	var out []*csi.VolumeHealth_VolumeHealthEntry
	add := func(t csi.VolumeHealthErrorType, reason, format string, args ...any) {
		out = append(out, &csi.VolumeHealth_VolumeHealthEntry{Status: t, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	inaccessible, degraded := csi.VolumeHealthErrorType_INACCESSIBLE, csi.VolumeHealthErrorType_DEGRADED
	if !f.currentBoot {
		add(inaccessible, nodeHealthEarlierBoot, "volume %s was staged before the node last booted; kubelet stages it again when a pod needs it", rec.VolumeID)
		return out, nil
	}
	if failed != nil {
		add(inaccessible, nodeHealthHealFailed, "healing (%s) failed at %s: %v; it is retried every --heal-interval", failed.reason, failed.at.UTC().Format("15:04:05 MST"), failed.err)
	}
	h := f.health
	switch {
	case f.healthErr != nil:
		add(inaccessible, nodeHealthUnknown, "cannot read the NVMe state of %s: %v", rec.NQN, f.healthErr)
		return out, nil
	case !h.Connected:
		add(inaccessible, nodeHealthLost, "no NVMe/TCP controller of %s is left on this node (ctrl_loss_tmo expired, or it was disconnected); %s once the RDS is reachable", rec.NQN, nodeHealthAutoRepaired)
		return out, nil
	case !h.Live && len(f.paths) > 0:
		add(inaccessible, nodeHealthNoLivePath, "no live NVMe/TCP path to %s (%s): I/O waits until the RDS is reachable again on one of them (port %d); check the RDS and the networks", rec.NQN, describePaths(f.paths), rec.Port)
	case !h.Live:
		var states []string
		for _, c := range h.Controllers {
			states = append(states, c.Name+" "+c.State)
		}
		add(inaccessible, nodeHealthNoLivePath, "no live NVMe/TCP path to %s (%s): I/O waits until the RDS at %s:%d is reachable again; check the RDS and the network", rec.NQN, strings.Join(states, ", "), rec.Address, rec.Port)
	case rec.multipath() && f.pathsDown > 0:
		var down []string
		for _, p := range f.paths {
			if !p.live() {
				down = append(down, p.String())
			}
		}
		add(degraded, nodeHealthPathDown, "degraded: %d of %d paths live (%s); I/O continues on the live path, and the kernel (or, for a path it gave up, the node plugin) reconnects the others when the RDS answers there: check that network path",
			countLive(f.paths), len(f.paths), strings.Join(down, "; "))
	}
	if rec.SinglePath {
		add(degraded, nodeHealthMultipathOff, "native NVMe multipath is off on this node (nvme_core.multipath=N), so the volume uses one of its %d paths (%s) and a failure of that path stops its I/O: set nvme_core.multipath=Y on the kernel command line and reboot the node to use every path",
			len(rec.paths()), rec.Address)
	}
	disk := f.disk
	switch {
	case f.diskErr != nil:
		add(inaccessible, nodeHealthDiskMissing, "the disk of %s is not resolvable: %v", rec.NQN, f.diskErr)
	case rec.Block:
		if f.staleNodes {
			add(inaccessible, nodeHealthStaleNode, "a publish device node still points at the volume's previous device; %s", nodeHealthAutoRepaired)
		}
	case f.mountErr != nil:
		return nil, f.mountErr
	case f.stagingOK:
	case f.staging == nil:
		add(inaccessible, nodeHealthNotMounted, "nothing is mounted at the staging path %s; kubelet stages the volume again", rec.StagingPath)
	case entryDev(f.staging) != diskDev(disk):
		add(inaccessible, nodeHealthStaleMount, "the staging mount at %s is on device %d:%d, but the volume's disk is now %s (%d:%d); %s",
			rec.StagingPath, f.staging.Major, f.staging.Minor, disk.Name, disk.Major, disk.Minor, nodeHealthAutoRepaired)
	case mountReadOnly(f.staging) && !rec.ReadOnly:
		add(degraded, nodeHealthReadOnly, "the filesystem at %s went read-only (I/O errors); the node plugin remounts it after a journal replay", rec.StagingPath)
	}
	return out, nil
}
