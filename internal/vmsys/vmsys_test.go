package vmsys

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	pvc1 = "nqn.2000-02.com.mikrotik:pvc-1"
	pvc2 = "nqn.2000-02.com.mikrotik:pvc-2"
	vvar = "nqn.2024-01.io.nixos:var"
)

// fakeSys lays out a sysfs and /dev tree under a temporary root, as the kernel shows
// controllers and disks, and points the package at it.
type fakeSys struct {
	t    *testing.T
	root string
}

func newFakeSys(t *testing.T) *fakeSys {
	f := &fakeSys{t: t, root: t.TempDir()}
	was := root
	root = f.root
	t.Cleanup(func() { root = was })
	return f
}

func (f *fakeSys) write(rel, content string) {
	f.t.Helper()
	path := filepath.Join(f.root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSys) controller(name, nqn, state, traddr string) {
	dir := "sys/class/nvme/" + name + "/"
	f.write(dir+"subsysnqn", nqn+"\n")
	f.write(dir+"state", state+"\n")
	f.write(dir+"hostnqn", "nqn.2014-08.org.nvmexpress:uuid:host\n")
	f.write(dir+"address", "traddr="+traddr+",trsvcid=4420,src_addr=127.0.0.1\n")
}

// disk makes a disk in /sys/block with its /dev node, below the sysfs directory parent
// (a subsystem's or, with nvme_core.multipath=N, a controller's).
func (f *fakeSys) disk(parent, name, majmin string) {
	f.write(filepath.Join(parent, name, "size"), "131072\n")
	f.write("sys/block/"+name+"/dev", majmin+"\n")
	f.write("dev/"+name, "")
}

func TestAttr(t *testing.T) {
	f := newFakeSys(t)
	f.write("sys/module/nvme_core/parameters/multipath", "Y\n")
	if got := Attr(filepath.Join(f.root, "sys/module/nvme_core/parameters/multipath")); got != "Y" {
		t.Errorf("Attr = %q, want Y without the newline", got)
	}
	missing := filepath.Join(f.root, "sys/class/nvme/nvme9/state")
	if got := Attr(missing); !strings.HasPrefix(got, "<") || !strings.Contains(got, missing) || !strings.HasSuffix(got, ">") {
		t.Errorf("Attr of a missing file = %q, want <the error naming it>", got)
	}
}

func TestControllers(t *testing.T) {
	f := newFakeSys(t)
	f.controller("nvme0", vvar, "live", "127.0.0.1")
	f.controller("nvme1", pvc1, "live", "127.0.0.1")
	f.controller("nvme2", pvc1, "connecting", "127.0.0.2")
	f.controller("nvme3", pvc2, "deleting", "127.0.0.1")

	if got := fmt.Sprint(ControllerNames(pvc1)); got != "[nvme1 nvme2]" {
		t.Errorf("ControllerNames(pvc-1) = %s", got)
	}
	if got := ControllerNames("nqn.2000-02.com.mikrotik:pvc-none"); len(got) != 0 {
		t.Errorf("ControllerNames of a subsystem without controllers = %v", got)
	}
	want := []Controller{{Name: "nvme1", SubsysNQN: pvc1, State: "live", HostNQN: "nqn.2014-08.org.nvmexpress:uuid:host",
		Address: "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1"}}
	if got := ControllersOf(pvc1); len(got) != 2 || got[0] != want[0] || got[1].State != "connecting" {
		t.Errorf("ControllersOf(pvc-1) = %+v, want %+v and nvme2 connecting", got, want[0])
	}
	var names []string
	for _, c := range Controllers() {
		names = append(names, c.Name+"="+c.SubsysNQN)
	}
	if got := strings.Join(names, " "); got != "nvme0="+vvar+" nvme1="+pvc1+" nvme2="+pvc1+" nvme3="+pvc2 {
		t.Errorf("Controllers = %s", got)
	}
	for _, tc := range []struct{ address, want string }{
		{"traddr=127.0.0.2,trsvcid=4420,src_addr=127.0.0.1", "127.0.0.2"},
		{"trsvcid=4420,traddr=10.0.0.1", "10.0.0.1"},
		{"trsvcid=4420", ""},
		{"<open /sys/class/nvme/nvme9/address: no such file or directory>", ""},
	} {
		if got := (Controller{Address: tc.address}).Traddr(); got != tc.want {
			t.Errorf("Traddr of %q = %q, want %q", tc.address, got, tc.want)
		}
	}
}

func TestLiveDisk(t *testing.T) {
	for _, tc := range []struct {
		name                string
		lay                 func(f *fakeSys)
		wantName, wantMajor string
	}{
		{"the multipath head, not a hidden per-path disk", func(f *fakeSys) {
			f.controller("nvme1", pvc1, "live", "127.0.0.1")
			f.write("sys/class/nvme-subsystem/nvme-subsys1/subsysnqn", pvc1+"\n")
			f.disk("sys/class/nvme-subsystem/nvme-subsys1", "nvme1c1n1", "259:0")
			f.disk("sys/class/nvme-subsystem/nvme-subsys1", "nvme1n1", "259:1")
		}, "nvme1n1", "259:1"},
		{"one live path of two is enough", func(f *fakeSys) {
			f.controller("nvme1", pvc1, "connecting", "127.0.0.1")
			f.controller("nvme2", pvc1, "live", "127.0.0.2")
			f.write("sys/class/nvme-subsystem/nvme-subsys1/subsysnqn", pvc1+"\n")
			f.disk("sys/class/nvme-subsystem/nvme-subsys1", "nvme1n1", "259:1")
		}, "nvme1n1", "259:1"},
		{"nvme_core.multipath=N: the disk under the controller", func(f *fakeSys) {
			f.controller("nvme1", pvc1, "live", "127.0.0.1")
			f.write("sys/class/nvme-subsystem/nvme-subsys1/subsysnqn", pvc1+"\n")
			f.disk("sys/class/nvme/nvme1", "nvme1n1", "259:4")
		}, "nvme1n1", "259:4"},
		{"another subsystem's disk", func(f *fakeSys) {
			f.controller("nvme1", pvc1, "live", "127.0.0.1")
			f.write("sys/class/nvme-subsystem/nvme-subsys1/subsysnqn", pvc2+"\n")
			f.disk("sys/class/nvme-subsystem/nvme-subsys1", "nvme1n1", "259:1")
		}, "", ""},
		{"no live controller", func(f *fakeSys) {
			f.controller("nvme1", pvc1, "connecting", "127.0.0.1")
			f.write("sys/class/nvme-subsystem/nvme-subsys1/subsysnqn", pvc1+"\n")
			f.disk("sys/class/nvme-subsystem/nvme-subsys1", "nvme1n1", "259:1")
		}, "", ""},
		{"no /dev node yet", func(f *fakeSys) {
			f.controller("nvme1", pvc1, "live", "127.0.0.1")
			f.write("sys/class/nvme-subsystem/nvme-subsys1/subsysnqn", pvc1+"\n")
			f.disk("sys/class/nvme-subsystem/nvme-subsys1", "nvme1n1", "259:1")
			if err := os.Remove(filepath.Join(f.root, "dev/nvme1n1")); err != nil {
				t.Fatal(err)
			}
		}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeSys(t)
			tc.lay(f)
			name, majmin, ok := LiveDisk(pvc1)
			if name != tc.wantName || majmin != tc.wantMajor || ok != (tc.wantName != "") {
				t.Errorf("LiveDisk = %q, %q, %v; want %q, %q", name, majmin, ok, tc.wantName, tc.wantMajor)
			}
		})
	}
}
