package main

import (
	"fmt"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"srvlab.io/rds-csi/mount"
)

// TestNodeLoopExpand grows a published xfs volume and a raw block volume online after the
// RDS grew the file. (ext4 grows with resize2fs, which needs CAP_SYS_RESOURCE; the VM
// suite proves it, as this sandbox lacks the capability.)
func TestNodeLoopExpand(t *testing.T) {
	for _, tc := range []struct {
		name       string
		from, to   int64
		cap        *csi.VolumeCapability
		filesystem bool
	}{
		{"xfs", 320 << 20, 512 << 20, mountCap(rwoMode, "xfs"), true},
		{"block", 16 << 20, 48 << 20, blockCap(rwoMode), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("grow-"+tc.name, fmt.Sprint(tc.from), tc.cap)
			must(t, e.stage(v))
			target := e.target("pod")
			must(t, e.publish(v, target, false))
			var before mount.VolumeStats
			if tc.filesystem {
				var err error
				before, err = mount.StatContext(nodeCtx(t), target)
				must(t, err)
			}
			if _, err := e.sim.Exec(nodeCtx(t), fmt.Sprintf("/disk set [find slot=%s] file-size=%d", v.id, tc.to)); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				r, err := e.n.NodeExpandVolume(nodeCtx(t), &csi.NodeExpandVolumeRequest{
					VolumeId: v.id, VolumePath: target, StagingTargetPath: v.staging, VolumeCapability: v.cap,
					CapacityRange: &csi.CapacityRange{RequiredBytes: tc.to}})
				must(t, err)
				if r.GetCapacityBytes() != tc.to {
					t.Fatalf("capacity %d, want %d", r.GetCapacityBytes(), tc.to)
				}
			}
			if tc.filesystem {
				after, err := mount.StatContext(nodeCtx(t), target)
				must(t, err)
				if after.TotalBytes-before.TotalBytes < (tc.to-tc.from)*9/10 {
					t.Fatalf("filesystem grew from %d to %d bytes; the disk grew by %d", before.TotalBytes, after.TotalBytes, tc.to-tc.from)
				}
			}
			must(t, e.unpublish(v, target))
			must(t, e.unstage(v))
		})
	}
}
