package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Status of a figure against its target.
const (
	statusOK   = "ok"
	statusMiss = "MISS"
	statusNA   = "n/a"
)

// figure is one row of the report: a measured value and the target it must not exceed.
// A figure that could not be measured carries no value and says why (Reason); it never
// shows a number it did not measure.
type figure struct {
	Key    string   `json:"key"`
	Name   string   `json:"figure"`
	Value  *float64 `json:"value"`
	Unit   string   `json:"unit"`
	Target float64  `json:"target"`
	Status string   `json:"status"`
	Reason string   `json:"reason,omitempty"` // why n/a
	Detail string   `json:"detail,omitempty"` // how it was measured, side figures
}

// spec names a figure and its target, before it is measured.
type spec struct {
	key, name, unit string
	target          float64
}

// measured returns the figure with value v, judged against the target (lower is better
// for every figure of the report).
func (s spec) measured(v float64, detail string, args ...any) figure {
	f := s.figure()
	f.Value = &v
	f.Status = statusOK
	if v > s.target || math.IsNaN(v) {
		f.Status = statusMiss
	}
	f.Detail = fmt.Sprintf(detail, args...)
	return f
}

// na returns the figure as not measurable, with the reason.
func (s spec) na(format string, args ...any) figure {
	f := s.figure()
	f.Status = statusNA
	f.Reason = fmt.Sprintf(format, args...)
	return f
}

func (s spec) figure() figure {
	return figure{Key: s.key, Name: s.name, Unit: s.unit, Target: s.target}
}

// naAll marks every spec as not measurable for the same reason.
func naAll(reason string, specs ...spec) []figure {
	out := make([]figure, len(specs))
	for i, s := range specs {
		out[i] = s.na("%s", reason)
	}
	return out
}

// noteAll adds a note to the details of every figure (e.g. a process that did not stop
// cleanly after it was measured).
func noteAll(figs []figure, note string) {
	for i := range figs {
		if figs[i].Detail != "" {
			figs[i].Detail += "; "
		}
		figs[i].Detail += "note: " + note
	}
}

// formatNumber prints a value with the precision its size deserves.
func formatNumber(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a < 0.1:
		return fmt.Sprintf("%.3f", v)
	case a < 10:
		return fmt.Sprintf("%.2f", v)
	case a < 1000:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func withUnit(v float64, unit string) string {
	if unit == "" {
		return formatNumber(v)
	}
	return formatNumber(v) + " " + unit
}

// report is the whole run, as printed and as written to JSON.
type report struct {
	Kind     string    `json:"kind"` // "bench" or "bench-vm"
	Started  time.Time `json:"started"`
	Took     string    `json:"took"`
	Host     hostInfo  `json:"host"`
	Figures  []figure  `json:"figures"`
	Passed   bool      `json:"passed"`
	Problems []string  `json:"problems,omitempty"` // misses and figures that could not be measured
}

type hostInfo struct {
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	// LoadBefore and LoadAfter are the 1-minute load averages when the run started and
	// ended: other work on the machine inflates every latency figure.
	LoadBefore float64 `json:"load_before"`
	LoadAfter  float64 `json:"load_after"`
}

// loadAverage is the 1-minute load average (0 when unknown).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	var l float64
	fmt.Sscanf(string(b), "%f", &l)
	return l
}

func (r *report) finish(start time.Time) {
	r.Took = time.Since(start).Round(100 * time.Millisecond).String()
	r.Host.LoadAfter = loadAverage()
	r.Passed = true
	r.Problems = nil
	for _, f := range r.Figures {
		switch f.Status {
		case statusMiss:
			r.Passed = false
			r.Problems = append(r.Problems, fmt.Sprintf("MISS %s: %s > %s", f.Name, withUnit(*f.Value, f.Unit), withUnit(f.Target, f.Unit)))
		case statusNA:
			r.Passed = false
			r.Problems = append(r.Problems, fmt.Sprintf("n/a %s: %s", f.Name, f.Reason))
		}
	}
}

// print writes the table: figure, value, target, ok/MISS (or n/a and why), then the
// details of each row.
func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "\nrds-csi %s — commit %s, %s, %d CPU %s, kernel %s, took %s, load average %.1f before, %.1f after\n",
		r.Kind, r.Host.Commit, r.Host.GoVersion, r.Host.CPUs, r.Host.CPUModel, r.Host.Kernel, r.Took, r.Host.LoadBefore, r.Host.LoadAfter)
	// The run itself keeps about one CPU busy; more than that at the end is other work too.
	if cpus := float64(r.Host.CPUs); r.Host.LoadBefore > cpus || r.Host.LoadAfter > cpus+1 {
		fmt.Fprintf(w, "WARNING: the machine was busy (load %.1f on %d CPUs): other work inflates the latency figures; rerun on a quiet machine before reading much into a miss\n",
			max(r.Host.LoadBefore, r.Host.LoadAfter), r.Host.CPUs)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tfigure\tvalue\ttarget\tresult")
	for i, f := range r.Figures {
		value, result := "—", f.Status
		if f.Value != nil {
			value = withUnit(*f.Value, f.Unit)
		}
		if f.Status == statusNA {
			result = "n/a (" + f.Reason + ")"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t≤ %s\t%s\n", i+1, f.Name, value, withUnit(f.Target, f.Unit), result)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for i, f := range r.Figures {
		if f.Detail != "" {
			fmt.Fprintf(w, "  [%d] %s\n", i+1, f.Detail)
		}
	}
	if r.Passed {
		fmt.Fprintf(w, "\nevery target met\n")
	} else {
		fmt.Fprintf(w, "\n%d figure(s) missing or missed:\n  %s\n", len(r.Problems), strings.Join(r.Problems, "\n  "))
	}
}

// write stores the report as bench/out/<kind>-<timestamp>.json and as the latest of its kind.
func (r *report) write(outDir string) (string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", err
	}
	b = append(b, '\n')
	path := filepath.Join(outDir, fmt.Sprintf("%s-%s.json", r.Kind, r.Started.UTC().Format("20060102T150405Z")))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return "", err
	}
	latest := "latest.json"
	if r.Kind != "bench" {
		latest = "latest-" + strings.TrimPrefix(r.Kind, "bench-") + ".json"
	}
	return path, os.WriteFile(filepath.Join(outDir, latest), b, 0o644)
}
