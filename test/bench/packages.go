package main

import (
	"context"
	"fmt"
	"strings"
)

// The packages' own Go benchmarks behind three figures; each figure is the worst of the
// benchmark's cases.
var packageBenchmarks = []struct {
	spec  spec
	pkg   string
	bench string
	cases []string // sub-benchmarks; empty: the benchmark itself
}{
	{figParse, "./routeros", "BenchmarkParseDetail1000", []string{"width80", "width230"}},
	{figResolve, "./nvme", "BenchmarkResolve256", []string{"warm", "cold-worst"}},
	{figMountinfo, "./mount", "BenchmarkLookup10000", nil},
}

// benchCount is how many times each package benchmark runs; its figure is the median.
const benchCount = 3

// packageFigures runs the parse, resolve and mountinfo benchmarks in one `go test` and
// reads their ns/op.
func packageFigures(ctx context.Context, root string) []figure {
	var names, pkgs []string
	for _, b := range packageBenchmarks {
		names = append(names, b.bench)
		pkgs = append(pkgs, b.pkg)
	}
	results, out, runErr := goBench(ctx, root, "^("+strings.Join(names, "|")+")$", "1s", benchCount, "", pkgs...)
	var figs []figure
	for _, b := range packageBenchmarks {
		figs = append(figs, benchFigure(b.spec, results, b.pkg, b.bench, b.cases, runErr, out))
	}
	return figs
}

// benchFigure makes a figure of the worst ns/op among a benchmark's cases.
func benchFigure(s spec, results map[string]benchResult, pkg, bench string, cases []string, runErr error, out string) figure {
	names := []string{bench}
	if len(cases) > 0 {
		names = names[:0]
		for _, c := range cases {
			names = append(names, bench+"/"+c)
		}
	}
	worst := -1.0
	var parts []string
	for _, n := range names {
		ns, err := benchMetric(results, n, "ns/op")
		if err != nil {
			if runErr != nil {
				return s.na("%v: %s", runErr, lastLines(out, 3))
			}
			return s.na("%v", err)
		}
		r := results[n]
		label := strings.TrimPrefix(n, bench+"/") + " "
		if n == bench {
			label = ""
		}
		parts = append(parts, fmt.Sprintf("%s%s ms/op (%.0f B/op, %.0f allocs/op)",
			label, formatNumber(ns/1e6), r.metric("B/op"), r.metric("allocs/op")))
		worst = max(worst, ns)
	}
	worstNote := ""
	if len(names) > 1 {
		worstNote = "; the worst case is shown"
	}
	return s.measured(worst/1e6, "go test -bench %s -count %d %s, medians: %s%s", bench, benchCount, pkg, strings.Join(parts, ", "), worstNote)
}
