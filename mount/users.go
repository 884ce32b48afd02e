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
	ProcRoot  string // the host's /proc (all descriptors only in the host's PID namespace)
	// NodeDirs hold device nodes others made for the disk (kubelet's volumeDevices): one with
	// the disk's number means a pod maps it. Walked without leaving their filesystem.
	NodeDirs []string
	SkipPID  int // the caller: its own descriptors are short-lived probes, not users
}

// maxNodeDirEntries bounds the NodeDirs walk: far more than a few per volume means it is
// somewhere it should not be.
const maxNodeDirEntries = 100_000

// Users lists what uses the block device dev or a partition of it: a mount (the filesystem
// or a bind mount of it), a bind mount of its /dev node, a node with its number under
// NodeDirs (bind mounts over files there included), a loop device backed by one of its
// nodes, a holder (device-mapper, md), an open descriptor of any visible process. An error
// means the answer is unknown (unreadable table, unfinished walk, hung stat): a caller
// deciding whether it may let go of the device must then treat it as in use.
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

type users struct {
	ctx   context.Context
	cfg   UsersConfig
	devs  []Device
	found []string
}

func (u *users) add(format string, args ...any) {
	u.found = append(u.found, fmt.Sprintf(format, args...))
}

// match returns the disk or partition with number n.
func (u *users) match(n devNum) (Device, bool) {
	for _, d := range u.devs {
		if n.major == d.Major && n.minor == d.Minor {
			return d, true
		}
	}
	return Device{}, false
}

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
// block volume with one); an uninspectable backing file under /dev or NodeDirs counts too.
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

func (u *users) couldBeNode(path string) bool {
	return strings.HasPrefix(path, "/dev/") || slices.ContainsFunc(u.cfg.NodeDirs, func(dir string) bool {
		dir = filepath.Clean(dir)
		return path == dir || strings.HasPrefix(path, dir+"/")
	})
}

// nodes walks NodeDirs for nodes with the device's number, never into another
// filesystem (a mounted volume).
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
