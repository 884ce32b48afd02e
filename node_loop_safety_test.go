package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/routeros/sim"
)

// TestNodeLoopNeverFormatsNonBlank: staging a volume whose disk holds anything but
// zeroes, or cannot be read, fails and writes nothing; mkfs is never asked for.
func TestNodeLoopNeverFormatsNonBlank(t *testing.T) {
	random := make([]byte, 64<<10)
	for i := range random {
		random[i] = byte(rand.IntN(256))
	}
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, file string)
		code    codes.Code
		msg     string
	}{
		{"random data", func(t *testing.T, file string) { writeSync(t, file, random, 8<<20) }, codes.FailedPrecondition, "holds unknown"},
		{"one byte deep inside", func(t *testing.T, file string) { writeSync(t, file, []byte{1}, 40<<20) }, codes.FailedPrecondition, "holds unknown"},
		{"partition table", func(t *testing.T, file string) { writeSync(t, file, []byte{0x55, 0xAA}, 510) }, codes.FailedPrecondition, "holds partitioned"},
		{"btrfs", func(t *testing.T, file string) { writeSync(t, file, []byte("_BHRfS_M"), 64<<10+64) }, codes.FailedPrecondition, "holds btrfs"},
		{"xfs where ext4 is asked for", func(t *testing.T, file string) { mkfsFile(t, "xfs", file) }, codes.FailedPrecondition, "use fsType xfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLoopEnv(t)
			v := e.createVolume("nonblank", "320M", mountCap(rwoMode, "ext4"))
			tc.prepare(t, v.file)
			before := fileHash(t, v.file)
			err := e.stage(v)
			nodeWantCode(t, err, tc.code, tc.msg)
			if e.formats.Load() != 0 {
				t.Fatal("the node asked for a format of a non-blank disk")
			}
			if len(mountsAt(t, v.staging)) != 0 {
				t.Fatal("a refused stage left a mount")
			}
			if fileHash(t, v.file) != before {
				t.Fatal("the refused stage changed the volume's data")
			}
			must(t, e.unstage(v))
		})
	}
}

// TestNodeLoopNeverFormatsUnreadable: a disk whose reads fail (here: a loop device over a
// file whose btrfs data checksum no longer matches, so every read of its first block is
// EIO) is neither formatted nor mounted.
func TestNodeLoopNeverFormatsUnreadable(t *testing.T) {
	e := newLoopEnv(t)
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		testenv.Missing(t, fmt.Sprintf("%v (test/install-deps.sh installs btrfs-progs)", err))
	}
	file := unreadableFile(t, e.root, 4<<20)
	nqn := testPrefix + "unreadable"
	must(t, os.Symlink(file, filepath.Join(e.sim.Dir(), sim.ExportsDirName, nqn)))
	v := &volume{id: "pvc-unreadable", nqn: nqn, file: file, cap: mountCap(rwoMode, "ext4"),
		staging: filepath.Join(e.root, "kubelet", "pvc-unreadable"),
		vc:      map[string]string{contextNQN: nqn, paramNVMeAddress: "127.0.0.1"}}
	must(t, os.MkdirAll(v.staging, 0o750))
	t.Cleanup(func() { _ = e.unstage(v) })
	err := e.stage(v)
	nodeWantCode(t, err, codes.Unavailable, "cannot read disk")
	nodeWantCode(t, err, codes.Unavailable, "neither formatted nor mounted")
	if e.formats.Load() != 0 || len(mountsAt(t, v.staging)) != 0 {
		t.Fatalf("formats %d, staging mounts %d: an unreadable disk must be left alone", e.formats.Load(), len(mountsAt(t, v.staging)))
	}
}

// unreadableFile makes a file of size bytes on a btrfs filesystem (in a loop-mounted
// image under root) and corrupts its first data block on the image, so reads of it fail
// with EIO. The filesystem stays mounted until the test ends.
func unreadableFile(t *testing.T, root string, size int) string {
	t.Helper()
	img := filepath.Join(root, "btrfs.img")
	must(t, os.WriteFile(img, nil, 0o644))
	must(t, os.Truncate(img, 256<<20))
	mkfsFile(t, "btrfs", img)
	dev, err := loopdev.Attach(nodeCtx(t), img, false)
	must(t, err)
	mnt := filepath.Join(root, "btrfs")
	must(t, os.Mkdir(mnt, 0o750))
	opts, _ := mount.ParseOptions("", nil)
	mountBtrfs := func() { must(t, mount.Mount(nodeCtx(t), dev.Path, mnt, "btrfs", opts)) }
	mountBtrfs()
	t.Cleanup(func() {
		ctx := context.Background()
		if err := mount.UnmountAll(ctx, mnt); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := dev.Detach(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	file := filepath.Join(mnt, "volume.img")
	data := pattern("unreadable", size)
	writeSync(t, file, data, 0)
	must(t, mount.UnmountAll(nodeCtx(t), mnt))
	raw, err := os.ReadFile(img)
	must(t, err)
	at := bytes.Index(raw, data[:4096])
	if at < 0 {
		t.Fatal("setup: the file's first block is not on the btrfs image")
	}
	writeSync(t, img, []byte{^data[100]}, int64(at+100))
	mountBtrfs()
	if _, err := os.ReadFile(file); err == nil {
		t.Fatal("setup: the corrupted file still reads")
	}
	return file
}

// mkfsFile makes a filesystem on an image file with the real tool (a fixture, bypassing
// the node's checks).
func mkfsFile(t testing.TB, fstype, file string) {
	t.Helper()
	args := map[string][]string{"xfs": {"-q", "-f"}, "ext4": {"-q", "-F"}, "btrfs": {"-q", "-f"}}[fstype]
	if out, err := exec.CommandContext(nodeCtx(t), "mkfs."+fstype, append(args, file)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s %s: %v\n%s", fstype, file, err, out)
	}
}
