package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
)

// A fake node for the node checks: a sysfs tree laid out like the kernel's (see
// nvme/sysfs.go and reference/nvme-tcp-kernel.md), a /dev with /dev/nvme-fabrics as a
// regular file holding the kernel's option list and real block device nodes (mknod; the
// tests run as root), the host identity, the state dir, and a mount table of its own.

const (
	dtHostID    = "6a1d7e1c-8d55-4c9f-a2bd-0f1e2d3c4b5a"
	dtHostNQN   = "nqn.2014-08.org.nvmexpress:uuid:" + dtHostID
	dtMikrotik  = "nqn.2000-02.com.mikrotik:"
	dtPrefix    = dtMikrotik + "pvc-"
	dtNixosVar  = "nqn.2024-01.io.nixos:var"
	dtVolume1   = "pvc-11111111-1111-1111-1111-111111111111"
	dtVolume2   = "pvc-22222222-2222-2222-2222-222222222222"
	dtBootID    = "5b0b2a7e-0d3c-4f7e-9c55-3f1e9b2c7a10"
	dtKernelOps = "instance=-1,cntlid=-1,transport=%s,traddr=%s,trsvcid=%s,nqn=%s,queue_size=%d,nr_io_queues=%d,reconnect_delay=%d,ctrl_loss_tmo=%d,keep_alive_tmo=%d,hostnqn=%s,host_traddr=%s,host_iface=%s,hostid=%s,duplicate_connect,disable_sqflow,hdr_digest,data_digest,nr_write_queues=%d,nr_poll_queues=%d,tos=%d,fast_io_fail_tmo=%d,discovery,dhchap_secret=%s,dhchap_ctrl_secret=%s\n"
)

type doctorNode struct {
	t                                 testing.TB
	root, sys, dev, hostDir, stateDir string
	minor                             uint32
	mounts                            map[string][]*mount.Entry
	mountErr                          error
	mountHang                         chan struct{} // when set, mount table reads block until it is closed
}

func newDoctorNode(t testing.TB) *doctorNode {
	root := t.TempDir()
	f := &doctorNode{t: t, root: root, sys: filepath.Join(root, "sys"), dev: filepath.Join(root, "dev"),
		hostDir: filepath.Join(root, "etc-nvme"), stateDir: filepath.Join(root, "state"), mounts: map[string][]*mount.Entry{}}
	for _, d := range []string{"class/nvme", "class/nvme-subsystem", "block", "devices/virtual/nvme-subsystem", "devices/virtual/nvme-fabrics/ctl"} {
		f.mkdir(filepath.Join(f.sys, d))
	}
	f.mkdir(f.dev)
	f.write(filepath.Join(f.dev, "nvme-fabrics"), dtKernelOps)
	f.identity(dtHostNQN, dtHostID)
	// The doctor's temporary files (a placeholder identity) land here, so the snapshot
	// proves they are gone afterwards.
	f.mkdir(filepath.Join(root, "tmp"))
	t.Setenv("TMPDIR", filepath.Join(root, "tmp"))
	return f
}

func (f *doctorNode) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *doctorNode) mkdir(dir string) { f.must(os.MkdirAll(dir, 0o755)) }

func (f *doctorNode) write(path, content string) {
	f.mkdir(filepath.Dir(path))
	f.must(os.WriteFile(path, []byte(content), 0o644))
}

func (f *doctorNode) attrs(dir string, kv map[string]string) {
	for k, v := range kv {
		f.write(filepath.Join(dir, k), v+"\n")
	}
}

// identity writes /etc/nvme; an empty value leaves that file out.
func (f *doctorNode) identity(nqn, id string) {
	for name, v := range map[string]string{"hostnqn": nqn, "hostid": id} {
		p := filepath.Join(f.hostDir, name)
		os.Remove(p)
		if v != "" {
			f.write(p, v+"\n")
		}
	}
}

func (f *doctorNode) subsysDir(s int) string {
	return filepath.Join(f.sys, "devices/virtual/nvme-subsystem", fmt.Sprintf("nvme-subsys%d", s))
}

