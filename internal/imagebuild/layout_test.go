package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// smallRoot is a root of a few entries, inserted in an order unlike the sorted one.
func smallRoot(t *testing.T) *Rootfs {
	t.Helper()
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("#!tool\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A file time that must not reach the layer.
	if err := os.Chtimes(src, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	a, _ := LookupArch("amd64")
	r := &Rootfs{Arch: a, Entries: map[string]*entry{}}
	for _, e := range []*entry{
		{Path: "/usr/sbin/tool", Type: tar.TypeReg, Mode: 0o755, Source: src},
		{Path: "/etc/mtab", Type: tar.TypeSymlink, Mode: 0o777, Link: "../proc/self/mounts"},
		{Path: "/tmp", Type: tar.TypeDir, Mode: 0o1777},
		{Path: "/etc/passwd", Type: tar.TypeReg, Mode: 0o644, Data: []byte("root:x:0:0::/:/sbin/nologin\n")},
		{Path: "/lib64/ld.so", Type: tar.TypeReg, Mode: 0o755, Data: []byte("loader")},
		{Path: "/lib/x/libc.so.6", Type: tar.TypeReg, Mode: 0o644, Data: []byte("libc")},
	} {
		if err := r.add(e); err != nil {
			t.Fatal(err)
		}
	}
	r.addParents()
	return r
}

func TestLayerIsReproducibleAndCarriesNoHostMetadata(t *testing.T) {
	var layers []Layer
	for i := 0; i < 3; i++ { // map iteration order differs between runs
		l, err := smallRoot(t).Layer()
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	for i := 1; i < len(layers); i++ {
		if !bytes.Equal(layers[0].Tar, layers[i].Tar) || !bytes.Equal(layers[0].Gzip, layers[i].Gzip) {
			t.Fatalf("build %d differs from build 0", i)
		}
	}
	zr, err := gzip.NewReader(bytes.NewReader(layers[0].Gzip))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q and time %v; want neither", zr.Name, zr.ModTime)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unzipped, layers[0].Tar) {
		t.Fatalf("the gzip layer does not decompress to the tar (%v)", err)
	}
	tr := tar.NewReader(bytes.NewReader(layers[0].Tar))
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0 without names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(epoch) || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() || len(h.PAXRecords) > 0 {
			t.Errorf("%s: times %v/%v/%v, PAX %v; want the epoch and nothing else", h.Name, h.ModTime, h.AccessTime, h.ChangeTime, h.PAXRecords)
		}
		switch h.Name {
		case "tmp/":
			if h.Mode != 0o1777 {
				t.Errorf("tmp/ has mode %o", h.Mode)
			}
		case "usr/sbin/tool":
			if h.Mode != 0o755 || h.Size != int64(len("#!tool\n")) {
				t.Errorf("usr/sbin/tool: mode %o size %d", h.Mode, h.Size)
			}
		case "etc/mtab":
			if h.Typeflag != tar.TypeSymlink || h.Linkname != "../proc/self/mounts" {
				t.Errorf("etc/mtab: %+v", h)
			}
		}
	}
	want := []string{"etc/", "etc/mtab", "etc/passwd", "lib/", "lib/x/", "lib/x/libc.so.6", "lib64/", "lib64/ld.so", "tmp/", "usr/", "usr/sbin/", "usr/sbin/tool"}
	if !equalStrings(names, want) {
		t.Errorf("tar entries %v, want %v (sorted, every directory before its contents)", names, want)
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRootfsRefusesTwoSourcesForOnePath(t *testing.T) {
	r := smallRoot(t)
	err := r.add(&entry{Path: "/etc/passwd", Type: tar.TypeReg, Mode: 0o644, Data: []byte("other"), Origin: "pkg=1"})
	if err == nil {
		t.Fatal("a second, different /etc/passwd was accepted")
	}
	if err := r.add(&entry{Path: "/etc/passwd", Type: tar.TypeReg, Mode: 0o644, Data: []byte("root:x:0:0::/:/sbin/nologin\n")}); err != nil {
		t.Errorf("the same entry twice must be fine: %v", err)
	}
}

// readTar reads a tarball's regular files.
func readTar(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[h.Name] = b
		}
	}
}

func testImages(t *testing.T) []*Image {
	t.Helper()
	var out []*Image
	for _, arch := range []string{"amd64", "arm64"} {
		r := smallRoot(t)
		r.Arch, _ = LookupArch(arch)
		r.Packages = []*Package{{Name: "libc6", Version: "2.36-9"}}
		im, err := NewImage(DefaultSpec(), r, "v1.2.3", "abc")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, im)
	}
	return out
}

