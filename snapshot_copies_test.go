package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"srvlab.io/rds-csi/routeros"
)

// fakeClock is a settable clock for the copy tracker.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// listed is a /file print entry of a copy's destination.
func listed(sizeText string, modified string) *routeros.File {
	t, err := time.Parse(time.DateTime, modified)
	if err != nil {
		panic(err)
	}
	return &routeros.File{Path: "/p/d/.snapshots/x.img", Type: ".img", SizeText: sizeText, LastModified: t}
}

// TestCopyTrackerCompletion walks the tracker through the ways a copy can look on the RDS;
// each step is one listing `after` the previous one, judged with the phase it must give.
func TestCopyTrackerCompletion(t *testing.T) {
	const want = 10 << 30 // 10 GiB, printed "10.0GiB"
	type step struct {
		after time.Duration
		file  *routeros.File
		phase copyPhase
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"a copy that grows its file is done only at the full size, then after the quiet time", []step{
			{0, listed("2.5GiB", "2025-11-11 14:00:01"), copyRunning},
			{time.Second, listed("7.5GiB", "2025-11-11 14:00:02"), copyRunning},
			{time.Second, listed("10.0GiB", "2025-11-11 14:00:03"), copyRunning},
			{2 * time.Second, listed("10.0GiB", "2025-11-11 14:00:03"), copyRunning},
			{time.Second, listed("10.0GiB", "2025-11-11 14:00:03"), copyDone},
			{time.Hour, listed("10.0GiB", "2025-11-11 14:00:03"), copyDone},
		}},
		{"a preallocated copy at full size is not done while last-modified moves", []step{
			{0, listed("10.0GiB", "2025-11-11 14:00:01"), copyRunning},
			{3 * time.Second, listed("10.0GiB", "2025-11-11 14:00:04"), copyRunning},
			{3 * time.Second, listed("10.0GiB", "2025-11-11 14:00:07"), copyRunning},
			{3 * time.Second, listed("10.0GiB", "2025-11-11 14:00:08"), copyRunning},
			{3 * time.Second, listed("10.0GiB", "2025-11-11 14:00:08"), copyDone},
		}},
		{"a rounded size just short of the end needs the quiet time too", []step{
			{0, listed("10.0GiB", "2025-11-11 14:00:01"), copyRunning}, // could be 9.96 GiB
			{time.Second, listed("10.0GiB", "2025-11-11 14:00:02"), copyRunning},
			{3 * time.Second, listed("10.0GiB", "2025-11-11 14:00:02"), copyDone},
		}},
		{"a wrong size that never changes is a stalled copy", []step{
			{0, listed("4.0GiB", "2025-11-11 14:00:01"), copyRunning},
			{time.Minute, listed("4.0GiB", "2025-11-11 14:00:01"), copyRunning},
			{5 * time.Minute, listed("4.0GiB", "2025-11-11 14:00:01"), copyStalled},
		}},
		{"a missing file with no command running is absent", []step{
			{0, nil, copyAbsent},
		}},
		{"a confirmed copy written again is judged again", []step{
			{0, listed("10.0GiB", "2025-11-11 14:00:01"), copyRunning},
			{4 * time.Second, listed("10.0GiB", "2025-11-11 14:00:01"), copyDone},
			{time.Second, listed("10.0GiB", "2025-11-11 14:09:00"), copyRunning},
			{4 * time.Second, listed("10.0GiB", "2025-11-11 14:09:00"), copyDone},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			tr := newCopyTracker(nil, discardLog, 1)
			tr.now = clock.now
			for i, s := range tc.steps {
				clock.add(s.after)
				if st := tr.state("/p/d/.snapshots/x.img", s.file, want, clock.now()); st.phase != s.phase {
					t.Fatalf("step %d (%+v): phase %d (%s), want %d", i, s.file, st.phase, st.detail, s.phase)
				}
			}
		})
	}
}

