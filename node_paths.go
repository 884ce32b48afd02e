package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"srvlab.io/rds-csi/nvme"
)

// NVMe/TCP multipath. A volume with several paths (the nvmeAddresses parameter) gets one
// controller per path, all with the same host identity and options; the kernel's native
// multipath puts one head disk (nvme<S>n<H>) over them and moves I/O to a live path when
// one fails, so the volume's disk, mounts and device nodes never change with a path.
// With native multipath off every controller brings a disk of its own, and two disks of
// one volume must never both be used: the volume then connects one path only and says so.

// Path states beyond the kernel's controller states.
const (
	pathMissing = "missing" // no controller of the volume connects to this path
	pathUnused  = "unused"  // native multipath is off: the volume uses another path
)

// pathState is one configured path of a staged volume, as sysfs shows it.
type pathState struct {
	address    string
	controller string // "" when missing or unused
	state      string // the controller's state (live, connecting, …), or pathMissing/pathUnused
	note       string // why this path's last connect failed, "" if it did not
}

func (p pathState) live() bool { return p.state == "live" }

// String is "10.0.1.10 reconnecting" and the like, for conditions, logs and the doctor.
func (p pathState) String() string {
	switch p.state {
	case "live":
		return p.address + " live (" + p.controller + ")"
	case "connecting", "resetting", "new":
		return p.address + " reconnecting"
	case pathUnused:
		return p.address + " unused (native NVMe multipath is off)"
	case pathMissing:
		if p.note != "" {
			return p.address + " not connected: " + p.note
		}
		return p.address + " not connected"
	}
	return p.address + " " + p.state
}

// paths returns every configured path of the volume, the primary first.
func (r *stagingRecord) paths() []string {
	if len(r.Addresses) > 1 {
		return r.Addresses
	}
	return []string{r.Address}
}

// multipath reports whether the volume uses several paths now.
func (r *stagingRecord) multipath() bool { return len(r.paths()) > 1 && !r.SinglePath }

// pathTarget is the volume's target through path address.
func (r *stagingRecord) pathTarget(address string) nvme.Target {
	t := r.target()
	t.Address = address
	return t
}

// pathStates matches the volume's controllers to its configured paths, with the
// node's note on each path whose last connect failed.
func (n *nodeService) pathStates(rec stagingRecord, h nvme.Health) []pathState {
	return pathStatesOf(rec, h, func(address string) string { return n.pathNote(rec.VolumeID, address) })
}

// pathStatesOf matches controllers to paths by address and port; a controller the kernel
// is deleting counts only when no other matches. note (nil: none) says why a path
// without a usable controller failed to connect.
func pathStatesOf(rec stagingRecord, h nvme.Health, note func(address string) string) []pathState {
	var out []pathState
	for _, a := range rec.paths() {
		p := pathState{address: a, state: pathMissing}
		if rec.SinglePath && !sameAddress(a, rec.Address) {
			p.state = pathUnused
			out = append(out, p)
			continue
		}
		for _, c := range h.Controllers {
			if !sameAddress(c.TrAddr, a) || c.TrSvcID != rec.Port {
				continue
			}
			if p.controller == "" || gone(p.state) {
				p.controller, p.state = c.Name, c.State
			}
		}
		if gone(p.state) && note != nil {
			p.note = note(a)
		}
		out = append(out, p)
	}
	return out
}

// gone reports a path state from which only a new connect recovers.
func gone(state string) bool {
	return state == pathMissing || state == "dead" || strings.HasPrefix(state, "deleting")
}

// missingPaths lists the addresses of paths without a controller that can recover (the
// kernel gave them up, ctrl_loss_tmo, or their connect failed) that due accepts (nil:
// all). Unused paths are not missing.
func missingPaths(ps []pathState, due func(address string) bool) []string {
	var out []string
	for _, p := range ps {
		if gone(p.state) && (due == nil || due(p.address)) {
			out = append(out, p.address)
		}
	}
	return out
}

