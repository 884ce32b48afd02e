package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// healPlan says what to do about a volume.
type healPlan struct {
	reconnect bool // connect again before anything else
	// reconnectPaths are paths to connect again beside the live ones: nothing else of
	// the volume (its other paths, its mounts) is touched.
	reconnectPaths []string
	replace        bool   // replace the stale staging mount and publish mounts (or block nodes)
	reason         string // why, for logs and volume health
}

// planHeal decides, from observations only, whether a staged volume needs healing.
// The rules keep the node from acting on stale notes: nothing is done for a record of an
// earlier boot (kubelet stages those again), and a lost volume is reconnected only when
// something still uses it (its mounts or publish nodes) or a caller asks for it.
func planHeal(rec stagingRecord, f stagedFacts) healPlan {
	if !f.currentBoot {
		return healPlan{reason: "staged before the node last booted; waiting for kubelet to stage it again"}
	}
	inUse := rec.Healing || (rec.Block && len(rec.Published) > 0) || (!rec.Block && f.staging != nil)
	if f.lost {
		if !inUse && !f.demand {
			return healPlan{reason: "not connected and not in use"}
		}
		return healPlan{reconnect: true, replace: inUse, reason: "the NVMe/TCP controller was lost; reconnecting"}
	}
	if f.disk == nil {
		return healPlan{reason: "the volume's disk is not resolvable yet"}
	}
	p := planMounts(rec, f)
	if !p.reconnect && !p.replace && !rec.Healing {
		p.reconnectPaths = f.missingPaths
	}
	return p
}

// planMounts decides, for a volume whose disk resolves, whether its mounts or device
// nodes are stale.
func planMounts(rec stagingRecord, f stagedFacts) healPlan {
	disk := diskDev(f.disk)
	switch {
	case rec.Healing:
		return healPlan{replace: true, reason: "finishing an interrupted heal"}
	case f.stagingOK && !rec.Block:
	case rec.Block:
		if f.staleNodes {
			return healPlan{replace: true, reason: "a publish device node points at the volume's previous device"}
		}
	case f.staging == nil:
	case entryDev(f.staging) != disk && entryDev(f.staging) == rec.dev():
		return healPlan{replace: true, reason: fmt.Sprintf("the staging mount is on the volume's previous device %d:%d, its disk is now %s (%d:%d)",
			f.staging.Major, f.staging.Minor, f.disk.Name, disk.major, disk.minor)}
	case entryDev(f.staging) != disk:
		return healPlan{reason: fmt.Sprintf("the staging path has device %d:%d mounted, which is not this volume's; left alone", f.staging.Major, f.staging.Minor)}
	case mountReadOnly(f.staging) && !rec.ReadOnly:
		return healPlan{replace: true, reason: "the filesystem went read-only after I/O errors; remounting it after a journal replay"}
	}
	return healPlan{}
}

// publishTarget is a publish target to restore after replacing a stale mount.
type publishTarget struct {
	path     string
	readOnly bool
}

