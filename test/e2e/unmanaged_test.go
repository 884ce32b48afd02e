//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/vmsys"
)

const (
	// varNQN is a diskless NixOS node's own /var, served by the same storage but not a
	// volume of this driver: outside the managed prefix, it must never be touched.
	varNQN = "nqn.2024-01.io.nixos:var"
	// varPort is its own nvmet port (127.0.0.1:4428), so that the scenarios' target
	// outages on the simulator's port do not reach it.
	varPort   = "9"
	varSvc    = "4428"
	varMarker = "machine-id"
)

// unmanagedVar is /var: connected with a raw fabrics write by "the initrd", with the node's
// host identity, before any driver runs; ext4 mounted, a file held open.
type unmanagedVar struct {
	ctrl, disk, majmin, mnt string
	settings                map[string]string
	open                    *os.File // like a daemon's log file on /var
	content                 string
}

func connectUnmanaged(t *testing.T, work string, id hostIdentity) *unmanagedVar {
	sh(t, 10*time.Second, "nvmet-export", varNQN, "/srv/nvmet/nixos-var.img", "64M", "1", varPort)
	opts := fmt.Sprintf("transport=tcp,traddr=%s,trsvcid=%s,nqn=%s,hostnqn=%s,hostid=%s,ctrl_loss_tmo=-1,reconnect_delay=2",
		nvmeAddress, varSvc, varNQN, id.HostNQN, id.HostID)
	reply := fabricsConnect(t, opts)
	var inst, cntlid int
	if _, err := fmt.Sscanf(reply, "instance=%d,cntlid=%d", &inst, &cntlid); err != nil {
		t.Fatalf("fabrics reply %q: %v", reply, err)
	}
	v := &unmanagedVar{ctrl: fmt.Sprintf("nvme%d", inst), mnt: filepath.Join(work, "var")}
	if !waitFor(10*time.Second, func() bool {
		var ok bool
		v.disk, v.majmin, ok = vmsys.LiveDisk(varNQN)
		return ok
	}) {
		t.Fatalf("the disk of %s never appeared", varNQN)
	}
	dev := "/dev/" + v.disk
	sh(t, 60*time.Second, "mkfs.ext4", "-q", "-F", dev)
	if err := os.MkdirAll(v.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, v.mnt, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s on %s: %v", dev, v.mnt, err)
	}
	v.content = "var of " + id.HostNQN + "\n"
	writeSync(t, filepath.Join(v.mnt, varMarker), []byte(v.content))
	f, err := os.OpenFile(filepath.Join(v.mnt, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	v.open = f
	v.settings = v.read()
	t.Logf("unmanaged %s: controller %s, disk %s (%s) on %s, %v", varNQN, v.ctrl, v.disk, v.majmin, v.mnt, v.settings)
	return v
}

// fabricsConnect writes one connect string to /dev/nvme-fabrics and reads the reply from
// the same descriptor, as an initrd script does.
func fabricsConnect(t testing.TB, opts string) string {
	t.Helper()
	f, err := os.OpenFile("/dev/nvme-fabrics", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(opts); err != nil {
		t.Fatalf("connect %q: %v", opts, err)
	}
	buf := make([]byte, 256)
	n, err := f.Read(buf)
	if err != nil {
		t.Fatalf("read the fabrics reply: %v", err)
	}
	return strings.TrimSpace(string(buf[:n]))
}

// read is everything about the controller and its disk that nobody but its owner may change.
func (v *unmanagedVar) read() map[string]string {
	m := map[string]string{"disk": vmsys.Attr(filepath.Join("/sys/block", v.disk, "dev"))}
	for _, a := range []string{"state", "subsysnqn", "hostnqn", "hostid", "cntlid", "address", "ctrl_loss_tmo", "reconnect_delay", "fast_io_fail_tmo", "kato"} {
		m[a] = vmsys.Attr(filepath.Join("/sys/class/nvme", v.ctrl, a))
	}
	return m
}

// check proves /var is exactly as its owner left it and still works: same controller and
// settings, same disk, mounted once and writable, its data intact, the open file usable.
func (v *unmanagedVar) check(t *testing.T, when string) {
	t.Helper()
	if got := v.read(); fmt.Sprint(got) != fmt.Sprint(v.settings) {
		t.Errorf("%s: unmanaged controller %s changed: %v, was %v", when, v.ctrl, got, v.settings)
	}
	ms := mountsAt(t, v.mnt)
	if len(ms) != 1 || ms[0].majmin != v.majmin || ms[0].readOnly() {
		t.Errorf("%s: unmanaged /var mounts at %s: %+v, want one writable mount of %s", when, v.mnt, ms, v.majmin)
	}
	if b, err := os.ReadFile(filepath.Join(v.mnt, varMarker)); err != nil || string(b) != v.content {
		t.Errorf("%s: unmanaged /var data: %q, %v", when, b, err)
	}
	if _, err := fmt.Fprintf(v.open, "%s\n", when); err != nil {
		t.Errorf("%s: write to the open file on /var: %v", when, err)
	} else if err := v.open.Sync(); err != nil {
		t.Errorf("%s: fsync on /var: %v", when, err)
	}
}
