package main

import (
	"context"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
)

var (
	rwxBlock = blockCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER)
	rwoBlock = blockCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER)
	rwop     = mountCap(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER, "")
	rwxFS    = mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER, "")
)

func publish(c *controllerService, t testing.TB, vol, node string, vc *csi.VolumeCapability) error {
	_, err := c.ControllerPublishVolume(testCtx(t), &csi.ControllerPublishVolumeRequest{VolumeId: vol, NodeId: node, VolumeCapability: vc})
	return err
}

func unpublish(c *controllerService, t testing.TB, vol, node string) {
	t.Helper()
	if _, err := c.ControllerUnpublishVolume(testCtx(t), &csi.ControllerUnpublishVolumeRequest{VolumeId: vol, NodeId: node}); err != nil {
		t.Fatalf("unpublish %s from %q: %v", vol, node, err)
	}
}

func TestControllerPublishFencing(t *testing.T) {
	type step struct {
		unpublish  bool
		node       string
		capability *csi.VolumeCapability
		code       codes.Code
		parts      []string
	}
	tests := []struct {
		name  string
		block bool
		steps []step
	}{
		{"RWO: a second node is refused, naming the holder", false, []step{
			{node: "node-a", capability: rwo},
			{node: "node-a", capability: rwo}, // idempotent
			{node: "node-b", capability: rwo, code: codes.FailedPrecondition, parts: []string{"attached to node node-a", "detach it there first"}},
		}},
		{"RWOP and RWO block are single-node too", true, []step{
			{node: "node-a", capability: rwoBlock},
			{node: "node-b", capability: rwop, code: codes.FailedPrecondition, parts: []string{"node-a"}},
		}},
		{"RWO moves after unpublish", false, []step{
			{node: "node-a", capability: rwo},
			{unpublish: true, node: "node-a"},
			{node: "node-b", capability: rwo},
		}},
		{"RWX block: source and target of a migration, a third is refused", true, []step{
			{node: "src", capability: rwxBlock},
			{node: "dst", capability: rwxBlock},
			{node: "third", capability: rwxBlock, code: codes.FailedPrecondition, parts: []string{"src and dst", "at most 2 nodes"}},
			{unpublish: true, node: "src"}, // the migration finished
			{node: "third", capability: rwxBlock},
		}},
		{"RWX filesystem is refused", false, []step{
			{node: "node-a", capability: rwxFS, code: codes.InvalidArgument, parts: []string{"volumeMode: Block", "live migration"}},
		}},
		{"unpublish of an unknown node, and without a node, is fine", false, []step{
			{unpublish: true, node: "gone"},
			{node: "node-a", capability: rwo},
			{unpublish: true, node: "never-there"},
			{node: "node-b", capability: rwo, code: codes.FailedPrecondition},
			{unpublish: true, node: ""}, // every node
			{node: "node-b", capability: rwo},
		}},
	}
	e := newCtrlEnv(t)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			capability := rwo
			if tc.block {
				capability = rwxBlock
			}
			vol := e.mustCreate(createReq("pvc-fence-"+string(rune('a'+i)), 1<<30, capability)).VolumeId
			for j, s := range tc.steps {
				if s.unpublish {
					unpublish(e.c, t, vol, s.node)
					continue
				}
				err := publish(e.c, t, vol, s.node, s.capability)
				if s.code == codes.OK && err != nil {
					t.Fatalf("step %d: %v", j, err)
				}
				if s.code != codes.OK {
					wantCode(t, err, s.code, s.parts...)
				}
			}
		})
	}
}

