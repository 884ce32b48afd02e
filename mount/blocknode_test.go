package mount

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

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
