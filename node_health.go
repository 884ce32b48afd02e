package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
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

// stagedFacts is one look at a staged volume, taken without changing anything. Healing
// plans from it (planHeal), NodeGetVolumeHealth reports it (volumeConditions), and the
// doctor judges it: all three see a volume the same way because they share this look.
type stagedFacts struct {
	currentBoot bool // the record was made in this boot of the kernel

	health    nvme.Health // the volume's controllers as sysfs shows them
	healthErr error       // why health could not be read
	// paths are the states of a volume's configured paths (more than one only).
	paths []pathState
	// reconnecting: the volume is connected but no controller is live (the target is
	// away); it may be lost soon, so the watcher looks at it more often.
	reconnecting bool
	// pathsDown counts the paths in use of a multipath volume that are not live.
	pathsDown int

	disk    *nvme.Disk // the volume's disk as sysfs resolves it now; nil if none
	diskErr error      // why it did not resolve
	lost    bool       // no controller of the volume is left (ctrl_loss_tmo expired)

	// staging is the visible mount at a filesystem volume's staging path (nil if none),
	// stacked the number of mounts there; mountErr says why the mount table could not
	// be read, and then nothing may be decided from the look.
	staging  *mount.Entry
	stacked  int
	mountErr error
	// stagingOK: the staging path was seen (by stat, without the mount table) to hold
	// the volume's disk, writable unless staged read-only: nothing to do.
	stagingOK bool
	// staleNodes: block, a publish node points at the volume's previous device.
	staleNodes bool

	// Set by the node for planHeal only.
	demand       bool     // a caller needs the volume now (NodePublishVolume)
	missingPaths []string // paths to connect again beside the live ones
}

// stagedSource is where a look reads a volume's NVMe state: the node plugin's attacher,
// or the host the doctor opened.
type stagedSource interface {
	Health(nqn string) (nvme.Health, error)
	Resolve(nqn string, nsid int) (*nvme.Disk, error)
}

// lookAt takes one look at a staged volume. quick lets a filesystem volume whose
// staging path stat and statfs show as its live disk, writable, skip the mount table
// (the watcher's idle check; it plans nothing). note says why a path failed to connect.
func lookAt(ctx context.Context, rec stagingRecord, bootID string, src stagedSource,
	mounts func(ctx context.Context, path string) ([]*mount.Entry, error), note func(address string) string, quick bool,
) stagedFacts {
	f := stagedFacts{currentBoot: rec.BootID == bootID}
	f.health, f.healthErr = src.Health(rec.NQN)
	if f.healthErr == nil {
		f.reconnecting = f.health.Connected && !f.health.Live
		if len(rec.paths()) > 1 {
			f.paths = pathStatesOf(rec, f.health, note)
			if rec.multipath() {
				f.pathsDown = len(f.paths) - countLive(f.paths)
			}
		}
	}
	f.disk, f.diskErr = src.Resolve(rec.NQN, rec.NSID)
	f.lost = errors.Is(f.diskErr, nvme.ErrNotConnected)
	switch {
	case rec.Block:
		if f.disk != nil {
			f.staleNodes = staleBlockNodes(rec, diskDev(f.disk))
		}
	case quick && !rec.Healing && f.disk != nil && !f.reconnecting && stagingOnDisk(rec, f.disk):
		f.stagingOK = true
	default:
		entries, err := mounts(ctx, rec.StagingPath)
		f.staging, f.stacked, f.mountErr = top(entries), len(entries), err
	}
	return f
}

// stagingOnDisk reports, from stat and statfs of the staging path alone, that the
// filesystem visible there lives on disk and is writable (or read-only as staged).
func stagingOnDisk(rec stagingRecord, disk *nvme.Disk) bool {
	var st unix.Stat_t
	if unix.Stat(rec.StagingPath, &st) != nil || (devNum{unix.Major(st.Dev), unix.Minor(st.Dev)}) != diskDev(disk) || diskDev(disk) != rec.dev() {
		return false
	}
	var fs unix.Statfs_t
	if unix.Statfs(rec.StagingPath, &fs) != nil {
		return false
	}
	return rec.ReadOnly || fs.Flags&unix.ST_RDONLY == 0
}

// staleBlockNodes reports whether a recorded publish node of a block volume points at
// the volume's previous device instead of its disk.
func staleBlockNodes(rec stagingRecord, disk devNum) bool {
	for _, path := range rec.publishTargets() {
		if cur, ok, _ := blockNodeAt(path); ok && cur != disk && cur == rec.dev() {
			return true
		}
	}
	return false
}

// blockNodeAt returns the device the block device node at path stands for (the node
// itself, not what a symlink points to). isBlock is false when path is something else;
// err is lstat's error.
func blockNodeAt(path string) (dev devNum, isBlock bool, err error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return devNum{}, false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, false, nil
	}
	return devNum{unix.Major(st.Rdev), unix.Minor(st.Rdev)}, true, nil
}

// observe takes the node plugin's look at a staged volume, for planHeal, and updates the
// volume's NVMe gauges. An unreadable mount table yields facts that plan nothing.
func (n *nodeService) observe(ctx context.Context, rec stagingRecord, demand bool) (stagedFacts, error) {
	f := lookAt(ctx, rec, n.bootID, n.att, mount.ByMountPoint,
		func(a string) string { return n.pathNote(rec.VolumeID, a) }, !demand)
	f.demand = demand
	if f.healthErr == nil {
		live := 0.0
		if f.health.Live {
			live = 1
		}
		n.m.volumeNVMeState.WithLabelValues(rec.VolumeID).Set(live)
		used, livePaths := 1, live // one path: whatever controller the volume has is it
		if rec.multipath() {
			used, livePaths = len(f.paths), float64(countLive(f.paths))
			if f.health.Connected {
				f.missingPaths = missingPaths(f.paths, func(a string) bool { return n.pathDue(rec.VolumeID, a) })
			}
		}
		n.m.volumePaths.WithLabelValues(rec.VolumeID, "configured").Set(float64(used))
		n.m.volumePaths.WithLabelValues(rec.VolumeID, "live").Set(livePaths)
	}
	if f.mountErr != nil {
		// Without the mount table nothing can be decided safely: act as if the volume
		// were unused and not lost, which plans nothing.
		return stagedFacts{}, f.mountErr
	}
	return f, f.diskErr
}
