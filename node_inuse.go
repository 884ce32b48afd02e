package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

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
