package mount

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/loopdev"
)

func deviceOf(d loopdev.Device) Device {
	return Device{Name: filepath.Base(d.Path), Major: d.Major, Minor: d.Minor}
}

func systemUsers(nodeDirs ...string) UsersConfig {
	return UsersConfig{SysfsRoot: "/sys", ProcRoot: "/proc", NodeDirs: nodeDirs, SkipPID: os.Getpid()}
}

func mknodFor(t *testing.T, path string, d loopdev.Device) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(d.Major, d.Minor))); err != nil {
		t.Fatal(err)
	}
}

// holdOpen starts a child process that holds path open until the test ends.
func holdOpen(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "300")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
}

// TestUsers proves each kind of evidence is seen on a real loop device, and that the
// device is reported unused when none is there.
func TestUsers(t *testing.T) {
	requireLoop(t)
	cases := []struct {
		name string
		// setUp makes the evidence; it returns the node directories to search.
		setUp func(t *testing.T, d loopdev.Device) []string
		want  string // a substring of the one expected user; "" = unused
	}{
		{name: "unused", setUp: func(t *testing.T, d loopdev.Device) []string { return []string{t.TempDir()} }},
		{name: "mounted", want: "is mounted at", setUp: func(t *testing.T, d loopdev.Device) []string {
			mkfs(t, "ext4", d.Path)
			if err := Mount(testCtx(t), d.Path, mountPoint(t), "ext4", Options{}); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
		{name: "its /dev node bind-mounted", want: "is bind-mounted at", setUp: func(t *testing.T, d loopdev.Device) []string {
			target := filepath.Join(t.TempDir(), "node")
			if err := os.WriteFile(target, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount(d.Path, target, "", unix.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = unix.Unmount(target, unix.MNT_DETACH) })
			return nil
		}},
		{name: "device node in a node directory", want: "a device node of", setUp: func(t *testing.T, d loopdev.Device) []string {
			dir := t.TempDir()
			mknodFor(t, filepath.Join(dir, "publish", "pvc-1", "pod-uid"), d)
			return []string{dir}
		}},
		{name: "device node outside the node directories", setUp: func(t *testing.T, d loopdev.Device) []string {
			mknodFor(t, filepath.Join(t.TempDir(), "elsewhere"), d)
			return []string{t.TempDir()}
		}},
		{name: "device node on a filesystem mounted inside a node directory", setUp: func(t *testing.T, d loopdev.Device) []string {
			dir := t.TempDir()
			inner := filepath.Join(dir, "mounted")
			if err := os.Mkdir(inner, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", inner, "tmpfs", 0, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = unix.Unmount(inner, unix.MNT_DETACH) })
			mknodFor(t, filepath.Join(inner, "node"), d)
			return []string{dir}
		}},
		{name: "loop device over one of its nodes", want: "is backed by", setUp: func(t *testing.T, d loopdev.Device) []string {
			node := filepath.Join(t.TempDir(), "lock")
			mknodFor(t, node, d)
			attachLoop(t, node, true)
			return nil
		}},
		{name: "open descriptor of another process", want: "(sleep) has", setUp: func(t *testing.T, d loopdev.Device) []string {
			node := filepath.Join(t.TempDir(), "vm-disk")
			mknodFor(t, node, d)
			if err := os.Remove(node); err != nil { // the open file outlives its name
				t.Fatal(err)
			}
			mknodFor(t, node, d)
			holdOpen(t, node)
			return nil
		}},
		{name: "open descriptor of this process", setUp: func(t *testing.T, d loopdev.Device) []string {
			f, err := os.Open(d.Path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := attachLoop(t, newImage(t, minSize["ext4"]), false)
			cfg := systemUsers(tc.setUp(t, d)...)
			got, err := Users(testCtx(t), deviceOf(d), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("users of an unused device: %q", got)
				}
				return
			}
			if len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Fatalf("users: %q, want one containing %q", got, tc.want)
			}
		})
	}
}

// TestUsersPartition: a user of a partition is the disk's user. Loop devices here are
// made without partition support, so a fake sysfs lists a second loop device as the
// disk's partition, and a process holds that one open.
func TestUsersPartition(t *testing.T) {
	requireLoop(t)
	disk := attachLoop(t, newImage(t, 32<<20), false)
	part := attachLoop(t, newImage(t, 32<<20), false)
	name := filepath.Base(disk.Path)
	sysfs := t.TempDir()
	partDir := filepath.Join(sysfs, "class", "block", name, name+"p1")
	if err := os.MkdirAll(partDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(partDir, "partition"), "1\n")
	writeFile(t, filepath.Join(partDir, "dev"), fmt.Sprintf("%d:%d\n", part.Major, part.Minor))
	cfg := UsersConfig{SysfsRoot: sysfs, ProcRoot: "/proc", SkipPID: os.Getpid()}
	if got, err := Users(testCtx(t), deviceOf(disk), cfg); err != nil || len(got) != 0 {
		t.Fatalf("users before the partition is opened: %q, %v", got, err)
	}
	holdOpen(t, part.Path)
	got, err := Users(testCtx(t), deviceOf(disk), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.Contains(got[0], name+"p1") {
		t.Fatalf("users: %q, want the process holding partition %sp1", got, name)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestUsersDoubt: what cannot be read is an error, never "unused".
func TestUsersDoubt(t *testing.T) {
	dev := Device{Name: "nvme9n9", Major: 259, Minor: 99}
	for name, cfg := range map[string]UsersConfig{
		"no process table":   {SysfsRoot: "/sys", ProcRoot: filepath.Join(t.TempDir(), "missing")},
		"holders unreadable": {SysfsRoot: fakeHolders(t, dev.Name), ProcRoot: "/proc"},
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := Users(testCtx(t), dev, cfg); err == nil {
				t.Fatalf("Users answered %q without being able to look", got)
			}
		})
	}
	t.Run("context ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := Users(ctx, dev, systemUsers()); err == nil {
			t.Fatal("Users answered after its context ended")
		}
	})
	t.Run("holders", func(t *testing.T) {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "class", "block", dev.Name, "holders", "dm-3"), 0o755); err != nil {
			t.Fatal(err)
		}
		got, err := Users(testCtx(t), dev, UsersConfig{SysfsRoot: root, ProcRoot: "/proc", SkipPID: os.Getpid()})
		if err != nil || len(got) != 1 || !strings.Contains(got[0], "held by dm-3") {
			t.Fatalf("users %q, %v; want the dm holder", got, err)
		}
	})
}

// fakeHolders is a sysfs whose holders entry for name is a file, so reading it as a
// directory fails.
func fakeHolders(t *testing.T, name string) string {
	root := t.TempDir()
	dir := filepath.Join(root, "class", "block", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "holders"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// BenchmarkUsers is the cost of the in-use check that precedes every disconnect, on this
// machine's real mount table, sysfs and processes.
func BenchmarkUsers(b *testing.B) {
	requireLoop(b)
	img := filepath.Join(b.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		b.Fatal(err)
	}
	d := attachLoop(b, img, false)
	cfg := UsersConfig{SysfsRoot: "/sys", ProcRoot: "/proc", NodeDirs: []string{b.TempDir()}, SkipPID: os.Getpid()}
	for b.Loop() {
		if _, err := Users(context.Background(), deviceOf(d), cfg); err != nil {
			b.Fatal(err)
		}
	}
}
