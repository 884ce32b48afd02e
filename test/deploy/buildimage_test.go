package deploy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const buildScript = "test/image/build-image.sh"

var (
	imageDefault    = regexp.MustCompile(`(?m)^IMAGE=\$\{IMAGE:-([^}]+)\}$`)
	makeRegistry    = regexp.MustCompile(`(?m)^REGISTRY\s*\?=\s*(\S+)\s*$`)
	makeImage       = regexp.MustCompile(`(?m)^IMAGE\s*\?=\s*\$\(REGISTRY\)/(\S+)\s*$`)
	imageRepository = "rds-csi"
)

// defaultImageRepo is the repository `make image` tags by default (the Makefile's
// $(REGISTRY)/rds-csi), which deploy.yaml must use.
func defaultImageRepo(r *report) string {
	src, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		r.add("reading the Makefile: %v", err)
		return ""
	}
	reg, img := makeRegistry.FindSubmatch(src), makeImage.FindSubmatch(src)
	if reg == nil || img == nil || string(img[1]) != imageRepository {
		r.add("the Makefile needs `REGISTRY ?= <host/owner>` and `IMAGE ?= $(REGISTRY)/%s`", imageRepository)
		return ""
	}
	return string(reg[1]) + "/" + string(img[1])
}

// The Dockerfile path tags what `make image` tags.
func TestBuildScriptDefaultsToTheMakefilesImage(t *testing.T) {
	r := &report{}
	want := defaultImageRepo(r)
	for _, p := range r.problems {
		t.Error(p)
	}
	src, err := os.ReadFile(filepath.Join(repoRoot, buildScript))
	if err != nil {
		t.Fatal(err)
	}
	m := imageDefault.FindSubmatch(src)
	if m == nil {
		t.Fatalf("%s has no line IMAGE=${IMAGE:-<repository>}", buildScript)
	}
	if string(m[1]) != want {
		t.Errorf("%s tags %s by default, the Makefile %s", buildScript, m[1], want)
	}
	if !strings.HasPrefix(want, "ghcr.io/") {
		t.Errorf("the default image %s is not on ghcr.io, where the release workflow pushes", want)
	}
}

// fakeEngines writes docker, podman and buildah stand-ins into a directory: each runs the
// shell snippet given for it (with "$@" its arguments), or fails `info` like a CLI without
// an engine.
func fakeEngines(t *testing.T, scripts map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"docker", "podman", "buildah"} {
		body, ok := scripts[name]
		if !ok {
			body = `[ "$1" = info ] && { echo "Cannot connect to the ` + name + ` daemon at unix:///run/` + name + `.sock" >&2; exit 1; }; exit 2`
		}
		script := "#!/bin/sh\necho \"$0 $*\" >> \"$FAKE_LOG\"\n" + body + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// runBuildScript runs build-image.sh with only the fake engines and the basic tools on PATH.
func runBuildScript(t *testing.T, fakes string, env ...string) (stdout string, code int, calls string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "calls")
	cmd := exec.Command("bash", filepath.Join(repoRoot, buildScript))
	cmd.Env = append([]string{"PATH=" + fakes + ":/usr/bin:/bin", "FAKE_LOG=" + log, "VERSION=v9.9.9", "REVISION=abc123"}, env...)
	out, err := cmd.CombinedOutput()
	code = 0
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(log)
	return string(out), code, string(b)
}

func TestBuildImageScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	okDocker := func(size string) string {
		return `case "$1" in info) exit 0;; build) exit 0;; image) echo ` + size + `;; esac`
	}
	cases := []struct {
		name     string
		engines  map[string]string
		env      []string
		wantCode int
		wantOut  []string
		wantCall string
	}{
		{
			name:     "no engine reachable: say so and fail",
			engines:  map[string]string{},
			wantCode: 1,
			wantOut: []string{
				"no container builder on this machine",
				"docker info failed: Cannot connect to the docker daemon",
				"podman info failed",
				"the Dockerfile is checked by test/deploy instead",
			},
		},
		{
			name:     "docker works: build with version, revision and the default tag",
			engines:  map[string]string{"docker": okDocker("20971520")},
			wantCode: 0,
			wantOut:  []string{"building ghcr.io/srvlab/rds-csi:v9.9.9 with docker", "is 20 MiB"},
			wantCall: "build --build-arg VERSION=v9.9.9 --build-arg REVISION=abc123 -f Dockerfile -t ghcr.io/srvlab/rds-csi:v9.9.9 .",
		},
		{
			name:     "docker missing, podman works",
			engines:  map[string]string{"docker": `exit 127`, "podman": okDocker("1048576")},
			wantCode: 0,
			wantOut:  []string{"with podman"},
			wantCall: "podman build",
		},
		{
			name:     "image over the size target fails",
			engines:  map[string]string{"docker": okDocker("41943040")},
			wantCode: 1,
			wantOut:  []string{"40 MiB, over the 30 MiB target"},
		},
		{
			name:     "forced engine that does not work",
			engines:  map[string]string{"docker": okDocker("1")},
			env:      []string{"ENGINE=podman"},
			wantCode: 1,
			wantOut:  []string{"no container builder on this machine (podman info failed"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, code, calls := runBuildScript(t, fakeEngines(t, tc.engines), tc.env...)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tc.wantCode, out)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.wantCall != "" && !strings.Contains(calls, tc.wantCall) {
				t.Errorf("no engine call containing %q; calls:\n%s", tc.wantCall, calls)
			}
		})
	}
}
