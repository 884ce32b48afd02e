package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/mount"
)

const rwoMode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER

// TestNodeLoopCycle runs the whole stage/publish/unpublish/unstage cycle on real loop
// devices, every call twice (idempotency), twice over: the second cycle finds the data
// of the first and formats nothing.
func TestNodeLoopCycle(t *testing.T) {
	for _, tc := range []struct {
		name, size string
		cap        *csi.VolumeCapability
	}{
		{"ext4", "64M", mountCap(rwoMode, "ext4")},
		{"xfs", "320M", mountCap(rwoMode, "xfs", "noatime")},
		{"block", "16M", blockCap(rwoMode)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("cycle-"+tc.name, tc.size, tc.cap)
			block := tc.cap.GetBlock() != nil
			data := pattern(tc.name, 1<<20)
			for round := range 2 {
				for range 2 {
					must(t, e.stage(v))
				}
				devs := attachedDevices(t, v)
				if len(devs) != 1 {
					t.Fatalf("round %d: loop devices of the volume: %v, want one", round, devs)
				}
				if block {
					if entries, _ := os.ReadDir(v.staging); len(entries) != 0 || len(mountsAt(t, v.staging)) != 0 {
						t.Fatalf("block staging path %s holds %v: it must hold nothing kubelet can see", v.staging, entries)
					}
				} else if m := mountsAt(t, v.staging); len(m) != 1 || uint32(m[0].Major) != devs[0].Major || uint32(m[0].Minor) != devs[0].Minor {
					t.Fatalf("round %d: staging mounts %+v, want one of %s", round, m, devs[0].Path)
				}
				target := e.target("pod-" + tc.name)
				for range 2 {
					must(t, e.publish(v, target, false))
				}
				file := target
				if block {
					var st unix.Stat_t
					must(t, unix.Lstat(target, &st))
					if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != devs[0].Major || unix.Minor(st.Rdev) != devs[0].Minor || st.Mode&0o777 != 0o660 {
						t.Fatalf("block target %s: mode %#o rdev %d:%d, want a 0660 node for %d:%d", target, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), devs[0].Major, devs[0].Minor)
					}
					if len(mountsAt(t, target)) != 0 {
						t.Fatal("a block target must be a device node, never a bind mount")
					}
				} else {
					if m := mountsAt(t, target); len(m) != 1 {
						t.Fatalf("target mounts %+v, want exactly one bind mount", m)
					}
					file = filepath.Join(target, "data.bin")
				}
				if round == 0 {
					writeSync(t, file, data, 4096)
				}
				checkData(t, file, data, 4096)
				for range 2 {
					must(t, e.unpublish(v, target))
				}
				if _, err := os.Lstat(target); !os.IsNotExist(err) {
					t.Fatalf("target %s still exists after unpublish: %v", target, err)
				}
				for range 2 {
					must(t, e.unstage(v))
				}
				if devs := attachedDevices(t, v); len(devs) != 0 {
					t.Fatalf("still attached after unstage: %v", devs)
				}
				if len(mountsAt(t, v.staging)) != 0 {
					t.Fatal("staging path still mounted after unstage")
				}
				if _, ok := e.n.records.get(v.id); ok {
					t.Fatal("staging record left after unstage")
				}
			}
			if want := map[bool]int32{true: 0, false: 1}[block]; e.formats.Load() != want {
				t.Fatalf("%d formats, want %d: an existing filesystem was formatted again", e.formats.Load(), want)
			}
		})
	}
}

