// Package scratch lists what is mounted under the scratch directories of the project's demo
// and bench tools, and removes those directories only when nothing is mounted below them: a
// recursive removal must never walk into a mounted volume.
package scratch

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"srvlab.io/rds-csi/mount"
)

// MountsUnder lists the mount points at or below dir, deepest first. An unreadable mount
// table is an error, never "nothing mounted".
func MountsUnder(dir string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	entries, err := mount.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	var mps []string
	for _, e := range entries {
		if e.Mountpoint == dir || strings.HasPrefix(e.Mountpoint, dir+"/") {
			mps = append(mps, e.Mountpoint)
		}
	}
	slices.SortFunc(mps, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return mps, nil
}

// RemoveUnmounted deletes dir and everything in it, but only when the mount table can be
// read and shows nothing mounted at or below dir.
func RemoveUnmounted(dir string) error {
	mps, err := MountsUnder(dir)
	if err != nil {
		return fmt.Errorf("not removing %s: %w", dir, err)
	}
	if len(mps) > 0 {
		return fmt.Errorf("not removing %s: %s is still mounted", dir, mps[0])
	}
	return os.RemoveAll(dir)
}
