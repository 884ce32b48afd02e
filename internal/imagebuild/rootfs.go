package imagebuild

import (
	"archive/tar"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// entry is one file of the image's root, by absolute path.
type entry struct {
	Path   string // absolute, clean
	Type   byte   // tar.TypeReg, tar.TypeDir or tar.TypeSymlink
	Mode   int64  // permission bits (and sticky for /tmp)
	Source string // regular file: copied from this host file, or
	Data   []byte // written with this content
	Link   string // symlink target
	Origin string // the Debian package (name=version) or "rds-csi" it comes from
}

// Rootfs is the image's file tree.
type Rootfs struct {
	Arch     Arch
	Entries  map[string]*entry
	Packages []*Package // the Debian packages files were taken from, by name
}

func (r *Rootfs) add(e *entry) error {
	e.Path = path.Clean(e.Path)
	if old, ok := r.Entries[e.Path]; ok {
		if old.Type == e.Type && old.Source == e.Source && string(old.Data) == string(e.Data) && old.Link == e.Link && old.Mode == e.Mode {
			return nil
		}
		return fmt.Errorf("%s comes from both %s and %s", e.Path, old.Origin, e.Origin)
	}
	r.Entries[e.Path] = e
	return nil
}

// addParents gives every entry its directories (0755 unless already present).
func (r *Rootfs) addParents() {
	for p := range r.Entries {
		for dir := path.Dir(p); dir != "/"; dir = path.Dir(dir) {
			if _, ok := r.Entries[dir]; !ok {
				r.Entries[dir] = &entry{Path: dir, Type: tar.TypeDir, Mode: 0o755, Origin: "rds-csi"}
			}
		}
	}
}

// Sorted returns the entries in path order, so every directory precedes what it holds.
func (r *Rootfs) Sorted() []*entry {
	out := make([]*entry, 0, len(r.Entries))
	for _, e := range r.Entries {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// packageSet is the unpacked packages seen as one file tree: a path is looked up in each
// package in name order, and symbolic links are followed inside that tree only.
type packageSet struct {
	pkgs map[string]*Package
}

func (s *packageSet) names() []string {
	names := make([]string, 0, len(s.pkgs))
	for n := range s.pkgs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// found is a path resolved in the package set: the symlinks on the way and the file.
type found struct {
	links []*entry // symlinks followed, in order
	file  *entry   // the regular file at the end
	pkg   *Package
}

const maxSymlinks = 8

// lookup resolves the absolute path p to a regular file. Only the last component may be a
// symbolic link (packages ship real directories); a link's target is resolved like the
// loader would on the finished image.
func (s *packageSet) lookup(p string) (*found, error) {
	var f found
	for hops := 0; hops <= maxSymlinks; hops++ {
		pkg, fi, err := s.lstat(p)
		if err != nil {
			return nil, err
		}
		if pkg == nil {
			return nil, nil
		}
		origin := pkg.Name + "=" + pkg.Version
		switch {
		case fi.Mode().IsRegular():
			f.file = &entry{Path: p, Type: tar.TypeReg, Mode: int64(fi.Mode().Perm()), Source: filepath.Join(pkg.Root, p), Origin: origin}
			f.pkg = pkg
			return &f, nil
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(filepath.Join(pkg.Root, p))
			if err != nil {
				return nil, err
			}
			f.links = append(f.links, &entry{Path: p, Type: tar.TypeSymlink, Mode: 0o777, Link: target, Origin: origin})
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(p), target)
			}
			p = path.Clean(target)
		default:
			return nil, fmt.Errorf("%s in %s is neither a file nor a symbolic link (%s)", p, pkg.File, fi.Mode())
		}
	}
	return nil, fmt.Errorf("%s: more than %d symbolic links", p, maxSymlinks)
}

// lstat finds p in the first package (by name) that has it, refusing a symbolic link on
// the way to it (it could lead out of the package tree).
func (s *packageSet) lstat(p string) (*Package, os.FileInfo, error) {
	for _, name := range s.names() {
		pkg := s.pkgs[name]
		cur := pkg.Root
		parts := strings.Split(strings.TrimPrefix(p, "/"), "/")
		var fi os.FileInfo
		var err error
		for i, part := range parts {
			cur = filepath.Join(cur, part)
			fi, err = os.Lstat(cur)
			if err != nil {
				break
			}
			if i < len(parts)-1 && !fi.IsDir() {
				err = fmt.Errorf("%s in %s: %s is not a directory", p, pkg.File, strings.Join(parts[:i+1], "/"))
				return nil, nil, err
			}
		}
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		return pkg, fi, nil
	}
	return nil, nil, nil
}

// elfInfo is what the loader needs to start one ELF file.
type elfInfo struct {
	interp  string
	needed  []string
	runpath []string
}

// readELF checks that path is an ELF object for arch and reads its interpreter, its
// DT_NEEDED libraries and its run path.
func readELF(path string, a Arch) (elfInfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return elfInfo{}, err
	}
	defer f.Close()
	if f.Machine != a.Machine || f.Class != elf.ELFCLASS64 {
		return elfInfo{}, fmt.Errorf("%s is %s %s, not %s", path, f.Class, f.Machine, a.Machine)
	}
	var info elfInfo
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return elfInfo{}, fmt.Errorf("%s: reading PT_INTERP: %w", path, err)
			}
			info.interp = strings.TrimRight(string(b), "\x00")
		}
	}
	if info.needed, err = f.ImportedLibraries(); err != nil {
		return elfInfo{}, fmt.Errorf("%s: reading DT_NEEDED: %w", path, err)
	}
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		paths, err := f.DynString(tag)
		if err != nil {
			return elfInfo{}, fmt.Errorf("%s: reading %s: %w", path, tag, err)
		}
		for _, p := range paths {
			for _, dir := range strings.Split(p, ":") {
				if strings.Contains(dir, "$") {
					return elfInfo{}, fmt.Errorf("%s: run path %q uses $ORIGIN or another variable, which this builder does not resolve", path, dir)
				}
				info.runpath = append(info.runpath, dir)
			}
		}
	}
	return info, nil
}

