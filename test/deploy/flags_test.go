package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// binaryHelp is what the rds-csi binary says about its flags.
type binaryHelp struct {
	path  string
	flags map[string]string // flag name -> its environment fallback ("" if none)
	envs  map[string]string // environment name -> flag
}

var (
	helpOnce sync.Once
	help     *binaryHelp
	helpErr  string
	binDir   string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

var helpFlag = regexp.MustCompile(`(?m)^  --([a-z0-9-]+)(?: \[([A-Z0-9_]+)\])?$`)

// buildBinary builds srvlab.io/rds-csi once per test binary and reads its --help.
func buildBinary(t *testing.T) *binaryHelp {
	t.Helper()
	helpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "rds-csi-deploy-test-")
		if err != nil {
			helpErr = err.Error()
			return
		}
		binDir = dir
		bin := filepath.Join(dir, "rds-csi")
		build := exec.Command(goTool(), "build", "-o", bin, "srvlab.io/rds-csi")
		build.Dir = repoRoot
		build.Env = append(build.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			helpErr = "go build srvlab.io/rds-csi: " + err.Error() + "\n" + string(out)
			return
		}
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil {
			helpErr = "rds-csi --help: " + err.Error() + "\n" + string(out)
			return
		}
		h := &binaryHelp{path: bin, flags: map[string]string{}, envs: map[string]string{}}
		for _, m := range helpFlag.FindAllStringSubmatch(string(out), -1) {
			h.flags[m[1]] = m[2]
			if m[2] != "" {
				h.envs[m[2]] = m[1]
			}
		}
		if len(h.flags) == 0 {
			helpErr = "rds-csi --help lists no flags in the form `  --name [ENV]`:\n" + string(out)
			return
		}
		help = h
	})
	if help == nil {
		t.Fatal(helpErr)
	}
	return help
}

// goTool is the go command: from PATH, else the toolchain running this test.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandArgs resolves $(VAR) references the way the kubelet does, from the container's env:
// literal values, ConfigMap keys from the manifest, and spec.nodeName as a stand-in node.
func expandArgs(m *manifest, c *corev1.Container) ([]string, []string) {
	values := map[string]string{}
	var problems []string
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			values[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			values[e.Name] = "node-1"
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm, ok := m.configMaps[namespace+"/"+ref.Name]; ok {
				values[e.Name] = cm.Data[ref.Key]
			}
		}
	}
	out := make([]string, len(c.Args))
	for i, a := range c.Args {
		out[i] = envRef.ReplaceAllStringFunc(a, func(ref string) string {
			name := envRef.FindStringSubmatch(ref)[1]
			v, ok := values[name]
			if !ok {
				problems = append(problems, "argument "+a+" refers to $("+name+"), which the container's env does not define: the kubelet would pass it literally")
				return ref
			}
			return v
		})
	}
	return out, problems
}

// TestPluginFlagsExistInTheBinary builds the driver and checks every flag the rds-csi
// containers pass against its --help, then lets the binary itself parse the exact arguments
// (with --version appended, which exits after parsing and before validation or serving).
func TestPluginFlagsExistInTheBinary(t *testing.T) {
	m := load(t)
	h := buildBinary(t)
	r := &report{}
	for _, p := range m.bothPods(r) {
		c, err := p.container(pluginName)
		if !r.must(err) {
			continue
		}
		t.Run(p.owner, func(t *testing.T) {
			if len(c.Command) > 0 {
				t.Errorf("the plugin overrides the image's entrypoint with %v; pass flags as args only", c.Command)
			}
			args, problems := expandArgs(m, c)
			for _, p := range problems {
				t.Error(p)
			}
			for _, a := range args {
				name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
				if !strings.HasPrefix(a, "--") {
					t.Errorf("argument %q is not a --flag: the binary takes none", a)
				} else if _, ok := h.flags[name]; !ok {
					t.Errorf("--%s is not a flag of rds-csi (its --help lists %d flags)", name, len(h.flags))
				}
			}
			// Variables the container sets must mean something to the binary: either its own
			// environment fallback for a flag, or a $(VAR) used in the arguments.
			for _, e := range c.Env {
				usedInArgs := strings.Contains(strings.Join(c.Args, " "), "$("+e.Name+")")
				if _, fallback := h.envs[e.Name]; !fallback && !usedInArgs {
					t.Errorf("env %s is neither an rds-csi environment fallback nor used in the arguments", e.Name)
				}
				if flag, fallback := h.envs[e.Name]; fallback && usedInArgs {
					if v, ok := flagValue(c.Args, flag); !ok || v != "$("+e.Name+")" {
						t.Errorf("env %s is the fallback of --%s but the arguments pass it to another flag (--%s=%q)", e.Name, flag, flag, v)
					}
				}
			}
			out, err := exec.Command(h.path, append(args, "--version")...).CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "rds-csi ") {
				t.Errorf("rds-csi %s --version failed: %v: %s", strings.Join(args, " "), err, lastLine(string(out)))
			}
		})
	}
	for _, p := range r.problems {
		t.Error(p)
	}
}

// The flag check must be able to fail: an unknown flag and a bad value are refused.
func TestBinaryRefusesWhatTheFlagCheckRefuses(t *testing.T) {
	h := buildBinary(t)
	if _, ok := h.flags["endpoint"]; !ok || h.flags["node-id"] != "NODE_ID" {
		t.Errorf("--help parsing lost known flags: endpoint=%v node-id env=%q", h.flags["endpoint"], h.flags["node-id"])
	}
	for _, args := range [][]string{{"--no-such-flag=1", "--version"}, {"--shutdown-timeout=soon", "--version"}} {
		if out, err := exec.Command(h.path, args...).CombinedOutput(); err == nil {
			t.Errorf("rds-csi %v succeeded; the flag check relies on it failing:\n%s", args, out)
		}
	}
}

// lastLine is the binary's verdict without the usage text it prints before it.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// The Kubernetes API modules this package uses are test-only: the driver binary must never
// link them (DEVELOPERS.md: no client-go, nothing beyond the allowed runtime modules).
func TestDriverBinaryLinksNoKubernetesModules(t *testing.T) {
	cmd := exec.Command(goTool(), "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "srvlab.io/rds-csi")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps srvlab.io/rds-csi: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for _, mod := range strings.Fields(string(out)) {
		if !seen[mod] && (strings.HasPrefix(mod, "k8s.io/") || strings.HasPrefix(mod, "sigs.k8s.io/")) {
			t.Errorf("the rds-csi binary links %s: Kubernetes API modules are for tests only", mod)
		}
		seen[mod] = true
	}
	if !seen["google.golang.org/grpc"] {
		t.Errorf("go list found no grpc among the binary's modules; the check is not looking at the driver:\n%s", out)
	}
}
