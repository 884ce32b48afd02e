package imagebuild

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Options are the inputs of one build.
type Options struct {
	Image    string            // repository, e.g. ghcr.io/srvlab/rds-csi
	Version  string            // tag and version label
	Revision string            // revision label (the git commit)
	Binaries map[string]string // architecture → static rds-csi binary, built for it
	Arches   []string          // in index order
	Out      string            // output directory
	Debian   PackageSource
}

// ArchResult is what a build made for one architecture.
type ArchResult struct {
	Arch            string   `json:"arch"`
	Manifest        string   `json:"manifest"` // digest of the architecture's manifest
	UnpackedBytes   int64    `json:"unpackedBytes"`
	CompressedBytes int64    `json:"compressedBytes"`
	Archive         string   `json:"archive"` // the docker-archive tarball
	Files           int      `json:"files"`
	Packages        []string `json:"packages"`
}

// Result is what a build made; Build writes it as image.json beside the outputs.
type Result struct {
	Ref    string       `json:"ref"`
	Index  string       `json:"index"`  // digest of the multi-architecture image index
	Layout string       `json:"layout"` // the OCI image layout directory
	Arches []ArchResult `json:"arches"`
}

// Build assembles every architecture's image and writes:
//
//	<out>/oci/                      OCI image layout of the multi-architecture index, tagged <version>
//	<out>/rds-csi-<arch>.tar        docker-archive (+ OCI layout) of one architecture, tagged <image>:<version>
//	<out>/image.json                digests, sizes and Debian packages
func Build(ctx context.Context, spec Spec, o Options) (*Result, error) {
	if o.Version == "" || strings.ContainsAny(o.Version, "/:@ ") {
		return nil, fmt.Errorf("version %q is not a usable tag", o.Version)
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	repoTag := o.Image + ":" + o.Version
	res := &Result{Ref: repoTag, Layout: filepath.Join(o.Out, "oci")}
	var images []*Image
	for _, name := range o.Arches {
		a, err := LookupArch(name)
		if err != nil {
			return nil, err
		}
		bin := o.Binaries[name]
		if bin == "" {
			return nil, fmt.Errorf("no rds-csi binary given for %s", name)
		}
		root, err := Assemble(ctx, o.Debian, spec, a, bin)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		im, err := NewImage(spec, root, o.Version, o.Revision)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		archive := filepath.Join(o.Out, "rds-csi-"+name+".tar")
		if err := WriteDockerArchive(archive, repoTag, im); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		unpacked, compressed := im.Size()
		res.Arches = append(res.Arches, ArchResult{
			Arch: name, Manifest: im.Desc.Digest, UnpackedBytes: unpacked, CompressedBytes: compressed,
			Archive: archive, Files: len(root.Entries), Packages: im.Packages,
		})
		images = append(images, im)
	}
	top, err := WriteLayout(res.Layout, o.Version, images)
	if err != nil {
		return nil, err
	}
	res.Index = top.Digest
	summary, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.Out, "image.json"), append(summary, '\n'), 0o644); err != nil {
		return nil, err
	}
	return res, nil
}

// DefaultDebian is the Debian archive the tools come from, with the cache in dir.
func DefaultDebian(dir string, suite string) *Debian {
	return &Debian{
		Cache:    dir,
		Mirror:   "http://deb.debian.org/debian",
		Security: "http://deb.debian.org/debian-security",
		Keyring:  "/usr/share/keyrings/debian-archive-keyring.gpg",
		Suite:    suite,
	}
}
