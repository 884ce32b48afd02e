package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"srvlab.io/rds-csi/nvme"
)

// The node checks only read: they never connect, disconnect, mount or write, and never create
// the host identity (the node plugin does that once, at its first start). Staged volumes are
// judged from the node plugin's own look (lookAt) and healing rules (planHeal): what the
// doctor calls stale is exactly what the plugin heals.

const (
	doctorHungKernel = "a read of sysfs or /dev is stuck in the kernel, usually behind a dead NVMe controller: look at `dmesg | grep -i nvme` on the host"
	doctorHealFix    = "the node plugin heals this by itself (reconnect, then replace the staging mount and its publish targets) every --heal-interval: wait for it, and if it stays, read the node plugin's log for this volume and check that the RDS is reachable from this node"
	doctorMountNSFix = "run the doctor where the node plugin runs (its mount namespace)"
	// doctorPlaceholderPrefix stands in for an invalid managed prefix so that the checks not
	// depending on it still run; it matches no NQN a real target uses.
	doctorPlaceholderPrefix = "nqn.2014-08.invalid.rds-csi-doctor:none-"
)

// doctorNodeView is what the first node check learns for the others.
type doctorNodeView struct {
	host     *nvme.Host // nil when sysfs could not be read at all
	features nvme.Features
	probed   bool // /dev/nvme-fabrics answered
}

func (d *doctor) nodeChecks() {
	guard, guardErr := nvme.NewGuard(d.cfg.ManagedNQNPrefix)
	_, view := doctorRun(d, "nvme-fabrics", doctorHungKernel, func(ctx context.Context) (checkResult, doctorNodeView) {
		return d.checkFabrics(guard)
	})
	d.run("connect options", doctorHungKernel, func(context.Context) checkResult { return d.checkConnectOptions(view) })
	d.run("host identity", doctorHungKernel, func(context.Context) checkResult { return d.checkIdentity(view.host) })
	d.run("managed prefix", doctorHungKernel, func(context.Context) checkResult { return d.checkPrefix(guardErr) })
	d.run("subsystems", doctorHungKernel, func(context.Context) checkResult { return d.checkSubsystems(view.host, guardErr) })
	d.stagingChecks(view.host, guardErr)
}

// openHost builds an nvme.Host without creating the host identity: nvme.NewHost writes hostnqn
// and hostid when missing, so then (or when they are unusable) the Host gets a throw-away
// placeholder identity. The doctor never connects, so it never uses it; checkIdentity checks
// the real files.
func (d *doctor) openHost(guard *nvme.Guard) (*nvme.Host, error) {
	if guard == nil {
		var err error
		if guard, err = nvme.NewGuard(doctorPlaceholderPrefix); err != nil {
			return nil, err
		}
	}
	newHost := func(hostDir string) (*nvme.Host, error) {
		return nvme.NewHost(nvme.Config{SysfsRoot: d.cfg.SysfsRoot, DevRoot: d.cfg.DevRoot, HostDir: hostDir,
			Guard: guard, Logger: slog.New(slog.DiscardHandler)})
	}
	if missing, err := doctorMissingIdentity(d.cfg.NVMeHostDir); err == nil && len(missing) == 0 {
		if h, err := newHost(d.cfg.NVMeHostDir); err == nil || !errors.Is(err, nvme.ErrIdentityConflict) {
			return h, err // both files exist, so NewHost only read them
		}
	}
	dir, err := os.MkdirTemp("", "rds-csi-doctor-") // NewHost makes its identity here
	if err != nil {
		return nil, fmt.Errorf("make a placeholder NVMe identity (the real one is missing or unusable): %w", err)
	}
	defer os.RemoveAll(dir)
	return newHost(dir)
}

// doctorMissingIdentity lists the host identity files (hostnqn, hostid) not in dir.
func doctorMissingIdentity(dir string) (missing []string, err error) {
	for _, name := range []string{"hostnqn", "hostid"} {
		switch _, err := os.Stat(filepath.Join(dir, name)); {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, filepath.Join(dir, name))
		case err != nil:
			return nil, err
		}
	}
	return missing, nil
}

