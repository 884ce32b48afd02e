package main

import (
	"cmp"
	"context"
	"debug/elf"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// sizeProfile builds the driver once more without -s -w and sums its code and data
// symbols by package: what the binary is made of, for a size that misses its target.
func sizeProfile(ctx context.Context, root, dir string) (string, error) {
	out := filepath.Join(dir, "rds-csi.symbols")
	if err := goBuild(ctx, root, out, ".", "", false); err != nil {
		return "", err
	}
	f, err := elf.Open(out)
	if err != nil {
		return "", err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return "", err
	}
	counted := map[string]bool{".text": true, ".rodata": true, ".data": true, ".noptrdata": true, ".typelink": true, ".itablink": true}
	byModule := map[string]uint64{}
	var total uint64
	for _, s := range syms {
		if int(s.Section) >= len(f.Sections) || s.Section == elf.SHN_UNDEF || !counted[f.Sections[s.Section].Name] {
			continue
		}
		byModule[moduleOf(s.Name)] += s.Size
		total += s.Size
	}
	type entry struct {
		name string
		size uint64
	}
	var list []entry
	for k, v := range byModule {
		list = append(list, entry{k, v})
	}
	slices.SortFunc(list, func(a, b entry) int { return cmp.Compare(b.size, a.size) })
	var parts []string
	for _, e := range list[:min(10, len(list))] {
		parts = append(parts, fmt.Sprintf("%s %.0f KiB", e.name, float64(e.size)/1024))
	}
	profile := fmt.Sprintf("linked code and data by origin (%.1f MiB in symbols; pclntab and headers come on top): %s",
		float64(total)/(1<<20), strings.Join(parts, ", "))
	if linksNetTrace(ctx, root) {
		profile += "; golang.org/x/net/trace is linked (grpc imports it unless built with -tags grpcnotrace): it brings html/template and text/template, " +
			"whose reflection on method names keeps every exported method of every reachable type"
	}
	return profile, nil
}

var symbolPrefix = regexp.MustCompile(`^(type:\.?(eq\.)?|go:(itab|info|string|func)\.\*?|\*)`)

// moduleOf names where a symbol comes from: the module for third-party code, the
// top-level package for the standard library, "rds-csi" for ours.
func moduleOf(sym string) string {
	n := strings.TrimLeft(symbolPrefix.ReplaceAllString(sym, ""), "*(")
	head, _, _ := strings.Cut(n, "(")
	head, _, _ = strings.Cut(head, "[")
	pkg := head
	slash := strings.LastIndex(head, "/")
	if i := strings.Index(head[slash+1:], "."); i >= 0 {
		pkg = head[:slash+1+i]
	}
	first, _, _ := strings.Cut(pkg, "/")
	switch {
	case pkg == "main" || strings.HasPrefix(pkg, "srvlab.io/"):
		return "rds-csi"
	case strings.HasPrefix(pkg, "vendor/"):
		return "std (vendored x/)"
	case first == "github.com" || first == "golang.org":
		return pathPrefix(pkg, 3)
	case strings.Contains(first, "."):
		return pathPrefix(pkg, 2)
	case pkg == "":
		return "other"
	case strings.HasPrefix(pkg, "net/http"):
		return "std net/http"
	}
	return "std " + first
}

// pathPrefix is the first n elements of an import path.
func pathPrefix(p string, n int) string {
	parts := strings.Split(p, "/")
	return strings.Join(parts[:min(n, len(parts))], "/")
}

// linksNetTrace reports whether the build links golang.org/x/net/trace, which grpc imports
// unless built with -tags grpcnotrace. It brings html/template and text/template, whose
// reflection on method names keeps every exported method of every reachable type in the
// binary (the linker's dead-code elimination gives up on them).
func linksNetTrace(ctx context.Context, root string) bool {
	args := []string{"list", "-deps"}
	if t := goflagsTags(); t != "" {
		args = append(args, "-tags", t)
	}
	cmd := exec.CommandContext(ctx, goTool(), append(args, ".")...)
	cmd.Dir = root
	out, err := cmd.Output()
	return err == nil && slices.Contains(strings.Fields(string(out)), "golang.org/x/net/trace")
}
