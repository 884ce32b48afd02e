package main

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func mountCapability(fsType string, mode csi.VolumeCapability_AccessMode_Mode, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func blockCapability(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

func TestNodeCapability(t *testing.T) {
	const (
		rwo = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
		rox = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
		rwx = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	)
	for _, tc := range []struct {
		name string
		cap  *csi.VolumeCapability
		code codes.Code
		want volumeMode
	}{
		{"default ext4", mountCapability("", rwo), codes.OK, volumeMode{fsType: "ext4"}},
		{"xfs with options", mountCapability("xfs", rwo, "noatime", "discard"), codes.OK, volumeMode{fsType: "xfs", mountFlags: []string{"noatime", "discard"}}},
		{"read-only many", mountCapability("ext4", rox), codes.OK, volumeMode{fsType: "ext4", readOnly: true}},
		{"block migration", blockCapability(rwx), codes.OK, volumeMode{block: true}},
		{"block read-only", blockCapability(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY), codes.OK, volumeMode{block: true, readOnly: true}},
		{"filesystem RWX", mountCapability("ext4", rwx), codes.InvalidArgument, volumeMode{}},
		{"filesystem multi single writer", mountCapability("ext4", csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER), codes.InvalidArgument, volumeMode{}},
		{"btrfs", mountCapability("btrfs", rwo), codes.InvalidArgument, volumeMode{}},
		{"option smuggling", mountCapability("ext4", rwo, "noatime,errors=panic"), codes.InvalidArgument, volumeMode{}},
		{"unsafe option", mountCapability("ext4", rwo, "nobarrier"), codes.InvalidArgument, volumeMode{}},
		{"missing", nil, codes.InvalidArgument, volumeMode{}},
		{"no access mode", &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}, codes.InvalidArgument, volumeMode{}},
		{"no access type", &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: rwo}}, codes.InvalidArgument, volumeMode{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCapability(tc.cap)
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if got.block != tc.want.block || got.fsType != tc.want.fsType || got.readOnly != tc.want.readOnly || len(got.mountFlags) != len(tc.want.mountFlags) {
				t.Fatalf("mode %+v, want %+v", got, tc.want)
			}
		})
	}
}
