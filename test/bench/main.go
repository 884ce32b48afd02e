// Command bench is rds-csi's footprint-and-speed report (`make bench`, issue 10): it
// builds the driver as `make build` does, runs it as whole processes against the RouterOS
// simulator (and, for the node plugin, the loop-device stand-in for NVMe/TCP), runs the
// packages' Go benchmarks, and prints one table — figure, value, target, ok/MISS — which
// it also writes as JSON to bench/out/bench-<timestamp>.json and bench/out/latest.json.
//
//	go run ./test/bench          # everything but the VM figures (a few minutes)
//	go run ./test/bench -vm      # the three real-kernel figures, in the test VM
//
// A figure that cannot be measured here (a missing prerequisite, a piece of the driver
// that is not there) is shown as n/a with the reason, never as a number. The exit status
// is 0 only when every figure was measured and met its target.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"srvlab.io/rds-csi/test/bench/internal/child"
	"srvlab.io/rds-csi/test/internal/scratch"
)

// The figures and their targets (issue 10).
var (
	figBinary    = spec{"binary_size", "stripped static binary size", "MiB", 15}
	figNodeRSS   = spec{"node_rss_10_staged", "node plugin RSS after start, idle, 10 staged volumes", "MiB", 15}
	figCtrlRSS   = spec{"controller_rss_idle", "controller RSS idle", "MiB", 20}
	figStart     = spec{"start_to_identity", "process start to Identity serving (median)", "ms", 50}
	figCreateP50 = spec{"create_overhead_p50", "CreateVolume overhead beyond RouterOS time (sim, 0 latency), p50", "ms", 2}
	figCreateP99 = spec{"create_overhead_p99", "CreateVolume overhead beyond RouterOS time (sim, 0 latency), p99", "ms", 10}
	figParallel  = spec{"parallel_create_ratio", "50 parallel CreateVolume, 50 ms/command, 4 sessions: time vs one-at-a-time", "×", 1.0 / 3}
	figParse     = spec{"parse_1000_disks", "parse of a 1 000-disk listing", "ms", 5}
	figResolve   = spec{"resolve_256_subsystems", "disk resolution with 256 subsystems in sysfs", "ms", 2}
	figMountinfo = spec{"mountinfo_lookup_10000", "mountinfo lookup with 10 000 mounts", "ms", 10}
	figStage     = spec{"node_stage_p50", "NodeStage (ext4, existing filesystem, loop device) p50", "ms", 50}
	figPublish   = spec{"node_publish_unpublish_p50", "NodePublish + NodeUnpublish p50", "ms", 5}
	figImageAMD  = spec{"image_size_amd64", "container image, linux/amd64, unpacked (make image)", "MiB", 20}
	figImageARM  = spec{"image_size_arm64", "container image, linux/arm64, unpacked (make image)", "MiB", 20}
)

// order is the order of the figures in the table.
var order = []spec{figBinary, figImageAMD, figImageARM, figNodeRSS, figCtrlRSS, figStart, figCreateP50, figCreateP99, figParallel,
	figParse, figResolve, figMountinfo, figStage, figPublish,
	figVMConnect, figVMTargetBack, figVMHeal, figVMFailover}

