package nvme

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// sysfs reads the kernel's NVMe objects under root (/sys), never caching them: they come
// and go and are renumbered behind our back.
//
//	class/nvme-subsystem/nvme-subsysS/  subsysnqn, nvmeC -> controller, nvmeSnH/ (multipath heads)
//	class/nvme/nvmeC/                   state, transport, address, hostnqn, hostid, subsysnqn,
//	                                    nvmeScCnH/ (hidden paths) or nvmeCnH/ (multipath off)
//
// hints (NQN → subsystem name) only say where to look first, keeping lookups cheap among
// hundreds of subsystems: subsysnqn is read again every time, and a mismatch scans all.
type sysfs struct {
	root  string
	dev   string // where the disks' device nodes are (Disk.DevPath)
	hints *sync.Map
}

type subsys struct {
	name string // nvme-subsys3
	dir  string
	nqn  string
}

func (s sysfs) subsystemClassDir() string  { return filepath.Join(s.root, "class", "nvme-subsystem") }
func (s sysfs) controllerClassDir() string { return filepath.Join(s.root, "class", "nvme") }
func (s sysfs) ctrlDir(name string) string { return s.controllerClassDir() + "/" + name }

func (s sysfs) subsystems() ([]subsys, error) {
	var out []subsys
	err := s.eachSubsystem(func(sub subsys) bool { out = append(out, sub); return true })
	sortByNumber(out, func(x subsys) string { return x.name })
	return out, err
}

// findSubsystem returns the subsystem whose NQN is exactly nqn ("…:pvc-1" is not "…:pvc-10").
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
		if sub.nqn == nqn {
			found = sub
		}
		return sub.nqn != nqn
	})
	if err != nil || found.name == "" {
		return subsys{}, false, err
	}
	if s.hints != nil {
		s.hints.Store(nqn, found.name)
	}
	return found, true, nil
}

// eachSubsystem calls fn for every subsystem that does not vanish meanwhile, until fn
// returns false.
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
		nqn, err := readAttrAt(classFD, name+"/subsysnqn")
		if vanished(err) {
			continue
		}
		if err != nil {
			return err
		}
		if !fn(subsys{name: name, dir: s.subsystemClassDir() + "/" + name, nqn: nqn}) {
			return nil
		}
	}
	return nil
}

// controllers returns the subsystem's controllers; one whose subsysnqn is another's (the
// kernel never shows that) is left out rather than trusted.
func (s sysfs) controllers(sub subsys) ([]Controller, error) {
	ctrls, _, err := s.controllersIn(sub.dir, func(nqn string) bool { return nqn == sub.nqn })
	return ctrls, err
}

// controllersOf returns every controller of nqn, linked from its subsystem or not.
func (s sysfs) controllersOf(nqn string) ([]Controller, error) {
	ctrls, _, err := s.controllersIn(s.controllerClassDir(), func(got string) bool { return got == nqn })
	return ctrls, err
}

// controllersIn reads the controllers in dir (class/nvme or a subsystem's directory) whose
// NQN passes want (nil: all), sorted, with their NQNs; of the others only the NQN is read.
// What vanishes meanwhile is left out.
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
		nqn, err := readAttr(s.ctrlDir(name) + "/subsysnqn")
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

func (s sysfs) controller(name string) (Controller, error) {
	var v [5]string
	for i, attr := range [...]string{"state", "transport", "address", "hostnqn", "hostid"} {
		val, err := readAttr(s.ctrlDir(name) + "/" + attr)
		if err != nil && !(attr == "hostid" && errors.Is(err, fs.ErrNotExist)) {
			return Controller{}, err
		}
		v[i] = val
	}
	c := Controller{Name: name, State: v[0], Transport: v[1], Address: v[2], HostNQN: v[3], HostID: v[4]}
	for _, kv := range strings.Split(c.Address, ",") { // traddr=127.0.0.1,trsvcid=4420,src_addr=…
		switch k, v, _ := strings.Cut(kv, "="); k {
		case "traddr":
			c.TrAddr = v
		case "trsvcid":
			c.TrSvcID, _ = strconv.Atoi(v)
		}
	}
	return c, nil
}

// disks returns the usable disks of a subsystem: multipath heads in its directory, else
// (multipath off) the per-controller nvme<C>n<H>; hidden paths (nvme<S>c<C>n<H>, no /dev
// node) are skipped. With nsid > 0 it stops at that namespace's first disk.
func (s sysfs) disks(sub subsys, ctrls []Controller, nsid int) ([]Disk, error) {
	dirs := []string{sub.dir}
	for _, c := range ctrls {
		dirs = append(dirs, s.ctrlDir(c.Name))
	}
	var out []Disk
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
			d, err := readDisk(filepath.Join(dir, name), nsid)
			if vanished(err) || errors.Is(err, errOtherNamespace) {
				continue
			}
			if err != nil {
				return nil, err
			}
			d.Name, d.DevPath, d.NQN, d.Controllers = name, filepath.Join(s.dev, name), sub.nqn, ctrls
			if out = append(out, d); nsid > 0 {
				return out, nil
			}
		}
	}
	return out, nil
}

