package routeros

import (
	"fmt"
	"strings"
	"time"
)

// File is an entry of `/file print detail`.
type File struct {
	Path         string // absolute: RouterOS prints names without the leading '/'
	Type         string // "directory", or the extension (".img")
	Size         int64  // parsed from SizeText: approximate (RouterOS rounds it)
	SizeText     string // as printed, e.g. "10.0GiB"
	LastModified time.Time
}

// timestamp layouts RouterOS prints; the RDS clock's zone is not printed, so times are
// read as UTC.
var timestampLayouts = []string{"2006-01-02 15:04:05", "jan/02/2006 15:04:05"}

// ParseFiles parses `/file print detail`. Items without a name are skipped (nothing can
// refer to them); a size or timestamp that cannot be read is an error.
func ParseFiles(text string) ([]File, error) {
	items, err := ParseDetail(text)
	if err != nil {
		return nil, err
	}
	files := make([]File, 0, len(items))
	for _, it := range items {
		name := it.Props["name"]
		if name == "" {
			continue
		}
		f := File{Path: "/" + strings.TrimPrefix(name, "/"), Type: it.Props["type"]}
		// the reference prints `file size=`; accept plain `size=` from other versions
		for _, k := range []string{"file size", "size"} {
			if v, ok := it.Props[k]; ok {
				f.SizeText = v
				if f.Size, err = parseHumanSize(v); err != nil {
					return nil, fmt.Errorf("file %q: %w", f.Path, err)
				}
				break
			}
		}
		for _, k := range []string{"last-modified", "creation-time"} {
			if v, ok := it.Props[k]; ok && v != "" {
				if f.LastModified, err = parseTimestamp(v); err != nil {
					return nil, fmt.Errorf("file %q: %w", f.Path, err)
				}
				break
			}
		}
		files = append(files, f)
	}
	return files, nil
}

func parseTimestamp(s string) (time.Time, error) {
	for _, layout := range timestampLayouts {
		// month names are printed lower-case ("jan"); Go's layout wants "Jan"
		v := s
		if len(v) > 0 && v[0] >= 'a' && v[0] <= 'z' {
			v = strings.ToUpper(v[:1]) + v[1:]
		}
		if t, err := time.Parse(strings.Replace(layout, "jan", "Jan", 1), v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %q is in neither %q nor %q form", s, timestampLayouts[0], timestampLayouts[1])
}
