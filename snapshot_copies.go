package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// copyTracker runs and follows the file copies on the RDS that snapshots, restores and
// clones are made of. Whether `/file copy` is synchronous, preallocates or reflinks is
// unverified, so completion is judged from what can be observed, which holds for all:
//
//  1. the copy command this process started (if any) has returned without error;
//  2. /file print shows the exact size expected, as far as its rounded figure tells
//     (routeros.PrintedSizeMatches), so a copy that grows its file is not done early; and
//  3. two observations at least `settle` apart show the same printed size and
//     last-modified (printed to the second, so settle ≥ 2 s spans a tick): this catches a
//     copy that preallocates and then fills. A background copy pausing longer than settle
//     would still pass early; that is the residual risk.
//
// After a restart the next observations decide again, from the RDS alone. A destination of
// the wrong size unchanged for `stall`, with no command running here, is stalled (its
// writer died) and the callers start it again.
type copyTracker struct {
	run func(ctx context.Context, src, dst string) error // the copy command
	log *slog.Logger
	now func() time.Time
	// commandTimeout bounds one copy command; poll, waitMax and margin shape the waiting
	// inside an RPC (awaitCopy). Fields, so tests can shorten them.
	settle, stall, commandTimeout time.Duration
	poll, waitMax, margin         time.Duration
	// slots bounds the copy commands at once: a synchronous copy holds an SSH session.
	slots chan struct{}

	mu   sync.Mutex
	runs map[string]*copyRun        // by destination: copy commands this process started
	seen map[string]copyObservation // by destination: when first seen as it is now
	done map[string]copyObservation // by destination: confirmed complete, as it looked then
	from map[string]map[string]bool // by source: destinations of running copy commands
}

func newCopyTracker(run func(ctx context.Context, src, dst string) error, log *slog.Logger, concurrent int) *copyTracker {
	return &copyTracker{
		run: run, log: log, now: time.Now,
		settle: 3 * time.Second, stall: 5 * time.Minute, commandTimeout: 6 * time.Hour,
		poll: time.Second, waitMax: time.Minute, margin: 2 * time.Second,
		slots: make(chan struct{}, max(concurrent, 1)),
		runs:  map[string]*copyRun{}, seen: map[string]copyObservation{},
		done: map[string]copyObservation{}, from: map[string]map[string]bool{},
	}
}

// copyRun is one copy command started by this process; err and ended are set before
// finished is closed.
type copyRun struct {
	finished chan struct{}
	err      error
	ended    time.Time
}

func (r *copyRun) running() bool {
	select {
	case <-r.finished:
		return false
	default:
		return true
	}
}

// copyObservation is a destination as /file print showed it, at this process's clock.
type copyObservation struct {
	sizeText     string
	modified, at time.Time
}

func (o copyObservation) same(p copyObservation) bool {
	return o.sizeText == p.sizeText && o.modified.Equal(p.modified)
}

type copyPhase int

const (
	copyAbsent  copyPhase = iota // no destination and no copy command running
	copyRunning                  // being written, or not yet confirmed complete
	copyDone                     // complete (see copyTracker)
	copyFailed                   // the copy command failed: err
	copyStalled                  // incomplete and unchanged for the stall time
)

// copyState is what is known of one copy.
type copyState struct {
	phase   copyPhase
	err     error     // copyFailed: why
	detail  string    // progress, for messages
	recheck time.Time // copyRunning at full size: when the quiet time is over
}

// start runs the copy command for dst in the background unless one runs already. It
// outlives the RPC (under commandTimeout), so a copy longer than any deadline completes.
func (t *copyTracker) start(src, dst string) {
	t.mu.Lock()
	if r := t.runs[dst]; r != nil && r.running() {
		t.mu.Unlock()
		return
	}
	r := &copyRun{finished: make(chan struct{})}
	t.runs[dst] = r
	delete(t.seen, dst)
	delete(t.done, dst)
	if t.from[src] == nil {
		t.from[src] = map[string]bool{}
	}
	t.from[src][dst] = true
	t.mu.Unlock()
	t.log.Info("copying a file on the RDS", "from", src, "to", dst)
	go func() {
		defer close(r.finished)
		defer func() { r.ended = t.now() }()
		defer func() {
			t.mu.Lock()
			defer t.mu.Unlock()
			delete(t.from[src], dst)
			if len(t.from[src]) == 0 {
				delete(t.from, src)
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), t.commandTimeout)
		defer cancel()
		select {
		case t.slots <- struct{}{}:
			defer func() { <-t.slots }()
		case <-ctx.Done():
			r.err = fmt.Errorf("no copy slot became free within %v: %w", t.commandTimeout, ctx.Err())
			return
		}
		began := t.now()
		if r.err = t.run(ctx, src, dst); r.err != nil {
			t.log.Warn("a copy on the RDS failed", "from", src, "to", dst, "err", r.err)
			return
		}
		t.log.Info("the copy command returned", "from", src, "to", dst, "took", t.now().Sub(began).Round(time.Millisecond))
	}()
}

