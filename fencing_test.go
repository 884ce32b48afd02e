package main

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

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
