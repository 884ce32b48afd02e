package imagebuild

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

const ociLayoutFile = `{"imageLayoutVersion":"1.0.0"}`

// layoutFiles are the files of an OCI image layout whose index.json points at top (with
// the given annotations), holding blobs: path → content.
func layoutFiles(top Descriptor, blobs map[string][]byte) (map[string][]byte, error) {
	ix, err := json.Marshal(index{SchemaVersion: 2, MediaType: MediaTypeIndex, Manifests: []Descriptor{top}})
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{"oci-layout": []byte(ociLayoutFile), "index.json": ix}
	for digest, b := range blobs {
		files[blobPath(digest)] = b
	}
	return files, nil
}

func blobPath(digest string) string {
	return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:")
}

// WriteLayout writes the multi-architecture image as an OCI image layout directory: its
// index.json names the image index (annotated with ref), which lists every architecture's
// manifest. Blobs of earlier builds in dir are removed one by one; nothing else is touched.
func WriteLayout(dir, ref string, images []*Image) (Descriptor, error) {
	ixBytes, err := NewIndex(images)
	if err != nil {
		return Descriptor{}, err
	}
	blobs := map[string][]byte{Digest(ixBytes): ixBytes}
	for _, im := range images {
		for d, b := range im.Blobs() {
			blobs[d] = b
		}
	}
	top := describe(MediaTypeIndex, ixBytes)
	top.Annotations = map[string]string{AnnotationRefName: ref}
	files, err := layoutFiles(top, blobs)
	if err != nil {
		return Descriptor{}, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return Descriptor{}, err
	}
	old, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		return Descriptor{}, err
	}
	for _, e := range old {
		if _, keep := files["blobs/sha256/"+e.Name()]; !keep && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, "blobs", "sha256", e.Name())); err != nil {
				return Descriptor{}, err
			}
		}
	}
	for _, name := range sortedNames(files) {
		if err := writeIfChanged(filepath.Join(dir, name), files[name]); err != nil {
			return Descriptor{}, err
		}
	}
	return describe(MediaTypeIndex, ixBytes), nil
}

// dockerManifestEntry is one image of a docker-archive's manifest.json.
type dockerManifestEntry struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// WriteDockerArchive writes one architecture's image as a tarball that `docker load`,
// `podman load` and `ctr images import` all read: a docker-archive manifest.json tagging it
// repoTag, inside an OCI image layout (the shape `docker save` writes since Docker 25).
func WriteDockerArchive(path, repoTag string, im *Image) error {
	top := im.Desc
	top.Platform = nil
	_, tag, _ := strings.Cut(repoTag[strings.LastIndex(repoTag, "/")+1:], ":")
	top.Annotations = map[string]string{AnnotationRefName: tag, "io.containerd.image.name": repoTag}
	files, err := layoutFiles(top, im.Blobs())
	if err != nil {
		return err
	}
	dm, err := json.Marshal([]dockerManifestEntry{{
		Config:   blobPath(Digest(im.Config)),
		RepoTags: []string{repoTag},
		Layers:   []string{blobPath(Digest(im.Layer.Gzip))},
	}})
	if err != nil {
		return err
	}
	files["manifest.json"] = dm
	tmp := path + ".partial"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	werr := writeTarFiles(f, files)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return errors.Join(werr, os.Remove(tmp))
	}
	return os.Rename(tmp, path)
}

// writeTarFiles writes files (and their directories) in path order with fixed metadata.
func writeTarFiles(w io.Writer, files map[string][]byte) error {
	tw := tar.NewWriter(w)
	dirs := map[string]bool{}
	for _, name := range sortedNames(files) {
		for i := 0; i < len(name); i++ {
			if name[i] == '/' && !dirs[name[:i]] {
				dirs[name[:i]] = true
				if err := tw.WriteHeader(&tar.Header{Name: name[:i] + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatUSTAR}); err != nil {
					return err
				}
			}
		}
		b := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Format: tar.FormatUSTAR}); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if _, err := tw.Write(b); err != nil {
			return err
		}
	}
	return tw.Close()
}

func sortedNames(files map[string][]byte) []string {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
