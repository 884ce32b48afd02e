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

// parseDockerfile reads the instructions, joining backslash continuations and dropping
// comments (including comment lines inside a continued instruction, as Docker does).
func parseDockerfile(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ins []instruction
	var cur strings.Builder
	start, n := 0, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		if cur.Len() == 0 {
			start = n
		}
		if body, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(body)
			cur.WriteString("\n")
			continue
		}
		cur.WriteString(line)
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		cmd, args, _ := strings.Cut(text, " ")
		ins = append(ins, instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	var stages []stage
	for _, in := range ins {
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			fields = slices.DeleteFunc(fields, func(f string) bool { return strings.HasPrefix(f, "--platform=") })
			s := stage{}
			if len(fields) > 0 {
				s.from = fields[0]
			}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile line %d: %s before the first FROM", in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].ins = append(stages[len(stages)-1].ins, in)
	}
	return stages
}

func stageNamed(t *testing.T, stages []stage, name string) stage {
	t.Helper()
	for _, s := range stages {
		if s.name == name {
			return s
		}
	}
	t.Fatalf("Dockerfile has no stage %q", name)
	return stage{}
}

// execedTools reads the tools the mount package runs from its toolPackages table, so the
// image and the code cannot drift apart.
func execedTools(t *testing.T) map[string]string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "mount", "tools.go"))
	if err != nil {
		t.Fatalf("reading the mount package's tool table: %v", err)
	}
	block := regexp.MustCompile(`(?s)var toolPackages = map\[string\]string\{(.*?)\n\}`).FindSubmatch(src)
	if block == nil {
		t.Fatal("mount/tools.go has no `var toolPackages = map[string]string{...}`: the image test reads the exec'd tools from it")
	}
	tools := map[string]string{}
	for _, m := range regexp.MustCompile(`"([^"]+)":\s*"([^"]+)"`).FindAllStringSubmatch(string(block[1]), -1) {
		tools[m[1]] = m[2]
	}
	if len(tools) == 0 {
		t.Fatal("mount/tools.go's toolPackages is empty")
	}
	return tools
}

func TestDockerfileStages(t *testing.T) {
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages; want a build stage and a minimal final stage", len(stages))
	}
	build := stageNamed(t, stages, "build")
	if !strings.HasPrefix(build.from, "golang:1.26") {
		t.Errorf("build stage is FROM %s, want golang:1.26", build.from)
	}
	final := stages[len(stages)-1]
	if final.name == "build" || final.name == "tools" {
		t.Errorf("the last stage is %q; the final image must be its own minimal stage", final.name)
	}
	if minimal := []string{"scratch", "gcr.io/distroless/"}; !slices.ContainsFunc(minimal, func(p string) bool { return strings.HasPrefix(final.from, p) }) {
		t.Errorf("final stage is FROM %s; want scratch or distroless so the image carries only what the driver runs", final.from)
	}
}

func TestDockerfileBuildsAStaticTrimmedBinary(t *testing.T) {
	build := stageNamed(t, parseDockerfile(t), "build")
	var goBuild string
	for _, in := range build.all("RUN") {
		if strings.Contains(in.args, "go build") {
			goBuild = in.args
		}
	}
	if goBuild == "" {
		t.Fatal("build stage has no RUN ... go build")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-s -w", "-X main.version=$VERSION", "-o /out/rds-csi"} {
		if !strings.Contains(goBuild, want) {
			t.Errorf("the go build step lacks %q:\n%s", want, goBuild)
		}
	}
	if !slices.ContainsFunc(build.all("ARG"), func(in instruction) bool { return strings.HasPrefix(in.args, "VERSION") }) {
		t.Error("build stage does not declare ARG VERSION, so -X main.version would always be empty")
	}
}

func TestDockerfileCarriesExactlyTheToolsWeExec(t *testing.T) {
	tools := execedTools(t)
	toolsStage := stageNamed(t, parseDockerfile(t), "tools")
	var install, collect string
	for _, in := range toolsStage.all("RUN") {
		if strings.Contains(in.args, "apt-get install") {
			install = in.args
		}
		if strings.Contains(in.args, "ldd") {
			collect = in.args
		}
	}
	if install == "" || collect == "" {
		t.Fatal("tools stage needs a RUN that apt-get installs the packages and one that collects the tools with ldd")
	}
	wantPkgs := map[string]bool{}
	for _, pkg := range tools {
		wantPkgs[pkg] = true
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(pkg) + `\b`).MatchString(install) {
			t.Errorf("tools stage does not install %s", pkg)
		}
	}
	for _, want := range []string{"--no-install-recommends", "rm -rf /var/lib/apt/lists"} {
		if !strings.Contains(install, want) {
			t.Errorf("the apt-get step lacks %q", want)
		}
	}
	// Every loop over tools in the collect step names exactly the exec'd tools (the resize2fs
	// start check is separate, as it has no -V).
	loops := regexp.MustCompile(`for tool in ([^;]+);`).FindAllStringSubmatch(collect, -1)
	if len(loops) == 0 {
		t.Fatal("the collect step has no `for tool in ...;` loop")
	}
	var want []string
	for tool := range tools {
		want = append(want, tool)
	}
	sort.Strings(want)
	copied := strings.Fields(loops[0][1])
	sort.Strings(copied)
	if !slices.Equal(copied, want) {
		t.Errorf("the image copies tools %v; the mount package execs %v", copied, want)
	}
	for tool := range tools {
		if !strings.Contains(collect, tool) {
			t.Errorf("the collect step never checks that %s starts", tool)
		}
	}
	t.Logf("tools from mount/tools.go: %v, packages %v", want, sortedSet(wantPkgs))
}

