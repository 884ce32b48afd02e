package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"srvlab.io/rds-csi/nvme"
	"srvlab.io/rds-csi/routeros/sim"
)

func TestDoctorParseVersion(t *testing.T) {
	tests := []struct {
		in           string
		major, minor int
		ok           bool
	}{
		{"7.24.4 (stable)", 7, 24, true},
		{"7.21", 7, 21, true},
		{"7.21rc2 (testing)", 7, 21, true},
		{"7.9.2 (long-term)", 7, 9, true},
		{"", 0, 0, false},
		{"seven", 0, 0, false},
	}
	for _, tc := range tests {
		major, minor, ok := doctorParseVersion(tc.in)
		if ok != tc.ok || ok && (major != tc.major || minor != tc.minor) {
			t.Errorf("doctorParseVersion(%q) = %d, %d, %v; want %d, %d, %v", tc.in, major, minor, ok, tc.major, tc.minor, tc.ok)
		}
	}
}

// TestDoctorConnectOptionsUnlisted: a kernel before 5.17 cannot list its options, which
// is no failure (a regular file cannot play that kernel, so this is tested directly).
func TestDoctorConnectOptionsUnlisted(t *testing.T) {
	d := &doctor{}
	r := d.checkConnectOptions(doctorNodeView{probed: true, features: nvme.Features{}})
	if r.status != verdictOK || !strings.Contains(r.finding, "does not list its options (before 5.17)") {
		t.Errorf("got %v %q", r.status, r.finding)
	}
	if r := d.checkConnectOptions(doctorNodeView{}); r.status != verdictSkip {
		t.Errorf("without /dev/nvme-fabrics: %v %q, want skip", r.status, r.finding)
	}
}

const dtVolumePath = "/storage-pool/metal-csi"

// simDoctorArgs are the controller flags that reach ts, as deploy.yaml would give them.
func simDoctorArgs(t testing.TB, ts *sim.TestServer) []string {
	host, port, err := net.SplitHostPort(ts.Addr)
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--mode=controller", "--rds-address=" + host, "--rds-ssh-port=" + port, "--rds-user=" + ts.User,
		"--rds-key-file=" + ts.KeyFile, "--rds-known-hosts=" + ts.KnownHostsFile, "--rds-volume-path=" + dtVolumePath, "--timeout=5s"}
}

// doctorReplaceArg sets --name=value in args, replacing an earlier value (value "" drops it).
func doctorReplaceArg(args []string, name, value string) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "--"+name+"=") {
			out = append(out, a)
		}
	}
	if value != "" {
		out = append(out, "--"+name+"="+value)
	}
	return out
}

// doctorLeftovers lists what the write test could have left on the simulated RDS: disks and
// files named like its disk.
func doctorLeftovers(t *testing.T, ts *sim.TestServer) []string {
	t.Helper()
	var left []string
	out, err := ts.Exec(context.Background(), "/disk print detail")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "rds-csi-doctor") {
		left = append(left, "disk: "+out)
	}
	_ = filepath.WalkDir(ts.Dir(), func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.Contains(e.Name(), "rds-csi-doctor") {
			left = append(left, "file: "+p)
		}
		return nil
	})
	return left
}

