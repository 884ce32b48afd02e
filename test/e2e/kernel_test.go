//go:build e2e

package e2e

// What the kernel says, read directly (sysfs through vmsys, configfs, mountinfo,
// superblocks), never through the driver's own packages: the suite judges the driver by
// the machine's state.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/vmsys"
	"srvlab.io/rds-csi/test/internal/nvmet"
)

const nvmetRoot = nvmet.Root

// sh runs a command with a deadline and fails the test on error.
func sh(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitFor polls cond every 50 ms until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

// diskBytes is the size sysfs reports for a disk.
func diskBytes(name string) int64 {
	n, _ := strconv.ParseInt(vmsys.Attr(filepath.Join("/sys/block", name, "size")), 10, 64)
	return n * 512
}

// nvmetSubsystems lists the target's subsystems.
func nvmetSubsystems() []string {
	var out []string
	entries, _ := os.ReadDir(filepath.Join(nvmetRoot, "subsystems"))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// nvmetPortOf is the nvmet port that serves nqn (on address, unless "").
func nvmetPortOf(t testing.TB, nqn, address string) string {
	t.Helper()
	port, err := nvmet.PortOf(nqn, address)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	majmin, root, point, options, fstype, source, superOptions string
}

// readOnly reports a read-only mount or superblock: ext4 that hit I/O errors turns its
// superblock read-only ("errors=remount-ro") while the mount itself still says rw.
func (m mountEntry) readOnly() bool {
	for _, o := range strings.Split(m.options+","+m.superOptions, ",") {
		if o == "ro" {
			return true
		}
	}
	return false
}

func mountinfo(t testing.TB) []mountEntry {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		a, b := strings.Fields(pre), strings.Fields(post)
		if !ok || len(a) < 6 || len(b) < 3 {
			t.Fatalf("mountinfo line %q", sc.Text())
		}
		out = append(out, mountEntry{majmin: a[2], root: unescape(a[3]), point: unescape(a[4]), options: a[5],
			fstype: b[0], source: unescape(b[1]), superOptions: b[2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsAt lists the mounts whose mount point is path (more than one is a stacked mount).
func mountsAt(t testing.TB, path string) []mountEntry {
	t.Helper()
	return mountsWhere(t, func(m mountEntry) bool { return m.point == path })
}

// mountsOf lists the mounts of block device majmin.
func mountsOf(t testing.TB, majmin string) []mountEntry {
	t.Helper()
	return mountsWhere(t, func(m mountEntry) bool { return m.majmin == majmin })
}

func mountsWhere(t testing.TB, keep func(mountEntry) bool) []mountEntry {
	t.Helper()
	var out []mountEntry
	for _, m := range mountinfo(t) {
		if keep(m) {
			out = append(out, m)
		}
	}
	return out
}

// oneMount requires exactly one writable mount at path and returns it.
func oneMount(t testing.TB, path string) mountEntry {
	t.Helper()
	ms := mountsAt(t, path)
	if len(ms) != 1 {
		t.Fatalf("%d mounts at %s, want exactly 1: %+v", len(ms), path, ms)
	}
	if ms[0].readOnly() {
		t.Fatalf("%s is mounted read-only: %+v", path, ms[0])
	}
	return ms[0]
}

// fsUUID reads the filesystem UUID from the device's superblock (blkid -p bypasses any
// cache), proof of whether a device was formatted again.
func fsUUID(t testing.TB, dev string) string {
	t.Helper()
	return strings.TrimSpace(sh(t, 30*time.Second, "blkid", "-p", "-o", "value", "-s", "UUID", dev))
}

// devPathOf maps a major:minor to its /dev node name through sysfs.
func devPathOf(t testing.TB, majmin string) string {
	t.Helper()
	link, err := os.Readlink("/sys/dev/block/" + majmin)
	if err != nil {
		t.Fatalf("block device %s: %v", majmin, err)
	}
	return "/dev/" + filepath.Base(link)
}

// statfsBytes is the total size of the filesystem mounted at path, as df shows it.
func statfsBytes(t testing.TB, path string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		t.Fatalf("statfs %s: %v", path, err)
	}
	return int64(st.Blocks) * st.Bsize
}

// blockDeviceBytes is the size of the block device at path (a device node).
func blockDeviceBytes(t testing.TB, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		t.Fatalf("size of %s: %v", path, err)
	}
	return n
}

// rdev is the major:minor of the device node at path.
func rdev(t testing.TB, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("%s is not a block device node (mode %o)", path, st.Mode)
	}
	return fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
}

// portDown takes an nvmet port down the way an RDS reboot looks to hosts: every
// subsystem unlinked, controllers dropped, the listener closed. portUp brings it back.
func portDown(t testing.TB, port string) { sh(t, 10*time.Second, "nvmet-port-down", port) }
func portUp(t testing.TB, port string)   { sh(t, 10*time.Second, "nvmet-port-up", port) }