// state judges a copy from one observation of its destination (nil: not listed), asked
// for at `asked` (before the listing was requested), and the exact size it must reach.
func (t *copyTracker) state(dst string, f *routeros.File, want int64, asked time.Time) copyState {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	running := false
	if r := t.runs[dst]; r != nil {
		running = r.running()
		switch {
		case !running && r.err != nil:
			t.forgetLocked(dst)
			return copyState{phase: copyFailed, err: r.err}
		case !running && !r.ended.Before(asked):
			// the listing may predate the copy, so it proves nothing; look again
			return copyState{phase: copyRunning, recheck: now, detail: "the copy command has just returned"}
		}
	}
	switch {
	case f == nil && running:
		return copyState{phase: copyRunning, detail: "the copy command has not created the file yet"}
	case f == nil:
		t.forgetLocked(dst)
		return copyState{phase: copyAbsent}
	}
	obs := copyObservation{sizeText: f.SizeText, modified: f.LastModified, at: now}
	if d, ok := t.done[dst]; ok {
		if d.same(obs) {
			return copyState{phase: copyDone}
		}
		delete(t.done, dst) // written since, or another file by that name
	}
	first, ok := t.seen[dst]
	if !ok || !first.same(obs) {
		t.seen[dst], first = obs, obs
	}
	// unchanged at least from when the first listing returned to when this one was asked
	quiet := asked.Sub(first.at)
	progress := fmt.Sprintf("%s of %s written", f.SizeText, humanBytes(want))
	switch {
	case running:
		return copyState{phase: copyRunning, detail: progress + "; the copy command is still running"}
	case !routeros.PrintedSizeMatches(f.SizeText, want) && quiet >= t.stall:
		return copyState{phase: copyStalled, detail: fmt.Sprintf("%s, and nothing changed for %v", progress, quiet.Round(time.Second))}
	case !routeros.PrintedSizeMatches(f.SizeText, want):
		return copyState{phase: copyRunning, detail: progress}
	case quiet >= t.settle:
		delete(t.seen, dst)
		delete(t.runs, dst)
		t.done[dst] = obs
		return copyState{phase: copyDone}
	}
	return copyState{phase: copyRunning, recheck: first.at.Add(t.settle),
		detail: fmt.Sprintf("%s; checking that nothing writes it any more", progress)}
}

// inFlight returns the destinations of copy commands this process started and has not
// judged yet; their files may not be listed on the RDS yet.
func (t *copyTracker) inFlight() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Sorted(maps.Keys(t.runs))
}

// forget drops what is known of dst (removed, or now a volume's file).
func (t *copyTracker) forget(dst string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(dst)
}

func (t *copyTracker) forgetLocked(dst string) {
	delete(t.runs, dst)
	delete(t.seen, dst)
	delete(t.done, dst)
}

// copyingFrom returns a destination src is still being copied into ("" when none): the
// source must not be deleted under it.
func (t *copyTracker) copyingFrom(src string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for dst := range t.from[src] {
		return dst
	}
	return ""
}

// finishedCh is closed when dst's running copy command returns (nil when none runs).
func (t *copyTracker) finishedCh(dst string) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.runs[dst]; r != nil && r.running() {
		return r.finished
	}
	return nil
}

// mayWait reports whether an RPC that began at `began` may wait until `until` for a copy:
// within waitMax, and leaving `margin` before the caller's deadline.
func (t *copyTracker) mayWait(ctx context.Context, began, until time.Time) bool {
	if ctx.Err() != nil || until.Sub(began) > t.waitMax {
		return false
	}
	deadline, ok := ctx.Deadline()
	return !ok || time.Until(deadline) >= until.Sub(t.now())+t.margin
}

