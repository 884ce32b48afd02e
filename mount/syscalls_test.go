package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMountUnmount(t *testing.T) {
	requireLoop(t)
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			ctx := testCtx(t)
			dev := formattedLoop(t, fstype)
			target := mountPoint(t)
			o := mustOptions(t, fstype, "noatime", "nodev", "nosuid", "discard")
			if err := Mount(ctx, dev.Path, target, fstype, o); err != nil {
				t.Fatal(err)
			}
			entries := mountedAt(t, target)
			if len(entries) != 1 {
				t.Fatalf("%d entries at %s after Mount, want 1", len(entries), target)
			}
			e := entries[0]
			if e.FSType != fstype || uint32(e.Major) != dev.Major || uint32(e.Minor) != dev.Minor {
				t.Errorf("entry %+v, want %s on %d:%d", e, fstype, dev.Major, dev.Minor)
			}
			for _, opt := range []string{"rw", "noatime", "nodev", "nosuid"} {
				if !hasOption(e.Options, opt) {
					t.Errorf("mount options %q lack %q", e.Options, opt)
				}
			}
			if !hasOption(e.VFSOptions, "discard") {
				t.Errorf("superblock options %q lack discard", e.VFSOptions)
			}
			file := filepath.Join(target, "data")
			if err := os.WriteFile(file, []byte("kept"), 0o600); err != nil {
				t.Fatal(err)
			}

			if removed, err := unmountOnce(ctx, target); err != nil || !removed {
				t.Fatalf("unmountOnce = %v, %v; want true, nil", removed, err)
			}
			if mounted, err := IsMounted(ctx, target); err != nil || mounted {
				t.Fatalf("IsMounted after unmountOnce = %v, %v", mounted, err)
			}
			if removed, err := unmountOnce(ctx, target); err != nil || removed {
				t.Errorf("second unmountOnce = %v, %v; want false, nil", removed, err)
			}
			if removed, err := unmountOnce(ctx, filepath.Join(target, "missing")); err != nil || removed {
				t.Errorf("unmountOnce of a missing path = %v, %v; want false, nil", removed, err)
			}

			if err := Mount(ctx, dev.Path, target, fstype, mustOptions(t, fstype, "ro")); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(file); err != nil || string(got) != "kept" {
				t.Errorf("after remount read %q, %v; want %q", got, err, "kept")
			}
			if err := os.WriteFile(file, []byte("x"), 0o600); !errors.Is(err, unix.EROFS) {
				t.Errorf("write on a ro mount: %v, want EROFS", err)
			}
		})
	}
}

