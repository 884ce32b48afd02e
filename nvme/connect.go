package nvme

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Connect attaches namespace t.NSID of subsystem t.NQN: one option string to
// /dev/nvme-fabrics, then sysfs is polled until the disk and its device node appear. An
// existing matching controller (EALREADY) is reused, its reconnect settings brought to o.
// Past the deadline (at most ConnectTimeout) it returns ErrTimeout even if the kernel goes
// on connecting; a late success is found by a retry (EALREADY) or swept as unclaimed.
func (h *Host) Connect(ctx context.Context, t Target, o Options) (d *Disk, err error) {
	defer func() { h.observe("connect", err) }()
	if err := h.guard.Check(t.NQN); err != nil {
		return nil, err
	}
	t.Port, t.NSID = cmp.Or(t.Port, DefaultPort), cmp.Or(t.NSID, 1)
	ctx, cancel := context.WithTimeout(ctx, h.cfg.ConnectTimeout)
	defer cancel()
	start := time.Now()
	features, err := h.probe(ctx)
	if err != nil {
		return nil, err
	}
	opts, err := connectString(t, h.id, o, features)
	if err != nil {
		return nil, err
	}
	ctrl, reused, err := h.createController(ctx, t, opts)
	if err != nil {
		return nil, err
	}
	if reused {
		h.applyReconnectSettings(ctrl, o)
	}
	d, err = h.waitDisk(ctx, t.NQN, t.NSID)
	if err != nil {
		return nil, fmt.Errorf("connect %s at %s:%d: %w", t.NQN, t.Address, t.Port, err)
	}
	h.log.Info("connected", "nqn", t.NQN, "controller", ctrl, "reused", reused, "disk", d.Name,
		"size", d.SizeBytes, "took", time.Since(start).Round(time.Microsecond))
	return d, nil
}

// createController writes the connect string and returns the controller's name, and
// whether it already existed. Twice at most: the controller EALREADY means may vanish
// before we look (its ctrl_loss_tmo expiring), and then a new connect is right.
func (h *Host) createController(ctx context.Context, t Target, opts string) (string, bool, error) {
	target := fmt.Sprintf("%s at %s:%d", t.NQN, t.Address, t.Port)
	for attempt := 0; ; attempt++ {
		reply, err := withDeadline(ctx, "connect "+target, func() (string, error) { return h.fab.connect(opts) },
			func(reply string, err error) { h.lateConnect(target, reply, err) })
		if errors.Is(err, unix.EALREADY) {
			c, ok, ferr := h.findExisting(t)
			if ferr != nil {
				return "", false, fmt.Errorf("connect %s: the kernel reports an existing controller, but reading it failed: %w", target, ferr)
			}
			if ok {
				h.log.Info("using the existing controller", "nqn", t.NQN, "controller", c.Name, "state", c.State)
				return c.Name, true, nil
			}
			if attempt == 0 {
				continue
			}
			return "", false, fmt.Errorf("%w: connect %s: the kernel reports an existing controller (EALREADY) but none matching this host NQN, address and port is in sysfs; retry", ErrNotConnected, target)
		}
		if err != nil {
			return "", false, h.connectError(err, t, target)
		}
		return h.controllerFromReply(reply, t.NQN)
	}
}

// controllerFromReply parses "instance=N,cntlid=M" and checks that nvmeN is the subsystem's.
func (h *Host) controllerFromReply(reply, nqn string) (string, bool, error) {
	var inst, cntlid int
	if _, err := fmt.Sscanf(strings.TrimSpace(reply), "instance=%d,cntlid=%d", &inst, &cntlid); err != nil || inst < 0 {
		return "", false, fmt.Errorf("connect %s: unexpected reply %q from /dev/nvme-fabrics", nqn, reply)
	}
	name := "nvme" + strconv.Itoa(inst) // the kernel's controller name (class/nvme/nvmeN), not a disk
	if got, err := readAttr(h.sys.ctrlDir(name) + "/subsysnqn"); err == nil && got != nqn {
		return "", false, fmt.Errorf("connect %s: the kernel answered with controller %s, which belongs to %q", nqn, name, got)
	}
	return name, false, nil
}

func (h *Host) lateConnect(target, reply string, err error) {
	if err != nil {
		h.log.Info("a timed-out connect failed later", "target", target, "err", err)
		return
	}
	h.log.Warn("a timed-out connect succeeded later: the controller exists; a retry finds it (EALREADY), else the sweep disconnects it if no volume claims it",
		"target", target, "reply", strings.TrimSpace(reply))
}

// findExisting returns the live-or-recovering controller matching t and this host.
func (h *Host) findExisting(t Target) (Controller, bool, error) {
	ctrls, nqns, err := h.sys.controllersIn(h.sys.controllerClassDir(), nil)
	if err != nil {
		return Controller{}, false, err
	}
	for i, c := range ctrls {
		if nqns[i] == t.NQN && c.HostNQN == h.id.HostNQN && sameIP(c.TrAddr, t.Address) && c.TrSvcID == t.Port &&
			(c.HostID == "" || strings.EqualFold(c.HostID, h.id.HostID)) && !dying(c.State) {
			return c, true, nil
		}
	}
	return Controller{}, false, nil
}

