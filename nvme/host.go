package nvme

import (
	"context"
	"errors"
	"fmt"
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
func NewHost(cfg Config) (*Host, error) {
	return newHost(cfg, nil)
}

// newHost is NewHost with a fabrics implementation chosen by tests (nil = the real one).
func newHost(cfg Config, fab fabrics) (*Host, error) {
	if cfg.Guard == nil {
		return nil, errors.New("nvme: a managed-prefix Guard is required: build one with NewGuard from the configured managed NQN prefix")
	}
	if cfg.SysfsRoot == "" {
		cfg.SysfsRoot = "/sys"
	}
	if cfg.DevRoot == "" {
		cfg.DevRoot = "/dev"
	}
	if cfg.HostDir == "" {
		cfg.HostDir = "/etc/nvme"
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	id, created, err := LoadOrCreateIdentity(cfg.HostDir, cfg.SysfsRoot)
	if err != nil {
		return nil, fmt.Errorf("load the NVMe host identity: %w", err)
	}
	if fab == nil {
		fab = devFabrics{path: filepath.Join(cfg.DevRoot, "nvme-fabrics")}
	}
	h := &Host{
		cfg:       cfg,
		sys:       sysfs{root: cfg.SysfsRoot, hints: new(sync.Map)},
		id:        id,
		log:       cfg.Logger.With("component", "nvme"),
		fab:       fab,
		guard:     cfg.Guard,
		writeAttr: writeSysfsAttr,
		statRdev:  statRdev,
		diskWait:  10 * time.Second,
		settle:    2 * time.Second,
	}
	if created {
		h.log.Info("created the NVMe host identity", "dir", cfg.HostDir, "hostnqn", id.HostNQN, "hostid", id.HostID)
	}
	if _, err := h.Probe(); err != nil {
		h.log.Warn("NVMe/TCP is not usable yet; volumes cannot be staged until it is", "err", err)
	}
	return h, nil
}

// Identity returns the host identity passed in every connect.
func (h *Host) Identity() Identity { return h.id }

// Features is what the kernel's fabrics interface supports.
type Features struct {
	// Options lists the connect option names the kernel accepts (e.g. "ctrl_loss_tmo").
	// nil means the kernel does not list them (before 5.17): every option is then sent
	// and the kernel rejects what it does not know.
	Options map[string]bool
}

// Supports reports whether the kernel accepts option name.
func (f Features) Supports(name string) bool { return f.Options == nil || f.Options[name] }

// probeTimeout bounds Probe: the kernel serialises the probe read behind any connect in
// progress.
const probeTimeout = 5 * time.Second

// Probe checks that /dev/nvme-fabrics exists and reads the options the kernel supports,
// from a fresh fd every time (the module may have been loaded or replaced meanwhile).
func (h *Host) Probe() (Features, error) {
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
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

// parseFeatures reads "instance=-1,cntlid=-1,transport=%s,…,discovery,dhchap_secret=%s".
func parseFeatures(text string) Features {
	f := Features{Options: map[string]bool{}}
	for _, tok := range strings.Split(strings.TrimSpace(text), ",") {
		name, _, _ := strings.Cut(tok, "=")
		if name != "" && name != "instance" && name != "cntlid" {
			f.Options[name] = true
		}
	}
	return f
}

// observe reports an event to the metrics hook and returns err unchanged.
func (h *Host) observe(event string, err error) error {
	if h.cfg.Observe != nil {
		h.cfg.Observe(event, err)
	}
	return err
}

// writeSysfsAttr writes value to an existing sysfs attribute. It never creates a file
// (O_CREAT is not given): a missing attribute is an error, not a new file.
func writeSysfsAttr(path, value string) error {
	fd, err := retryEINTR(func() (int, error) { return unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0) })
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(value)); err != nil {
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
