package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// Staging, and the pieces healing reuses: the filesystem (formatting only a provably
// blank disk, the check before a mount, the mount) and the replacement of stale mounts
// or device nodes. heal.go calls into this file, never the other way round.

// NodeStageVolume connects the volume, records it, and for filesystem volumes formats a
// provably blank disk and mounts it at the staging path. For raw block volumes nothing at
// all is put in the staging path.
func (n *nodeService) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkRequest(id, "staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	mode, err := requestCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	t, paths, o, err := parseVolumeContext(req.GetVolumeContext(), n.guard)
	if err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	rec := newStagingRecord(id, req.GetStagingTargetPath(), t, paths, o, mode)
	if old, ok := n.records.get(id); ok {
		if !old.sameVolume(rec) {
			return nil, status.Errorf(codes.AlreadyExists,
				"volume %s is already staged at %s as %s (NQN %s); unstage it before staging it at %s as %s",
				id, old.StagingPath, old.kind(), old.NQN, rec.StagingPath, rec.kind())
		}
		rec.Published, rec.Healing, rec.Major, rec.Minor, rec.BootID = old.Published, old.Healing, old.Major, old.Minor, old.BootID
	}
	if err := n.breaker.allow(id); err != nil {
		return nil, err
	}
	if err := n.stage(ctx, &rec); err != nil {
		err = nodeStatus("stage volume "+id, err)
		n.breaker.failure(id, err)
		return nil, err
	}
	n.breaker.success(id)
	n.heals.Delete(id)
	return &csi.NodeStageVolumeResponse{}, nil
}

// stage does the work of NodeStageVolume under the volume lock.
func (n *nodeService) stage(ctx context.Context, rec *stagingRecord) error {
	disk, err := n.connect(ctx, rec)
	switch {
	case err != nil:
		return err
	case !rec.Block:
		return n.mountStaging(ctx, rec, disk)
	case rec.dev() != diskDev(disk): // reconnected under new names
		return n.replaceBlockNodes(rec, disk)
	}
	return nil
}

// connect attaches the volume and records it before anything is mounted, so a crash or a
// sweep never finds a connected volume without its claim. A record of an earlier boot
// becomes this boot's: its old device number means nothing now.
func (n *nodeService) connect(ctx context.Context, rec *stagingRecord) (*nvme.Disk, error) {
	n.sweepMu.RLock()
	defer n.sweepMu.RUnlock()
	disk, err := n.attach(ctx, rec)
	if err != nil {
		return nil, err
	}
	if rec.BootID != n.bootID {
		rec.BootID, rec.Major, rec.Minor, rec.Healing = n.bootID, disk.Major, disk.Minor, false
	}
	if rec.Major == 0 && rec.Minor == 0 {
		// First stage: nothing is mounted yet. Later the recorded device changes only
		// once the mounts or nodes of the old one were replaced.
		rec.Major, rec.Minor = disk.Major, disk.Minor
	}
	if err := n.records.put(*rec); err != nil {
		return nil, err
	}
	n.settleUnowned(rec.NQN) // adopted, if the sweep had left it alone
	return disk, nil
}

