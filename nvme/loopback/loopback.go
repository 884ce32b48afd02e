// Package loopback stands in for package nvme where there is no NVMe/TCP (developer
// machines, CI, local demos): it "connects" a volume by attaching the file the simulated
// RDS exports under that NQN to a loop device, so the node plugin mounts, formats and
// publishes real block devices.
//
// The simulator (routeros/sim) keeps one symlink per exported disk in its exports
// directory, <dir>/<nqn> → backing file. Connect looks the NQN up there; a missing link is
// nvme.ErrSubsystemUnknown, as the real target answers for a volume it does not export.
//
// The kernel's outage behaviour is imitated where the node plugin depends on it: while
// the link is missing the "controller" is not live but the disk stays (I/O would be
// queued); once it has been missing for longer than the connection's ctrl_loss_tmo, the
// attachment is dropped and the loop device detached (the kernel defers that until the
// last mount of it goes), so Resolve reports nvme.ErrNotConnected and a new Connect gets
// a new loop device: new names, as after a real controller loss.
//
// Attachments are recorded in a small state file, so a restarted process finds the loop
// devices it attached (matched by backing file, never by device name alone).
//
// Only binaries built with the loopnvme tag and tests contain this package.
package loopback

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"srvlab.io/rds-csi/internal/loopdev"
	"srvlab.io/rds-csi/nvme"
)

// Config configures a Host.
type Config struct {
	ExportsDir string      // the simulator's exports directory (<sim dir>/.nvme-exports)
	StateFile  string      // where attachments are recorded; required
	Guard      *nvme.Guard // required: the same managed-prefix guard as the real host
	Logger     *slog.Logger
	// Observe, when set, is called after every connect, disconnect and rescan, as
	// nvme.Config.Observe is.
	Observe func(event string, err error)
}

// Host attaches simulated volumes as loop devices. Its methods are safe for concurrent use.
type Host struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu   sync.Mutex
	recs map[string]*attachment // by NQN
}

// New loads the recorded attachments, keeping those whose loop device is still attached to
// the recorded file.
func New(cfg Config) (*Host, error) {
	if cfg.Guard == nil {
		return nil, errors.New("loopback: a managed-prefix Guard is required")
	}
	if cfg.ExportsDir == "" || cfg.StateFile == "" {
		return nil, errors.New("loopback: ExportsDir and StateFile are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	h := &Host{cfg: cfg, log: cfg.Logger.With("component", "nvme-loopback"), now: time.Now}
	recs, err := loadState(cfg.StateFile)
	if err != nil {
		return nil, err
	}
	h.recs = map[string]*attachment{}
	for nqn, a := range recs {
		if !cfg.Guard.Manages(nqn) {
			continue
		}
		if dev, ok := a.findDevice(); ok {
			a.dev = dev
			h.recs[nqn] = a
			continue
		}
		h.log.Info("dropping a recorded attachment whose loop device is gone", "nqn", nqn, "device", a.Device)
	}
	if err := h.saveLocked(); err != nil {
		return nil, err
	}
	return h, nil
}

// Probe reports whether loop devices can be used (the stand-in for /dev/nvme-fabrics).
func (h *Host) Probe() (nvme.Features, error) {
	if err := loopdev.Available(); err != nil {
		return nvme.Features{}, fmt.Errorf("%w: the loop-device stand-in cannot work: %v", nvme.ErrFabricsMissing, err)
	}
	return nvme.Features{}, nil
}

// Multipath is false: a loop device is one path, so a volume with several NVMe/TCP
// paths uses its first one here, as on a kernel with native multipath off.
func (h *Host) Multipath() (bool, error) { return false, nil }

// Connect attaches the exported file of t.NQN, or returns the existing attachment.
func (h *Host) Connect(ctx context.Context, t nvme.Target, o nvme.Options) (d *nvme.Disk, err error) {
	defer func() { h.observe("connect", err) }()
	if err := h.cfg.Guard.Check(t.NQN); err != nil {
		return nil, err
	}
	t, err = t.Checked()
	if err != nil {
		return nil, err
	}
	if t.NSID != 1 {
		return nil, fmt.Errorf("%w: the simulated RDS exports namespace 1 only, not %d", nvme.ErrSubsystemUnknown, t.NSID)
	}
	file, err := h.exported(t.NQN)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if a := h.recs[t.NQN]; a != nil {
		if _, ok := a.findDevice(); ok && a.File == file {
			a.CtrlLossTmo = ctrlLossTmo(o)
			a.lostSince = time.Time{}
			return a.disk()
		}
		delete(h.recs, t.NQN)
	}
	dev, err := loopdev.Attach(ctx, file, false)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: connect %s: %v", nvme.ErrTimeout, t.NQN, err)
		}
		return nil, fmt.Errorf("connect %s: %w", t.NQN, err)
	}
	a := &attachment{NQN: t.NQN, NSID: t.NSID, File: file, Address: t.Address, Port: t.Port,
		CtrlLossTmo: ctrlLossTmo(o), Device: dev.Path, Major: dev.Major, Minor: dev.Minor, dev: dev}
	h.recs[t.NQN] = a
	if err := h.saveLocked(); err != nil {
		_ = dev.Detach()
		delete(h.recs, t.NQN)
		return nil, err
	}
	h.log.Info("connected", "nqn", t.NQN, "device", dev.Path, "file", file)
	return a.disk()
}

