package main

import "testing"

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