// mountStaging makes the staging path hold the volume's filesystem from disk. Already
// mounted from disk: nothing to do (no second mount, no check of a mounted filesystem).
// Mounted from the volume's previous device: the stale mounts are replaced.
func (n *nodeService) mountStaging(ctx context.Context, rec *stagingRecord, disk *nvme.Disk) error {
	t, err := topMount(ctx, rec.StagingPath)
	switch {
	case err != nil:
		return err
	case t == nil && rec.Healing: // a heal was interrupted after unmounting: finish it
		return n.replaceMounts(ctx, rec, disk, "stage found an interrupted heal")
	case t == nil:
	case entryDev(t) == diskDev(disk) && (rec.ReadOnly || !mountReadOnly(t)) && !rec.Healing:
		return nil
	case entryDev(t) == diskDev(disk) || entryDev(t) == rec.dev() || rec.Healing:
		return n.replaceMounts(ctx, rec, disk, "stage found the staging mount stale or read-only")
	default:
		return status.Errorf(codes.FailedPrecondition,
			"staging path %s already has device %d:%d mounted (%s), which is not volume %s's disk %s (%d:%d) nor its previous one; unmount it by hand if it is stale",
			rec.StagingPath, t.Major, t.Minor, t.Source, rec.VolumeID, disk.DevPath, disk.Major, disk.Minor)
	}
	if err := os.MkdirAll(rec.StagingPath, 0o750); err != nil {
		return fmt.Errorf("create the staging path: %w", err)
	}
	// The one probe of this stage; a probe that cannot read the disk is never "blank".
	p, err := n.fs.probe(ctx, disk.DevPath)
	if err != nil {
		return status.Errorf(codes.Unavailable, "volume %s: cannot read disk %s to see what it holds, so it is neither formatted nor mounted: %v; this is retried, check the NVMe/TCP path if it persists",
			rec.VolumeID, disk.DevPath, err)
	}
	if err := n.prepare(ctx, rec, disk, p, true); err != nil {
		return err
	}
	if err := n.mountDisk(ctx, rec, disk); err != nil {
		return err
	}
	if err := n.growToDisk(ctx, rec, disk, p); err != nil {
		return err
	}
	if rec.dev() != diskDev(disk) {
		rec.Major, rec.Minor = disk.Major, disk.Minor
		return n.records.put(*rec)
	}
	return nil
}

// prepare makes sure the probed disk (p) holds the volume's filesystem and may be
// mounted: a blank disk is formatted (only when mayFormat), ext is checked (e2fsck -p,
// which also replays the journal), and anything else fails with nothing written.
func (n *nodeService) prepare(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, p mount.ProbeResult, mayFormat bool) error {
	mismatch := func() error {
		return status.Errorf(codes.FailedPrecondition,
			"volume %s: disk %s holds a %s filesystem (%s) but the volume capability asks for %s; nothing was changed: use fsType %s for this volume",
			rec.VolumeID, disk.DevPath, p.Kind, p.Detail, rec.FSType, fsFamily(p.Kind))
	}
	switch p.Kind {
	case mount.KindBlank:
		if !mayFormat {
			return status.Errorf(codes.FailedPrecondition, "volume %s: disk %s reads as blank (%s) after a reconnect, but the volume held a %s filesystem; refusing to format it: check the volume on the RDS",
				rec.VolumeID, disk.DevPath, p.Detail, rec.FSType)
		}
		if rec.ReadOnly {
			return status.Errorf(codes.FailedPrecondition, "volume %s is blank and its access mode is read-only, so it cannot be formatted; stage it read-write once first", rec.VolumeID)
		}
		if err := n.fs.format(ctx, disk.DevPath, rec.FSType); err != nil {
			return fmt.Errorf("format %s as %s: %w", disk.DevPath, rec.FSType, err)
		}
		n.log.Info("formatted a blank volume", "volume_id", rec.VolumeID, "device", disk.DevPath, "fstype", rec.FSType)
	case mount.KindExt4, mount.KindExt3, mount.KindExt2:
		if rec.FSType != "ext4" {
			return mismatch()
		}
		if rec.ReadOnly {
			return nil // a read-only access mode must not write, and e2fsck -p writes
		}
		if err := n.fs.repair(ctx, disk.DevPath, "ext4"); errors.Is(err, mount.ErrNeedsRepair) {
			return status.Errorf(codes.FailedPrecondition, "volume %s needs a filesystem repair before it can be mounted: %v", rec.VolumeID, err)
		} else if err != nil {
			return err
		}
	case mount.KindXFS:
		// No xfs_repair: a read-only check walks all metadata (minutes on a large volume);
		// the mount replays the log and the kernel answers EUCLEAN if it needs repair.
		if rec.FSType != "xfs" {
			return mismatch()
		}
	default:
		return status.Errorf(codes.FailedPrecondition,
			"volume %s: disk %s holds %s (%s), not a %s filesystem; refusing to format or mount it, nothing was written. If the data is disposable, wipe the volume and retry",
			rec.VolumeID, disk.DevPath, p.Kind, p.Detail, rec.FSType)
	}
	return nil
}

func fsFamily(k mount.Kind) string {
	if k == mount.KindXFS {
		return "xfs"
	}
	return "ext4"
}

// growSlack: our volumes are whole MiB, and so is every size they are grown by.
const growSlack = 1 << 20

