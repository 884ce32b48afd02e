package sim

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeConfigfs is a plain directory laid out like /sys/kernel/config/nvmet after
// `modprobe nvmet`; with vmPort it also holds the nvmf-vm guest's own port 1 (127.0.0.1:4420).
func fakeConfigfs(t *testing.T, vmPort bool) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "nvmet")
	for _, d := range []string{"subsystems", "ports", "hosts"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if vmPort {
		p := filepath.Join(root, "ports", "1")
		if err := os.MkdirAll(filepath.Join(p, "subsystems"), 0o755); err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{"addr_trtype": "tcp\n", "addr_adrfam": "ipv4\n", "addr_traddr": "127.0.0.1\n", "addr_trsvcid": "4420\n"} {
			if err := os.WriteFile(filepath.Join(p, k), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

func attr(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Errorf("read %s: %v", rel, err)
		return ""
	}
	return strings.TrimSpace(string(b))
}

func linkTarget(t *testing.T, root, rel string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(root, rel))
	if err != nil {
		t.Errorf("readlink %s: %v", rel, err)
	}
	return target
}

func gone(t *testing.T, root, rel string) {
	t.Helper()
	if _, err := os.Lstat(filepath.Join(root, rel)); !os.IsNotExist(err) {
		t.Errorf("%s still exists (%v)", rel, err)
	}
}

func TestNVMetNeedsConfigfs(t *testing.T) {
	_, err := New(Options{Dir: t.TempDir(), NVMet: true, ConfigfsRoot: filepath.Join(t.TempDir(), "nvmet")})
	if err == nil || !strings.Contains(err.Error(), "modprobe nvmet nvmet-tcp") {
		t.Fatalf("New without configfs: %v; want an error that says how to fix it", err)
	}
}

func TestNVMetExportLifecycle(t *testing.T) {
	root := fakeConfigfs(t, true)
	s := newSim(t, Options{NVMet: true, ConfigfsRoot: root, NVMeAddress: "127.0.0.1"})
	const nqn = "nqn.2000-02.com.mikrotik:pvc-a"
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/pvc-a.img file-size=1G slot=pvc-a nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn="`+nqn+`"`)
	sub := "subsystems/" + nqn
	if got := attr(t, root, sub+"/attr_allow_any_host"); got != "1" {
		t.Errorf("attr_allow_any_host = %q", got)
	}
	if got := attr(t, root, sub+"/namespaces/1/device_path"); got != s.HostPath("/storage-pool/pvc-a.img") {
		t.Errorf("device_path = %q", got)
	}
	if got := attr(t, root, sub+"/namespaces/1/enable"); got != "1" {
		t.Errorf("enable = %q", got)
	}
	// The guest's existing 127.0.0.1:4420 port is reused, not duplicated.
	if got := linkTarget(t, root, "ports/1/subsystems/"+nqn); got != filepath.Join(root, sub) {
		t.Errorf("port link → %q", got)
	}
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/pvc-b.img file-size=1G slot=pvc-b nvme-tcp-export=yes nvme-tcp-server-port=4421`)
	for k, want := range map[string]string{"addr_trtype": "tcp", "addr_adrfam": "ipv4", "addr_traddr": "127.0.0.1", "addr_trsvcid": "4421"} {
		if got := attr(t, root, "ports/2/"+k); got != want {
			t.Errorf("new port %s = %q, want %q", k, got, want)
		}
	}
	linkTarget(t, root, "ports/2/subsystems/pvc-b") // 7.21+ without an NQN: the slot names it

	mustExec(t, s, `/disk set [find slot="pvc-a"] file-size=2G`)
	if got := attr(t, root, sub+"/namespaces/1/revalidate_size"); got != "1" {
		t.Errorf("grow did not revalidate the namespace size: %q", got)
	}

	const host = "nqn.2014-08.org.nvmexpress:uuid:0f0e0d0c-0b0a-0908-0706-050403020100"
	mustExec(t, s, `/disk set [find slot="pvc-a"] nvme-tcp-server-allow-host-name="`+host+`"`)
	if got := attr(t, root, sub+"/attr_allow_any_host"); got != "0" {
		t.Errorf("with an allow-list attr_allow_any_host = %q", got)
	}
	if got := linkTarget(t, root, sub+"/allowed_hosts/"+host); got != filepath.Join(root, "hosts", host) {
		t.Errorf("allowed host link → %q", got)
	}
	mustExec(t, s, `/disk set [find slot="pvc-a"] nvme-tcp-server-allow-host-name=""`)
	if got := attr(t, root, sub+"/attr_allow_any_host"); got != "1" {
		t.Errorf("cleared allow-list: attr_allow_any_host = %q", got)
	}
	gone(t, root, sub+"/allowed_hosts/"+host)
	gone(t, root, "hosts/"+host)

	mustExec(t, s, `/disk remove [find slot="pvc-a"]`)
	gone(t, root, "ports/1/subsystems/"+nqn)
	gone(t, root, sub)
	if _, err := os.Stat(filepath.Join(root, "ports/1")); err != nil {
		t.Errorf("the guest's own port was removed: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	gone(t, root, "subsystems/pvc-b")
	gone(t, root, "ports/2") // made by the simulator, unused now
}

// TestNVMetExportOnTwoAddresses: an RDS with a storage port on each network exports every
// disk on each address (the node's multipath), and takes down both ports it made.
func TestNVMetExportOnTwoAddresses(t *testing.T) {
	root := fakeConfigfs(t, false)
	s := newSim(t, Options{NVMet: true, ConfigfsRoot: root, NVMeAddress: "127.0.0.1,127.0.0.2"})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a nvme-tcp-export=yes`)
	for port, addr := range map[string]string{"1": "127.0.0.1", "2": "127.0.0.2"} {
		if got := attr(t, root, "ports/"+port+"/addr_traddr"); got != addr {
			t.Errorf("port %s traddr = %q, want %s", port, got, addr)
		}
		if got := attr(t, root, "ports/"+port+"/addr_trsvcid"); got != "4420" {
			t.Errorf("port %s trsvcid = %q, want 4420", port, got)
		}
		if got := linkTarget(t, root, "ports/"+port+"/subsystems/a"); got != filepath.Join(root, "subsystems/a") {
			t.Errorf("port %s link → %q", port, got)
		}
	}
	mustExec(t, s, `/disk set a nvme-tcp-export=no`)
	for _, p := range []string{"subsystems/a", "ports/1", "ports/2"} {
		gone(t, root, p)
	}
}

func TestNVMetBadAddress(t *testing.T) {
	for _, a := range []string{"rds.lan", "127.0.0.1,", "fd00::1"} {
		if _, err := New(Options{Dir: t.TempDir(), NVMeAddress: a}); err == nil || !strings.Contains(err.Error(), "not an IPv4 address") {
			t.Errorf("NVMeAddress %q: %v; want it refused", a, err)
		}
	}
}

func TestNVMetExportWithHostsFromTheStart(t *testing.T) {
	root := fakeConfigfs(t, false)
	s := newSim(t, Options{NVMet: true, ConfigfsRoot: root, NVMeAddress: "10.0.0.5"})
	mustExec(t, s, `/disk add type=file file-path=/storage-pool/a.img file-size=1M slot=a nvme-tcp-export=yes nvme-tcp-server-allow-host-name="nqn.h1,nqn.h2"`)
	if got := attr(t, root, "subsystems/a/attr_allow_any_host"); got != "0" {
		t.Errorf("attr_allow_any_host = %q", got)
	}
	linkTarget(t, root, "subsystems/a/allowed_hosts/nqn.h1")
	linkTarget(t, root, "subsystems/a/allowed_hosts/nqn.h2")
	if got := attr(t, root, "ports/1/addr_traddr"); got != "10.0.0.5" {
		t.Errorf("traddr = %q", got)
	}
	mustExec(t, s, `/disk set a nvme-tcp-export=no`)
	for _, p := range []string{"subsystems/a", "hosts/nqn.h1", "hosts/nqn.h2", "ports/1"} {
		gone(t, root, p)
	}
}

// An export nvmet refuses undoes everything: no disk, no file, no exports link. A
// subsystem the simulator did not make is never taken over nor removed.
func TestNVMetFailedExportRollsBack(t *testing.T) {
	root := fakeConfigfs(t, false)
	s := newSim(t, Options{NVMet: true, ConfigfsRoot: root})
	foreign := filepath.Join(root, "subsystems", "nqn.2024-01.io.nvmf-vm:vol1")
	if err := os.MkdirAll(filepath.Join(foreign, "namespaces", "1"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := execErr(t, s, `/disk add type=file file-path=/storage-pool/bad.img file-size=1M slot=bad nvme-tcp-export=yes nvme-tcp-server-nqn="nqn.2024-01.io.nvmf-vm:vol1"`)
	if !strings.HasPrefix(got, `failure: export "bad": nvmet subsystem nqn.2024-01.io.nvmf-vm:vol1 exists and was not made by this simulator`) {
		t.Errorf("got %q", got)
	}
	if _, err := os.Stat(filepath.Join(foreign, "namespaces", "1")); err != nil {
		t.Errorf("the foreign subsystem was touched: %v", err)
	}
	if out := mustExec(t, s, `/disk print detail where slot=bad`); strings.Contains(out, "slot=") {
		t.Errorf("disk listed after a failed export:\n%s", out)
	}
	if _, err := os.Stat(s.HostPath("/storage-pool/bad.img")); !os.IsNotExist(err) {
		t.Errorf("file left after a failed export: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), ExportsDirName, "nqn.2024-01.io.nvmf-vm:vol1")); !os.IsNotExist(err) {
		t.Errorf("exports link left after a failed export: %v", err)
	}
}
