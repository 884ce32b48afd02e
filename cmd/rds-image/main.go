// Command rds-image builds the rds-csi container image without a container engine, pushes
// it to a registry, and pins a manifest to it.
//
//	rds-image build -image ghcr.io/srvlab/rds-csi -version v0.1.0 -binary amd64=bin/linux-amd64/rds-csi -binary arm64=... -out bin/image
//	rds-image push  -layout bin/image/oci -to ghcr.io/srvlab/rds-csi:v0.1.0       (REGISTRY_USER, REGISTRY_PASSWORD)
//	rds-image wrap  -binary bin/csi-attacher -path /csi-attacher -image example.local/csi-attacher -version v4.13.0 -out bin/sidecars
//	rds-image pin   -image ghcr.io/srvlab/rds-csi -ref ghcr.io/srvlab/rds-csi:v0.1.0@sha256:... < deploy.yaml
//
// `make image` and `make push` run it; so does the release workflow.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"

	"srvlab.io/rds-csi/internal/imagebuild"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("rds-image: ")
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "build":
		err = build(ctx, os.Args[2:])
	case "push":
		err = push(ctx, os.Args[2:])
	case "wrap":
		err = wrap(os.Args[2:])
	case "pin":
		err = pin(os.Args[2:], os.Stdin, os.Stdout)
	default:
		usage()
	}
	if err != nil {
		log.Fatal(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: rds-image build|push|wrap|pin [flags]   (rds-image <command> -h for its flags)")
	os.Exit(2)
}

// binaryFlags collects -binary arch=path.
type binaryFlags map[string]string

func (b binaryFlags) String() string { return fmt.Sprint(map[string]string(b)) }
func (b binaryFlags) Set(v string) error {
	arch, path, ok := strings.Cut(v, "=")
	if !ok || arch == "" || path == "" {
		return fmt.Errorf("want arch=path, got %q", v)
	}
	b[arch] = path
	return nil
}

func build(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	binaries := binaryFlags{}
	image := fs.String("image", "", "repository to tag, e.g. ghcr.io/srvlab/rds-csi")
	version := fs.String("version", "", "tag, and the image's version label")
	revision := fs.String("revision", "unknown", "the image's revision label (git commit)")
	out := fs.String("out", "bin/image", "output directory")
	cache := fs.String("cache", defaultCache(), "cache for apt state, .deb files and unpacked packages")
	suite := fs.String("suite", imagebuild.DefaultSpec().Suite, "Debian release the tools come from")
	mirror := fs.String("mirror", "", "Debian mirror (default http://deb.debian.org/debian)")
	maxMiB := fs.Int("max-mib", 20, "fail when an architecture's unpacked image is larger than this")
	fs.Var(binaries, "binary", "arch=path of the static rds-csi binary for that architecture (repeat per architecture)")
	_ = fs.Parse(args)
	if *image == "" || *version == "" || len(binaries) == 0 {
		return fmt.Errorf("build needs -image, -version and at least one -binary arch=path")
	}
	spec := imagebuild.DefaultSpec()
	spec.Suite = *suite
	deb := imagebuild.DefaultDebian(*cache, *suite)
	if *mirror != "" {
		deb.Mirror = *mirror
	}
	deb.Logf = log.Printf
	var arches []string
	for a := range binaries {
		arches = append(arches, a)
	}
	sort.Strings(arches)
	res, err := imagebuild.Build(ctx, spec, imagebuild.Options{
		Image: *image, Version: *version, Revision: *revision,
		Binaries: binaries, Arches: arches, Out: *out, Debian: deb,
	})
	if err != nil {
		return err
	}
	var over []string
	for _, a := range res.Arches {
		fmt.Printf("%s %s  %s  %.1f MiB unpacked, %.1f MiB compressed, %d files  (%s)\n", res.Ref, a.Arch, a.Manifest,
			mib(a.UnpackedBytes), mib(a.CompressedBytes), a.Files, a.Archive)
		if a.UnpackedBytes > int64(*maxMiB)<<20 {
			over = append(over, fmt.Sprintf("%s is %.1f MiB", a.Arch, mib(a.UnpackedBytes)))
		}
	}
	fmt.Printf("%s index %s  (%s)\n", res.Ref, res.Index, res.Layout)
	if len(over) > 0 {
		return fmt.Errorf("over the %d MiB size target: %s", *maxMiB, strings.Join(over, ", "))
	}
	return nil
}

// wrap makes the image of one static binary (scratch + the binary) as a docker archive
// <out>/<name>-<arch>.tar, e.g. a CSI sidecar built from source for a cluster that cannot
// pull.
func wrap(args []string) error {
	fs := flag.NewFlagSet("wrap", flag.ExitOnError)
	binary := fs.String("binary", "", "the static binary")
	path := fs.String("path", "", "where the image holds it (and runs it from)")
	image := fs.String("image", "", "repository to tag")
	version := fs.String("version", "", "tag")
	arch := fs.String("arch", "amd64", "the binary's architecture")
	out := fs.String("out", "bin/image", "output directory")
	busybox := fs.String("busybox", "", "also a static busybox with its applets under /bin (a shell for test images; it runs here to list them)")
	entrypoint := fs.String("entrypoint", "", "the image's entrypoint, space-separated (default: the binary)")
	var extra []string
	fs.Func("add", "another static binary, FILE=PATH in the image (repeatable)", func(v string) error {
		if !strings.Contains(v, "=") {
			return fmt.Errorf("want FILE=PATH, got %q", v)
		}
		extra = append(extra, v)
		return nil
	})
	_ = fs.Parse(args)
	if *binary == "" || *path == "" || *image == "" || *version == "" {
		return fmt.Errorf("wrap needs -binary, -path, -image and -version")
	}
	a, err := imagebuild.LookupArch(*arch)
	if err != nil {
		return err
	}
	spec := imagebuild.BinarySpec(filepath.Base(*path), *path)
	if *entrypoint != "" {
		spec.Entrypoint = strings.Fields(*entrypoint)
	}
	root, err := imagebuild.BinaryRoot(spec, a, *binary)
	if err != nil {
		return err
	}
	for _, x := range extra {
		file, at, _ := strings.Cut(x, "=")
		if err := root.AddStatic(file, at); err != nil {
			return err
		}
	}
	if *busybox != "" {
		list, err := exec.Command(*busybox, "--list").Output()
		if err != nil {
			return fmt.Errorf("listing busybox's applets: %w", err)
		}
		if err := root.AddBusybox(*busybox, strings.Fields(string(list))); err != nil {
			return err
		}
		spec.Env = []string{"PATH=/bin"}
	}
	im, err := imagebuild.NewImage(spec, root, *version, "")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	archive := filepath.Join(*out, filepath.Base(*image)+"-"+*arch+".tar")
	if err := imagebuild.WriteDockerArchive(archive, *image+":"+*version, im); err != nil {
		return err
	}
	fmt.Printf("%s:%s %s  %s\n", *image, *version, im.Desc.Digest, archive)
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// defaultCache is $XDG_CACHE_HOME/rds-image (or ~/.cache/rds-image).
func defaultCache() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rds-image")
	}
	return filepath.Join(os.TempDir(), "rds-image")
}

