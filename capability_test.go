package main

import (
	"slices"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func mountCap(mode csi.VolumeCapability_AccessMode_Mode, fsType string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType, MountFlags: flags}}}
}

func blockCap(mode csi.VolumeCapability_AccessMode_Mode) *csi.VolumeCapability {
	return &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}}
}

// capabilityCases is the one table both services are tested against: what parseCapability
// makes of each capability, or (maxNodes 0) the part of its refusal.
var capabilityCases = []struct {
	name string
	vc   *csi.VolumeCapability
	want volumeAccess // maxNodes 0: refused
	part string       // what the refusal says
}{
	{"RWO filesystem, default ext4", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, ""), volumeAccess{fsType: "ext4", maxNodes: 1}, ""},
	{"RWOP filesystem", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, "ext4"), volumeAccess{fsType: "ext4", maxNodes: 1, singleWriter: true}, ""},
	{"single-node multi-writer xfs", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, "xfs"), volumeAccess{fsType: "xfs", maxNodes: 1}, ""},
	{"xfs with options", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs", "noatime", "discard"), volumeAccess{fsType: "xfs", maxNodes: 1, mountFlags: []string{"noatime", "discard"}}, ""},
	{"single-node read-only", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, ""), volumeAccess{fsType: "ext4", maxNodes: 1, readOnly: true}, ""},
	{"RWO block", blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER), volumeAccess{block: true, maxNodes: 1}, ""},
	{"block read-only", blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY), volumeAccess{block: true, maxNodes: 1, readOnly: true}, ""},
	{"RWX block (live migration)", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), volumeAccess{block: true, maxNodes: 2}, ""},
	{"RWX filesystem", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, ""), volumeAccess{}, "use volumeMode: Block for KubeVirt live migration"},
	{"ROX filesystem", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, ""), volumeAccess{}, "ReadOnlyMany"},
	{"ROX block", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY), volumeAccess{}, "one node at a time"},
	{"multi-node single writer", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER), volumeAccess{}, "MULTI_NODE_SINGLE_WRITER is not supported"},
	{"filesystem multi-node single writer", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER, "ext4"), volumeAccess{}, "MULTI_NODE_SINGLE_WRITER is not supported"},
	{"no access mode", blockCap(csi.VolumeCapability_AccessMode_UNKNOWN), volumeAccess{}, "not set or unknown"},
	{"unknown fs_type", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "btrfs"), volumeAccess{}, `fs_type "btrfs" is not supported: use ext4 (the default) or xfs`},
	{"option smuggling", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4", "noatime,errors=panic"), volumeAccess{}, "fix mountOptions"},
	{"unsafe option", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "ext4", "nobarrier"), volumeAccess{}, "nobarrier"},
	{"no access type", &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}, volumeAccess{}, "no access type"},
	{"empty", nil, volumeAccess{}, "empty capability"},
}