func (d *doctor) checkFabrics(guard *nvme.Guard) (checkResult, doctorNodeView) {
	host, err := d.openHost(guard)
	if err != nil {
		return failResult("give the node plugin the host's /sys and /dev (as deploy.yaml does), then re-run",
			"cannot read the NVMe state of this node: %v", err), doctorNodeView{}
	}
	view := doctorNodeView{host: host}
	path := filepath.Join(d.cfg.DevRoot, "nvme-fabrics")
	f, err := host.Probe()
	switch {
	case errors.Is(err, nvme.ErrFabricsMissing):
		return failResult("on the host: `modprobe nvme-tcp`, and `echo nvme-tcp > /etc/modules-load.d/nvme-tcp.conf` so it loads at every boot; in a pod, mount the host's /dev (hostPath /dev)",
			"%s is missing: the nvme-tcp kernel module is not loaded, so no volume can be attached", path), view
	case err != nil:
		return failResult("run the node plugin privileged with the host's /dev mounted; `dmesg | grep -i nvme` on the host tells why the kernel refuses",
			"%s cannot be read: %v", path, err), view
	}
	view.features, view.probed = f, true
	return okResult("%s is present (NVMe over Fabrics is loaded)", path), view
}

func (d *doctor) checkConnectOptions(v doctorNodeView) checkResult {
	if !v.probed {
		return skipResult("not checked: needs /dev/nvme-fabrics")
	}
	// what every connect sends, and what a StorageClass parameter adds (from the option table)
	always, optional := nvme.Options{}.Sent(), map[string]string{}
	for _, o := range volumeOptions {
		var opts nvme.Options
		if o.connect != nil {
			o.connect(&opts, o.min)
		}
		for _, name := range opts.Sent() {
			if !slices.Contains(always, name) {
				optional[name] = o.key
			}
		}
	}
	if v.features.Options == nil {
		return okResult("this kernel does not list its options (before 5.17): each connect sends %s, and the kernel names any it rejects", strings.Join(always, ", "))
	}
	missing := slices.DeleteFunc(slices.Clone(always), v.features.Supports)
	var missingOptional, params []string
	for _, o := range slices.Sorted(maps.Keys(optional)) {
		if !v.features.Supports(o) {
			missingOptional = append(missingOptional, o)
			params = append(params, fmt.Sprintf("%s sets %s", optional[o], o))
		}
	}
	switch {
	case len(missing) > 0:
		return failResult("use a kernel whose nvme-fabrics supports them (any kernel from the last years does; this one may be built without NVMe/TCP: `modprobe nvme-tcp`)",
			"the kernel does not support %s, which every connect sends", strings.Join(missing, ", "))
	case len(missingOptional) > 0:
		return warnResult("remove the StorageClass parameters that set them ("+strings.Join(params, ", ")+") from the classes this node uses, or use a newer kernel",
			"the kernel supports every option the driver always sends, but not %s: volumes that set them fail to attach here", strings.Join(missingOptional, ", "))
	}
	return okResult("the kernel supports %s", strings.Join(append(always, slices.Sorted(maps.Keys(optional))...), ", "))
}