// connectError maps a failed connect's errno to a typed error that says what to check.
func (h *Host) connectError(err error, t Target, target string) error {
	switch {
	case errors.Is(err, ErrTimeout):
		return fmt.Errorf("connect %s: %w (the target did not complete the connection in time; check that the storage appliance is up and reachable from this node)", target, err)
	case fabricsMissing(err):
		return fmt.Errorf("%w: %v: load the nvme-tcp module on the host (modprobe nvme-tcp)", ErrFabricsMissing, err)
	case errors.Is(err, unix.EIO):
		return fmt.Errorf("%w: %s refused subsystem %q for host %q (EIO): check that the volume exists and is exported over NVMe/TCP (nvme-tcp-export=yes) and that the target allows this host NQN",
			ErrSubsystemUnknown, t.endpoint(), t.NQN, h.id.HostNQN)
	case errors.Is(err, unix.ECONNREFUSED):
		return fmt.Errorf("%w: nothing listens on %s (ECONNREFUSED): check the target port (usually 4420) and that the NVMe/TCP service is enabled on the storage appliance", ErrUnreachable, t.endpoint())
	case errors.Is(err, unix.EHOSTUNREACH), errors.Is(err, unix.ENETUNREACH), errors.Is(err, unix.ETIMEDOUT),
		errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.EHOSTDOWN), errors.Is(err, unix.ECONNABORTED):
		return fmt.Errorf("%w: cannot reach %s (%v): check the storage appliance is up and the network path from this node to it", ErrUnreachable, t.endpoint(), err)
	case errors.Is(err, unix.EINVAL):
		if c, ok := h.identityConflict(); ok {
			return fmt.Errorf("%w: controller %s uses host NQN %q with host ID %q, but this node's identity is %q / %q: the kernel allows one pairing; make the host's /etc/nvme/hostnqn and hostid match the existing connections, or disconnect %s",
				ErrIdentityConflict, c.Name, c.HostNQN, c.HostID, h.id.HostNQN, h.id.HostID, c.Name)
		}
		return fmt.Errorf("%w: the kernel rejected connecting %s (EINVAL); its reason is in the host's kernel log (dmesg | grep nvme); a controller of the same subsystem that is still reconnecting can cause it (Duplicate cntlid)", ErrBadOption, target)
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("%w: the kernel rejected connecting %s (EADDRINUSE: an option given twice): %v", ErrBadOption, target, err)
	default:
		return fmt.Errorf("connect %s: %w", target, err)
	}
}

// identityConflict finds a controller whose host NQN/ID pairing contradicts ours.
func (h *Host) identityConflict() (Controller, bool) {
	ctrls, _, err := h.sys.controllersIn(h.sys.controllerClassDir(), nil)
	if err != nil {
		return Controller{}, false
	}
	for _, c := range ctrls {
		sameNQN, sameID := c.HostNQN == h.id.HostNQN, strings.EqualFold(c.HostID, h.id.HostID)
		if c.HostID != "" && sameNQN != sameID {
			return c, true
		}
	}
	return Controller{}, false
}

// applyReconnectSettings brings a reused controller's run-time settings to o: one made
// earlier (by an older driver, or with the kernel's 600 s ctrl_loss_tmo) must not drop the
// volume during the next appliance reboot.
func (h *Host) applyReconnectSettings(ctrl string, o Options) {
	for _, s := range o.options() {
		want := cmp.Or(s.val, s.def)
		if !s.runtime || want == nil {
			continue
		}
		path := h.sys.ctrlDir(ctrl) + "/" + s.name
		cur, err := readAttr(path)
		if err != nil || cur == strconv.Itoa(*want) || (cur == "off" && *want < 0) {
			continue
		}
		if err := h.writeAttr(path, strconv.Itoa(*want)); err != nil {
			h.log.Warn("could not update a reused controller's setting", "controller", ctrl, "option", s.name, "want", *want, "err", err)
		}
	}
}

// waitDisk polls sysfs (1 ms backing off to 5 ms, within diskWait and ctx) until the
// namespace's disk and device node appear, milliseconds after the connect write.
func (h *Host) waitDisk(ctx context.Context, nqn string, nsid int) (*Disk, error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, h.diskWait)
	defer cancel()
	for interval := time.Millisecond; ; interval = min(interval*2, 5*time.Millisecond) {
		d, err := h.resolve(nqn, nsid)
		if err == nil || !errors.Is(err, ErrNoDisk) && !errors.Is(err, ErrNotConnected) {
			return d, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: waited %v for the disk of namespace %d: %w", ErrTimeout, time.Since(start).Round(time.Millisecond), nsid, err)
		}
		sleep(ctx, interval)
	}
}

// sleep waits d or until ctx is done, and returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return ctx.Err()
}

// sameIP compares addresses as IPs when both parse (IPv6 has many spellings).
func sameIP(a, b string) bool {
	if ia, ib := net.ParseIP(a), net.ParseIP(b); ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return a == b
}
