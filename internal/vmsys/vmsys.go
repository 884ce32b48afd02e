// Package vmsys reads the kernel's NVMe host state straight from sysfs, for the suites
// that run in the test VM (the nvme and node VM tests, test/e2e, the bench's VM guest).
// They judge the code under test by what the kernel says, so they read it here and never
// through the nvme package. Only tests and the bench import it.
package vmsys

import (
	"os"
	"path/filepath"
	"strings"
)

// root is where the sysfs and /dev trees are read from; the package's test points it at
// a fake tree.
var root = "/"

// Attr is the sysfs (or configfs) attribute at path without its trailing newline. One
// that cannot be read reads as "<the error>": it equals no real value, so a comparison
// fails, and a failure message that shows it says why.
func Attr(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.TrimSpace(string(b))
}

// Controller is one NVMe controller of the host as /sys/class/nvme showed it when read.
type Controller struct {
	Name, SubsysNQN, State, HostNQN, Address string
}

// Traddr is the target address in the controller's address attribute
// ("traddr=10.0.0.1,trsvcid=4420,..."), or "" when it names none.
func (c Controller) Traddr() string {
	for _, kv := range strings.Split(c.Address, ",") {
		if a, ok := strings.CutPrefix(kv, "traddr="); ok {
			return a
		}
	}
	return ""
}

// Controllers lists every NVMe controller of the host, managed or not.
func Controllers() []Controller { return controllers(func(string) bool { return true }) }

// ControllersOf lists the host's controllers of subsystem nqn.
func ControllersOf(nqn string) []Controller {
	return controllers(func(subsysNQN string) bool { return subsysNQN == nqn })
}

// ControllerNames lists the names (nvme3) of the host's controllers of subsystem nqn.
func ControllerNames(nqn string) []string {
	var out []string
	for _, c := range ControllersOf(nqn) {
		out = append(out, c.Name)
	}
	return out
}

// controllers reads the controllers whose subsystem NQN keep accepts; the other
// attributes are read only for those, which keeps a tight poll cheap.
func controllers(keep func(subsysNQN string) bool) []Controller {
	class := filepath.Join(root, "sys/class/nvme")
	entries, _ := os.ReadDir(class)
	var out []Controller
	for _, e := range entries {
		dir := filepath.Join(class, e.Name())
		nqn := Attr(filepath.Join(dir, "subsysnqn"))
		if !keep(nqn) {
			continue
		}
		out = append(out, Controller{
			Name:      e.Name(),
			SubsysNQN: nqn,
			State:     Attr(filepath.Join(dir, "state")),
			HostNQN:   Attr(filepath.Join(dir, "hostnqn")),
			Address:   Attr(filepath.Join(dir, "address")),
		})
	}
	return out
}

// LiveDisk returns the usable disk of subsystem nqn (its name and major:minor) when a
// controller of it is live and the disk's /dev node exists: the multipath head under
// /sys/class/nvme-subsystem, or with nvme_core.multipath=N the disk under its controller.
func LiveDisk(nqn string) (name, majmin string, ok bool) {
	ctrls := ControllersOf(nqn)
	live := false
	for _, c := range ctrls {
		live = live || c.State == "live"
	}
	if !live {
		return "", "", false
	}
	var disks []string
	subsystems, _ := filepath.Glob(filepath.Join(root, "sys/class/nvme-subsystem/*"))
	for _, s := range subsystems {
		if Attr(filepath.Join(s, "subsysnqn")) == nqn {
			found, _ := filepath.Glob(filepath.Join(s, "nvme*n*"))
			disks = append(disks, found...)
		}
	}
	for _, c := range ctrls {
		found, _ := filepath.Glob(filepath.Join(root, "sys/class/nvme", c.Name, c.Name+"n*"))
		disks = append(disks, found...)
	}
	for _, d := range disks {
		name := filepath.Base(d)
		if strings.Contains(strings.TrimPrefix(name, "nvme"), "c") { // a hidden per-path disk, nvme<S>c<C>n<H>
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "dev", name)); err == nil {
			return name, Attr(filepath.Join(root, "sys/block", name, "dev")), true
		}
	}
	return "", "", false
}
