package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// Healing: one look at a staged volume (shared with NodeGetVolumeHealth and the doctor),
// a plan from it, and the watcher that carries plans out with stage's own pieces.

// stagedFacts is one look at a staged volume, taken without changing anything. Healing
// plans from it (planHeal), NodeGetVolumeHealth reports it (volumeConditions), and the
// doctor judges it, so all three see a volume the same way.
type stagedFacts struct {
	currentBoot bool // the record was made in this boot of the kernel

	health    nvme.Health // the volume's controllers as sysfs shows them
	healthErr error
	paths     []pathState // states of the configured paths (more than one only)
	// reconnecting: connected but no controller is live (the target is away); it may be
	// lost soon, so the watcher looks at it more often.
	reconnecting bool
	pathsDown    int // paths in use of a multipath volume that are not live

	disk    *nvme.Disk // the volume's disk as sysfs resolves it now; nil if none
	diskErr error
	lost    bool // no controller of the volume is left (ctrl_loss_tmo expired)

	// staging is the visible mount at a filesystem volume's staging path (nil if none),
	// stacked the number of mounts there; with mountErr nothing may be decided.
	staging  *mount.Entry
	stacked  int
	mountErr error
	// stagingOK: stat alone showed the staging path on the volume's disk, writable
	// unless staged read-only: nothing to do.
	stagingOK  bool
	staleNodes bool // block: a publish node points at the volume's previous device

	// Set by the node for planHeal only.
	demand       bool     // a caller needs the volume now (NodePublishVolume)
	missingPaths []string // paths to connect again beside the live ones
}

// stagedSource is where a look reads NVMe state: the attacher, or the doctor's host.
type stagedSource interface {
	Health(nqn string) (nvme.Health, error)
	Resolve(nqn string, nsid int) (*nvme.Disk, error)
}

// lookAt takes one look at a staged volume. quick lets a filesystem volume whose staging
// path stat and statfs show as its live disk, writable, skip the mount table. note says
// why a path failed to connect.
func lookAt(ctx context.Context, rec stagingRecord, bootID string, src stagedSource,
	mounts func(ctx context.Context, path string) ([]*mount.Entry, error), note func(address string) string, quick bool,
) stagedFacts {
	f := stagedFacts{currentBoot: rec.BootID == bootID}
	f.health, f.healthErr = src.Health(rec.NQN)
	if f.healthErr == nil {
		f.reconnecting = f.health.Connected && !f.health.Live
		if len(rec.paths()) > 1 {
			f.paths = pathStatesOf(rec, f.health, note)
			if rec.multipath() {
				f.pathsDown = len(f.paths) - countLive(f.paths)
			}
		}
	}
	f.disk, f.diskErr = src.Resolve(rec.NQN, rec.NSID)
	f.lost = errors.Is(f.diskErr, nvme.ErrNotConnected)
	switch {
	case rec.Block:
		if f.disk != nil {
			f.staleNodes = staleBlockNodes(rec, diskDev(f.disk))
		}
	case quick && !rec.Healing && f.disk != nil && !f.reconnecting && stagingOnDisk(rec, f.disk):
		f.stagingOK = true
	default:
		entries, err := mounts(ctx, rec.StagingPath)
		f.staging, f.stacked, f.mountErr = top(entries), len(entries), err
	}
	return f
}

// stagingOnDisk reports, from stat and statfs alone, that the filesystem at the staging
// path lives on disk and is writable (or read-only as staged).
func stagingOnDisk(rec stagingRecord, disk *nvme.Disk) bool {
	var st unix.Stat_t
	if unix.Stat(rec.StagingPath, &st) != nil || (devNum{unix.Major(st.Dev), unix.Minor(st.Dev)}) != diskDev(disk) || diskDev(disk) != rec.dev() {
		return false
	}
	var fs unix.Statfs_t
	return unix.Statfs(rec.StagingPath, &fs) == nil && (rec.ReadOnly || fs.Flags&unix.ST_RDONLY == 0)
}

// staleBlockNodes reports whether a recorded publish node of a block volume points at
// the volume's previous device instead of its disk.
func staleBlockNodes(rec stagingRecord, disk devNum) bool {
	return slices.ContainsFunc(rec.publishTargets(), func(path string) bool {
		cur, ok, _ := blockNodeAt(path)
		return ok && cur != disk && cur == rec.dev()
	})
}

// look is the node plugin's lookAt, with its path notes.
func (n *nodeService) look(ctx context.Context, rec stagingRecord, quick bool) stagedFacts {
	return lookAt(ctx, rec, n.bootID, n.att, mount.ByMountPoint, func(a string) string { return n.pathNote(rec.VolumeID, a) }, quick)
}