func TestDoctorController(t *testing.T) {
	tests := []struct {
		name  string
		opts  sim.Options
		setup func(t *testing.T, ts *sim.TestServer, args []string) []string
		want  []string
		code  int
		clean bool // the write test must leave nothing behind
	}{
		{name: "healthy", want: []string{
			"ok    rds settings: admin@127.0.0.1:", "with key ", ", host key pinned by ",
			"ok    ssh: admin@127.0.0.1:", " logged in and opened a session in ",
			"ok    host key: the RDS presented the key pinned in ",
			"ok    routeros version: RouterOS 7.24.4 (stable): supports nvme-tcp-server-nqn",
			"ok    pool /storage-pool/metal-csi: pool storage-pool: 1 TiB free of 1 TiB (100%)",
			"skip  write test: not run: it adds a 1 MiB disk on the RDS and removes it again; run `rds-csi doctor --mode=controller --write-test`",
			"5 ok, 0 WARN, 0 FAIL, 1 skipped",
		}},
		{name: "write test leaves nothing behind", clean: true, setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(args, "--write-test")
		}, want: []string{
			"ok    write test: add disk: added rds-csi-doctor-", ": /storage-pool/metal-csi/rds-csi-doctor-", ".img, 1 MiB, exported as nqn.2000-02.com.mikrotik:rds-csi-doctor-",
			"ok    write test: remove disk: removed rds-csi-doctor-", "; the RDS no longer lists it",
			"ok    write test: remove file: removed /storage-pool/metal-csi/rds-csi-doctor-", ".img; nothing of the test is left",
			"8 ok, 0 WARN, 0 FAIL, 0 skipped",
		}},
		{name: "write test refused still cleans up", clean: true, setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			ts.SetDiskFull(true)
			return append(args, "--write-test")
		}, code: 1, want: []string{
			"FAIL  write test: add disk: cannot add disk rds-csi-doctor-", "not enough space",
			"      fix: the RouterOS user needs the write policy",
			"ok    write test: remove disk: ", "ok    write test: remove file: ",
		}},
		{name: "write test: disk removal hangs", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			h := ts.Hang("/disk remove")
			t.Cleanup(h.Release)
			return append(doctorReplaceArg(args, "timeout", "1s"), "--write-test")
		}, code: 1, want: []string{
			"ok    write test: add disk: ",
			"FAIL  write test: remove disk: did not finish within 1s",
			`if it still hangs: the RDS accepted the connection but does not answer: check its load on the console (/system resource print) and that no firewall drops packets between here and it; then remove it on the RDS: /disk remove [find slot="rds-csi-doctor-`,
			"FAIL  write test: remove file: cannot remove /storage-pool/metal-csi/rds-csi-doctor-", // the disk still uses it
			`      fix: remove it on the RDS: /file remove [find name="storage-pool/metal-csi/rds-csi-doctor-`,
		}},
		{name: "wrong host key", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			other := sim.StartTest(t, sim.Options{})
			kh := filepath.Join(t.TempDir(), "known_hosts")
			line := knownhosts.Line([]string{knownhosts.Normalize(ts.Addr)}, other.HostKey) + "\n"
			if err := os.WriteFile(kh, []byte(line), 0o644); err != nil {
				t.Fatal(err)
			}
			return doctorReplaceArg(args, "rds-known-hosts", kh)
		}, code: 1, want: []string{
			"skip  ssh: login not tried: the RDS's host key was refused (see host key)",
			"FAIL  host key: the key 127.0.0.1:", " presented does not match ",
			"      fix: if the RDS was reinstalled or its key regenerated, compare the new key's fingerprint with the RDS console, then re-pin it: `ssh-keyscan -p ",
			"skip  routeros version: not checked: needs a working SSH session",
		}},
		{name: "known_hosts without the RDS", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			kh := filepath.Join(t.TempDir(), "known_hosts")
			if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{"192.0.2.1"}, ts.HostKey)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return doctorReplaceArg(args, "rds-known-hosts", kh)
		}, code: 1, want: []string{"FAIL  rds settings: routeros: ", "no host key for 127.0.0.1:", "      fix: pin the RDS's host key for 127.0.0.1:"}},
		{name: "host key not verified", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(doctorReplaceArg(args, "rds-known-hosts", ""), "--rds-insecure-skip-host-key")
		}, want: []string{
			"ok    ssh: ",
			"WARN  host key: not verified (--rds-insecure-skip-host-key): anything answering at 127.0.0.1 is taken for the RDS",
			"      fix: pin it: `ssh-keyscan -p ",
		}},
		{name: "no host key setting", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return doctorReplaceArg(args, "rds-known-hosts", "")
		}, code: 1, want: []string{"FAIL  rds settings: --rds-known-hosts (RDS_KNOWN_HOSTS) is not set", "skip  host key: not checked"}},
		{name: "settings missing", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return doctorReplaceArg(doctorReplaceArg(args, "rds-user", ""), "rds-key-file", "")
		}, code: 1, want: []string{"FAIL  rds settings: --rds-user (RDS_USER), --rds-key-file (RDS_KEY_FILE) not set", "skip  ssh: not checked: needs valid RDS settings"}},
		{name: "not a TCP port", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return doctorReplaceArg(args, "rds-ssh-port", "70000")
		}, code: 1, want: []string{"FAIL  rds settings: --rds-ssh-port 70000 is not a TCP port", "      fix: set --rds-ssh-port to the RDS's SSH port (22 unless changed in /ip service)"}},
		{name: "a setting the controller refuses", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(args, "--rds-max-sessions=0")
		}, code: 1, want: []string{"FAIL  rds settings: --rds-max-sessions must be at least 1 (default 4)", "      fix: fix the setting the message names", "skip  ssh: not checked: needs valid RDS settings"}},
		{name: "unreachable address", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			ln.Close() // nothing listens there now
			return append(doctorReplaceArg(args, "rds-ssh-port", port), "--rds-insecure-skip-host-key", "--rds-known-hosts=")
		}, code: 1, want: []string{
			"FAIL  ssh: cannot reach admin@127.0.0.1:", "connection refused",
			"      fix: check --rds-address and --rds-ssh-port (now 127.0.0.1:", "test from here: ssh -i ",
			"skip  pool /storage-pool/metal-csi: not checked: needs a working SSH session",
		}},
		{name: "key not accepted", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			_, pem, err := sim.NewKey()
			if err != nil {
				t.Fatal(err)
			}
			key := filepath.Join(t.TempDir(), "other_key")
			if err := os.WriteFile(key, pem, 0o600); err != nil {
				t.Fatal(err)
			}
			return doctorReplaceArg(args, "rds-key-file", key)
		}, code: 1, want: []string{
			"FAIL  ssh: 127.0.0.1:", " refused the key ", "unable to authenticate",
			"      fix: on the RDS, import the public half of ",
			"ok    host key: the RDS presented the key pinned in ", // checked before the login
		}},
		{name: "unreadable key", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return doctorReplaceArg(args, "rds-key-file", filepath.Join(t.TempDir(), "missing"))
		}, code: 1, want: []string{"FAIL  rds settings: routeros: read SSH key: ", "      fix: give --rds-key-file (RDS_KEY_FILE) an unencrypted private key"}},
		{name: "RouterOS before 7.21", opts: sim.Options{Version: "7.20.3"}, setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(args, "--managed-nqn-prefix=pvc-")
		}, code: map[bool]int{true: 0, false: 1}[doctorSlotNQNsManageable()], want: []string{
			"routeros version: RouterOS 7.20.3 (stable) rejects nvme-tcp-server-nqn (it needs 7.21), so each volume's NQN is its slot name (pvc-…)",
		}},
		{name: "RouterOS before 7.21 with an NQN prefix", opts: sim.Options{Version: "7.20.3"}, setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(args, "--managed-nqn-prefix="+dtPrefix)
		}, code: 1, want: []string{"FAIL  routeros version: RouterOS 7.20.3 (stable) rejects nvme-tcp-server-nqn"}},
		{name: "version command hangs", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			h := ts.Hang("/system resource")
			t.Cleanup(h.Release)
			return doctorReplaceArg(args, "timeout", "500ms")
		}, code: 1, want: []string{"FAIL  routeros version: did not finish within 500ms", "      fix: re-run with a longer --timeout", "ok    pool /storage-pool/metal-csi: "}},
		{name: "connection drops during the version query", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			ts.DropConnection("/system resource", sim.DropBeforeRun)
			return args
		}, code: 1, want: []string{"FAIL  routeros version: cannot read the RouterOS version: "}},
		{name: "pool missing", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(doctorReplaceArg(args, "rds-volume-path", "/nopool/csi"), "--rds-allowed-paths=/storage-pool/other")
		}, code: 1, want: []string{
			"FAIL  pool /nopool/csi: no pool is mounted at /nopool: ",
			"      fix: the first component of the path must be a pool's mount-point",
			"ok    pool /storage-pool/other: pool storage-pool: ",
		}},
		{name: "volume path not a path", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return doctorReplaceArg(args, "rds-volume-path", "storage-pool")
		}, code: 1, want: []string{"FAIL  rds settings: ", "      fix: set --rds-volume-path and --rds-allowed-paths to clean absolute directories", "FAIL  pool storage-pool: "}},
		{name: "pool query fails", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			ts.DropConnection("mount-point=", sim.DropBeforeRun)
			return args
		}, code: 1, want: []string{"FAIL  pool /storage-pool/metal-csi: cannot read the pool's capacity: "}},
		{name: "pool nearly full", opts: sim.Options{Pools: []sim.Pool{{Name: "storage-pool", Size: 100 << 20}}},
			setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
				f, err := os.Create(ts.HostPath("/storage-pool/metal-csi/pvc-big.img"))
				if err == nil {
					err = f.Truncate(95 << 20)
					f.Close()
				}
				if err != nil {
					t.Fatal(err)
				}
				return args
			}, want: []string{"WARN  pool /storage-pool/metal-csi: pool storage-pool: 5 MiB free of 100 MiB (5%): under 10% free", "      fix: free space on the pool"}},
		{name: "pool free space within the capacity reserve", setup: func(t *testing.T, ts *sim.TestServer, args []string) []string {
			return append(args, "--capacity-reserve=2Ti")
		}, want: []string{"WARN  pool /storage-pool/metal-csi: pool storage-pool: 1 TiB free of 1 TiB (100%), not more than --capacity-reserve 2 TiB", "or lower --capacity-reserve"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := sim.StartTest(t, tc.opts)
			if err := os.MkdirAll(ts.HostPath(dtVolumePath), 0o755); err != nil {
				t.Fatal(err)
			}
			args := simDoctorArgs(t, ts)
			if tc.setup != nil {
				args = tc.setup(t, ts, args)
			}
			var out, errOut bytes.Buffer
			start := time.Now()
			code := runDoctor(args, doctorEnv(nil), &out, &errOut)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("report lacks %q", w)
				}
			}
			if tc.clean {
				if left := doctorLeftovers(t, ts); len(left) > 0 {
					t.Errorf("the write test left %v", left)
				}
			}
			if time.Since(start) > 20*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("report:\n%s", out.String())
			}
		})
	}
}
