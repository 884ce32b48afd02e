package nvme

import (
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The fake kernel: a sysfs tree in a temp dir laid out like the real one (see
// reference/nvme-tcp-kernel.md and the VM's sysfs dumps), a /dev whose "device nodes" are
// regular files holding "major:minor", and a fabrics file that returns any errno.

const (
	testHostNQN = "nqn.2014-08.org.nvmexpress:uuid:6a1d7e1c-8d55-4c9f-a2bd-0f1e2d3c4b5a"
	testHostID  = "6a1d7e1c-8d55-4c9f-a2bd-0f1e2d3c4b5a"
	mikrotik    = "nqn.2000-02.com.mikrotik:"
	testPrefix  = mikrotik + "pvc-"
	nixosVar    = "nqn.2024-01.io.nixos:var"
)

type fakeSys struct {
	root     string // sysfs root
	dev      string // /dev
	mu       sync.Mutex
	minor    uint32
	writes   []string          // "path=value" of every attribute write, in order
	held     map[int]bool      // subsystems held open (a stale mount): they outlive their controllers
	pending  map[string]int64  // disk name -> size (sectors) that the next rescan applies
	deleteFn func(c int) error // overrides delete_controller's effect when set
}

// ctrlSpec describes a controller; zero fields take the defaults.
type ctrlSpec struct {
	state, traddr, hostnqn, hostid string
	trsvcid                        int
}

func newFakeSys(t testing.TB) *fakeSys {
	dir := t.TempDir()
	f := &fakeSys{root: filepath.Join(dir, "sys"), dev: filepath.Join(dir, "dev"),
		held: map[int]bool{}, pending: map[string]int64{}}
	for _, d := range []string{"class/nvme", "class/nvme-subsystem", "block", "devices/virtual/nvme-subsystem", "devices/virtual/nvme-fabrics/ctl"} {
		must(os.MkdirAll(filepath.Join(f.root, d), 0o755))
	}
	must(os.MkdirAll(f.dev, 0o755))
	return f
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

func (f *fakeSys) subsysDir(s int) string {
	return filepath.Join(f.root, "devices/virtual/nvme-subsystem", fmt.Sprintf("nvme-subsys%d", s))
}
func (f *fakeSys) ctrlDir(c int) string {
	return filepath.Join(f.root, "devices/virtual/nvme-fabrics/ctl", fmt.Sprintf("nvme%d", c))
}

func writeFiles(dir string, attrs map[string]string) {
	must(os.MkdirAll(dir, 0o755))
	for k, v := range attrs {
		must(os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o644))
	}
}

func (f *fakeSys) addSubsystem(s int, nqn string) *fakeSys {
	writeFiles(f.subsysDir(s), map[string]string{"subsysnqn": nqn, "subsystype": "nvm", "iopolicy": "numa", "model": "Linux"})
	must(os.Symlink(f.subsysDir(s), filepath.Join(f.root, "class/nvme-subsystem", filepath.Base(f.subsysDir(s)))))
	// The generic char device ng<S>n<H> lives beside the heads and must never be taken for a disk.
	writeFiles(filepath.Join(f.subsysDir(s), fmt.Sprintf("ng%dn1", s)), map[string]string{"dev": "240:0"})
	return f
}

func (f *fakeSys) addController(s, c int, spec ctrlSpec) *fakeSys {
	if spec.state == "" {
		spec.state = "live"
	}
	if spec.traddr == "" {
		spec.traddr = "10.0.0.1"
	}
	if spec.trsvcid == 0 {
		spec.trsvcid = 4420
	}
	if spec.hostnqn == "" {
		spec.hostnqn, spec.hostid = testHostNQN, testHostID
	}
	nqn, err := os.ReadFile(filepath.Join(f.subsysDir(s), "subsysnqn"))
	must(err)
	writeFiles(f.ctrlDir(c), map[string]string{
		"subsysnqn": strings.TrimSpace(string(nqn)), "state": spec.state, "transport": "tcp",
		"address": fmt.Sprintf("traddr=%s,trsvcid=%d,src_addr=10.0.0.9", spec.traddr, spec.trsvcid),
		"hostnqn": spec.hostnqn, "hostid": spec.hostid, "cntlid": strconv.Itoa(c + 1),
		"ctrl_loss_tmo": "off", "reconnect_delay": "5", "fast_io_fail_tmo": "off", "kato": "5",
		"delete_controller": "", "reset_controller": "", "rescan_controller": "", "dev": fmt.Sprintf("247:%d", c),
	})
	name := fmt.Sprintf("nvme%d", c)
	must(os.Symlink(f.ctrlDir(c), filepath.Join(f.root, "class/nvme", name)))
	must(os.Symlink(f.ctrlDir(c), filepath.Join(f.subsysDir(s), name)))
	return f
}

// diskAttrFiles are a disk's sysfs attributes.
func (f *fakeSys) diskAttrFiles(nsid int, sectors int64, hidden bool) (map[string]string, string) {
	f.mu.Lock()
	f.minor++
	mm := fmt.Sprintf("259:%d", f.minor)
	f.mu.Unlock()
	h := "0"
	if hidden {
		h = "1"
	}
	return map[string]string{"nsid": strconv.Itoa(nsid), "size": strconv.FormatInt(sectors, 10), "hidden": h,
		"wwid": fmt.Sprintf("uuid.00000000-0000-0000-0000-%012d", nsid), "ro": "0"}, mm
}

// addHead adds a multipath head disk nvme<S>n<H> for nsid, with hidden paths
// nvme<S>c<C>n<H> under every controller the subsystem has now, and its device node.
func (f *fakeSys) addHead(s, h, nsid int, sectors int64) string {
	name := fmt.Sprintf("nvme%dn%d", s, h)
	f.addDisk(f.subsysDir(s), name, nsid, sectors)
	entries, err := os.ReadDir(f.subsysDir(s))
	must(err)
	for _, e := range entries {
		if isControllerName(e.Name()) {
			c, _ := strconv.Atoi(strings.TrimPrefix(e.Name(), "nvme"))
			path, _ := f.diskAttrFiles(nsid, sectors, true)
			pname := fmt.Sprintf("nvme%dc%dn%d", s, c, h)
			writeFiles(filepath.Join(f.ctrlDir(c), pname), path) // hidden: no dev attribute
			must(os.Symlink(filepath.Join(f.ctrlDir(c), pname), filepath.Join(f.root, "block", pname)))
		}
	}
	return name
}

// addDirect adds a disk under controller c as the kernel does with multipath off: nvme<C>n<H>.
func (f *fakeSys) addDirect(c, h, nsid int, sectors int64) string {
	name := fmt.Sprintf("nvme%dn%d", c, h)
	f.addDisk(f.ctrlDir(c), name, nsid, sectors)
	return name
}

// addDisk adds usable disk name below parent, its /sys/block link and its device node.
// The directory appears whole (built aside, then renamed), as the kernel's does: a reader
// polling concurrently never sees a half-written attribute.
func (f *fakeSys) addDisk(parent, name string, nsid int, sectors int64) {
	attrs, mm := f.diskAttrFiles(nsid, sectors, false)
	attrs["dev"] = mm
	dir := filepath.Join(parent, name)
	staging := filepath.Join(parent, ".staging-"+name)
	writeFiles(staging, attrs)
	must(os.Rename(staging, dir))
	must(os.Symlink(dir, filepath.Join(f.root, "block", name)))
	f.addDevNode(name, mm)
}

func (f *fakeSys) addDevNode(name, majMin string) {
	must(os.WriteFile(filepath.Join(f.dev, name), []byte(majMin), 0o600))
}

// statRdev is Host.statRdev over the fake /dev.
func (f *fakeSys) statRdev(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	ma, mi, err := parseDevNumber(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, err
	}
	return unix.Mkdev(ma, mi), nil
}

// set overwrites a sysfs attribute (relative to the sysfs root).
func (f *fakeSys) set(rel, value string) {
	must(os.WriteFile(filepath.Join(f.root, rel), []byte(value+"\n"), 0o644))
}

// removeController does what the kernel does when a controller is deleted: the
// controller, its hidden paths and its links go; the subsystem's heads go with its last
// controller, and the subsystem too unless it is held open.
func (f *fakeSys) removeController(c int) {
	name := fmt.Sprintf("nvme%d", c)
	nqn, _ := os.ReadFile(filepath.Join(f.ctrlDir(c), "subsysnqn"))
	entries, _ := os.ReadDir(f.ctrlDir(c))
	for _, e := range entries {
		os.Remove(filepath.Join(f.root, "block", e.Name()))
	}
	must(os.RemoveAll(f.ctrlDir(c)))
	os.Remove(filepath.Join(f.root, "class/nvme", name))
	subs, _ := os.ReadDir(filepath.Join(f.root, "devices/virtual/nvme-subsystem"))
	for _, sd := range subs {
		dir := filepath.Join(f.root, "devices/virtual/nvme-subsystem", sd.Name())
		got, _ := os.ReadFile(filepath.Join(dir, "subsysnqn"))
		if string(got) != string(nqn) {
			continue
		}
		os.Remove(filepath.Join(dir, name))
		rest, _ := os.ReadDir(dir)
		left := false
		for _, e := range rest {
			left = left || isControllerName(e.Name())
		}
		if left {
			continue
		}
		for _, e := range rest { // last path gone: the heads go (del_gendisk)
			if isDiskName(e.Name()) {
				must(os.RemoveAll(filepath.Join(dir, e.Name())))
				os.Remove(filepath.Join(f.root, "block", e.Name()))
				os.Remove(filepath.Join(f.dev, e.Name()))
			}
		}
		s, _ := strconv.Atoi(strings.TrimPrefix(sd.Name(), "nvme-subsys"))
		if !f.held[s] {
			must(os.RemoveAll(dir))
			os.Remove(filepath.Join(f.root, "class/nvme-subsystem", sd.Name()))
		}
	}
}

// writeAttr is Host.writeAttr over the fake tree: it records the write, performs it like
// the real one (which never creates files), then plays the kernel's reaction.
func (f *fakeSys) writeAttr(path, value string) error {
	f.mu.Lock()
	f.writes = append(f.writes, path+"="+value)
	f.mu.Unlock()
	if err := writeSysfsAttr(path, value); err != nil {
		return err
	}
	dir, attr := filepath.Dir(path), filepath.Base(path)
	c, _ := strconv.Atoi(strings.TrimPrefix(filepath.Base(dir), "nvme"))
	switch attr {
	case "delete_controller":
		if f.deleteFn != nil {
			return f.deleteFn(c)
		}
		f.removeController(c)
	case "rescan_controller":
		f.mu.Lock()
		defer f.mu.Unlock()
		for name, size := range f.pending {
			if p := filepath.Join(f.root, "block", name, "size"); fileExists(p) {
				must(os.WriteFile(p, []byte(strconv.FormatInt(size, 10)+"\n"), 0o644))
				delete(f.pending, name)
			}
		}
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func (f *fakeSys) writeLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.writes...)
}

// snapshot renders every file below the given sysfs objects (and their device nodes)
// with content and modification time, to prove an operation left them untouched.
func (f *fakeSys) snapshot(dirs ...string) string {
	var lines []string
	for _, d := range dirs {
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			fi, err := e.Info()
			if err != nil {
				return err
			}
			b, _ := os.ReadFile(p)
			lines = append(lines, fmt.Sprintf("%s %d %q", p, fi.ModTime().UnixNano(), b))
			return nil
		})
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// fakeFabrics is /dev/nvme-fabrics: it records the option strings written and answers
// with connectFn (default: EIO).
type fakeFabrics struct {
	mu        sync.Mutex
	options   string
	optErr    error
	written   []string
	connectFn func(opts string) (string, error)
}

const kernelOptions = "instance=-1,cntlid=-1,transport=%s,traddr=%s,trsvcid=%s,nqn=%s,queue_size=%d,nr_io_queues=%d,reconnect_delay=%d,ctrl_loss_tmo=%d,keep_alive_tmo=%d,hostnqn=%s,host_traddr=%s,host_iface=%s,hostid=%s,duplicate_connect,disable_sqflow,hdr_digest,data_digest,nr_write_queues=%d,nr_poll_queues=%d,tos=%d,fast_io_fail_tmo=%d,discovery,dhchap_secret=%s,dhchap_ctrl_secret=%s\n"

func newFakeFabrics() *fakeFabrics { return &fakeFabrics{options: kernelOptions} }

func (ff *fakeFabrics) readOptions() (string, error) {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return ff.options, ff.optErr
}

func (ff *fakeFabrics) connect(opts string) (string, error) {
	ff.mu.Lock()
	ff.written = append(ff.written, opts)
	fn := ff.connectFn
	ff.mu.Unlock()
	if fn == nil {
		return "", errnoErr("write", unix.EIO)
	}
	return fn(opts)
}

func (ff *fakeFabrics) writes() []string {
	ff.mu.Lock()
	defer ff.mu.Unlock()
	return append([]string(nil), ff.written...)
}

// errnoErr is what devFabrics returns for an errno.
func errnoErr(op string, errno unix.Errno) error {
	return &fs.PathError{Op: op, Path: "/dev/nvme-fabrics", Err: errno}
}

// optionValue returns option key of an option string.
func optionValue(opts, key string) (string, bool) {
	for _, kv := range strings.Split(opts, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// newTestHost builds a Host over the fake tree and fabrics, with the test identity.
func newTestHost(t testing.TB, f *fakeSys, ff *fakeFabrics) *Host {
	t.Helper()
	hostDir := filepath.Join(t.TempDir(), "etc-nvme")
	writeFiles(hostDir, map[string]string{"hostnqn": testHostNQN, "hostid": testHostID})
	g, err := NewGuard(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	h, err := newHost(Config{SysfsRoot: f.root, DevRoot: f.dev, HostDir: hostDir, Guard: g,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, ff)
	if err != nil {
		t.Fatal(err)
	}
	h.statRdev = f.statRdev
	h.writeAttr = f.writeAttr
	return h
}

// fakeKernel plays the kernel's side of a connect over the fake tree: EALREADY for a
// matching controller, EIO for an NQN the target does not export, else a new controller
// (lowest free number) in the NQN's subsystem (existing or new) with head disks for the
// exported namespaces, added after diskDelay.
type fakeKernel struct {
	f         *fakeSys
	exports   map[string][]int // NQN -> namespace IDs
	diskDelay time.Duration
	mu        sync.Mutex // one connect at a time, like the kernel's nvmf_dev_mutex
	wg        sync.WaitGroup
}

func (k *fakeKernel) connect(opts string) (string, error) {
	nqn, _ := optionValue(opts, "nqn")
	traddr, _ := optionValue(opts, "traddr")
	port, _ := optionValue(opts, "trsvcid")
	hostnqn, _ := optionValue(opts, "hostnqn")
	hostid, _ := optionValue(opts, "hostid")
	k.mu.Lock()
	defer k.mu.Unlock()
	entries, _ := os.ReadDir(filepath.Join(k.f.root, "class/nvme"))
	used := map[int]bool{}
	for _, e := range entries {
		dir := filepath.Join(k.f.root, "class/nvme", e.Name())
		n, _ := strconv.Atoi(strings.TrimPrefix(e.Name(), "nvme"))
		used[n] = true
		attr := func(a string) string { b, _ := os.ReadFile(filepath.Join(dir, a)); return strings.TrimSpace(string(b)) }
		if attr("subsysnqn") == nqn && attr("hostnqn") == hostnqn && !dying(attr("state")) &&
			attr("address") == fmt.Sprintf("traddr=%s,trsvcid=%s,src_addr=10.0.0.9", traddr, port) {
			return "", errnoErr("write", unix.EALREADY)
		}
	}
	nsids, ok := k.exports[nqn]
	if !ok {
		return "", errnoErr("write", unix.EIO)
	}
	c := 0
	for used[c] {
		c++
	}
	s, found := -1, false
	subs, _ := os.ReadDir(filepath.Join(k.f.root, "class/nvme-subsystem"))
	usedSub := map[int]bool{}
	for _, e := range subs {
		n, _ := strconv.Atoi(strings.TrimPrefix(e.Name(), "nvme-subsys"))
		usedSub[n] = true
		b, _ := os.ReadFile(filepath.Join(k.f.root, "class/nvme-subsystem", e.Name(), "subsysnqn"))
		if strings.TrimSpace(string(b)) == nqn {
			s, found = n, true
		}
	}
	if !found {
		for s = 0; usedSub[s]; s++ {
		}
		k.f.addSubsystem(s, nqn)
	}
	port4, _ := strconv.Atoi(port)
	k.f.addController(s, c, ctrlSpec{traddr: traddr, trsvcid: port4, hostnqn: hostnqn, hostid: hostid})
	if v, ok := optionValue(opts, "ctrl_loss_tmo"); ok && v != "-1" {
		k.f.set(fmt.Sprintf("class/nvme/nvme%d/ctrl_loss_tmo", c), v)
	}
	addDisks := func() {
		for _, nsid := range nsids {
			h := 1
			for fileExists(filepath.Join(k.f.subsysDir(s), fmt.Sprintf("nvme%dn%d", s, h))) {
				h++
			}
			k.f.addHead(s, h, nsid, 1<<21)
		}
	}
	if k.diskDelay > 0 {
		k.wg.Add(1)
		go func() { defer k.wg.Done(); time.Sleep(k.diskDelay); addDisks() }()
	} else {
		addDisks()
	}
	return fmt.Sprintf("instance=%d,cntlid=%d\n", c, c+1), nil
}

// Identity returns the host identity passed in every connect.
func (h *Host) Identity() Identity { return h.id }
