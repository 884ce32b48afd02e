package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBreakerTransitions(t *testing.T) {
	clock := time.Date(2026, 1, 2, 14, 0, 0, 0, time.UTC)
	open := -1
	b := newBreaker(func() time.Time { return clock }, func(n int) { open = n })
	fail := errors.New("connect pvc-1 at 10.0.0.5:4420: target unreachable")
	const id = "pvc-1"
	steps := []struct {
		do        string // fail, ok, wait
		wait      time.Duration
		allowed   bool // allow() before the step
		state     string
		openGauge int
	}{
		{do: "fail", allowed: true, state: "closed", openGauge: 0},
		{do: "fail", allowed: true, state: "closed", openGauge: 0},
		{do: "fail", allowed: true, state: "open", openGauge: 1},
		{do: "wait", wait: 4 * time.Minute, allowed: false, state: "open", openGauge: 1},
		{do: "wait", wait: time.Minute, allowed: false, state: "half-open", openGauge: 1},
		// half-open: one trial passes, it fails, the breaker opens for another cooldown
		{do: "fail", allowed: true, state: "open", openGauge: 1},
		{do: "wait", wait: 5 * time.Minute, allowed: false, state: "half-open", openGauge: 1},
		{do: "ok", allowed: true, state: "closed", openGauge: 0},
		{do: "fail", allowed: true, state: "closed", openGauge: 0},
	}
	for i, s := range steps {
		err := b.allow(id)
		if (err == nil) != s.allowed {
			t.Fatalf("step %d (%s): allow = %v, want allowed=%v", i, s.do, err, s.allowed)
		}
		switch s.do {
		case "fail":
			b.failure(id, fail)
		case "ok":
			b.success(id)
		case "wait":
			clock = clock.Add(s.wait)
		}
		if got := b.state(id); got != s.state {
			t.Fatalf("step %d (%s): state %s, want %s", i, s.do, got, s.state)
		}
		if open != s.openGauge && s.do != "wait" {
			t.Fatalf("step %d: breakers_open %d, want %d", i, open, s.openGauge)
		}
	}
	if b.state("pvc-other") != "closed" || b.allow("pvc-other") != nil {
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
