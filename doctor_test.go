package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func doctorEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestDoctorArgs(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		wantErr   string // "" = parses
		mode      string
		timeout   time.Duration
		writeTest bool
		volPath   string
	}{
		{name: "defaults", args: nil, mode: modeAll, timeout: doctorDefaultTimeout},
		{name: "doctor flags with = and separate values", args: []string{"--timeout", "3s", "--write-test", "--mode=controller"},
			mode: modeController, timeout: 3 * time.Second, writeTest: true},
		{name: "single dash and explicit bool", args: []string{"-timeout=1m", "-write-test=false", "--rds-volume-path=/p/v"},
			mode: modeAll, timeout: time.Minute, volPath: "/p/v"},
		{name: "driver flags keep their environment fallback", env: map[string]string{"RDS_CSI_MODE": "node", "RDS_VOLUME_PATH": "/env/path"},
			mode: modeNode, timeout: doctorDefaultTimeout, volPath: "/env/path"},
		{name: "flag beats environment", args: []string{"--mode", "controller"}, env: map[string]string{"RDS_CSI_MODE": "node"},
			mode: modeController, timeout: doctorDefaultTimeout},
		{name: "zero timeout", args: []string{"--timeout=0s"}, wantErr: "--timeout must be positive"},
		{name: "bad timeout", args: []string{"--timeout=soon"}, wantErr: "invalid value"},
		{name: "bad mode", args: []string{"--mode=both"}, wantErr: `--mode "both" is not valid`},
		{name: "unknown flag", args: []string{"--frobnicate"}, wantErr: "not defined"},
		{name: "stray argument", args: []string{"node"}, wantErr: `unexpected argument "node"`},
		{name: "a setting the plugin refuses", args: []string{"--log-format=xml"}, wantErr: `--log-format "xml" is not valid`},
		{name: "a node setting the plugin refuses", args: []string{"--mode=node", "--heal-interval=0s"}, wantErr: "--heal-interval must be positive"},
		{name: "a controller setting is left to its check", args: []string{"--mode=controller", "--heal-interval=0s", "--rds-max-sessions=0"},
			mode: modeController, timeout: doctorDefaultTimeout},
		{name: "the managed prefix is left to its check", args: []string{"--mode=node", "--managed-nqn-prefix=nqn."}, mode: modeNode, timeout: doctorDefaultTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, opts, err := parseDoctorArgs(tc.args, doctorEnv(tc.env), io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Mode != tc.mode || opts.timeout != tc.timeout || opts.writeTest != tc.writeTest {
				t.Errorf("mode %q timeout %v write-test %v, want %q %v %v", cfg.Mode, opts.timeout, opts.writeTest, tc.mode, tc.timeout, tc.writeTest)
			}
			if tc.volPath != "" && cfg.RDSVolumePath != tc.volPath {
				t.Errorf("volume path %q, want %q", cfg.RDSVolumePath, tc.volPath)
			}
		})
	}
}

// TestDoctorDispatch: `rds-csi doctor` reaches the doctor from the binary's entry point,
// and bad usage exits 2 with one line on stderr.
func TestDoctorDispatch(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"doctor", "--help"}, doctorEnv(nil), &out, &errOut); code != 0 {
		t.Fatalf("doctor --help: exit %d, stderr %q", code, errOut.String())
	}
	for _, want := range []string{"Usage: rds-csi doctor", "-write-test", "-timeout", "every flag of the driver"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run([]string{"doctor", "--mode=both"}, doctorEnv(nil), &out, &errOut); code != 2 {
		t.Errorf("doctor --mode=both: exit %d, want 2", code)
	}
	if msg := errOut.String(); !strings.HasPrefix(msg, "rds-csi doctor: ") || strings.Count(msg, "\n") != 1 {
		t.Errorf("stderr %q, want one line starting with 'rds-csi doctor: '", msg)
	}
}

// TestDoctorRunner: the line format, the fix lines, the deadline, and a crash in a check.
func TestDoctorRunner(t *testing.T) {
	tests := []struct {
		name  string
		fn    func(ctx context.Context) checkResult
		lines []string
		want  verdict
	}{
		{"ok has no fix line", func(context.Context) checkResult { return okResult("all %s", "good") },
			[]string{"ok    c: all good"}, verdictOK},
		{"warn with fix and details", func(context.Context) checkResult {
			r := warnResult("do this", "so-so")
			r.details = []string{"- one"}
			return r
		}, []string{"WARN  c: so-so", "        - one", "      fix: do this"}, verdictWarn},
		{"fail with fix", func(context.Context) checkResult { return failResult("do that", "broken") },
			[]string{"FAIL  c: broken", "      fix: do that"}, verdictFail},
		{"skip prints no fix", func(context.Context) checkResult { return skipResult("not run") },
			[]string{"skip  c: not run"}, verdictSkip},
		{"a check that hangs is abandoned at its deadline", func(context.Context) checkResult { select {} },
			[]string{"FAIL  c: did not finish within 50ms", "      fix: re-run with a longer --timeout (e.g. --timeout=150ms); if it still hangs: look at the kernel"}, verdictFail},
		{"a check that panics fails", func(context.Context) checkResult { panic("boom") },
			[]string{"FAIL  c: the check crashed: boom", "      fix: this is a bug in rds-csi doctor; please report it with this output"}, verdictFail},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			d := &doctor{opts: doctorOptions{timeout: 50 * time.Millisecond}, out: &out}
			start := time.Now()
			r := d.run("c", "look at the kernel", tc.fn)
			if time.Since(start) > 5*time.Second {
				t.Errorf("the check took %v", time.Since(start))
			}
			if r.status != tc.want || d.counts[tc.want] != 1 {
				t.Errorf("verdict %v (counts %v), want %v", r.status, d.counts, tc.want)
			}
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.lines, "\n") {
				t.Errorf("printed\n%s\nwant\n%s", out.String(), strings.Join(tc.lines, "\n"))
			}
		})
	}
}