var errOtherNamespace = errors.New("another namespace")

// readDisk reads the disk at dir; errOtherNamespace when wantNSID > 0 and it is another's.
func readDisk(dir string, wantNSID int) (d Disk, err error) {
	attr := func(name string) (string, error) { return readAttr(filepath.Join(dir, name)) }
	nsidText, err := attr("nsid")
	if err != nil {
		return d, err
	}
	if d.NSID, err = strconv.Atoi(nsidText); err != nil {
		return d, fmt.Errorf("parse %s: %q is not a namespace ID", filepath.Join(dir, "nsid"), nsidText)
	}
	if wantNSID > 0 && d.NSID != wantNSID {
		return d, errOtherNamespace
	}
	if hidden, err := attr("hidden"); err == nil && hidden == "1" {
		return d, errOtherNamespace // a path, not a usable disk
	}
	dev, err := attr("dev")
	if err != nil {
		return d, err
	}
	if d.Major, d.Minor, err = parseDevNumber(dev); err != nil {
		return d, fmt.Errorf("parse %s: %w", filepath.Join(dir, "dev"), err)
	}
	size, err := attr("size")
	if err != nil {
		return d, err
	}
	sectors, err := strconv.ParseInt(size, 10, 64)
	if err != nil || sectors < 0 {
		return d, fmt.Errorf("parse %s: %q is not a sector count", filepath.Join(dir, "size"), size)
	}
	d.SizeBytes = sectors * 512 // sysfs sizes are in 512-byte sectors whatever the block size
	d.WWID, _ = attr("wwid")
	return d, nil
}

// isDiskName matches "nvme<digits>n<digits>" (not hidden paths, not char devices "ng<S>n<H>").
func isDiskName(name string) bool {
	rest, ok := strings.CutPrefix(name, "nvme")
	a, b, found := strings.Cut(rest, "n")
	return ok && found && isDigits(a) && isDigits(b)
}

func parseDevNumber(s string) (major, minor uint32, err error) {
	a, b, ok := strings.Cut(s, ":")
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q is not major:minor", s)
	}
	return uint32(ma), uint32(mi), nil
}

func isControllerName(name string) bool {
	rest, ok := strings.CutPrefix(name, "nvme")
	return ok && isDigits(rest)
}

func isDigits(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }

// sortByNumber orders kernel object names by their numbers (nvme2 before nvme10).
func sortByNumber[T any](xs []T, name func(T) string) {
	key := func(x T) (string, int) {
		s := name(x)
		i := len(s)
		for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
			i--
		}
		n, _ := strconv.Atoi(s[i:])
		return s[:i], n
	}
	slices.SortStableFunc(xs, func(x, y T) int {
		px, nx := key(x)
		py, ny := key(y)
		return cmp.Or(strings.Compare(px, py), cmp.Compare(nx, ny))
	})
}

// vanished reports whether err means the object disappeared while read: the kernel
// removes controllers, subsystems and disks at any time.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

// readDirNames lists a directory without stat-ing its entries. A missing class directory
// (nvme-core not loaded yet) reads as empty.
func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) && (strings.HasSuffix(dir, "class/nvme") || strings.HasSuffix(dir, "class/nvme-subsystem")) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return names, nil
}

// readAttr reads a small sysfs attribute, trimmed, without os.ReadFile's stat and poller
// registration: resolving among hundreds of subsystems reads hundreds of them within 2 ms.
func readAttr(path string) (string, error) { return readAttrAt(unix.AT_FDCWD, path) }

// readAttrAt reads path relative to dirfd, sparing the resolution of a long common prefix.
func readAttrAt(dirfd int, path string) (string, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Openat(dirfd, path, unix.O_RDONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return "", &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var buf [4096]byte // sysfs attributes are at most one page
	n := 0
	for {
		m, err := retryEINTR(func() (int, error) { return unix.Read(fd, buf[n:]) })
		if err != nil {
			return "", &fs.PathError{Op: "read", Path: path, Err: err}
		}
		if n += m; m == 0 || n < len(buf) {
			break // sysfs and regular files read short only at the end
		}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		if n, err := f(); err != unix.EINTR {
			return n, err
		}
	}
}
