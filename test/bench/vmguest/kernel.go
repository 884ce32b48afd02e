package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"srvlab.io/rds-csi/internal/vmsys"
	"srvlab.io/rds-csi/test/internal/nvmet"
)

// What the kernel says, read directly from configfs, sysfs (through vmsys) and mountinfo.

const nvmetRoot = nvmet.Root

// portDown unlinks the subsystem from its port, as nvmet-port-down does: the target drops
// the host's controllers and refuses reconnects until portUp.
func portDown(port, nqn string) error {
	return os.Remove(filepath.Join(nvmetRoot, "ports", port, "subsystems", nqn))
}

func portUp(port, nqn string) error {
	return os.Symlink(filepath.Join(nvmetRoot, "subsystems", nqn), filepath.Join(nvmetRoot, "ports", port, "subsystems", nqn))
}

// mountEntry is one line of /proc/self/mountinfo: mount ID, device, mount point.
type mountEntry struct{ id, majmin, point string }

func mountinfo() ([]mountEntry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		a := strings.Fields(sc.Text())
		if len(a) < 5 {
			return nil, fmt.Errorf("mountinfo line %q", sc.Text())
		}
		out = append(out, mountEntry{id: a[0], majmin: a[2], point: a[4]})
	}
	return out, sc.Err()
}

// volumeMounts is what the kernel shows of a volume: its live disk (if any) and the
// mounts at its staging and publish paths.
type volumeMounts struct {
	disk, majmin     string
	staging, publish []mountEntry
}

func mountsOf(v *volume) (volumeMounts, error) {
	var m volumeMounts
	m.disk, m.majmin, _ = vmsys.LiveDisk(v.nqn)
	all, err := mountinfo()
	if err != nil {
		return m, err
	}
	for _, e := range all {
		switch e.point {
		case v.staging:
			m.staging = append(m.staging, e)
		case v.target:
			m.publish = append(m.publish, e)
		}
	}
	if len(m.staging) != 1 || len(m.publish) != 1 {
		return m, errors.New("not exactly one mount at each of the staging and publish paths")
	}
	return m, nil
}

// healedFrom reports whether the volume is healed since before: a live disk, and exactly
// one mount at each path, both of that disk, each a replacement of the mount that was
// there. A replaced mount shows the new disk's device number, or a new mount ID; neither
// alone is proof: the kernel hands out the lowest free mount ID again, and a disk number
// comes back only once nothing holds the old disk (so a stale mount keeps it taken).
func (m volumeMounts) healedFrom(before volumeMounts) bool {
	if m.disk == "" || len(m.staging) != 1 || len(m.publish) != 1 {
		return false
	}
	replaced := func(now, was mountEntry) bool {
		return now.majmin == m.majmin && (now.majmin != was.majmin || now.id != was.id)
	}
	return replaced(m.staging[0], before.staging[0]) && replaced(m.publish[0], before.publish[0])
}