// checkIdentity checks the form of /etc/nvme/hostnqn and hostid, and compares them with the
// identities the host's existing NVMe controllers were connected with.
func (d *doctor) checkIdentity(host *nvme.Host) checkResult {
	dir := d.cfg.NVMeHostDir
	missing, err := doctorMissingIdentity(dir)
	switch {
	case err != nil:
		return failResult("mount the host's /etc/nvme into the node plugin (hostPath, as deploy.yaml does)", "cannot read the NVMe host identity: %v", err)
	case len(missing) > 0:
		return warnResult(fmt.Sprintf("start the node plugin on this node: it writes them once (hostid from the machine's DMI UUID, hostnqn %s<hostid>) and keeps them; never copy them from another node", nvme.UUIDHostNQNPrefix),
			"%s missing: the node plugin creates the identity at its first start", strings.Join(missing, " and ")+plural(len(missing), " is", " are"))
	}
	id, _, err := nvme.LoadOrCreateIdentity(dir, d.cfg.SysfsRoot) // both exist: this only reads them
	if err != nil {
		return failResult("fix the file named above (an NQN like "+nvme.UUIDHostNQNPrefix+"<uuid>, an ID like 4e7f3a52-0a3b-4b5e-9a6c-2f1d8e7c6b5a), or remove it so the node plugin makes a new one; the RDS then must allow the new host NQN",
			"the node plugin cannot start: %v", err)
	}
	form := "its own form (not the UUID form; fine as long as no other node has it)"
	if u, isUUID := strings.CutPrefix(id.HostNQN, nvme.UUIDHostNQNPrefix); isUUID {
		if !strings.EqualFold(u, id.HostID) {
			return warnResult("leave it while volumes are attached (changing the identity of a connected host breaks its reconnects); on a node with none, make hostid the UUID in hostnqn",
				"hostnqn %s names UUID %s, but hostid is %s: the usual pairing differs, a sign the files came from different places (a cloned image?)", id.HostNQN, u, id.HostID)
		}
		form = "UUID form, matching hostid"
	}
	if host == nil {
		return okResult("%s / %s (%s); not compared with connected controllers: sysfs is unreadable", id.HostNQN, id.HostID, form)
	}
	subs, err := host.Subsystems()
	if err != nil {
		return failResult("give the node plugin the host's /sys", "identity %s is well formed, but the connected controllers cannot be listed: %v", id.HostNQN, err)
	}
	using := 0
	for _, s := range subs {
		for _, c := range s.Controllers {
			sameNQN, sameID := c.HostNQN == id.HostNQN, strings.EqualFold(c.HostID, id.HostID)
			switch {
			case c.HostID != "" && sameNQN != sameID:
				return failResult(fmt.Sprintf("make %s and hostid match the existing connections again (%s / %s), or disconnect %s once nothing uses it", filepath.Join(dir, "hostnqn"), c.HostNQN, c.HostID, c.Name),
					"controller %s (%s) uses host NQN %s with host ID %s, but this node's identity is %s / %s: the kernel allows one pairing, so new connects fail", c.Name, s.NQN, c.HostNQN, c.HostID, id.HostNQN, id.HostID)
			case s.Managed && !sameNQN:
				return warnResult("restore the previous /etc/nvme/hostnqn and hostid if they were replaced by mistake; otherwise drain the node so its volumes reconnect with the current identity",
					"managed controller %s (%s) was connected as %s, but this node's identity is now %s: the identity changed while volumes were attached", c.Name, s.NQN, c.HostNQN, id.HostNQN)
			case sameNQN:
				using++
			}
		}
	}
	return okResult("%s / %s (%s); %d connected %s it", id.HostNQN, id.HostID, form, using, plural(using, "controller uses", "controllers use"))
}

func (d *doctor) checkPrefix(guardErr error) checkResult {
	p := d.cfg.ManagedNQNPrefix
	const fix = "set --managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) to the start of the NQNs of this driver's volumes: " + nqnPrefix + "pvc- with the default NQNs, or the slot prefix pvc- when the RDS runs RouterOS before 7.21"
	switch {
	case p == "":
		return failResult(fix, "--managed-nqn-prefix is empty: the node plugin refuses to start without it (it touches only NVMe subsystems inside it)")
	case guardErr != nil:
		return failResult(fix, "%v", guardErr)
	case strings.HasPrefix(p, "nqn."):
		return okResult("%q: the node plugin touches only subsystems whose NQN starts with it", p)
	}
	return okResult("slot prefix %q: the node plugin touches only subsystems whose NQN, after its last ':', starts with it", p)
}

