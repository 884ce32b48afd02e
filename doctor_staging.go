package main

// The doctor's staging checks: the node plugin's records and each staged volume.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"srvlab.io/rds-csi/nvme"
)

// stagingChecks reports the node plugin's staging records (read by its own loader), then one
// line per staged volume.
func (d *doctor) stagingChecks(host *nvme.Host, guardErr error) {
	dir := filepath.Join(d.cfg.StateDir, "volumes")
	_, files := doctorRun(d, "staging records", doctorHungKernel, func(context.Context) (checkResult, []recordFile) {
		switch files, err := readRecordFiles(dir); {
		case errors.Is(err, fs.ErrNotExist):
			return okResult("none: %s does not exist (nothing has been staged on this node)", dir), nil
		case err != nil:
			return failResult("mount the node's state directory into the node plugin (hostPath "+d.cfg.StateDir+", as deploy.yaml does)",
				"cannot read %s: %v", dir, err), nil
		default:
			return okResult("%d in %s", len(files), dir), files
		}
	})
	bootID := d.bootID()
	for _, f := range files {
		d.run("volume "+strings.TrimSuffix(filepath.Base(f.path), ".json"), doctorHungKernel, func(ctx context.Context) checkResult {
			switch {
			case f.err != nil:
				return warnResult("nothing to do while the volume is in use; once it is unstaged (or if no pod on this node uses it), move the file away",
					"the node plugin ignores record %s: %v", f.path, f.err)
			case host == nil:
				return skipResult("not checked: sysfs is unreadable")
			case guardErr != nil:
				return skipResult("not checked: needs a valid --managed-nqn-prefix")
			}
			return d.checkStagedVolume(ctx, host, f.rec, bootID)
		})
	}
}

// checkStagedVolume judges the node plugin's look at a staged volume and lists its publish
// targets as details.
func (d *doctor) checkStagedVolume(ctx context.Context, host *nvme.Host, rec stagingRecord, bootID string) checkResult {
	f := lookAt(ctx, rec, bootID, host, d.mounts, nil, false)
	if errors.Is(f.diskErr, nvme.ErrNotManaged) {
		return warnResult("if --managed-nqn-prefix was changed, restore the prefix the volume was staged with: the node plugin never touches subsystems outside it, so this volume can be neither healed nor unstaged",
			"its NQN %s is outside the managed prefix %q", rec.NQN, d.cfg.ManagedNQNPrefix)
	}
	if f.mountErr != nil {
		return failResult(doctorMountNSFix, "%v", f.mountErr)
	}
	r := judgeStagedVolume(rec, f, planHeal(rec, f))
	if f.currentBoot && len(rec.paths()) > 1 {
		r = judgePaths(r, rec, f)
	}
	if !f.currentBoot || f.disk == nil {
		return r
	}
	for _, target := range rec.publishTargets() {
		line, stale, err := d.describePublishTarget(ctx, rec, target, f.disk)
		if err != nil {
			return failResult(doctorMountNSFix, "%v", err)
		}
		r.details = append(r.details, "publish "+target+": "+line)
		if stale && r.status == verdictOK {
			// the staging mount is right, so no heal comes: only a new publish fixes it
			r = checkResult{status: verdictFail, details: r.details, finding: "publish target " + target + " is stale: " + line,
				fix: "restart the pod that uses the volume on this node, so that kubelet publishes it again"}
		}
	}
	return r
}

