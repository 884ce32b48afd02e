package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/kube"
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

// fakeAttachments serves VolumeAttachments from memory and can fail.
type fakeAttachments struct {
	mu    sync.Mutex
	vas   []volumeAttachment
	err   error
	calls int
}

func (f *fakeAttachments) listVolumeAttachments(_ context.Context, attacher string) ([]volumeAttachment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	var out []volumeAttachment
	for _, va := range f.vas {
		if va.Attacher == attacher {
			out = append(out, va)
		}
	}
	return out, nil
}

func va(pv, node string, attached, deleting bool) volumeAttachment {
	return volumeAttachment{Name: "va-" + pv + "-" + node, Attacher: defaultDriverName, PVName: pv, NodeName: node, Attached: attached, Deleting: deleting}
}

func TestFencingPublishLimits(t *testing.T) {
	type step struct {
		unpublish bool
		vol, node string
		max       int
		code      codes.Code
		msg       string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"RWO second node refused, naming the holder", []step{
			{vol: "pvc-1", node: "a", max: 1},
			{vol: "pvc-1", node: "a", max: 1}, // idempotent
			{vol: "pvc-1", node: "b", max: 1, code: codes.FailedPrecondition, msg: "attached to node a"},
		}},
		{"RWO moves after unpublish", []step{
			{vol: "pvc-1", node: "a", max: 1},
			{unpublish: true, vol: "pvc-1", node: "a"},
			{vol: "pvc-1", node: "b", max: 1},
		}},
		{"RWX block: two nodes, third refused", []step{
			{vol: "pvc-2", node: "a", max: 2},
			{vol: "pvc-2", node: "b", max: 2},
			{vol: "pvc-2", node: "c", max: 2, code: codes.FailedPrecondition, msg: "at most 2 nodes"},
		}},
		{"unpublish of unknown node and volume is fine", []step{
			{unpublish: true, vol: "pvc-9", node: "gone"},
			{vol: "pvc-3", node: "a", max: 1},
			{unpublish: true, vol: "pvc-3", node: "gone"},
			{vol: "pvc-3", node: "b", max: 1, code: codes.FailedPrecondition},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFencing(nil, defaultDriverName, discardLog)
			for i, s := range tc.steps {
				if s.unpublish {
					f.unpublish(s.vol, s.node)
					continue
				}
				err := f.publish(context.Background(), s.vol, s.node, s.max, time.Minute)
				if status.Code(err) != s.code {
					t.Fatalf("step %d: got %v, want %v", i, err, s.code)
				}
				if s.msg != "" && !strings.Contains(err.Error(), s.msg) {
					t.Errorf("step %d: message %q lacks %q", i, err, s.msg)
				}
			}
		})
	}
}

func TestFencingUnavailableUntilRebuilt(t *testing.T) {
	src := &fakeAttachments{err: errors.New("connection refused")}
	f := newFencing(src, defaultDriverName, discardLog)
	err := f.publish(context.Background(), "pvc-1", "a", 1, 0)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "volumeattachments") {
		t.Fatalf("before rebuild: %v, want Unavailable saying why", err)
	}
	src.mu.Lock()
	src.err = nil
	src.vas = []volumeAttachment{va("pvc-1", "b", true, false)}
	src.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f.runRebuild(ctx)
	if err := f.publish(context.Background(), "pvc-1", "a", 1, 0); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "node b") {
		t.Fatalf("after rebuild: %v, want the cluster's attachment to node b to fence", err)
	}
}

func TestFencingRebuildFromVolumeAttachments(t *testing.T) {
	src := &fakeAttachments{vas: []volumeAttachment{
		va("pvc-1", "a", true, false),  // attached
		va("pvc-2", "b", false, false), // attaching, not confirmed by this controller: holds nothing
		va("pvc-3", "c", true, true),   // detaching, still attached
		va("pvc-4", "d", false, true),  // detached, being deleted: free
		{Name: "other", Attacher: "other.csi", PVName: "pvc-5", NodeName: "e", Attached: true},
	}}
	f := newFencing(src, defaultDriverName, discardLog)
	if err := f.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	for vol, want := range map[string]string{"pvc-1": "a", "pvc-2": "", "pvc-3": "c", "pvc-4": "", "pvc-5": ""} {
		if got := strings.Join(f.nodes(vol), ","); got != want {
			t.Errorf("%s: nodes %q, want %q", vol, got, want)
		}
	}
}

