package testenv

import (
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// verdict records how Require and Missing end a test, without ending this one.
type verdict struct {
	testing.TB
	fatal, skip []string
}

func (v *verdict) Helper()               {}
func (v *verdict) Fatal(args ...any)     { v.fatal = append(v.fatal, fmt.Sprint(args...)) }
func (v *verdict) Skip(args ...any)      { v.skip = append(v.skip, fmt.Sprint(args...)) }
func (v *verdict) Fatalf(string, ...any) { panic("testenv must call Fatal") }
func (v *verdict) Skipf(string, ...any)  { panic("testenv must call Skip") }

func TestRequire(t *testing.T) {
	missing := errors.New("no /dev/loop-control")
	for _, tc := range []struct {
		name        string
		ci, e2e     string // the values of CI and RDS_E2E_REQUIRED
		err         error
		also        []string
		fatal, skip string
	}{
		{name: "present, in CI", ci: "true"},
		{name: "present, elsewhere"},
		{name: "missing, in CI", ci: "true", err: missing,
			fatal: "no /dev/loop-control (CI=true requires it)"},
		{name: "missing, elsewhere", err: missing,
			skip: "no /dev/loop-control (skipped; CI=true makes this fail)"},
		{name: "missing, CI set to other than true", ci: "1", err: missing,
			skip: "no /dev/loop-control (skipped; CI=true makes this fail)"},
		{name: "missing, required by another variable", e2e: "1", err: missing, also: []string{"RDS_E2E_REQUIRED"},
			fatal: "no /dev/loop-control (RDS_E2E_REQUIRED=1 requires it)"},
		{name: "missing, in CI, another variable unset", ci: "true", err: missing, also: []string{"RDS_E2E_REQUIRED"},
			fatal: "no /dev/loop-control (CI=true requires it)"},
		{name: "missing, neither", e2e: "0", err: missing, also: []string{"RDS_E2E_REQUIRED"},
			skip: "no /dev/loop-control (skipped; CI=true or RDS_E2E_REQUIRED=1 makes this fail)"},
		{name: "present, required by another variable", e2e: "1", also: []string{"RDS_E2E_REQUIRED"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			t.Setenv("RDS_E2E_REQUIRED", tc.e2e)
			v := &verdict{}
			Require(v, tc.err, tc.also...)
			if want := wanted(tc.fatal); fmt.Sprint(v.fatal) != fmt.Sprint(want) {
				t.Errorf("Fatal calls %q, want %q", v.fatal, want)
			}
			if want := wanted(tc.skip); fmt.Sprint(v.skip) != fmt.Sprint(want) {
				t.Errorf("Skip calls %q, want %q", v.skip, want)
			}
		})
	}
}

func wanted(msg string) []string {
	if msg == "" {
		return nil
	}
	return []string{msg}
}

// TestTestSupportStaysOutOfProduction: production code must not change with the test
// environment, so only _test.go files import the module's test-support packages, and
// vmsys also the programs under test/ (the bench's VM guest).
func TestTestSupportStaysOutOfProduction(t *testing.T) {
	allowed := map[string]func(path string) bool{
		"srvlab.io/rds-csi/internal/testenv": func(string) bool { return false },
		"srvlab.io/rds-csi/internal/vmsys":   func(path string) bool { return strings.HasPrefix(path, "test/") },
	}
	root := filepath.Join("..", "..")
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if ok, ours := allowed[p]; ours && !ok(rel) {
				t.Errorf("%s imports the test-support package %s", rel, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 50 {
		t.Fatalf("only %d Go files found under %s: not the module root?", checked, root)
	}
}
