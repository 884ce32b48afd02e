package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"srvlab.io/rds-csi/test/bench/internal/child"
)

// driver is one rds-csi process under measurement, with its own directory for the socket,
// state, NVMe host identity and log.
type driver struct {
	name    string
	dir     string
	socket  string
	logPath string
	proc    *child.Process
	// pprofAddr serves net/http/pprof in a -profile run.
	pprofAddr string
	env       []string // added to childEnv (the loop build's exports directory)

	conn  *grpc.ClientConn
	ident csi.IdentityClient
	ctrl  csi.ControllerClient
	node  csi.NodeClient
}

// newDriver prepares (does not start) a driver process living in dir.
func newDriver(name, dir string) (*driver, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &driver{name: name, dir: dir, socket: filepath.Join(dir, "csi.sock"), logPath: filepath.Join(dir, name+".log")}, nil
}

// commonArgs are the flags of every driver process in the harness: its own socket, no
// metrics listener, its own state directory and NVMe host identity.
func (d *driver) commonArgs(mode string) []string {
	return []string{
		"--mode=" + mode,
		"--endpoint=unix://" + d.socket,
		"--node-id=bench-node",
		"--metrics-address=",
		"--state-dir=" + filepath.Join(d.dir, "state"),
		"--nvme-host-dir=" + filepath.Join(d.dir, "nvme"),
		"--shutdown-timeout=20s",
	}
}

// start execs the binary; the time of the exec is d.proc.Started.
func (d *driver) start(bin string, args []string) error {
	_ = os.Remove(d.socket)
	env := append(childEnv(), d.env...)
	if prof != nil {
		var err error
		if d.pprofAddr, err = freeLoopbackAddr(); err != nil {
			return err
		}
		env = append(env, prof.env(d.pprofAddr)...)
	}
	p, err := child.Start(d.name, d.logPath, bin, args, env)
	if err != nil {
		return err
	}
	d.proc = p
	return nil
}

func (d *driver) running() bool     { return d.proc.Running() }
func (d *driver) tail(n int) string { return d.proc.Tail(n, " | ") }

// firstIdentity polls the socket as tightly as is reasonable and returns the time from
// exec to the first successful GetPluginInfo. Each attempt dials the socket itself and
// hands that connection to a fresh gRPC client, so no client-side reconnect backoff
// delays the answer.
func (d *driver) firstIdentity(timeout time.Duration) (time.Duration, error) {
	deadline := d.proc.Started.Add(timeout)
	for time.Now().Before(deadline) {
		if !d.running() {
			return 0, fmt.Errorf("%s exited at start: %s", d.name, d.tail(1))
		}
		c, err := net.DialTimeout("unix", d.socket, 100*time.Millisecond)
		if err != nil {
			time.Sleep(200 * time.Microsecond)
			continue
		}
		used := false
		conn, err := grpc.NewClient("passthrough:///bench", grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				if !used {
					used = true
					return c, nil
				}
				return (&net.Dialer{}).DialContext(ctx, "unix", d.socket)
			}))
		if err != nil {
			c.Close()
			return 0, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(deadline))
		_, err = csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
		cancel()
		took := time.Since(d.proc.Started)
		conn.Close()
		if err == nil {
			return took, nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, fmt.Errorf("%s did not answer GetPluginInfo within %v: %s", d.name, timeout, d.tail(5))
}

// connect opens the gRPC client the measurements use.
func (d *driver) connect() error {
	if d.conn != nil {
		return nil
	}
	conn, err := grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		return err
	}
	d.conn = conn
	d.ident, d.ctrl, d.node = csi.NewIdentityClient(conn), csi.NewControllerClient(conn), csi.NewNodeClient(conn)
	return nil
}

// waitReady waits until Probe says ready (for a controller: the RDS answered).
func (d *driver) waitReady(timeout time.Duration) error {
	if err := d.connect(); err != nil {
		return err
	}
	return child.WaitReady(d.proc, d.ident, timeout)
}

// memory is what /proc/<pid>/status says about the process's memory, and how much of
// the executable's own mappings is resident (from /proc/<pid>/smaps), by permission.
type memory struct {
	RSS, HWM, Anon, File int64            // bytes: VmRSS, VmHWM, RssAnon, RssFile
	Exe                  map[string]int64 // resident bytes of the executable's mappings, by perms ("r-xp", "r--p", "rw-p")
}

func (d *driver) memory() (memory, error) {
	return readMemory(d.proc.Pid())
}

func readMemory(pid int) (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	m := memory{Exe: map[string]int64{}}
	fields := map[string]*int64{"VmRSS:": &m.RSS, "VmHWM:": &m.HWM, "RssAnon:": &m.Anon, "RssFile:": &m.File}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		if len(parts) == 3 && parts[2] == "kB" {
			if p := fields[parts[0]]; p != nil {
				kb, _ := strconv.ParseInt(parts[1], 10, 64)
				*p = kb << 10
			}
		}
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	if err := sc.Err(); err != nil {
		return m, err
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return m, nil
	}
	smaps, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return m, nil
	}
	defer smaps.Close()
	perms := ""
	sc = bufio.NewScanner(smaps)
	for sc.Scan() {
		parts := strings.Fields(sc.Text())
		switch {
		case len(parts) >= 5 && strings.Contains(parts[0], "-") && !strings.HasSuffix(parts[0], ":"):
			perms = ""
			if len(parts) >= 6 && parts[5] == exe {
				perms = parts[1]
			}
		case perms != "" && len(parts) == 3 && parts[0] == "Rss:":
			kb, _ := strconv.ParseInt(parts[1], 10, 64)
			m.Exe[perms] += kb << 10
		}
	}
	return m, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func (m memory) String() string {
	s := fmt.Sprintf("VmRSS %.1f MiB (anon %.1f, file %.1f), VmHWM %.1f MiB", mib(m.RSS), mib(m.Anon), mib(m.File), mib(m.HWM))
	if len(m.Exe) > 0 {
		s += fmt.Sprintf("; resident of the executable: code (r-x) %.1f MiB, read-only data and pclntab (r--) %.1f MiB, data (rw-) %.1f MiB",
			mib(m.Exe["r-xp"]), mib(m.Exe["r--p"]), mib(m.Exe["rw-p"]))
	}
	return s
}

// stop ends the process with SIGTERM (SIGKILL after the grace) and closes the client.
func (d *driver) stop() error {
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	if d.proc == nil {
		return nil
	}
	return d.proc.Stop(30 * time.Second)
}
