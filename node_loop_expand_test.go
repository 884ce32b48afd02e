package main

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

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

// TestNodeLoopStageGrowsALargerCopy: a volume restored or cloned into a larger size holds
// its source's smaller filesystem; NodeStageVolume grows it to fill the disk, data intact.
// Where growing fails (ext4 without CAP_SYS_RESOURCE in this sandbox), the stage fails and
// leaves nothing mounted, so kubelet's retry tries again.
func TestNodeLoopStageGrowsALargerCopy(t *testing.T) {
	for _, tc := range []struct {
		fs       string
		from, to int64
	}{
		{"xfs", 320 << 20, 512 << 20},
		{"ext4", 64 << 20, 128 << 20},
	} {
		t.Run(tc.fs, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("copy-"+tc.fs, fmt.Sprint(tc.from), mountCap(rwoMode, tc.fs))
			must(t, e.stage(v))
			target := e.target("writer")
			must(t, e.publish(v, target, false))
			data := pattern("source", 1<<20)
			writeSync(t, filepath.Join(target, "data.bin"), data, 0)
			before, err := mount.StatContext(nodeCtx(t), target)
			must(t, err)
			must(t, e.unpublish(v, target))
			must(t, e.unstage(v))
			// What a restore into a larger PVC leaves: the copy's file is larger.
			if _, err := e.sim.Exec(nodeCtx(t), fmt.Sprintf("/disk set [find slot=%s] file-size=%d", v.id, tc.to)); err != nil {
				t.Fatal(err)
			}
			err = e.stage(v)
			if tc.fs == "ext4" && !haveCapability(t, unix.CAP_SYS_RESOURCE) {
				nodeWantCode(t, err, codes.Internal, "growing it failed")
				if m := mountsAt(t, v.staging); len(m) != 0 {
					t.Fatalf("a stage whose grow failed left %v mounted", m)
				}
				return
			}
			must(t, err)
			reader := e.target("reader")
			must(t, e.publish(v, reader, false))
			after, err := mount.StatContext(nodeCtx(t), reader)
			must(t, err)
			if after.TotalBytes-before.TotalBytes < (tc.to-tc.from)*9/10 {
				t.Fatalf("filesystem %d bytes after the stage, %d before; the disk grew by %d", after.TotalBytes, before.TotalBytes, tc.to-tc.from)
			}
			checkData(t, filepath.Join(reader, "data.bin"), data, 0)
			if e.formats.Load() != 1 {
				t.Fatalf("%d formats, want 1 (the first stage only)", e.formats.Load())
			}
			must(t, e.unpublish(v, reader))
			must(t, e.unstage(v))
		})
	}
}

// haveCapability reports whether this process has capability c in its effective set.
func haveCapability(t *testing.T, c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}