func TestDockerfileFinalStage(t *testing.T) {
	stages := parseDockerfile(t)
	final := stages[len(stages)-1]
	users := final.all("USER")
	if len(users) != 1 {
		t.Fatalf("final stage has %d USER instructions, want one", len(users))
	}
	if u := strings.Split(users[0].args, ":")[0]; u != "65532" {
		t.Errorf("final stage USER %s; want 65532 (non-root, and the controller Deployment's runAsUser)", users[0].args)
	}
	if ep := final.all("ENTRYPOINT"); len(ep) != 1 || !strings.Contains(ep[0].args, "/usr/bin/rds-csi") {
		t.Errorf("final stage ENTRYPOINT should run /usr/bin/rds-csi, has %v", ep)
	}
	var copies []string
	for _, in := range final.all("COPY") {
		copies = append(copies, in.args)
	}
	for _, want := range []string{"--from=build /out/rds-csi /usr/bin/rds-csi", "--from=tools /rootfs/ /"} {
		if !slices.Contains(copies, want) {
			t.Errorf("final stage lacks COPY %s (has %q)", want, copies)
		}
	}
	// The mount package finds the tools through PATH.
	if env := final.all("ENV"); !slices.ContainsFunc(env, func(in instruction) bool {
		return strings.HasPrefix(in.args, "PATH=") && strings.Contains(in.args, "/usr/sbin")
	}) {
		t.Error("final stage must set ENV PATH to include /usr/sbin, where the tools are")
	}
	labels := ""
	for _, in := range final.all("LABEL") {
		labels += in.args + "\n"
	}
	for _, key := range []string{"title", "description", "version", "revision"} {
		if !strings.Contains(labels, "org.opencontainers.image."+key+"=") {
			t.Errorf("final stage lacks LABEL org.opencontainers.image.%s", key)
		}
	}
}

func TestDockerignoreKeepsTheBuildInputs(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, line)
		}
	}
	if slices.ContainsFunc(patterns, func(p string) bool { return strings.HasPrefix(p, "!") }) {
		t.Fatal(".dockerignore uses ! exceptions; this test's matcher does not model them")
	}
	ignored := func(path string) bool {
		for _, p := range patterns {
			for _, candidate := range []string{path, filepath.Base(path)} {
				pat := p
				if rest, ok := strings.CutPrefix(p, "**/"); ok {
					pat = rest
				} else if candidate != path {
					continue // a pattern without **/ matches from the context root only
				}
				if ok, _ := filepath.Match(pat, candidate); ok {
					return true
				}
			}
			if strings.HasPrefix(path, strings.TrimSuffix(p, "/")+"/") {
				return true
			}
		}
		return false
	}
	for _, path := range []string{".git/HEAD", "bin/rds-csi", "test/deploy/checks_test.go", "mount/tools_test.go"} {
		if !ignored(path) {
			t.Errorf(".dockerignore lets %s into the build context", path)
		}
	}
	// Everything the binary compiles from must reach the build.
	for _, path := range []string{"go.mod", "go.sum", "main.go", "mount/tools.go", "nvme/fabrics.go", "routeros/disk.go"} {
		if ignored(path) {
			t.Errorf(".dockerignore drops %s, which the build needs", path)
		}
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

	// The root holds the tools, their libraries and a few config files: nothing else.
	var files []string
	var size int64
	err := filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			rel, _ := filepath.Rel(root, path)
			files = append(files, rel)
			size += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		ok := strings.HasPrefix(f, "usr/sbin/") || strings.Contains(f, ".so") || strings.HasPrefix(f, "etc/")
		if !ok {
			t.Errorf("the tools root holds %s, which is neither a tool, a library nor config", f)
		}
	}
	for tool := range tools {
		if !slices.Contains(files, "usr/sbin/"+tool) {
			t.Errorf("the tools root lacks usr/sbin/%s", tool)
		}
	}
	if size > 12<<20 {
		t.Errorf("the tools root is %d MiB; it should be a few MiB (tools + libraries)", size>>20)
	}
	t.Logf("tools root: %d files, %.1f MiB", len(files), float64(size)/(1<<20))
}

func sortedKeysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