func (d *doctor) checkSubsystems(host *nvme.Host, guardErr error) checkResult {
	switch {
	case host == nil:
		return skipResult("not checked: sysfs is unreadable")
	case guardErr != nil:
		return skipResult("not checked: needs a valid --managed-nqn-prefix to tell managed subsystems from others")
	}
	subs, err := host.Subsystems()
	if err != nil {
		return failResult("give the node plugin the host's /sys", "cannot list NVMe subsystems: %v", err)
	}
	claimed := map[string]bool{}
	files, _ := readRecordFiles(filepath.Join(d.cfg.StateDir, "volumes"))
	for _, f := range files {
		if f.err == nil {
			claimed[f.rec.NQN] = true
		}
	}
	ledger := &connectionLedger{dir: filepath.Join(d.cfg.StateDir, "connections"), bootID: d.bootID()}
	var managed int
	var notLive, unowned, details []string
	for _, s := range subs {
		role := "left alone (outside the managed prefix)"
		if s.Managed {
			managed++
			switch {
			case claimed[s.NQN]:
				role = "managed, staged"
			case ledger.proves(s.NQN):
				role = "managed, connected by this driver but not staged (the next start-up sweep disconnects it if nothing uses it)"
			default:
				role = "managed, but nothing proves this driver connected it: left alone"
				unowned = append(unowned, s.NQN+" ("+doctorRemoveByHand(s)+")")
			}
			if !slices.ContainsFunc(s.Controllers, nvme.Controller.Live) {
				notLive = append(notLive, fmt.Sprintf("%s (%s)", s.NQN, doctorDescribeCtrls(s.Controllers)))
			}
		}
		line, sep := fmt.Sprintf("%s %s: %s; %s", s.Name, s.NQN, role, doctorDescribeCtrls(s.Controllers)), "; disk "
		for _, dk := range s.Disks {
			line, sep = line+sep+dk.Name+" "+humanBytes(dk.SizeBytes), ", "
		}
		details = append(details, line)
	}
	summary := "none connected"
	if len(subs) > 0 {
		summary = fmt.Sprintf("%d connected: %d managed, %d left alone", len(subs), managed, len(subs)-managed)
	}
	r := okResult("%s", summary)
	var problems, fixes []string
	if len(unowned) > 0 {
		problems = append(problems, fmt.Sprintf("%d managed but not proven this driver's (the earlier driver's, or this driver's after its state directory was lost), never disconnected automatically: %s",
			len(unowned), strings.Join(unowned, "; ")))
		fixes = append(fixes, "a volume a pod still uses is adopted when kubelet stages it again; one nothing uses can be removed by hand with the command shown")
	}
	if len(notLive) > 0 {
		problems = append(problems, fmt.Sprintf("%d managed without a live controller: %s", len(notLive), strings.Join(notLive, "; ")))
		fixes = append(fixes, "a controller that is connecting is waiting for the RDS: check that it is up and reachable from this node on the NVMe/TCP port (I/O is queued meanwhile and resumes on reconnect); one with no controllers left is held open by a stale mount, which the node plugin heals")
	}
	if len(problems) > 0 {
		r = warnResult(strings.Join(fixes, "; "), "%s; %s", summary, strings.Join(problems, "; "))
	}
	r.details = details
	return r
}

// doctorRemoveByHand is the command that disconnects subsystem s without nvme-cli, to run once
// nothing uses its disks.
func doctorRemoveByHand(s nvme.Subsystem) string {
	if len(s.Controllers) == 0 {
		return "no controllers left"
	}
	cmds := make([]string, len(s.Controllers))
	for i, c := range s.Controllers {
		cmds[i] = "echo 1 > /sys/class/nvme/" + c.Name + "/delete_controller"
	}
	return "once nothing uses it: " + strings.Join(cmds, " && ") + ", or nvme disconnect -n " + s.NQN
}

func doctorDescribeCtrls(ctrls []nvme.Controller) string {
	if len(ctrls) == 0 {
		return "no controllers"
	}
	parts := make([]string, len(ctrls))
	for i, c := range ctrls {
		parts[i] = c.Name + " " + c.State
		if c.TrAddr != "" {
			parts[i] += fmt.Sprintf(" (%s:%d)", c.TrAddr, c.TrSvcID)
		}
	}
	return strings.Join(parts, ", ")
}

// plural picks one or many by n, for counts in findings.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