// judgeStagedVolume turns the node plugin's healing plan for a volume into a verdict.
func judgeStagedVolume(rec stagingRecord, f stagedFacts, plan healPlan) checkResult {
	switch {
	case !f.currentBoot:
		return okResult("%s", plan.reason)
	case rec.Healing:
		return warnResult(doctorHealFix, "%s: mounts may be missing until it is done", plan.reason)
	case plan.reconnect || plan.replace:
		return failResult(doctorHealFix, "stale: %s", plan.reason)
	case !rec.Block && f.staging == nil:
		return warnResult("kubelet stages the volume again when a pod on this node needs it; if none does (kubectl get volumeattachment shows where it is attached), the record is left over from an interrupted unstage and the next NodeUnstageVolume removes it",
			"recorded as staged, but nothing is mounted at %s", rec.StagingPath)
	case f.lost:
		return warnResult("nothing to do: the node plugin connects it again as soon as a pod on this node needs it (kubelet publishes it), or kubelet unstages it",
			"%s: %v", plan.reason, f.diskErr)
	case f.disk == nil:
		return warnResult("the node plugin resolves it again at every pass; if it stays, see the subsystems line above and check the RDS",
			"%s: %v", plan.reason, f.diskErr)
	case plan.reason != "":
		return failResult(fmt.Sprintf("the node plugin leaves it alone, as nothing proves it is this volume's: look at it (findmnt %s), unmount it by hand if it is stale, then let kubelet stage the volume again", rec.StagingPath),
			"%s", plan.reason)
	case f.stacked > 1:
		return warnResult("drain the node (kubectl drain) so the volume is unstaged, which unmounts every layer, then let it stage again",
			"%s is mounted from %s, but %d mounts are stacked there: earlier stages left mounts behind", rec.StagingPath, f.disk.Name, f.stacked)
	case rec.Block:
		return okResult("raw block on %s (%d:%d)", f.disk.Name, f.disk.Major, f.disk.Minor)
	}
	return okResult("%s mounted at %s from %s (%d:%d)", f.staging.FSType, rec.StagingPath, f.disk.Name, f.disk.Major, f.disk.Minor)
}

// judgePaths lists a multipath volume's paths and their states, and turns a working volume
// with a path down, or on a single path because native multipath is off, into a warning.
func judgePaths(r checkResult, rec stagingRecord, f stagedFacts) checkResult {
	if f.healthErr != nil {
		r.details = append(r.details, fmt.Sprintf("paths: cannot be read: %v", f.healthErr))
		return r
	}
	ps := f.paths
	r.details = append(r.details, "paths: "+describePaths(ps))
	if r.status != verdictOK {
		return r
	}
	var w checkResult
	switch live := countLive(ps); {
	case rec.SinglePath:
		w = warnResult("enable native NVMe multipath: add nvme_core.multipath=Y to the node's kernel command line and reboot it (check with cat /sys/module/nvme_core/parameters/multipath); the volume then connects every path when it is staged again",
			"uses one of its %d paths (%s), because native NVMe multipath was off when it was staged: a failure of that path stops its I/O", len(ps), rec.Address)
	case live < len(ps):
		w = warnResult("check the network path from this node to each address not live (ping it, and that the RDS listens there on port "+fmt.Sprint(rec.Port)+"); the kernel reconnects a path it is still retrying, and the node plugin one the kernel gave up, once the address answers",
			"degraded: %d of %d paths live (%s)", live, len(ps), describePaths(ps))
	default:
		return r
	}
	w.details = r.details
	return w
}

// describePublishTarget says what a publish target holds: a bind mount of the volume's
// filesystem, or for raw block a device node of its disk; stale when it holds another device.
func (d *doctor) describePublishTarget(ctx context.Context, rec stagingRecord, target string, disk *nvme.Disk) (line string, stale bool, err error) {
	var got devNum
	if rec.Block {
		dev, isBlock, err := blockNodeAt(target)
		switch {
		case err != nil:
			return fmt.Sprintf("no device node (%v)", err), false, nil
		case !isBlock:
			return "not a block device node", false, nil
		}
		got = dev
	} else {
		entries, err := d.mounts(ctx, target)
		if err != nil {
			return "", false, err
		}
		t := top(entries)
		if t == nil {
			return "nothing mounted (the pod may be gone)", false, nil
		}
		got = entryDev(t)
	}
	if got != diskDev(disk) {
		return fmt.Sprintf("on %d:%d, but the volume's disk is %s (%d:%d)", got.major, got.minor, disk.Name, disk.Major, disk.Minor), true, nil
	}
	return fmt.Sprintf("on %s (%d:%d)", disk.Name, got.major, got.minor), false, nil
}
