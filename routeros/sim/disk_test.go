package sim

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func execErr(t testing.TB, s *Sim, line string) string {
	t.Helper()
	_, err := s.Exec(context.Background(), line)
	if err == nil {
		t.Fatalf("%s: succeeded, want an error", line)
	}
	return err.Error()
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestDiskAddCreatesExactSparseFile(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	mustExec(t, s, `/disk add type=file file-path="/storage-pool/metal-csi/pvc-a.img" file-size=1536M slot="pvc-a"`)
	host := s.HostPath("/storage-pool/metal-csi/pvc-a.img")
	st, err := os.Stat(host)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 1536<<20 {
		t.Errorf("size %d, want %d", st.Size(), 1536<<20)
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks; blocks > 8 {
		t.Errorf("file is not sparse: %d blocks allocated", blocks)
	}
	if out := mustExec(t, s, `/disk print detail where slot="pvc-a"`); !strings.Contains(out, "size=1 610 612 736 ") {
		t.Errorf("exact size not printed:\n%s", out)
	}
}

func TestDiskAddOnExistingFile(t *testing.T) {
	s := newSim(t, Options{})
	host := s.HostPath("/storage-pool/restore.img")
	if err := createSparse(host, 3<<20); err != nil {
		t.Fatal(err)
	}
	if got := execErr(t, s, `/disk add type=file file-path=/storage-pool/restore.img file-size=2M slot=r`); got != `failure: file-size 2048.0KiB is smaller than file "/storage-pool/restore.img"` {
		t.Errorf("shrinking attach: %q", got)
	}
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/restore.img slot=r`)
	if out := mustExec(t, s, `/disk print detail where slot=r`); !strings.Contains(out, "size=3 145 728 ") {
		t.Errorf("attached size:\n%s", out)
	}
	mustExec(t, s, `/disk remove r`)
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/restore.img file-size=4M slot=r`)
	if got := fileSize(t, host); got != 4<<20 {
		t.Errorf("attach with a larger file-size left %d bytes, want %d", got, 4<<20)
	}
	if got := execErr(t, s, `/disk add type=file file-path=/storage-pool/restore.img slot=r2`); got != `failure: file "/storage-pool/restore.img" is already used by disk "r"` {
		t.Errorf("second disk on one file: %q", got)
	}
}

func TestDiskSlotAlreadyExists(t *testing.T) {
	s := newSim(t, Options{})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=pvc-x`)
	if got := execErr(t, s, `/disk add type=file file-path=/storage-pool/b.img file-size=1M slot=pvc-x`); got != `failure: disk with slot "pvc-x" already exists` {
		t.Errorf("got %q", got)
	}
	if _, err := os.Stat(s.HostPath("/storage-pool/b.img")); !os.IsNotExist(err) {
		t.Errorf("a refused add left its file behind: %v", err)
	}
}

func TestDiskPoolFull(t *testing.T) {
	s := newSim(t, Options{Pools: []Pool{{Name: "p", Size: 10 << 30}}, Width: -1})
	mustExec(t, s, `/disk add type=file file-path=/p/a.img file-size=6G slot=a`)
	if got := execErr(t, s, `/disk add type=file file-path=/p/b.img file-size=5G slot=b`); got != "failure: not enough space" {
		t.Errorf("add beyond the pool: %q", got)
	}
	if got := execErr(t, s, `/disk set a file-size=11G`); got != "failure: not enough space" {
		t.Errorf("grow beyond the pool: %q", got)
	}
	mustExec(t, s, `/disk add type=file file-path=/p/b.img file-size=4G slot=b`)
	out := mustExec(t, s, `/disk print detail where mount-point="p"`)
	if !strings.Contains(out, "free=0 ") || !strings.Contains(out, "use=100%") {
		t.Errorf("full pool:\n%s", out)
	}
	s.SetDiskFull(true)
	mustExec(t, s, `/disk remove b`)
	mustExec(t, s, `/file remove [find name="p/b.img"]`)
	if got := execErr(t, s, `/disk add type=file file-path=/p/c.img file-size=1M slot=c`); got != "failure: not enough space" {
		t.Errorf("DiskFull: %q", got)
	}
	s.SetDiskFull(false)
	mustExec(t, s, `/disk add type=file file-path=/p/c.img file-size=1M slot=c`)
}

func TestDiskGrow(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=1G slot=a nvme-tcp-export=yes`)
	mustExec(t, s, `/disk set [find slot="a"] file-size=2G`)
	if got := fileSize(t, s.HostPath("/storage-pool/a.img")); got != 2<<30 {
		t.Errorf("grown file has %d bytes", got)
	}
	if out := mustExec(t, s, `/disk print detail where slot=a`); !strings.Contains(out, "size=2 147 483 648 ") {
		t.Errorf("grown size not printed:\n%s", out)
	}
	if got := execErr(t, s, `/disk set a file-size=1G`); got != "failure: file-size can not be decreased (2048.0MiB to 1024.0MiB)" {
		t.Errorf("shrink: %q", got)
	}
	mustExec(t, s, `/disk set a file-size=2G`) // the same size again: nothing to do
}