func countLive(ps []pathState) int {
	live := 0
	for _, p := range ps {
		if p.live() {
			live++
		}
	}
	return live
}

// describePaths is "10.0.0.10 live (nvme1), 10.0.1.10 reconnecting".
func describePaths(ps []pathState) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return strings.Join(parts, ", ")
}

// attach connects the volume through its paths and returns its disk: every path when
// native multipath is on (a path that fails is logged, noted for the volume condition
// and retried by the watcher; the volume fails only when no path connects), else one.
// It sets rec.SinglePath (and, for one path, rec.Address to the path used). Paths are
// connected one after another: each connect is bounded by nvme's ConnectTimeout.
func (n *nodeService) attach(ctx context.Context, rec *stagingRecord) (*nvme.Disk, error) {
	paths := rec.paths()
	if len(paths) == 1 {
		rec.SinglePath = false
		return n.att.Connect(ctx, rec.target(), rec.options())
	}
	mp, err := n.att.Multipath()
	if err != nil || !mp {
		return n.attachOnePath(ctx, rec, err)
	}
	rec.SinglePath = false
	var disk *nvme.Disk
	var errs []error
	for _, a := range paths {
		d, err := n.connectPath(ctx, rec, a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		disk = d
	}
	if disk == nil {
		return nil, fmt.Errorf("no NVMe/TCP path of volume %s connected (check that the RDS listens on each address and that this node reaches it): %w", rec.VolumeID, errors.Join(errs...))
	}
	return disk, nil
}

// connectPath connects one path of a multipath volume, noting the outcome.
func (n *nodeService) connectPath(ctx context.Context, rec *stagingRecord, address string) (*nvme.Disk, error) {
	d, err := n.att.Connect(ctx, rec.pathTarget(address), rec.options())
	if err != nil {
		again := n.pathNote(rec.VolumeID, address) == err.Error()
		n.setPathNote(rec, address, err.Error())
		if again {
			return nil, fmt.Errorf("path %s:%d: %w", address, rec.Port, err) // logged already
		}
		n.log.Warn("an NVMe/TCP path of the volume did not connect; the volume uses its other paths, and the node plugin retries this one",
			"volume_id", rec.VolumeID, "path", fmt.Sprintf("%s:%d", address, rec.Port), "err", err)
		return nil, fmt.Errorf("path %s:%d: %w", address, rec.Port, err)
	}
	n.setPathNote(rec, address, "")
	return d, nil
}

// attachOnePath connects a multipath volume through one path because native multipath is
// off (or cannot be read, mpErr): the path already connected if there is one (so a second
// disk of the volume never appears), else the first that connects.
func (n *nodeService) attachOnePath(ctx context.Context, rec *stagingRecord, mpErr error) (*nvme.Disk, error) {
	paths := rec.paths()
	why := "native NVMe multipath is off on this node (nvme_core.multipath=N), so a volume can use one path only: two paths would be two disks of one volume"
	if mpErr != nil {
		why = fmt.Sprintf("whether native NVMe multipath is on cannot be read (%v), so the volume uses one path only", mpErr)
	}
	n.log.Warn(why+"; enable native multipath (nvme_core.multipath=Y on the kernel command line, then reboot) to use every path",
		"volume_id", rec.VolumeID, "paths", strings.Join(paths, ","))
	order := make([]string, 0, len(paths))
	if h, err := n.att.Health(rec.NQN); err == nil {
		for _, a := range paths {
			for _, c := range h.Controllers {
				if sameAddress(c.TrAddr, a) && c.TrSvcID == rec.Port {
					order = append(order, a)
					break
				}
			}
		}
	}
	for _, a := range paths {
		if !containsAddress(order, a) {
			order = append(order, a)
		}
	}
	rec.SinglePath = true
	var errs []error
	for _, a := range order {
		d, err := n.att.Connect(ctx, rec.pathTarget(a), rec.options())
		if err == nil {
			rec.Address = a
			return d, nil
		}
		n.log.Warn("an NVMe/TCP path of the volume did not connect; trying the next", "volume_id", rec.VolumeID, "path", fmt.Sprintf("%s:%d", a, rec.Port), "err", err)
		errs = append(errs, fmt.Errorf("path %s:%d: %w", a, rec.Port, err))
	}
	return nil, fmt.Errorf("no NVMe/TCP path of volume %s connected (native multipath is off, so one was tried at a time): %w", rec.VolumeID, errors.Join(errs...))
}

func containsAddress(list []string, a string) bool {
	for _, x := range list {
		if sameAddress(x, a) {
			return true
		}
	}
	return false
}

// reconnectPaths connects the missing paths of a multipath volume whose other paths are
// connected. It touches neither the other paths nor any mount: the head disk stays. It
// returns how many are still missing. The caller holds the volume lock.
func (n *nodeService) reconnectPaths(ctx context.Context, rec stagingRecord, missing []string) int {
	left := 0
	for _, a := range missing {
		pctx, cancel := context.WithTimeout(ctx, pathReconnectTimeout)
		_, err := n.connectPath(pctx, &rec, a)
		cancel()
		if err != nil {
			left++
			continue
		}
		n.log.Info("reconnected an NVMe/TCP path the kernel had given up", "volume_id", rec.VolumeID, "path", fmt.Sprintf("%s:%d", a, rec.Port))
	}
	return left
}

// pathReconnectTimeout bounds one path's reconnect by the watcher: an address that does
// not answer must not hold the watcher (and the other volumes) for a whole ConnectTimeout.
const pathReconnectTimeout = 10 * time.Second

// pathFailure is why a path's last connect failed, and when the watcher tries it again.
type pathFailure struct {
	msg      string
	failures int
	next     time.Time
}

// maxPathBackoff caps the wait between the watcher's attempts at a path that keeps
// failing: each attempt holds the volume lock, which the CO's calls for the volume then
// find taken (Aborted, retried), so an address that never answers is tried ever more
// rarely, yet at least once a minute.
const maxPathBackoff = time.Minute

func (n *nodeService) pathNote(id, address string) string {
	v, _ := n.pathNotes.Load(id + "\x00" + address)
	f, _ := v.(pathFailure)
	return f.msg
}

// setPathNote records a path's connect outcome ("" = it connected). Failures back off
// from the volume's reconnectDelay, doubling up to maxPathBackoff.
func (n *nodeService) setPathNote(rec *stagingRecord, address, msg string) {
	key := rec.VolumeID + "\x00" + address
	if msg == "" {
		n.pathNotes.Delete(key)
		return
	}
	v, _ := n.pathNotes.Load(key)
	f, _ := v.(pathFailure)
	f.msg, f.failures = msg, f.failures+1
	delay := time.Duration(nvme.DefaultReconnectDelay) * time.Second
	if d := rec.Options.ReconnectDelay; d != nil {
		delay = time.Duration(*d) * time.Second
	}
	for i := 1; i < f.failures && delay < maxPathBackoff; i++ {
		delay *= 2
	}
	f.next = n.now().Add(min(delay, maxPathBackoff))
	n.pathNotes.Store(key, f)
}

// pathDue reports whether the watcher may try a failed path again now.
func (n *nodeService) pathDue(id, address string) bool {
	v, ok := n.pathNotes.Load(id + "\x00" + address)
	return !ok || !n.now().Before(v.(pathFailure).next)
}

// forgetPaths drops a volume's path notes and gauges (it was unstaged).
func (n *nodeService) forgetPaths(rec stagingRecord) {
	for _, a := range rec.paths() {
		n.pathNotes.Delete(rec.VolumeID + "\x00" + a)
	}
	n.m.volumePaths.DeletePartialMatch(map[string]string{"volume_id": rec.VolumeID})
}
