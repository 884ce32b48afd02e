//go:build e2e

package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/internal/testenv"
	"srvlab.io/rds-csi/internal/vmsys"
)

// env is the running system under test: the simulated RDS, the first node (which also
// serves the controller), and the unmanaged subsystem that is older than all of them.
type env struct {
	work           string
	csiBin, simBin string
	keyFile        string // the driver's SSH private key
	knownHosts     string
	cluster        *clusterAPI
	kubeconfig     string
	sim            *simProcess
	node1          *driver // --mode=all: controller and node e2e-node-1
	sanityDriver   *driver // --mode=all for csi-sanity's volumes
	unmanaged      *unmanagedVar
	drivers        []*driver // every driver started, for logs
}

// setUp checks the prerequisites, then brings the system up in the order a diskless node
// meets it: the node's own /var over NVMe/TCP first, then the RDS, then the driver.
func setUp(t *testing.T) *env {
	e := &env{work: *flagWork}
	start, up := time.Now(), false
	defer func() {
		if t.Skipped() {
			return
		}
		results.add("environment: unmanaged /var, rds-sim --nvmet, rds-csi --mode=all", up, time.Since(start))
		if !up {
			e.showLogs(t)
		}
	}()
	e.checkPrerequisites(t)
	t.Cleanup(e.tearDown)
	if err := os.MkdirAll(e.work, 0o755); err != nil {
		t.Fatal(err)
	}
	e.writeKeys(t)
	e.cluster = startClusterAPI(t)
	e.kubeconfig = e.cluster.kubeconfig(t, e.work)
	id := e.writeIdentity(t, "e2e-node-1")
	e.unmanaged = connectUnmanaged(t, e.work, id)
	e.unmanaged.check(t, "before the driver starts")
	e.sim = e.startSim(t)
	e.node1 = e.newDriver("e2e-node-1", "all")
	e.node1.start(t)
	if got := e.node1.identity(t); got != id {
		t.Fatalf("node 1 rewrote the host's NVMe identity: %+v, was %+v", got, id)
	}
	e.unmanaged.check(t, "after the driver started")
	up = true
	return e
}

// checkPrerequisites fails (CI, the VM runner) or skips (elsewhere) when the suite cannot
// run here, naming everything that is missing.
func (e *env) checkPrerequisites(t *testing.T) {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (mounts, mkfs, /dev/nvme-fabrics)")
	}
	for _, p := range []string{"/dev/nvme-fabrics", "/sys/kernel/config/nvmet/subsystems"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p+" (the kernel's nvme-tcp and nvmet: run inside test/vm/run-e2e.sh)")
		}
	}
	dir := *flagBinDir
	if dir == "" {
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Dir(self)
	}
	e.csiBin, e.simBin = filepath.Join(dir, "rds-csi"), filepath.Join(dir, "rds-sim")
	for _, b := range []string{e.csiBin, e.simBin} {
		if st, err := os.Stat(b); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b+" (pass it to the VM with run-in-vm.sh -a, or set -e2e.bin)")
		}
	}
	for _, tool := range []string{"mkfs.ext4", "mkfs.xfs", "blkid", "nvmet-export", "nvmet-port-down", "nvmet-port-up"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	testenv.Missing(t, fmt.Sprintf("end-to-end prerequisites missing: %q", missing), vmRunner)
}

// writeKeys makes the driver's SSH client key, the simulator's host key, authorized_keys
// and a known_hosts file pinning the host key, as an operator would.
func (e *env) writeKeys(t *testing.T) {
	dir := filepath.Join(e.work, "keys")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	client := writeKey(t, filepath.Join(dir, "id_ed25519"))
	host := writeKey(t, filepath.Join(dir, "host_ed25519"))
	e.keyFile = filepath.Join(dir, "id_ed25519")
	e.knownHosts = filepath.Join(dir, "known_hosts")
	writeFile(t, filepath.Join(dir, "authorized_keys"), string(ssh.MarshalAuthorizedKey(client)))
	writeFile(t, e.knownHosts, knownhosts.Line([]string{knownhosts.Normalize(simListen)}, host)+"\n")
}

func writeKey(t *testing.T, path string) ssh.PublicKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostIdentity is a node's NVMe host identity, as in /etc/nvme.
type hostIdentity struct{ HostNQN, HostID string }

// writeIdentity gives a node the /etc/nvme a provisioned host has, before anything runs.
func (e *env) writeIdentity(t *testing.T, node string) hostIdentity {
	dir := filepath.Join(e.work, node, "nvme")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	u := make([]byte, 16)
	if _, err := rand.Read(u); err != nil {
		t.Fatal(err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	hostID := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	id := hostIdentity{HostNQN: "nqn.2014-08.org.nvmexpress:uuid:" + hostID, HostID: hostID}
	writeFile(t, filepath.Join(dir, "hostnqn"), id.HostNQN+"\n")
	writeFile(t, filepath.Join(dir, "hostid"), id.HostID+"\n")
	return id
}

// shutdown stops the driver and the simulator gracefully: the driver must exit 0 and
// leave the unmanaged subsystem (checked by step) connected and mounted.
func (e *env) shutdown(t *testing.T) {
	for _, d := range e.drivers {
		if d.running() {
			d.stop(t)
		}
	}
	if e.sim != nil {
		e.sim.stop(t)
		e.sim = nil
	}
	// Every volume of the suite was deleted and the simulator has stopped: no managed
	// subsystem may remain, in the target or on the host.
	for _, s := range nvmetSubsystems() {
		if s != varNQN {
			t.Errorf("nvmet subsystem %s is left after the simulator stopped", s)
		}
	}
	for _, c := range vmsys.Controllers() {
		if c.SubsysNQN != varNQN {
			t.Errorf("host controller %s (%s, %s) is left after every volume was deleted", c.Name, c.SubsysNQN, c.State)
		}
	}
}

// tearDown stops whatever still runs after a failed suite and lets go of what a failure
// left behind, so the VM can sync and power off instead of waiting on I/O queued for a
// deleted volume (best effort, bounded): managed controllers first (their queued I/O then
// fails instead of waiting forever), then lazy unmounts under the suite's directory.
func (e *env) tearDown() {
	for _, d := range e.drivers {
		if d.running() {
			d.signalAndWait(os.Kill, 10*time.Second)
		}
	}
	if e.sim != nil {
		e.sim.signalAndWait(os.Kill, 10*time.Second)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range vmsys.Controllers() {
			if c.SubsysNQN != varNQN {
				dir := filepath.Join("/sys/class/nvme", c.Name)
				_ = os.WriteFile(filepath.Join(dir, "ctrl_loss_tmo"), []byte("0"), 0)
				_ = os.WriteFile(filepath.Join(dir, "delete_controller"), []byte("1"), 0)
			}
		}
		mounts, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(unescape(f[4]), e.work+"/") && unescape(f[4]) != e.unmanagedMount() {
				_ = unix.Unmount(unescape(f[4]), unix.MNT_DETACH)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		fmt.Println("e2e: tear-down still blocked after 30s; leaving the rest to the VM's end")
	}
}

func (e *env) unmanagedMount() string {
	if e.unmanaged == nil {
		return ""
	}
	return e.unmanaged.mnt
}
