package deploy

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildImageScript runs test/image/build-image.sh (`make image-docker`) against stand-in
// docker and podman CLIs: it builds with the first engine that answers `info`, with the
// version, revision and tag, fails saying why when none does (an image that was not built
// must not look built), and fails an image over its size target.
func TestBuildImageScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	works := func(size string) string {
		return `case "$1" in info|build) exit 0;; image) echo ` + size + `;; esac`
	}
	for _, tc := range []struct {
		name     string
		engines  map[string]string // engine → its script; the others fail `info` like a CLI without its daemon
		wantCode int
		want     string // in the output, or in the engine calls
	}{
		{"no engine reachable", map[string]string{}, 1, "no container builder on this machine (docker info failed: Cannot connect"},
		{"docker builds", map[string]string{"docker": works("20971520")}, 0,
			"docker build --build-arg VERSION=v9.9.9 --build-arg REVISION=abc123 -f Dockerfile -t ghcr.io/srvlab/rds-csi:v9.9.9 ."},
		{"docker without engine, podman builds", map[string]string{"docker": `exit 1`, "podman": works("1048576")}, 0, "podman build"},
		{"over the size target", map[string]string{"docker": works("41943040")}, 1, "40 MiB, over the 30 MiB target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, log := t.TempDir(), filepath.Join(t.TempDir(), "calls")
			for _, name := range []string{"docker", "podman", "buildah"} {
				body, ok := tc.engines[name]
				if !ok {
					body = `[ "$1" = info ] && { echo "Cannot connect to the daemon" >&2; exit 1; }; exit 2`
				}
				script := "#!/bin/sh\necho \"${0##*/} $*\" >> \"$FAKE_LOG\"\n" + body + "\n"
				if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			cmd := exec.Command("bash", filepath.Join(repoRoot, "test/image/build-image.sh"))
			cmd.Env = []string{"PATH=" + dir + ":/usr/bin:/bin", "FAKE_LOG=" + log, "VERSION=v9.9.9", "REVISION=abc123"}
			out, err := cmd.CombinedOutput()
			code := 0
			if exitErr := (*exec.ExitError)(nil); errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			calls, _ := os.ReadFile(log)
			if code != tc.wantCode || !strings.Contains(string(out)+string(calls), tc.want) {
				t.Errorf("exit code %d (want %d); want %q in the output or calls:\n%s\ncalls:\n%s", code, tc.wantCode, tc.want, out, calls)
			}
		})
	}
}