// growToDisk grows a just-mounted filesystem the probe (p) found smaller than its disk:
// a restore or clone into a larger size holds its source's smaller filesystem.
func (n *nodeService) growToDisk(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, p mount.ProbeResult) error {
	if rec.ReadOnly || p.Kind == mount.KindBlank || p.Size == 0 || disk.SizeBytes-p.Size < growSlack {
		return nil
	}
	if err := n.fs.grow(ctx, disk.DevPath, rec.StagingPath, rec.FSType); err != nil {
		// Unmounted again (nothing uses it yet), so kubelet's retry of the stage tries
		// the grow again instead of finding the volume mounted.
		if uerr := mount.UnmountAll(ctx, rec.StagingPath); uerr != nil {
			err = errors.Join(err, fmt.Errorf("and unmounting it again failed: %w", uerr))
		}
		return status.Errorf(codes.Internal, "volume %s holds a %d-byte %s filesystem on a %d-byte disk (restored or cloned into a larger size), and growing it failed: %v; this is retried",
			rec.VolumeID, p.Size, rec.FSType, disk.SizeBytes, err)
	}
	n.log.Info("filesystem grown to fill its disk", "volume_id", rec.VolumeID, "device", disk.DevPath, "from", p.Size, "to", disk.SizeBytes)
	return nil
}

func (n *nodeService) mountDisk(ctx context.Context, rec *stagingRecord, disk *nvme.Disk) error {
	flags := slices.Clone(rec.MountFlags)
	if rec.ReadOnly {
		flags = append(flags, "ro")
	}
	if rec.FSType == "xfs" && !slices.Contains(flags, "nouuid") {
		// Restores and clones keep their source's UUID, and xfs refuses a second mount of
		// a UUID; staging never mounts one volume twice, so the check adds no safety.
		flags = append(flags, "nouuid")
	}
	opts, err := mount.ParseOptions(rec.FSType, flags)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "mount options %q: %v", flags, err)
	}
	if err := n.storm.Mount(ctx, disk.DevPath, rec.StagingPath, rec.FSType, opts); err != nil {
		return err
	}
	n.log.Info("staged", "volume_id", rec.VolumeID, "device", disk.DevPath, "staging_path", rec.StagingPath, "fstype", rec.FSType)
	return nil
}

// replaceMounts replaces a filesystem volume's stale staging mount, and every publish
// bind mount of it, by fresh mounts of disk. The order protects the data: prove the disk
// holds the volume's filesystem (else touch nothing), unmount every stale mount (so two
// filesystem instances never write one volume), check and replay the journal, mount, bind
// again; a read-only filesystem becomes writable only by a fresh mount after a replay.
// rec.Healing is on disk while mounts are missing, so an interruption is finished later.
// The caller holds the volume lock.
func (n *nodeService) replaceMounts(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, why string) error {
	p, err := n.fs.probe(ctx, disk.DevPath) // the one probe of this heal
	if err != nil {
		return fmt.Errorf("heal volume %s: cannot read the reconnected disk %s, so the stale mounts stay: %w", rec.VolumeID, disk.DevPath, err)
	}
	if fsFamily(p.Kind) != rec.FSType || !slices.Contains([]mount.Kind{mount.KindXFS, mount.KindExt4, mount.KindExt3, mount.KindExt2}, p.Kind) {
		return fmt.Errorf("heal volume %s: the reconnected disk %s holds %s (%s), not the volume's %s filesystem; the stale mounts stay: check the volume on the RDS",
			rec.VolumeID, disk.DevPath, p.Kind, p.Detail, rec.FSType)
	}
	targets, err := n.publishTargetsOf(ctx, rec)
	if err != nil {
		return err
	}
	n.log.Warn("replacing stale mounts", "volume_id", rec.VolumeID, "why", why, "device", disk.DevPath, "staging_path", rec.StagingPath, "publish_targets", len(targets))
	rec.Healing = true
	if err := n.records.put(*rec); err != nil {
		return err
	}
	paths := slices.Sorted(maps.Keys(targets))
	for _, path := range paths {
		if err := mount.UnmountAll(ctx, path); err != nil {
			return fmt.Errorf("heal volume %s: unmount the stale publish mount: %w", rec.VolumeID, err)
		}
	}
	if err := mount.UnmountAll(ctx, rec.StagingPath); err != nil {
		return fmt.Errorf("heal volume %s: unmount the stale staging mount: %w", rec.VolumeID, err)
	}
	if err := os.MkdirAll(rec.StagingPath, 0o750); err != nil {
		return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
	}
	if err := n.prepare(ctx, rec, disk, p, false); err != nil {
		return err
	}
	if err := n.mountDisk(ctx, rec, disk); err != nil {
		return err
	}
	if rec.Published == nil {
		rec.Published = map[string]bool{}
	}
	for _, path := range paths {
		if err := ensureDir(path); err != nil {
			return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
		}
		if err := n.storm.Bind(ctx, rec.StagingPath, path, targets[path]); err != nil {
			return fmt.Errorf("heal volume %s: bind the publish target again: %w", rec.VolumeID, err)
		}
		rec.Published[path] = targets[path]
	}
	return n.healed(rec, disk, len(targets)+1, "healed: stale mounts replaced", "publish_targets", len(targets))
}