// guessPackage is the Debian library package policy's name for a soname:
// libext2fs.so.2 → libext2fs2, libcom_err.so.2 → libcom-err2, libfoo2.so.1 → libfoo2-1.
func guessPackage(soname string) string {
	base, version, ok := strings.Cut(soname, ".so.")
	if !ok {
		return ""
	}
	if strings.HasPrefix(base, "ld-linux") {
		return "libc6"
	}
	base = strings.ToLower(strings.ReplaceAll(base, "_", "-"))
	if last := base[len(base)-1]; last >= '0' && last <= '9' {
		return base + "-" + version
	}
	return base + version
}

// PackageSource fetches and unpacks Debian packages of one architecture (Debian does, with
// apt-get and dpkg-deb).
type PackageSource interface {
	Fetch(ctx context.Context, a Arch, names []string) (map[string]*Package, error)
}

// Assemble builds the image's root for arch: the spec's tools and config files from their
// Debian packages, every shared library they load (resolved through DT_NEEDED the way the
// loader does, fetching only the packages that provide them) and the static binary.
func Assemble(ctx context.Context, d PackageSource, spec Spec, a Arch, binary string) (*Rootfs, error) {
	pkgs, err := d.Fetch(ctx, a, spec.Packages())
	if err != nil {
		return nil, err
	}
	set := &packageSet{pkgs: pkgs}
	r := &Rootfs{Arch: a, Entries: map[string]*entry{}}
	used := map[string]bool{}
	var elves []*found // ELF files whose libraries are still to be resolved

	for _, t := range spec.Tools {
		f, err := (&packageSet{pkgs: map[string]*Package{t.Package: pkgs[t.Package]}}).lookup(t.Path)
		if err != nil {
			return nil, err
		}
		if f == nil {
			return nil, fmt.Errorf("tool %s: %s is not in %s (%s)", t.Name, t.Path, t.Package, pkgs[t.Package].File)
		}
		tool := *f.file
		tool.Path, tool.Mode = "/usr/sbin/"+t.Name, 0o755
		if err := r.add(&tool); err != nil {
			return nil, err
		}
		used[f.pkg.Name] = true
		elves = append(elves, f)
	}

	done := map[string]bool{} // host paths of ELF files already read
	for len(elves) > 0 {
		var missing []string // what could not be found this round, with who needs it
		var wantedBy []string
		var next []*found
		for _, obj := range elves {
			if done[obj.file.Source] {
				continue
			}
			info, err := readELF(obj.file.Source, a)
			if err != nil {
				return nil, err
			}
			var unresolved bool
			resolve := func(p string) (*found, error) {
				f, err := set.lookup(p)
				if err != nil || f == nil {
					return f, err
				}
				for _, l := range f.links {
					if err := r.add(l); err != nil {
						return nil, err
					}
				}
				if err := r.add(f.file); err != nil {
					return nil, err
				}
				used[f.pkg.Name] = true
				return f, nil
			}
			if info.interp != "" {
				f, err := resolve(info.interp)
				if err != nil {
					return nil, err
				}
				if f == nil {
					missing, wantedBy, unresolved = append(missing, info.interp), append(wantedBy, obj.file.Path), true
				} else {
					next = append(next, f)
				}
			}
			for _, lib := range info.needed {
				var hit *found
				for _, dir := range append(info.runpath, a.libraryDirs()...) {
					if hit, err = resolve(path.Join(dir, lib)); err != nil {
						return nil, err
					}
					if hit != nil {
						break
					}
				}
				if hit == nil {
					missing, wantedBy, unresolved = append(missing, lib), append(wantedBy, obj.file.Path), true
					continue
				}
				next = append(next, hit)
			}
			if unresolved {
				next = append(next, obj) // read again once more packages are unpacked
			} else {
				done[obj.file.Source] = true
			}
		}
		if len(missing) > 0 {
			more, err := nextPackages(set, used, missing)
			if err != nil {
				return nil, fmt.Errorf("%w (needed by %s)", err, strings.Join(dedupe(wantedBy), ", "))
			}
			fetched, err := d.Fetch(ctx, a, more)
			if err != nil {
				return nil, err
			}
			for n, p := range fetched {
				pkgs[n] = p
			}
		}
		elves = next
	}

	for _, c := range spec.Config {
		switch {
		case c.Symlink != "":
			err = r.add(&entry{Path: c.Path, Type: tar.TypeSymlink, Mode: 0o777, Link: c.Symlink, Origin: "rds-csi"})
		case c.Package != "":
			var f *found
			f, err = (&packageSet{pkgs: map[string]*Package{c.Package: pkgs[c.Package]}}).lookup(c.Path)
			if err == nil && f == nil {
				err = fmt.Errorf("config file %s is not in %s", c.Path, c.Package)
			}
			if err == nil {
				file := *f.file
				file.Path, file.Mode = c.Path, 0o644
				err = r.add(&file)
				used[c.Package] = true
			}
		default:
			err = r.add(&entry{Path: c.Path, Type: tar.TypeReg, Mode: 0o644, Data: []byte(c.Data), Origin: "rds-csi"})
		}
		if err != nil {
			return nil, err
		}
	}

	if err := checkStatic(binary, a); err != nil {
		return nil, err
	}
	if err := r.add(&entry{Path: spec.Binary, Type: tar.TypeReg, Mode: 0o755, Source: binary, Origin: "rds-csi"}); err != nil {
		return nil, err
	}
	if err := r.add(&entry{Path: "/tmp", Type: tar.TypeDir, Mode: 0o1777, Origin: "rds-csi"}); err != nil {
		return nil, err
	}
	r.addParents()
	for _, n := range set.names() {
		if used[n] {
			r.Packages = append(r.Packages, pkgs[n])
		}
	}
	return r, nil
}

