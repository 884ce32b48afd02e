package deploy

import (
	"encoding/json"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"srvlab.io/rds-csi/internal/imagebuild"
)

// debianSuites maps the Dockerfile's debian:<N> base to the release name cmd/rds-image uses.
var debianSuites = map[string]string{"12": "bookworm", "13": "trixie"}

// TestImageSpecMatchesTheDockerfile keeps the two recipes of one image in step: what
// cmd/rds-image assembles (imagebuild.DefaultSpec) and what the Dockerfile builds must carry
// the same tools from the same packages and Debian release, the same config files, and run
// the same way.
func TestImageSpecMatchesTheDockerfile(t *testing.T) {
	spec := imagebuild.DefaultSpec()
	stages := parseDockerfile(t)
	tools := stageNamed(t, stages, "tools")
	final := stages[len(stages)-1]

	// Tools: the mount package's table, the spec and the Dockerfile's copy loop agree.
	exec := execedTools(t)
	specTools := map[string]string{}
	for _, tool := range spec.Tools {
		specTools[tool.Name] = tool.Package
	}
	if !mapsEqual(specTools, exec) {
		t.Errorf("cmd/rds-image carries tools %v; the mount package execs %v", specTools, exec)
	}
	var install, collect string
	for _, in := range tools.all("RUN") {
		if strings.Contains(in.args, "apt-get install") {
			install = in.args
		}
		if strings.Contains(in.args, "ldd") {
			collect = in.args
		}
	}
	loop := regexp.MustCompile(`for tool in ([^;]+);`).FindStringSubmatch(collect)
	if loop == nil {
		t.Fatal("the Dockerfile's collect step has no `for tool in ...;` loop")
	}
	dockerTools := strings.Fields(loop[1])
	sort.Strings(dockerTools)
	if want := sortedKeysOf(specTools); !slices.Equal(dockerTools, want) {
		t.Errorf("the Dockerfile copies %v, cmd/rds-image %v", dockerTools, want)
	}

	// Packages and release.
	m := regexp.MustCompile(`--no-install-recommends((?:\s+[a-z0-9.+-]+)+)`).FindStringSubmatch(install)
	if m == nil {
		t.Fatal("the Dockerfile's apt-get install names no packages after --no-install-recommends")
	}
	dockerPkgs := strings.Fields(m[1])
	sort.Strings(dockerPkgs)
	if !slices.Equal(dockerPkgs, spec.Packages()) {
		t.Errorf("the Dockerfile installs %v, cmd/rds-image takes tools from %v", dockerPkgs, spec.Packages())
	}
	base := regexp.MustCompile(`^debian:(\d+)`).FindStringSubmatch(tools.from)
	if base == nil || debianSuites[base[1]] != spec.Suite {
		t.Errorf("the Dockerfile's tools stage is FROM %s, cmd/rds-image uses Debian %s", tools.from, spec.Suite)
	}

	// Config files: copied from the package, linked, or written with the same content.
	for _, c := range spec.Config {
		switch {
		case c.Symlink != "":
			if !strings.Contains(collect, "ln -sf "+c.Symlink+` "$ROOTFS`+c.Path+`"`) {
				t.Errorf("the Dockerfile does not link %s to %s", c.Path, c.Symlink)
			}
		case c.Package != "":
			if !strings.Contains(collect, "cp "+c.Path+` "$ROOTFS`+c.Path+`"`) {
				t.Errorf("the Dockerfile does not copy %s from %s", c.Path, c.Package)
			}
		default:
			printf := "printf '" + strings.ReplaceAll(c.Data, "\n", `\n`) + `' > "$ROOTFS` + c.Path + `"`
			if !strings.Contains(collect, printf) {
				t.Errorf("the Dockerfile does not write %s as cmd/rds-image does: want %s", c.Path, printf)
			}
		}
	}
	if !strings.Contains(collect, `chmod 1777 "$ROOTFS/tmp"`) {
		t.Error("the Dockerfile's /tmp is not 1777 like cmd/rds-image's")
	}

	// How it runs.
	if u := final.all("USER"); len(u) != 1 || u[0].args != spec.User {
		t.Errorf("the Dockerfile's USER %v, cmd/rds-image %s", u, spec.User)
	}
	if ep := final.all("ENTRYPOINT"); len(ep) == 1 {
		var got []string
		if err := json.Unmarshal([]byte(ep[0].args), &got); err != nil || !slices.Equal(got, spec.Entrypoint) {
			t.Errorf("the Dockerfile's ENTRYPOINT %s, cmd/rds-image %v", ep[0].args, spec.Entrypoint)
		}
	} else {
		t.Errorf("the Dockerfile's final stage has %d ENTRYPOINTs", len(ep))
	}
	var env []string
	for _, in := range final.all("ENV") {
		env = append(env, in.args)
	}
	if !slices.Equal(env, spec.Env) {
		t.Errorf("the Dockerfile's ENV %v, cmd/rds-image %v", env, spec.Env)
	}
	if !slices.ContainsFunc(final.all("COPY"), func(in instruction) bool { return in.args == "--from=build /out/rds-csi "+spec.Binary }) {
		t.Errorf("the Dockerfile does not put the binary at %s", spec.Binary)
	}
	labels := dockerfileLabels(final)
	for k, v := range spec.Labels {
		if labels[k] != v {
			t.Errorf("LABEL %s: Dockerfile %q, cmd/rds-image %q", k, labels[k], v)
		}
	}
	for k := range labels {
		if _, ok := spec.Labels[k]; !ok && k != "org.opencontainers.image.version" && k != "org.opencontainers.image.revision" {
			t.Errorf("the Dockerfile sets LABEL %s, which cmd/rds-image does not", k)
		}
	}
}

// dockerfileLabels reads key="value" pairs of a stage's LABEL instructions.
func dockerfileLabels(s stage) map[string]string {
	out := map[string]string{}
	for _, in := range s.all("LABEL") {
		for _, m := range regexp.MustCompile(`([a-z0-9.]+)="([^"]*)"`).FindAllStringSubmatch(in.args, -1) {
			out[m[1]] = m[2]
		}
	}
	return out
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
