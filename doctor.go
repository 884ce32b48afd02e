package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"srvlab.io/rds-csi/mount"
)

// `rds-csi doctor` checks a node or the controller as a support engineer would: one line per
// check, a fix under every line that is not ok. It takes the driver's own flags and
// environment, so inside the plugin's pod it checks the configuration the plugin runs with.
// It changes nothing, except the controller's opt-in --write-test (a tiny disk, removed again).

const (
	doctorDefaultTimeout = 10 * time.Second // each check's bound unless --timeout says otherwise
	doctorHungSSH        = "the RDS accepted the connection but does not answer: check its load on the console (/system resource print) and that no firewall drops packets between here and it"
	doctorLowFreePercent = 10      // the free-space share under which the pool check warns
	doctorWriteTestSize  = 1 << 20 // the write test's disk
)

// doctorNQNVersion is the first RouterOS release that accepts nvme-tcp-server-nqn.
var doctorNQNVersion = [2]int{7, 21}

// verdict is what a check concluded. skip marks a check that could not run because an earlier
// one failed (or, for the write test, was not asked for); it never fails the run.
type verdict int

const (
	verdictOK verdict = iota
	verdictWarn
	verdictFail
	verdictSkip
)

func (s verdict) String() string { return [...]string{"ok", "WARN", "FAIL", "skip"}[s] }

// checkResult is what one check found: one line, a fix when not ok, and optional detail lines.
type checkResult struct {
	status       verdict
	finding, fix string
	details      []string
}

func result(s verdict, fix, format string, args ...any) checkResult {
	return checkResult{status: s, finding: fmt.Sprintf(format, args...), fix: fix}
}
func okResult(format string, args ...any) checkResult { return result(verdictOK, "", format, args...) }
func warnResult(fix, format string, args ...any) checkResult {
	return result(verdictWarn, fix, format, args...)
}
func failResult(fix, format string, args ...any) checkResult {
	return result(verdictFail, fix, format, args...)
}
func skipResult(format string, args ...any) checkResult {
	return result(verdictSkip, "", format, args...)
}

type doctorOptions struct {
	writeTest bool
	timeout   time.Duration
}

// doctor runs checks one after another, each under its own deadline, printing each result
// as soon as it is known.
type doctor struct {
	cfg  *Config
	opts doctorOptions
	out  io.Writer
	doctorSeams
	counts [4]int // by verdict
}

// doctorSeams are what tests replace: the mount table at a path, and the kernel's boot ID
// (which the node plugin tags staging records with).
type doctorSeams struct {
	mounts func(ctx context.Context, path string) ([]*mount.Entry, error)
	bootID func() string
}

// runDoctor is `rds-csi doctor`. Exit codes: 0 no check failed, 1 a check failed, 2 bad usage.
func runDoctor(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runDoctorWith(args, getenv, stdout, stderr, doctorSeams{mounts: mount.ByMountPoint,
		bootID: func() string { return kernelBootID(slog.New(slog.DiscardHandler)) }})
}

func runDoctorWith(args []string, getenv func(string) string, stdout, stderr io.Writer, seams doctorSeams) int {
	cfg, opts, err := parseDoctorArgs(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "rds-csi doctor: %v\n", err)
		return 2
	}
	d := &doctor{cfg: cfg, opts: opts, out: stdout, doctorSeams: seams}
	fmt.Fprintf(stdout, "rds-csi doctor %s: %s checks (every check bounded by %v)\n", version, cfg.Mode, opts.timeout)
	if cfg.runsNode() {
		d.nodeChecks()
	}
	if cfg.runsController() {
		d.controllerChecks()
	}
	fmt.Fprintf(stdout, "%d ok, %d WARN, %d FAIL, %d skipped\n",
		d.counts[verdictOK], d.counts[verdictWarn], d.counts[verdictFail], d.counts[verdictSkip])
	if d.counts[verdictFail] > 0 {
		return 1
	}
	return 0
}