// While this process's copy command runs, nothing it lists counts as complete; a failed
// command is reported once; a listing asked for before the command returned proves nothing.
func TestCopyTrackerCommand(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	release := make(chan error)
	tr := newCopyTracker(func(ctx context.Context, src, dst string) error { return <-release }, discardLog, 1)
	tr.now = clock.now
	const dst, want = "/p/d/x.img", 1 << 30
	full := listed("1.0GiB", "2025-11-11 14:00:01")

	tr.start("/p/d/src.img", dst)
	tr.start("/p/d/src.img", dst) // one command per destination
	if got := tr.copyingFrom("/p/d/src.img"); got != dst {
		t.Fatalf("copyingFrom = %q, want %q", got, dst)
	}
	for range 3 {
		clock.add(time.Minute)
		if st := tr.state(dst, full, want, clock.now()); st.phase != copyRunning {
			t.Fatalf("full and unchanged while the command runs: phase %d, want running", st.phase)
		}
	}
	if st := tr.state(dst, nil, want, clock.now()); st.phase != copyRunning {
		t.Fatalf("not created yet while the command runs: phase %d, want running", st.phase)
	}
	asked := clock.now()
	clock.add(time.Second)
	ch := tr.finishedCh(dst)
	release <- nil
	<-ch
	if tr.copyingFrom("/p/d/src.img") != "" {
		t.Error("the source is still reported busy after the command returned")
	}
	if st := tr.state(dst, nil, want, asked); st.phase != copyRunning || st.recheck.IsZero() {
		t.Fatalf("a listing from before the command returned: %+v, want running with an immediate recheck", st)
	}
	clock.add(time.Second)
	if st := tr.state(dst, full, want, clock.now()); st.phase != copyDone {
		// unchanged for minutes, observed while the command ran: quiet long enough
		t.Fatalf("after the command returned: phase %d (%s), want done", st.phase, st.detail)
	}

	tr.start("/p/d/src.img", "/p/d/y.img")
	ch = tr.finishedCh("/p/d/y.img")
	release <- errors.New("failure: not enough space")
	<-ch
	clock.add(time.Second)
	if st := tr.state("/p/d/y.img", nil, want, clock.now()); st.phase != copyFailed || st.err == nil {
		t.Fatalf("failed command: %+v", st)
	}
	if st := tr.state("/p/d/y.img", nil, want, clock.now()); st.phase != copyAbsent {
		t.Fatalf("a failure is reported once, then the copy is absent: %+v", st)
	}
}

// The waits inside an RPC stay within waitMax and leave the margin before the deadline.
func TestCopyTrackerMayWait(t *testing.T) {
	tr := newCopyTracker(nil, discardLog, 1)
	tr.waitMax, tr.margin = 10*time.Second, 2*time.Second
	now := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, tc := range []struct {
		ctx   context.Context
		until time.Duration
		want  bool
	}{
		{context.Background(), 9 * time.Second, true},
		{context.Background(), 11 * time.Second, false},
		{ctx, 2 * time.Second, true},
		{ctx, 4 * time.Second, false},
	} {
		if got := tr.mayWait(tc.ctx, now, now.Add(tc.until)); got != tc.want {
			t.Errorf("mayWait(%v): %v, want %v", tc.until, got, tc.want)
		}
	}
}

func TestSnapshotNames(t *testing.T) {
	created := time.Unix(1731340000, 0).UTC()
	p := snapshotPath("/storage-pool/metal-csi", "snapshot-1", "pvc-2", 3<<30, created)
	if p != "/storage-pool/metal-csi/.snapshots/snapshot-1_pvc-2_3221225472_1731340000.img" {
		t.Fatalf("snapshotPath = %s", p)
	}
	s, ok := parseSnapshot(routeros.File{Path: p, Type: ".img"})
	if !ok || s.id != "snapshot-1" || s.source != "pvc-2" || s.size != 3<<30 || !s.created.Equal(created) {
		t.Fatalf("parseSnapshot(%s) = %+v, %v", p, s, ok)
	}
	for _, other := range []string{
		"/storage-pool/metal-csi/pvc-2.img",
		"/storage-pool/metal-csi/.snapshots",
		"/storage-pool/metal-csi/.snapshots/notes.txt",
		"/storage-pool/metal-csi/.snapshots/snapshot-1_pvc-2_3221225472.img",
		"/storage-pool/metal-csi/.snapshots/snapshot-1_pvc-2_03221225472_1731340000.img",
		"/storage-pool/metal-csi/.snapshots/snapshot-1_pvc-2_0_1731340000.img",
		"/storage-pool/metal-csi/.snapshots/Snap_pvc-2_1_1731340000.img",
		"/storage-pool/metal-csi/.snapshots/snapshot-1_pvc_2_1_1731340000.img",
		"/storage-pool/metal-csi/old/snapshot-1_pvc-2_1_1731340000.img",
	} {
		if s, ok := parseSnapshot(routeros.File{Path: other, Type: ".img"}); ok {
			t.Errorf("parseSnapshot(%s) took it for %+v", other, s)
		}
	}
	if id := snapshotIDFor("snapshot-0b7d2c4e-5d4f-4d0a-9a56-2f1e9c3b8a71"); id != "snapshot-0b7d2c4e-5d4f-4d0a-9a56-2f1e9c3b8a71" {
		t.Errorf("a valid name is not its own ID: %s", id)
	}
	if a, b := snapshotIDFor("Sanity-Snapshot-1"), snapshotIDFor("Sanity-Snapshot-1"); a != b || !isVolumeID(a) || len(a) != len("snap-")+24 {
		t.Errorf("derived IDs %q, %q", a, b)
	}
}