func hasOption(options, opt string) bool {
	for o := range strings.SplitSeq(options, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

func TestMountRefuses(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	target := mountPoint(t)
	regular := newImage(t, 1<<20)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()

	cases := []struct {
		name   string
		ctx    context.Context
		source string
		fstype string
		o      Options
	}{
		{"source is a regular file", ctx, regular, "ext4", Options{}},
		{"source is missing", ctx, "/dev/does-not-exist", "ext4", Options{}},
		{"options for another filesystem", ctx, dev.Path, "ext4", mustOptions(t, "xfs", "inode64")},
		{"unvalidated data", ctx, dev.Path, "ext4", Options{Data: "data=ordered"}},
		{"flags ParseOptions never makes", ctx, dev.Path, "ext4", Options{Flags: unix.MS_BIND}},
		{"wrong filesystem type", ctx, dev.Path, "xfs", Options{}},
		{"cancelled context", cancelled, dev.Path, "ext4", Options{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := Mount(tc.ctx, tc.source, target, tc.fstype, tc.o); err == nil {
				t.Fatal("Mount succeeded, want an error")
			}
			if n := len(mountedAt(t, target)); n != 0 {
				t.Fatalf("%d mounts at target after a refused Mount", n)
			}
		})
	}
}

func TestBindAndRemount(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	staging := mountPoint(t)
	if err := Mount(ctx, dev.Path, staging, "ext4", mustOptions(t, "ext4", "nodev", "nosuid", "noatime")); err != nil {
		t.Fatal(err)
	}
	rwTarget, roTarget := mountPoint(t), mountPoint(t)
	if err := Bind(ctx, staging, rwTarget, false); err != nil {
		t.Fatal(err)
	}
	if err := Bind(ctx, staging, roTarget, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rwTarget, "f"), []byte("through the bind"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(roTarget, "f")); err != nil || string(got) != "through the bind" {
		t.Fatalf("read through the ro bind: %q, %v", got, err)
	}

	checkMode := func(t *testing.T, wantRO bool) {
		t.Helper()
		entries := mountedAt(t, roTarget)
		if len(entries) != 1 {
			t.Fatalf("%d entries at the ro target, want 1", len(entries))
		}
		opts := entries[0].Options
		for _, keep := range []string{"nodev", "nosuid", "noatime"} {
			if !hasOption(opts, keep) {
				t.Errorf("options %q lost %q", opts, keep)
			}
		}
		err := os.WriteFile(filepath.Join(roTarget, "g"), []byte("x"), 0o600)
		if wantRO && (!hasOption(opts, "ro") || !errors.Is(err, unix.EROFS)) {
			t.Errorf("options %q, write error %v; want ro and EROFS", opts, err)
		}
		if !wantRO && (!hasOption(opts, "rw") || err != nil) {
			t.Errorf("options %q, write error %v; want rw and a working write", opts, err)
		}
	}
	checkMode(t, true)
	if err := remount(ctx, roTarget, false); err != nil {
		t.Fatal(err)
	}
	checkMode(t, false)
	if err := remount(ctx, roTarget, true); err != nil {
		t.Fatal(err)
	}
	checkMode(t, true)
	if err := os.WriteFile(filepath.Join(staging, "h"), []byte("x"), 0o600); err != nil {
		t.Errorf("the staging mount became read-only with its bind: %v", err)
	}
	if err := remount(ctx, mountPoint(t), true); err == nil {
		t.Error("remount of an empty directory succeeded, want an error")
	}
}

func TestBindRefuses(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	node := filepath.Join(t.TempDir(), "node")
	if err := unix.Mknod(node, unix.S_IFBLK|0o600, int(unix.Mkdev(dev.Major, dev.Minor))); err != nil {
		t.Fatal(err)
	}
	target := mountPoint(t)
	devLink := filepath.Join(t.TempDir(), "looks-harmless")
	if err := os.Symlink("/dev/shm", devLink); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, source, target string }{
		{"/dev reached through a symlink", devLink, target},
		{"a /dev node", dev.Path, target},
		{"/dev itself", "/dev", target},
		{"a path under /dev", "/dev/shm", target},
		{"/dev reached with dots", "/tmp/../dev/shm", target},
		{"a block node outside /dev", node, target},
		{"a relative source", "relative", target},
		{"a missing source", filepath.Join(t.TempDir(), "missing"), target},
		{"a relative target", t.TempDir(), "relative"},
		{"a missing target", t.TempDir(), filepath.Join(target, "missing")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := Bind(ctx, tc.source, tc.target, false); err == nil {
				t.Fatal("Bind succeeded, want an error")
			}
			if n := len(mountedAt(t, target)); n != 0 {
				t.Fatalf("%d mounts at target after a refused Bind", n)
			}
		})
	}
}

