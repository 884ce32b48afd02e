package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
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

// TestDoctorStaging: staging records against the kernel and the mount table, judged by
// the node plugin's own healing rules.
func TestDoctorStaging(t *testing.T) {
	const target = "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/v/mount"
	vol := "volume " + dtVolume1 + ": "
	staging := doctorStagingPath(dtVolume1)
	testDoctorNode(t, []doctorNodeCase{
		{name: "healthy and published", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi, target))
			f.mount(staging, ma, mi)
			f.mount(target, ma, mi)
		}, want: []string{"ok    " + vol + "ext4 mounted at " + staging + " from nvme1n1 (259:1)", "        publish " + target + ": on nvme1n1 (259:1)"}},
		{name: "stale mount after a reconnect", setup: func(f *doctorNode) {
			f.volume(1, dtVolume1) // the disk is 259:1 now
			f.record(fsRecord(dtVolume1, 259, 77, target))
			f.mount(staging, 259, 77)
			f.mount(target, 259, 77)
		}, code: 1, want: []string{
			"FAIL  " + vol + "stale: ", "previous device 259:77",
			"        publish " + target + ": on 259:77, but the volume's disk is nvme1n1 (259:1)",
			"      fix: the node plugin heals this by itself",
		}},
		{name: "mounted, but the controller is gone", setup: func(f *doctorNode) {
			f.record(fsRecord(dtVolume1, 259, 5))
			f.mount(staging, 259, 5)
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", "lost", "      fix: the node plugin heals this by itself"}},
		{name: "filesystem went read-only", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(staging, ma, mi, "ro,relatime")
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", "read-only"}},
		{name: "another device mounted at the staging path", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(staging, 8, 1)
		}, code: 1, want: []string{"FAIL  " + vol, "8:1", "      fix: the node plugin leaves it alone, as nothing proves it is this volume's: look at it (findmnt " + staging}},
		{name: "stale publish bind mount only", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi, target))
			f.mount(staging, ma, mi)
			f.mount(target, 8, 1)
		}, code: 1, want: []string{"FAIL  " + vol + "publish target " + target + " is stale: on 8:1", "      fix: restart the pod that uses the volume on this node"}},
		{name: "publish target not mounted", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi, target))
			f.mount(staging, ma, mi)
		}, want: []string{"ok    " + vol, "        publish " + target + ": nothing mounted (the pod may be gone)"}},
		{name: "record without a mount", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
		}, want: []string{"WARN  " + vol + "recorded as staged, but nothing is mounted at " + staging, "      fix: kubelet stages the volume again"}},
		{name: "stacked mounts", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mount(staging, ma, mi)
			f.mount(staging, ma, mi)
		}, want: []string{"WARN  " + vol + staging + " is mounted from nvme1n1, but 2 mounts are stacked there"}},
		{name: "published raw block volume", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			node := f.blockNode("dev", ma, mi)
			f.record(blockRecord(dtVolume1, ma, mi, node))
		}, want: []string{"ok    " + vol + "raw block on nvme1n1 (259:1)", ": on nvme1n1 (259:1)"}},
		{name: "raw block node of the previous device", setup: func(f *doctorNode) {
			f.volume(1, dtVolume1)
			node := f.blockNode("dev", 259, 42)
			f.record(blockRecord(dtVolume1, 259, 42, node))
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", ": on 259:42, but the volume's disk is nvme1n1 (259:1)"}},
		{name: "raw block node of a foreign device", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			node := f.blockNode("dev", 8, 1)
			f.record(blockRecord(dtVolume1, ma, mi, node))
		}, code: 1, want: []string{"FAIL  " + vol + "publish target ", " is stale: on 8:1"}},
		{name: "raw block volume, controller gone, still published", setup: func(f *doctorNode) {
			f.record(blockRecord(dtVolume1, 259, 1, filepath.Join(f.root, "publish", "dev")))
		}, code: 1, want: []string{"FAIL  " + vol + "stale: ", "lost"}},
		{name: "raw block volume, controller gone, unused", setup: func(f *doctorNode) {
			f.record(blockRecord(dtVolume1, 259, 1))
		}, want: []string{"WARN  " + vol + "not connected and not in use: "}},
		{name: "connected without a disk yet", setup: func(f *doctorNode) {
			f.subsystem(1, dtMikrotik+dtVolume1)
			f.controller(1, 1, "live", "", "")
			f.record(blockRecord(dtVolume1, 259, 1))
		}, want: []string{"WARN  " + vol, "no disk for namespace 1"}},
		{name: "interrupted heal", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			rec := fsRecord(dtVolume1, ma, mi)
			rec.Healing = true
			f.record(rec)
		}, want: []string{"WARN  " + vol, "interrupted heal: mounts may be missing until it is done"}},
		{name: "record of an earlier boot", setup: func(f *doctorNode) {
			rec := fsRecord(dtVolume1, 259, 1)
			rec.BootID = "an-earlier-boot"
			f.record(rec)
		}, want: []string{"ok    " + vol + "staged before the node last booted"}},
		{name: "record outside the managed prefix", setup: func(f *doctorNode) {
			rec := fsRecord("other", 259, 1)
			rec.NQN = dtNixosVar
			f.record(rec)
		}, want: []string{"WARN  volume other: its NQN " + dtNixosVar + " is outside the managed prefix"}},
		{name: "record of another version", setup: func(f *doctorNode) {
			rec := fsRecord(dtVolume1, 259, 1)
			rec.Version = stagingRecordVersion + 1
			f.record(rec)
		}, want: []string{"WARN  " + vol + "the node plugin ignores record ", "it is of version 2, not 1"}},
		{name: "record under another volume's name", setup: func(f *doctorNode) {
			f.record(fsRecord(dtVolume2, 259, 1), dtVolume1)
		}, want: []string{"WARN  " + vol + "the node plugin ignores record ", `it names volume "` + dtVolume2 + `"`}},
		{name: "unreadable record", setup: func(f *doctorNode) {
			f.write(filepath.Join(f.stateDir, "volumes", "broken.json"), "{not json")
			f.write(filepath.Join(f.stateDir, "volumes", ".broken.json.123.tmp"), "a temporary file of the node plugin")
			f.write(filepath.Join(f.stateDir, "volumes", "README"), "not a record")
		}, want: []string{"ok    staging records: 1 in ", "WARN  volume broken: the node plugin ignores record ", "invalid character"}},
		{name: "state dir unreadable", setup: func(f *doctorNode) { f.write(filepath.Join(f.stateDir, "volumes"), "a file") }, code: 1,
			want: []string{"FAIL  staging records: cannot read "}},
		{name: "mount table unreadable", setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mountErr = errors.New("cannot read the mount table, so mount state is unknown: boom")
		}, code: 1, want: []string{"FAIL  " + vol + "cannot read the mount table, so mount state is unknown: boom"}},
		{name: "mount table hangs", args: []string{"--timeout=300ms"}, setup: func(f *doctorNode) {
			ma, mi := f.volume(1, dtVolume1)
			f.record(fsRecord(dtVolume1, ma, mi))
			f.mountHang = make(chan struct{})
			f.t.Cleanup(func() { close(f.mountHang) })
		}, code: 1, want: []string{"FAIL  " + vol + "did not finish within 300ms", "      fix: re-run with a longer --timeout (e.g. --timeout=900ms); if it still hangs: a read of sysfs or /dev is stuck"}},
	})
}

