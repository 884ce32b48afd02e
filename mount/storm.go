package mount

import (
	"context"
	"fmt"
)

// DefaultStormLimit is the number of mount-table entries one source may
// have before StormGuard refuses another. A node with a healthy workload
// has a handful per volume; thousands mean mount propagation is
// multiplying them (seen: 2048 devtmpfs mounts, a soft lockup, an OOM kill).
const DefaultStormLimit = 100

// StormGuard refuses to add a mount whose source device already has Limit
// or more entries in the mount table. The zero value uses DefaultStormLimit.
// Mount and Bind apply the default guard; use the guard's own methods for
// another limit.
type StormGuard struct {
	Limit int
}

func (g StormGuard) limit() int {
	if g.Limit <= 0 {
		return DefaultStormLimit
	}
	return g.Limit
}

// check returns an error wrapping ErrMountStorm when major:minor already has
// Limit or more entries in t, or when t cannot be read.
func (g StormGuard) check(ctx context.Context, t table, major, minor uint32) error {
	entries, err := t.bySource(ctx, major, minor)
	if err != nil {
		return fmt.Errorf("mount-storm guard for device %d:%d: %w", major, minor, err)
	}
	if n, limit := len(entries), g.limit(); n >= limit {
		return fmt.Errorf("%w: refusing another mount of device %d:%d, which already has %d mount-table entries (limit %d); "+
			"this usually means mount propagation is multiplying mounts: list them with `grep ' %d:%d ' /proc/self/mountinfo`, "+
			"look for bind mounts of /dev or of a shared kubelet directory, and unmount the extras",
			ErrMountStorm, major, minor, n, limit, major, minor)
	}
	return nil
}
