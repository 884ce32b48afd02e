//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// process is a child the suite runs: its output goes to a log file that survives restarts
// (each start is marked), and its end is observed.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	state   *os.ProcessState
	starts  int
}

// launch starts argv with stdout and stderr appended to the log; onStdout, if set, sees
// every stdout line as well.
func (p *process) launch(t testing.TB, argv []string, onStdout func(string)) {
	t.Helper()
	log, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.starts++
	fmt.Fprintf(log, "=== start %d at %s: %s\n", p.starts, time.Now().Format("15:04:05.000"), strings.Join(argv, " "))
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = log
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd, p.done, p.state = cmd, make(chan struct{}), nil
	done := p.done
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(log, sc.Text())
			if onStdout != nil {
				onStdout(sc.Text())
			}
		}
		_, _ = io.Copy(log, out)
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		fmt.Fprintf(log, "=== exit at %s: %v\n", time.Now().Format("15:04:05.000"), cmd.ProcessState)
		log.Close()
		close(done)
	}()
}

func (p *process) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signalAndWait sends sig and waits up to d for the process to end; it reports whether
// the process ended.
func (p *process) signalAndWait(sig os.Signal, d time.Duration) bool {
	if !p.running() {
		return true
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop ends the process with SIGTERM and requires a clean exit (status 0) within the
// driver's shutdown bound.
func (p *process) stop(t testing.TB) {
	t.Helper()
	if !p.signalAndWait(syscall.SIGTERM, 45*time.Second) {
		p.signalAndWait(os.Kill, 5*time.Second)
		t.Fatalf("%s did not exit within 45s of SIGTERM", p.name)
	}
	if !p.state.Success() {
		t.Errorf("%s exited with %v after SIGTERM, want status 0", p.name, p.state)
	}
}

// kill ends the process with SIGKILL, as the OOM killer or a node failure would.
func (p *process) kill(t testing.TB) {
	t.Helper()
	if !p.signalAndWait(syscall.SIGKILL, 10*time.Second) {
		t.Fatalf("%s survived SIGKILL for 10s", p.name)
	}
	if ws, ok := p.state.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s ended with %v, not by SIGKILL", p.name, p.state)
	}
}

// tail returns the last n lines of the log.
func (p *process) tail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// simProcess is rds-sim with --nvmet: every exported disk is a kernel nvmet subsystem.
type simProcess struct{ process }

func (e *env) startSim(t *testing.T) *simProcess {
	s := &simProcess{process{name: "rds-sim", logPath: filepath.Join(e.work, "rds-sim.log")}}
	ready := make(chan string, 1)
	keys := filepath.Join(e.work, "keys")
	s.launch(t, []string{e.simBin, "--listen", simListen, "--dir", simDir, "--nvmet", "--nvme-address", nvmeAddress + "," + nvmePath2,
		"--host-key", filepath.Join(keys, "host_ed25519"), "--authorized-keys", filepath.Join(keys, "authorized_keys")},
		func(line string) {
			if strings.HasPrefix(line, "rds-sim: listening on ") {
				select {
				case ready <- line:
				default:
				}
			}
		})
	select {
	case line := <-ready:
		t.Log(line)
	case <-s.done:
		t.Fatalf("rds-sim exited at start (%v):\n%s", s.state, s.tail(20))
	case <-time.After(20 * time.Second):
		t.Fatalf("rds-sim did not report listening within 20s:\n%s", s.tail(20))
	}
	return s
}

// driver is one rds-csi process: a node (or controller and node) with its own socket,
// NVMe host identity directory and state directory, like one Kubernetes node.
type driver struct {
	process
	nodeID   string
	mode     string
	dir      string
	socket   string
	hostDir  string
	stateDir string
	args     []string
	cluster  *clusterAPI // where a node plugin registers once it serves

	conn  *grpc.ClientConn
	ident csi.IdentityClient
	ctrl  csi.ControllerClient
	node  csi.NodeClient
}

// newDriver prepares (does not start) a driver instance named after its node, managing
// the provisioner's volumes (pvc-…).
func (e *env) newDriver(nodeID, mode string) *driver {
	return e.newDriverFor(nodeID, mode, managedPrefix)
}

// newDriverFor is newDriver with another managed NQN prefix.
func (e *env) newDriverFor(nodeID, mode, prefix string) *driver {
	dir := filepath.Join(e.work, nodeID)
	d := &driver{
		process:  process{name: "rds-csi " + nodeID, logPath: filepath.Join(dir, "rds-csi.log")},
		nodeID:   nodeID,
		mode:     mode,
		dir:      dir,
		socket:   filepath.Join(dir, "csi.sock"),
		hostDir:  filepath.Join(dir, "nvme"),
		stateDir: filepath.Join(dir, "state"),
		cluster:  e.cluster,
	}
	d.args = []string{e.csiBin,
		"--mode=" + mode,
		"--endpoint=unix://" + d.socket,
		"--node-id=" + nodeID,
		"--metrics-address=",
		"--log-level=debug",
		"--managed-nqn-prefix=" + prefix,
		"--nvme-host-dir=" + d.hostDir,
		"--state-dir=" + d.stateDir,
		"--kubelet-dir=" + d.kubeletDir(),
		"--shutdown-timeout=20s",
	}
	if mode != "node" {
		d.args = append(d.args,
			"--rds-address="+nvmeAddress,
			"--rds-ssh-port="+strings.Split(simListen, ":")[1],
			"--rds-user=admin",
			"--rds-key-file="+e.keyFile,
			"--rds-known-hosts="+e.knownHosts,
			"--kubeconfig="+e.kubeconfig,
		)
	}
	e.drivers = append(e.drivers, d)
	return d
}

// start runs the driver and waits until it serves CSI and reports ready.
func (d *driver) start(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(d.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d.launch(t, d.args, nil)
	if d.conn == nil {
		conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
		if err != nil {
			t.Fatal(err)
		}
		d.conn = conn
		d.ident, d.ctrl, d.node = csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	}
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if !d.running() {
			t.Fatalf("%s exited at start (%v):\n%s", d.name, d.state, d.tail(30))
		}
		if _, err := os.Stat(d.socket); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := d.ident.Probe(ctx, &csi.ProbeRequest{})
			cancel()
			switch {
			case err != nil:
				last = err
			case !r.GetReady().GetValue():
				last = errors.New("Probe: not ready")
			default:
				if d.mode != "controller" {
					d.cluster.register(d.nodeID)
				}
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s (%v):\n%s", d.name, last, d.tail(30))
}

// restart starts the same driver again after it stopped or was killed.
func (d *driver) restart(t testing.TB) {
	t.Helper()
	if d.running() {
		t.Fatalf("%s is still running", d.name)
	}
	d.start(t)
}

// identity reads the NVMe host identity the driver uses from its host directory.
func (d *driver) identity(t testing.TB) hostIdentity {
	t.Helper()
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join(d.hostDir, f))
		if err != nil {
			t.Fatalf("%s: NVMe host identity: %v", d.name, err)
		}
		return strings.TrimSpace(string(b))
	}
	return hostIdentity{HostNQN: read("hostnqn"), HostID: read("hostid")}
}

// showLogs prints the tails of every process's log, for a failed step.
func (e *env) showLogs(t *testing.T) {
	if e.sim != nil {
		t.Logf("--- %s log (tail) ---\n%s", e.sim.name, e.sim.tail(25))
	}
	for _, d := range e.drivers {
		t.Logf("--- %s log (tail) ---\n%s", d.name, d.tail(60))
	}
}
