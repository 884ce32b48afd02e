package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/routeros/sim"
)

func TestControllerCreateExactSize(t *testing.T) {
	tests := []struct {
		name      string
		required  int64
		limit     int64
		caps      []*csi.VolumeCapability
		wantSize  int64
		wantInCmd string
	}{
		{"1.5 GiB is 1536M, never 1G", 3 << 29, 0, nil, 1610612736, "file-size=1536M"},
		{"no size gives 1 GiB", 0, 0, nil, 1 << 30, "file-size=1G"},
		{"a byte over a MiB rounds up", 1<<20 + 1, 0, nil, 2 << 20, "file-size=2M"},
		{"xfs gets at least 300 MiB", 100 << 20, 0, []*csi.VolumeCapability{mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs")}, 300 << 20, "file-size=300M"},
		{"ext4 may be small", 16 << 20, 0, nil, 16 << 20, "file-size=16M"},
		{"no size but a small limit", 0, 64 << 20, nil, 64 << 20, "file-size=64M"},
	}
	e := newCtrlEnv(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.sim.ResetCommands()
			req := createReq("pvc-size-"+string(rune('a'+i)), tc.required, tc.caps...)
			req.CapacityRange.LimitBytes = tc.limit
			vol := e.mustCreate(req)
			if vol.CapacityBytes != tc.wantSize {
				t.Errorf("response capacity %d, want %d", vol.CapacityBytes, tc.wantSize)
			}
			if d := e.disk(vol.VolumeId); d == nil || d.Size != tc.wantSize {
				t.Errorf("the RDS holds %+v, want size %d", d, tc.wantSize)
			}
			if !slices.ContainsFunc(e.sim.Commands(), func(c string) bool { return strings.Contains(c, tc.wantInCmd) }) {
				t.Errorf("no command with %q in %q", tc.wantInCmd, e.sim.Commands())
			}
		})
	}
}

func TestControllerCreateRefusals(t *testing.T) {
	e := newCtrlEnv(t)
	xfs := mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, "xfs")
	tests := []struct {
		name  string
		req   *csi.CreateVolumeRequest
		code  codes.Code
		parts []string
	}{
		{"no name", &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{rwo}}, codes.InvalidArgument, []string{"name is required"}},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "pvc-x"}, codes.InvalidArgument, []string{"volume_capabilities are required"}},
		{"limit below the xfs minimum", &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{xfs},
			CapacityRange: &csi.CapacityRange{LimitBytes: 200 << 20}}, codes.OutOfRange, []string{"300 MiB", "xfs"}},
		{"limit below the rounded size", &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 1<<20 + 1, LimitBytes: 1<<20 + 10}}, codes.OutOfRange, []string{"whole MiB"}},
		{"required above limit", &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			CapacityRange: &csi.CapacityRange{RequiredBytes: 2 << 30, LimitBytes: 1 << 30}}, codes.InvalidArgument, []string{"at most 1 GiB"}},
		{"snapshot source", &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "s"}}}},
			codes.NotFound, []string{"snapshot s does not exist"}},
		{"clone source", &csi.CreateVolumeRequest{Name: "pvc-x", VolumeCapabilities: []*csi.VolumeCapability{rwo},
			VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: "pvc-y"}}}},
			codes.NotFound, []string{"volume pvc-y does not exist"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.CreateVolume(testCtx(t), tc.req)
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
	if files := e.volumeFiles(); len(files) != 0 {
		t.Errorf("refused requests left files: %v", files)
	}
}