func TestControllerPublishRefusals(t *testing.T) {
	e := newCtrlEnv(t)
	e.mustCreate(createReq("pvc-pub", 1<<30))
	if _, err := e.sim.Exec(context.Background(), `/disk add type=file file-path="`+testVolumePath+`/pvc-noexport.img" file-size=1G slot="pvc-noexport"`); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		req   *csi.ControllerPublishVolumeRequest
		code  codes.Code
		parts []string
	}{
		{"no volume", &csi.ControllerPublishVolumeRequest{NodeId: "n", VolumeCapability: rwo}, codes.InvalidArgument, []string{"volume_id"}},
		{"no node", &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-pub", VolumeCapability: rwo}, codes.InvalidArgument, []string{"node_id"}},
		{"no capability", &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-pub", NodeId: "n"}, codes.InvalidArgument, []string{"volume_capability"}},
		{"absent volume", &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-absent", NodeId: "n", VolumeCapability: rwo}, codes.NotFound, []string{"no disk with slot pvc-absent"}},
		{"impossible ID", &csi.ControllerPublishVolumeRequest{VolumeId: "Not/A/Slot", NodeId: "n", VolumeCapability: rwo}, codes.NotFound, nil},
		{"ReadOnlyMany", &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-pub", NodeId: "n",
			VolumeCapability: mountCap(csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY, "")}, codes.InvalidArgument, []string{"ReadOnlyMany"}},
		{"not exported", &csi.ControllerPublishVolumeRequest{VolumeId: "pvc-noexport", NodeId: "n", VolumeCapability: rwo}, codes.FailedPrecondition, []string{"nvme-tcp-export=yes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.ControllerPublishVolume(testCtx(t), tc.req)
			wantCode(t, err, tc.code, tc.parts...)
		})
	}
}

// After a restart the records come from the cluster's VolumeAttachments, never from the
// driver's memory; until they have been read, publishing and deleting answer Unavailable.
func TestControllerFencingRebuiltFromVolumeAttachments(t *testing.T) {
	kube := startFakeKube(t)
	kube.addNode("node-a", "node-a")
	kube.addNode("node-b", "node-b")
	kube.setDown(true)
	e := newCtrlEnv(t, withAttachments(kube.api(t)))
	e.mustCreate(createReq("pvc-1", 1<<30))

	err := publish(e.c, t, "pvc-1", "node-b", rwo)
	wantCode(t, err, codes.Unavailable, "not rebuilt", "volumeattachments")
	_, err = e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-1"})
	wantCode(t, err, codes.Unavailable, "cannot confirm that volume pvc-1 is detached")
	_, err = e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{})
	wantCode(t, err, codes.Unavailable)

	kube.setAttachments(vaJSON("va-1", defaultDriverName, "node-a", "pvc-1", true, false),
		vaJSON("va-x", "other.csi.io", "node-b", "pvc-1", true, false))
	kube.setDown(false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.c.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for !e.c.fencing.isRebuilt() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}

	err = publish(e.c, t, "pvc-1", "node-b", rwo)
	wantCode(t, err, codes.FailedPrecondition, "attached to node node-a")
	_, err = e.c.DeleteVolume(testCtx(t), &csi.DeleteVolumeRequest{VolumeId: "pvc-1"})
	wantCode(t, err, codes.FailedPrecondition, "still attached to node node-a")
	list, err := e.c.ListVolumes(testCtx(t), &csi.ListVolumesRequest{})
	if err != nil || len(list.Entries) != 1 || len(list.Entries[0].Status.PublishedNodeIds) != 1 || list.Entries[0].Status.PublishedNodeIds[0] != "node-a" {
		t.Fatalf("ListVolumes = %v, %v; want pvc-1 published on node-a", list, err)
	}

	// node-a detached in the cluster: the stale record must not block node-b
	kube.setAttachments()
	if err := publish(e.c, t, "pvc-1", "node-b", rwo); err != nil {
		t.Fatalf("publish after the cluster detached node-a: %v", err)
	}
}

func TestControllerPublishChecksTheNode(t *testing.T) {
	kube := startFakeKube(t)
	kube.addNode("worker-1", "worker-1")
	kube.addNode("worker-2", "custom-node-id") // a node plugin started with another --node-id
	e := newCtrlEnv(t, withAttachments(kube.api(t)))
	if err := e.c.fencing.rebuild(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	e.mustCreate(createReq("pvc-n", 1<<30, rwxBlock))
	tests := []struct {
		node  string
		code  codes.Code
		parts []string
	}{
		{"worker-1", codes.OK, nil},
		{"custom-node-id", codes.OK, nil},
		{"no-such-node", codes.NotFound, []string{"node no-such-node does not exist", "kubectl get csinode"}},
	}
	for _, tc := range tests {
		t.Run(tc.node, func(t *testing.T) {
			err := publish(e.c, t, "pvc-n", tc.node, rwxBlock)
			if tc.code == codes.OK && err != nil {
				t.Fatal(err)
			}
			if tc.code != codes.OK {
				wantCode(t, err, tc.code, tc.parts...)
			}
		})
	}
	// an API outage must not block an attach: the check only sharpens the error
	unpublish(e.c, t, "pvc-n", "worker-1")
	kube.setDown(true)
	if err := publish(e.c, t, "pvc-n", "worker-1", rwxBlock); err != nil {
		t.Fatalf("publish during an API outage: %v", err)
	}
}

func TestControllerMigrationTimeoutIsCounted(t *testing.T) {
	e := newCtrlEnv(t)
	vol := e.mustCreate(createReq("pvc-vm", 1<<30, rwxBlock))
	clock := time.Unix(1000, 0)
	e.c.fencing.now = func() time.Time { return clock }
	for _, n := range []string{"src", "dst"} {
		if _, err := e.c.ControllerPublishVolume(testCtx(t), &csi.ControllerPublishVolumeRequest{
			VolumeId: vol.VolumeId, NodeId: n, VolumeCapability: rwxBlock, VolumeContext: vol.VolumeContext}); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(299 * time.Second) // the StorageClass default, 300 s, carried in the context
	e.c.fencing.checkMigrations()
	if got := metricValue(t, e.m, "rds_csi_migration_timeouts_total"); got != 0 {
		t.Fatalf("counted %v before the timeout", got)
	}
	clock = clock.Add(2 * time.Second)
	e.c.fencing.checkMigrations()
	if got := metricValue(t, e.m, "rds_csi_migration_timeouts_total"); got != 1 {
		t.Fatalf("migration timeouts %v, want 1", got)
	}
}

// metricValue reads a gauge or counter (the sum over its labels) as a scrape would.
func metricValue(t testing.TB, m *metrics, name string) float64 {
	t.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, mt := range f.GetMetric() {
			sum += mt.GetCounter().GetValue() + mt.GetGauge().GetValue()
		}
	}
	return sum
}
