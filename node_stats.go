package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// NodeGetVolumeStats reports capacity and inodes of a filesystem volume (statfs) or the
// size of a block volume. It also looks at the volume's health and wakes the healing
// watcher when something is wrong.
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
	subs, err := n.volumeSubsystems(id)
	if err != nil || len(subs) == 0 {
		return nil, false
	}
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return nil, false
	}
	var mounted *mount.Entry
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		entries, err := mount.ByMountPoint(ctx, path)
		if err != nil {
			return nil, false
		}
		mounted = top(entries)
	}
	for _, s := range subs {
		for _, d := range s.Disks {
			switch {
			case st.Mode&unix.S_IFMT == unix.S_IFBLK && unix.Major(st.Rdev) == d.Major && unix.Minor(st.Rdev) == d.Minor:
				return blockStats(d.SizeBytes), true
			case mounted != nil && uint32(mounted.Major) == d.Major && uint32(mounted.Minor) == d.Minor:
				r, err := filesystemStats(ctx, id, path)
				return r, err == nil
			}
		}
	}
	return nil, false
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
// volume's record and the cleaned path: InvalidArgument for missing fields, NotFound for
// a volume not staged here or a path that is not the volume's.
func (n *nodeService) stagedAt(ctx context.Context, id, path string) (stagingRecord, string, error) {
	if err := requireVolumeID(id); err != nil {
		return stagingRecord{}, "", err
	}
	if path == "" {
		return stagingRecord{}, "", status.Error(codes.InvalidArgument, "volume_path is missing")
	}
	rec, ok := n.records.get(id)
	if !ok {
		return stagingRecord{}, "", status.Errorf(codes.NotFound, "volume %s is not staged on this node", id)
	}
	path, err := n.volumePath(ctx, rec, path)
	return rec, path, err
}

// volumePath checks that path is where the volume is staged or published on this node,
// and answers NotFound otherwise (as the CSI spec asks).
func (n *nodeService) volumePath(ctx context.Context, rec stagingRecord, path string) (string, error) {
	notFound := status.Errorf(codes.NotFound, "volume %s is neither staged nor published at %q on this node", rec.VolumeID, path)
	if !filepath.IsAbs(path) {
		return "", notFound
	}
	path = filepath.Clean(path)
	if _, err := os.Lstat(path); errors.Is(err, os.ErrNotExist) {
		return "", notFound
	} else if err != nil {
		return "", nodeStatus("volume path "+path, err)
	}
	if _, published := rec.Published[path]; published || path == rec.StagingPath {
		return path, nil
	}
	if rec.Block {
		// kubelet asks about its own copy of the device node
		// (…/volumeDevices/<pv>/dev/<pod-uid>, a bind mount of our publish target): any block
		// device node with the volume's major:minor is the volume.
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK &&
			(devNum{unix.Major(st.Rdev), unix.Minor(st.Rdev)}) == rec.dev() {
			return path, nil
		}
		return "", notFound
	}
	entries, err := mount.ByMountPoint(ctx, path)
	if err != nil {
		return "", nodeStatus("volume path "+path, err)
	}
	if t := top(entries); t != nil && entryDev(t) == rec.dev() {
		return path, nil
	}
	return "", notFound
}

// expandWait bounds how long NodeExpandVolume waits for the disk to show the size the
// controller gave it, after the rescan.
const expandWait = 10 * time.Second

// NodeExpandVolume makes the node see a volume the controller grew: it rescans the
// namespace, waits for the new size, then grows an ext4 or xfs filesystem online. A block
// volume only needs the rescan. It returns the disk's size.
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
	if disk, err = n.waitSize(ctx, rec, disk, want); err != nil {
		return nil, err
	}
	block := rec.Block || req.GetVolumeCapability().GetBlock() != nil
	if !block {
		if err := n.fs.grow(ctx, disk.DevPath, rec.StagingPath, rec.FSType); err != nil {
			return nil, nodeStatus("expand volume "+id+": grow the filesystem", err)
		}
		n.log.Info("filesystem grown", "volume_id", id, "device", disk.DevPath, "size", disk.SizeBytes)
	}
	return &csi.NodeExpandVolumeResponse{CapacityBytes: disk.SizeBytes}, nil
}

// waitSize waits (bounded) until the disk shows at least want bytes: the kernel applies
// a rescan asynchronously.
func (n *nodeService) waitSize(ctx context.Context, rec stagingRecord, disk *nvme.Disk, want int64) (*nvme.Disk, error) {
	deadline := time.NewTimer(expandWait)
	defer deadline.Stop()
	for disk.SizeBytes < want {
		select {
		case <-ctx.Done():
			return nil, status.Errorf(codes.DeadlineExceeded, "expand volume %s: the disk shows %d bytes, not the %d requested, when the call's deadline passed", rec.VolumeID, disk.SizeBytes, want)
		case <-deadline.C:
			return nil, status.Errorf(codes.Unavailable,
				"expand volume %s: after a rescan the disk still shows %d bytes, less than the %d requested; the RDS has not grown the volume yet (ControllerExpandVolume must succeed first); retried automatically",
				rec.VolumeID, disk.SizeBytes, want)
		case <-time.After(100 * time.Millisecond):
		}
		d, err := n.att.Resolve(rec.NQN, rec.NSID)
		if err != nil {
			return nil, nodeStatus("expand volume "+rec.VolumeID, err)
		}
		disk = d
	}
	return disk, nil
}
