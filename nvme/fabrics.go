package nvme

import (
	"errors"
	"io/fs"
	"strings"

	"golang.org/x/sys/unix"
)

// fabrics is the kernel's /dev/nvme-fabrics. It is an interface so that tests can return
// every errno the kernel does, which a regular file or a pipe cannot.
type fabrics interface {
	// readOptions reads a freshly opened fd without writing: the kernel (5.17 and later)
	// answers with the option tokens it supports.
	readOptions() (string, error)
	// connect writes one option string to a fresh fd and reads the reply
	// ("instance=N,cntlid=M") from the same fd. The write blocks until the admin queue is
	// connected.
	connect(opts string) (string, error)
}

// devFabrics is the real /dev/nvme-fabrics. Errors are *fs.PathError wrapping the errno.
//
// The kernel serialises every open fd's read and write on one global mutex
// (nvmf_dev_mutex), so a connect stuck on an unresponsive target delays the others in the
// kernel; callers bound each call with a deadline (see withDeadline) so that they return.
type devFabrics struct{ path string }

func (d devFabrics) open() (int, error) {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(d.path, unix.O_RDWR|unix.O_CLOEXEC, 0) })
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: d.path, Err: err}
	}
	return fd, nil
}

func (d devFabrics) readOptions() (string, error) {
	fd, err := d.open()
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := retryEINTR(func() (int, error) { return unix.Read(fd, buf) })
		if err != nil {
			return "", &fs.PathError{Op: "read", Path: d.path, Err: err}
		}
		if n == 0 {
			return sb.String(), nil
		}
		sb.Write(buf[:n])
	}
}

func (d devFabrics) connect(opts string) (string, error) {
	fd, err := d.open()
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	// No EINTR retry here: a retried write could create a second controller.
	if _, err := unix.Write(fd, []byte(opts)); err != nil {
		return "", &fs.PathError{Op: "write", Path: d.path, Err: err}
	}
	buf := make([]byte, 256)
	n, err := retryEINTR(func() (int, error) { return unix.Read(fd, buf) })
	if err != nil {
		return "", &fs.PathError{Op: "read", Path: d.path, Err: err}
	}
	return string(buf[:n]), nil
}

// fabricsMissing reports whether err from opening /dev/nvme-fabrics means the
// nvme-fabrics module is not loaded (no device node, or a node without a driver).
func fabricsMissing(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Op == "open" &&
		(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO))
}