// observe looks at a staged volume for planHeal and updates its NVMe gauges. An
// unreadable mount table yields facts that plan nothing.
func (n *nodeService) observe(ctx context.Context, rec stagingRecord, demand bool) (stagedFacts, error) {
	f := n.look(ctx, rec, !demand)
	f.demand = demand
	if f.healthErr == nil {
		live := 0.0
		if f.health.Live {
			live = 1
		}
		n.m.volumeNVMeState.WithLabelValues(rec.VolumeID).Set(live)
		used, livePaths := 1, live // one path: whatever controller the volume has is it
		if rec.multipath() {
			used, livePaths = len(f.paths), float64(countLive(f.paths))
			if f.health.Connected {
				for _, p := range f.paths {
					if gone(p.state) && n.pathDue(rec.VolumeID, p.address) {
						f.missingPaths = append(f.missingPaths, p.address)
					}
				}
			}
		}
		n.m.volumePaths.WithLabelValues(rec.VolumeID, "configured").Set(float64(used))
		n.m.volumePaths.WithLabelValues(rec.VolumeID, "live").Set(livePaths)
	}
	if f.mountErr != nil {
		return stagedFacts{}, f.mountErr // as if unused and not lost: plans nothing
	}
	return f, f.diskErr
}

// healPlan says what to do about a volume.
type healPlan struct {
	reconnect      bool     // connect again before anything else
	reconnectPaths []string // paths to connect beside the live ones, touching nothing else
	replace        bool     // replace the stale staging and publish mounts (or block nodes)
	reason         string   // why, for logs and volume health
}

// planHeal decides, from a look only, whether a staged volume needs healing. Nothing is
// done for a record of an earlier boot (kubelet stages those again), and a lost volume is
// reconnected only when something uses it (mounts, publish nodes) or a caller asks.
func planHeal(rec stagingRecord, f stagedFacts) healPlan {
	if !f.currentBoot {
		return healPlan{reason: "staged before the node last booted; waiting for kubelet to stage it again"}
	}
	inUse := rec.Healing || (rec.Block && len(rec.Published) > 0) || (!rec.Block && f.staging != nil)
	switch {
	case f.lost && !inUse && !f.demand:
		return healPlan{reason: "not connected and not in use"}
	case f.lost:
		return healPlan{reconnect: true, replace: inUse, reason: "the NVMe/TCP controller was lost; reconnecting"}
	case f.disk == nil:
		return healPlan{reason: "the volume's disk is not resolvable yet"}
	}
	disk, p := diskDev(f.disk), healPlan{reconnectPaths: f.missingPaths}
	switch {
	case rec.Healing:
		return healPlan{replace: true, reason: "finishing an interrupted heal"}
	case rec.Block && f.staleNodes:
		return healPlan{replace: true, reason: "a publish device node points at the volume's previous device"}
	case rec.Block, f.stagingOK, f.staging == nil:
	case entryDev(f.staging) != disk && entryDev(f.staging) == rec.dev():
		return healPlan{replace: true, reason: fmt.Sprintf("the staging mount is on the volume's previous device %d:%d, its disk is now %s (%d:%d)",
			f.staging.Major, f.staging.Minor, f.disk.Name, disk.major, disk.minor)}
	case entryDev(f.staging) != disk:
		p.reason = fmt.Sprintf("the staging path has device %d:%d mounted, which is not this volume's; left alone", f.staging.Major, f.staging.Minor)
	case mountReadOnly(f.staging) && !rec.ReadOnly:
		return healPlan{replace: true, reason: "the filesystem went read-only after I/O errors; remounting it after a journal replay"}
	}
	return p
}

const (
	healTimeout  = 2 * time.Minute // one volume's healing pass
	sweepTimeout = time.Minute     // the start-up sweep
	// minRetryDelay keeps the watcher from hammering a dead RDS, whatever a volume's
	// reconnectDelay.
	minRetryDelay = time.Second
)

// healOutcome is a volume's last healing result, reported by NodeGetVolumeHealth.
type healOutcome struct {
	at     time.Time
	reason string
	err    error
}

// watch checks every staged volume every HealInterval, and at once when kicked, until
// ctx ends. An unhealthy volume (reconnecting, lost, a path down) is looked at on its own
// cadence (its reconnectDelay: the kernel retries no faster) until healthy, so it is
// healed soon after its target returns.
func (n *nodeService) watch(ctx context.Context) {
	retry := map[string]time.Time{} // volume ID → when to look at it again
	var nextFull time.Time
	for {
		now := n.now()
		full := !now.Before(nextFull)
		if full {
			nextFull = now.Add(n.cfg.HealInterval)
		}
		n.healPass(ctx, func(id string) bool {
			due, ok := retry[id]
			return (full && !ok) || (ok && !now.Before(due))
		}, retry)
		wait := nextFull.Sub(now)
		for _, due := range retry {
			wait = min(wait, due.Sub(now))
		}
		select {
		case <-ctx.Done():
			return
		case <-n.after(max(wait, 0)):
		case <-n.kick:
			nextFull = time.Time{}
		}
	}
}

