package main

import (
	"context"
	"slices"
	"time"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// healTimeout bounds one volume's healing pass (reconnect, check, mounts).
const healTimeout = 2 * time.Minute

// sweepTimeout bounds the start-up sweep.
const sweepTimeout = time.Minute

// healOutcome is a volume's last healing result, reported by NodeGetVolumeHealth.
type healOutcome struct {
	at     time.Time
	reason string
	err    error
}

// minRetryDelay keeps the watcher from hammering a dead RDS: an unhealthy volume is
// looked at no more often than this, whatever its reconnectDelay.
const minRetryDelay = time.Second

// watch checks every staged volume every HealInterval, and at once when kicked, until
// ctx ends. A volume found unhealthy (its controller reconnecting, or lost and not yet
// reconnected) is looked at again on its own reconnectDelay cadence (retryDelay) until
// it is healthy, so a volume is healed soon after its target returns; healthy volumes
// keep the normal interval.
func (n *nodeService) watch(ctx context.Context) {
	retry := map[string]time.Time{} // volume ID → when to look at it again
	var nextFull time.Time
	for {
		now := n.now()
		full := !now.Before(nextFull)
		if full {
			nextFull = now.Add(n.cfg.HealInterval)
		}
		// An unhealthy volume keeps its own cadence, even in a full pass.
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

// retryDelay is how soon an unhealthy volume is looked at again: its reconnectDelay
// (the kernel retries the connection that often, so nothing changes faster), never
// more rarely than the heal interval and never more often than minRetryDelay.
func (n *nodeService) retryDelay(rec stagingRecord) time.Duration {
	delay := time.Duration(nvme.DefaultReconnectDelay) * time.Second
	if d := rec.Options.ReconnectDelay; d != nil {
		delay = time.Duration(*d) * time.Second
	}
	return min(max(delay, minRetryDelay), n.cfg.HealInterval)
}

// requestHeal asks the watcher for a pass without waiting for it.
func (n *nodeService) requestHeal() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// healPass checks the staged volumes that want picks once. Looking needs
// no lock (it only reads), so the watcher never makes an RPC answer Aborted for a
// healthy volume; the volume lock is taken only to heal, and the facts are gathered again
// under it. A volume busy with an RPC is skipped: the next pass comes soon. retry is
// updated: a volume still unhealthy after the pass is due again after its retryDelay.
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
		if n.needsHeal(rec, facts) {
			unhealthy = true
			if release, ok := n.locks.tryLock(rec.VolumeID); ok {
				if current, ok := n.records.get(rec.VolumeID); ok {
					if _, _, err := n.healVolume(vctx, current, false); err == nil {
						unhealthy = false
					}
					if f, _ := n.observe(vctx, current, false); f.pathsDown > 0 {
						unhealthy = true // a path is still down: look again on the retry cadence
					}
				}
				release()
			}
		}
		cancel()
		if unhealthy {
			retry[rec.VolumeID] = n.now().Add(n.retryDelay(rec))
		} else {
			delete(retry, rec.VolumeID)
		}
	}
}

// needsHeal reports whether planHeal wants something done, or a path of a multipath
// volume is to be reconnected.
func (n *nodeService) needsHeal(rec stagingRecord, f stagedFacts) bool {
	p := planHeal(rec, f)
	return p.reconnect || p.replace || len(p.reconnectPaths) > 0
}

// healVolume looks at one staged volume and heals it when planHeal says so. It returns
// the volume's disk when it is resolvable. demand marks a caller that needs the volume
// now (NodePublishVolume): a lost controller is then reconnected even without mounts.
// The caller holds the volume lock. The staging mount it saw is returned too when it
// changed nothing (nil otherwise, or for block volumes), so a caller under the same lock
// need not read the mount table again.
func (n *nodeService) healVolume(ctx context.Context, rec stagingRecord, demand bool) (*nvme.Disk, *mount.Entry, error) {
	facts, resolveErr := n.observe(ctx, rec, demand)
	plan := planHeal(rec, facts)
	if !plan.reconnect && !plan.replace {
		if len(plan.reconnectPaths) > 0 {
			// Not a heal: the volume works through its other paths, and a path that
			// does not answer yet is no failure of the volume (its note says why).
			n.reconnectPaths(ctx, rec, plan.reconnectPaths)
		}
		return facts.disk, facts.staging, resolveErr
	}
	err := n.heal(ctx, &rec, facts, plan)
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
func (n *nodeService) heal(ctx context.Context, rec *stagingRecord, f stagedFacts, plan healPlan) error {
	disk := f.disk
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
	if !plan.replace {
		return nil
	}
	if rec.Block {
		return n.replaceBlockNodes(rec, disk)
	}
	return n.replaceMounts(ctx, rec, disk, plan.reason)
}

// rebuild logs the node's view of its staged volumes at start: the records are already
// loaded; the mount table tells which are mounted. The first healing pass follows.
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

// sweep disconnects the connections this driver made and abandoned (a crash between
// connect and record, an unstage that failed half-way): managed subsystems that its intent
// records prove it connected in this boot, that no staged volume claims and that nothing
// uses. Everything else stays: unmanaged subsystems (nvme's guard), and managed ones
// without proof, which are logged once, counted and shown by the doctor, until kubelet
// stages (adopts) or unstages them. While any staging record is unreadable the sweep
// disconnects nothing: that record may be a volume in use. Stages wait while it runs.
func (n *nodeService) sweep(ctx context.Context) {
	if _, err := n.att.Probe(); err != nil {
		n.log.Info("skipping the NVMe sweep: NVMe/TCP is not usable", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, sweepTimeout)
	defer cancel()
	n.sweepMu.Lock()
	defer n.sweepMu.Unlock()
	claimed := map[string]bool{}
	for _, r := range n.records.all() {
		claimed[r.NQN] = true
	}
	owned, err := n.ownedConnections()
	if err != nil {
		n.log.Error("NVMe sweep: cannot read the connection records, so nothing is disconnected", "err", err)
		owned = nil
	}
	if n.unreadableRecords > 0 {
		n.log.Warn("NVMe sweep: some staging records are unreadable, so nothing is disconnected (any of them may be a volume in use)", "unreadable_records", n.unreadableRecords)
		owned = nil
	}
	rep, err := n.att.Sweep(ctx, claimed, owned, func(d nvme.Disk) bool { return n.diskInUse(ctx, d) })
	if err != nil {
		n.log.Error("NVMe sweep", "err", err)
	}
	for _, nqn := range rep.Disconnected {
		if err := n.ledger.forget(nqn); err != nil {
			n.log.Error("NVMe sweep: the disconnect is verified but its record stays", "nqn", nqn, "err", err)
		}
	}
	n.unownedMu.Lock()
	for _, k := range rep.Unowned {
		n.unowned[k.NQN] = true
		n.log.Warn("left connected: a managed NVMe subsystem that no staged volume claims and nothing proves this driver connected (the earlier driver's, or this driver's from a lost state directory); kubelet's NodeStageVolume adopts it; 'rds-csi doctor' shows how to remove it by hand once nothing uses it",
			"nqn", k.NQN)
	}
	n.m.unownedSubsystems.Set(float64(len(n.unowned)))
	n.unownedMu.Unlock()
	n.log.Info("NVMe sweep done", "disconnected", rep.Disconnected, "kept", len(rep.Kept), "unowned", len(rep.Unowned))
}

// ownedConnections returns the NQNs the intent records prove this driver connected in
// this boot, removing records whose subsystem is gone.
func (n *nodeService) ownedConnections() (map[string]bool, error) {
	subs, err := n.att.Subsystems()
	if err != nil {
		return nil, err
	}
	connected := map[string]bool{}
	for _, s := range subs {
		connected[s.NQN] = true
	}
	return n.ledger.owned(connected)
}

// settleUnowned notes that kubelet staged (adopted) or unstaged nqn: it is no longer an
// unowned subsystem.
func (n *nodeService) settleUnowned(nqn string) {
	n.unownedMu.Lock()
	defer n.unownedMu.Unlock()
	if n.unowned[nqn] {
		delete(n.unowned, nqn)
		n.m.unownedSubsystems.Set(float64(len(n.unowned)))
	}
}
