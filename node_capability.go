package main

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
)

// defaultFSType is used when a filesystem volume's capability names none, as Kubernetes
// does for CSI volumes without fsType.
const defaultFSType = "ext4"

// volumeMode is what a volume capability asks of the node.
type volumeMode struct {
	block      bool
	fsType     string   // ext4 or xfs; "" for block
	mountFlags []string // validated by mount.ParseOptions
	// readOnly: the access mode only reads, so the filesystem is mounted read-only and
	// never checked or replayed (another node may read it at the same time).
	readOnly bool
	// singleWriter: SINGLE_NODE_SINGLE_WRITER (ReadWriteOncePod), at most one publish target.
	singleWriter bool
}

// parseCapability validates a volume capability. Filesystem volumes written from more
// than one node are refused: two kernels mounting one ext4 or xfs corrupt it. Raw block
// may be multi-node (KubeVirt live migration); the VM coordinates the writers.
func parseCapability(c *csi.VolumeCapability) (volumeMode, error) {
	if c == nil {
		return volumeMode{}, status.Error(codes.InvalidArgument, "volume_capability is missing: give the access type (mount or block) and the access mode")
	}
	mode := c.GetAccessMode().GetMode()
	if mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return volumeMode{}, status.Error(codes.InvalidArgument, "volume_capability has no access mode: give one, e.g. SINGLE_NODE_WRITER (ReadWriteOnce)")
	}
	readOnly := mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY || mode == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	singleWriter := mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	switch {
	case c.GetBlock() != nil:
		return volumeMode{block: true, readOnly: readOnly, singleWriter: singleWriter}, nil
	case c.GetMount() != nil:
	default:
		return volumeMode{}, status.Error(codes.InvalidArgument, "volume_capability has neither a mount nor a block access type")
	}
	if mode == csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER || mode == csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER {
		return volumeMode{}, status.Errorf(codes.InvalidArgument,
			"access mode %s is refused for filesystem volumes: ext4 and xfs mounted by two nodes corrupt each other; use ReadWriteOnce, or volumeMode: Block for a VM disk that migrates", mode)
	}
	m := c.GetMount()
	fsType := m.GetFsType()
	if fsType == "" {
		fsType = defaultFSType
	}
	if fsType != "ext4" && fsType != "xfs" {
		return volumeMode{}, status.Errorf(codes.InvalidArgument, "fsType %q is not supported: use ext4 or xfs (set csi.storage.k8s.io/fstype in the StorageClass)", fsType)
	}
	if _, err := mount.ParseOptions(fsType, m.GetMountFlags()); err != nil {
		return volumeMode{}, status.Errorf(codes.InvalidArgument, "mount options %q: %v (fix mountOptions in the StorageClass or PV)", m.GetMountFlags(), err)
	}
	return volumeMode{fsType: fsType, mountFlags: m.GetMountFlags(), readOnly: readOnly, singleWriter: singleWriter}, nil
}
