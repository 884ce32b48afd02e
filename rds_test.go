package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// Every answer from the RDS counts as contact, also a refusal; a transport failure or a
// deadline does not, and pings are judged by the health loop alone.
func TestRDSHealthObserve(t *testing.T) {
	refused := func(k routeros.Kind) error {
		return fmt.Errorf("create volume: %w", &routeros.CommandError{Op: "GetDisk", Kind: k, Exit: 1})
	}
	tests := []struct {
		name string
		op   string
		err  error
		up   bool
	}{
		{"success", "GetDisk", nil, true},
		{"not found", "GetDisk", refused(routeros.KindNotFound), true},
		{"refused otherwise", "CreateDisk", refused(routeros.KindOther), true},
		{"transport", "GetDisk", refused(routeros.KindTransport), false},
		{"deadline", "GetDisk", fmt.Errorf("routeros GetDisk: no answer: %w", context.DeadlineExceeded), false},
		{"ping answered", "Ping", nil, false},
		{"ping refused", "Ping", refused(routeros.KindOther), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			changes := 0
			h := newRDSHealth(nil, discardLog, func(bool) { changes++ })
			h.observe(tc.op, tc.err)
			if h.ready() != tc.up || (changes == 1) != tc.up {
				t.Errorf("after %s: ready %v, %d changes; want ready %v", tc.name, h.ready(), changes, tc.up)
			}
		})
	}
}

func TestRDSHealthReadiness(t *testing.T) {
	fail := errors.New("connection refused")
	results := make(chan error, 10)
	h := newRDSHealth(func(context.Context) error { return <-results }, discardLog, nil)
	h.interval = 20 * time.Millisecond
	h.maxDelay = 20 * time.Millisecond
	if h.ready() {
		t.Fatal("ready before any contact")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go h.run(ctx)
	results <- fail
	results <- nil
	waitFor(t, h.ready, "ready after a successful ping")
	// No further successes: readiness expires after three intervals.
	waitFor(t, func() bool { return !h.ready() }, "not ready once the RDS stops answering")
	results <- nil
	waitFor(t, h.ready, "ready again")
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBreakerTransitions walks one volume's breaker through closed, open and half-open as
// a caller sees it: allow lets the attempt through, or refuses it naming when the next one
// goes ahead.
func TestBreakerTransitions(t *testing.T) {
	clock := time.Date(2026, 1, 2, 14, 0, 0, 0, time.UTC)
	open := -1
	b := newBreaker(func() time.Time { return clock }, func(n int) { open = n })
	fail := errors.New("connect pvc-1 at 10.0.0.5:4420: target unreachable")
	const id = "pvc-1"
	steps := []struct {
		do        string        // allow, fail, ok, wait
		wait      time.Duration // wait: how long
		retryAt   string        // allow: "" lets the attempt through, else the retry time the refusal names
		openGauge int           // fail, ok: breakers_open after the step
	}{
		// closed: attempts go through until the third failure in a row
		{do: "allow"}, {do: "fail", openGauge: 0},
		{do: "allow"}, {do: "fail", openGauge: 0},
		{do: "allow"}, {do: "fail", openGauge: 1},
		// open for the cooldown
		{do: "allow", retryAt: "14:05:00 UTC"},
		{do: "wait", wait: 4 * time.Minute},
		{do: "allow", retryAt: "14:05:00 UTC"},
		// half-open: one trial passes, the next caller waits for it; it fails, the breaker
		// opens for another cooldown
		{do: "wait", wait: time.Minute},
		{do: "allow"},
		{do: "allow", retryAt: "14:05:01 UTC"},
		{do: "fail", openGauge: 1},
		{do: "allow", retryAt: "14:10:00 UTC"},
		// half-open again: the trial succeeds and the breaker closes
		{do: "wait", wait: 5 * time.Minute},
		{do: "allow"},
		{do: "ok", openGauge: 0},
		{do: "allow"}, {do: "allow"},
		// closed again: one failure counts from zero
		{do: "fail", openGauge: 0},
		{do: "allow"},
	}
	for i, s := range steps {
		switch s.do {
		case "allow":
			err := b.allow(id)
			switch {
			case s.retryAt == "" && err != nil:
				t.Fatalf("step %d: allow = %v, want the attempt let through", i, err)
			case s.retryAt != "" && (status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "retries automatically at "+s.retryAt)):
				t.Fatalf("step %d: allow = %v, want Unavailable naming a retry at %s", i, err, s.retryAt)
			}
			continue
		case "fail":
			b.failure(id, fail)
		case "ok":
			b.success(id)
		case "wait":
			clock = clock.Add(s.wait)
			continue
		}
		if open != s.openGauge {
			t.Fatalf("step %d (%s): breakers_open %d, want %d", i, s.do, open, s.openGauge)
		}
	}
	for range breakerThreshold {
		b.failure(id, fail)
	}
	if b.allow("pvc-other") != nil {
		t.Fatal("a breaker of one volume affected another")
	}
}

func TestBreakerMessage(t *testing.T) {
	clock := time.Date(2026, 1, 2, 14, 3, 4, 0, time.UTC)
	b := newBreaker(func() time.Time { return clock }, nil)
	for range breakerThreshold {
		b.failure("pvc-9", status.Error(codes.NotFound, "the RDS does not export pvc-9"))
	}
	err := b.allow("pvc-9")
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("open breaker: %v, want Unavailable", err)
	}
	for _, want := range []string{"pvc-9", "failed 3 times", "the RDS does not export pvc-9", "retries automatically at 14:08:04 UTC",
		"a successful stage or restarting the node plugin resets it"} {
		if !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("message %q lacks %q", status.Convert(err).Message(), want)
		}
	}
}