// requestHeal asks the watcher for a pass without waiting for it.
func (n *nodeService) requestHeal() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// healPass checks the staged volumes want picks once. Looking takes no lock, so the
// watcher never makes an RPC answer Aborted for a healthy volume; the lock is taken only
// to heal (the look is taken again under it), and a busy volume waits for the next pass.
// A volume still unhealthy is due again in retry after its reconnectDelay.
func (n *nodeService) healPass(ctx context.Context, want func(id string) bool, retry map[string]time.Time) {
	recs := n.records.all()
	for id := range retry {
		if !slices.ContainsFunc(recs, func(r stagingRecord) bool { return r.VolumeID == id }) {
			delete(retry, id) // unstaged since
		}
	}
	for _, rec := range recs {
		if ctx.Err() != nil {
			return
		}
		if !want(rec.VolumeID) {
			continue
		}
		vctx, cancel := context.WithTimeout(ctx, healTimeout)
		facts, _ := n.observe(vctx, rec, false)
		unhealthy := facts.reconnecting || facts.pathsDown > 0
		if p := planHeal(rec, facts); p.reconnect || p.replace || len(p.reconnectPaths) > 0 {
			unhealthy = true
			if release, ok := n.locks.tryLock(rec.VolumeID); ok {
				if current, ok := n.records.get(rec.VolumeID); ok {
					_, _, err := n.healVolume(vctx, current, false)
					f, _ := n.observe(vctx, current, false)
					unhealthy = err != nil || f.pathsDown > 0 // a path still down: the retry cadence
				}
				release()
			}
		}
		cancel()
		if unhealthy {
			retry[rec.VolumeID] = n.now().Add(min(max(rec.reconnectDelay(), minRetryDelay), n.cfg.HealInterval))
		} else {
			delete(retry, rec.VolumeID)
		}
	}
}

// healVolume looks at a staged volume and heals it when planHeal says so, returning its
// disk when resolvable. demand marks a caller that needs the volume now
// (NodePublishVolume): a lost controller is then reconnected even without mounts. When it
// changed nothing it returns the staging mount it saw too, so a caller under the same
// lock need not read the mount table again. The caller holds the volume lock.
func (n *nodeService) healVolume(ctx context.Context, rec stagingRecord, demand bool) (*nvme.Disk, *mount.Entry, error) {
	facts, resolveErr := n.observe(ctx, rec, demand)
	plan := planHeal(rec, facts)
	if !plan.reconnect && !plan.replace {
		// Not a heal: the volume works through its other paths, and a path that does
		// not answer yet is no failure of the volume (its note says why).
		n.reconnectPaths(ctx, rec, plan.reconnectPaths)
		return facts.disk, facts.staging, resolveErr
	}
	err := n.heal(ctx, &rec, facts.disk, plan)
	result := "ok"
	if err != nil {
		result = "failed"
		n.log.Error("healing failed; retrying at the next pass", "volume_id", rec.VolumeID, "why", plan.reason, "err", err)
	}
	n.m.healsTotal.WithLabelValues(result).Inc()
	n.heals.Store(rec.VolumeID, healOutcome{at: n.now(), reason: plan.reason, err: err})
	if err != nil {
		return nil, nil, err
	}
	disk, err := n.att.Resolve(rec.NQN, rec.NSID)
	return disk, nil, err
}

// heal carries out a plan: reconnect when the controller is gone, then replace the stale
// mounts (filesystem) or device nodes (block).
func (n *nodeService) heal(ctx context.Context, rec *stagingRecord, disk *nvme.Disk, plan healPlan) error {
	if plan.reconnect {
		n.log.Warn("reconnecting a lost volume", "volume_id", rec.VolumeID, "nqn", rec.NQN, "why", plan.reason)
		d, err := n.attach(ctx, rec)
		if err != nil {
			return err
		}
		disk = d
		if err := n.records.put(*rec); err != nil { // the path in use may have changed
			return err
		}
	}
	switch {
	case !plan.replace:
		return nil
	case rec.Block:
		return n.replaceBlockNodes(rec, disk)
	}
	return n.replaceMounts(ctx, rec, disk, plan.reason)
}

// rebuild logs the node's view of its staged volumes at start (the records are loaded;
// the mount table tells which are mounted).
func (n *nodeService) rebuild(ctx context.Context) {
	recs := n.records.all()
	var mounted, block, earlier int
	for _, r := range recs {
		switch {
		case r.BootID != n.bootID:
			earlier++
		case r.Block:
			block++
		default:
			if ok, err := mount.IsMounted(ctx, r.StagingPath); err == nil && ok {
				mounted++
			}
		}
	}
	if _, err := n.att.Probe(); err != nil {
		n.log.Warn("NVMe/TCP is not usable on this node yet: staging fails until it is", "err", err)
	}
	n.log.Info("node state rebuilt", "staged_volumes", len(recs), "mounted_filesystems", mounted, "block_volumes", block, "from_an_earlier_boot", earlier)
}
