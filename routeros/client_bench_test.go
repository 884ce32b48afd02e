package routeros_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"srvlab.io/rds-csi/routeros"
	"srvlab.io/rds-csi/routeros/sim"
)

const (
	concurrentCreates = 50
	simLatency        = 50 * time.Millisecond
)

// createAll creates n disks, with `parallel` callers at a time, and returns how long it took.
func createAll(tb testing.TB, c *routeros.Client, from, n, parallel int) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallel)
	errs := make(chan error, n)
	for i := from; i < from+n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			d, err := c.CreateDisk(ctx, createReq(slotN(i), 1<<30))
			if err == nil && (d.Slot != slotN(i) || d.Size != 1<<30) {
				err = &routeros.CommandError{Op: "test", Output: "wrong disk back: " + d.Slot}
			}
			errs <- err
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			tb.Fatal(err)
		}
	}
	return took
}

// checkNoneLostOrDoubled: every create reached the RDS exactly once, and every disk exists.
func checkNoneLostOrDoubled(tb testing.TB, ts *sim.TestServer, c *routeros.Client, from, n int) {
	tb.Helper()
	adds := map[string]int{}
	for _, cmd := range ts.Commands() {
		if !strings.HasPrefix(cmd, "/disk add ") {
			continue
		}
		i := strings.Index(cmd, `slot="`)
		adds[cmd[i+6:i+6+len(slotN(0))]]++
	}
	for i := from; i < from+n; i++ {
		if adds[slotN(i)] != 1 {
			tb.Errorf("%s was sent %d times", slotN(i), adds[slotN(i)])
		}
	}
	disks, err := c.ListDisks(context.Background(), "pvc-")
	if err != nil {
		tb.Fatal(err)
	}
	var slots []string
	for _, d := range disks {
		slots = append(slots, d.Slot)
	}
	for i := from; i < from+n; i++ {
		if _, found := slices.BinarySearch(slots, slotN(i)); !found {
			tb.Errorf("%s missing from the listing", slotN(i))
		}
	}
}

// TestConcurrentCreates: 50 creates at once through 4 sessions against an RDS that takes
// 50ms per command: none lost, none doubled, never more than 4 sessions open.
func TestConcurrentCreates(t *testing.T) {
	ts, c := startSim(t, sim.Options{Latency: simLatency})
	createAll(t, c, 0, concurrentCreates, concurrentCreates)
	checkNoneLostOrDoubled(t, ts, c, 0, concurrentCreates)
	if st := ts.Stats(); st.PeakConcurrency > 4 || st.Connections != 1 {
		t.Errorf("stats %+v: want at most 4 sessions on one connection", st)
	}
}

// BenchmarkConcurrentCreates50 compares 50 creates one at a time with 50 at once (4 sessions,
// 50ms per command). Target: concurrent ≤ 1/3 of serial.
func BenchmarkConcurrentCreates50(b *testing.B) {
	var serial, concurrent time.Duration
	runs := 0
	for b.Loop() {
		ts, c := startSim(b, sim.Options{Latency: simLatency})
		serial += createAll(b, c, 0, concurrentCreates, 1)
		concurrent += createAll(b, c, concurrentCreates, concurrentCreates, concurrentCreates)
		checkNoneLostOrDoubled(b, ts, c, 0, 2*concurrentCreates)
		runs++
	}
	b.ReportMetric(float64(serial.Milliseconds())/float64(runs), "serial-ms")
	b.ReportMetric(float64(concurrent.Milliseconds())/float64(runs), "concurrent-ms")
	b.ReportMetric(float64(concurrent)/float64(serial), "concurrent/serial")
}

// BenchmarkClientOverhead: one GetDisk on loopback against a simulator with no latency
// (session open, exec, output, parse). Target: p50 < 1ms.
func BenchmarkClientOverhead(b *testing.B) {
	_, c := startSim(b, sim.Options{})
	ctx := context.Background()
	if _, err := c.CreateDisk(ctx, createReq(slotN(1), 1<<30)); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := c.GetDisk(ctx, slotN(1)); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