func (f *doctorNode) ctrlDir(c int) string {
	return filepath.Join(f.sys, "devices/virtual/nvme-fabrics/ctl", fmt.Sprintf("nvme%d", c))
}

func (f *doctorNode) subsystem(s int, nqn string) {
	f.attrs(f.subsysDir(s), map[string]string{"subsysnqn": nqn, "subsystype": "nvm", "iopolicy": "numa"})
	f.must(os.Symlink(f.subsysDir(s), filepath.Join(f.sys, "class/nvme-subsystem", filepath.Base(f.subsysDir(s)))))
}

// controller adds controller c to subsystem s; hostnqn and hostid default to the node's.
func (f *doctorNode) controller(s, c int, state, hostnqn, hostid string) {
	if hostnqn == "" {
		hostnqn, hostid = dtHostNQN, dtHostID
	}
	nqn, err := os.ReadFile(filepath.Join(f.subsysDir(s), "subsysnqn"))
	f.must(err)
	f.attrs(f.ctrlDir(c), map[string]string{"subsysnqn": strings.TrimSpace(string(nqn)), "state": state, "transport": "tcp",
		"address": "traddr=10.0.0.1,trsvcid=4420,src_addr=10.0.0.9", "hostnqn": hostnqn, "hostid": hostid})
	name := fmt.Sprintf("nvme%d", c)
	f.must(os.Symlink(f.ctrlDir(c), filepath.Join(f.sys, "class/nvme", name)))
	f.must(os.Symlink(f.ctrlDir(c), filepath.Join(f.subsysDir(s), name)))
}

// disk adds the multipath head disk nvme<s>n<h> for namespace nsid and its device node,
// and returns its device number.
func (f *doctorNode) disk(s, h, nsid int) (major, minor uint32) {
	f.minor++
	major, minor = 259, f.minor
	name := fmt.Sprintf("nvme%dn%d", s, h)
	dir := filepath.Join(f.subsysDir(s), name)
	f.attrs(dir, map[string]string{"nsid": fmt.Sprint(nsid), "size": "2097152", "hidden": "0", "ro": "0",
		"dev": fmt.Sprintf("%d:%d", major, minor), "wwid": "uuid.00000000-0000-0000-0000-000000000001"})
	f.must(os.Symlink(dir, filepath.Join(f.sys, "block", name)))
	f.must(unix.Mknod(filepath.Join(f.dev, name), unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))))
	return major, minor
}

// volume adds a managed subsystem with one live controller and its disk.
func (f *doctorNode) volume(s int, id string) (major, minor uint32) {
	f.subsystem(s, dtMikrotik+id)
	f.controller(s, s, "live", "", "")
	return f.disk(s, 1, 1)
}

// record writes a staging record as the node plugin does, of this boot unless it says
// otherwise, under the name of its volume unless name is given.
func (f *doctorNode) record(rec stagingRecord, name ...string) {
	if rec.Version == 0 {
		rec.Version = stagingRecordVersion
	}
	if rec.BootID == "" {
		rec.BootID = dtBootID
	}
	file := rec.VolumeID
	if len(name) > 0 {
		file = name[0]
	}
	b, err := json.Marshal(rec)
	f.must(err)
	f.write(filepath.Join(f.stateDir, "volumes", file+".json"), string(b))
}

// fsRecord is the record of filesystem volume id, staged from device major:minor and
// published at the targets.
func fsRecord(id string, major, minor uint32, targets ...string) stagingRecord {
	rec := stagingRecord{VolumeID: id, NQN: dtMikrotik + id, NSID: 1, StagingPath: doctorStagingPath(id), FSType: "ext4",
		Major: major, Minor: minor, Published: map[string]bool{}}
	for _, t := range targets {
		rec.Published[t] = false
	}
	return rec
}

// blockRecord is the record of raw block volume id on device major:minor.
func blockRecord(id string, major, minor uint32, targets ...string) stagingRecord {
	rec := fsRecord(id, major, minor, targets...)
	rec.Block, rec.StagingPath, rec.FSType = true, "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/"+id, ""
	return rec
}

