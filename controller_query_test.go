package main

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func grpcCode(err error) codes.Code { return status.Code(err) }

func TestControllerListVolumes(t *testing.T) {
	e := newCtrlEnv(t)
	var want []string
	for _, id := range []string{"pvc-c", "pvc-a", "pvc-e", "pvc-b", "pvc-d"} {
		e.mustCreate(createReq(id, 1<<30))
	}
	want = []string{"pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"}
	// disks that are no volumes of ours: another directory, another file name
	for _, cmd := range []string{
		`/disk add type=file file-path="/storage-pool/elsewhere/pvc-z.img" file-size=1G slot="pvc-z"`,
		`/disk add type=file file-path="` + testVolumePath + `/data.img" file-size=1G slot="pvc-y"`,
	} {
		if _, err := e.sim.Exec(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	if err := publish(e.c, t, "pvc-b", "node-1", rwo); err != nil {
		t.Fatal(err)
	}
	for _, pageSize := range []int32{0, 1, 2, 5, 6} {
		t.Run(fmt.Sprintf("max_entries=%d", pageSize), func(t *testing.T) {
			var got []string
			token := ""
			for page := 0; page < 10; page++ {
				resp, err := e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{MaxEntries: pageSize, StartingToken: token})
				if err != nil {
					t.Fatal(err)
				}
				if pageSize > 0 && len(resp.Entries) > int(pageSize) {
					t.Fatalf("page of %d entries, max %d", len(resp.Entries), pageSize)
				}
				for _, en := range resp.Entries {
					got = append(got, en.Volume.VolumeId)
					wantNodes := []string(nil)
					if en.Volume.VolumeId == "pvc-b" {
						wantNodes = []string{"node-1"}
					}
					if !slices.Equal(en.Status.GetPublishedNodeIds(), wantNodes) || en.Volume.CapacityBytes != 1<<30 {
						t.Errorf("entry %v, want nodes %v and 1 GiB", en, wantNodes)
					}
				}
				if token = resp.NextToken; token == "" {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("listed %v, want %v", got, want)
			}
		})
	}
	t.Run("a volume deleted between pages", func(t *testing.T) {
		resp, err := e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{MaxEntries: 2})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-b"}); grpcCode(err) != codes.FailedPrecondition {
			t.Fatalf("delete of a published volume: %v", err)
		}
		unpublish(e.c, t, "pvc-b", "node-1")
		if _, err := e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-b"}); err != nil {
			t.Fatal(err)
		}
		next, err := e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{StartingToken: resp.NextToken})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, en := range next.Entries {
			ids = append(ids, en.Volume.VolumeId)
		}
		if !slices.Equal(ids, []string{"pvc-c", "pvc-d", "pvc-e"}) {
			t.Errorf("after the deleted last ID of a page: %v", ids)
		}
	})
	for _, bad := range []string{"invalid-token", "!!!", "cHZjLWE=" /* padded */, "Tm90IEEgU2xvdA" /* "Not A Slot" */} {
		_, err := e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{StartingToken: bad})
		wantCode(t, err, codes.Aborted, "list again from the start")
	}
	_, err := e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{MaxEntries: -1})
	wantCode(t, err, codes.InvalidArgument, "max_entries")
}

