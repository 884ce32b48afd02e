package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"srvlab.io/rds-csi/nvme"
)

// NVMe/TCP multipath. A volume with several paths (nvmeAddresses) gets one controller
// per path, all with the same host identity and options; native multipath puts one head
// disk over them, so the volume's disk, mounts and device nodes never change with a path.
// With native multipath off every controller brings a disk of its own, and two disks of
// one volume must never both be used: the volume then connects one path only.

// Path states beyond the kernel's controller states.
const (
	pathMissing = "missing" // no controller of the volume connects to this path
	pathUnused  = "unused"  // native multipath is off: the volume uses another path
)

// pathState is one configured path of a staged volume, as sysfs shows it.
type pathState struct {
	address    string
	controller string // "" when missing or unused
	state      string // the controller's state, or pathMissing/pathUnused
	note       string // why this path's last connect failed
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

func (r *stagingRecord) pathTarget(address string) nvme.Target {
	t := r.target()
	t.Address = address
	return t
}

// reconnectDelay is the volume's reconnectDelay, or nvme's default.
func (r *stagingRecord) reconnectDelay() time.Duration {
	if d := r.Options.ReconnectDelay; d != nil {
		return time.Duration(*d) * time.Second
	}
	return time.Duration(nvme.DefaultReconnectDelay) * time.Second
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
			if sameAddress(c.TrAddr, a) && c.TrSvcID == rec.Port && (p.controller == "" || gone(p.state)) {
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

// attach connects the volume and returns its disk: every path when native multipath is
// on (a failed path is noted and retried by the watcher; the volume fails only when none
// connects), else one. It sets rec.SinglePath (and rec.Address to the path used). Paths
// connect one after another, each bounded by nvme's ConnectTimeout.
func (n *nodeService) attach(ctx context.Context, rec *stagingRecord) (*nvme.Disk, error) {
	paths := rec.paths()
	rec.SinglePath = false
	if len(paths) == 1 {
		return n.att.Connect(ctx, rec.target(), rec.options())
	}
	if mp, err := n.att.Multipath(); err != nil || !mp {
		return n.attachOnePath(ctx, rec, err)
	}
	var disk *nvme.Disk
	var errs []error
	for _, a := range paths {
		if d, err := n.connectPath(ctx, rec, a); err != nil {
			errs = append(errs, err)
		} else {
			disk = d
		}
	}
	if disk == nil {
		return nil, fmt.Errorf("no NVMe/TCP path of volume %s connected (check that the RDS listens on each address and that this node reaches it): %w", rec.VolumeID, errors.Join(errs...))
	}
	return disk, nil
}

// connectPath connects one path of a multipath volume, noting the outcome.
func (n *nodeService) connectPath(ctx context.Context, rec *stagingRecord, address string) (*nvme.Disk, error) {
	d, err := n.att.Connect(ctx, rec.pathTarget(address), rec.options())
	if err == nil {
		n.setPathNote(rec, address, "")
		return d, nil
	}
	again := n.pathNote(rec.VolumeID, address) == err.Error()
	n.setPathNote(rec, address, err.Error())
	if !again { // a repeat was logged already
		n.log.Warn("an NVMe/TCP path of the volume did not connect; the volume uses its other paths, and the node plugin retries this one",
			"volume_id", rec.VolumeID, "path", fmt.Sprintf("%s:%d", address, rec.Port), "err", err)
	}
	return nil, fmt.Errorf("path %s:%d: %w", address, rec.Port, err)
}

// attachOnePath connects a multipath volume through one path because native multipath is
// off (or unreadable, mpErr): the path already connected if there is one (so a second
// disk of the volume never appears), else the first that connects.
func (n *nodeService) attachOnePath(ctx context.Context, rec *stagingRecord, mpErr error) (*nvme.Disk, error) {
	paths := rec.paths()
	why := "native NVMe multipath is off on this node (nvme_core.multipath=N), so a volume can use one path only: two paths would be two disks of one volume"
	if mpErr != nil {
		why = fmt.Sprintf("whether native NVMe multipath is on cannot be read (%v), so the volume uses one path only", mpErr)
	}
	n.log.Warn(why+"; enable native multipath (nvme_core.multipath=Y on the kernel command line, then reboot) to use every path",
		"volume_id", rec.VolumeID, "paths", strings.Join(paths, ","))
	var order, rest []string
	h, herr := n.att.Health(rec.NQN)
	for _, p := range pathStatesOf(*rec, h, nil) {
		if herr == nil && p.controller != "" {
			order = append(order, p.address)
		} else {
			rest = append(rest, p.address)
		}
	}
	rec.SinglePath = true
	var errs []error
	for _, a := range append(order, rest...) {
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

// pathReconnectTimeout bounds one path's reconnect by the watcher: an address that does
// not answer must not hold the watcher (and the other volumes) for a whole ConnectTimeout.
const pathReconnectTimeout = 10 * time.Second

// reconnectPaths connects the missing paths of a multipath volume whose other paths are
// connected, touching neither those nor any mount. The caller holds the volume lock.
func (n *nodeService) reconnectPaths(ctx context.Context, rec stagingRecord, missing []string) {
	for _, a := range missing {
		pctx, cancel := context.WithTimeout(ctx, pathReconnectTimeout)
		_, err := n.connectPath(pctx, &rec, a)
		cancel()
		if err == nil {
			n.log.Info("reconnected an NVMe/TCP path the kernel had given up", "volume_id", rec.VolumeID, "path", fmt.Sprintf("%s:%d", a, rec.Port))
		}
	}
}

// pathFailure is why a path's last connect failed, and when the watcher tries it again.
type pathFailure struct {
	msg      string
	failures int
	next     time.Time
}

// maxPathBackoff caps the wait between attempts at a path that keeps failing: each holds
// the volume lock (the CO's calls then answer Aborted), so an address that never answers
// is tried ever more rarely, yet at least once a minute.
const maxPathBackoff = time.Minute

func (n *nodeService) pathFailure(id, address string) (pathFailure, bool) {
	v, ok := n.pathNotes.Load(id + "\x00" + address)
	f, _ := v.(pathFailure)
	return f, ok
}

func (n *nodeService) pathNote(id, address string) string {
	f, _ := n.pathFailure(id, address)
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
	f, _ := n.pathFailure(rec.VolumeID, address)
	f.msg, f.failures = msg, f.failures+1
	delay := rec.reconnectDelay()
	for i := 1; i < f.failures && delay < maxPathBackoff; i++ {
		delay *= 2
	}
	f.next = n.now().Add(min(delay, maxPathBackoff))
	n.pathNotes.Store(key, f)
}

// pathDue reports whether the watcher may try a failed path again now.
func (n *nodeService) pathDue(id, address string) bool {
	f, ok := n.pathFailure(id, address)
	return !ok || !n.now().Before(f.next)
}

// forgetPaths drops a volume's path notes and gauges (it was unstaged).
func (n *nodeService) forgetPaths(rec stagingRecord) {
	for _, a := range rec.paths() {
		n.pathNotes.Delete(rec.VolumeID + "\x00" + a)
	}
	n.m.volumePaths.DeletePartialMatch(map[string]string{"volume_id": rec.VolumeID})
}