// TestUnmountAllStacked stacks three mounts at one path, as repeated
// publishes or propagation do, and checks that one unmount is not enough
// and UnmountAll is.
func TestUnmountAllStacked(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	staging, target := mountPoint(t), mountPoint(t)
	if err := Mount(ctx, dev.Path, staging, "ext4", Options{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Bind(ctx, staging, target, false); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel refuses the same filesystem twice on one mount point
	// (EBUSY) unless by bind, so the top of the stack is another device.
	other := formattedLoop(t, "ext4")
	if err := Mount(ctx, other.Path, target, "ext4", Options{}); err != nil {
		t.Fatal(err)
	}
	if n := len(mountedAt(t, target)); n != 3 {
		t.Fatalf("%d stacked entries, want 3", n)
	}
	if _, err := unmountOnce(ctx, target); err != nil {
		t.Fatal(err)
	}
	if mounted, err := IsMounted(ctx, target); err != nil || !mounted {
		t.Fatalf("after one unmountOnce IsMounted = %v, %v; want true: stacked mounts remain", mounted, err)
	}
	if err := UnmountAll(ctx, target); err != nil {
		t.Fatal(err)
	}
	if n := len(mountedAt(t, target)); n != 0 {
		t.Fatalf("%d entries after UnmountAll", n)
	}
	if n := len(mountedAt(t, staging)); n != 1 {
		t.Fatalf("UnmountAll(target) touched the staging mount: %d entries", n)
	}
	for _, path := range []string{target, filepath.Join(target, "missing")} {
		if err := UnmountAll(ctx, path); err != nil {
			t.Errorf("UnmountAll(%s) with nothing mounted = %v, want nil", path, err)
		}
	}
}

func TestUnmountBusy(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	_, target := mountedLoop(t, "ext4")
	f, err := os.Create(filepath.Join(target, "open"))
	if err != nil {
		t.Fatal(err)
	}
	err = UnmountAll(ctx, target)
	f.Close()
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("UnmountAll with an open file = %v, want ErrInUse", err)
	}
	if mounted, err := IsMounted(ctx, target); err != nil || !mounted {
		t.Fatalf("IsMounted after a busy unmount = %v, %v; want true", mounted, err)
	}
	if err := UnmountAll(ctx, target); err != nil {
		t.Fatalf("UnmountAll after close = %v", err)
	}
}

// TestSymlinks: a symlink among the parents (a relocated kubelet root)
// must not hide a live mount, and a symlink as the mount point itself must
// not redirect an unmount to the mount it points at.
func TestSymlinks(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	_, target := mountedLoop(t, "ext4")
	linkedParent := filepath.Join(t.TempDir(), "kubelet")
	if err := os.Symlink(filepath.Dir(target), linkedParent); err != nil {
		t.Fatal(err)
	}
	linkAsTarget := filepath.Join(t.TempDir(), "target")
	if err := os.Symlink(target, linkAsTarget); err != nil {
		t.Fatal(err)
	}
	viaParent := filepath.Join(linkedParent, filepath.Base(target))

	if mounted, err := IsMounted(ctx, viaParent); err != nil || !mounted {
		t.Fatalf("IsMounted through a symlinked parent = %v, %v; want true", mounted, err)
	}
	if mounted, err := IsMounted(ctx, linkAsTarget); err != nil || mounted {
		t.Fatalf("IsMounted of a symlink to a mount = %v, %v; want false", mounted, err)
	}
	if err := UnmountAll(ctx, linkAsTarget); err != nil {
		t.Fatal(err)
	}
	if n := len(mountedAt(t, target)); n != 1 {
		t.Fatalf("UnmountAll of a symlink followed it: %d mounts left at the real target", n)
	}
	if err := UnmountAll(ctx, viaParent); err != nil {
		t.Fatal(err)
	}
	if n := len(mountedAt(t, target)); n != 0 {
		t.Fatalf("UnmountAll through a symlinked parent left %d mounts", n)
	}
}

func TestStormGuardCheck(t *testing.T) {
	// A table with n mounts of 259:7 and one of 259:8.
	tableWith := func(t *testing.T, n int) table {
		var sb strings.Builder
		sb.WriteString("27 1 254:0 / / rw - ext4 /dev/vda rw\n")
		for i := range n {
			fmt.Fprintf(&sb, "%d 27 259:7 / /pods/%d rw - ext4 /dev/nvme1n1 rw\n", 100+i, i)
		}
		sb.WriteString("99 27 259:8 / /other rw - ext4 /dev/nvme2n1 rw\n")
		path := filepath.Join(t.TempDir(), "mountinfo")
		if err := os.WriteFile(path, []byte(sb.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return fileTable(path)
	}
	cases := []struct {
		name    string
		guard   StormGuard
		mounts  int
		minor   uint32
		refused bool
	}{
		{"default limit, 99 mounts", StormGuard{}, 99, 7, false},
		{"default limit, 100 mounts", StormGuard{}, 100, 7, true},
		{"negative limit means default", StormGuard{Limit: -1}, 100, 7, true},
		{"limit 3, 2 mounts", StormGuard{Limit: 3}, 2, 7, false},
		{"limit 3, 3 mounts", StormGuard{Limit: 3}, 3, 7, true},
		{"limit 3, other device", StormGuard{Limit: 3}, 50, 8, false},
		{"limit 1, first mount", StormGuard{Limit: 1}, 0, 7, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.guard.check(testCtx(t), tableWith(t, tc.mounts), 259, tc.minor)
			if tc.refused != errors.Is(err, ErrMountStorm) {
				t.Fatalf("check = %v, want refused %v", err, tc.refused)
			}
			if tc.refused && !strings.Contains(err.Error(), "/proc/self/mountinfo") {
				t.Errorf("error %q does not say where to look", err)
			}
			if !tc.refused && err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStormGuardRefusesRealMounts(t *testing.T) {
	requireLoop(t)
	ctx := testCtx(t)
	dev := formattedLoop(t, "ext4")
	guard := StormGuard{Limit: 3}
	staging := mountPoint(t)
	if err := guard.Mount(ctx, dev.Path, staging, "ext4", Options{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := guard.Bind(ctx, staging, mountPoint(t), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := guard.check(ctx, processTable, dev.Major, dev.Minor); !errors.Is(err, ErrMountStorm) {
		t.Errorf("check with 3 mounts and limit 3 = %v, want ErrMountStorm", err)
	}
	extra := mountPoint(t)
	if err := guard.Bind(ctx, staging, extra, false); !errors.Is(err, ErrMountStorm) {
		t.Errorf("fourth Bind = %v, want ErrMountStorm", err)
	}
	if err := guard.Mount(ctx, dev.Path, extra, "ext4", Options{}); !errors.Is(err, ErrMountStorm) {
		t.Errorf("fourth Mount = %v, want ErrMountStorm", err)
	}
	if n := len(mountedAt(t, extra)); n != 0 {
		t.Errorf("a refused mount left %d entries", n)
	}
	if err := Bind(ctx, staging, extra, false); err != nil {
		t.Errorf("Bind with the default limit = %v, want nil", err)
	}
}

func TestMakeBlockNodeReadWrite(t *testing.T) {
	requireLoop(t)
	img := newImage(t, 4*mib)
	dev := attachLoop(t, img, false)
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	t.Cleanup(func() { syscall.Umask(old) })

	node := filepath.Join(t.TempDir(), "volume")
	for range 2 { // the second call is a no-op
		if err := MakeBlockNode(node, dev.Major, dev.Minor, false); err != nil {
			t.Fatal(err)
		}
		checkNode(t, node, dev.Major, dev.Minor, 0o660)
	}

	want := bytes.Repeat([]byte("published block volume "), 100)
	f, err := os.OpenFile(node, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuffer(int64(len(want) + alignment - len(want)%alignment))
	copy(buf, want)
	if _, err := f.WriteAt(buf, 2*mib); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got := make([]byte, len(want))
	backing, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer backing.Close()
	if _, err := backing.ReadAt(got, 2*mib); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data written through the block node is not on the device")
	}
	if err := os.Remove(node); err != nil { // unlink of a node never touches the device
		t.Fatal(err)
	}
	if _, err := backing.ReadAt(got, 2*mib); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("data gone after unlinking the node: %v", err)
	}
}

func TestMakeBlockNodeReadOnly(t *testing.T) {
	requireLoop(t)
	dev := attachLoop(t, newImage(t, mib), true)
	node := filepath.Join(t.TempDir(), "volume")
	if err := MakeBlockNode(node, dev.Major, dev.Minor, true); err != nil {
		t.Fatal(err)
	}
	checkNode(t, node, dev.Major, dev.Minor, 0o440)
	data, err := os.ReadFile(node)
	if err != nil || len(data) != mib {
		t.Fatalf("reading through the ro node: %d bytes, %v", len(data), err)
	}
	// Asking again read-write corrects the mode of the same node.
	if err := MakeBlockNode(node, dev.Major, dev.Minor, false); err != nil {
		t.Fatal(err)
	}
	checkNode(t, node, dev.Major, dev.Minor, 0o660)
}

func checkNode(t *testing.T, path string, major, minor uint32, mode uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK || unix.Major(st.Rdev) != major || unix.Minor(st.Rdev) != minor || st.Mode&0o7777 != mode {
		t.Fatalf("%s: mode %#o rdev %d:%d; want block %#o %d:%d", path, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), mode, major, minor)
	}
}

func TestMakeBlockNodeExisting(t *testing.T) {
	requireLoop(t)
	dev := attachLoop(t, newImage(t, mib), false)
	dir := t.TempDir()
	cases := []struct {
		name     string
		setup    func(path string) error
		wantErr  string // "" = replaced by the node
		keepData bool
	}{
		{"empty placeholder file", func(p string) error { return os.WriteFile(p, nil, 0o600) }, "", false},
		{"file with data", func(p string) error { return os.WriteFile(p, []byte("someone's data"), 0o600) }, "regular file of 14 bytes", true},
		{"directory", func(p string) error { return os.Mkdir(p, 0o755) }, "a directory", false},
		{"symlink to the device", func(p string) error { return os.Symlink(dev.Path, p) }, "a symlink", false},
		{"node of another device", func(p string) error {
			return unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(dev.Major, dev.Minor+1000)))
		}, "block device", false},
		{"character device", func(p string) error {
			return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(dev.Major, dev.Minor)))
		}, "character device", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := tc.setup(path); err != nil {
				t.Fatal(err)
			}
			err := MakeBlockNode(path, dev.Major, dev.Minor, false)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkNode(t, path, dev.Major, dev.Minor, 0o660)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("MakeBlockNode = %v, want an error containing %q", err, tc.wantErr)
			}
			if tc.keepData {
				if got, err := os.ReadFile(path); err != nil || string(got) != "someone's data" {
					t.Fatalf("the refused file changed: %q, %v", got, err)
				}
			}
		})
	}
	if err := MakeBlockNode("relative/node", dev.Major, dev.Minor, false); err == nil {
		t.Error("a relative path was accepted")
	}
	if err := MakeBlockNode(filepath.Join(dir, "missing-dir", "node"), dev.Major, dev.Minor, false); err == nil {
		t.Error("a path in a missing directory was accepted")
	}
}
