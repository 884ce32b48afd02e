package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestNodeProductionBinaryHasNoLoopback: the loop-device stand-in is linked only into
// loopnvme test builds, never into the production binary.
func TestNodeProductionBinaryHasNoLoopback(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		t.Fatalf("the go tool is needed to list the binary's packages: %v", err)
	}
	const pkg = "srvlab.io/rds-csi/nvme/loopback"
	for _, tc := range []struct {
		tags string
		want bool
	}{{"", false}, {"loopnvme", true}} {
		out, err := exec.Command(goTool, "list", "-deps", "-tags="+tc.tags, ".").CombinedOutput()
		if err != nil {
			t.Fatalf("go list -tags=%q: %v\n%s", tc.tags, err, out)
		}
		if got := slices.Contains(strings.Fields(string(out)), pkg); got != tc.want {
			t.Errorf("tags %q: binary contains %s = %v, want %v", tc.tags, pkg, got, tc.want)
		}
	}
}
