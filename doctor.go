package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"srvlab.io/rds-csi/mount"
)

// `rds-csi doctor` checks a node or a controller the way a support engineer would and prints
// one line per check, with a fix under every line that is not ok. It takes the driver's own
// flags (and environment), so running it inside the plugin's pod checks exactly the
// configuration the plugin runs with. It changes nothing, except the controller's opt-in
// --write-test, which adds a tiny disk and removes it again.

// doctorDefaultTimeout bounds each check unless --timeout says otherwise.
const doctorDefaultTimeout = 10 * time.Second

// verdict is what a check concluded. skip marks a check that could not run because an earlier
// one failed (or, for the write test, because it was not asked for); it never fails the run.
type verdict int

const (
	verdictOK verdict = iota
	verdictWarn
	verdictFail
	verdictSkip
)

func (s verdict) String() string {
	return [...]string{"ok", "WARN", "FAIL", "skip"}[s]
}

// checkResult is what one check found: one line, a fix when not ok, and optional detail lines.
type checkResult struct {
	status  verdict
	finding string
	fix     string
	details []string
}

func okResult(format string, args ...any) checkResult {
	return checkResult{status: verdictOK, finding: fmt.Sprintf(format, args...)}
}

func warnResult(fix, format string, args ...any) checkResult {
	return checkResult{status: verdictWarn, finding: fmt.Sprintf(format, args...), fix: fix}
}

func failResult(fix, format string, args ...any) checkResult {
	return checkResult{status: verdictFail, finding: fmt.Sprintf(format, args...), fix: fix}
}

func skipResult(format string, args ...any) checkResult {
	return checkResult{status: verdictSkip, finding: fmt.Sprintf(format, args...)}
}

// doctorOptions are the flags only doctor has.
type doctorOptions struct {
	writeTest bool
	timeout   time.Duration
}

// doctor runs checks one after another, each under its own deadline, and prints each
// result as soon as it is known.
type doctor struct {
	cfg  *Config
	opts doctorOptions
	out  io.Writer
	doctorSeams
	counts [4]int // by verdict
}

// doctorSeams are what tests replace; runDoctor uses the real ones.
type doctorSeams struct {
	// mounts reads the mount table at a path (mount.ByMountPoint).
	mounts func(ctx context.Context, path string) ([]*mount.Entry, error)
	// bootID is the kernel's boot ID, which the node plugin tags staging records with.
	bootID func() string
}

// runDoctor is `rds-csi doctor`. Exit codes: 0 no check failed, 1 a check failed, 2 bad
// usage.
func runDoctor(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	return runDoctorWith(args, getenv, stdout, stderr, doctorSeams{mounts: mount.ByMountPoint, bootID: doctorBootID})
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

// parseDoctorArgs takes doctor's own flags out of args and hands the rest to parseConfig,
// so the driver's flags, their environment fallbacks and their validation are defined in
// one place only.
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
		name, hasValue, isFlag := doctorFlagName(a)
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
	// A setting the plugin would refuse at start is bad usage here too, except those the
	// checks report with their advice: the managed prefix (checkPrefix) and the
	// controller's settings (checkRDSSettings).
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

// doctorFlagName returns the name of a command-line flag ("--timeout=5s" → "timeout", true).
func doctorFlagName(arg string) (name string, hasValue, isFlag bool) {
	if len(arg) < 2 || arg[0] != '-' {
		return "", false, false
	}
	name = strings.TrimPrefix(strings.TrimPrefix(arg, "-"), "-")
	name, _, hasValue = strings.Cut(name, "=")
	return name, hasValue, name != ""
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

// run runs one check under its deadline and prints its result. hung is the advice printed
// when it does not finish in time.
func (d *doctor) run(name, hung string, fn func(ctx context.Context) checkResult) checkResult {
	r, _ := doctorRun(d, name, hung, func(ctx context.Context) (checkResult, struct{}) { return fn(ctx), struct{}{} })
	return r
}

// doctorRun runs fn under the per-check deadline, prints its result and returns it with the
// value fn produced for later checks. A check that does not finish in time is reported as
// failed and left behind (it may be stuck in the kernel or on the network, and the next
// check must not wait for it); its value is then the zero value, and nothing it does later
// is seen, because values travel only through the channel.
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
	case o = <-done:
		answered = true
	case <-ctx.Done():
		select {
		case o = <-done: // it answered just as time ran out
			answered = true
		default:
		}
	}
	switch {
	case !answered:
		o.r = d.timedOut(hung, "")
	case o.r.status != verdictOK && ctx.Err() != nil:
		// it gave up at its deadline: the same advice as when it is abandoned
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
