package mount

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Device is a block device as the kernel names and numbers it.
type Device struct {
	Name         string // nvme1n1, loop3: its name under /sys/class/block
	Major, Minor uint32
}

// UsersConfig says where Users looks.
type UsersConfig struct {
	SysfsRoot string // the host's /sys
	ProcRoot  string // the host's /proc (every process's descriptors only with the host's PID namespace)
	// NodeDirs hold device nodes that others made for the disk (kubelet's volumeDevices
	// directories): a node there with the disk's number means a pod maps it. They are
	// walked without leaving their filesystem.
	NodeDirs []string
	// SkipPID is the calling process: its own descriptors are short-lived probes, never
	// a user that must keep the disk.
	SkipPID int
}

// maxNodeDirEntries bounds the walk of NodeDirs: kubelet's device directories hold a few
// entries per volume; far more means the walk is somewhere it should not be.
const maxNodeDirEntries = 100_000

// Users lists everything that uses the block device dev or one of its partitions:
//   - a mount of it (the filesystem itself and every bind mount of it);
//   - a bind mount of its /dev node (a devtmpfs mount whose root names it);
//   - a device node with its number under cfg.NodeDirs, including bind mounts over files there;
//   - a loop device whose backing file is one of its device nodes;
//   - a holder (device-mapper, md);
//   - an open file descriptor of any process this one can see.
//
// An error means the answer is unknown (a table that cannot be read, a walk that did not
// finish, a stat that hangs): a caller deciding whether it may let go of the device must
// then treat it as in use.
func Users(ctx context.Context, dev Device, cfg UsersConfig) ([]string, error) {
	return bounded(ctx, "find the users of "+dev.Name, func() ([]string, error) {
		devs, err := withPartitions(cfg.SysfsRoot, dev)
		if err != nil {
			return nil, err
		}
		u := users{ctx: ctx, cfg: cfg, devs: devs}
		for _, check := range []func() error{u.mounts, u.holders, u.loops, u.nodes, u.descriptors} {
			if err := cmp.Or(check(), ctx.Err()); err != nil {
				return nil, err
			}
		}
		slices.Sort(u.found)
		return slices.Compact(u.found), nil
	})
}

// users gathers the evidence for one device and its partitions.
type users struct {
	ctx   context.Context
	cfg   UsersConfig
	devs  []Device
	found []string
}

func (u *users) add(format string, args ...any) {
	u.found = append(u.found, fmt.Sprintf(format, args...))
}

// match returns the device (disk or partition) with number n.
func (u *users) match(n devNum) (Device, bool) {
	for _, d := range u.devs {
		if n.major == d.Major && n.minor == d.Minor {
			return d, true
		}
	}
	return Device{}, false
}

// withPartitions returns dev and every partition the kernel found on it.
func withPartitions(sysfsRoot string, dev Device) ([]Device, error) {
	out := []Device{dev}
	dir := filepath.Join(sysfsRoot, "class", "block", dev.Name)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil // the disk is gone; its number may still be held
	}
	if err != nil {
		return nil, fmt.Errorf("list the partitions of %s: %w", dev.Name, err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), dev.Name) {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(dir, e.Name(), "dev"))
		if err != nil {
			return nil, fmt.Errorf("partition %s of %s: %w", e.Name(), dev.Name, err)
		}
		var major, minor uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(raw)), "%d:%d", &major, &minor); err != nil {
			return nil, fmt.Errorf("partition %s of %s: device number %q: %w", e.Name(), dev.Name, raw, err)
		}
		out = append(out, Device{Name: e.Name(), Major: major, Minor: minor})
	}
	return out, nil
}

// mounts finds mounts of the device and bind mounts of its /dev node.
func (u *users) mounts() error {
	entries, err := processTable.read(u.ctx, nil)
	if err != nil {
		return err
	}
	for _, e := range entries {
		for _, d := range u.devs {
			switch {
			case uint32(e.Major) == d.Major && uint32(e.Minor) == d.Minor:
				u.add("%s is mounted at %s", d.Name, e.Mountpoint)
			case e.FSType == "devtmpfs" && e.Root == "/"+d.Name:
				u.add("/dev/%s is bind-mounted at %s", d.Name, e.Mountpoint)
			}
		}
	}
	return nil
}