// exported returns the backing file the exports directory names for nqn.
func (h *Host) exported(nqn string) (string, error) {
	link := filepath.Join(h.cfg.ExportsDir, nqn)
	target, err := os.Readlink(link)
	if errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("%w: the simulated RDS does not export %q (no %s): check that the volume exists and is exported", nvme.ErrSubsystemUnknown, nqn, link)
	}
	if err != nil {
		return "", fmt.Errorf("read export %s: %w", link, err)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(h.cfg.ExportsDir, target)
	}
	return target, nil
}

// Resolve returns the disk of an attached volume.
func (h *Host) Resolve(nqn string, nsid int) (*nvme.Disk, error) {
	if err := h.cfg.Guard.Check(nqn); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a, err := h.liveRecord(nqn)
	if err != nil {
		return nil, err
	}
	if nsid != 0 && nsid != a.NSID {
		return nil, fmt.Errorf("%w: %s has namespace %d only, not %d", nvme.ErrNoDisk, nqn, a.NSID, nsid)
	}
	return a.disk()
}

// Health reports the attachment as one controller: live while the export exists.
func (h *Host) Health(nqn string) (nvme.Health, error) {
	if err := h.cfg.Guard.Check(nqn); err != nil {
		return nvme.Health{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a, err := h.liveRecord(nqn)
	if errors.Is(err, nvme.ErrNotConnected) {
		return nvme.Health{}, nil
	}
	if err != nil {
		return nvme.Health{}, err
	}
	c := a.controller(h.exportLive(a))
	return nvme.Health{Controllers: []nvme.Controller{c}, Live: c.Live(), Connected: true}, nil
}

// liveRecord returns nqn's attachment after applying the controller-loss rule; the
// caller holds h.mu.
func (h *Host) liveRecord(nqn string) (*attachment, error) {
	a := h.recs[nqn]
	if a == nil {
		return nil, fmt.Errorf("%w: %s is not attached on this host", nvme.ErrNotConnected, nqn)
	}
	if _, ok := a.findDevice(); !ok {
		h.drop(a, "its loop device was detached")
		return nil, fmt.Errorf("%w: the loop device of %s was detached", nvme.ErrNotConnected, nqn)
	}
	if h.exportLive(a) {
		a.lostSince = time.Time{}
		return a, nil
	}
	now := h.now()
	if a.lostSince.IsZero() {
		a.lostSince = now
		h.log.Info("export gone: controller reconnecting", "nqn", nqn, "ctrl_loss_tmo", a.CtrlLossTmo)
	}
	if a.CtrlLossTmo >= 0 && now.Sub(a.lostSince) >= time.Duration(a.CtrlLossTmo)*time.Second {
		// The kernel defers the detach while a mount holds the device, as it keeps a
		// lost namespace's disk while a stale mount holds it.
		if err := a.dev.Detach(); err != nil {
			h.log.Warn("controller loss: detaching the loop device failed", "nqn", nqn, "device", a.Device, "err", err)
		}
		h.drop(a, "ctrl_loss_tmo expired")
		return nil, fmt.Errorf("%w: the controller of %s was lost (ctrl_loss_tmo %ds expired)", nvme.ErrNotConnected, nqn, a.CtrlLossTmo)
	}
	return a, nil
}

// exportLive reports whether the export link still names the attached file.
func (h *Host) exportLive(a *attachment) bool {
	file, err := h.exported(a.NQN)
	return err == nil && file == a.File
}

func (h *Host) drop(a *attachment, why string) {
	delete(h.recs, a.NQN)
	h.log.Info("attachment dropped", "nqn", a.NQN, "device", a.Device, "reason", why)
	if err := h.saveLocked(); err != nil {
		h.log.Warn("recording attachments failed", "err", err)
	}
}

// Disconnect detaches the volume's loop device and verifies that it is gone. A device
// still held by a mount stays attached (the kernel defers the detach), and that is an
// error, as a real disconnect under a mounted filesystem is.
func (h *Host) Disconnect(ctx context.Context, nqn string) (err error) {
	defer func() { h.observe("disconnect", err) }()
	if err := h.cfg.Guard.Check(nqn); err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.recs[nqn]
	if a == nil {
		return nil
	}
	if err := a.dev.Detach(); err != nil {
		return fmt.Errorf("disconnect %s: %w", nqn, err)
	}
	for {
		if _, ok := a.findDevice(); !ok {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: disconnect %s: loop device %s is still attached (is a filesystem still mounted on it? unmount it first)", nvme.ErrTimeout, nqn, a.Device)
		case <-time.After(5 * time.Millisecond):
		}
	}
	delete(h.recs, nqn)
	h.log.Info("disconnected", "nqn", nqn, "device", a.Device)
	return h.saveLocked()
}

// Rescan makes the loop device take the backing file's new size.
func (h *Host) Rescan(ctx context.Context, nqn string, nsid int) (d *nvme.Disk, err error) {
	defer func() { h.observe("rescan", err) }()
	if err := h.cfg.Guard.Check(nqn); err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	a, err := h.liveRecord(nqn)
	if err != nil {
		return nil, fmt.Errorf("rescan: %w", err)
	}
	if !h.exportLive(a) {
		return nil, fmt.Errorf("%w: rescan %s: the export is gone; retry when the target is reachable again", nvme.ErrNotLive, nqn)
	}
	if err := loopdev.SetCapacity(a.Device); err != nil {
		return nil, fmt.Errorf("rescan %s: %w", nqn, err)
	}
	return a.disk()
}

// Subsystems lists the attachments as subsystems, each with its one controller and disk,
// as nvme.Host.Subsystems does for the kernel's. It writes nothing.
func (h *Host) Subsystems() ([]nvme.Subsystem, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]nvme.Subsystem, 0, len(h.recs))
	for nqn, a := range h.recs {
		d, _ := a.disk() // with an unreadable size still the device, for the sweep's in-use check
		out = append(out, nvme.Subsystem{Name: "loop-" + filepath.Base(a.Device), NQN: nqn, Managed: true,
			Controllers: []nvme.Controller{a.controller(h.exportLive(a))}, Disks: []nvme.Disk{*d}})
	}
	return out, nil
}

// Sweep detaches attachments no staged volume claims and nothing uses, by nvme's one rule.
func (h *Host) Sweep(ctx context.Context, claimed, owned map[string]bool, inUse func(nvme.Disk) bool) (nvme.SweepReport, error) {
	subs, _ := h.Subsystems()
	return nvme.SweepSubsystems(ctx, h.log, h.cfg.Guard, subs, claimed, owned, inUse, h.Disconnect)
}

func (h *Host) observe(event string, err error) {
	if h.cfg.Observe != nil {
		h.cfg.Observe(event, err)
	}
}

// ctrlLossTmo is the connection's ctrl_loss_tmo with nvme's default.
func ctrlLossTmo(o nvme.Options) int {
	return *cmp.Or(o.CtrlLossTmo, new(int(nvme.DefaultCtrlLossTmo)))
}

// sysfsSize reads a block device's size in bytes from sysfs.
func sysfsSize(devPath string) (int64, error) {
	raw, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(devPath), "size"))
	if err != nil {
		return 0, err
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size of %s: %w", devPath, err)
	}
	return sectors * 512, nil
}
