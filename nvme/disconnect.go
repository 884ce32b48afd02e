package nvme

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Disconnect detaches subsystem nqn: for each of its controllers, it lowers
// ctrl_loss_tmo and reconnect_delay if the controller is not live (so the delete does not
// wait for reconnect attempts), writes 1 to delete_controller, and then verifies in sysfs
// that no controller of the NQN remains (bounded wait). Not connected is success.
//
// The caller must unmount the disk first: deleting a controller under a mounted
// filesystem hangs or loses data. Such a hang returns ErrTimeout at the deadline.
func (h *Host) Disconnect(ctx context.Context, nqn string) (err error) {
	defer func() { h.observe("disconnect", err) }()
	if err := h.guard.Check(nqn); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
	defer cancel()
	// All controllers of the NQN on the host, not only those its subsystem links: the
	// verification below looks at the same set.
	ctrls, err := h.sys.controllersOf(nqn)
	if err != nil {
		return fmt.Errorf("disconnect %s: %w", nqn, err)
	}
	if len(ctrls) == 0 {
		h.log.Debug("disconnect: not connected", "nqn", nqn)
		return nil
	}
	for _, c := range ctrls {
		if err := h.deleteController(ctx, nqn, c); err != nil {
			return err
		}
	}
	if err := h.waitGone(ctx, nqn); err != nil {
		return err
	}
	h.log.Info("disconnected", "nqn", nqn, "controllers", describeControllers(ctrls))
	return nil
}

// deleteController deletes one controller of nqn.
func (h *Host) deleteController(ctx context.Context, nqn string, c Controller) error {
	dir := h.sys.controllerClassDir() + "/" + c.Name
	// Read the owner again just before writing: controller names are reused, and this
	// one may have vanished and been reborn for another subsystem since it was listed.
	owner, err := readAttr(dir + "/subsysnqn")
	if vanished(err) || (err == nil && owner != nqn) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("disconnect %s: %w", nqn, err)
	}
	if !c.Live() {
		// reconnect_delay first: the kernel derives the retry count from both.
		for _, kv := range [][2]string{{"reconnect_delay", "1"}, {"ctrl_loss_tmo", "0"}} {
			if err := h.writeAttr(dir+"/"+kv[0], kv[1]); err != nil && !vanished(err) {
				h.log.Warn("could not lower a controller's reconnect settings before deleting it", "controller", c.Name, "attr", kv[0], "err", err)
			}
		}
	}
	what := fmt.Sprintf("delete controller %s of %s (state %s)", c.Name, nqn, c.State)
	_, err = withDeadline(ctx, what, func() (struct{}, error) { return struct{}{}, h.writeAttr(dir+"/delete_controller", "1") },
		func(_ struct{}, err error) {
			h.log.Warn("a timed-out controller delete finished later", "controller", c.Name, "nqn", nqn, "err", err)
		})
	switch {
	case err == nil || vanished(err):
		return nil
	case errors.Is(err, ErrTimeout):
		return fmt.Errorf("disconnect %s: %w (is a filesystem still mounted on its disk? unmount it first)", nqn, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("disconnect %s: controller %s is still being set up (EBUSY); retry", nqn, c.Name)
	default:
		return fmt.Errorf("disconnect %s: %w", nqn, err)
	}
}

// waitGone waits until no controller of nqn remains. The subsystem itself may linger
// without controllers while something holds its old disk open (a stale mount); that is
// not a connection, and is logged.
func (h *Host) waitGone(ctx context.Context, nqn string) error {
	interval := time.Millisecond
	for {
		left, err := h.sys.controllersOf(nqn)
		if err != nil {
			return fmt.Errorf("disconnect %s: verify: %w", nqn, err)
		}
		if len(left) == 0 {
			if _, ok, _ := h.sys.findSubsystem(nqn); ok {
				h.log.Info("the subsystem lingers without controllers while its old disk is held open (a stale mount?)", "nqn", nqn)
			}
			return nil
		}
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%w: disconnect %s: controllers still present after the delete: %s; check for mounts of its disk", ErrTimeout, nqn, describeControllers(left))
		case <-timer.C:
		}
		interval = min(interval*2, 10*time.Millisecond)
	}
}

// Rescan asks the subsystem's live controllers to rescan their namespaces (after the
// target grew a volume) and returns the disk with its size read again. The kernel rescans
// asynchronously: Rescan waits up to a short settle time for the size to change and then
// returns the disk as it is, so the caller compares SizeBytes with what it expects.
func (h *Host) Rescan(ctx context.Context, nqn string, nsid int) (d *Disk, err error) {
	defer func() { h.observe("rescan", err) }()
	if err := h.guard.Check(nqn); err != nil {
		return nil, err
	}
	if nsid == 0 {
		nsid = 1
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
	defer cancel()
	before, err := h.resolve(nqn, nsid)
	if err != nil {
		return nil, fmt.Errorf("rescan: %w", err)
	}
	var live []string
	for _, c := range before.Controllers {
		if !c.Live() {
			continue
		}
		path := h.sys.controllerClassDir() + "/" + c.Name + "/rescan_controller"
		if owner, err := readAttr(h.sys.controllerClassDir() + "/" + c.Name + "/subsysnqn"); err != nil || owner != nqn {
			continue // vanished or renamed since it was listed
		}
		_, err := withDeadline(ctx, "rescan controller "+c.Name, func() (struct{}, error) { return struct{}{}, h.writeAttr(path, "1") }, nil)
		if err != nil && !vanished(err) {
			return nil, fmt.Errorf("rescan %s: %w", nqn, err)
		}
		live = append(live, c.Name)
	}
	if len(live) == 0 {
		return nil, fmt.Errorf("%w: rescan %s: no live controller (%s); retry when the target is reachable again", ErrNotLive, nqn, describeControllers(before.Controllers))
	}
	settle := time.NewTimer(h.settle)
	defer settle.Stop()
	for {
		d, err := h.resolve(nqn, nsid)
		if err != nil {
			return nil, fmt.Errorf("rescan: %w", err)
		}
		if d.SizeBytes != before.SizeBytes {
			h.log.Info("rescanned", "nqn", nqn, "disk", d.Name, "size", d.SizeBytes, "was", before.SizeBytes, "controllers", strings.Join(live, ","))
			return d, nil
		}
		select {
		case <-ctx.Done():
			return d, nil
		case <-settle.C:
			return d, nil
		case <-time.After(5 * time.Millisecond):
		}
	}
}