// holders finds device-mapper or md devices on top of the device.
func (u *users) holders() error {
	for _, d := range u.devs {
		entries, err := os.ReadDir(filepath.Join(u.cfg.SysfsRoot, "class", "block", d.Name, "holders"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read the holders of %s: %w", d.Name, err)
		}
		for _, h := range entries {
			u.add("%s is held by %s", d.Name, h.Name())
		}
	}
	return nil
}

// loops finds loop devices backed by one of the device's nodes (kubelet locks a mapped
// block volume with one). A backing file that cannot be inspected is a user when its path
// could be the device's node: under /dev or NodeDirs.
func (u *users) loops() error {
	files, err := filepath.Glob(filepath.Join(u.cfg.SysfsRoot, "block", "loop*", "loop", "backing_file"))
	if err != nil {
		return err
	}
	for _, f := range files {
		loop := filepath.Base(filepath.Dir(filepath.Dir(f)))
		if slices.ContainsFunc(u.devs, func(d Device) bool { return d.Name == loop }) {
			continue // the device is this loop device: its backing file is what it reads
		}
		raw, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			return fmt.Errorf("read the backing file of %s: %w", loop, err)
		}
		backing := strings.TrimSuffix(strings.TrimSpace(string(raw)), " (deleted)")
		node, isBlock, err := blockNodeAt(backing)
		if err != nil && u.couldBeNode(backing) {
			u.add("%s is backed by %s, which cannot be inspected (%v)", loop, backing, err)
		} else if d, ok := u.match(node); ok && err == nil && isBlock {
			u.add("%s is backed by %s, a device node of %s", loop, backing, d.Name)
		}
	}
	return nil
}

// couldBeNode reports whether path is under /dev, or is or is below a NodeDirs directory.
func (u *users) couldBeNode(path string) bool {
	return strings.HasPrefix(path, "/dev/") || slices.ContainsFunc(u.cfg.NodeDirs, func(dir string) bool {
		dir = filepath.Clean(dir)
		return path == dir || strings.HasPrefix(path, dir+"/")
	})
}

// nodes walks NodeDirs for device nodes with the device's number. It stays on each
// directory's filesystem, so it never descends into a mounted volume.
func (u *users) nodes() error {
	seen := 0
	for _, root := range u.cfg.NodeDirs {
		var rootSt unix.Stat_t
		if err := unix.Stat(root, &rootSt); errors.Is(err, unix.ENOENT) {
			continue
		} else if err != nil {
			return fmt.Errorf("inspect %s: %w", root, err)
		}
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					return nil // removed while walking
				}
				return err
			}
			if seen++; seen > maxNodeDirEntries {
				return fmt.Errorf("more than %d entries below %s", maxNodeDirEntries, root)
			}
			if err := u.ctx.Err(); err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(path, &st); errors.Is(err, unix.ENOENT) {
				return nil
			} else if err != nil {
				return fmt.Errorf("inspect %s: %w", path, err)
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				if path != root && st.Dev != rootSt.Dev {
					return fs.SkipDir // a mounted filesystem: not kubelet's device directory
				}
			case unix.S_IFBLK:
				if dev, ok := u.match(devNumOf(st.Rdev)); ok {
					u.add("a device node of %s is at %s", dev.Name, path)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("look for device nodes below %s: %w", root, err)
		}
	}
	return nil
}

// descriptors finds processes holding one of the device's nodes open.
func (u *users) descriptors() error {
	procs, err := os.ReadDir(u.cfg.ProcRoot)
	if err != nil {
		return fmt.Errorf("list processes in %s: %w", u.cfg.ProcRoot, err)
	}
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == u.cfg.SkipPID {
			continue
		}
		if err := u.ctx.Err(); err != nil {
			return err
		}
		fdDir := filepath.Join(u.cfg.ProcRoot, p.Name(), "fd")
		fds, err := os.ReadDir(fdDir)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			continue // the process ended
		}
		if err != nil {
			return fmt.Errorf("read the open files of process %d: %w", pid, err)
		}
		for _, fd := range fds {
			link := filepath.Join(fdDir, fd.Name())
			target, err := os.Readlink(link)
			if err != nil || !strings.HasPrefix(target, "/") {
				continue // closed meanwhile, or a socket, pipe or anonymous inode
			}
			if node, isBlock, err := blockNodeAt(link); err == nil && isBlock {
				if d, ok := u.match(node); ok {
					u.add("process %d (%s) has %s open as %s", pid, comm(u.cfg.ProcRoot, p.Name()), d.Name, target)
				}
			}
		}
	}
	return nil
}

func comm(procRoot, pid string) string {
	raw, err := os.ReadFile(filepath.Join(procRoot, pid, "comm"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(raw))
}