// parseDoctorArgs takes doctor's own flags out of args and hands the rest to parseConfig, so
// the driver's flags, their environment fallbacks and their validation live in one place.
func parseDoctorArgs(args []string, getenv func(string) string, out io.Writer) (*Config, doctorOptions, error) {
	opts := doctorOptions{}
	fs := flag.NewFlagSet("rds-csi doctor", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.BoolVar(&opts.writeTest, "write-test", false, "controller: create a 1 MiB disk on the RDS and remove it again, to prove the user may add and remove disks")
	fs.DurationVar(&opts.timeout, "timeout", doctorDefaultTimeout, "upper bound for each check")
	var own, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i:]...)
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		isFlag := len(a) >= 2 && a[0] == '-' && name != ""
		if isFlag && (name == "h" || name == "help") {
			printDoctorUsage(out, fs)
			return nil, opts, errHelp
		}
		f := fs.Lookup(name)
		if !isFlag || f == nil {
			rest = append(rest, a)
			continue
		}
		own = append(own, a)
		if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && bf.IsBoolFlag()) && i+1 < len(args) {
			i++
			own = append(own, args[i])
		}
	}
	if err := fs.Parse(own); err != nil {
		return nil, opts, err
	}
	if opts.timeout <= 0 {
		return nil, opts, errors.New("--timeout must be positive, e.g. 10s")
	}
	cfg, err := parseConfig(rest, getenv, out)
	if err != nil {
		return nil, opts, err
	}
	// What the plugin refuses at start is bad usage here too, except what the checks report
	// with advice: the managed prefix (checkPrefix) and the controller's settings (checkRDSSettings).
	if err := cfg.validateCommon(); err != nil {
		return nil, opts, err
	}
	if cfg.runsNode() {
		if err := cfg.validateNode(); err != nil && !errors.As(err, new(managedPrefixError)) {
			return nil, opts, err
		}
	}
	return cfg, opts, nil
}

func printDoctorUsage(out io.Writer, fs *flag.FlagSet) {
	fmt.Fprint(out, `Usage: rds-csi doctor [--mode=node|controller] [--write-test] [--timeout=10s] [driver flags]

Checks this node or the controller's RDS connection and prints one line per check
(ok, WARN, FAIL or skip), with a fix under every line that is not ok. Exit status 1 when
a check failed. It changes nothing, except that --write-test adds a 1 MiB disk on the RDS
and removes it again.

It takes every flag of the driver (see rds-csi --help) with the same environment
fallbacks, so inside the plugin's pod it checks the configuration the plugin runs with.

Doctor flags:
`)
	fs.PrintDefaults()
}

// run runs one check under its deadline and prints its result; hung is the advice printed
// when it does not finish in time.
func (d *doctor) run(name, hung string, fn func(ctx context.Context) checkResult) checkResult {
	r, _ := doctorRun(d, name, hung, func(ctx context.Context) (checkResult, struct{}) { return fn(ctx), struct{}{} })
	return r
}

// doctorRun is run for a check that also hands a value to later checks. A check that does not
// finish in time fails and is left behind (it may be stuck in the kernel or on the network,
// and the next check must not wait): its value is then the zero value, and nothing it does
// later is seen, as values travel only through the channel.
func doctorRun[T any](d *doctor, name, hung string, fn func(ctx context.Context) (checkResult, T)) (checkResult, T) {
	type outcome struct {
		r checkResult
		v T
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.timeout)
	defer cancel()
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- outcome{r: failResult("this is a bug in rds-csi doctor; please report it with this output", "the check crashed: %v", p)}
			}
		}()
		r, v := fn(ctx)
		done <- outcome{r, v}
	}()
	var o outcome
	answered := false
	select {
	case o, answered = <-done:
	case <-ctx.Done():
		select {
		case o, answered = <-done: // it answered just as time ran out
		default:
		}
	}
	switch {
	case !answered:
		o.r = d.timedOut(hung, "")
	case o.r.status != verdictOK && ctx.Err() != nil: // it gave up at its deadline
		o.r = d.timedOut(hung, o.r.finding)
	}
	d.print(name, o.r)
	return o.r, o.v
}

func (d *doctor) timedOut(hung, finding string) checkResult {
	r := failResult(fmt.Sprintf("re-run with a longer --timeout (e.g. --timeout=%v); if it still hangs: %s", 3*d.opts.timeout, hung),
		"did not finish within %v", d.opts.timeout)
	if finding != "" {
		r.finding += ": " + finding
	}
	return r
}

func (d *doctor) print(name string, r checkResult) {
	d.counts[r.status]++
	fmt.Fprintf(d.out, "%-4s  %s: %s\n", r.status, name, r.finding)
	for _, l := range r.details {
		fmt.Fprintf(d.out, "        %s\n", l)
	}
	if r.status != verdictOK && r.status != verdictSkip && r.fix != "" {
		fmt.Fprintf(d.out, "      fix: %s\n", r.fix)
	}
}
