// Package imagebuild assembles the rds-csi container image without a container engine:
// scratch + the static rds-csi binary + the filesystem tools the node plugin executes and
// exactly the shared libraries they load, taken from Debian packages of the target
// architecture. It writes an OCI image layout and a docker-archive tarball, byte for byte
// the same on every build from the same inputs, and pushes to a registry over the OCI
// distribution API. cmd/rds-image is its command line; the Dockerfile describes the same
// image for docker/buildx users, and test/deploy keeps the two in step.
package imagebuild

import (
	"archive/tar"
	"debug/elf"
	"fmt"
	"sort"
	"strings"
)

// Tool is one executable the image carries at /usr/sbin/<Name>.
type Tool struct {
	Name    string // name in the image (and the name the mount package runs)
	Package string // Debian package that ships it
	Path    string // path inside the package (mkfs.ext4 is mke2fs under another name)
}

// ConfigFile is a file the image carries besides tools and libraries.
type ConfigFile struct {
	Path    string // absolute path in the image
	Package string // copied from this package's file at Path, or
	Data    string // written with this content when Package is empty
	Symlink string // or a symbolic link to this target
}

// Spec is everything the image holds besides the driver binary.
type Spec struct {
	Suite      string // Debian release the tools come from (Dockerfile: debian:12-slim)
	Tools      []Tool
	Config     []ConfigFile
	Binary     string // path of the rds-csi binary in the image
	User       string
	Env        []string
	Entrypoint []string
	Labels     map[string]string // fixed labels; version and revision come from Build
	History    string            // the config's history entry: how the layer was made
}

// DefaultSpec is the rds-csi image. Its tools are the mount package's toolPackages (a test
// checks), the same six the Dockerfile's tools stage copies.
func DefaultSpec() Spec {
	return Spec{
		Suite: "bookworm",
		Tools: []Tool{
			{Name: "mkfs.ext4", Package: "e2fsprogs", Path: "/sbin/mke2fs"},
			{Name: "e2fsck", Package: "e2fsprogs", Path: "/sbin/e2fsck"},
			{Name: "resize2fs", Package: "e2fsprogs", Path: "/sbin/resize2fs"},
			{Name: "mkfs.xfs", Package: "xfsprogs", Path: "/sbin/mkfs.xfs"},
			{Name: "xfs_repair", Package: "xfsprogs", Path: "/sbin/xfs_repair"},
			{Name: "xfs_growfs", Package: "xfsprogs", Path: "/usr/sbin/xfs_growfs"},
		},
		Config: []ConfigFile{
			{Path: "/etc/mke2fs.conf", Package: "e2fsprogs"},
			{Path: "/etc/mtab", Symlink: "../proc/self/mounts"},
			{Path: "/etc/passwd", Data: "root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n"},
			{Path: "/etc/group", Data: "root:x:0:\nnonroot:x:65532:\n"},
		},
		Binary:  "/usr/bin/rds-csi",
		History: "rds-image (cmd/rds-image): scratch + rds-csi + filesystem tools from Debian bookworm",
		// Non-root by default: the controller only needs SSH and the Kubernetes API; the node
		// DaemonSet runs as root and privileged.
		User:       "65532:65532",
		Env:        []string{"PATH=/usr/sbin:/usr/bin"},
		Entrypoint: []string{"/usr/bin/rds-csi"},
		Labels: map[string]string{
			"org.opencontainers.image.title":       "rds-csi",
			"org.opencontainers.image.description": "CSI driver for MikroTik ROSE Data Server storage over NVMe/TCP (controller and node plugin)",
			"org.opencontainers.image.base.name":   "scratch",
		},
	}
}

// BinarySpec is the image of one static binary at path and nothing else (the real-kubelet
// suite wraps the CSI sidecars it builds from source this way).
func BinarySpec(title, path string) Spec {
	return Spec{
		Binary:     path,
		Entrypoint: []string{path},
		Labels:     map[string]string{"org.opencontainers.image.title": title, "org.opencontainers.image.base.name": "scratch"},
		History:    "rds-image wrap (cmd/rds-image): scratch + " + path,
	}
}

// BinaryRoot is the root of a BinarySpec image: the static binary, /tmp, their directories.
func BinaryRoot(spec Spec, a Arch, binary string) (*Rootfs, error) {
	r := &Rootfs{Arch: a, Entries: map[string]*entry{}}
	if err := r.AddStatic(binary, spec.Binary); err != nil {
		return nil, err
	}
	r.Entries["/tmp"] = &entry{Path: "/tmp", Type: tar.TypeDir, Mode: 0o1777, Origin: "binary"}
	return r, nil
}

// AddStatic adds a static binary of the root's architecture at path in the image.
func (r *Rootfs) AddStatic(binary, path string) error {
	if err := checkStatic(binary, r.Arch); err != nil {
		return err
	}
	if err := r.add(&entry{Path: path, Type: tar.TypeReg, Mode: 0o755, Source: binary, Origin: "binary"}); err != nil {
		return err
	}
	r.addParents()
	return nil
}

// AddBusybox gives the image a shell and the usual commands: a static busybox at
// /bin/busybox, a link to it for each applet under /bin, and an /etc/passwd naming root
// (test images whose pods run shell commands, as the Kubernetes e2e suite's do).
func (r *Rootfs) AddBusybox(binary string, applets []string) error {
	if err := r.AddStatic(binary, "/bin/busybox"); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "" || a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := r.add(&entry{Path: "/bin/" + a, Type: tar.TypeSymlink, Mode: 0o777, Link: "busybox", Origin: "busybox"}); err != nil {
			return err
		}
	}
	if err := r.add(&entry{Path: "/etc/passwd", Type: tar.TypeReg, Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\n"), Origin: "busybox"}); err != nil {
		return err
	}
	r.addParents()
	return nil
}

// Packages are the Debian packages the tools and config files come from, sorted.
func (s Spec) Packages() []string {
	set := map[string]bool{}
	for _, t := range s.Tools {
		set[t.Package] = true
	}
	for _, c := range s.Config {
		if c.Package != "" {
			set[c.Package] = true
		}
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Arch is a target architecture in the names each world uses for it.
type Arch struct {
	Name    string      // Go and OCI: amd64, arm64
	Debian  string      // dpkg architecture
	Triplet string      // multiarch library directory
	Machine elf.Machine // what every ELF file in the image must be built for
}

var arches = map[string]Arch{
	"amd64": {Name: "amd64", Debian: "amd64", Triplet: "x86_64-linux-gnu", Machine: elf.EM_X86_64},
	"arm64": {Name: "arm64", Debian: "arm64", Triplet: "aarch64-linux-gnu", Machine: elf.EM_AARCH64},
}

// LookupArch returns the architecture named name (amd64 or arm64).
func LookupArch(name string) (Arch, error) {
	a, ok := arches[name]
	if !ok {
		return Arch{}, fmt.Errorf("architecture %q is not supported (want amd64 or arm64)", name)
	}
	return a, nil
}

// libraryDirs are where the dynamic loader of a Debian system looks for a library when the
// object names no run path: the multiarch directories first, as Debian's glibc does.
func (a Arch) libraryDirs() []string {
	return []string{"/lib/" + a.Triplet, "/usr/lib/" + a.Triplet, "/lib", "/usr/lib"}
}