// doctorStagingPath is where kubelet would stage a filesystem volume.
func doctorStagingPath(id string) string {
	return "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/" + id + "/globalmount"
}

// blockNode makes a raw block publish target: a device node of major:minor.
func (f *doctorNode) blockNode(name string, major, minor uint32) string {
	target := filepath.Join(f.root, "publish", name)
	f.mkdir(filepath.Dir(target))
	f.must(unix.Mknod(target, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))))
	return target
}

// mount adds an ext4 mount of major:minor at path to the fake mount table, with the
// per-mount options given (default rw).
func (f *doctorNode) mount(path string, major, minor uint32, options ...string) {
	opts := "rw,relatime"
	if len(options) > 0 {
		opts = options[0]
	}
	f.mounts[path] = append(f.mounts[path], &mount.Entry{Mountpoint: path, Major: int(major), Minor: int(minor), FSType: "ext4",
		Source: fmt.Sprintf("/dev/nvme-%d", minor), Options: opts, VFSOptions: "rw"})
}

func (f *doctorNode) byMountPoint(_ context.Context, path string) ([]*mount.Entry, error) {
	if f.mountHang != nil {
		<-f.mountHang // like a read stuck in the kernel: the context is not looked at
	}
	return f.mounts[path], f.mountErr
}

// run runs the doctor in node mode over the fake node.
func (f *doctorNode) run(extra ...string) (string, int) {
	args := append([]string{"--mode=node", "--managed-nqn-prefix=" + dtPrefix, "--sysfs-root=" + f.sys, "--dev-root=" + f.dev,
		"--nvme-host-dir=" + f.hostDir, "--state-dir=" + f.stateDir, "--timeout=5s"}, extra...)
	var out, errOut bytes.Buffer
	code := runDoctorWith(args, doctorEnv(nil), &out, &errOut, doctorSeams{mounts: f.byMountPoint, bootID: func() string { return dtBootID }})
	if errOut.Len() > 0 {
		f.t.Errorf("stderr: %s", errOut.String())
	}
	return out.String(), code
}

