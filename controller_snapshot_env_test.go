package main

import "time"

// quickCopies shortens the copy timing for tests. The simulator's copies grow their file
// and reach the full size only when complete, so a short settle is still right there; the
// tests of preallocating copies set a settle that spans last-modified's one-second ticks.
func quickCopies(t *copyTracker) {
	t.settle, t.poll, t.margin = 20*time.Millisecond, 5*time.Millisecond, 100*time.Millisecond
}
