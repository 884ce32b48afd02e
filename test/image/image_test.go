// Package image builds the real rds-csi image with cmd/rds-image's library from the Debian
// archive, for amd64 and arm64, and proves it: two builds give the same digests and bytes,
// each architecture is within the size target, every filesystem tool the node plugin runs
// works inside the assembled amd64 root (chroot), with nothing from the host but the kernel,
// and containerd imports the docker archive and runs it under runc as the image says. Needs root (chroot, mounts), apt-get and dpkg-deb, and the Debian archive (apt's
// network); with CI=true a missing prerequisite fails the test.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"srvlab.io/rds-csi/internal/imagebuild"
	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/test/internal/scratch"
	"srvlab.io/rds-csi/test/internal/toolroot"
)

const (
	repoRoot  = "../.."
	maxMiB    = 20 // the image size target per architecture (unpacked)
	testImage = "ghcr.io/srvlab/rds-csi"
)

var arches = []string{"amd64", "arm64"}

func prerequisites(t *testing.T) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (chroot and mounts)")
	}
	for _, bin := range []string{"apt-get", "dpkg-deb", "chroot", "unshare", "truncate", "mount"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if _, err := os.Stat("/usr/share/keyrings/debian-archive-keyring.gpg"); err != nil {
		missing = append(missing, "debian-archive-keyring")
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (a Debian machine, as root)"
		testenv.Missing(t, msg)
	}
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

var (
	binOnce sync.Once
	bins    map[string]string
	binErr  error
)

// binaries builds the static rds-csi binary for each architecture once per test binary,
// the way `make image` does.
func binaries(t *testing.T) map[string]string {
	t.Helper()
	binOnce.Do(func() {
		dir := filepath.Join(workDir, "bin")
		bins = map[string]string{}
		for _, arch := range arches {
			out := filepath.Join(dir, arch, "rds-csi")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-tags", "grpcnotrace", "-ldflags", "-s -w -X main.version=image-test", "-o", out, ".")
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
			b, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				binErr = fmt.Errorf("go build for %s: %v\n%s", arch, err, b)
				return
			}
			bins[arch] = out
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return bins
}

func cacheDir() string {
	if d := os.Getenv("RDS_IMAGE_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rds-image") // the cache `make image` uses
	}
	return filepath.Join(os.TempDir(), "rds-image")
}

func build(t *testing.T, out string) *imagebuild.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	deb := imagebuild.DefaultDebian(cacheDir(), imagebuild.DefaultSpec().Suite)
	deb.Logf = t.Logf
	res, err := imagebuild.Build(ctx, imagebuild.DefaultSpec(), imagebuild.Options{
		Image: testImage, Version: "image-test", Revision: "test",
		Binaries: binaries(t), Arches: arches, Out: out, Debian: deb,
	})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// workDir holds the outputs shared by the tests (the build the chroot test unpacks).
var workDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rds-image-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	if err := scratch.RemoveUnmounted(dir); err != nil {
		fmt.Fprintf(os.Stderr, "image tests: kept %s: %v\n", dir, err)
	}
	os.Exit(code)
}

var (
	builtOnce sync.Once
	built     *imagebuild.Result
)

// sharedBuild is one build for the tests that only read it.
func sharedBuild(t *testing.T) *imagebuild.Result {
	t.Helper()
	builtOnce.Do(func() { built = build(t, filepath.Join(workDir, "shared")) })
	if built == nil {
		t.Fatal("the build failed in an earlier test")
	}
	return built
}

// TestBuildIsReproducible builds both architectures twice and compares digests and bytes.
func TestBuildIsReproducible(t *testing.T) {
	prerequisites(t)
	start := time.Now()
	first := sharedBuild(t)
	t.Logf("first build %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	second := build(t, filepath.Join(t.TempDir(), "second"))
	t.Logf("second build %s", time.Since(start).Round(time.Millisecond))
	if first.Index != second.Index {
		t.Errorf("two builds gave indexes %s and %s", first.Index, second.Index)
	}
	for i, a := range first.Arches {
		b := second.Arches[i]
		if a.Manifest != b.Manifest {
			t.Errorf("%s: manifests %s and %s", a.Arch, a.Manifest, b.Manifest)
		}
		x, _ := os.ReadFile(a.Archive)
		y, _ := os.ReadFile(b.Archive)
		if len(x) == 0 || !bytes.Equal(x, y) {
			t.Errorf("%s: the docker archives differ (%d and %d bytes)", a.Arch, len(x), len(y))
		}
		if a.UnpackedBytes > maxMiB<<20 {
			t.Errorf("%s image is %.1f MiB unpacked, over the %d MiB target", a.Arch, float64(a.UnpackedBytes)/(1<<20), maxMiB)
		}
		t.Logf("%s %s: %.1f MiB unpacked, %.1f MiB compressed, %d files, %s", a.Arch, a.Manifest,
			float64(a.UnpackedBytes)/(1<<20), float64(a.CompressedBytes)/(1<<20), a.Files, strings.Join(a.Packages, " "))
	}
	t.Logf("index %s", first.Index)
}

// layer reads an architecture's single layer out of the build's OCI layout.
func layer(t *testing.T, res *imagebuild.Result, arch string) []byte {
	t.Helper()
	read := func(digest string, v any) []byte {
		b, err := os.ReadFile(filepath.Join(res.Layout, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:")))
		if err != nil {
			t.Fatal(err)
		}
		if imagebuild.Digest(b) != digest {
			t.Fatalf("blob %s does not match its digest", digest)
		}
		if v != nil {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	var ix struct{ Manifests []imagebuild.Descriptor }
	read(res.Index, &ix)
	for _, d := range ix.Manifests {
		if d.Platform.Architecture != arch {
			continue
		}
		var m struct{ Layers []imagebuild.Descriptor }
		read(d.Digest, &m)
		if len(m.Layers) != 1 {
			t.Fatalf("%s manifest has %d layers, want 1", arch, len(m.Layers))
		}
		return read(m.Layers[0].Digest, nil)
	}
	t.Fatalf("the index has no %s image", arch)
	return nil
}

// extract unpacks a gzip tar layer (ours: directories, files and symlinks only) into dir.
func extract(t *testing.T, gz []byte, dir string) (files []string) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			t.Fatalf("layer entry %q leaves the root", h.Name)
		}
		target := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
			if err == nil {
				err = os.Chmod(target, os.FileMode(h.Mode&0o777)|modeBits(h.Mode))
			}
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(target, b, os.FileMode(h.Mode&0o777))
			}
			files = append(files, name)
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, target)
			files = append(files, name)
		default:
			t.Fatalf("layer entry %s has type %q", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func modeBits(m int64) os.FileMode {
	if m&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

// TestToolsRunInTheAmd64Root formats, checks and grows real filesystem images with the
// image's own tools inside its unpacked root, and starts the driver there as the image's
// non-root user.
func TestToolsRunInTheAmd64Root(t *testing.T) {
	prerequisites(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("runs the amd64 image's tools, so needs an amd64 host")
	}
	built := sharedBuild(t)
	root := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	files := extract(t, layer(t, built, "amd64"), root)
	t.Logf("amd64 root: %d files and links", len(files))
	if fi, err := os.Stat(filepath.Join(root, "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Fatalf("/tmp in the image is not sticky: %v", err)
	}

	out, err := toolroot.Exercise(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	// The driver starts in the root as the image's non-root user.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ver, err := exec.CommandContext(ctx, "chroot", "--userspec=65532:65532", root, "/usr/bin/rds-csi", "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("rds-csi does not start in the image's root as 65532: %v\n%s", err, ver)
	}
	out += string(ver)
	for _, want := range []string{"mke2fs 1.", "xfs_repair version", "xfs_growfs version", "resize2fs 1.", "rds-csi image-test"} {
		if !strings.Contains(out, want) {
			t.Errorf("the run printed no %q:\n%s", want, out)
		}
	}
}

// TestImageRunsUnderContainerd imports the amd64 docker archive into a private containerd
// (the runtime kubelet uses), checks the container spec it makes from the image's config
// (non-root user, PATH) and runs the driver and a tool in it under runc.
func TestImageRunsUnderContainerd(t *testing.T) {
	prerequisites(t)
	var missing []string
	for _, bin := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	if runtime.GOARCH != "amd64" {
		missing = append(missing, "an amd64 host")
	}
	if len(missing) > 0 {
		msg := "needs " + strings.Join(missing, ", ") + " (test/install-deps.sh installs containerd and runc)"
		testenv.Missing(t, msg)
	}
	res := sharedBuild(t)
	dir, err := os.MkdirTemp("", "rds-image-ctd-") // short: the socket path must fit sun_path
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := scratch.RemoveUnmounted(dir); err != nil {
			t.Errorf("containerd's directory: %v", err)
		}
	})
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	logFile, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	daemon := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	daemon.Stdout, daemon.Stderr = logFile, logFile
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Signal(os.Interrupt)
		done := make(chan error, 1)
		go func() { done <- daemon.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			daemon.Process.Kill()
			<-done
		}
	})
	ctr := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", sock, "--namespace", "rds-image-test"}, args...)...).CombinedOutput()
		if err != nil {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("ctr %s: %v\n%s\n--- containerd log (end) ---\n%s", strings.Join(args, " "), err, out, tail(string(log), 20))
		}
		return string(out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !fileExists(sock) {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logFile.Name())
			t.Fatalf("containerd did not start:\n%s", tail(string(log), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	var archive string
	for _, a := range res.Arches {
		if a.Arch == "amd64" {
			archive = a.Archive
		}
	}
	ctr("images", "import", archive)
	ref := res.Ref
	if out := ctr("images", "ls", "-q"); !strings.Contains(out, ref) {
		t.Fatalf("containerd imported no image %s; it has:\n%s", ref, out)
	}

	// The container spec containerd derives from the image config.
	ctr("containers", "create", ref, "spec-check")
	var info struct {
		Spec struct {
			Process struct {
				User struct{ UID, GID uint32 }
				Args []string
				Env  []string
			}
		}
	}
	if err := json.Unmarshal([]byte(ctr("containers", "info", "spec-check")), &info); err != nil {
		t.Fatal(err)
	}
	p := info.Spec.Process
	if p.User.UID != 65532 || p.User.GID != 65532 {
		t.Errorf("the container runs as %d:%d, want the image's 65532:65532", p.User.UID, p.User.GID)
	}
	if len(p.Args) == 0 || p.Args[0] != "/usr/bin/rds-csi" {
		t.Errorf("the container runs %v, want the image's entrypoint /usr/bin/rds-csi", p.Args)
	}
	if !slicesContains(p.Env, "PATH=/usr/sbin:/usr/bin") {
		t.Errorf("the container's environment %v lacks PATH=/usr/sbin:/usr/bin", p.Env)
	}
	ctr("containers", "delete", "spec-check")

	if out := ctr("run", "--rm", ref, "run-driver", "/usr/bin/rds-csi", "--version"); !strings.Contains(out, "rds-csi image-test") {
		t.Errorf("the driver in the container printed %q", out)
	}
	if out := ctr("run", "--rm", ref, "run-tool", "/usr/sbin/mkfs.xfs", "-V"); !strings.Contains(out, "mkfs.xfs version") {
		t.Errorf("mkfs.xfs in the container printed %q", out)
	}
}

func slicesContains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
