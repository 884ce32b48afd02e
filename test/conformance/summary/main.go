// Command summary reads the JSON report of an e2e.test run (--ginkgo.json-report) and prints,
// per storage test suite (provisioning, volumes, volumeMode, ...), how many specs passed,
// failed and were skipped, then every failure and every distinct skip reason. It exits 1 when
// a spec failed or none ran.
//
//	summary report.json
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"time"
)

// spec is the part of a Ginkgo v2 spec report the summary uses.
type spec struct {
	ContainerHierarchyTexts []string
	LeafNodeText            string
	LeafNodeType            string
	State                   string
	RunTime                 time.Duration
	Failure                 struct{ Message string }
}

type suiteReport struct {
	SpecReports []spec
	RunTime     time.Duration
}

// counts is one row of the table.
type counts struct{ passed, failed, skipped int }

// patternSuite finds "[Testpattern: ...] <suite>" in a container's text.
var patternSuite = regexp.MustCompile(`\[Testpattern: [^\]]*\] (\S+)`)

// suiteOf names the storage test suite a spec belongs to ("" for setup nodes and others).
func suiteOf(s spec) string {
	for _, t := range s.ContainerHierarchyTexts {
		if m := patternSuite.FindStringSubmatch(t); m != nil {
			return m[1]
		}
	}
	return ""
}

func name(s spec) string {
	return strings.Join(append(append([]string{}, s.ContainerHierarchyTexts...), s.LeafNodeText), " ")
}

func summarize(r io.Reader, w io.Writer) (ok bool, err error) {
	var reports []suiteReport
	if err := json.NewDecoder(r).Decode(&reports); err != nil {
		return false, fmt.Errorf("reading the Ginkgo JSON report: %w", err)
	}
	rows := map[string]*counts{}
	var total counts
	var failures []string
	skips := map[string]int{}
	var wall time.Duration
	for _, rep := range reports {
		wall += rep.RunTime
		for _, s := range rep.SpecReports {
			if s.LeafNodeType != "" && s.LeafNodeType != "It" {
				if s.State != "passed" && s.State != "skipped" {
					failures = append(failures, fmt.Sprintf("%s (%s): %s", s.LeafNodeType, s.State, firstLine(s.Failure.Message)))
				}
				continue // suite setup and teardown nodes
			}
			suite := suiteOf(s)
			if suite == "" {
				suite = "(other)"
			}
			if s.State == "skipped" && s.Failure.Message == "" {
				continue // not selected by the run's focus and skip: not a test of this run
			}
			c := rows[suite]
			if c == nil {
				c = &counts{}
				rows[suite] = c
			}
			switch s.State {
			case "passed":
				c.passed++
				total.passed++
			case "skipped", "pending":
				c.skipped++
				total.skipped++
				skips[firstLine(s.Failure.Message)]++
			default:
				c.failed++
				total.failed++
				failures = append(failures, fmt.Sprintf("%s [%s, %s]: %s", name(s), s.State, s.RunTime.Round(time.Second), firstLine(s.Failure.Message)))
			}
		}
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(w, "%-28s %7s %7s %7s\n", "test suite", "passed", "failed", "skipped")
	for _, n := range names {
		c := rows[n]
		fmt.Fprintf(w, "%-28s %7d %7d %7d\n", n, c.passed, c.failed, c.skipped)
	}
	fmt.Fprintf(w, "%-28s %7d %7d %7d   (wall %s)\n", "total", total.passed, total.failed, total.skipped, wall.Round(time.Second))
	for _, f := range failures {
		fmt.Fprintf(w, "FAILED  %s\n", f)
	}
	reasons := make([]string, 0, len(skips))
	for r := range skips {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "skipped %4d× %s\n", skips[r], r)
	}
	return len(failures) == 0 && total.passed > 0, nil
}

// firstLine is a message's first line, without the skipper's "[SKIPPED] " prefix.
func firstLine(m string) string {
	m, _, _ = strings.Cut(strings.TrimSpace(m), "\n")
	return strings.TrimPrefix(m, "[SKIPPED] ")
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: summary report.json")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer f.Close()
	ok, err := summarize(f, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}
