package nvme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Disconnect detaches subsystem nqn: it deletes each controller (lowering a non-live one's
// reconnect settings first, so the delete does not wait for retries) and waits until sysfs
// shows none. Not connected is success. Unmount first: a delete under a mounted filesystem
// hangs or loses data (ErrTimeout at the deadline).
func (h *Host) Disconnect(ctx context.Context, nqn string) (err error) {
	defer func() { h.observe("disconnect", err) }()
	if err := h.guard.Check(nqn); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, h.cfg.OpTimeout)
	defer cancel()
	// All of the NQN's controllers, not only those its subsystem links: waitGone checks the same set.
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

func (h *Host) deleteController(ctx context.Context, nqn string, c Controller) error {
	dir := h.sys.ctrlDir(c.Name)
	// Read the owner again just before writing: the name may have been reused meanwhile.
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

// waitGone waits until no controller of nqn remains. A subsystem lingering without
// controllers (its old disk held open by a stale mount) is no connection, only logged.
func (h *Host) waitGone(ctx context.Context, nqn string) error {
	for interval := time.Millisecond; ; interval = min(interval*2, 10*time.Millisecond) {
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
		if sleep(ctx, interval) != nil {
			return fmt.Errorf("%w: disconnect %s: controllers still present after the delete: %s; check for mounts of its disk", ErrTimeout, nqn, describeControllers(left))
		}
	}
}

// SweepReport says what a sweep did and what it left alone, and why.
type SweepReport struct {
	Disconnected []string    // managed NQNs that no volume claimed and nothing used
	Kept         []SweepKept // every other subsystem, with the reason
	// Unowned are the managed subsystems kept because nothing proves this driver made them
	// (also in Kept): another driver's, or its own from a lost state directory.
	Unowned []SweepKept
}

// SweepKept is a subsystem the sweep left alone.
type SweepKept struct {
	NQN    string
	Reason string
}

// UnownedReason is why a sweep keeps a managed subsystem that nothing proves this driver
// connected.
const UnownedReason = "not proven to be this driver's connection (no intent record of this boot): never disconnected automatically; kubelet's NodeStageVolume adopts it, or remove it by hand once nothing uses it"

// Sweep disconnects the connections this driver made and abandoned: managed subsystems that
// owned proves it connected (its intent records), that no staged volume claims (claimed)
// and whose disks inUse reports unused. The caller must not stage volumes meanwhile: one
// connected but not yet claimed would look orphaned. See SweepSubsystems.
func (h *Host) Sweep(ctx context.Context, claimed, owned map[string]bool, inUse func(Disk) bool) (SweepReport, error) {
	subs, err := h.Subsystems()
	if err != nil {
		return SweepReport{}, fmt.Errorf("sweep: %w", err)
	}
	return SweepSubsystems(ctx, h.log, h.guard, subs, claimed, owned, inUse, h.Disconnect)
}

// SweepSubsystems is the one sweep rule, shared by Host and its loop-device stand-in: it
// disconnects each of subs that is managed, owned, unclaimed, still has controllers and no
// disk of which inUse reports used (required: without that evidence a sweep could cut a used
// volume). A managed prefix is no proof of ownership: unowned ones are kept and listed in
// Unowned; unmanaged ones are never touched. A failed disconnect does not stop the sweep;
// the errors are returned joined.
func SweepSubsystems(ctx context.Context, log *slog.Logger, g *Guard, subs []Subsystem, claimed, owned map[string]bool,
	inUse func(Disk) bool, disconnect func(context.Context, string) error) (SweepReport, error) {
	var rep SweepReport
	if inUse == nil {
		return rep, errors.New("nvme: Sweep needs an in-use check for disks: without it, it cannot prove a volume is unused, so it disconnects nothing")
	}
	var errs []error
	keep := func(nqn, reason string) {
		rep.Kept = append(rep.Kept, SweepKept{NQN: nqn, Reason: reason})
		log.Info("sweep: left connected", "nqn", nqn, "reason", reason)
	}
	for _, s := range subs {
		if reason := sweepKeepReason(s, g, claimed, owned, inUse); reason != "" {
			keep(s.NQN, reason)
			if reason == UnownedReason {
				rep.Unowned = append(rep.Unowned, SweepKept{NQN: s.NQN, Reason: reason})
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			keep(s.NQN, "sweep interrupted: "+err.Error())
			errs = append(errs, fmt.Errorf("sweep: %w", err))
			continue
		}
		if err := disconnect(ctx, s.NQN); err != nil {
			keep(s.NQN, "disconnect failed: "+err.Error())
			errs = append(errs, err)
			continue
		}
		rep.Disconnected = append(rep.Disconnected, s.NQN)
		log.Info("sweep: disconnected an unclaimed volume", "nqn", s.NQN, "controllers", describeControllers(s.Controllers))
	}
	return rep, errors.Join(errs...)
}

// sweepKeepReason says why subsystem s must stay, or "" when it may be disconnected.
func sweepKeepReason(s Subsystem, g *Guard, claimed, owned map[string]bool, inUse func(Disk) bool) string {
	switch {
	case !s.Managed || !g.Manages(s.NQN):
		return fmt.Sprintf("outside the managed prefix %q", g.Prefix())
	case claimed[s.NQN]:
		return "claimed by a staged volume"
	case !owned[s.NQN]:
		return UnownedReason
	case len(s.Controllers) == 0:
		return "no controllers left: the subsystem lingers only while its old disk is held open (a stale mount); nothing to disconnect"
	}
	var used []string
	for _, d := range s.Disks {
		if inUse(d) {
			used = append(used, d.Name)
		}
	}
	if len(used) > 0 {
		return "disk in use: " + strings.Join(used, ", ")
	}
	return ""
}
