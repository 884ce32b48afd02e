package imagebuild

import (
	"archive/tar"
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	"srvlab.io/rds-csi/internal/testenv"
)

// fakeSource serves packages unpacked in a temporary directory and records what it was
// asked for.
type fakeSource struct {
	pkgs    map[string]*Package
	fetched [][]string
}

func (f *fakeSource) Fetch(_ context.Context, _ Arch, names []string) (map[string]*Package, error) {
	f.fetched = append(f.fetched, append([]string(nil), names...))
	out := map[string]*Package{}
	for _, n := range names {
		p, ok := f.pkgs[n]
		if !ok {
			return nil, &os.PathError{Op: "fetch", Path: n, Err: os.ErrNotExist}
		}
		out[n] = p
	}
	return out, nil
}

// fakePackage is a package holding copies of host files (image path → host path) and
// symbolic links (image path → target).
func fakePackage(t *testing.T, name string, deps []string, files, links map[string]string) *Package {
	t.Helper()
	root := filepath.Join(t.TempDir(), name)
	for dst, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		full := filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for dst, target := range links {
		full := filepath.Join(root, dst)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, full); err != nil {
			t.Fatal(err)
		}
	}
	return &Package{Name: name, Version: "1.0-test", File: name + "_1.0-test.deb", Root: root, Depends: deps}
}

// hostLib is the host's file for a library soname (following its symlink).
func hostLib(t *testing.T, soname string) string {
	t.Helper()
	for _, dir := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64"} {
		if p, err := filepath.EvalSymlinks(filepath.Join(dir, soname)); err == nil {
			return p
		}
	}
	t.Fatalf("the host has no %s", soname)
	return ""
}

// hostTools skips (or, in CI, fails) unless this is an amd64 Debian host with the
// filesystem tools installed: the fake packages are made of the host's own ELF files.
func hostTools(t *testing.T) {
	t.Helper()
	var missing []string
	if runtime.GOARCH != "amd64" {
		missing = append(missing, "an amd64 host")
	}
	for _, p := range []string{"/sbin/mke2fs", "/sbin/e2fsck", "/sbin/resize2fs", "/sbin/mkfs.xfs", "/sbin/xfs_repair", "/usr/sbin/xfs_growfs", "/etc/mke2fs.conf"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (test/install-deps.sh installs e2fsprogs and xfsprogs)"
		testenv.Missing(t, msg)
	}
}

