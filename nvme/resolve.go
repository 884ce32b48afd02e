package nvme

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Resolve finds the disk of namespace nsid (0 means 1) of subsystem nqn in sysfs: the
// subsystem by exact NQN, then the disk whose nsid matches, multipath (nvme<S>n<H>) or not
// (nvme<C>n<H>); <DevRoot>/<name> must carry its major:minor. ErrNotConnected: no
// subsystem, or one without controllers; ErrNoDisk: connected, no usable disk yet.
func (h *Host) Resolve(nqn string, nsid int) (*Disk, error) {
	if err := h.guard.Check(nqn); err != nil {
		return nil, err
	}
	nsid = cmp.Or(nsid, 1)
	return h.resolve(nqn, nsid)
}

func (h *Host) resolve(nqn string, nsid int) (*Disk, error) {
	sub, ok, err := h.sys.findSubsystem(nqn)
	if err != nil {
		return nil, fmt.Errorf("resolve the disk of %s: %w", nqn, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: no NVMe subsystem with NQN %q on this host", ErrNotConnected, nqn)
	}
	ctrls, err := h.sys.controllers(sub)
	var disks []Disk
	if err == nil {
		disks, err = h.sys.disks(sub, ctrls, nsid)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve the disk of %s: %w", nqn, err)
	}
	if len(disks) == 0 {
		if len(ctrls) == 0 {
			return nil, fmt.Errorf("%w: NVMe subsystem %s (%s) has no controllers left; it lingers only while its old disk is held open (unmount stale mounts of it) and a new connect is needed", ErrNotConnected, sub.name, nqn)
		}
		return nil, fmt.Errorf("%w: NVMe subsystem %s (%s) is connected (%s) but shows no disk for namespace %d%s", ErrNoDisk, sub.name, nqn, describeControllers(ctrls), nsid, h.namespaceHint(sub, ctrls))
	}
	if err := h.checkDevNode(&disks[0]); err != nil {
		return nil, err
	}
	return &disks[0], nil
}

// checkDevNode verifies that the disk's device node is this disk: a /dev other than the
// host's devtmpfs could hold a stale node of a renumbered disk.
func (h *Host) checkDevNode(d *Disk) error {
	rdev, err := h.statRdev(d.DevPath)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: sysfs shows disk %s (%d:%d) of %s, but %s does not exist yet; if it never appears, give the node plugin the host's /dev", ErrNoDisk, d.Name, d.Major, d.Minor, d.NQN, d.DevPath)
	}
	if err != nil {
		return fmt.Errorf("%w: check the device node of %s: %v", ErrNoDisk, d.Name, err)
	}
	if ma, mi := unix.Major(rdev), unix.Minor(rdev); ma != d.Major || mi != d.Minor {
		return fmt.Errorf("%w: %s is device %d:%d, but sysfs says disk %s of %s is %d:%d; the node plugin's /dev is stale: give it the host's /dev (devtmpfs)", ErrNoDisk, d.DevPath, ma, mi, d.Name, d.NQN, d.Major, d.Minor)
	}
	return nil
}

func (h *Host) namespaceHint(sub subsys, ctrls []Controller) string {
	all, err := h.sys.disks(sub, ctrls, 0)
	if err != nil || len(all) == 0 {
		return " (no namespace yet: it appears a few milliseconds after a connect, or the target exports none)"
	}
	ids := make([]string, len(all))
	for i, d := range all {
		ids[i] = fmt.Sprint(d.NSID)
	}
	return fmt.Sprintf(" (it has namespace IDs %s; check the volume's nsid)", strings.Join(ids, ", "))
}

// Health returns the state of a volume's controllers; not connected is no error.
func (h *Host) Health(nqn string) (Health, error) {
	if err := h.guard.Check(nqn); err != nil {
		return Health{}, err
	}
	sub, ok, err := h.sys.findSubsystem(nqn)
	if err != nil || !ok {
		return Health{}, err
	}
	ctrls, err := h.sys.controllers(sub)
	if err != nil {
		return Health{}, fmt.Errorf("read the controllers of %s: %w", nqn, err)
	}
	return Health{Controllers: ctrls, Live: slices.ContainsFunc(ctrls, Controller.Live), Connected: len(ctrls) > 0}, nil
}

// Subsystems lists every NVMe subsystem on the host, managed or not, with its controllers
// and disks. It writes nothing.
func (h *Host) Subsystems() ([]Subsystem, error) {
	subs, err := h.sys.subsystems()
	if err != nil {
		return nil, fmt.Errorf("list NVMe subsystems: %w", err)
	}
	out := make([]Subsystem, 0, len(subs))
	for _, sub := range subs {
		ctrls, err := h.sys.controllers(sub)
		if err != nil {
			return nil, fmt.Errorf("list the controllers of %s: %w", sub.nqn, err)
		}
		disks, err := h.sys.disks(sub, ctrls, 0)
		if err != nil {
			return nil, fmt.Errorf("list the disks of %s: %w", sub.nqn, err)
		}
		out = append(out, Subsystem{Name: sub.name, NQN: sub.nqn, Managed: h.guard.Manages(sub.nqn), Controllers: ctrls, Disks: disks})
	}
	return out, nil
}

// Rescan asks the subsystem's live controllers to rescan (after the target grew a volume)
// and returns the disk read again. The kernel rescans asynchronously: Rescan waits a short
// settle time for the size to change, then returns the disk as it is; the caller compares
// SizeBytes with what it expects.
func (h *Host) Rescan(ctx context.Context, nqn string, nsid int) (d *Disk, err error) {
	defer func() { h.observe("rescan", err) }()
	if err := h.guard.Check(nqn); err != nil {
		return nil, err
	}
	nsid = cmp.Or(nsid, 1)
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
		if owner, err := readAttr(h.sys.ctrlDir(c.Name) + "/subsysnqn"); err != nil || owner != nqn {
			continue // vanished or renamed since it was listed
		}
		_, err := withDeadline(ctx, "rescan controller "+c.Name, func() (struct{}, error) {
			return struct{}{}, h.writeAttr(h.sys.ctrlDir(c.Name)+"/rescan_controller", "1")
		}, nil)
		if err != nil && !vanished(err) {
			return nil, fmt.Errorf("rescan %s: %w", nqn, err)
		}
		live = append(live, c.Name)
	}
	if len(live) == 0 {
		return nil, fmt.Errorf("%w: rescan %s: no live controller (%s); retry when the target is reachable again", ErrNotLive, nqn, describeControllers(before.Controllers))
	}
	settle, cancelSettle := context.WithTimeout(ctx, h.settle)
	defer cancelSettle()
	for {
		d, err := h.resolve(nqn, nsid)
		if err != nil {
			return nil, fmt.Errorf("rescan: %w", err)
		}
		if d.SizeBytes != before.SizeBytes {
			h.log.Info("rescanned", "nqn", nqn, "disk", d.Name, "size", d.SizeBytes, "was", before.SizeBytes, "controllers", strings.Join(live, ","))
			return d, nil
		}
		if sleep(settle, 5*time.Millisecond) != nil {
			return d, nil
		}
	}
}
