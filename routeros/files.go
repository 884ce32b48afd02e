package routeros

import (
	"context"
	"fmt"
	"path"
	"slices"
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
			if v := it.Props[k]; v != "" {
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

// timestampLayouts are the forms RouterOS prints; the RDS clock's zone is not printed, so
// times are read as UTC. Month names are printed lower-case ("jan"), Go wants "Jan".
var timestampLayouts = []string{"2006-01-02 15:04:05", "jan/02/2006 15:04:05"}

func parseTimestamp(s string) (time.Time, error) {
	v := s
	if len(v) > 0 && v[0] >= 'a' && v[0] <= 'z' {
		v = strings.ToUpper(v[:1]) + v[1:]
	}
	for _, layout := range timestampLayouts {
		if t, err := time.Parse(strings.Replace(layout, "jan", "Jan", 1), v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("timestamp %q is in neither %q nor %q form", s, timestampLayouts[0], timestampLayouts[1])
}

// ListFiles returns every file and directory below dir (at any depth), sorted by path.
func (c *Client) ListFiles(ctx context.Context, dir string) ([]File, error) {
	return do(c, ctx, "ListFiles", c.validateDir(dir), func(o call) ([]File, error) { return o.listFiles(dir) })
}

func (o call) listFiles(dir string) ([]File, error) {
	// RouterOS names have no leading '/'; the regex's '.' also matches other characters,
	// so the exact prefix is checked below.
	files, err := printDetail(o, "/file print detail where name~"+quote("^"+dir[1:]+"/"), ParseFiles)
	if err != nil {
		return nil, err
	}
	files = slices.DeleteFunc(files, func(f File) bool { return !strings.HasPrefix(f.Path, dir+"/") })
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// GetFile returns one file (or directory) by its absolute path, or ErrNotFound. It is the
// cheap way to follow a copy: one item printed instead of a whole directory.
func (c *Client) GetFile(ctx context.Context, p string) (*File, error) {
	// p is a file, or a directory down to a base itself
	return do(c, ctx, "GetFile", c.validateDir(p), func(o call) (*File, error) { return o.getFile(p) })
}

func (o call) getFile(p string) (*File, error) {
	cmd := "/file print detail where name=" + quote(p[1:])
	files, err := printDetail(o, cmd, ParseFiles)
	if err != nil {
		return nil, err
	}
	if i := slices.IndexFunc(files, func(f File) bool { return f.Path == p }); i >= 0 {
		return &files[i], nil
	}
	return nil, o.fail(KindNotFound, cmd, "no file %q", p)
}

// RemoveFile deletes one file; a missing file is not an error. It refuses a directory
// (RouterOS would remove it with everything in it).
func (c *Client) RemoveFile(ctx context.Context, p string) error {
	_, err := do(c, ctx, "RemoveFile", c.validatePath(p), func(o call) (any, error) {
		siblings, err := o.listFiles(path.Dir(p))
		i := slices.IndexFunc(siblings, func(f File) bool { return f.Path == p })
		switch {
		case err != nil || i < 0:
			return nil, err
		case siblings[i].Type == "directory":
			return nil, invalidf("%s is a directory: only files are removed, never recursively", p)
		}
		return nil, ignoreNotFound(o.run("/file remove [find name=" + quote(p[1:]) + "]"))
	})
	return err
}

// CopyFile copies src to dst on the RDS (for snapshots and clones). Whether the copy is
// complete when the command returns is unverified on hardware: callers compare sizes with
// ListFiles before relying on dst. Only ctx bounds it, not CommandTimeout (see Config).
func (c *Client) CopyFile(ctx context.Context, src, dst string) error {
	bad := firstErr(c.validatePath(src), c.validatePath(dst), check(src != dst, "copy source and destination are both %s", src))
	_, err := do(c, ctx, "CopyFile", bad, func(o call) (string, error) {
		return o.run("/file copy " + quote(src[1:]) + " name=" + quote(dst[1:]))
	})
	return err
}

// Version returns RouterOS's version as printed, e.g. "7.24.4 (stable)".
func (c *Client) Version(ctx context.Context) (string, error) {
	return do(c, ctx, "Version", nil, func(o call) (string, error) {
		cmd := ":put [/system resource get version]"
		out, err := o.run(cmd)
		v, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
		if v = strings.TrimSpace(v); err == nil && v == "" {
			err = o.fail(KindOther, cmd, "empty version")
		}
		return v, err
	})
}

// validatePath checks a file path against the configured bases.
func (c *Client) validatePath(p string) error {
	return ValidatePath(p, c.cfg.AllowedBases...)
}

// validateDir checks a directory to list: clean and absolute, and (with AllowedBases)
// equal to or below a base.
func (c *Client) validateDir(dir string) error {
	if err := validateCleanPath(dir); err != nil {
		return err
	}
	if len(c.cfg.AllowedBases) == 0 || slices.Contains(c.cfg.AllowedBases, dir) {
		return nil
	}
	return c.validatePath(dir)
}
