package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// benchResult is a benchmark's result lines of `go test -bench` output (one per -count):
// its name (without the -GOMAXPROCS suffix), the iterations of its last run and every
// metric by unit (ns/op, B/op, allocs/op and the benchmark's own ReportMetric units), one
// value per run.
type benchResult struct {
	Name       string
	Iterations int
	Metrics    map[string][]float64
}

// metric is the median of the runs' values of unit (0 when absent).
func (r benchResult) metric(unit string) float64 {
	vs := slices.Clone(r.Metrics[unit])
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	return vs[len(vs)/2]
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

// parseBenchOutput reads the result lines of `go test -bench` output; everything else
// (logs, PASS, ok lines) is ignored.
func parseBenchOutput(out string) map[string]benchResult {
	results := map[string]benchResult{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || !strings.HasPrefix(fields[0], "Benchmark") || len(fields)%2 != 0 {
			continue
		}
		n, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		name := procsSuffix.ReplaceAllString(fields[0], "")
		values := map[string]float64{}
		ok := true
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				ok = false
				break
			}
			values[fields[i+1]] = v
		}
		if !ok {
			continue
		}
		r, seen := results[name]
		if !seen {
			r = benchResult{Name: name, Metrics: map[string][]float64{}}
		}
		r.Iterations = n
		for unit, v := range values {
			r.Metrics[unit] = append(r.Metrics[unit], v)
		}
		results[name] = r
	}
	return results
}

// goBench runs `go test -run '^$' -bench pattern -benchmem` on the packages and returns
// the parsed results with the raw output (for error messages).
func goBench(ctx context.Context, root, pattern, benchtime string, count int, tags string, pkgs ...string) (map[string]benchResult, string, error) {
	args := []string{"test", "-run", "^$", "-bench", pattern, "-benchmem", "-benchtime", benchtime, "-count", strconv.Itoa(count)}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, pkgs...)
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = root
	raw, err := cmd.CombinedOutput()
	out := string(raw)
	if err != nil {
		return parseBenchOutput(out), out, fmt.Errorf("go %s: %v", strings.Join(args, " "), err)
	}
	return parseBenchOutput(out), out, nil
}

// lastLines returns the last n lines of s, for error messages.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// benchMetric returns the median of the named result's metric over its runs, or an error
// naming what is missing.
func benchMetric(results map[string]benchResult, name, unit string) (float64, error) {
	r, ok := results[name]
	if !ok {
		return 0, fmt.Errorf("%s did not run", name)
	}
	if len(r.Metrics[unit]) == 0 {
		return 0, fmt.Errorf("%s reported no %s", name, unit)
	}
	return r.metric(unit), nil
}
