package nvme

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a Host. Zero values take the defaults shown.
type Config struct {
	SysfsRoot string // "/sys"
	DevRoot   string // "/dev": holds nvme-fabrics and the disks' device nodes
	HostDir   string // "/etc/nvme" of the host: hostnqn and hostid
	Guard     *Guard // required: the managed-prefix guard
	Logger    *slog.Logger
	// ConnectTimeout bounds a whole Connect (the fabrics write and the wait for the disk)
	// when the caller's context allows longer. Default 30s.
	ConnectTimeout time.Duration
	// OpTimeout bounds Disconnect and Rescan likewise. Default 30s.
	OpTimeout time.Duration
	// Observe, when set, is called after every connect, disconnect and rescan with the
	// event name ("connect", "disconnect", "rescan") and the result (nil on success); for
	// metrics.
	Observe func(event string, err error)
}

// Host attaches and detaches volumes on this node. Its methods are safe for concurrent
// use; callers serialise operations on the same NQN (a volume lock), as the kernel's view
// of one subsystem cannot be changed by two callers at once meaningfully.
type Host struct {
	cfg   Config
	sys   sysfs
	id    Identity
	log   *slog.Logger
	fab   fabrics
	guard *Guard

	// Seams for tests; the defaults act on the real kernel.
	writeAttr func(path, value string) error    // a sysfs attribute write
	statRdev  func(path string) (uint64, error) // the device number of a device node
	diskWait  time.Duration                     // bound on waiting for a disk after a connect
	settle    time.Duration                     // how long Rescan waits for a size change
}

// NewHost loads (or creates once) the host identity and returns a Host. It succeeds even
// when /dev/nvme-fabrics is missing, because the module may be loaded later: it logs a
// warning, and Probe and Connect report ErrFabricsMissing until then.
func NewHost(cfg Config) (*Host, error) { return newHost(cfg, nil) }

// newHost is NewHost with a fabrics implementation chosen by tests (nil = the real one).
func newHost(cfg Config, fab fabrics) (*Host, error) {
	if cfg.Guard == nil {
		return nil, errors.New("nvme: a managed-prefix Guard is required: build one with NewGuard from the configured managed NQN prefix")
	}
	cfg.SysfsRoot = cmp.Or(cfg.SysfsRoot, "/sys")
	cfg.DevRoot = cmp.Or(cfg.DevRoot, "/dev")
	cfg.HostDir = cmp.Or(cfg.HostDir, "/etc/nvme")
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 30 * time.Second
	}
	id, created, err := LoadOrCreateIdentity(cfg.HostDir, cfg.SysfsRoot)
	if err != nil {
		return nil, fmt.Errorf("load the NVMe host identity: %w", err)
	}
	if fab == nil {
		fab = devFabrics{path: filepath.Join(cfg.DevRoot, "nvme-fabrics")}
	}
	h := &Host{
		cfg: cfg, sys: sysfs{root: cfg.SysfsRoot, dev: cfg.DevRoot, hints: new(sync.Map)}, id: id,
		log: cfg.Logger.With("component", "nvme"), fab: fab, guard: cfg.Guard,
		writeAttr: writeSysfsAttr, statRdev: statRdev, diskWait: 10 * time.Second, settle: 2 * time.Second,
	}
	if created {
		h.log.Info("created the NVMe host identity", "dir", cfg.HostDir, "hostnqn", id.HostNQN, "hostid", id.HostID)
	}
	if _, err := h.Probe(); err != nil {
		h.log.Warn("NVMe/TCP is not usable yet; volumes cannot be staged until it is", "err", err)
	}
	return h, nil
}

// observe reports an event to the metrics hook.
func (h *Host) observe(event string, err error) {
	if h.cfg.Observe != nil {
		h.cfg.Observe(event, err)
	}
}

// Probe checks that /dev/nvme-fabrics exists and reads the options the kernel supports,
// from a fresh fd every time (the module may have been loaded or replaced meanwhile). It
// is bounded at 5 s: the kernel serialises the probe read behind any connect in progress.
func (h *Host) Probe() (Features, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return h.probe(ctx)
}

func (h *Host) probe(ctx context.Context) (Features, error) {
	text, err := withDeadline(ctx, "read the supported options from /dev/nvme-fabrics", h.fab.readOptions, nil)
	switch {
	case fabricsMissing(err):
		return Features{}, fmt.Errorf("%w: %v: load the nvme-tcp module on the host (modprobe nvme-tcp) and make the host's /dev visible to the node plugin", ErrFabricsMissing, err)
	case errors.Is(err, unix.EINVAL):
		return Features{}, nil // kernels before 5.17 cannot list options
	case err != nil:
		return Features{}, fmt.Errorf("probe /dev/nvme-fabrics: %w", err)
	}
	return parseFeatures(text), nil
}

// Multipath reports whether the kernel's native NVMe multipath is on
// (/sys/module/nvme_core/parameters/multipath is "Y"). Only then do several controllers
// of one subsystem share one head disk (nvme<S>n<H>); with it off (nvme_core.multipath=N,
// or a kernel built without CONFIG_NVME_MULTIPATH, which has no such parameter) every
// controller brings its own disk of the same namespace, and a volume must use one path.
// An unreadable parameter is an error: the caller then uses one path.
func (h *Host) Multipath() (bool, error) {
	path := filepath.Join(h.cfg.SysfsRoot, "module", "nvme_core", "parameters", "multipath")
	v, err := readAttr(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, derr := readDirNames(filepath.Join(h.cfg.SysfsRoot, "module", "nvme_core")); derr == nil {
			return false, nil // nvme_core without multipath support
		}
		return false, fmt.Errorf("read %s: %w (is nvme_core loaded?)", path, err)
	case err != nil:
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return v == "Y" || v == "y" || v == "1", nil
}

// withDeadline runs f in its own goroutine and returns its result, or ctx's error
// (wrapped in ErrTimeout) as soon as ctx is done, even if f is still blocked in the
// kernel. A kernel call cannot be cancelled: f then finishes on its own, and late is
// called with its result so the caller can log what happened. What a late result means
// is documented where withDeadline is used.
func withDeadline[T any](ctx context.Context, what string, f func() (T, error), late func(T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil { // no time left: do not start a kernel call at all
		return zero, fmt.Errorf("%w: %s: %w", ErrTimeout, what, err)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1) // buffered: f never blocks on a caller that has left
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		go func() {
			if r := <-done; late != nil {
				late(r.v, r.err)
			}
		}()
		return zero, fmt.Errorf("%w: %s: %w", ErrTimeout, what, ctx.Err())
	}
}

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

// writeSysfsAttr writes value to an existing sysfs attribute. It never creates a file
// (O_CREAT is not given): a missing attribute is an error, not a new file.
func writeSysfsAttr(path, value string) error {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0) })
	if err == nil {
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte(value))
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}

func statRdev(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%s is not a block device", path)
	}
	return st.Rdev, nil
}