func TestImageConfigAndManifest(t *testing.T) {
	im := testImages(t)[1]
	var cfg imageConfig
	if err := json.Unmarshal(im.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Architecture != "arm64" || cfg.Variant != "v8" || cfg.OS != "linux" {
		t.Errorf("config platform %s/%s/%s", cfg.OS, cfg.Architecture, cfg.Variant)
	}
	if cfg.Config.User != "65532:65532" || cfg.Config.Entrypoint[0] != "/usr/bin/rds-csi" || cfg.Config.Labels["org.opencontainers.image.version"] != "v1.2.3" {
		t.Errorf("run config %+v", cfg.Config)
	}
	if cfg.RootFS.DiffIDs[0] != Digest(im.Layer.Tar) {
		t.Error("diff_id is not the digest of the uncompressed layer")
	}
	if bytes.Contains(im.Config, []byte(`"created"`)) {
		t.Error("the config carries a creation time")
	}
	var m manifest
	if err := json.Unmarshal(im.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.Config.Digest != Digest(im.Config) || m.Layers[0].Digest != Digest(im.Layer.Gzip) || m.Layers[0].MediaType != MediaTypeLayer {
		t.Errorf("manifest does not describe its blobs: %s", im.Manifest)
	}
	if m.Annotations[AnnotationPackages] != "libc6=2.36-9" {
		t.Errorf("manifest annotations %v", m.Annotations)
	}
	if im.Desc.Digest != Digest(im.Manifest) || im.Desc.Platform.Variant != "v8" {
		t.Errorf("manifest descriptor %+v", im.Desc)
	}
}

func TestWriteLayoutAndDockerArchive(t *testing.T) {
	images := testImages(t)
	dir := filepath.Join(t.TempDir(), "oci")
	// A blob of an earlier build is removed; other files are not touched.
	stale := filepath.Join(dir, "blobs", "sha256", "0000")
	if err := os.MkdirAll(filepath.Dir(stale), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	top, err := WriteLayout(dir, "v1.2.3", images)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale blob still there: %v", err)
	}
	var layout index
	raw, _ := os.ReadFile(filepath.Join(dir, "index.json"))
	if err := json.Unmarshal(raw, &layout); err != nil {
		t.Fatal(err)
	}
	if len(layout.Manifests) != 1 || layout.Manifests[0].Digest != top.Digest || layout.Manifests[0].Annotations[AnnotationRefName] != "v1.2.3" {
		t.Fatalf("index.json %s", raw)
	}
	ixBytes, err := os.ReadFile(filepath.Join(dir, blobPath(top.Digest)))
	if err != nil || Digest(ixBytes) != top.Digest {
		t.Fatalf("image index blob: %v", err)
	}
	var ix index
	if err := json.Unmarshal(ixBytes, &ix); err != nil {
		t.Fatal(err)
	}
	if len(ix.Manifests) != 2 || ix.Manifests[0].Platform.Architecture != "amd64" || ix.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("image index %s", ixBytes)
	}
	for _, im := range images {
		for d, b := range im.Blobs() {
			got, err := os.ReadFile(filepath.Join(dir, blobPath(d)))
			if err != nil || !bytes.Equal(got, b) {
				t.Errorf("blob %s: %v", d, err)
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "oci-layout")); string(b) != ociLayoutFile {
		t.Errorf("oci-layout %q", b)
	}

	// The docker archive: manifest.json names blobs that are in the tarball, and the
	// tarball is also an OCI layout naming the same manifest.
	var archives [][]byte
	for i := 0; i < 2; i++ {
		path := filepath.Join(t.TempDir(), "img.tar")
		if err := WriteDockerArchive(path, "ghcr.io/srvlab/rds-csi:v1.2.3", images[0]); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		archives = append(archives, b)
		if i == 0 {
			files := readTar(t, path)
			var dm []dockerManifestEntry
			if err := json.Unmarshal(files["manifest.json"], &dm); err != nil {
				t.Fatal(err)
			}
			if len(dm) != 1 || dm[0].RepoTags[0] != "ghcr.io/srvlab/rds-csi:v1.2.3" {
				t.Fatalf("manifest.json %s", files["manifest.json"])
			}
			if Digest(files[dm[0].Config]) != Digest(images[0].Config) || Digest(files[dm[0].Layers[0]]) != Digest(images[0].Layer.Gzip) {
				t.Error("manifest.json's Config and Layers are not the image's blobs")
			}
			var ix index
			if err := json.Unmarshal(files["index.json"], &ix); err != nil {
				t.Fatal(err)
			}
			if ix.Manifests[0].Digest != images[0].Desc.Digest || ix.Manifests[0].Annotations["io.containerd.image.name"] != "ghcr.io/srvlab/rds-csi:v1.2.3" || ix.Manifests[0].Annotations[AnnotationRefName] != "v1.2.3" {
				t.Errorf("archive index.json %s", files["index.json"])
			}
			if files[blobPath(images[0].Desc.Digest)] == nil {
				t.Error("the archive lacks the manifest blob")
			}
		}
	}
	if !bytes.Equal(archives[0], archives[1]) {
		t.Error("two docker archives of one image differ")
	}
}

func TestBinaryImage(t *testing.T) {
	hostTools(t) // a dynamically linked host tool to refuse
	a, _ := LookupArch("amd64")
	spec := BinarySpec("csi-attacher", "/csi-attacher")
	r, err := BinaryRoot(spec, a, staticBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, e := range r.Sorted() {
		paths = append(paths, e.Path)
	}
	if want := []string{"/csi-attacher", "/tmp"}; !equalStrings(paths, want) {
		t.Errorf("root %v, want %v", paths, want)
	}
	im, err := NewImage(spec, r, "v4.13.0", "")
	if err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(im.Config, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.Entrypoint[0] != "/csi-attacher" || cfg.Config.User != "" || cfg.Config.Labels["org.opencontainers.image.title"] != "csi-attacher" {
		t.Errorf("config %+v", cfg.Config)
	}
	if bytes.Contains(im.Manifest, []byte(AnnotationPackages)) {
		t.Error("an image without Debian packages names some")
	}
	if _, err := BinaryRoot(spec, a, "/sbin/mke2fs"); err == nil {
		t.Error("a dynamically linked binary was wrapped")
	}
}

// A test image with a shell: the binary, another static one, busybox and its applets.
func TestBinaryImageWithBusybox(t *testing.T) {
	hostTools(t)
	a, _ := LookupArch("amd64")
	bin := staticBinary(t)
	r, err := BinaryRoot(BinarySpec("agnhost", "/agnhost"), a, bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddStatic(bin, "/pause"); err != nil {
		t.Fatal(err)
	}
	if err := r.AddBusybox(bin, []string{"sh", "busybox", "ls", "", "../escape"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.Sorted() {
		got = append(got, fmt.Sprintf("%s %c %s", e.Path, e.Type, e.Link))
	}
	want := []string{"/agnhost 0 ", "/bin 5 ", "/bin/busybox 0 ", "/bin/ls 2 busybox", "/bin/sh 2 busybox", "/etc 5 ", "/etc/passwd 0 ", "/pause 0 ", "/tmp 5 "}
	if !equalStrings(got, want) {
		t.Errorf("root\n%v\nwant\n%v", got, want)
	}
	if err := r.AddStatic("/sbin/mke2fs", "/mke2fs"); err == nil {
		t.Error("a dynamically linked extra binary was added")
	}
	other := filepath.Join(t.TempDir(), "other")
	if raw, err := os.ReadFile(bin); err != nil || os.WriteFile(other, raw, 0o755) != nil {
		t.Fatal("copying the static binary failed")
	}
	if err := r.AddStatic(other, "/agnhost"); err == nil {
		t.Error("a second file at /agnhost was accepted")
	}
}
