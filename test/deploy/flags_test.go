package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// binary is the rds-csi binary built from this tree, and the flags its --help lists.
type binary struct {
	path  string
	flags map[string]bool
}

var (
	binaryOnce sync.Once
	built      *binary
	buildErr   error
	binDir     string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var helpFlag = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)(?: \[[A-Z0-9_]+\])?$`)

// buildBinary builds srvlab.io/rds-csi once per test binary and reads its --help.
func buildBinary() (*binary, error) {
	binaryOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "rds-csi-deploy-test-"); buildErr != nil {
			return
		}
		b := &binary{path: filepath.Join(binDir, "rds-csi"), flags: map[string]bool{}}
		build := exec.Command(goTool(), "build", "-o", b.path, "srvlab.io/rds-csi")
		build.Dir = repoRoot
		build.Env = append(build.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build srvlab.io/rds-csi: %v\n%s", err, out)
			return
		}
		out, err := exec.Command(b.path, "--help").CombinedOutput()
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			b.flags[m[1]] = true
		}
		if err != nil || len(b.flags) == 0 {
			buildErr = fmt.Errorf("rds-csi --help lists no flags in the form `  --name [ENV]` (%v):\n%s", err, out)
			return
		}
		built = b
	})
	return built, buildErr
}

// goTool is the go command: from PATH, else the toolchain running this test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// checkPluginFlags: every argument the rds-csi containers pass is a flag of the binary
// built from this tree, each $(VAR) in them is defined by the container's env (else the
// kubelet passes it on literally), and the binary accepts the exact arguments: run with
// --version appended, it exits after parsing them.
func checkPluginFlags(in *inputs, r *report) {
	b, err := buildBinary()
	if !r.must(err) {
		return
	}
	for _, p := range in.m.pods(r) {
		c := p.plugin
		args, problems := expandArgs(in.m, c)
		for _, problem := range problems {
			r.add("%s %s", p.owner, problem)
		}
		for _, a := range args {
			if name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "="); !strings.HasPrefix(a, "--") || !b.flags[name] {
				r.add("%s: argument %q: --%s is not a flag of rds-csi", p.owner, a, name)
			}
		}
		out, err := exec.Command(b.path, append(args, "--version")...).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "rds-csi ") {
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			r.add("%s: rds-csi rejects its arguments %v: %v: %s", p.owner, args, err, lines[len(lines)-1])
		}
	}
}

// linkedKubernetesModules lists the k8s.io and sigs.k8s.io modules `go list -deps args`
// finds.
func linkedKubernetesModules(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command(goTool(), append([]string{"list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}"}, args...)...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %v: %v\n%s", args, err, out)
	}
	var found []string
	for _, mod := range strings.Fields(string(out)) {
		if (strings.HasPrefix(mod, "k8s.io/") || strings.HasPrefix(mod, "sigs.k8s.io/")) && !strings.Contains(strings.Join(found, " "), mod) {
			found = append(found, mod)
		}
	}
	return found
}

// The Kubernetes API modules this package uses are in go.mod for tests only: the driver
// binary must never link them (DEVELOPERS.md: only the allowed runtime modules). This test
// package itself does link them, which proves the listing sees them.
func TestDriverBinaryLinksNoKubernetesModules(t *testing.T) {
	if mods := linkedKubernetesModules(t, "srvlab.io/rds-csi"); len(mods) > 0 {
		t.Errorf("the rds-csi binary links %v: Kubernetes API modules are for tests only", mods)
	}
	if mods := linkedKubernetesModules(t, "-test", "./test/deploy"); len(mods) == 0 {
		t.Error("go list found no Kubernetes module in this very test package; the check above cannot see them")
	}
}