func TestControllerCreateIdempotent(t *testing.T) {
	e := newCtrlEnv(t)
	first := e.mustCreate(createReq("pvc-idem", 3<<29))
	tests := []struct {
		name  string
		req   func() *csi.CreateVolumeRequest
		code  codes.Code
		parts []string
	}{
		{"same request", func() *csi.CreateVolumeRequest { return createReq("pvc-idem", 3<<29) }, codes.OK, nil},
		{"smaller request is satisfied", func() *csi.CreateVolumeRequest { return createReq("pvc-idem", 1<<30) }, codes.OK, nil},
		{"larger request", func() *csi.CreateVolumeRequest { return createReq("pvc-idem", 2<<30) }, codes.AlreadyExists, []string{"1.5 GiB", "1610612736"}},
		{"limit below the size", func() *csi.CreateVolumeRequest {
			r := createReq("pvc-idem", 1<<30)
			r.CapacityRange.LimitBytes = 1 << 30
			return r
		}, codes.AlreadyExists, []string{"size"}},
		{"other volumePath", func() *csi.CreateVolumeRequest {
			r := createReq("pvc-idem", 3<<29)
			r.Parameters = map[string]string{"volumePath": testVolumePath + "/sub"}
			return r
		}, codes.AlreadyExists, []string{"stored at"}},
		{"other port", func() *csi.CreateVolumeRequest {
			r := createReq("pvc-idem", 3<<29)
			r.Parameters = map[string]string{"nvmePort": "4421"}
			return r
		}, codes.AlreadyExists, []string{"port 4420"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.c.CreateVolume(testCtx(t), tc.req())
			wantCode(t, err, tc.code, tc.parts...)
			if err == nil && (resp.Volume.VolumeId != first.VolumeId || resp.Volume.CapacityBytes != first.CapacityBytes) {
				t.Errorf("got %v, want the first volume %v", resp.Volume, first)
			}
		})
	}
	if files := e.volumeFiles(); !slices.Equal(files, []string{"pvc-idem.img"}) {
		t.Errorf("files %v, want only pvc-idem.img", files)
	}
}

func TestControllerVolumeIDs(t *testing.T) {
	tests := []struct{ name, want string }{
		{"pvc-42f0d924-8d3a-4a44-9d2e-1c2b3a4d5e6f", "pvc-42f0d924-8d3a-4a44-9d2e-1c2b3a4d5e6f"},
		{"sanity", "sanity"},
		{"sanity-controller-create-single-with-capacity-8A3F0C1D-0B9E7F2A", "vol-"},
		{strings.Repeat("a", 64), "vol-"},
		{strings.Repeat("a", 63), strings.Repeat("a", 63)},
		{"ends-with-dash-", "vol-"},
		{"Has.Dots", "vol-"},
	}
	seen := map[string]string{}
	for _, tc := range tests {
		id := volumeIDFor(tc.name)
		if !strings.HasPrefix(id, tc.want) || !isVolumeID(id) {
			t.Errorf("volumeIDFor(%q) = %q, want %q…, a valid slot", tc.name, id, tc.want)
		}
		if id != volumeIDFor(tc.name) {
			t.Errorf("volumeIDFor(%q) is not deterministic", tc.name)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("%q and %q map to the same ID %s", other, tc.name, id)
		}
		seen[id] = tc.name
		if strings.HasPrefix(tc.want, "vol-") && len(id) != len("vol-")+24 {
			t.Errorf("derived ID %q is not vol- and 24 hex digits", id)
		}
	}
}

