package imagebuild

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// Media types of the OCI image spec.
const (
	MediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// Annotation keys.
const (
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationPackages lists the Debian packages (name=version) the tools and libraries
	// come from, so an image says exactly what it was built from.
	AnnotationPackages = "io.srvlab.rds-csi.debian-packages"
)

// Platform is a descriptor's platform.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

// Descriptor points at a blob.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *Platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Digest is the sha256 digest of b in the OCI form.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func describe(mediaType string, b []byte) Descriptor {
	return Descriptor{MediaType: mediaType, Digest: Digest(b), Size: int64(len(b))}
}

type imageConfig struct {
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Variant      string        `json:"variant,omitempty"`
	Config       runConfig     `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
	History      []historyItem `json:"history"`
}

type runConfig struct {
	User       string            `json:"User"`
	Env        []string          `json:"Env"`
	Entrypoint []string          `json:"Entrypoint"`
	WorkingDir string            `json:"WorkingDir"`
	Labels     map[string]string `json:"Labels"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

// historyItem carries no "created": an image's bytes must not depend on when it was built.
type historyItem struct {
	CreatedBy string `json:"created_by"`
	Comment   string `json:"comment,omitempty"`
}

type manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        Descriptor        `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Manifests     []Descriptor      `json:"manifests"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// Image is one architecture's image: its blobs and the descriptor of its manifest.
type Image struct {
	Arch     Arch
	Config   []byte
	Manifest []byte
	Layer    Layer
	Desc     Descriptor // the manifest, with its platform
	Packages []string   // name=version of every Debian package used
}

// Blobs are the image's blobs by digest.
func (im *Image) Blobs() map[string][]byte {
	return map[string][]byte{
		Digest(im.Config):     im.Config,
		Digest(im.Manifest):   im.Manifest,
		Digest(im.Layer.Gzip): im.Layer.Gzip,
	}
}

// Size is what the image takes once pulled and unpacked (the uncompressed layer) and what
// a pull transfers (manifest, config and compressed layer).
func (im *Image) Size() (unpacked, compressed int64) {
	return int64(len(im.Layer.Tar)), int64(len(im.Layer.Gzip) + len(im.Config) + len(im.Manifest))
}

// NewImage makes the image of a root: one layer, the spec's run configuration and labels
// plus the version and revision labels.
func NewImage(spec Spec, r *Rootfs, version, revision string) (*Image, error) {
	layer, err := r.Layer()
	if err != nil {
		return nil, err
	}
	labels := map[string]string{
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.revision": revision,
	}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	var pkgs []string
	for _, p := range r.Packages {
		pkgs = append(pkgs, p.Name+"="+p.Version)
	}
	sort.Strings(pkgs)
	platform := Platform{Architecture: r.Arch.Name, OS: "linux"}
	if r.Arch.Name == "arm64" {
		platform.Variant = "v8"
	}
	config, err := json.Marshal(imageConfig{
		Architecture: platform.Architecture,
		OS:           platform.OS,
		Variant:      platform.Variant,
		Config: runConfig{
			User:       spec.User,
			Env:        spec.Env,
			Entrypoint: spec.Entrypoint,
			WorkingDir: "/",
			Labels:     labels,
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{Digest(layer.Tar)}},
		History: []historyItem{{CreatedBy: spec.History, Comment: strings.Join(pkgs, " ")}},
	})
	if err != nil {
		return nil, err
	}
	var annotations map[string]string
	if len(pkgs) > 0 {
		annotations = map[string]string{AnnotationPackages: strings.Join(pkgs, " ")}
	}
	man, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeManifest,
		Config:        describe(MediaTypeConfig, config),
		Layers:        []Descriptor{describe(MediaTypeLayer, layer.Gzip)},
		Annotations:   annotations,
	})
	if err != nil {
		return nil, err
	}
	desc := describe(MediaTypeManifest, man)
	desc.Platform = &platform
	return &Image{Arch: r.Arch, Config: config, Manifest: man, Layer: layer, Desc: desc, Packages: pkgs}, nil
}

// NewIndex is the multi-architecture image index over images, in the order given.
func NewIndex(images []*Image) ([]byte, error) {
	if len(images) == 0 {
		return nil, fmt.Errorf("an image index needs at least one image")
	}
	ix := index{SchemaVersion: 2, MediaType: MediaTypeIndex}
	for _, im := range images {
		ix.Manifests = append(ix.Manifests, im.Desc)
	}
	return json.Marshal(ix)
}
