package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// NodeUnstageVolume undoes NodeStageVolume: it refuses while the volume is still
// published (naming the targets), unmounts the staging path, disconnects the volume once
// nothing uses it (nvme verifies in sysfs that it is gone) and only then forgets it. A
// volume staged without a record here (the earlier driver's) is found by its NQN and let
// go of the same way. Idempotent.
func (n *nodeService) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := requireVolumeID(id); err != nil {
		return nil, err
	}
	if err := requirePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	staging := filepath.Clean(req.GetStagingTargetPath())
	rec, ok := n.records.get(id)
	if ok && rec.StagingPath != staging {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is staged at %s, not at %s", id, rec.StagingPath, staging)
	}
	users, err := n.publishUsers(ctx, rec, ok, staging)
	if err != nil {
		return nil, nodeStatus("unstage volume "+id, err)
	}
	if len(users) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s is still published at %s: unpublish it there first (NodeUnpublishVolume); unstaging now would pull the disk from under them",
			id, strings.Join(users, ", "))
	}
	if err := mount.UnmountAll(ctx, staging); err != nil {
		return nil, nodeStatus("unstage volume "+id, err)
	}
	if !ok {
		// Nothing recorded: the volume was staged by the earlier driver, or by this one
		// before its state directory was lost. kubelet's unstage is the authority to let
		// go of it, once nothing uses it.
		subs, err := n.volumeSubsystems(id)
		if err != nil {
			return nil, nodeStatus("unstage volume "+id, err)
		}
		for _, s := range subs {
			if err := n.letGo(ctx, id, s); err != nil {
				return nil, err
			}
		}
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	if n.nqnSharedWith(rec) == "" {
		subs, err := n.att.Subsystems()
		if err != nil {
			return nil, nodeStatus("unstage volume "+id, err)
		}
		for _, s := range subs {
			if s.NQN == rec.NQN {
				if err := n.letGo(ctx, id, s); err != nil {
					return nil, err
				}
			}
		}
	}
	if err := n.records.remove(id); err != nil {
		return nil, nodeStatus("unstage volume "+id, err)
	}
	n.m.volumeNVMeState.DeleteLabelValues(id)
	n.forgetPaths(rec)
	n.heals.Delete(id)
	n.log.Info("unstaged", "volume_id", id, "nqn", rec.NQN)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// publishUsers lists what still uses the staged volume: every mount of the staging
// mount's device other than the staging path itself, and for block volumes every
// recorded publish node that still exists.
func (n *nodeService) publishUsers(ctx context.Context, rec stagingRecord, recorded bool, staging string) ([]string, error) {
	var users []string
	if recorded && rec.Block {
		for _, path := range rec.publishTargets() {
			if _, isBlock, _ := blockNodeAt(path); isBlock {
				users = append(users, path)
			}
		}
		return users, nil
	}
	entries, err := mount.ByMountPoint(ctx, staging)
	if err != nil {
		return nil, err
	}
	var devs []devNum
	for _, e := range entries {
		devs = append(devs, entryDev(e))
	}
	// The recorded device too: publish mounts outlive a staging mount someone removed by
	// hand, and a disconnect under them would hang. Device numbers of an earlier boot
	// may belong to another disk now, so only this boot's count.
	if recorded && rec.BootID == n.bootID && rec.Major != 0 {
		devs = append(devs, rec.dev())
	}
	seen := map[string]bool{staging: true}
	for _, d := range devs {
		mounts, err := mount.BySource(ctx, d.major, d.minor)
		if err != nil {
			return nil, err
		}
		for _, m := range mounts {
			if !seen[m.Mountpoint] {
				seen[m.Mountpoint] = true
				users = append(users, m.Mountpoint)
			}
		}
	}
	return users, nil
}

// letGo disconnects subsystem s of volume id, verified, once nothing uses its disks.
func (n *nodeService) letGo(ctx context.Context, id string, s nvme.Subsystem) error {
	if err := n.refuseIfUsed(ctx, id, s.Disks); err != nil {
		return err
	}
	if err := n.att.Disconnect(ctx, s.NQN); err != nil {
		return nodeStatus("unstage volume "+id+": disconnect "+s.NQN, err)
	}
	n.settleUnowned(s.NQN)
	return nil
}

// nqnSharedWith returns another staged volume using the same NQN, or "": its connection
// must stay.
func (n *nodeService) nqnSharedWith(rec stagingRecord) string {
	for _, o := range n.records.all() {
		if o.VolumeID != rec.VolumeID && o.NQN == rec.NQN {
			return o.VolumeID
		}
	}
	return ""
}

// What counts as "in use" before anything is disconnected: every path that lets go of a
// disk (sweep, unstage) asks diskUsers, which sees mounts of the disk and its partitions,
// bind mounts of its /dev node, device nodes with its number in kubelet's volumeDevices
// directories, loop devices over any of its nodes, dm/md holders, and open descriptors of
// every process the plugin can see. Anything it cannot read counts as in use.

// usersConfig is where the node looks for users of a disk.
func (n *nodeService) usersConfig() mount.UsersConfig {
	dirs := []string{filepath.Join(n.cfg.KubeletDir, "plugins", "kubernetes.io", "csi", "volumeDevices")}
	if pods, err := filepath.Glob(filepath.Join(n.cfg.KubeletDir, "pods", "*", "volumeDevices")); err == nil {
		dirs = append(dirs, pods...)
	}
	return mount.UsersConfig{SysfsRoot: n.cfg.SysfsRoot, ProcRoot: n.cfg.ProcRoot, NodeDirs: dirs, SkipPID: os.Getpid()}
}

// diskUsers lists what uses disk; an error means it could not be told.
func (n *nodeService) diskUsers(ctx context.Context, d nvme.Disk) ([]string, error) {
	return mount.Users(ctx, mount.Device{Name: d.Name, Major: d.Major, Minor: d.Minor}, n.usersConfig())
}

// diskInUse is diskUsers for the sweep: doubt counts as in use, and either is logged.
func (n *nodeService) diskInUse(ctx context.Context, d nvme.Disk) bool {
	users, err := n.diskUsers(ctx, d)
	switch {
	case err != nil:
		n.log.Warn("cannot tell whether a disk is in use, so it counts as in use", "disk", d.Name, "nqn", d.NQN, "err", err)
		return true
	case len(users) > 0:
		n.log.Info("disk in use", "disk", d.Name, "nqn", d.NQN, "users", users)
		return true
	}
	return false
}

// refuseIfUsed fails with FailedPrecondition, naming the users, when anything uses one
// of the subsystem's disks; an unknown answer fails too.
func (n *nodeService) refuseIfUsed(ctx context.Context, id string, disks []nvme.Disk) error {
	for _, d := range disks {
		users, err := n.diskUsers(ctx, d)
		if err != nil {
			return status.Errorf(codes.Unavailable, "volume %s: cannot tell whether disk %s is still in use, so it stays connected (retried): %v", id, d.Name, err)
		}
		if len(users) > 0 {
			return status.Errorf(codes.FailedPrecondition, "volume %s is still in use on this node (%s), so it stays connected: stop what uses it, then retry",
				id, strings.Join(users, "; "))
		}
	}
	return nil
}

// volumeSubsystems returns the managed subsystems of a volume this node has no record
// of (staged by the earlier driver, or by this one before its state directory was lost):
// those whose NQN is the volume ID (RouterOS before 7.21) or ends in ":<volume ID>".
func (n *nodeService) volumeSubsystems(id string) ([]nvme.Subsystem, error) {
	subs, err := n.att.Subsystems()
	if err != nil {
		return nil, fmt.Errorf("list NVMe subsystems: %w", err)
	}
	var out []nvme.Subsystem
	for _, s := range subs {
		if s.Managed && (s.NQN == id || strings.HasSuffix(s.NQN, ":"+id)) {
			out = append(out, s)
		}
	}
	return out, nil
}
