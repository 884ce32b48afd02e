package main

import (
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Breaker settings: after breakerThreshold consecutive staging failures of one volume
// the node stops trying it for breakerCooldown, then lets one trial through.
const (
	breakerThreshold = 3
	breakerCooldown  = 5 * time.Minute
)

// breaker is a per-volume circuit breaker for staging. kubelet retries a failing
// NodeStageVolume with a short backoff; when the cause is on the RDS side (a volume not
// exported, a target refusing the host), each retry costs a connect attempt and log noise
// on both ends. After a few failures in a row the breaker answers at once, and says when
// it tries again.
//
// States: closed (failures below the threshold); open (answering Unavailable until the
// cooldown ends); half-open (cooldown over: one call is let through as a trial; success
// closes the breaker, failure opens it again for another cooldown). It lives in memory
// only, so restarting the node plugin resets every breaker, as the message promises.
type breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time
	onChange  func(open int) // reports how many volumes are not closed (for a gauge)

	mu   sync.Mutex
	vols map[string]*breakerState
}

type breakerState struct {
	failures  int
	openUntil time.Time // end of the current cooldown; meaningful once failures >= threshold
	trial     bool      // a half-open trial is running
	lastErr   string
}

func newBreaker(now func() time.Time, onChange func(int)) *breaker {
	return &breaker{threshold: breakerThreshold, cooldown: breakerCooldown, now: now, onChange: onChange, vols: map[string]*breakerState{}}
}

// allow returns nil when a staging attempt may go ahead, or an Unavailable status that
// says when the next attempt happens and what resets the breaker.
func (b *breaker) allow(id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.vols[id]
	if s == nil || s.failures < b.threshold {
		return nil
	}
	now := b.now()
	if !now.Before(s.openUntil) && !s.trial {
		s.trial = true // half-open: this call is the one trial
		return nil
	}
	retry := s.openUntil
	if !now.Before(retry) {
		retry = now.Add(time.Second) // a trial is running; the next call after it decides
	}
	return status.Errorf(codes.Unavailable,
		"volume %s: staging failed %d times in a row (last error: %s); the node plugin pauses staging it and retries automatically at %s; a successful stage or restarting the node plugin resets it",
		id, s.failures, s.lastErr, retry.UTC().Format("15:04:05 MST"))
}

// success closes the breaker of id.
func (b *breaker) success(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.vols[id]; ok {
		delete(b.vols, id)
		b.changed()
	}
}

// failure counts a failed staging attempt; at the threshold, or when a half-open trial
// fails, the breaker opens for a cooldown.
func (b *breaker) failure(id string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.vols[id]
	if s == nil {
		s = &breakerState{}
		b.vols[id] = s
	}
	s.failures++
	s.lastErr = status.Convert(err).Message()
	s.trial = false
	if s.failures >= b.threshold {
		s.openUntil = b.now().Add(b.cooldown)
	}
	b.changed()
}

// changed reports the number of breakers not closed; the caller holds b.mu.
func (b *breaker) changed() {
	if b.onChange == nil {
		return
	}
	n := 0
	for _, s := range b.vols {
		if s.failures >= b.threshold {
			n++
		}
	}
	b.onChange(n)
}
