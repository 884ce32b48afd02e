package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"srvlab.io/rds-csi/internal/imagebuild"
)

// imageFigures builds the image as `make image` does (the driver cross-built per
// architecture, then cmd/rds-image's library) and reports each architecture's unpacked
// size, with the compressed size, digest and build time beside it.
func imageFigures(ctx context.Context, root, work string) []figure {
	specs := map[string]spec{"amd64": figImageAMD, "arm64": figImageARM}
	arches := []string{"amd64", "arm64"}
	for _, tool := range []string{"apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return naAll(tool+" is not installed (cmd/rds-image takes the tools from Debian packages)", figImageAMD, figImageARM)
		}
	}
	start := time.Now()
	bins := map[string]string{}
	for _, arch := range arches {
		out := filepath.Join(work, "image-bin", arch, "rds-csi")
		// grpcnotrace as `make image` builds it, also when GOFLAGS does not set it.
		if err := goBuild(ctx, root, out, ".", "grpcnotrace", true, "GOOS=linux", "GOARCH="+arch); err != nil {
			return naAll(fmt.Sprintf("building the %s driver: %v", arch, err), figImageAMD, figImageARM)
		}
		bins[arch] = out
	}
	cache := filepath.Join(os.TempDir(), "rds-image")
	if d, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(d, "rds-image") // the cache `make image` uses
	}
	deb := imagebuild.DefaultDebian(cache, imagebuild.DefaultSpec().Suite)
	res, err := imagebuild.Build(ctx, imagebuild.DefaultSpec(), imagebuild.Options{
		Image: "ghcr.io/srvlab/rds-csi", Version: gitVersion(root), Revision: "bench",
		Binaries: bins, Arches: arches, Out: filepath.Join(work, "image"), Debian: deb,
	})
	if err != nil {
		return naAll("cmd/rds-image: "+err.Error(), figImageAMD, figImageARM)
	}
	took := time.Since(start).Round(100 * time.Millisecond)
	var figs []figure
	for _, a := range res.Arches {
		figs = append(figs, specs[a.Arch].measured(float64(a.UnpackedBytes)/(1<<20),
			"%.1f MiB compressed (what a pull transfers), %d files, manifest %s; both architectures built in %s",
			float64(a.CompressedBytes)/(1<<20), a.Files, a.Manifest, took))
	}
	return figs
}
