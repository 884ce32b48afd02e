package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
)

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

// NodeGetVolumeHealth reports what is wrong with a staged volume from this node's view:
// no live NVMe/TCP path, a lost controller, a stale or read-only mount, a failed heal.
// An empty list means healthy (normal); DEGRADED entries alone mean the volume works but
// not as configured (a path down, native multipath off, a read-only filesystem);
// INACCESSIBLE means it does not work (abnormal).
func (n *nodeService) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if err := requireVolumeID(id); err != nil {
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

// conditions lists the adverse conditions of a staged volume, each with a message that
// says what happens next or what to do.
func (n *nodeService) conditions(ctx context.Context, rec stagingRecord) ([]*csi.VolumeHealth_VolumeHealthEntry, error) {
	f := lookAt(ctx, rec, n.bootID, n.att, mount.ByMountPoint, func(a string) string { return n.pathNote(rec.VolumeID, a) }, true)
	var failed *healOutcome
	if o, ok := n.heals.Load(rec.VolumeID); ok && o.(healOutcome).err != nil {
		h := o.(healOutcome)
		failed = &h
	}
	return volumeConditions(rec, f, failed)
}

// volumeConditions turns one look at a staged volume, and its last failed heal (nil:
// none), into volume health entries. An unreadable mount table is an error when the
// entries depend on it.
func volumeConditions(rec stagingRecord, f stagedFacts, failed *healOutcome) ([]*csi.VolumeHealth_VolumeHealthEntry, error) {
	var out []*csi.VolumeHealth_VolumeHealthEntry
	add := func(t csi.VolumeHealthErrorType, reason, format string, args ...any) {
		out = append(out, &csi.VolumeHealth_VolumeHealthEntry{Status: t, Reason: reason, Message: fmt.Sprintf(format, args...)})
	}
	inaccessible := csi.VolumeHealthErrorType_INACCESSIBLE
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
		add(csi.VolumeHealthErrorType_DEGRADED, nodeHealthPathDown, "degraded: %d of %d paths live (%s); I/O continues on the live path, and the kernel (or, for a path it gave up, the node plugin) reconnects the others when the RDS answers there: check that network path",
			countLive(f.paths), len(f.paths), strings.Join(down, "; "))
	}
	if rec.SinglePath {
		add(csi.VolumeHealthErrorType_DEGRADED, nodeHealthMultipathOff, "native NVMe multipath is off on this node (nvme_core.multipath=N), so the volume uses one of its %d paths (%s) and a failure of that path stops its I/O: set nvme_core.multipath=Y on the kernel command line and reboot the node to use every path",
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
		add(csi.VolumeHealthErrorType_DEGRADED, nodeHealthReadOnly, "the filesystem at %s went read-only (I/O errors); the node plugin remounts it after a journal replay", rec.StagingPath)
	}
	return out, nil
}
