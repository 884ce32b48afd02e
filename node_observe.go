package main

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

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
