package routeros

import (
	"context"
	"errors"
	"path"
	"slices"
	"strings"
	"time"
)

// ListFiles returns every file and directory below dir (at any depth), sorted by path.
func (c *Client) ListFiles(ctx context.Context, dir string) (files []File, err error) {
	const op = "ListFiles"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := c.validateDir(dir); err != nil {
		return nil, err
	}
	return c.listFiles(ctx, op, dir)
}

func (c *Client) listFiles(ctx context.Context, op, dir string) ([]File, error) {
	prefix := dir[1:] + "/" // RouterOS names have no leading '/'
	// The regex's '.' also matches other characters; the exact prefix is checked below.
	cmd := "/file print detail where name~" + quote("^"+prefix)
	out, err := c.run(ctx, op, cmd)
	if err != nil {
		return nil, err
	}
	all, err := ParseFiles(out)
	if err != nil {
		return nil, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0, Output: clip(out, 2000), Err: err}
	}
	files := all[:0]
	for _, f := range all {
		if strings.HasPrefix(f.Path, dir+"/") {
			files = append(files, f)
		}
	}
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, nil
}

// RemoveFile deletes one file; a missing file is not an error. It refuses a directory
// (RouterOS would remove it with everything in it).
func (c *Client) RemoveFile(ctx context.Context, p string) (err error) {
	const op = "RemoveFile"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := c.validatePath(p); err != nil {
		return err
	}
	siblings, err := c.listFiles(ctx, op, path.Dir(p))
	if err != nil {
		return err
	}
	i := slices.IndexFunc(siblings, func(f File) bool { return f.Path == p })
	switch {
	case i < 0:
		return nil
	case siblings[i].Type == "directory":
		return invalidf("%s is a directory: only files are removed, never recursively", p)
	}
	_, err = c.run(ctx, op, "/file remove [find name="+quote(p[1:])+"]")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// CopyFile copies src to dst on the RDS (for snapshots and clones). Whether the copy is
// complete when the command returns is unverified on hardware: callers compare sizes with
// ListFiles before relying on dst. Only ctx bounds it, not CommandTimeout (see Config).
func (c *Client) CopyFile(ctx context.Context, src, dst string) (err error) {
	const op = "CopyFile"
	defer c.observe(op, time.Now(), &err)
	if err := c.validatePath(src); err != nil {
		return err
	}
	if err := c.validatePath(dst); err != nil {
		return err
	}
	if src == dst {
		return invalidf("copy source and destination are both %s", src)
	}
	_, err = c.run(ctx, op, "/file copy "+quote(src[1:])+" name="+quote(dst[1:]))
	return err
}

// Version returns RouterOS's version as printed, e.g. "7.24.4 (stable)".
func (c *Client) Version(ctx context.Context) (v string, err error) {
	const op = "Version"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	cmd := ":put [/system resource get version]"
	out, err := c.run(ctx, op, cmd)
	if err != nil {
		return "", err
	}
	v, _, _ = strings.Cut(strings.TrimSpace(out), "\n")
	v = strings.TrimSpace(v)
	if v == "" {
		return "", &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0, Output: "empty version"}
	}
	return v, nil
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
	return ValidatePath(dir, c.cfg.AllowedBases...)
}