func push(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("push", flag.ExitOnError)
	layout := fs.String("layout", "bin/image/oci", "OCI image layout to push")
	to := fs.String("to", "", "host/repository:tag to push to")
	plainHTTP := fs.Bool("plain-http", false, "talk http:// to the registry (a local test registry)")
	digestFile := fs.String("digest-file", "", "write the pushed digest here")
	_ = fs.Parse(args)
	ref, err := imagebuild.ParseReference(*to)
	if err != nil {
		return err
	}
	reg := &imagebuild.Registry{
		User: os.Getenv("REGISTRY_USER"), Password: os.Getenv("REGISTRY_PASSWORD"),
		PlainHTTP: *plainHTTP, Logf: log.Printf,
	}
	digest, err := reg.Push(ctx, *layout, ref)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref, digest)
	if *digestFile != "" {
		return os.WriteFile(*digestFile, []byte(digest+"\n"), 0o644)
	}
	return nil
}

// pin rewrites every `image: <repository>:<tag>` line of a manifest to ref (tag@digest),
// failing when there is none: a release manifest must run exactly the image it was
// published with.
func pin(args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("pin", flag.ExitOnError)
	image := fs.String("image", "", "repository whose image lines to rewrite")
	ref := fs.String("ref", "", "what they become: host/repository:tag@sha256:...")
	_ = fs.Parse(args)
	if !regexp.MustCompile(`^[^@\s]+:[^@\s/]+@sha256:[0-9a-f]{64}$`).MatchString(*ref) {
		return fmt.Errorf("-ref %q must be host/repository:tag@sha256:<64 hex digits>", *ref)
	}
	if *image == "" {
		return fmt.Errorf("pin needs -image")
	}
	src, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	line := regexp.MustCompile(`(?m)^(\s*(?:-\s+)?image:\s*)` + regexp.QuoteMeta(*image) + `(?::[^\s@]+)?(?:@sha256:[0-9a-f]{64})?[ \t]*$`)
	n := len(line.FindAllIndex(src, -1))
	if n == 0 {
		return fmt.Errorf("no `image: %s:<tag>` line to pin", *image)
	}
	_, err = out.Write(line.ReplaceAll(src, []byte("${1}"+*ref)))
	return err
}
