package imagebuild

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"time"
)

// epoch is every file's modification time: the same tree gives the same bytes.
var epoch = time.Unix(0, 0).UTC()

// Layer is one image layer.
type Layer struct {
	Tar  []byte // the uncompressed tar; its digest is the config's diff_id
	Gzip []byte // what the registry stores; its digest is the manifest's layer digest
}

// WriteTar writes the root as a tar stream that depends only on the files' paths, types,
// modes and contents: entries sorted by path, owner root:root with no names, every time
// the epoch, USTAR headers (no PAX records carrying access times).
func (r *Rootfs) WriteTar(w io.Writer) error {
	tw := tar.NewWriter(w)
	for _, e := range r.Sorted() {
		h := &tar.Header{
			Name:     e.Path[1:],
			Typeflag: e.Type,
			Mode:     e.Mode,
			ModTime:  epoch,
			Format:   tar.FormatUSTAR,
		}
		var body []byte
		switch e.Type {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeSymlink:
			h.Linkname = e.Link
		case tar.TypeReg:
			body = e.Data
			if e.Source != "" {
				b, err := os.ReadFile(e.Source)
				if err != nil {
					return fmt.Errorf("%s (from %s): %w", e.Path, e.Origin, err)
				}
				body = b
			}
			h.Size = int64(len(body))
		default:
			return fmt.Errorf("%s: entry type %q is not one the image uses", e.Path, e.Type)
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
		if _, err := tw.Write(body); err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
	}
	return tw.Close()
}

// Layer packs the root into one layer, gzip-compressed with a header that carries no name
// and no time, so the compressed bytes are as reproducible as the tar (for one Go
// compress/flate implementation; a different Go release may compress differently).
func (r *Rootfs) Layer() (Layer, error) {
	var raw bytes.Buffer
	if err := r.WriteTar(&raw); err != nil {
		return Layer{}, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return Layer{}, err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return Layer{}, err
	}
	if err := zw.Close(); err != nil {
		return Layer{}, err
	}
	return Layer{Tar: raw.Bytes(), Gzip: gz.Bytes()}, nil
}
