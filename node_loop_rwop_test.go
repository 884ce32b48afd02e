package main

import (
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ReadWriteOncePod: one publish target at most, for filesystem and block volumes; the same
// target again is an idempotent repeat, and after unpublish another target may have it.
func TestNodeLoopSingleWriterAllowsOneTarget(t *testing.T) {
	const rwop = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	e := newLoopEnv(t)
	for _, tc := range []struct {
		name string
		cap  *csi.VolumeCapability
	}{
		{"fs", mountCap(rwop, "ext4")},
		{"block", &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: rwop}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := e.createVolume("rwop-"+tc.name, "64M", tc.cap)
			must(t, e.stage(v))
			first, second := e.target(tc.name+"-pod-1"), e.target(tc.name+"-pod-2")
			must(t, e.publish(v, first, false))
			must(t, e.publish(v, first, false)) // a repeat
			err := e.publish(v, second, false)
			if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), first) {
				t.Fatalf("second target: %v, want FailedPrecondition naming %s", err, first)
			}
			must(t, e.unpublish(v, first))
			must(t, e.publish(v, second, false))
			must(t, e.unpublish(v, second))
			must(t, e.unstage(v))
		})
	}
}