// snapshot lists every file below the fake node with its mode, content and time (but
// for the time of the temporary directory, which the doctor may use and clean up).
func (f *doctorNode) snapshot() string {
	var lines []string
	_ = filepath.WalkDir(f.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || p == filepath.Join(f.root, "tmp") {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		var content []byte
		if fi.Mode().IsRegular() {
			content, _ = os.ReadFile(p)
		}
		lines = append(lines, fmt.Sprintf("%s %v %d %q", p, fi.Mode(), fi.ModTime().UnixNano(), content))
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// doctorNodeCase is one run of the node checks over a fake node.
type doctorNodeCase struct {
	name  string
	setup func(f *doctorNode)
	args  []string
	want  []string // parts of the report, each within one line
	code  int
}

func TestDoctorNode(t *testing.T) {
	testDoctorNode(t, []doctorNodeCase{
		{name: "healthy", setup: func(f *doctorNode) {
			f.subsystem(0, dtNixosVar)
			f.controller(0, 0, "live", "", "")
			f.disk(0, 1, 1)
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(doctorStagingPath(dtVolume1), ma, mi)
			ma, mi = f.volume(2, dtVolume2)
			f.record(blockRecord(dtVolume2, ma, mi))
		}, want: []string{
			"ok    nvme-fabrics: ", "ok    connect options: the kernel supports transport, traddr",
			"ok    host identity: " + dtHostNQN + " / " + dtHostID + " (UUID form, matching hostid); 3 connected controllers use it",
			`ok    managed prefix: "` + dtPrefix + `"`,
			"ok    subsystems: 3 connected: 2 managed, 1 left alone",
			"        nvme-subsys0 " + dtNixosVar + ": left alone (outside the managed prefix); nvme0 live (10.0.0.1:4420); disk nvme0n1 1 GiB",
			"        nvme-subsys1 " + dtMikrotik + dtVolume1 + ": managed, staged; nvme1 live (10.0.0.1:4420); disk nvme1n1 1 GiB",
			"ok    staging records: 2 in ",
			"ok    volume " + dtVolume1 + ": ext4 mounted at " + "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/" + dtVolume1 + "/globalmount from nvme1n1 (259:2)",
			"ok    volume " + dtVolume2 + ": raw block on nvme2n1 (259:3)",
			"8 ok, 0 WARN, 0 FAIL, 0 skipped",
		}},
		{name: "slot prefix", args: []string{"--managed-nqn-prefix=pvc-"}, setup: func(f *doctorNode) {
			f.subsystem(0, dtMikrotik+dtVolume1)
			f.controller(0, 0, "live", "", "")
		}, want: []string{`ok    managed prefix: slot prefix "pvc-"`, "WARN  subsystems: 1 connected: 1 managed, 0 left alone; 1 managed but not proven"}},
		{name: "managed subsystem nothing proves ours", setup: func(f *doctorNode) {
			f.volume(1, dtVolume1)
		}, want: []string{
			"WARN  subsystems: 1 connected: 1 managed, 0 left alone; 1 managed but not proven this driver's",
			dtMikrotik + dtVolume1 + " (once nothing uses it: echo 1 > /sys/class/nvme/nvme1/delete_controller, or nvme disconnect -n " + dtMikrotik + dtVolume1 + ")",
			"        nvme-subsys1 " + dtMikrotik + dtVolume1 + ": managed, but nothing proves this driver connected it: left alone",
			"      fix: a volume a pod still uses is adopted when kubelet stages it again",
		}},
		{name: "fabrics missing", setup: func(f *doctorNode) { os.Remove(filepath.Join(f.dev, "nvme-fabrics")) }, code: 1, want: []string{
			"FAIL  nvme-fabrics: ", "      fix: on the host: `modprobe nvme-tcp`, and `echo nvme-tcp > /etc/modules-load.d/nvme-tcp.conf`",
			"skip  connect options: not checked: needs /dev/nvme-fabrics",
			"ok    subsystems: none connected",
		}},
		{name: "fabrics unreadable", setup: func(f *doctorNode) {
			p := filepath.Join(f.dev, "nvme-fabrics")
			os.Remove(p)
			f.mkdir(p) // reading a directory fails with EISDIR, like a device the caller may not use
		}, code: 1, want: []string{"FAIL  nvme-fabrics: ", "cannot be read"}},
		{name: "kernel lacks an option every connect sends", setup: func(f *doctorNode) {
			f.write(filepath.Join(f.dev, "nvme-fabrics"), strings.Replace(dtKernelOps, "ctrl_loss_tmo=%d,", "", 1))
		}, code: 1, want: []string{"FAIL  connect options: the kernel does not support ctrl_loss_tmo, which every connect sends"}},
		{name: "kernel lacks keep_alive_tmo", setup: func(f *doctorNode) {
			f.write(filepath.Join(f.dev, "nvme-fabrics"), strings.Replace(dtKernelOps, "keep_alive_tmo=%d,", "", 1))
		}, want: []string{"WARN  connect options: the kernel supports every option the driver always sends, but not keep_alive_tmo", "      fix: remove the StorageClass parameters"}},
		{name: "identity missing", setup: func(f *doctorNode) { f.identity("", "") }, want: []string{
			"WARN  host identity: ",
			"are missing: the node plugin creates the identity at its first start",
			"      fix: start the node plugin on this node",
		}},
		{name: "hostid missing", setup: func(f *doctorNode) { f.identity(dtHostNQN, "") }, want: []string{"hostid is missing: the node plugin creates"}},
		{name: "identity invalid", setup: func(f *doctorNode) { f.identity(dtHostNQN, "not-a-uuid") }, code: 1, want: []string{
			"FAIL  host identity: the node plugin cannot start: ", `holds "not-a-uuid"`,
			"ok    nvme-fabrics: ", // the rest of the checks still run
		}},
		{name: "identity unreadable", setup: func(f *doctorNode) {
			f.must(os.RemoveAll(f.hostDir))
			f.write(f.hostDir, "a file where the directory should be")
		}, code: 1, want: []string{"FAIL  host identity: cannot read the NVMe host identity"}},
		{name: "hostnqn names another UUID", setup: func(f *doctorNode) {
			f.identity("nqn.2014-08.org.nvmexpress:uuid:00000000-1111-4222-8333-444444444444", dtHostID)
		}, want: []string{"WARN  host identity: hostnqn nqn.2014-08.org.nvmexpress:uuid:00000000-1111-4222-8333-444444444444 names UUID"}},
		{name: "custom hostnqn", setup: func(f *doctorNode) { f.identity("nqn.2024-01.io.example:node-1", dtHostID) },
			want: []string{"ok    host identity: nqn.2024-01.io.example:node-1 / " + dtHostID + " (its own form"}},
		{name: "identity conflicts with a connection", setup: func(f *doctorNode) {
			f.subsystem(0, dtNixosVar)
			f.controller(0, 0, "live", dtHostNQN, "99999999-9999-4999-8999-999999999999")
		}, code: 1, want: []string{"FAIL  host identity: controller nvme0 (" + dtNixosVar + ") uses host NQN " + dtHostNQN + " with host ID 99999999-9999-4999-8999-999999999999"}},
		{name: "identity changed under managed volumes", setup: func(f *doctorNode) {
			f.subsystem(1, dtMikrotik+dtVolume1)
			f.controller(1, 1, "live", "nqn.2014-08.org.nvmexpress:uuid:99999999-9999-4999-8999-999999999999", "99999999-9999-4999-8999-999999999999")
		}, want: []string{"WARN  host identity: managed controller nvme1 (" + dtMikrotik + dtVolume1 + ") was connected as nqn.2014-08.org.nvmexpress:uuid:99999999"}},
		{name: "prefix missing", args: []string{"--managed-nqn-prefix="}, code: 1, want: []string{
			"FAIL  managed prefix: --managed-nqn-prefix is empty", "      fix: set --managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX)",
			"skip  subsystems: not checked: needs a valid --managed-nqn-prefix",
		}},
		{name: "prefix claims a whole naming authority", args: []string{"--managed-nqn-prefix=" + dtMikrotik}, code: 1,
			want: []string{`FAIL  managed prefix: managed NQN prefix "` + dtMikrotik + `" ends at the ':'`}},
		{name: "managed subsystem not live", setup: func(f *doctorNode) {
			f.subsystem(0, dtNixosVar)
			f.controller(0, 0, "connecting", "", "") // not ours: listed, no warning
			f.subsystem(1, dtMikrotik+dtVolume1)
			f.controller(1, 1, "connecting", "", "")
			f.disk(1, 1, 1)
			f.subsystem(2, dtMikrotik+dtVolume2) // held open without controllers
		}, want: []string{
			"; 2 managed without a live controller: " + dtMikrotik + dtVolume1 + " (nvme1 connecting (10.0.0.1:4420)); " + dtMikrotik + dtVolume2 + " (no controllers)",
			"        nvme-subsys0 " + dtNixosVar + ": left alone (outside the managed prefix); nvme0 connecting (10.0.0.1:4420)",
			"a controller that is connecting is waiting for the RDS",
		}},
		{name: "sysfs unreadable", setup: func(f *doctorNode) {
			f.must(os.RemoveAll(filepath.Join(f.sys, "class/nvme-subsystem")))
			f.write(filepath.Join(f.sys, "class/nvme-subsystem"), "not a directory")
		}, code: 1, want: []string{"FAIL  subsystems: cannot list NVMe subsystems", "FAIL  host identity: identity " + dtHostNQN + " is well formed, but the connected controllers cannot be listed"}},
	})
}

// testDoctorNode runs the cases, and proves each run left the node as it found it.
func testDoctorNode(t *testing.T, tests []doctorNodeCase) {
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newDoctorNode(t)
			if tc.setup != nil {
				tc.setup(f)
			}
			before := f.snapshot()
			out, code := f.run(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("report lacks %q", w)
				}
			}
			if after := f.snapshot(); after != before {
				t.Errorf("the doctor changed the node:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("report:\n%s", out)
			}
		})
	}

}
