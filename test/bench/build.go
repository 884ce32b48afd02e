package main

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// findRoot returns the module root: the nearest directory upwards holding go.mod
// (`go run ./test/bench` runs from the root, but any directory inside works).
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run from the rds-csi checkout")
		}
		dir = parent
	}
}

// goTool is the go command: from PATH, else the standard install location.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// gitVersion is what the Makefile stamps into the binary (git describe).
func gitVersion(root string) string {
	out, err := exec.Command("git", "-C", root, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// buildBinary builds a static, stripped binary exactly as `make build` does
// (CGO_ENABLED=0, -trimpath, -ldflags "-s -w -X main.version=…"), with extra build tags.
// Tags set for every build through GOFLAGS (e.g. exported by the Makefile) are kept:
// a -tags on the command line would otherwise replace them.
func buildBinary(ctx context.Context, root, out, pkg, tags string) error {
	return goBuild(ctx, root, out, pkg, tags, true)
}

// goBuild is buildBinary, optionally keeping the symbols, with extra environment (e.g.
// GOARCH for another architecture).
func goBuild(ctx context.Context, root, out, pkg, tags string, strip bool, env ...string) error {
	ldflags := "-X main.version=" + gitVersion(root)
	if strip {
		ldflags = "-s -w " + ldflags
	}
	args := []string{"build", "-trimpath", "-ldflags", ldflags, "-o", out}
	if all := mergeTags(goflagsTags(), tags); all != "" {
		args = append(args, "-tags", all)
	}
	if prof != nil && pkg == "." {
		args = append(args, "-overlay", prof.overlay)
	}
	args = append(args, pkg)
	ctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = root
	cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), env...)
	if raw, err := cmd.CombinedOutput(); err != nil {
		what := pkg
		if t := mergeTags(goflagsTags(), tags); t != "" {
			what += " -tags " + t
		}
		return fmt.Errorf("go build %s: %v: %s", what, err, firstLines(string(raw), 2))
	}
	return nil
}

// firstLines returns the first n lines of s that are not "# package" headers, joined:
// a compiler's first errors are the ones that matter.
func firstLines(s string, n int) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if strings.HasPrefix(l, "# ") {
			continue
		}
		if out = append(out, l); len(out) == n {
			break
		}
	}
	return strings.Join(out, " | ")
}

// goflagsTags returns the build tags GOFLAGS sets (-tags=a,b or -tags a,b).
func goflagsTags() string {
	fields := strings.Fields(os.Getenv("GOFLAGS"))
	for i, f := range fields {
		if v, ok := strings.CutPrefix(f, "-tags="); ok {
			return v
		}
		if v, ok := strings.CutPrefix(f, "--tags="); ok {
			return v
		}
		if (f == "-tags" || f == "--tags") && i+1 < len(fields) {
			return fields[i+1]
		}
	}
	return ""
}

// mergeTags joins comma-separated tag lists without repeats.
func mergeTags(lists ...string) string {
	var tags []string
	for _, l := range lists {
		for _, t := range strings.Split(l, ",") {
			if t = strings.TrimSpace(t); t != "" && !slices.Contains(tags, t) {
				tags = append(tags, t)
			}
		}
	}
	return strings.Join(tags, ",")
}

// binaries are the builds the process figures run.
type binaries struct {
	driver    string // the production build
	driverErr error
	loop      string // -tags loopnvme: the node plugin with the loop-device stand-in for NVMe/TCP
	loopErr   error
}

func buildAll(ctx context.Context, root, dir string) binaries {
	b := binaries{driver: filepath.Join(dir, "rds-csi"), loop: filepath.Join(dir, "rds-csi-loopnvme")}
	b.driverErr = buildBinary(ctx, root, b.driver, ".", "")
	b.loopErr = buildBinary(ctx, root, b.loop, ".", "loopnvme")
	return b
}

// binaryFigure is the size of the production build; when it misses, the detail says what
// the binary is made of.
func binaryFigure(ctx context.Context, root, work string, b binaries) figure {
	if b.driverErr != nil {
		return figBinary.na("build failed: %v", b.driverErr)
	}
	st, err := os.Stat(b.driver)
	if err != nil {
		return figBinary.na("%v", err)
	}
	static := "static"
	if f, err := elf.Open(b.driver); err != nil {
		static = "not ELF: " + err.Error()
	} else {
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				static = "DYNAMIC: it has an ELF interpreter"
			}
		}
		f.Close()
	}
	tags := ""
	if t := goflagsTags(); t != "" {
		tags = " -tags " + t
	}
	f := figBinary.measured(float64(st.Size())/(1<<20), "%d bytes; CGO_ENABLED=0 go build -trimpath%s -ldflags \"-s -w -X main.version=…\" . (%s)", st.Size(), tags, static)
	if f.Status == statusMiss {
		profile, err := sizeProfile(ctx, root, filepath.Dir(b.driver))
		if err != nil {
			profile = "no size profile: " + err.Error()
		}
		f.Detail += "; " + profile
	}
	return f
}
