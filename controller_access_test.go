package main

import (
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

func TestControllerAccessModes(t *testing.T) {
	type mode = csi.VolumeCapability_AccessMode_Mode
	tests := []struct {
		name     string
		vc       *csi.VolumeCapability
		maxNodes int    // 0: refused
		part     string // what the refusal says
	}{
		{"RWO filesystem", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, ""), 1, ""},
		{"RWOP filesystem", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, "ext4"), 1, ""},
		{"single-node multi-writer", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, "xfs"), 1, ""},
		{"single-node read-only", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY, ""), 1, ""},
		{"RWO block", blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER), 1, ""},
		{"RWX block (live migration)", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER), 2, ""},
		{"RWX filesystem", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, ""), 0, "use volumeMode: Block for KubeVirt live migration"},
		{"ROX filesystem", mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, ""), 0, "ReadOnlyMany"},
		{"ROX block", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY), 0, "one node at a time"},
		{"multi-node single writer", blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER), 0, "MULTI_NODE_SINGLE_WRITER is not supported"},
		{"no access mode", blockCap(mode(0)), 0, "not set or unknown"},
		{"unknown fs_type", mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "btrfs"), 0, `fs_type "btrfs" is not supported: use ext4 (the default) or xfs`},
		{"no access type", &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}, 0, "no access type"},
	}
	e := newCtrlEnv(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := checkCapabilities([]*csi.VolumeCapability{rwo, tc.vc})
			if tc.maxNodes == 0 {
				wantCode(t, err, codes.InvalidArgument, "volume capability 2", tc.part)
			} else if err != nil {
				t.Fatal(err)
			}
			if tc.maxNodes > 0 {
				if got, _ := accessLimit(tc.vc.GetAccessMode().GetMode(), tc.vc.GetBlock() != nil); got != tc.maxNodes {
					t.Errorf("publish limit %d, want %d", got, tc.maxNodes)
				}
			}
			// the same verdict through ValidateVolumeCapabilities on a real volume
			e.mustCreate(createReq("pvc-modes", 1<<30))
			resp, err := e.c.ValidateVolumeCapabilities(testCtx(t), &csi.ValidateVolumeCapabilitiesRequest{
				VolumeId: "pvc-modes", VolumeCapabilities: []*csi.VolumeCapability{tc.vc}})
			if err != nil {
				t.Fatal(err)
			}
			if confirmed := resp.GetConfirmed() != nil; confirmed != (tc.maxNodes > 0) {
				t.Errorf("confirmed %v, message %q", confirmed, resp.GetMessage())
			}
			if tc.maxNodes == 0 && resp.GetMessage() == "" {
				t.Error("a refusal without a message")
			}
		})
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