// createFromSource makes volume id a copy of a snapshot (restore) or volume (clone): the
// source's file is copied to the volume's, and only once the copy is confirmed complete
// is the exported disk created on it and grown to the size asked for; a half-copied
// volume is never exported. Meanwhile the answer is Aborted, which the provisioner
// retries. The caller holds the volume's lock and has validated the capacity range.
func (c *controllerService) createFromSource(ctx context.Context, req *csi.CreateVolumeRequest, id string, params *volumeParams, minimum int64) (*csi.CreateVolumeResponse, error) {
	src, err := sourceOf(req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	dst := path.Join(params.volumePath, volumeFileName(id))
	disk, err := c.client.GetDisk(ctx, id)
	switch {
	case err == nil:
		return c.existingCopy(ctx, req, disk, dst, params, src, minimum)
	case !errors.Is(err, routeros.ErrNotFound):
		return nil, c.rdsStatus("create volume "+id, err)
	}
	what := fmt.Sprintf("create volume %s from %s", id, src)
	size, err := c.startVolumeCopy(ctx, &src, id, what, dst, req.GetCapacityRange(), minimum)
	if err != nil {
		return nil, err
	}
	st, err := c.awaitCopy(ctx, dst, src.size)
	switch {
	case err != nil:
		return nil, c.rdsStatus(what+": check the copy", err)
	case st.phase == copyFailed:
		return nil, c.copyFailure(ctx, what, dst, params.volumePath, src.size, st.err)
	case st.phase == copyAbsent:
		return nil, status.Errorf(codes.Aborted, "%s: the copy %s disappeared from the RDS; retry", what, dst)
	case st.phase != copyDone:
		return nil, status.Errorf(codes.Aborted, "%s: copying %s into %s: %s; the volume is created when the copy is complete, retry", what, src.file, dst, st.detail)
	}
	disk, err = c.client.CreateDisk(ctx, routeros.CreateDiskRequest{
		Slot: id, FilePath: dst, Port: params.ints[paramNVMePort], NQN: defaultNQN(id), Comment: src.comment(),
	})
	switch {
	case errors.Is(err, routeros.ErrAlreadyExists):
		if disk, err = c.client.GetDisk(ctx, id); err == nil {
			return c.existingCopy(ctx, req, disk, dst, params, src, minimum)
		}
		return nil, c.rdsStatus(what, err)
	case err != nil:
		return nil, c.rdsStatus(what+": create its disk on the copied file "+dst, err)
	}
	c.copies.forget(dst) // a volume's file from now on: written, never judged as a copy again
	if disk.Size < size {
		if disk, err = c.growCopy(ctx, id, size, dst); err != nil {
			return nil, err
		}
	}
	return volumeResponse(req, disk, params), nil
}

// startVolumeCopy resolves the source, checks the size against it and starts the copy
// into dst unless it runs (a stalled one is removed and restarted), holding the source's
// lock so it is neither deleted nor resized meanwhile. It returns the new volume's size.
func (c *controllerService) startVolumeCopy(ctx context.Context, src *contentSource, id, what, dst string, cr *csi.CapacityRange, minimum int64) (int64, error) {
	release, err := c.resolveSource(ctx, src, id)
	if err != nil {
		return 0, err
	}
	defer release()
	size, err := copySize(cr, minimum, *src)
	if err != nil {
		return 0, err
	}
	st, err := c.copyState(ctx, dst, src.size)
	if err == nil && st.phase == copyStalled {
		c.log.Warn("a copy on the RDS stopped before it was complete; starting it again", "from", src.file, "to", dst, "state", st.detail)
		if err = c.client.RemoveFile(ctx, dst); err == nil {
			c.copies.forget(dst)
		}
	}
	switch {
	case err != nil:
		return 0, c.rdsStatus(what+": start the copy", err)
	case st.phase == copyFailed:
		return 0, c.copyFailure(ctx, what, dst, path.Dir(dst), src.size, st.err)
	case st.phase == copyStalled || st.phase == copyAbsent:
		c.copies.start(src.file, dst)
	}
	return size, nil
}
