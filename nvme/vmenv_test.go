//go:build vmtest

// The VM tests' environment: nvmet exports, mounts, and the unmanaged /var subsystem
// that must survive everything. What the kernel says they read through vmsys, straight
// from sysfs, independent of the code under test.

package nvme

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/vmsys"
)

const (
	vmPrefix = "nqn.2000-02.com.mikrotik:pvc-"
	vmPVC1   = vmPrefix + "1"
	vmPVC10  = vmPrefix + "10"
	vmPVC2   = vmPrefix + "2" // on its own port: its outage lasts past ctrl_loss_tmo
	vmPVC3   = vmPrefix + "3"
	vmMulti  = vmPrefix + "multi" // namespaces 3 and 9
	vmGrow   = vmPrefix + "grow"
	vmVar    = "nqn.2024-01.io.nixos:var" // the node's own /var: never ours
	vmLocal  = "127.0.0.1"
	port1    = 4420 // nvmet port 1
	port2    = 4421 // nvmet port 2
	portVar  = 4428 // nvmet port 9
)

// unmanagedVar is the nixos-style /var subsystem, connected by "someone else" before the
// driver starts, with its filesystem mounted.
type unmanagedVar struct {
	ctrl, disk, dev, mnt string
	settings             map[string]string
}

func requireVM(t testing.TB) {
	t.Helper()
	if os.Getenv("RDS_CSI_VM") != "1" {
		t.Fatal("the vmtest tests run only inside the test VM: use test/vm/run-nvme-tests.sh")
	}
	if _, err := os.Stat("/dev/nvme-fabrics"); err != nil {
		t.Fatalf("no /dev/nvme-fabrics in the VM: %v", err)
	}
}

// sh runs a command with a deadline and fails the test on error.
func sh(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := shErr(timeout, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func shErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// export makes nvmet export a file-backed namespace (once: an enabled namespace cannot
// be re-exported).
func export(t testing.TB, nqn string, size string, nsid, nvmetPort int) {
	t.Helper()
	if vmsys.Attr(fmt.Sprintf("/sys/kernel/config/nvmet/subsystems/%s/namespaces/%d/enable", nqn, nsid)) == "1" {
		return
	}
	sh(t, 10*time.Second, "nvmet-export", nqn, backingFile(nqn, nsid), size, fmt.Sprint(nsid), fmt.Sprint(nvmetPort))
}

func backingFile(nqn string, nsid int) string {
	return fmt.Sprintf("/srv/nvmet/%s-%d.img", strings.ReplaceAll(nqn, ":", "_"), nsid)
}

// waitFor polls cond every 5 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if cond() {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cond()
}

// mounted reports whether a filesystem of block device maj:min is mounted.
func mounted(t testing.TB, major, minor uint32) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", major, minor)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 2 && fields[2] == want {
			return true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return false
}

