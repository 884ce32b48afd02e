package nvme

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// sysfs reads the kernel's NVMe objects under root (normally /sys). It never caches:
// controllers and disks come and go (and are renumbered) behind our back.
//
// Layout (see reference/nvme-tcp-kernel.md):
//
//	class/nvme-subsystem/nvme-subsysS/  subsysnqn, nvmeC -> controller, nvmeSnH/ (multipath heads)
//	class/nvme/nvmeC/                   state, transport, address, hostnqn, hostid, subsysnqn,
//	                                    nvmeScCnH/ (hidden paths) or nvmeCnH/ (multipath off)
//
// hints remembers in which subsystem directory an NQN was last found. It only says where
// to look first: the subsystem's subsysnqn is read again on every lookup, and on any
// mismatch the whole class directory is scanned, so a renumbered or vanished subsystem
// is never trusted. It keeps resolving cheap on hosts with hundreds of subsystems.
type sysfs struct {
	root  string
	hints *sync.Map // NQN -> subsystem name
}

// subsys is one kernel NVMe subsystem.
type subsys struct {
	name string // nvme-subsys3
	dir  string
	nqn  string
}

// diskAttrs is a block device of a namespace, as sysfs shows it.
type diskAttrs struct {
	name         string
	nsid         int
	major, minor uint32
	sizeBytes    int64
	wwid         string
}

func (s sysfs) subsystemClassDir() string  { return filepath.Join(s.root, "class", "nvme-subsystem") }
func (s sysfs) controllerClassDir() string { return filepath.Join(s.root, "class", "nvme") }

// subsystems lists every NVMe subsystem on the host, sorted by name.
func (s sysfs) subsystems() ([]subsys, error) {
	var out []subsys
	err := s.eachSubsystem(func(sub subsys) bool { out = append(out, sub); return true })
	sortByNumber(out, func(x subsys) string { return x.name })
	return out, err
}

// findSubsystem returns the subsystem whose NQN is exactly nqn. The comparison is exact,
// so "…:pvc-1" never matches "…:pvc-10".
func (s sysfs) findSubsystem(nqn string) (subsys, bool, error) {
	if s.hints != nil {
		if name, ok := s.hints.Load(nqn); ok {
			dir := s.subsystemClassDir() + "/" + name.(string)
			if got, err := readAttr(dir + "/subsysnqn"); err == nil && got == nqn {
				return subsys{name: name.(string), dir: dir, nqn: got}, true, nil
			}
			s.hints.Delete(nqn)
		}
	}
	var found subsys
	err := s.eachSubsystem(func(sub subsys) bool {
		if sub.nqn != nqn {
			return true
		}
		found = sub
		return false
	})
	if err != nil || found.name == "" {
		return subsys{}, false, err
	}
	if s.hints != nil {
		s.hints.Store(nqn, found.name)
	}
	return found, true, nil
}

// eachSubsystem calls fn for every subsystem, in directory order, until fn returns
// false. Subsystems that vanish while being read are left out.
func (s sysfs) eachSubsystem(fn func(subsys) bool) error {
	class, err := os.Open(s.subsystemClassDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil // nvme-core not loaded yet: no subsystems
	}
	if err != nil {
		return err
	}
	defer class.Close()
	names, err := class.Readdirnames(-1)
	if err != nil {
		return fmt.Errorf("list %s: %w", class.Name(), err)
	}
	classFD := int(class.Fd())
	for _, name := range names {
		if !strings.HasPrefix(name, "nvme-subsys") {
			continue
		}
		dir := s.subsystemClassDir() + "/" + name
		nqn, err := readAttrAt(classFD, name+"/subsysnqn")
		if vanished(err) {
			continue
		}
		if err != nil {
			return err
		}
		if !fn(subsys{name: name, dir: dir, nqn: nqn}) {
			return nil
		}
	}
	return nil
}

// controllers returns the subsystem's controllers, sorted by name. A controller whose
// subsysnqn is not the subsystem's (which the kernel never shows) is left out rather than
// trusted.
func (s sysfs) controllers(sub subsys) ([]Controller, error) {
	ctrls, _, err := s.controllersIn(sub.dir, func(nqn string) bool { return nqn == sub.nqn })
	return ctrls, err
}

// controllersOf returns every controller on the host whose subsystem is nqn, sorted by
// name, whether or not its subsystem directory still links it.
func (s sysfs) controllersOf(nqn string) ([]Controller, error) {
	ctrls, _, err := s.controllersIn(s.controllerClassDir(), func(got string) bool { return got == nqn })
	return ctrls, err
}

// allControllers reads every controller on the host with its subsystem NQN.
func (s sysfs) allControllers() ([]Controller, []string, error) {
	return s.controllersIn(s.controllerClassDir(), nil)
}

