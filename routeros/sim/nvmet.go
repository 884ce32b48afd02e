package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Filesystem magics (statfs f_type) the exporter cares about.
const (
	configfsMagic = 0x62656570
	tmpfsMagic    = 0x01021994
	ramfsMagic    = 0x858458f6
)

// nvmetExporter exports disks through the kernel NVMe target's configfs, the layout
// ../shared/nvmf-vm/guest/nvmet-ctl drives by hand:
//
//	subsystems/<nqn>/attr_allow_any_host          1, or 0 with allowed_hosts/<host> → hosts/<host>
//	subsystems/<nqn>/namespaces/1/device_path     the backing file (buffered_io=1 on tmpfs)
//	subsystems/<nqn>/namespaces/1/enable          1
//	ports/<n>/addr_{trtype,adrfam,traddr,trsvcid} tcp, ipv4, address, port (reused when equal)
//	ports/<n>/subsystems/<nqn>                    → subsystems/<nqn>
//
// Order matters to the kernel: a namespace's device_path can only change while it is
// disabled; allowed_hosts links are refused while attr_allow_any_host is 1, and
// attr_allow_any_host=1 is refused while links exist.
//
// On a plain directory standing in for configfs (unit tests) mkdir creates no default
// groups and rmdir does not drop attributes, so the exporter creates the groups itself
// and, only there, removes the attribute files before rmdir.
type nvmetExporter struct {
	root string
	fake bool // root is not configfs

	mu           sync.Mutex
	createdPorts map[string]bool
	createdHosts map[string]bool
}

