package main

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestVolumeLocksRefuseConcurrentHolders(t *testing.T) {
	l := newVolumeLocks()
	release, ok := l.tryLock("pvc-1")
	if !ok {
		t.Fatal("first lock refused")
	}
	if _, ok := l.tryLock("pvc-1"); ok {
		t.Fatal("second holder of pvc-1 admitted")
	}
	if r, ok := l.tryLock("pvc-2"); !ok {
		t.Fatal("another volume blocked")
	} else {
		r()
	}
	release()
	release() // idempotent
	if r, ok := l.tryLock("pvc-1"); !ok {
		t.Fatal("lock not released")
	} else {
		r()
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