// Like the hardware, /disk remove keeps the backing file; /file remove deletes it, and is
// refused while a disk still uses the file.
func TestDiskRemoveKeepsTheFile(t *testing.T) {
	s := newSim(t, Options{})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/metal-csi/a.img file-size=1M slot=a nvme-tcp-export=yes`)
	host := s.HostPath("/storage-pool/metal-csi/a.img")
	if got := execErr(t, s, `/file remove [find name="storage-pool/metal-csi/a.img"]`); got != `failure: file "storage-pool/metal-csi/a.img" is used by disk "a"` {
		t.Errorf("remove a file in use: %q", got)
	}
	mustExec(t, s, `/disk remove [find slot="a"]`)
	if _, err := os.Stat(host); err != nil {
		t.Errorf("/disk remove deleted the backing file: %v", err)
	}
	if out := mustExec(t, s, `/disk print detail where slot="a"`); strings.Contains(out, "slot=") {
		t.Errorf("disk still listed:\n%s", out)
	}
	mustExec(t, s, `/file remove [find name="storage-pool/metal-csi/a.img"]`)
	if _, err := os.Stat(host); !os.IsNotExist(err) {
		t.Errorf("/file remove left the file: %v", err)
	}
	if got := execErr(t, s, `/file remove [find name="storage-pool"]`); got != `failure: "storage-pool" is a disk, not a file` {
		t.Errorf("remove a pool: %q", got)
	}
	if err := os.WriteFile(s.HostPath("/storage-pool/metal-csi/keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := execErr(t, s, `/file remove [find name="storage-pool/metal-csi"]`); got != `failure: directory "storage-pool/metal-csi" is not empty` {
		t.Errorf("remove a non-empty directory: %q", got)
	}
}

// copy-from copies the other disk's settings, never its data: the new disk's file is new
// and empty. A snapshot design built on it (an earlier driver's) must fail its data tests.
func TestDiskCopyFromCopiesSettingsNotData(t *testing.T) {
	s := newSim(t, Options{Width: -1})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/src.img file-size=1M slot=src nvme-tcp-export=yes nvme-tcp-server-port=4421 nvme-tcp-server-allow-host-name="nqn.h1"`)
	pattern := bytes.Repeat([]byte("data"), 1024)
	if err := os.WriteFile(s.HostPath("/storage-pool/src.img"), pattern, 0o644); err != nil {
		t.Fatal(err)
	}
	mustExec(t, s, `/disk add copy-from=[find slot="src"] slot=dst file-path=/storage-pool/dst.img nvme-tcp-server-nqn="nqn.dst"`)
	out := mustExec(t, s, `/disk print detail where slot=dst`)
	for _, want := range []string{"nvme-tcp-export=yes", "nvme-tcp-server-port=4421", `allow-host-name="nqn.h1"`, "size=1 048 576 "} {
		if !strings.Contains(out, want) {
			t.Errorf("copy-from did not copy %s:\n%s", want, out)
		}
	}
	got, err := os.ReadFile(s.HostPath("/storage-pool/dst.img"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1<<20 || !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Errorf("copy-from's new file is not %d zero bytes (len %d): data was copied", 1<<20, len(got))
	}
	if got := execErr(t, s, `/disk add copy-from=src slot=dst2`); got != `failure: file "/storage-pool/src.img" is already used by disk "src"` {
		t.Errorf("copy-from onto the same file: %q", got)
	}
}

func TestDiskExportsLinks(t *testing.T) {
	s := newSim(t, Options{})
	link := filepath.Join(s.Dir(), ExportsDirName, "nqn.2000-02.com.mikrotik:pvc-a")
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/pvc-a.img file-size=1M slot=pvc-a nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a"`)
	if target, err := os.Readlink(link); err != nil || target != s.HostPath("/storage-pool/pvc-a.img") {
		t.Errorf("export link → %q, %v", target, err)
	}
	if got := execErr(t, s, `/disk add type=file file-path=/storage-pool/b.img file-size=1M slot=b nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a"`); got != `failure: nvme-tcp-server-nqn "nqn.2000-02.com.mikrotik:pvc-a" is already used by disk "pvc-a"` {
		t.Errorf("duplicate NQN: %q", got)
	}
	mustExec(t, s, `/disk set pvc-a nvme-tcp-export=no`)
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("unexported disk kept its link: %v", err)
	}
	mustExec(t, s, `/disk set pvc-a nvme-tcp-export=yes`)
	mustExec(t, s, `/disk remove pvc-a`)
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("removed disk kept its link: %v", err)
	}
	if out := mustExec(t, s, `/file print detail`); strings.Contains(out, ExportsDirName) {
		t.Errorf("/file print shows the simulator's exports directory:\n%s", out)
	}
}

// Before RouterOS 7.21 nvme-tcp-server-nqn does not exist: add rejects it, print omits it
// and the subsystem NQN is the slot.
func TestDiskBefore721(t *testing.T) {
	s := newSim(t, Options{Version: "7.20.1", Width: -1})
	line := `/disk add type=file file-path=/storage-pool/pvc-a.img file-size=1M slot=pvc-a nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a"`
	if got, want := execErr(t, s, line), "expected end of command (line 1 column 125)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	mustExec(t, s, strings.TrimSuffix(line, ` nvme-tcp-server-nqn="nqn.2000-02.com.mikrotik:pvc-a"`))
	out := mustExec(t, s, `/disk print detail where slot=pvc-a`)
	if strings.Contains(out, "nvme-tcp-server-nqn") || !strings.Contains(out, "nvme-tcp-server-port=4420 nvme-tcp-server-allow-host-name") {
		t.Errorf("7.20 print:\n%s", out)
	}
	if _, err := os.Readlink(filepath.Join(s.Dir(), ExportsDirName, "pvc-a")); err != nil {
		t.Errorf("export not named by the slot: %v", err)
	}
	if got := execErr(t, s, `/disk set pvc-a nvme-tcp-server-nqn="x"`); got != "expected end of command (line 1 column 17)" {
		t.Errorf("set nqn on 7.20: %q", got)
	}
}