// replaceMounts replaces a filesystem volume's stale staging mount, and every publish
// bind mount of it, by fresh mounts of disk at the same paths. The order protects the
// data: first prove the new disk holds the volume's filesystem (nothing is touched
// otherwise), then unmount every stale mount (the old filesystem instance is gone before
// a new one exists, so two never write one volume), then check and replay the journal,
// mount, and bind again. A filesystem that went read-only is thus only ever made
// writable again by a fresh mount after a successful log replay. rec.Healing is on disk
// while mounts are missing, so an interruption is finished later. The caller holds the
// volume lock.
func (n *nodeService) replaceMounts(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, why string) error {
	p, err := n.fs.probe(ctx, disk.DevPath)
	if err != nil {
		return fmt.Errorf("heal volume %s: cannot read the reconnected disk %s, so the stale mounts stay: %w", rec.VolumeID, disk.DevPath, err)
	}
	if fsFamily(p.Kind) != rec.FSType || (p.Kind != mount.KindXFS && p.Kind != mount.KindExt4 && p.Kind != mount.KindExt3 && p.Kind != mount.KindExt2) {
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
	for _, t := range targets {
		if err := mount.UnmountAll(ctx, t.path); err != nil {
			return fmt.Errorf("heal volume %s: unmount the stale publish mount: %w", rec.VolumeID, err)
		}
	}
	if err := mount.UnmountAll(ctx, rec.StagingPath); err != nil {
		return fmt.Errorf("heal volume %s: unmount the stale staging mount: %w", rec.VolumeID, err)
	}
	if err := os.MkdirAll(rec.StagingPath, 0o750); err != nil {
		return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
	}
	if err := n.prepareProbed(ctx, rec, disk, p, false); err != nil {
		return err
	}
	if err := n.mountDisk(ctx, rec, disk); err != nil {
		return err
	}
	if rec.Published == nil {
		rec.Published = map[string]bool{}
	}
	for _, t := range targets {
		if err := ensureDir(t.path); err != nil {
			return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
		}
		if err := n.storm.Bind(ctx, rec.StagingPath, t.path, t.readOnly); err != nil {
			return fmt.Errorf("heal volume %s: bind the publish target again: %w", rec.VolumeID, err)
		}
		rec.Published[t.path] = t.readOnly
	}
	rec.Major, rec.Minor, rec.Healing = disk.Major, disk.Minor, false
	if err := n.records.put(*rec); err != nil {
		return err
	}
	n.m.staleMountsTotal.Add(float64(len(targets) + 1))
	n.log.Info("healed: stale mounts replaced", "volume_id", rec.VolumeID, "device", disk.DevPath, "publish_targets", len(targets))
	return nil
}

// publishTargetsOf lists the volume's publish targets: the recorded ones that still
// exist, and any bind mount of the volume's recorded device or of what is mounted at the
// staging path (a target published before the record knew it).
func (n *nodeService) publishTargetsOf(ctx context.Context, rec *stagingRecord) ([]publishTarget, error) {
	seen := map[string]bool{}
	var out []publishTarget
	for _, path := range rec.publishTargets() {
		if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
			delete(rec.Published, path)
			continue
		}
		seen[path] = true
		out = append(out, publishTarget{path, rec.Published[path]})
	}
	devs := []devNum{rec.dev()}
	if entries, err := mount.ByMountPoint(ctx, rec.StagingPath); err != nil {
		return nil, err
	} else if t := top(entries); t != nil && entryDev(t) != rec.dev() {
		devs = append(devs, entryDev(t))
	}
	staging := filepath.Clean(rec.StagingPath)
	for _, d := range devs {
		if d.major == 0 && d.minor == 0 {
			continue
		}
		entries, err := mount.BySource(ctx, d.major, d.minor)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if e.Mountpoint == staging || seen[e.Mountpoint] {
				continue
			}
			seen[e.Mountpoint] = true
			out = append(out, publishTarget{e.Mountpoint, perMountReadOnly(e)})
		}
	}
	return out, nil
}

// perMountReadOnly reports a read-only bind (not a filesystem that went read-only).
func perMountReadOnly(e *mount.Entry) bool { return hasOption(e.Options, "ro") }

// replaceBlockNodes points every publish device node of a block volume at disk. A node
// is replaced only when it is the volume's previous device: it holds no data, and
// anything else at a target is left alone.
func (n *nodeService) replaceBlockNodes(rec *stagingRecord, disk *nvme.Disk) error {
	replaced := 0
	for _, path := range rec.publishTargets() {
		cur, isBlock, err := blockNodeAt(path)
		if errors.Is(err, unix.ENOENT) {
			delete(rec.Published, path)
			continue
		}
		if err != nil {
			return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
		}
		if !isBlock || cur == diskDev(disk) {
			continue
		}
		if cur != rec.dev() {
			n.log.Warn("a block publish target holds another device; left alone", "volume_id", rec.VolumeID, "target", path, "device", fmt.Sprintf("%d:%d", cur.major, cur.minor))
			continue
		}
		if err := unix.Unlink(path); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("heal volume %s: remove the stale device node %s: %w", rec.VolumeID, path, err)
		}
		if err := mount.MakeBlockNode(path, disk.Major, disk.Minor, rec.Published[path]); err != nil {
			return fmt.Errorf("heal volume %s: %w", rec.VolumeID, err)
		}
		replaced++
	}
	rec.Major, rec.Minor, rec.Healing = disk.Major, disk.Minor, false
	if err := n.records.put(*rec); err != nil {
		return err
	}
	n.m.staleMountsTotal.Add(float64(replaced))
	n.log.Info("healed: block device nodes point at the new disk", "volume_id", rec.VolumeID, "device", disk.DevPath, "replaced", replaced)
	return nil
}

// ensureDir creates a publish target directory if it is missing; anything else there
// that is not a directory is an error.
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
