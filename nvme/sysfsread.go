package nvme

// Low-level sysfs reading: names, attributes and their formats.

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// isControllerName matches "nvme<digits>".
func isControllerName(name string) bool {
	rest, ok := strings.CutPrefix(name, "nvme")
	return ok && isDigits(rest)
}

// isDiskName matches "nvme<digits>n<digits>" (not hidden paths "nvme<S>c<C>n<H>", not
// the generic char devices "ng<S>n<H>").
func isDiskName(name string) bool {
	rest, ok := strings.CutPrefix(name, "nvme")
	if !ok {
		return false
	}
	a, b, ok := strings.Cut(rest, "n")
	return ok && isDigits(a) && isDigits(b)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseAddress splits a controller's address attribute,
// "traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1".
func parseAddress(addr string) (traddr string, trsvcid int) {
	for _, kv := range strings.Split(addr, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "traddr":
			traddr = v
		case "trsvcid":
			trsvcid, _ = strconv.Atoi(v)
		}
	}
	return traddr, trsvcid
}

// sameIP compares addresses as IPs when both parse (IPv6 has many spellings).
func sameIP(a, b string) bool {
	ia, ib := net.ParseIP(a), net.ParseIP(b)
	if ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return a == b
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

// sortByNumber orders kernel object names by their numbers (nvme2 before nvme10).
func sortByNumber[T any](xs []T, name func(T) string) {
	key := func(s string) (int, string) {
		i := len(s)
		for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
			i--
		}
		n, _ := strconv.Atoi(s[i:])
		return n, s[:i]
	}
	sort.SliceStable(xs, func(i, j int) bool {
		ni, pi := key(name(xs[i]))
		nj, pj := key(name(xs[j]))
		if pi != pj {
			return pi < pj
		}
		return ni < nj
	})
}

// vanished reports whether err means the object disappeared while we read it: the kernel
// removes controllers, subsystems and disks at any time.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO)
}

// readDirNames lists a directory without stat-ing its entries. A missing class directory
// (nvme-core not loaded yet) reads as empty.
func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && (strings.HasSuffix(dir, "class/nvme") || strings.HasSuffix(dir, "class/nvme-subsystem")) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	return names, nil
}

// readAttr reads a small sysfs attribute, trimmed. It avoids os.ReadFile's stat and
// poller registration: resolving a disk among hundreds of subsystems reads hundreds of
// attributes, and the budget for that is 2 ms.
func readAttr(path string) (string, error) { return readAttrAt(unix.AT_FDCWD, path) }

// readAttrAt reads the attribute at path relative to the directory dirfd, which saves
// resolving a long common prefix again for each of hundreds of reads.
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
		n += m
		if m == 0 || n < len(buf) {
			break // sysfs and regular files read short only at the end
		}
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func retryEINTR(f func() (int, error)) (int, error) {
	for {
		n, err := f()
		if err != unix.EINTR {
			return n, err
		}
	}
}
