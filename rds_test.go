package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

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