// debianLike is a fake archive laid out like Debian 12: the tools packages depend on more
// than their binaries load (logsave, libicu72), and libe2p ships in libext2fs2.
func debianLike(t *testing.T) *fakeSource {
	lib := func(name string, deps []string, dir string, sonames ...string) *Package {
		files, links := map[string]string{}, map[string]string{}
		for _, so := range sonames {
			real := hostLib(t, so)
			files[path.Join(dir, filepath.Base(real))] = real
			if filepath.Base(real) != so {
				links[path.Join(dir, so)] = filepath.Base(real)
			}
		}
		return fakePackage(t, name, deps, files, links)
	}
	libc := lib("libc6", []string{"libgcc-s1"}, "/lib/x86_64-linux-gnu", "libc.so.6", "ld-linux-x86-64.so.2")
	// libc6 ships the loader's ABI path as an absolute link into the multiarch directory.
	if err := os.MkdirAll(filepath.Join(libc.Root, "lib64"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", filepath.Join(libc.Root, "lib64/ld-linux-x86-64.so.2")); err != nil {
		t.Fatal(err)
	}
	pkgs := []*Package{
		fakePackage(t, "e2fsprogs", []string{"libblkid1", "libc6", "libcom-err2", "libext2fs2", "libss2", "libuuid1", "logsave"},
			map[string]string{"/sbin/mke2fs": "/sbin/mke2fs", "/sbin/e2fsck": "/sbin/e2fsck", "/sbin/resize2fs": "/sbin/resize2fs", "/etc/mke2fs.conf": "/etc/mke2fs.conf"}, nil),
		fakePackage(t, "xfsprogs", []string{"libblkid1", "libc6", "libicu72", "libinih1", "liburcu8", "libuuid1"},
			map[string]string{"/sbin/mkfs.xfs": "/sbin/mkfs.xfs", "/sbin/xfs_repair": "/sbin/xfs_repair", "/usr/sbin/xfs_growfs": "/usr/sbin/xfs_growfs"}, nil),
		libc,
		lib("libext2fs2", []string{"libc6"}, "/lib/x86_64-linux-gnu", "libext2fs.so.2", "libe2p.so.2"),
		lib("libcom-err2", []string{"libc6"}, "/lib/x86_64-linux-gnu", "libcom_err.so.2"),
		lib("libblkid1", []string{"libc6"}, "/usr/lib/x86_64-linux-gnu", "libblkid.so.1"),
		lib("libuuid1", []string{"libc6"}, "/usr/lib/x86_64-linux-gnu", "libuuid.so.1"),
		lib("libinih1", []string{"libc6"}, "/usr/lib/x86_64-linux-gnu", "libinih.so.1"),
		lib("liburcu8", []string{"libc6"}, "/usr/lib/x86_64-linux-gnu", "liburcu.so.8"),
	}
	src := &fakeSource{pkgs: map[string]*Package{}}
	for _, p := range pkgs {
		src.pkgs[p.Name] = p
	}
	return src
}

// staticBinary builds a tiny static Go program for amd64.
func staticBinary(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module static\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "static")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestAssembleTakesExactlyTheLoadedLibraries(t *testing.T) {
	hostTools(t)
	src := debianLike(t)
	a, _ := LookupArch("amd64")
	r, err := Assemble(context.Background(), src, DefaultSpec(), a, staticBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	var used []string
	for _, p := range r.Packages {
		used = append(used, p.Name)
	}
	want := []string{"e2fsprogs", "libblkid1", "libc6", "libcom-err2", "libext2fs2", "libinih1", "liburcu8", "libuuid1", "xfsprogs"}
	if !slices.Equal(used, want) {
		t.Errorf("packages used %v, want %v", used, want)
	}
	var fetched []string
	for _, round := range src.fetched {
		fetched = append(fetched, round...)
	}
	for _, never := range []string{"logsave", "libicu72", "libss2", "libgcc-s1"} {
		if slices.Contains(fetched, never) {
			t.Errorf("fetched %s, which no tool loads (fetch rounds %v)", never, src.fetched)
		}
	}
	// Every tool, library link and loader path the tools need, and nothing else.
	for _, p := range []string{
		"/usr/sbin/mkfs.ext4", "/usr/sbin/e2fsck", "/usr/sbin/resize2fs", "/usr/sbin/mkfs.xfs", "/usr/sbin/xfs_repair", "/usr/sbin/xfs_growfs",
		"/lib/x86_64-linux-gnu/libext2fs.so.2", "/lib/x86_64-linux-gnu/libe2p.so.2", "/usr/lib/x86_64-linux-gnu/liburcu.so.8",
		"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6",
		"/etc/mke2fs.conf", "/etc/mtab", "/etc/passwd", "/etc/group", "/usr/bin/rds-csi", "/tmp",
	} {
		if r.Entries[p] == nil {
			t.Errorf("the root lacks %s", p)
		}
	}
	if e := r.Entries["/lib64/ld-linux-x86-64.so.2"]; e != nil && (e.Type != tar.TypeSymlink || e.Link != "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2") {
		t.Errorf("the loader's ABI path should stay libc6's link, is %+v", e)
	}
	if e := r.Entries["/usr/sbin/mkfs.ext4"]; e != nil && (e.Type != tar.TypeReg || e.Mode != 0o755 || !strings.HasSuffix(e.Source, "/sbin/mke2fs")) {
		t.Errorf("mkfs.ext4 should be a copy of mke2fs, is %+v", e)
	}
	if e := r.Entries["/tmp"]; e != nil && e.Mode != 0o1777 {
		t.Errorf("/tmp has mode %o, want 1777", e.Mode)
	}
	var names []string
	for p, e := range r.Entries {
		if e.Type != tar.TypeDir {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	for _, p := range names {
		ok := strings.HasPrefix(p, "/usr/sbin/") || strings.Contains(p, ".so") || strings.HasPrefix(p, "/etc/") || p == "/usr/bin/rds-csi"
		if !ok {
			t.Errorf("the root holds %s, neither a tool, a library, config nor the driver", p)
		}
	}
	if len(names) != 28 {
		t.Errorf("the root holds %d files and links, want 28: %v", len(names), names)
	}
}

func TestAssembleRefuses(t *testing.T) {
	hostTools(t)
	amd64, _ := LookupArch("amd64")
	arm64, _ := LookupArch("arm64")
	cases := []struct {
		name   string
		arch   Arch
		break_ func(*fakeSource)
		binary func(t *testing.T) string
		want   string
	}{
		{name: "tools of another architecture", arch: arm64, want: "not EM_AARCH64"},
		{name: "a library no package provides", arch: amd64,
			break_: func(s *fakeSource) { delete(s.pkgs, "liburcu8") },
			want:   "liburcu8"},
		{name: "a dynamically linked driver binary", arch: amd64,
			binary: func(t *testing.T) string { return "/sbin/mke2fs" },
			want:   "is dynamically linked"},
		{name: "a tool missing from its package", arch: amd64,
			break_: func(s *fakeSource) { os.Remove(filepath.Join(s.pkgs["xfsprogs"].Root, "usr/sbin/xfs_growfs")) },
			want:   "tool xfs_growfs: /usr/sbin/xfs_growfs is not in xfsprogs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := debianLike(t)
			if tc.break_ != nil {
				tc.break_(src)
			}
			bin := "/nonexistent"
			if tc.binary != nil {
				bin = tc.binary(t)
			} else if tc.arch.Name == "amd64" {
				bin = staticBinary(t)
			}
			_, err := Assemble(context.Background(), src, DefaultSpec(), tc.arch, bin)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Assemble: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPackageSetRefusesLinksOnTheWay(t *testing.T) {
	// A package whose directory is a link (to the host's /lib) must not make the lookup
	// read the host's files.
	p := fakePackage(t, "evil", nil, nil, map[string]string{"/lib": "/lib"})
	set := &packageSet{pkgs: map[string]*Package{"evil": p}}
	if _, err := set.lookup("/lib/x86_64-linux-gnu/libc.so.6"); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("lookup through a linked directory: %v, want a refusal", err)
	}
}

func TestGuessPackage(t *testing.T) {
	for soname, want := range map[string]string{
		"libext2fs.so.2":       "libext2fs2",
		"libcom_err.so.2":      "libcom-err2",
		"libc.so.6":            "libc6",
		"ld-linux-x86-64.so.2": "libc6",
		"liburcu.so.8":         "liburcu8",
		"libfoo2.so.1":         "libfoo2-1",
		"libnotso":             "",
	} {
		if got := guessPackage(soname); got != want {
			t.Errorf("guessPackage(%q) = %q, want %q", soname, got, want)
		}
	}
}
