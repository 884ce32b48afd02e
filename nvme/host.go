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
	// ConnectTimeout bounds a whole Connect (fabrics write and disk wait); OpTimeout bounds
	// Disconnect and Rescan. Default 30s each.
	ConnectTimeout, OpTimeout time.Duration
	// Observe, when set, gets every "connect", "disconnect" and "rescan" and its result.
	Observe func(event string, err error)
}

// Host attaches and detaches volumes on this node. Its methods are safe for concurrent
// use; callers serialise operations on one NQN (a volume lock).
type Host struct {
	cfg   Config
	sys   sysfs
	id    Identity
	log   *slog.Logger
	fab   fabrics
	guard *Guard

	// Seams for tests.
	writeAttr func(path, value string) error    // a sysfs attribute write
	statRdev  func(path string) (uint64, error) // the device number of a device node
	diskWait  time.Duration                     // bound on waiting for a disk after a connect
	settle    time.Duration                     // how long Rescan waits for a size change
}

// NewHost loads (or creates once) the host identity and returns a Host. A missing
// /dev/nvme-fabrics is logged, not an error (the module may be loaded later): Probe and
// Connect report ErrFabricsMissing until then.
func NewHost(cfg Config) (*Host, error) { return newHost(cfg, nil) }

// newHost is NewHost with the fabrics of a test (nil: the real one).
func newHost(cfg Config, fab fabrics) (*Host, error) {
	if cfg.Guard == nil {
		return nil, errors.New("nvme: a managed-prefix Guard is required: build one with NewGuard from the configured managed NQN prefix")
	}
	cfg.SysfsRoot = cmp.Or(cfg.SysfsRoot, "/sys")
	cfg.DevRoot = cmp.Or(cfg.DevRoot, "/dev")
	cfg.HostDir = cmp.Or(cfg.HostDir, "/etc/nvme")
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.ConnectTimeout = cmp.Or(max(cfg.ConnectTimeout, 0), 30*time.Second)
	cfg.OpTimeout = cmp.Or(max(cfg.OpTimeout, 0), 30*time.Second)
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

func (h *Host) observe(event string, err error) {
	if h.cfg.Observe != nil {
		h.cfg.Observe(event, err)
	}
}

// Probe reads the connect options the kernel supports from a fresh /dev/nvme-fabrics fd
// (the module may have been loaded or replaced), within 5 s: the kernel serialises the read
// behind any connect in progress.
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

// Multipath reports whether native NVMe multipath is on (nvme_core's parameter "Y"): only
// then do a subsystem's controllers share one head disk; off (multipath=N, or no
// CONFIG_NVME_MULTIPATH and so no parameter) each brings its own disk, and a volume must
// use one path. An unreadable parameter is an error: the caller then uses one path.
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

// withDeadline runs f in its own goroutine and returns its result, or ctx's error wrapped
// in ErrTimeout as soon as ctx is done. A kernel call cannot be cancelled: f finishes on its
// own, and late (if set) gets its result to log.
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

// fabrics is /dev/nvme-fabrics, an interface so tests can return every errno the kernel does.
type fabrics interface {
	readOptions() (string, error)        // read a fresh fd without writing: the supported options (5.17+)
	connect(opts string) (string, error) // write opts to a fresh fd, read "instance=N,cntlid=M"
}

// devFabrics is the real /dev/nvme-fabrics; errors are *fs.PathError wrapping the errno.
// The kernel serialises every fd's read and write on one mutex, so a connect stuck on a
// dead target delays the others: callers bound each call (withDeadline).
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

// fabricsMissing reports whether opening /dev/nvme-fabrics failed for want of the module.
func fabricsMissing(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && pe.Op == "open" &&
		(errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO))
}

// writeSysfsAttr writes value to an existing sysfs attribute; without O_CREAT a missing
// attribute is an error, never a new file.
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