func TestControllerGetVolume(t *testing.T) {
	e := newCtrlEnv(t)
	e.mustCreate(createReq("pvc-get", 3<<29, rwxBlock))
	for _, n := range []string{"src", "dst"} {
		if err := publish(e.c, t, "pvc-get", n, rwxBlock); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := e.c.ControllerGetVolume(testCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: "pvc-get"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Volume.CapacityBytes != 1610612736 || !slices.Equal(resp.Status.PublishedNodeIds, []string{"dst", "src"}) {
		t.Errorf("got %v", resp)
	}
	_, err = e.c.ControllerGetVolume(testCtx(t), &csi.ControllerGetVolumeRequest{VolumeId: "pvc-none"})
	wantCode(t, err, codes.NotFound, "no disk with slot pvc-none")
}

func TestControllerVolumeHealth(t *testing.T) {
	e := newCtrlEnv(t)
	for _, id := range []string{"pvc-ok", "pvc-unexported", "pvc-diskless"} {
		e.mustCreate(createReq(id, 1<<30))
	}
	for _, cmd := range []string{`/disk set [find slot="pvc-unexported"] nvme-tcp-export=no`, `/disk remove [find slot="pvc-diskless"]`} {
		if _, err := e.sim.Exec(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		id     string
		code   codes.Code
		reason string
	}{
		{"pvc-ok", codes.OK, ""},
		{"pvc-unexported", codes.OK, healthNotExported},
		{"pvc-diskless", codes.OK, healthDiskMissing},
		{"pvc-gone", codes.NotFound, ""},
	}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			resp, err := e.c.ControllerGetVolumeHealth(testCtx(t), &csi.ControllerGetVolumeHealthRequest{VolumeId: tc.id})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			h := resp.VolumeHealth
			if h.VolumeId != tc.id || tc.reason == "" && len(h.HealthStatuses) != 0 ||
				tc.reason != "" && (len(h.HealthStatuses) != 1 || h.HealthStatuses[0].Reason != tc.reason ||
					h.HealthStatuses[0].Status != csi.VolumeHealthErrorType_INACCESSIBLE || h.HealthStatuses[0].Message == "") {
				t.Errorf("health %v, want reason %q", h, tc.reason)
			}
		})
	}
	list, err := e.c.ControllerListVolumeHealth(testCtx(t), &csi.ControllerListVolumeHealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range list.Entries {
		got = append(got, h.VolumeId+":"+h.HealthStatuses[0].Reason)
	}
	if want := []string{"pvc-diskless:" + healthDiskMissing, "pvc-unexported:" + healthNotExported}; !slices.Equal(got, want) {
		t.Errorf("listed %v, want only the unhealthy %v", got, want)
	}
	page, err := e.c.ControllerListVolumeHealth(testCtx(t), &csi.ControllerListVolumeHealthRequest{MaxEntries: 1})
	if err != nil || len(page.Entries) != 1 || page.NextToken == "" {
		t.Fatalf("first page %v, %v", page, err)
	}
	page, err = e.c.ControllerListVolumeHealth(testCtx(t), &csi.ControllerListVolumeHealthRequest{MaxEntries: 1, StartingToken: page.NextToken})
	if err != nil || len(page.Entries) != 1 || page.Entries[0].VolumeId != "pvc-unexported" || page.NextToken != "" {
		t.Fatalf("second page %v, %v", page, err)
	}
}

func TestControllerExpand(t *testing.T) {
	e := newCtrlEnv(t)
	e.mustCreate(createReq("pvc-grow", 1<<30))
	if err := publish(e.c, t, "pvc-grow", "node-1", rwo); err != nil { // online expansion
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		required, limit int64
		want            int64
		code            codes.Code
		parts           []string
	}{
		{"grow to 1.5 GiB", 3 << 29, 0, 1610612736, codes.OK, nil},
		{"same size again", 3 << 29, 0, 1610612736, codes.OK, nil},
		{"smaller keeps the size", 1 << 30, 0, 1610612736, codes.OK, nil},
		{"round up", 2<<30 + 1, 0, 2<<30 + 1<<20, codes.OK, nil},
		{"limit forbids the rounding", 3<<30 + 1, 3<<30 + 2, 0, codes.OutOfRange, nil},
		{"no capacity", 0, 0, 0, codes.InvalidArgument, []string{"capacity_range"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := e.c.ControllerExpandVolume(testCtx(t), &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-grow",
				CapacityRange: &csi.CapacityRange{RequiredBytes: tc.required, LimitBytes: tc.limit}})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.parts...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.CapacityBytes != tc.want || !resp.NodeExpansionRequired {
				t.Errorf("got %v, want %d with node expansion", resp, tc.want)
			}
			if d := e.disk("pvc-grow"); d.Size != tc.want {
				t.Errorf("the RDS holds %d bytes, want %d", d.Size, tc.want)
			}
		})
	}
	e.sim.SetDiskFull(true)
	_, err := e.c.ControllerExpandVolume(testCtx(t), &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-grow", CapacityRange: &csi.CapacityRange{RequiredBytes: 10 << 30}})
	wantCode(t, err, codes.ResourceExhausted, "free")
	_, err = e.c.ControllerExpandVolume(testCtx(t), &csi.ControllerExpandVolumeRequest{VolumeId: "pvc-none", CapacityRange: &csi.CapacityRange{RequiredBytes: 1 << 30}})
	wantCode(t, err, codes.NotFound)
}

func TestControllerGetCapacity(t *testing.T) {
	tests := []struct {
		name    string
		reserve int64
		params  map[string]string
		caps    []*csi.VolumeCapability
		want    int64
		code    codes.Code
	}{
		{"free space", 0, nil, nil, 1<<40 - 1<<30, codes.OK},
		{"less the reserve", 100 << 30, nil, nil, 1<<40 - 101<<30, codes.OK},
		{"reserve above free", 2 << 40, nil, nil, 0, codes.OK},
		{"class volumePath", 0, map[string]string{"volumePath": testVolumePath + "/sub"}, nil, 1<<40 - 1<<30, codes.OK},
		{"unsupported capability", 0, nil, []*csi.VolumeCapability{rwxFS}, 0, codes.OK},
		{"bad volumePath", 0, map[string]string{"volumePath": "/elsewhere/x"}, nil, 0, codes.InvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCtrlEnv(t, withConfig(func(c *Config) { c.CapacityReserve = tc.reserve }))
			e.mustCreate(createReq("pvc-used", 1<<30))
			resp, err := e.c.GetCapacity(testCtx(t), &csi.GetCapacityRequest{Parameters: tc.params, VolumeCapabilities: tc.caps})
			if tc.code != codes.OK {
				wantCode(t, err, tc.code)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.AvailableCapacity != tc.want || resp.GetMaximumVolumeSize().GetValue() != tc.want {
				t.Errorf("got %v, want %d", resp, tc.want)
			}
			if tc.caps == nil && metricValue(t, e.m, "rds_csi_pool_free_bytes") != float64(1<<40-1<<30) {
				t.Errorf("pool free metric %v, want the pool's free bytes", metricValue(t, e.m, "rds_csi_pool_free_bytes"))
			}
		})
	}
}

func TestControllerBackgroundRefreshesPoolMetrics(t *testing.T) {
	e := newCtrlEnv(t)
	e.c.poolRefreshEvery = 20 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.c.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	e.mustCreate(createReq("pvc-fill", 1<<30))
	deadline := time.Now().Add(10 * time.Second)
	for metricValue(t, e.m, "rds_csi_pool_free_bytes") != float64(1<<40-1<<30) {
		if time.Now().After(deadline) {
			t.Fatalf("pool free metric %v never reflected the new volume", metricValue(t, e.m, "rds_csi_pool_free_bytes"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if metricValue(t, e.m, "rds_csi_pool_size_bytes") != 1<<40 || metricValue(t, e.m, "rds_csi_rds_ssh_connected") != 1 {
		t.Error("pool size or connection gauge not set")
	}
}

func TestOnePathPerPool(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, nil},
		{[]string{"/pool/a"}, []string{"/pool/a"}},
		{[]string{"/pool/a", "/pool/b/c", "/other/x", "/pool"}, []string{"/pool/a", "/other/x"}},
		{[]string{"/pool-2/a", "/pool/a"}, []string{"/pool-2/a", "/pool/a"}}, // whole components, not prefixes
	} {
		if got := onePathPerPool(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("onePathPerPool(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