func TestFencingStaleRecordIsRecheckedAgainstTheCluster(t *testing.T) {
	// The driver believes pvc-1 is on node a (e.g. its unpublish was lost in a crash), but the
	// cluster has no attachment any more: a publish to b must succeed, not block for hours.
	src := &fakeAttachments{vas: []volumeAttachment{va("pvc-1", "a", true, false)}}
	f := newFencing(src, defaultDriverName, discardLog)
	if err := f.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.vas = []volumeAttachment{va("pvc-1", "b", false, false)}
	src.mu.Unlock()
	if err := f.publish(context.Background(), "pvc-1", "b", 1, 0); err != nil {
		t.Fatalf("stale record blocked a legitimate attach: %v", err)
	}
	src.mu.Lock()
	src.err = errors.New("apiserver down")
	src.mu.Unlock()
	if err := f.publish(context.Background(), "pvc-1", "c", 1, 0); status.Code(err) != codes.Unavailable {
		t.Fatalf("conflict that cannot be confirmed: %v, want Unavailable", err)
	}
}

func TestFencingMigrationTimeoutReportedOnce(t *testing.T) {
	clock := time.Unix(1000, 0)
	f := newFencing(nil, defaultDriverName, discardLog)
	f.now = func() time.Time { return clock }
	var reports []string
	f.onMigrationTimeout = func(id string, nodes []string, _ time.Duration) {
		reports = append(reports, id+"@"+strings.Join(nodes, ","))
	}
	for _, n := range []string{"src", "dst"} {
		if err := f.publish(context.Background(), "pvc-vm", n, maxNodesMigration, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(20 * time.Second)
	f.checkMigrations()
	if len(reports) != 0 {
		t.Fatalf("reported before the timeout: %v", reports)
	}
	clock = clock.Add(20 * time.Second)
	f.checkMigrations()
	f.checkMigrations()
	if len(reports) != 1 || reports[0] != "pvc-vm@src,dst" {
		t.Fatalf("reports %v, want exactly one", reports)
	}
	f.unpublish("pvc-vm", "src") // migration finished
	clock = clock.Add(time.Hour)
	f.checkMigrations()
	if len(reports) != 1 {
		t.Fatalf("reported after the migration finished: %v", reports)
	}
}

// Found by the real-kubelet suite: the attacher calls ControllerPublish for a second node's
// VolumeAttachment while it is still attaching; the conflict re-check must not count that
// very attachment as a holder, or the second node is let in.
func TestFencingAttachingVolumeAttachmentDoesNotFenceItselfIn(t *testing.T) {
	src := &fakeAttachments{vas: []volumeAttachment{va("pvc-1", "a", true, false)}}
	f := newFencing(src, defaultDriverName, discardLog)
	if err := f.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	src.mu.Lock()
	src.vas = append(src.vas, va("pvc-1", "b", false, false)) // the attachment being decided
	src.mu.Unlock()
	err := f.publish(context.Background(), "pvc-1", "b", maxNodesSingle, 0)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "attached to node a") {
		t.Fatalf("second node's publish: %v, want FailedPrecondition naming node a", err)
	}
}

// After a restart, two attachments still attaching: the first publish wins and stays
// confirmed through later rebuilds; the second is refused.
func TestFencingConfirmedPublishSurvivesRebuildWhileAttaching(t *testing.T) {
	src := &fakeAttachments{vas: []volumeAttachment{va("pvc-1", "a", false, false), va("pvc-1", "b", false, false)}}
	f := newFencing(src, defaultDriverName, discardLog)
	if err := f.rebuild(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.publish(context.Background(), "pvc-1", "a", maxNodesSingle, 0); err != nil {
		t.Fatalf("first publish: %v", err)
	}
	if err := f.publish(context.Background(), "pvc-1", "b", maxNodesSingle, 0); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second publish: %v, want FailedPrecondition", err)
	}
	if got := strings.Join(f.nodes("pvc-1"), ","); got != "a" {
		t.Fatalf("holders after the refused publish: %q, want a", got)
	}
	// Node a's attachment disappears (stale record): b can have it.
	src.mu.Lock()
	src.vas = []volumeAttachment{va("pvc-1", "b", false, false)}
	src.mu.Unlock()
	if err := f.publish(context.Background(), "pvc-1", "b", maxNodesSingle, 0); err != nil {
		t.Fatalf("publish after the stale record went: %v", err)
	}
}

// fakeKube is an API server serving VolumeAttachments and CSINodes from memory, over TLS
// with a bearer token, for the controller's reads of the cluster.
type fakeKube struct {
	mu       sync.Mutex
	vas      []string          // VolumeAttachment JSON objects
	csiNodes map[string]string // CSINode name → the node ID our driver registered there
	down     bool              // answer 503 to everything
	requests []string
	srv      *httptest.Server
}

const fakeKubeToken = "t0ken"

func startFakeKube(t testing.TB) *fakeKube {
	t.Helper()
	k := &fakeKube{csiNodes: map[string]string{}}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKube) serve(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.requests = append(k.requests, r.URL.Path)
	switch {
	case r.Header.Get("Authorization") != "Bearer "+fakeKubeToken:
		http.Error(w, `{"kind":"Status","message":"forbidden"}`, http.StatusForbidden)
	case k.down:
		http.Error(w, `{"kind":"Status","message":"etcd is down"}`, http.StatusServiceUnavailable)
	case r.URL.Path == "/apis/storage.k8s.io/v1/volumeattachments":
		fmt.Fprintf(w, `{"metadata":{},"items":[%s]}`, strings.Join(k.vas, ","))
	case r.URL.Path == "/apis/storage.k8s.io/v1/csinodes":
		var items []string
		for name, id := range k.csiNodes {
			items = append(items, csiNodeJSON(name, id))
		}
		fmt.Fprintf(w, `{"metadata":{},"items":[%s]}`, strings.Join(items, ","))
	case strings.HasPrefix(r.URL.Path, "/apis/storage.k8s.io/v1/csinodes/"):
		name := strings.TrimPrefix(r.URL.Path, "/apis/storage.k8s.io/v1/csinodes/")
		id, ok := k.csiNodes[name]
		if !ok {
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
			return
		}
		fmt.Fprint(w, csiNodeJSON(name, id))
	default:
		http.NotFound(w, r)
	}
}

func csiNodeJSON(name, nodeID string) string {
	return fmt.Sprintf(`{"metadata":{"name":%q},"spec":{"drivers":[{"name":"other.csi.io","nodeID":"x"},{"name":%q,"nodeID":%q,"topologyKeys":null}]}}`,
		name, defaultDriverName, nodeID)
}

func (k *fakeKube) setAttachments(vas ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.vas = vas
}

func (k *fakeKube) setDown(down bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.down = down
}

func (k *fakeKube) addNode(name, nodeID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.csiNodes[name] = nodeID
}

func vaJSON(name, attacher, node, pv string, attached, deleting bool) string {
	del := ""
	if deleting {
		del = `,"deletionTimestamp":"2026-01-01T00:00:00Z"`
	}
	return fmt.Sprintf(`{"metadata":{"name":%q%s},"spec":{"attacher":%q,"nodeName":%q,"source":{"persistentVolumeName":%q}},"status":{"attached":%v}}`,
		name, del, attacher, node, pv, attached)
}

// kubeconfigFile writes a kubeconfig for the server as --kubeconfig takes it: JSON, as
// kubectl config view --raw --minify --flatten -o json prints it.
func (k *fakeKube) kubeconfigFile(t testing.TB) string {
	return k.kubeconfigWithToken(t, fakeKubeToken)
}

func (k *fakeKube) kubeconfigWithToken(t testing.TB, token string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw})
	type obj = map[string]any
	b, err := json.Marshal(obj{
		"kind": "Config", "apiVersion": "v1", "current-context": "fake",
		"clusters": []obj{{"name": "fake", "cluster": obj{"server": k.srv.URL, "certificate-authority-data": base64.StdEncoding.EncodeToString(ca)}}},
		"users":    []obj{{"name": "admin", "user": obj{"token": token}}},
		"contexts": []obj{{"name": "fake", "context": obj{"cluster": "fake", "user": "admin"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// api returns the controller's view of the cluster, configured through a kubeconfig file.
func (k *fakeKube) api(t testing.TB) kubeCluster { return k.apiWithToken(t, fakeKubeToken) }

func (k *fakeKube) apiWithToken(t testing.TB, token string) kubeCluster {
	t.Helper()
	api, err := kube.New(k.kubeconfigWithToken(t, token), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	return kubeCluster{api}
}

func TestListVolumeAttachmentsOfOurAttacher(t *testing.T) {
	fake := startFakeKube(t)
	inline := `{"metadata":{"name":"va-inline"},"spec":{"attacher":"` + defaultDriverName + `","nodeName":"node-a","source":{"inlineVolumeSpec":{}}},"status":{"attached":true}}`
	fake.setAttachments(vaJSON("va1", defaultDriverName, "node-a", "pvc-1", true, false),
		vaJSON("va-other", "other.csi.io", "node-a", "pvc-x", true, false),
		inline,
		vaJSON("va2", defaultDriverName, "node-b", "pvc-2", false, true))
	got, err := fake.api(t).listVolumeAttachments(context.Background(), defaultDriverName)
	if err != nil {
		t.Fatal(err)
	}
	want := []volumeAttachment{
		{Name: "va1", Attacher: defaultDriverName, NodeName: "node-a", PVName: "pvc-1", Attached: true},
		{Name: "va2", Attacher: defaultDriverName, NodeName: "node-b", PVName: "pvc-2", Deleting: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestKubeNodeRegistered(t *testing.T) {
	fake := startFakeKube(t)
	fake.addNode("worker-1", "worker-1")
	fake.addNode("worker-2", "custom-id")
	api := fake.api(t)
	tests := []struct {
		nodeID string
		want   bool
	}{
		{"worker-1", true},  // CSINode named like the node ID
		{"custom-id", true}, // found by listing
		{"worker-2", false}, // the CSINode exists, but our driver registered another ID there
		{"absent", false},
	}
	for _, tc := range tests {
		got, err := api.nodeRegistered(context.Background(), defaultDriverName, tc.nodeID)
		if err != nil || got != tc.want {
			t.Errorf("nodeRegistered(%q) = %v, %v; want %v", tc.nodeID, got, err, tc.want)
		}
	}
	// The usual case, node ID = node name, takes one GET, not a list of every CSINode.
	fake.mu.Lock()
	fake.requests = nil
	fake.mu.Unlock()
	if ok, err := api.nodeRegistered(context.Background(), defaultDriverName, "worker-1"); !ok || err != nil {
		t.Fatalf("worker-1: %v, %v", ok, err)
	}
	fake.mu.Lock()
	requests := fake.requests
	fake.mu.Unlock()
	if want := []string{csiNodesPath + "/worker-1"}; !reflect.DeepEqual(requests, want) {
		t.Errorf("requests %q, want %q", requests, want)
	}
	if got, _ := api.nodeRegistered(context.Background(), "other.csi.io", "worker-1"); got {
		t.Error("another driver's registration counted")
	}
}

// A refusal names the permissions the controller's service account lacks.
func TestKubeForbiddenNamesThePermissions(t *testing.T) {
	fake := startFakeKube(t)
	api := fake.apiWithToken(t, "wrong")
	_, vaErr := api.listVolumeAttachments(context.Background(), defaultDriverName)
	_, nodeErr := api.nodeRegistered(context.Background(), defaultDriverName, "worker-1")
	for what, err := range map[string]error{"volumeattachments": vaErr, "csinodes": nodeErr} {
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "needs get and list on volumeattachments and csinodes") {
			t.Errorf("%s: got %v, want a 403 that names the missing permissions", what, err)
		}
	}
	down := fake.api(t)
	fake.setDown(true)
	if _, err := down.listVolumeAttachments(context.Background(), defaultDriverName); err == nil || strings.Contains(err.Error(), "needs get and list") {
		t.Errorf("503: got %v, want an error without the permission hint", err)
	}
}
