package main

import (
	"fmt"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// File systems the node formats volumes with; ext4 when the capability names none.
const (
	fsExt4 = "ext4"
	fsXFS  = "xfs"
)

// capabilityUse is what a set of volume capabilities asks of a volume's size.
type capabilityUse struct {
	minimum int64 // the smallest size every requested file system can be made on
}

// checkCapabilities validates every capability and returns what they need. Any one that
// rds-csi cannot serve makes the request InvalidArgument, with the reason.
func checkCapabilities(caps []*csi.VolumeCapability) (capabilityUse, error) {
	if len(caps) == 0 {
		return capabilityUse{}, status.Error(codes.InvalidArgument, "volume_capabilities are required: give at least one access mode with block or mount access")
	}
	var use capabilityUse
	for i, vc := range caps {
		fsType, err := checkCapability(vc)
		if err != nil {
			return capabilityUse{}, status.Errorf(codes.InvalidArgument, "volume capability %d: %v", i+1, err)
		}
		if fsType == fsXFS {
			use.minimum = max(use.minimum, xfsMinimumSize)
		}
	}
	return use, nil
}

// checkCapability validates one capability and returns its file system ("" for raw
// block). The error says what to use instead.
func checkCapability(vc *csi.VolumeCapability) (string, error) {
	if vc == nil {
		return "", fmt.Errorf("empty capability: give an access mode and block or mount access")
	}
	fsType := ""
	switch {
	case vc.GetBlock() != nil:
	case vc.GetMount() != nil:
		fsType = vc.GetMount().GetFsType()
		if fsType == "" {
			fsType = fsExt4
		}
		if fsType != fsExt4 && fsType != fsXFS {
			return "", fmt.Errorf("fs_type %q is not supported: use ext4 (the default) or xfs", fsType)
		}
	default:
		return "", fmt.Errorf("no access type: give block (volumeMode: Block) or mount (volumeMode: Filesystem)")
	}
	if _, err := accessLimit(vc.GetAccessMode().GetMode(), fsType == ""); err != nil {
		return "", err
	}
	return fsType, nil
}

// accessLimit returns how many nodes a volume may be published to at once in the given
// access mode, or why the mode is refused. Multi-node write exists only for raw block
// volumes, for KubeVirt live migration (source and target node); ext4 and xfs are not
// cluster file systems, and mounting one on two nodes corrupts it.
func accessLimit(mode csi.VolumeCapability_AccessMode_Mode, block bool) (int, error) {
	switch mode {
	case csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER,
		csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:
		return maxNodesSingle, nil
	case csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER:
		if block {
			return maxNodesMigration, nil
		}
		return 0, fmt.Errorf("ReadWriteMany (MULTI_NODE_MULTI_WRITER) is refused for filesystem volumes: ext4 and xfs are not cluster file systems and mounting one on two nodes corrupts it; use volumeMode: Block for KubeVirt live migration, or ReadWriteOnce")
	case csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY:
		return 0, fmt.Errorf("ReadOnlyMany (MULTI_NODE_READER_ONLY) is not supported: an RDS volume is attached to one node at a time (two only while a raw block volume is live-migrated); use ReadWriteOnce, or ReadWriteMany with volumeMode: Block for KubeVirt live migration")
	case csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER:
		return 0, fmt.Errorf("MULTI_NODE_SINGLE_WRITER is not supported: readers on other nodes would see a file system change under them, which ext4 and xfs do not allow; use ReadWriteOnce, or ReadWriteMany with volumeMode: Block for KubeVirt live migration")
	}
	return 0, fmt.Errorf("access mode %v is not set or unknown: use ReadWriteOnce (SINGLE_NODE_WRITER), ReadWriteOncePod (SINGLE_NODE_SINGLE_WRITER) or, for raw block volumes, ReadWriteMany", mode)
}
