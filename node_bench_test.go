package main

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkNodeStageExisting stages an ext4 volume that already has its filesystem:
// connect (loop attach), probe, e2fsck -p, mount. Unstaging between runs is not timed.
// Target: p50 ≤ 50 ms.
func BenchmarkNodeStageExisting(b *testing.B) {
	e := newLoopEnv(b)
	v := e.createVolume("bench-stage", "256M", mountCap(rwoMode, "ext4"))
	must(b, e.stage(v)) // formats once
	must(b, e.unstage(v))
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		must(b, e.stage(v))
		took = append(took, time.Since(start))
		b.StopTimer()
		must(b, e.unstage(v))
		b.StartTimer()
	}
	reportP50(b, took)
}

// BenchmarkNodePublishUnpublish publishes a staged ext4 volume (bind mount) and
// unpublishes it (unmount, rmdir). Target: p50 ≤ 5 ms.
func BenchmarkNodePublishUnpublish(b *testing.B) {
	e := newLoopEnv(b)
	v := e.createVolume("bench-publish", "64M", mountCap(rwoMode, "ext4"))
	must(b, e.stage(v))
	target := e.target("bench")
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		must(b, e.publish(v, target, false))
		must(b, e.unpublish(v, target))
		took = append(took, time.Since(start))
	}
	reportP50(b, took)
	b.StopTimer()
	must(b, e.unstage(v))
}

func reportP50(b *testing.B, took []time.Duration) {
	if len(took) == 0 {
		return
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*9/10].Microseconds())/1000, "p90-ms")
}
