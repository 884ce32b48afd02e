package main

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
)

// File systems the node formats volumes with; ext4 when the capability names none.
const (
	fsExt4 = "ext4"
	fsXFS  = "xfs"
)

// How many nodes may hold a volume at once.
const (
	maxNodesSingle    = 1
	maxNodesMigration = 2 // raw block RWX: source and target of a live migration
)

// volumeAccess is what one volume capability asks of a volume.
type volumeAccess struct {
	block        bool
	fsType       string   // ext4 or xfs; "" for block
	mountFlags   []string // validated by mount.ParseOptions
	maxNodes     int      // attachment fencing
	readOnly     bool     // the mode only reads: mounted read-only, never checked or replayed
	singleWriter bool     // ReadWriteOncePod: at most one publish target
}

// parseCapability is the one capability rule for controller and node, so neither accepts
// what the other refuses; the error says what to use instead. A volume is on one node at a
// time, except a raw block volume in a KubeVirt live migration (the VM coordinates the
// writers): ext4 and xfs are not cluster file systems, and two kernels mounting one corrupt it.
func parseCapability(vc *csi.VolumeCapability) (volumeAccess, error) {
	if vc == nil {
		return volumeAccess{}, fmt.Errorf("empty capability: give an access mode and block or mount access")
	}
	a := volumeAccess{maxNodes: maxNodesSingle}
	switch mode := vc.GetAccessMode().GetMode(); mode {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER:
		a.singleWriter = true
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		a.readOnly = true
	case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		if vc.GetBlock() == nil {
			return volumeAccess{}, fmt.Errorf("ReadWriteMany (MULTI_NODE_MULTI_WRITER) is refused for filesystem volumes: ext4 and xfs are not cluster file systems and mounting one on two nodes corrupts it; use volumeMode: Block for KubeVirt live migration, or ReadWriteOnce")
		}
		a.maxNodes = maxNodesMigration
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return volumeAccess{}, fmt.Errorf("ReadOnlyMany (MULTI_NODE_READER_ONLY) is not supported: an RDS volume is attached to one node at a time (two only while a raw block volume is live-migrated); use ReadWriteOnce, or ReadWriteMany with volumeMode: Block for KubeVirt live migration")
	case csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER:
		return volumeAccess{}, fmt.Errorf("MULTI_NODE_SINGLE_WRITER is not supported: readers on other nodes would see a file system change under them, which ext4 and xfs do not allow; use ReadWriteOnce, or ReadWriteMany with volumeMode: Block for KubeVirt live migration")
	default:
		return volumeAccess{}, fmt.Errorf("access mode %v is not set or unknown: use ReadWriteOnce (SINGLE_NODE_WRITER), ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) or, for raw block volumes, ReadWriteMany", mode)
	}
	switch {
	case vc.GetBlock() != nil:
		a.block = true
		return a, nil
	case vc.GetMount() == nil:
		return volumeAccess{}, fmt.Errorf("no access type: give block (volumeMode: Block) or mount (volumeMode: Filesystem)")
	}
	a.fsType, a.mountFlags = vc.GetMount().GetFsType(), vc.GetMount().GetMountFlags()
	if a.fsType == "" {
		a.fsType = fsExt4
	}
	if a.fsType != fsExt4 && a.fsType != fsXFS {
		return volumeAccess{}, fmt.Errorf("fs_type %q is not supported: use ext4 (the default) or xfs (set csi.storage.k8s.io/fstype in the StorageClass)", a.fsType)
	}
	if _, err := mount.ParseOptions(a.fsType, a.mountFlags); err != nil {
		return volumeAccess{}, fmt.Errorf("mount options %q: %w (fix mountOptions in the StorageClass or PV)", a.mountFlags, err)
	}
	return a, nil
}

// checkCapabilities applies parseCapability to every capability of a controller request
// (InvalidArgument for any it cannot serve) and returns the smallest size that every
// requested file system can be made on.
func checkCapabilities(caps []*csi.VolumeCapability) (minimum int64, err error) {
	if len(caps) == 0 {
		return 0, status.Error(codes.InvalidArgument, "volume_capabilities are required: give at least one access mode with block or mount access")
	}
	for i, vc := range caps {
		a, err := parseCapability(vc)
		if err != nil {
			return 0, status.Errorf(codes.InvalidArgument, "volume capability %d: %v", i+1, err)
		}
		if a.fsType == fsXFS {
			minimum = max(minimum, xfsMinimumSize)
		}
	}
	return minimum, nil
}

// requestCapability applies parseCapability to the capability of a publish or stage
// request, as an InvalidArgument error.
func requestCapability(vc *csi.VolumeCapability) (volumeAccess, error) {
	if vc == nil {
		return volumeAccess{}, status.Error(codes.InvalidArgument, "volume_capability is missing: give the access type (mount or block) and the access mode")
	}
	a, err := parseCapability(vc)
	if err != nil {
		return volumeAccess{}, status.Errorf(codes.InvalidArgument, "volume capability: %v", err)
	}
	return a, nil
}
