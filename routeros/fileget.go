package routeros

import (
	"context"
	"fmt"
)

// GetFile returns one file (or directory) by its absolute path, or ErrNotFound. It is the
// cheap way to follow a copy: one item printed instead of a whole directory.
func (c *Client) GetFile(ctx context.Context, p string) (f *File, err error) {
	const op = "GetFile"
	ctx, end := c.begin(ctx, op)
	defer end(&err)
	if err := c.validateDir(p); err != nil { // a file, or a directory down to a base itself
		return nil, err
	}
	cmd := "/file print detail where name=" + quote(p[1:]) // names have no leading '/'
	out, err := c.run(ctx, op, cmd)
	if err != nil {
		return nil, err
	}
	files, err := ParseFiles(out)
	if err != nil {
		return nil, &CommandError{Op: op, Kind: KindOther, Command: cmd, Exit: 0, Output: clip(out, 2000), Err: err}
	}
	for _, f := range files {
		if f.Path == p {
			return &f, nil
		}
	}
	return nil, &CommandError{Op: op, Kind: KindNotFound, Command: cmd, Exit: 0, Output: fmt.Sprintf("no file %q", p)}
}
