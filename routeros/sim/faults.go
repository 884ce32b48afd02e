package sim

import (
	"context"
	"strings"
	"sync"
	"time"
)

// Stream names where RouterOS errors are written; which one the hardware uses is
// unverified, so tests exercise both.
type Stream int

const (
	Stdout Stream = iota
	Stderr
)

// DropPoint says when DropConnection cuts the TCP connection.
type DropPoint int

const (
	// DropBeforeRun cuts the connection before the command runs: it has no effect.
	DropBeforeRun DropPoint = iota
	// DropAfterRun cuts it after the command ran but before its output is sent: the change
	// happened and the client cannot know (the case idempotent retries exist for).
	DropAfterRun
)

// Hold is a Hang in force: matching commands block until Release or until their client
// closes the channel.
type Hold struct {
	match    string
	mu       sync.Mutex
	held     int
	released chan struct{}
	arrived  chan struct{} // closed when the first command is held
	once     sync.Once
}

// Release lets every held and future matching command run, and ends the hold.
func (h *Hold) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.released:
	default:
		close(h.released)
	}
}

// Held is how many commands this hold has blocked so far.
func (h *Hold) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// Wait returns once a command is held, or with the context's error.
func (h *Hold) Wait(ctx context.Context) error {
	select {
	case <-h.arrived:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *Hold) hold() {
	h.mu.Lock()
	h.held++
	h.mu.Unlock()
	h.once.Do(func() { close(h.arrived) })
}

func (h *Hold) isReleased() bool {
	select {
	case <-h.released:
		return true
	default:
		return false
	}
}

type dropRule struct {
	match string
	at    DropPoint
}

type latencyRule struct {
	match string
	d     time.Duration
}

// faults is the fault-injection state; it has its own lock so a test can change it while
// commands run.
type faults struct {
	mu          sync.Mutex
	latency     time.Duration
	slow        []latencyRule
	holds       []*Hold
	drops       []dropRule
	errStream   Stream
	errExit     int
	maxSessions int
	diskFull    bool
	log         []string
	stats       Stats
}

// Stats counts what the SSH side saw, for tests of connection reuse and session bounds.
type Stats struct {
	Connections     int // SSH connections that completed the handshake
	Sessions        int // exec channels accepted
	Rejected        int // channels refused by the session limit
	Active          int // channels open now
	PeakConcurrency int // most channels open at once on one connection
}

// plan is what the faults do to one command.
type plan struct {
	latency time.Duration
	holds   []*Hold
	drop    *dropRule
}

// admit logs the command and decides its faults; a drop rule fires once.
func (f *faults) admit(cmd string) plan {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, cmd)
	p := plan{latency: f.latency}
	for _, r := range f.slow {
		if strings.Contains(cmd, r.match) {
			p.latency += r.d
		}
	}
	live := f.holds[:0]
	for _, h := range f.holds {
		if h.isReleased() {
			continue
		}
		live = append(live, h)
		if strings.Contains(cmd, h.match) {
			p.holds = append(p.holds, h)
		}
	}
	f.holds = live
	for i, r := range f.drops {
		if strings.Contains(cmd, r.match) {
			p.drop = &r
			f.drops = append(f.drops[:i], f.drops[i+1:]...)
			break
		}
	}
	return p
}

func (f *faults) errorOutput() (Stream, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.errStream, f.errExit
}

func (f *faults) isDiskFull() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.diskFull
}

func (f *faults) sessionLimit() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxSessions
}

func (f *faults) update(fn func(st *Stats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.stats)
}

// wait applies a plan's latency and holds; it returns early with the context's error when
// the client gives up on the command.
func (p plan) wait(ctx context.Context) error {
	if p.latency > 0 {
		t := time.NewTimer(p.latency)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	for _, h := range p.holds {
		h.hold()
		select {
		case <-h.released:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// SetLatency delays every command by d before it runs (d = 0 turns it off).
func (s *Sim) SetLatency(d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.latency = d
}

// SetLatencyFor adds d to every command containing match (on top of SetLatency).
func (s *Sim) SetLatencyFor(match string, d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.slow = append(s.faults.slow, latencyRule{match, d})
}

// Hang blocks every command containing match ("" matches all) until the returned Hold is
// released or the client closes the command's channel or connection.
func (s *Sim) Hang(match string) *Hold {
	h := &Hold{match: match, released: make(chan struct{}), arrived: make(chan struct{})}
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.holds = append(s.faults.holds, h)
	return h
}

// DropConnection closes the TCP connection of the next command containing match, at the
// given point; it fires once per call.
func (s *Sim) DropConnection(match string, at DropPoint) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.drops = append(s.faults.drops, dropRule{match, at})
}

// SetErrorOutput chooses the stream RouterOS errors are written to and the exit status
// sent with them (default: stdout, 0).
func (s *Sim) SetErrorOutput(stream Stream, exitCode int) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.errStream, s.faults.errExit = stream, exitCode
}

// SetMaxSessions limits concurrent exec channels per SSH connection; a channel open beyond
// it is rejected (after a short grace for a channel that is just closing). 0: no limit.
func (s *Sim) SetMaxSessions(n int) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.maxSessions = n
}

// SetDiskFull makes every allocation (new disk, grow, copy) fail with
// "failure: not enough space", whatever the pool's free space.
func (s *Sim) SetDiskFull(full bool) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.diskFull = full
}

// Commands returns every command received over SSH, in order of arrival (including
// rejected, hung and dropped ones).
func (s *Sim) Commands() []string {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return append([]string(nil), s.faults.log...)
}

// ResetCommands empties the command log.
func (s *Sim) ResetCommands() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.log = nil
}

// Stats reports what the SSH side has seen.
func (s *Sim) Stats() Stats {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.stats
}
