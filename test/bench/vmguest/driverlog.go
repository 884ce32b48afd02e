package main

import (
	"bufio"
	"os"
	"strings"
	"time"
)

// logEvents returns the times of the driver's log lines (slog text format) that carry msg
// and mention the volume, from since on: how the figures are explained, not measured.
func logEvents(path, msg, volumeID string, since time.Time) []time.Time {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []time.Time
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="`+msg+`"`) || !strings.Contains(line, volumeID) {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err == nil && !t.Before(since) {
			out = append(out, t)
		}
	}
	return out
}