func TestParseCapability(t *testing.T) {
	for _, tc := range capabilityCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCapability(tc.vc)
			if tc.want.maxNodes == 0 {
				if err == nil || !contains(err.Error(), tc.part) {
					t.Fatalf("err %v, want a refusal saying %q", err, tc.part)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.block != tc.want.block || got.fsType != tc.want.fsType || got.maxNodes != tc.want.maxNodes || got.readOnly != tc.want.readOnly ||
				got.singleWriter != tc.want.singleWriter || !slices.Equal(got.mountFlags, tc.want.mountFlags) {
				t.Fatalf("access %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestControllerCapabilities: CreateVolume's check and ValidateVolumeCapabilities give
// parseCapability's verdict.
func TestControllerCapabilities(t *testing.T) {
	e := newCtrlEnv(t)
	e.mustCreate(createReq("pvc-modes", 1<<30))
	for _, tc := range capabilityCases {
		if tc.vc == nil {
			continue // a nil entry in a list is a malformed request, not a capability
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkCapabilities([]*csi.VolumeCapability{rwo, tc.vc})
			if tc.want.maxNodes == 0 {
				wantCode(t, err, codes.InvalidArgument, "volume capability 2", tc.part)
			} else if err != nil {
				t.Fatal(err)
			}
			resp, err := e.c.ValidateVolumeCapabilities(testCtx(t), &csi.ValidateVolumeCapabilitiesRequest{
				VolumeId: "pvc-modes", VolumeCapabilities: []*csi.VolumeCapability{tc.vc}})
			if err != nil {
				t.Fatal(err)
			}
			if confirmed := resp.GetConfirmed() != nil; confirmed != (tc.want.maxNodes > 0) {
				t.Errorf("confirmed %v, message %q", confirmed, resp.GetMessage())
			}
			if tc.want.maxNodes == 0 && !contains(resp.GetMessage(), tc.part) {
				t.Errorf("refusal message %q, want it to say %q", resp.GetMessage(), tc.part)
			}
		})
	}
}

// TestNodeRefusesWhatTheControllerRefuses: NodeStageVolume and NodePublishVolume refuse
// every capability the controller refuses, before touching anything, with the same reason.
func TestNodeRefusesWhatTheControllerRefuses(t *testing.T) {
	e := newLoopEnv(t)
	v := e.createVolume("caps", "16M", rwo)
	for _, tc := range capabilityCases {
		if tc.want.maxNodes != 0 || tc.vc == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.n.NodeStageVolume(nodeCtx(t), &csi.NodeStageVolumeRequest{
				VolumeId: v.id, StagingTargetPath: v.staging, VolumeCapability: tc.vc, VolumeContext: v.vc})
			wantCode(t, err, codes.InvalidArgument, tc.part)
			_, err = e.n.NodePublishVolume(nodeCtx(t), &csi.NodePublishVolumeRequest{
				VolumeId: v.id, StagingTargetPath: v.staging, TargetPath: e.target("caps"), VolumeCapability: tc.vc, VolumeContext: v.vc})
			wantCode(t, err, codes.InvalidArgument, tc.part)
		})
	}
	if got := attachedDevices(t, v); len(got) != 0 {
		t.Fatalf("a refused stage attached %v", got)
	}
}
func TestControllerValidateVolumeCapabilities(t *testing.T) {
	e := newCtrlEnv(t)
	e.mustCreate(createReq("pvc-small", 100<<20))
	xfs := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs")
	tests := []struct {
		name      string
		req       *csi.ValidateVolumeCapabilitiesRequest
		code      codes.Code
		confirmed bool
		part      string
	}{
		{"ext4 fits", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-small", VolumeCapabilities: []*csi.VolumeCapability{rwo}}, codes.OK, true, ""},
		{"xfs needs 300 MiB", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-small", VolumeCapabilities: []*csi.VolumeCapability{xfs}}, codes.OK, false, "smaller than xfs allows"},
		{"bad parameters", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-small", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			Parameters: map[string]string{"queueSize": "1"}}, codes.OK, false, "queueSize"},
		{"mutable parameters", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-small", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			MutableParameters: map[string]string{"iops": "1"}}, codes.OK, false, "mutable parameters"},
		{"absent volume", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-absent", VolumeCapabilities: []*csi.VolumeCapability{rwo}}, codes.NotFound, false, ""},
		{"no capabilities", &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "pvc-small"}, codes.InvalidArgument, false, ""},
		{"no volume", &csi.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: []*csi.VolumeCapability{rwo}}, codes.InvalidArgument, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.c.ValidateVolumeCapabilities(testCtx(t), tc.req)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (resp.GetConfirmed() != nil) != tc.confirmed || tc.part != "" && !contains(resp.GetMessage(), tc.part) {
				t.Errorf("confirmed %v message %q; want confirmed %v and %q", resp.GetConfirmed() != nil, resp.GetMessage(), tc.confirmed, tc.part)
			}
		})
	}
}