func TestControllerNQNInVolumeContext(t *testing.T) {
	tests := []struct {
		version, want string
	}{
		{"7.24.4", "nqn.2000-02.com.mikrotik:pvc-nqn"},
		{"7.20.3", "pvc-nqn"}, // before 7.21 the RDS exports the slot as the NQN
	}
	for _, tc := range tests {
		t.Run(tc.version, func(t *testing.T) {
			e := newCtrlEnv(t, withSim(sim.Options{Version: tc.version}))
			vol := e.mustCreate(createReq("pvc-nqn", 1<<30))
			want := map[string]string{
				"nqn": tc.want, "nvmeAddress": "127.0.0.1", "nvmePort": "4420", "volumePath": testVolumePath,
				"ctrlLossTmo": "-1", "reconnectDelay": "5", "migrationTimeoutSeconds": "300",
			}
			if !mapsEqual(vol.VolumeContext, want) {
				t.Errorf("volume context %v, want %v", vol.VolumeContext, want)
			}
			if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestControllerDelete(t *testing.T) {
	e := newCtrlEnv(t)
	keep := e.mustCreate(createReq("pvc-keep", 1<<30))
	vol := e.mustCreate(createReq("pvc-del", 1<<30))
	for i := range 2 { // the second time is a retry of a finished delete
		if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: vol.VolumeId}); err != nil {
			t.Fatalf("delete %d: %v", i+1, err)
		}
	}
	if e.disk(vol.VolumeId) != nil || fileExists(t, e.sim.HostPath(testVolumePath+"/pvc-del.img")) {
		t.Error("the disk or its file is still there")
	}
	if e.disk(keep.VolumeId) == nil || !slices.Equal(e.volumeFiles(), []string{"pvc-keep.img"}) {
		t.Errorf("another volume was touched: files %v", e.volumeFiles())
	}
	for _, id := range []string{"no-such-volume", "Not-A-Slot", strings.Repeat("x", 70)} {
		if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
			t.Errorf("delete of absent %q: %v", id, err)
		}
	}
	_, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{})
	wantCode(t, err, codes.InvalidArgument, "volume_id")
}

func TestControllerDeleteRefusesForeignDisk(t *testing.T) {
	e := newCtrlEnv(t)
	// a disk someone made by hand outside the volume directories
	if _, err := e.sim.Exec(context.Background(), `/disk add type=file file-path="/storage-pool/other/pvc-hand.img" file-size=1G slot="pvc-hand" nvme-tcp-export=yes`); err != nil {
		t.Fatal(err)
	}
	_, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-hand"})
	wantCode(t, err, codes.FailedPrecondition, "/storage-pool/other/pvc-hand.img", "--rds-allowed-paths")
	if e.disk("pvc-hand") == nil || !fileExists(t, e.sim.HostPath("/storage-pool/other/pvc-hand.img")) {
		t.Error("a disk this driver does not manage was removed")
	}
}

func contains(s, part string) bool { return strings.Contains(s, part) }

func TestControllerVolumeSize(t *testing.T) {
	const mib, gib = int64(1) << 20, int64(1) << 30
	tests := []struct {
		name            string
		required, limit int64
		minimum         int64
		want            int64
		code            codes.Code
	}{
		{"nothing asked: 1 GiB", 0, 0, 0, gib, codes.OK},
		{"1.5 GiB exactly", 3 * gib / 2, 0, 0, 1536 * mib, codes.OK},
		{"one byte: a MiB", 1, 0, 0, mib, codes.OK},
		{"limit only, below the default", 0, 10 * mib, 0, 10 * mib, codes.OK},
		{"limit only, above the default", 0, 10 * gib, 0, gib, codes.OK},
		{"xfs minimum raises a small request", 10 * mib, 0, xfsMinimumSize, 300 * mib, codes.OK},
		{"xfs minimum beyond the limit", 10 * mib, 200 * mib, xfsMinimumSize, 0, codes.OutOfRange},
		{"rounding beyond the limit", mib + 1, mib + 2, 0, 0, codes.OutOfRange},
		{"limit equal to the rounded size", mib + 1, 2 * mib, 0, 2 * mib, codes.OK},
		{"required above limit", 2 * gib, gib, 0, 0, codes.InvalidArgument},
		{"negative", -1, 0, 0, 0, codes.InvalidArgument},
		{"beyond any pool", 1 << 62, 0, 0, 0, codes.OutOfRange},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := volumeSize(&csi.CapacityRange{RequiredBytes: tc.required, LimitBytes: tc.limit}, tc.minimum)
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestControllerHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1023: "1023 bytes", 1 << 20: "1 MiB", 3 << 29: "1.5 GiB", 1<<40 + 1<<38: "1.25 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