// controllersIn reads the controllers named in dir (class/nvme, or a subsystem's
// directory, which links its controllers) whose subsystem NQN passes want (nil: all),
// sorted by name, with their NQNs. Only the NQN is read of the others. Controllers, or a
// subsystem directory, that vanish while being read are left out.
func (s sysfs) controllersIn(dir string, want func(nqn string) bool) ([]Controller, []string, error) {
	names, err := readDirNames(dir)
	if vanished(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	sortByNumber(names, func(n string) string { return n })
	var ctrls []Controller
	var nqns []string
	for _, name := range names {
		if !isControllerName(name) {
			continue
		}
		nqn, err := readAttr(s.controllerClassDir() + "/" + name + "/subsysnqn")
		if err == nil && want != nil && !want(nqn) {
			continue
		}
		var c Controller
		if err == nil {
			c, err = s.controller(name)
		}
		if vanished(err) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		ctrls, nqns = append(ctrls, c), append(nqns, nqn)
	}
	return ctrls, nqns, nil
}

// controller reads the attributes of controller name (other than its subsysnqn).
func (s sysfs) controller(name string) (Controller, error) {
	dir := s.controllerClassDir() + "/" + name + "/"
	var v [5]string
	for i, attr := range [...]string{"state", "transport", "address", "hostnqn", "hostid"} {
		val, err := readAttr(dir + attr)
		if err != nil && !(attr == "hostid" && errors.Is(err, fs.ErrNotExist)) {
			return Controller{}, err
		}
		v[i] = val
	}
	c := Controller{Name: name, State: v[0], Transport: v[1], Address: v[2], HostNQN: v[3], HostID: v[4]}
	c.TrAddr, c.TrSvcID = parseAddress(v[2])
	return c, nil
}

// disks returns the usable block devices of a subsystem's namespaces: the multipath head
// disks in the subsystem directory, and with multipath off (or a subsystem the kernel
// does not treat as multipath-capable) the per-controller disks nvme<C>n<H>. Hidden
// per-path disks (nvme<S>c<C>n<H>) have no /dev node and are skipped. When nsid > 0, only
// that namespace's disks are read, and the search stops at the first match.
func (s sysfs) disks(sub subsys, ctrls []Controller, nsid int) ([]diskAttrs, error) {
	dirs := []string{sub.dir}
	for _, c := range ctrls {
		dirs = append(dirs, filepath.Join(s.controllerClassDir(), c.Name))
	}
	var out []diskAttrs
	for _, dir := range dirs {
		names, err := readDirNames(dir)
		if vanished(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			if !isDiskName(name) {
				continue
			}
			d, err := readDisk(filepath.Join(dir, name), name, nsid)
			if vanished(err) || errors.Is(err, errOtherNamespace) {
				continue
			}
			if err != nil {
				return nil, err
			}
			out = append(out, d)
			if nsid > 0 {
				return out, nil
			}
		}
	}
	return out, nil
}

var errOtherNamespace = errors.New("another namespace")

// readDisk reads the disk at dir; with wantNSID > 0 it stops early (errOtherNamespace)
// when the disk belongs to another namespace.
func readDisk(dir, name string, wantNSID int) (diskAttrs, error) {
	nsidText, err := readAttr(filepath.Join(dir, "nsid"))
	if err != nil {
		return diskAttrs{}, err
	}
	nsid, err := strconv.Atoi(nsidText)
	if err != nil {
		return diskAttrs{}, fmt.Errorf("parse %s: %q is not a namespace ID", filepath.Join(dir, "nsid"), nsidText)
	}
	if wantNSID > 0 && nsid != wantNSID {
		return diskAttrs{}, errOtherNamespace
	}
	if hidden, err := readAttr(filepath.Join(dir, "hidden")); err == nil && hidden == "1" {
		return diskAttrs{}, errOtherNamespace // a path, not a usable disk
	}
	d := diskAttrs{name: name, nsid: nsid}
	dev, err := readAttr(filepath.Join(dir, "dev"))
	if err != nil {
		return diskAttrs{}, err
	}
	if d.major, d.minor, err = parseDevNumber(dev); err != nil {
		return diskAttrs{}, fmt.Errorf("parse %s: %w", filepath.Join(dir, "dev"), err)
	}
	size, err := readAttr(filepath.Join(dir, "size"))
	if err != nil {
		return diskAttrs{}, err
	}
	sectors, err := strconv.ParseInt(size, 10, 64)
	if err != nil || sectors < 0 {
		return diskAttrs{}, fmt.Errorf("parse %s: %q is not a sector count", filepath.Join(dir, "size"), size)
	}
	d.sizeBytes = sectors * 512 // sysfs sizes are in 512-byte sectors whatever the block size
	if wwid, err := readAttr(filepath.Join(dir, "wwid")); err == nil {
		d.wwid = wwid
	}
	return d, nil
}
