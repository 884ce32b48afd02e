package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// benchResult is one line of `go test -bench` output: the benchmark's name (without the
// -GOMAXPROCS suffix), its iterations and every metric by unit (ns/op, B/op, allocs/op and
// the benchmark's own ReportMetric units).
type benchResult struct {
	Name       string
	Iterations int
	Metrics    map[string]float64
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
		r := benchResult{Name: procsSuffix.ReplaceAllString(fields[0], ""), Iterations: n, Metrics: map[string]float64{}}
		ok := true
		for i := 2; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				ok = false
				break
			}
			r.Metrics[fields[i+1]] = v
		}
		if ok {
			results[r.Name] = r
		}
	}
	return results
}

// goBench runs `go test -run '^$' -bench pattern -benchmem` on the packages and returns
// the parsed results with the raw output (for error messages).
func goBench(ctx context.Context, root, pattern, benchtime string, tags string, pkgs ...string) (map[string]benchResult, string, error) {
	args := []string{"test", "-run", "^$", "-bench", pattern, "-benchmem", "-benchtime", benchtime, "-count", "1"}
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

// benchMetric returns the metric of the named result, or an error naming what is missing.
func benchMetric(results map[string]benchResult, name, unit string) (float64, error) {
	r, ok := results[name]
	if !ok {
		return 0, fmt.Errorf("%s did not run", name)
	}
	v, ok := r.Metrics[unit]
	if !ok {
		return 0, fmt.Errorf("%s reported no %s", name, unit)
	}
	return v, nil
}