func main() {
	vm := flag.Bool("vm", false, "measure the real-kernel figures in the test VM (test/vm) instead of the others")
	out := flag.String("out", "", "directory for the JSON reports (default <repo>/bench/out)")
	keep := flag.Bool("keep", false, "keep the scratch directory (process logs, simulator files) for inspection")
	profile := flag.Bool("profile", false, "build the driver with net/http/pprof (go build -overlay) and save CPU and heap profiles of the process figures under <out>/profiles-<time>; the figures of such a run are not the official ones and no report is written")
	only := flag.String("only", "", "measure only these comma-separated groups ("+strings.Join(groupNames(), ", ")+"); prints the table, writes no report")
	flag.Parse()
	selected, err := parseGroups(*only)
	if err != nil {
		fatal(err)
	}

	root, err := findRoot()
	if err != nil {
		fatal(err)
	}
	if *out == "" {
		*out = filepath.Join(root, "bench", "out")
	}
	work, err := os.MkdirTemp("", "rds-csi-bench-")
	if err != nil {
		fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var interrupted atomic.Bool
	go func() {
		<-sigs
		interrupted.Store(true)
		fmt.Fprintln(os.Stderr, "bench: interrupted: stopping what was started")
		child.KillAll()
		cancel()
		if did := sweepWork(work); did != "" {
			fmt.Fprintf(os.Stderr, "bench: cleaned up: %s\n", did)
		}
		if !*keep {
			if err := scratch.RemoveUnmounted(work); err != nil {
				fmt.Fprintf(os.Stderr, "bench: scratch directory kept: %v\n", err)
			}
		}
		os.Exit(130)
	}()

	start := time.Now()
	r := &report{Kind: "bench", Started: start, Host: describeHost(root)}
	if *profile {
		if prof, err = newProfiler(root, work, filepath.Join(*out, "profiles-"+start.UTC().Format("20060102T150405Z"))); err != nil {
			fatal(err)
		}
		r.Kind = "bench-profile"
	}
	if *vm {
		r.Kind = "bench-vm"
		r.Figures = vmFigures(ctx, root, work, filepath.Join(*out, "bench-vm-"+start.UTC().Format("20060102T150405Z")+".console.log"))
	} else {
		r.Figures = localFigures(ctx, root, work, selected)
	}
	signal.Stop(sigs)
	if interrupted.Load() {
		select {} // the interrupt handler cleans up and exits; an interrupted run has no report
	}
	r.Figures = inOrder(r.Figures)
	r.finish(start)
	r.print(os.Stdout)
	fmt.Print(prof.summary())
	if selected == nil && prof == nil {
		var path string
		if path, err = r.write(*out); err != nil {
			fmt.Fprintf(os.Stderr, "bench: write the report: %v\n", err)
		} else {
			fmt.Printf("\nreport: %s\n", path)
		}
	}
	if leftovers := sweepWork(work); leftovers != "" {
		fmt.Fprintf(os.Stderr, "bench: had to clean up after the driver: %s\n", leftovers)
	}
	if *keep {
		fmt.Printf("scratch directory kept: %s\n", work)
	} else if err := scratch.RemoveUnmounted(work); err != nil {
		fmt.Fprintf(os.Stderr, "bench: scratch directory kept: %v\n", err)
	}
	if err != nil || !r.Passed {
		os.Exit(1)
	}
}

// groups are the parts of the local run, in the order they run. They run one after
// another: the machine may be small and shared, and each measurement should have it to
// itself.
var groups = []struct {
	name, what string
	run        func(ctx context.Context, root, work string, bins binaries) []figure
}{
	{"size", "binary size", func(ctx context.Context, root, work string, b binaries) []figure {
		return []figure{binaryFigure(ctx, root, work, b)}
	}},
	{"image", "container image per architecture (cmd/rds-image)", func(ctx context.Context, root, work string, _ binaries) []figure {
		return imageFigures(ctx, root, work)
	}},
	{"packages", "package benchmarks: parse, resolve, mountinfo", func(ctx context.Context, root, _ string, _ binaries) []figure {
		return packageFigures(ctx, root)
	}},
	{"startup", "process start to Identity serving", func(_ context.Context, _, work string, b binaries) []figure {
		return []figure{startupFigure(b, work)}
	}},
	{"controller", "controller: RSS, CreateVolume overhead, parallel creates", func(ctx context.Context, _, work string, b binaries) []figure {
		return controllerFigures(ctx, b, work)
	}},
	{"node", "node plugin: 10 staged volumes, RSS, NodeStage, NodePublish", func(ctx context.Context, _, work string, b binaries) []figure {
		return nodeFigures(ctx, b, work)
	}},
}

func groupNames() []string {
	var names []string
	for _, g := range groups {
		names = append(names, g.name)
	}
	return names
}

// parseGroups reads -only; nil means all groups.
func parseGroups(list string) (map[string]bool, error) {
	if list == "" {
		return nil, nil
	}
	sel := map[string]bool{}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(groupNames(), name) {
			return nil, fmt.Errorf("-only: unknown group %q (groups: %s)", name, strings.Join(groupNames(), ", "))
		}
		sel[name] = true
	}
	return sel, nil
}

// localFigures are the figures measured on this machine: builds, processes, benchmarks.
func localFigures(ctx context.Context, root, work string, selected map[string]bool) []figure {
	step := func(name string) { fmt.Fprintf(os.Stderr, "bench: %s (%s)\n", name, time.Now().Format("15:04:05")) }
	step("building the driver as make build does")
	bins := buildAll(ctx, root, filepath.Join(work, "bin"))
	var figs []figure
	for _, g := range groups {
		if selected != nil && !selected[g.name] {
			continue
		}
		step(g.what)
		figs = append(figs, g.run(ctx, root, work, bins)...)
	}
	return figs
}

// inOrder sorts the figures into the order (unknown keys last).
func inOrder(figs []figure) []figure {
	var out []figure
	used := make([]bool, len(figs))
	for _, s := range order {
		for i, f := range figs {
			if !used[i] && f.Key == s.key {
				out = append(out, f)
				used[i] = true
			}
		}
	}
	for i, f := range figs {
		if !used[i] {
			out = append(out, f)
		}
	}
	return out
}

func describeHost(root string) hostInfo {
	h := hostInfo{GoVersion: runtime.Version(), CPUs: runtime.NumCPU(), Commit: gitVersion(root), LoadBefore: loadAverage()}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		h.Kernel = utsString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				h.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command(goTool(), "env", "GOVERSION").Output(); err == nil {
		h.GoVersion = strings.TrimSpace(string(out))
	}
	return h
}

func utsString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

func fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	os.Exit(2)
}