// healed records disk as the volume's device once its mounts or nodes were replaced.
func (n *nodeService) healed(rec *stagingRecord, disk *nvme.Disk, replaced int, msg string, args ...any) error {
	rec.Major, rec.Minor, rec.Healing = disk.Major, disk.Minor, false
	if err := n.records.put(*rec); err != nil {
		return err
	}
	n.m.staleMountsTotal.Add(float64(replaced))
	n.log.Info(msg, append([]any{"volume_id", rec.VolumeID, "device", disk.DevPath}, args...)...)
	return nil
}

// publishTargetsOf maps the volume's publish targets to whether they are read-only: the
// recorded ones that still exist, and any bind mount of the recorded device or of what is
// mounted at the staging path (a target published before the record knew it).
func (n *nodeService) publishTargetsOf(ctx context.Context, rec *stagingRecord) (map[string]bool, error) {
	out := map[string]bool{}
	for _, path := range rec.publishTargets() {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			delete(rec.Published, path)
		} else {
			out[path] = rec.Published[path]
		}
	}
	devs := []devNum{rec.dev()}
	if t, err := topMount(ctx, rec.StagingPath); err != nil {
		return nil, err
	} else if t != nil && entryDev(t) != rec.dev() {
		devs = append(devs, entryDev(t))
	}
	for _, d := range devs {
		if d == (devNum{}) {
			continue
		}
		entries, err := mount.BySource(ctx, d.major, d.minor)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if _, seen := out[e.Mountpoint]; !seen && e.Mountpoint != filepath.Clean(rec.StagingPath) {
				out[e.Mountpoint] = hasOption(e.Options, "ro") // a read-only bind, not a filesystem gone read-only
			}
		}
	}
	return out, nil
}

// replaceBlockNodes points every publish device node of a block volume at disk. Only a
// node of the volume's previous device is replaced (it holds no data); anything else at a
// target is left alone.
func (n *nodeService) replaceBlockNodes(rec *stagingRecord, disk *nvme.Disk) error {
	replaced := 0
	for _, path := range rec.publishTargets() {
		cur, isBlock, err := blockNodeAt(path)
		switch {
		case errors.Is(err, unix.ENOENT):
			delete(rec.Published, path)
			continue
		case err != nil:
			return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
		case !isBlock || cur == diskDev(disk):
			continue
		case cur != rec.dev():
			n.log.Warn("a block publish target holds another device; left alone", "volume_id", rec.VolumeID, "target", path, "device", fmt.Sprintf("%d:%d", cur.major, cur.minor))
			continue
		}
		if err := replaceBlockNode(path, disk, rec.Published[path]); err != nil {
			return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
		}
		replaced++
	}
	return n.healed(rec, disk, replaced, "healed: block device nodes point at the new disk", "replaced", replaced)
}

func replaceBlockNode(path string, disk *nvme.Disk, readOnly bool) error {
	if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove the stale device node %s: %w", path, err)
	}
	return mount.MakeBlockNode(path, disk.Major, disk.Minor, readOnly)
}

// ensureDir creates a missing publish target directory; a non-directory there is an error.
func ensureDir(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.Mkdir(path, 0o750)
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s exists and is not a directory", path)
	}
	return nil
}