func newNVMetExporter(root string) (*nvmetExporter, error) {
	for _, sub := range []string{"subsystems", "ports", "hosts"} {
		if st, err := os.Stat(filepath.Join(root, sub)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("sim: NVMet export requested but %s is not there: "+
				"as root, load the target (modprobe nvmet nvmet-tcp) and mount configfs "+
				"(mount -t configfs none /sys/kernel/config), or run without NVMet", filepath.Join(root, sub))
		}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(root, &fs); err != nil {
		return nil, fmt.Errorf("sim: statfs %s: %w", root, err)
	}
	return &nvmetExporter{root: root, fake: int64(fs.Type) != configfsMagic,
		createdPorts: map[string]bool{}, createdHosts: map[string]bool{}}, nil
}

func writeAttr(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

func readAttr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func mkdirExisting(path string) error {
	if err := os.Mkdir(path, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("mkdir %s: %w", path, err)
	}
	return nil
}

func symlinkExisting(target, link string) error {
	if err := os.Symlink(target, link); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("link %s → %s: %w", link, target, err)
	}
	return nil
}

func (n *nvmetExporter) subsys(nqn string) string {
	return filepath.Join(n.root, "subsystems", nqn)
}

func (n *nvmetExporter) export(e exportSpec) error {
	if err := validNQNName(e.nqn); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	sub := n.subsys(e.nqn)
	if err := os.Mkdir(sub, 0o755); errors.Is(err, os.ErrExist) {
		// Someone else's subsystem (or a crashed run's): never take it over or tear it down.
		return fmt.Errorf("nvmet subsystem %s exists and was not made by this simulator: "+
			"remove it (nvmet-unexport %s) or use another NQN", e.nqn, e.nqn)
	} else if err != nil {
		return fmt.Errorf("create nvmet subsystem: %w", err)
	}
	ns := filepath.Join(sub, "namespaces", "1")
	err := n.configure(sub, ns, e)
	if err == nil {
		err = n.linkPort(e)
	}
	if err != nil {
		_ = n.remove(e.nqn)
		return err
	}
	return nil
}

func (n *nvmetExporter) configure(sub, ns string, e exportSpec) error {
	if err := n.applyHosts(sub, e.hosts); err != nil {
		return err
	}
	for _, d := range []string{filepath.Join(sub, "namespaces"), filepath.Join(sub, "allowed_hosts"), ns} {
		if err := mkdirExisting(d); err != nil {
			return err
		}
	}
	if readAttr(filepath.Join(ns, "enable")) == "1" {
		if err := writeAttr(filepath.Join(ns, "enable"), "0"); err != nil {
			return err
		}
	}
	if err := writeAttr(filepath.Join(ns, "device_path"), e.file); err != nil {
		return err
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(e.file, &fs); err == nil && (int64(fs.Type) == tmpfsMagic || int64(fs.Type) == ramfsMagic) {
		// tmpfs has no O_DIRECT: nvmet's file backend needs buffered I/O there.
		if err := writeAttr(filepath.Join(ns, "buffered_io"), "1"); err != nil {
			return err
		}
	}
	return writeAttr(filepath.Join(ns, "enable"), "1")
}

// applyHosts sets who may connect: any host, or exactly the listed host NQNs.
func (n *nvmetExporter) applyHosts(sub string, hosts []string) error {
	allowed := filepath.Join(sub, "allowed_hosts")
	if err := mkdirExisting(allowed); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, h := range hosts {
		if err := validNQNName(h); err != nil {
			return err
		}
		want[h] = true
	}
	entries, _ := os.ReadDir(allowed)
	for _, de := range entries {
		if !want[de.Name()] {
			if err := os.Remove(filepath.Join(allowed, de.Name())); err != nil {
				return fmt.Errorf("unlink allowed host: %w", err)
			}
			n.dropHost(de.Name())
		}
	}
	if len(hosts) == 0 {
		return writeAttr(filepath.Join(sub, "attr_allow_any_host"), "1")
	}
	if err := writeAttr(filepath.Join(sub, "attr_allow_any_host"), "0"); err != nil {
		return err
	}
	for _, h := range hosts {
		hostDir := filepath.Join(n.root, "hosts", h)
		if _, err := os.Stat(hostDir); errors.Is(err, os.ErrNotExist) {
			if err := mkdirExisting(hostDir); err != nil {
				return err
			}
			n.createdHosts[h] = true
		}
		if err := symlinkExisting(hostDir, filepath.Join(allowed, h)); err != nil {
			return err
		}
	}
	return nil
}

// dropHost removes a hosts/<nqn> entry this exporter made once nothing links to it (the
// kernel refuses while a link remains; the stand-in directory needs the check).
func (n *nvmetExporter) dropHost(h string) {
	if !n.createdHosts[h] {
		return
	}
	subs, _ := os.ReadDir(filepath.Join(n.root, "subsystems"))
	for _, s := range subs {
		if _, err := os.Lstat(filepath.Join(n.root, "subsystems", s.Name(), "allowed_hosts", h)); err == nil {
			return
		}
	}
	if err := n.rmdir(filepath.Join(n.root, "hosts", h)); err == nil {
		delete(n.createdHosts, h)
	}
}

// linkPort links the subsystem to the TCP port for each of its addresses (several: an
// RDS with a storage port on each network, for multipath) and service id, creating a
// port (lowest free number) where none matches.
func (n *nvmetExporter) linkPort(e exportSpec) error {
	for _, addr := range e.addrs {
		port, err := n.findPort(addr, e.port)
		if err != nil {
			return err
		}
		if port == "" {
			if port, err = n.createPort(addr, e.port); err != nil {
				return err
			}
		}
		if err := symlinkExisting(n.subsys(e.nqn), filepath.Join(n.root, "ports", port, "subsystems", e.nqn)); err != nil {
			return err
		}
	}
	return nil
}

func (n *nvmetExporter) findPort(addr string, svc int) (string, error) {
	entries, err := os.ReadDir(filepath.Join(n.root, "ports"))
	if err != nil {
		return "", fmt.Errorf("list nvmet ports: %w", err)
	}
	for _, de := range entries {
		p := filepath.Join(n.root, "ports", de.Name())
		if readAttr(filepath.Join(p, "addr_trtype")) == "tcp" &&
			readAttr(filepath.Join(p, "addr_traddr")) == addr &&
			readAttr(filepath.Join(p, "addr_trsvcid")) == strconv.Itoa(svc) {
			return de.Name(), nil
		}
	}
	return "", nil
}

func (n *nvmetExporter) createPort(addr string, svc int) (string, error) {
	used := map[int]bool{}
	entries, _ := os.ReadDir(filepath.Join(n.root, "ports"))
	for _, de := range entries {
		if id, err := strconv.Atoi(de.Name()); err == nil {
			used[id] = true
		}
	}
	id := 1
	for used[id] {
		id++
	}
	name := strconv.Itoa(id)
	p := filepath.Join(n.root, "ports", name)
	if err := os.Mkdir(p, 0o755); err != nil {
		return "", fmt.Errorf("create nvmet port: %w", err)
	}
	n.createdPorts[name] = true
	for _, kv := range [][2]string{{"addr_trtype", "tcp"}, {"addr_adrfam", "ipv4"},
		{"addr_traddr", addr}, {"addr_trsvcid", strconv.Itoa(svc)}} {
		if err := writeAttr(filepath.Join(p, kv[0]), kv[1]); err != nil {
			return "", err
		}
	}
	if err := mkdirExisting(filepath.Join(p, "subsystems")); err != nil {
		return "", err
	}
	return name, nil
}

func (n *nvmetExporter) unexport(e exportSpec) error {
	if validNQNName(e.nqn) != nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.remove(e.nqn)
}

// remove tears a subsystem down in the kernel's order: port links (hosts lose their
// controllers), namespace disabled and removed, host links, the subsystem, then ports and
// hosts this exporter created that nothing uses any more. A missing subsystem is not an error.
func (n *nvmetExporter) remove(nqn string) error {
	var errs []error
	ports, _ := os.ReadDir(filepath.Join(n.root, "ports"))
	for _, p := range ports {
		link := filepath.Join(n.root, "ports", p.Name(), "subsystems", nqn)
		if st, err := os.Lstat(link); err == nil && st.Mode()&os.ModeSymlink != 0 {
			errs = append(errs, os.Remove(link))
		}
	}
	sub := n.subsys(nqn)
	if _, err := os.Stat(sub); errors.Is(err, os.ErrNotExist) {
		n.dropUnusedPorts()
		return errors.Join(errs...)
	}
	nss, _ := os.ReadDir(filepath.Join(sub, "namespaces"))
	for _, ns := range nss {
		dir := filepath.Join(sub, "namespaces", ns.Name())
		if readAttr(filepath.Join(dir, "enable")) == "1" {
			errs = append(errs, writeAttr(filepath.Join(dir, "enable"), "0"))
		}
		errs = append(errs, n.rmdir(dir))
	}
	hosts, _ := os.ReadDir(filepath.Join(sub, "allowed_hosts"))
	for _, h := range hosts {
		errs = append(errs, os.Remove(filepath.Join(sub, "allowed_hosts", h.Name())))
	}
	errs = append(errs, n.rmdir(sub))
	for _, h := range hosts {
		n.dropHost(h.Name())
	}
	n.dropUnusedPorts()
	return errors.Join(errs...)
}

func (n *nvmetExporter) dropUnusedPorts() {
	names := make([]string, 0, len(n.createdPorts))
	for p := range n.createdPorts {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		dir := filepath.Join(n.root, "ports", p)
		if links, _ := os.ReadDir(filepath.Join(dir, "subsystems")); len(links) == 0 {
			if err := n.rmdir(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				delete(n.createdPorts, p)
			}
		}
	}
}

// rmdir removes a configfs directory. On real configfs that drops its attributes and
// default groups with it; on the stand-in directory those are plain files and empty
// directories, removed here one level deep (never recursively beyond that).
func (n *nvmetExporter) rmdir(dir string) error {
	if n.fake {
		entries, _ := os.ReadDir(dir)
		for _, de := range entries {
			_ = os.Remove(filepath.Join(dir, de.Name()))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("rmdir %s: %w", dir, err)
	}
	return nil
}

// resize tells nvmet the backing file grew, so connected hosts see the new capacity.
func (n *nvmetExporter) resize(e exportSpec) error {
	return writeAttr(filepath.Join(n.subsys(e.nqn), "namespaces", "1", "revalidate_size"), "1")
}

func (n *nvmetExporter) setHosts(e exportSpec) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applyHosts(n.subsys(e.nqn), e.hosts)
}