// nextPackages chooses what to fetch for missing libraries: among the dependencies of the
// packages in use that are not unpacked yet, the ones Debian's naming policy gives for the
// missing sonames, or all of them when no name matches.
func nextPackages(set *packageSet, used map[string]bool, missing []string) ([]string, error) {
	candidates := map[string]bool{}
	for n := range used {
		for _, dep := range set.pkgs[n].Depends {
			if set.pkgs[dep] == nil {
				candidates[dep] = true
			}
		}
	}
	var guessed, all []string
	for c := range candidates {
		all = append(all, c)
	}
	for _, m := range dedupe(missing) {
		if g := guessPackage(path.Base(m)); candidates[g] {
			guessed = append(guessed, g)
		}
	}
	switch {
	case len(guessed) > 0:
		return dedupe(guessed), nil
	case len(all) > 0:
		sort.Strings(all)
		return all, nil
	}
	return nil, fmt.Errorf("no package provides %s: not in the unpacked packages (%s) and no dependency of theirs is left to fetch",
		strings.Join(dedupe(missing), ", "), strings.Join(set.names(), " "))
}

// checkStatic refuses a driver binary for another architecture or one that needs a loader
// (the image has libc for the tools, but the binary must not depend on it).
func checkStatic(binary string, a Arch) error {
	info, err := readELF(binary, a)
	if err != nil {
		return fmt.Errorf("the rds-csi binary: %w", err)
	}
	if info.interp != "" || len(info.needed) > 0 {
		return fmt.Errorf("the rds-csi binary %s is dynamically linked (interpreter %q, libraries %v); build it with CGO_ENABLED=0", binary, info.interp, info.needed)
	}
	return nil
}

func dedupe(s []string) []string {
	set := map[string]bool{}
	var out []string
	for _, v := range s {
		if !set[v] {
			set[v] = true
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}
