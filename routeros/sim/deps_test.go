package sim

import (
	goparser "go/parser"
	gotoken "go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The dependency is one-way: the client's tests import the simulator, never the reverse,
// so the simulator cannot borrow the client's idea of RouterOS.
func TestDoesNotImportTheClient(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no sources: %v", err)
	}
	for _, f := range files {
		parsed, err := goparser.ParseFile(gotoken.NewFileSet(), f, nil, goparser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if path == "srvlab.io/rds-csi/routeros" || strings.HasPrefix(path, "srvlab.io/rds-csi/") && !strings.HasPrefix(path, "srvlab.io/rds-csi/routeros/sim") {
				t.Errorf("%s imports %s", f, path)
			}
		}
	}
}