// TestDoctorPaths: the doctor lists a multipath volume's paths, and warns (saying what to
// do) when one is down or native multipath is off.
func TestDoctorPaths(t *testing.T) {
	rec := stagingRecord{VolumeID: "pvc-mp", NQN: testPrefix + "mp", Address: "10.0.0.10", Addresses: []string{"10.0.0.10", "10.0.1.10"}, Port: 4420}
	ctrl := func(name, addr, state string) nvme.Controller {
		return nvme.Controller{Name: name, State: state, TrAddr: addr, TrSvcID: 4420}
	}
	ok := okResult("ext4 mounted")
	for _, tc := range []struct {
		name        string
		single      bool
		ctrls       []nvme.Controller
		status      verdict
		finding     string
		fix, detail string
	}{
		{"both live", false, []nvme.Controller{ctrl("nvme1", "10.0.0.10", "live"), ctrl("nvme2", "10.0.1.10", "live")}, verdictOK, "ext4 mounted", "",
			"paths: 10.0.0.10 live (nvme1), 10.0.1.10 live (nvme2)"},
		{"one reconnecting", false, []nvme.Controller{ctrl("nvme1", "10.0.0.10", "live"), ctrl("nvme2", "10.0.1.10", "connecting")}, verdictWarn,
			"degraded: 1 of 2 paths live (10.0.0.10 live (nvme1), 10.0.1.10 reconnecting)", "check the network path", "paths: 10.0.0.10 live (nvme1), 10.0.1.10 reconnecting"},
		{"one given up", false, []nvme.Controller{ctrl("nvme2", "10.0.1.10", "live")}, verdictWarn,
			"degraded: 1 of 2 paths live (10.0.0.10 not connected, 10.0.1.10 live (nvme2))", "node plugin one the kernel gave up", "10.0.0.10 not connected"},
		{"multipath off", true, []nvme.Controller{ctrl("nvme1", "10.0.0.10", "live")}, verdictWarn,
			"uses one of its 2 paths (10.0.0.10), because native NVMe multipath was off", "nvme_core.multipath=Y", "10.0.1.10 unused (native NVMe multipath is off)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rec
			r.SinglePath = tc.single
			h := nvme.Health{Controllers: tc.ctrls, Connected: true, Live: true}
			got := judgePaths(ok, r, stagedFacts{health: h, paths: pathStatesOf(r, h, nil)})
			if got.status != tc.status || !strings.Contains(got.finding, tc.finding) || !strings.Contains(got.fix, tc.fix) ||
				len(got.details) != 1 || !strings.Contains(got.details[0], tc.detail) {
				t.Fatalf("got %+v, want status %v finding %q fix %q detail %q", got, tc.status, tc.finding, tc.fix, tc.detail)
			}
		})
	}
	if got := judgePaths(failResult("x", "stale"), rec, stagedFacts{}); got.status != verdictFail || got.finding != "stale" {
		t.Fatalf("a failing volume's verdict must stay: %+v", got)
	}
}
