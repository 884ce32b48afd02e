package nvme

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// SweepReport says what a sweep did and what it left alone, and why.
type SweepReport struct {
	Disconnected []string    // managed NQNs that no volume claimed and nothing used
	Kept         []SweepKept // every other subsystem, with the reason
	// Unowned are the managed subsystems kept because nothing proves this driver made
	// them (also in Kept): another driver's, or its own from a lost state directory.
	Unowned []SweepKept
}

// SweepKept is a subsystem the sweep left alone.
type SweepKept struct {
	NQN    string
	Reason string
}

// Sweep disconnects the connections this driver made and abandoned: managed subsystems
// that owned proves the driver connected (its intent records), that no staged volume
// claims (claimed holds the NQNs the node knows from its state) and whose disks are not
// in use (inUse reports every user of a disk; it is required, as a sweep without that
// evidence could disconnect a used volume). A managed prefix is no proof of ownership:
// an unowned subsystem is kept and reported in Unowned. Unmanaged subsystems are never
// touched. Everything left is listed with its reason and logged. The caller must not
// stage volumes while a sweep runs: a volume connected but not yet claimed would look
// orphaned.
//
// A failed disconnect does not stop the sweep; the errors are returned joined.
func (h *Host) Sweep(ctx context.Context, claimed, owned map[string]bool, inUse func(Disk) bool) (SweepReport, error) {
	var rep SweepReport
	if inUse == nil {
		return rep, errors.New("nvme: Sweep needs an in-use check for disks: without it, it cannot prove a volume is unused, so it disconnects nothing")
	}
	subs, err := h.Subsystems()
	if err != nil {
		return rep, fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	keep := func(nqn, reason string) {
		rep.Kept = append(rep.Kept, SweepKept{NQN: nqn, Reason: reason})
		h.log.Info("sweep: left connected", "nqn", nqn, "reason", reason)
	}
	for _, s := range subs {
		if reason := h.sweepKeepReason(s, claimed, owned, inUse); reason != "" {
			keep(s.NQN, reason)
			if s.Managed && !claimed[s.NQN] && !owned[s.NQN] {
				rep.Unowned = append(rep.Unowned, SweepKept{NQN: s.NQN, Reason: reason})
			}
			continue
		}
		if err := ctx.Err(); err != nil {
			keep(s.NQN, "sweep interrupted: "+err.Error())
			errs = append(errs, fmt.Errorf("sweep: %w", err))
			continue
		}
		if err := h.Disconnect(ctx, s.NQN); err != nil {
			keep(s.NQN, "disconnect failed: "+err.Error())
			errs = append(errs, err)
			continue
		}
		rep.Disconnected = append(rep.Disconnected, s.NQN)
		h.log.Info("sweep: disconnected an unclaimed volume", "nqn", s.NQN, "controllers", describeControllers(s.Controllers))
	}
	return rep, errors.Join(errs...)
}

// UnownedReason is why a sweep keeps a managed subsystem that nothing proves this driver
// connected.
const UnownedReason = "not proven to be this driver's connection (no intent record of this boot): never disconnected automatically; kubelet's NodeStageVolume adopts it, or remove it by hand once nothing uses it"

// sweepKeepReason says why subsystem s must stay, or "" when it may be disconnected.
func (h *Host) sweepKeepReason(s Subsystem, claimed, owned map[string]bool, inUse func(Disk) bool) string {
	switch {
	case !s.Managed:
		return fmt.Sprintf("outside the managed prefix %q", h.guard.Prefix())
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
