package deploy

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/test/internal/toolroot"
)

// instruction is one Dockerfile instruction with its continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case: FROM, RUN, ...
	args string
}

// stage is one FROM ... up to the next FROM.
type stage struct {
	from, name string
	ins        []instruction
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.ins {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// run returns the args of the stage's first RUN that contains want ("" if none).
func (s stage) run(want string) string {
	for _, in := range s.all("RUN") {
		if strings.Contains(in.args, want) {
			return in.args
		}
	}
	return ""
}

// parseDockerfile reads the repository's Dockerfile.
func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return dockerfileStages(string(src))
}

// dockerfileStages splits a Dockerfile into stages, joining backslash continuations and
// dropping comments (including comment lines inside a continued instruction, as Docker does).
func dockerfileStages(src string) []stage {
	var stages []stage
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(strings.NewReader(src))
	for sc.Scan() {
		n++
		line := sc.Text()
		if trimmed := strings.TrimSpace(line); trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(body + "\n")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(strings.TrimSpace(cur.String()), " ")
		cur.Reset()
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		switch {
		case in.cmd == "FROM":
			fields := slices.DeleteFunc(strings.Fields(in.args), func(f string) bool { return strings.HasPrefix(f, "--platform=") })
			s := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
		case len(stages) > 0:
			stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
		}
	}
	return stages
}

func stageNamed(t *testing.T, stages []stage, name string) stage {
	t.Helper()
	s, ok := findStage(stages, name)
	if !ok {
		t.Fatalf("Dockerfile has no stage %q", name)
	}
	return s
}

func findStage(stages []stage, name string) (stage, bool) {
	i := slices.IndexFunc(stages, func(s stage) bool { return s.name == name })
	if i < 0 {
		return stage{}, false
	}
	return stages[i], true
}

// execedTools reads the tools the mount package runs, and the Debian package of each.
func execedTools(t *testing.T) map[string]string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "mount", "fs.go"))
	if err != nil {
		t.Fatal(err)
	}
	tools, err := toolTable(string(src))
	if err != nil {
		t.Fatal(err)
	}
	return tools
}

// checkDockerfileBuild: the Dockerfile's build stage builds the binary `make image` builds:
// with the Go release go.mod names (an older toolchain refuses the module), static
// (CGO_ENABLED=0: the final image has no libc), trimmed, with the Makefile's image tags and
// ldflags, and with ARG VERSION declared so -X main.version is not empty.
func checkDockerfileBuild(in *inputs, r *report) {
	build, ok := findStage(dockerfileStages(in.files["Dockerfile"]), "build")
	if !ok {
		r.add("the Dockerfile has no stage build")
		return
	}
	goMod := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(in.files["go.mod"])
	if goMod == nil || !strings.HasPrefix(build.from, "golang:"+goMod[1]) {
		r.add("the build stage is FROM %s; go.mod names Go %v", build.from, goMod)
	}
	mk := in.files["Makefile"]
	tags := regexp.MustCompile(`(?m)^IMAGE_TAGS\s*\?=\s*(\S+)`).FindStringSubmatch(mk)
	ldflags := regexp.MustCompile(`(?m)^LDFLAGS\s*:=\s*(.+?)\s*$`).FindStringSubmatch(mk)
	if tags == nil || ldflags == nil {
		r.add("the Makefile has no IMAGE_TAGS ?= or LDFLAGS := line")
		return
	}
	goBuild := build.run("go build")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-tags " + tags[1], `-ldflags "` + strings.ReplaceAll(ldflags[1], "$(VERSION)", "$VERSION") + `"`} {
		if !strings.Contains(goBuild, want) {
			r.add("the Dockerfile's go build lacks %s (as make image builds):\n%s", want, goBuild)
		}
	}
	if !slices.ContainsFunc(build.all("ARG"), func(in instruction) bool { return strings.HasPrefix(in.args, "VERSION") }) {
		r.add("the build stage does not declare ARG VERSION, so -X main.version would be empty")
	}
}

// TestImageToolsRunFromTheCollectedRoot runs the Dockerfile's collect step itself on this
// machine (Debian, like the tools stage) into a temporary root, then formats, checks and
// grows real filesystem images with the collected tools inside that root, with nothing from
// the host but the kernel: proof that the image's tools and libraries are complete.
func TestImageToolsRunFromTheCollectedRoot(t *testing.T) {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (for chroot and mounts)")
	}
	tools := execedTools(t)
	for _, bin := range append([]string{"ldd", "chroot", "unshare", "truncate"}, sortedKeysOf(tools)...) {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (test/install-deps.sh installs the tools; run as root)"
		testenv.Missing(t, msg)
	}
	toolsStage := stageNamed(t, parseDockerfile(t), "tools")
	var collect string
	for _, in := range toolsStage.all("RUN") {
		if strings.Contains(in.args, "ldd") {
			collect = in.args
		}
	}
	root := filepath.Join(t.TempDir(), "rootfs")
	run := func(script string) string {
		t.Helper()
		cmd := exec.Command("sh", "-c", script)
		cmd.Env = []string{"ROOTFS=" + root, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s\n--- script ---\n%s", err, out, script)
		}
		return string(out)
	}
	run(collect)

	if _, err := toolroot.Exercise(context.Background(), root); err != nil {
		t.Fatal(err)
	}
}

func sortedKeysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