func mkfsMount(t testing.TB, dev, dir string) {
	t.Helper()
	sh(t, 60*time.Second, "mkfs.ext4", "-q", "-F", dev)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s %s: %v", dev, dir, err)
	}
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func newVMHost(t testing.TB) *Host {
	t.Helper()
	g, err := NewGuard(vmPrefix)
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHost(Config{Guard: g, Logger: slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// traceConnect makes h report the stages of a connect the VM tests time: "write" and
// "written" around the connect write to /dev/nvme-fabrics, "resolved" when a disk's
// device node checks out (which ends the wait for the disk). It wraps h's seams for the
// kernel; restore puts them back.
func traceConnect(h *Host, mark func(stage string, at time.Time)) (restore func()) {
	fab, stat := h.fab, h.statRdev
	h.fab = tracedFabrics{fabrics: fab, mark: mark}
	h.statRdev = func(path string) (uint64, error) {
		rdev, err := stat(path)
		if err == nil {
			mark("resolved", time.Now())
		}
		return rdev, err
	}
	return func() { h.fab, h.statRdev = fab, stat }
}

// tracedFabrics marks the start and the return of each connect write. It runs in
// withDeadline's goroutine, whose result the caller receives after the marks.
type tracedFabrics struct {
	fabrics
	mark func(stage string, at time.Time)
}

func (f tracedFabrics) connect(opts string) (string, error) {
	f.mark("write", time.Now())
	defer func() { f.mark("written", time.Now()) }()
	return f.fabrics.connect(opts)
}

// connectVar connects the unmanaged /var subsystem with a raw fabrics write, as the
// node's initrd would, with the same host identity the driver uses; then mounts it.
func connectVar(t *testing.T, h *Host) unmanagedVar {
	t.Helper()
	export(t, vmVar, "64M", 1, 9)
	id := h.Identity()
	opts := fmt.Sprintf("transport=tcp,traddr=%s,trsvcid=%d,nqn=%s,hostnqn=%s,hostid=%s,ctrl_loss_tmo=-1,reconnect_delay=1",
		vmLocal, portVar, vmVar, id.HostNQN, id.HostID)
	reply, err := devFabrics{path: "/dev/nvme-fabrics"}.connect(opts)
	if err != nil {
		t.Fatalf("raw connect of %s: %v", vmVar, err)
	}
	var inst, cntlid int
	fmt.Sscanf(reply, "instance=%d,cntlid=%d", &inst, &cntlid)
	v := unmanagedVar{ctrl: fmt.Sprintf("nvme%d", inst), mnt: "/mnt/var"}
	// Find its disk the way an initrd script would: any usable disk of its subsystem.
	ok := waitFor(5*time.Second, func() bool {
		matches, _ := filepath.Glob("/sys/class/nvme-subsystem/*/nvme*n*")
		matches2, _ := filepath.Glob("/sys/class/nvme/" + v.ctrl + "/nvme*n*")
		for _, m := range append(matches, matches2...) {
			name := filepath.Base(m)
			if !isDiskName(name) || vmsys.Attr(filepath.Join(filepath.Dir(m), "subsysnqn")) != vmVar {
				continue
			}
			// The /dev node and /sys/block's link appear separately: wait for both, or the
			// device number read below can come back empty.
			dev := vmsys.Attr("/sys/block/" + name + "/dev")
			if _, err := os.Stat("/dev/" + name); err == nil && dev != "" && !strings.HasPrefix(dev, "<") {
				v.disk, v.dev = name, dev
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("the disk of %s never appeared", vmVar)
	}
	mkfsMount(t, "/dev/"+v.disk, v.mnt)
	if err := writeSync(v.mnt+"/etc-machine-id", []byte("var survives\n")); err != nil {
		t.Fatal(err)
	}
	v.settings = varSettings(v.ctrl)
	t.Logf("unmanaged %s: controller %s, disk %s (%s), mounted on %s, settings %v", vmVar, v.ctrl, v.disk, v.dev, v.mnt, v.settings)
	return v
}

func varSettings(ctrl string) map[string]string {
	m := map[string]string{}
	for _, a := range []string{"state", "subsysnqn", "ctrl_loss_tmo", "reconnect_delay", "fast_io_fail_tmo", "cntlid", "hostnqn"} {
		m[a] = vmsys.Attr(filepath.Join("/sys/class/nvme", ctrl, a))
	}
	return m
}

// checkVar proves the unmanaged subsystem is exactly as it was and its filesystem works.
func checkVar(t *testing.T, v unmanagedVar) {
	t.Helper()
	if got := varSettings(v.ctrl); fmt.Sprint(got) != fmt.Sprint(v.settings) {
		t.Errorf("unmanaged controller %s changed: %v, was %v", v.ctrl, got, v.settings)
	}
	if got := vmsys.Attr("/sys/block/" + v.disk + "/dev"); got != v.dev {
		t.Errorf("unmanaged disk %s is now %q, was %q", v.disk, got, v.dev)
	}
	if b, err := os.ReadFile(v.mnt + "/etc-machine-id"); err != nil || string(b) != "var survives\n" {
		t.Errorf("unmanaged /var unreadable: %q, %v", b, err)
	}
	if err := writeSync(v.mnt+"/still-writable", []byte("yes")); err != nil {
		t.Errorf("unmanaged /var not writable: %v", err)
	}
}