// TestNodeLoopPublishReadOnly publishes one staged filesystem read-write and read-only.
func TestNodeLoopPublishReadOnly(t *testing.T) {
	e := newLoopEnv(t)
	v := e.createVolume("ro", "64M", mountCap(rwoMode, "ext4"))
	must(t, e.stage(v))
	rw, ro := e.target("writer"), e.target("reader")
	must(t, e.publish(v, rw, false))
	must(t, e.publish(v, ro, true))
	writeSync(t, filepath.Join(rw, "f"), []byte("hello"), 0)
	checkData(t, filepath.Join(ro, "f"), []byte("hello"), 0)
	if err := os.WriteFile(filepath.Join(ro, "g"), []byte("x"), 0o644); err == nil {
		t.Fatal("wrote through a read-only publish")
	}
	nodeWantCode(t, e.publish(v, ro, false), codes.AlreadyExists, "read-only=true")
	must(t, e.unpublish(v, rw))
	must(t, e.unpublish(v, ro))
	must(t, e.unstage(v))
}

// TestNodeLoopUnpublishStackedAndMissing: unpublish peels every stacked mount before
// removing the target, removes nothing below it, and a missing target is success.
func TestNodeLoopUnpublishStackedAndMissing(t *testing.T) {
	e := newLoopEnv(t)
	v := e.createVolume("stack", "64M", mountCap(rwoMode, "ext4"))
	must(t, e.stage(v))
	target := e.target("stacked")
	must(t, e.publish(v, target, false))
	writeSync(t, filepath.Join(target, "keep.bin"), []byte("volume data"), 0)
	// Mount propagation or a retry by someone else can stack a second mount there.
	must(t, mount.Bind(nodeCtx(t), v.staging, target, false))
	if m := mountsAt(t, target); len(m) != 2 {
		t.Fatalf("setup: %d mounts at the target, want 2", len(m))
	}
	must(t, e.unpublish(v, target))
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("target still there: %v", err)
	}
	checkData(t, filepath.Join(v.staging, "keep.bin"), []byte("volume data"), 0)

	// A file below the mount (not on the volume) is not ours: unpublish unmounts, then
	// refuses to remove a non-empty directory, and the file stays.
	hidden := e.target("hidden")
	must(t, os.Mkdir(hidden, 0o750))
	writeSync(t, filepath.Join(hidden, "not-the-volume.txt"), []byte("host data"), 0)
	must(t, e.publish(v, hidden, false))
	nodeWantCode(t, e.unpublish(v, hidden), codes.FailedPrecondition, "still holds files")
	if len(mountsAt(t, hidden)) != 0 {
		t.Fatal("the target is still mounted")
	}
	checkData(t, filepath.Join(hidden, "not-the-volume.txt"), []byte("host data"), 0)
	checkData(t, filepath.Join(v.staging, "keep.bin"), []byte("volume data"), 0)

	must(t, e.unpublish(v, filepath.Join(e.root, "pods", "never", "vol")))
	must(t, e.unpublish(v, target))
	must(t, e.unstage(v))
	must(t, e.unstage(v))
	w := e.createVolume("never-staged", "16M", mountCap(rwoMode, "ext4"))
	must(t, e.unstage(w))
	nodeWantCode(t, e.publish(w, e.target("early"), false), codes.FailedPrecondition, "not staged on this node")
}

// TestNodeLoopUnstageRefusedWhilePublished names every publish target still in use and
// leaves the volume connected.
func TestNodeLoopUnstageRefusedWhilePublished(t *testing.T) {
	for _, cap := range []*csi.VolumeCapability{mountCap(rwoMode, "ext4"), blockCap(rwoMode)} {
		e := newLoopEnv(t)
		v := e.createVolume("busy", "64M", cap)
		must(t, e.stage(v))
		a, b := e.target("a"), e.target("b")
		must(t, e.publish(v, a, false))
		must(t, e.publish(v, b, false))
		err := e.unstage(v)
		nodeWantCode(t, err, codes.FailedPrecondition, "still published at")
		for _, p := range []string{a, b} {
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("refusal %q does not name %s", err, p)
			}
		}
		if len(attachedDevices(t, v)) != 1 {
			t.Fatal("the refused unstage disconnected the volume")
		}
		must(t, e.unpublish(v, a))
		must(t, e.unpublish(v, b))
		must(t, e.unstage(v))
		if len(attachedDevices(t, v)) != 0 {
			t.Fatal("not disconnected")
		}
	}
}
