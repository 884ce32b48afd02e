package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// NodeUnstageVolume undoes NodeStageVolume: it refuses while the volume is published
// (naming the targets), unmounts the staging path, disconnects once nothing uses the
// volume (verified in sysfs) and only then forgets it. A volume staged without a record
// here (the earlier driver's) is found by its NQN and let go of the same way. Idempotent.
func (n *nodeService) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	id := req.GetVolumeId()
	if err := checkRequest(id, "staging_target_path", req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	release, err := n.lockVolume(id)
	if err != nil {
		return nil, err
	}
	defer release()
	staging := filepath.Clean(req.GetStagingTargetPath())
	rec, ok := n.records.get(id)
	if ok && rec.StagingPath != staging {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is staged at %s, not at %s", id, rec.StagingPath, staging)
	}
	fail := func(err error) (*csi.NodeUnstageVolumeResponse, error) {
		return nil, nodeStatus("unstage volume "+id, err)
	}
	users, err := n.publishUsers(ctx, rec, ok, staging)
	if err != nil {
		return fail(err)
	}
	if len(users) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition,
			"volume %s is still published at %s: unpublish it there first (NodeUnpublishVolume); unstaging now would pull the disk from under them",
			id, strings.Join(users, ", "))
	}
	if err := mount.UnmountAll(ctx, staging); err != nil {
		return fail(err)
	}
	// Without a record (the earlier driver's volume, or a lost state directory) kubelet's
	// unstage is the authority to let go of the volume's subsystems, once nothing uses
	// them; with one, of its NQN unless another staged volume shares it.
	var subs []nvme.Subsystem
	switch {
	case !ok:
		if subs, err = n.subsystems(func(s nvme.Subsystem) bool { return isVolumeSubsystem(s, id) }); err != nil {
			err = fmt.Errorf("list NVMe subsystems: %w", err)
		}
	case n.nqnSharedWith(rec) == "":
		subs, err = n.subsystems(func(s nvme.Subsystem) bool { return s.NQN == rec.NQN })
	}
	if err != nil {
		return fail(err)
	}
	for _, s := range subs {
		if err := n.refuseIfUsed(ctx, id, s.Disks); err != nil {
			return nil, err
		}
		if err := n.att.Disconnect(ctx, s.NQN); err != nil {
			return nil, nodeStatus("unstage volume "+id+": disconnect "+s.NQN, err)
		}
		n.settleUnowned(s.NQN)
	}
	if !ok {
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	if err := n.records.remove(id); err != nil {
		return fail(err)
	}
	n.m.volumeNVMeState.DeleteLabelValues(id)
	n.forgetPaths(rec)
	n.heals.Delete(id)
	n.log.Info("unstaged", "volume_id", id, "nqn", rec.NQN)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// publishUsers: other mounts of the staging mount's device, or the block publish nodes left.
func (n *nodeService) publishUsers(ctx context.Context, rec stagingRecord, recorded bool, staging string) ([]string, error) {
	var users []string
	if recorded && rec.Block {
		for _, path := range rec.publishTargets() {
			if _, isBlock, _ := blockNodeAt(path); isBlock {
				users = append(users, path)
			}
		}
		return users, nil
	}
	entries, err := mount.ByMountPoint(ctx, staging)
	if err != nil {
		return nil, err
	}
	var devs []devNum
	for _, e := range entries {
		devs = append(devs, entryDev(e))
	}
	// The recorded device (of this boot) too: publish mounts outlive a staging mount
	// removed by hand, and a disconnect under them would hang.
	if recorded && rec.BootID == n.bootID && rec.Major != 0 {
		devs = append(devs, rec.dev())
	}
	seen := map[string]bool{staging: true}
	for _, d := range devs {
		mounts, err := mount.BySource(ctx, d.major, d.minor)
		if err != nil {
			return nil, err
		}
		for _, m := range mounts {
			if !seen[m.Mountpoint] {
				seen[m.Mountpoint] = true
				users = append(users, m.Mountpoint)
			}
		}
	}
	return users, nil
}

// nqnSharedWith returns another staged volume on the same NQN (whose connection stays), or "".
func (n *nodeService) nqnSharedWith(rec stagingRecord) string {
	for _, o := range n.records.all() {
		if o.VolumeID != rec.VolumeID && o.NQN == rec.NQN {
			return o.VolumeID
		}
	}
	return ""
}

func (n *nodeService) subsystems(match func(nvme.Subsystem) bool) ([]nvme.Subsystem, error) {
	all, err := n.att.Subsystems()
	if err != nil {
		return nil, err
	}
	var out []nvme.Subsystem
	for _, s := range all {
		if match(s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// isVolumeSubsystem: a managed subsystem whose NQN is the volume ID (RouterOS before
// 7.21) or ends in ":<volume ID>", for a volume this node has no record of.
func isVolumeSubsystem(s nvme.Subsystem, id string) bool {
	return s.Managed && (s.NQN == id || strings.HasSuffix(s.NQN, ":"+id))
}

// diskUsers lists what uses disk; an error means it could not be told. Every path that
// lets go of a disk (sweep, unstage) asks it: mounts of the disk and its partitions, bind
// mounts of its /dev node, device nodes with its number in kubelet's volumeDevices
// directories, loop devices over it, dm/md holders, and open descriptors of every process
// the plugin can see. Anything it cannot read counts as in use.
func (n *nodeService) diskUsers(ctx context.Context, d nvme.Disk) ([]string, error) {
	dirs := []string{filepath.Join(n.cfg.KubeletDir, "plugins", "kubernetes.io", "csi", "volumeDevices")}
	if pods, err := filepath.Glob(filepath.Join(n.cfg.KubeletDir, "pods", "*", "volumeDevices")); err == nil {
		dirs = append(dirs, pods...)
	}
	return mount.Users(ctx, mount.Device{Name: d.Name, Major: d.Major, Minor: d.Minor},
		mount.UsersConfig{SysfsRoot: n.cfg.SysfsRoot, ProcRoot: n.cfg.ProcRoot, NodeDirs: dirs, SkipPID: os.Getpid()})
}

// diskInUse is diskUsers for the sweep: doubt counts as in use.
func (n *nodeService) diskInUse(ctx context.Context, d nvme.Disk) bool {
	users, err := n.diskUsers(ctx, d)
	switch {
	case err != nil:
		n.log.Warn("cannot tell whether a disk is in use, so it counts as in use", "disk", d.Name, "nqn", d.NQN, "err", err)
	case len(users) > 0:
		n.log.Info("disk in use", "disk", d.Name, "nqn", d.NQN, "users", users)
	}
	return err != nil || len(users) > 0
}

// refuseIfUsed fails, naming the users, when anything uses (or may use) one of the disks.
func (n *nodeService) refuseIfUsed(ctx context.Context, id string, disks []nvme.Disk) error {
	for _, d := range disks {
		users, err := n.diskUsers(ctx, d)
		if err != nil {
			return status.Errorf(codes.Unavailable, "volume %s: cannot tell whether disk %s is still in use, so it stays connected (retried): %v", id, d.Name, err)
		}
		if len(users) > 0 {
			return status.Errorf(codes.FailedPrecondition, "volume %s is still in use on this node (%s), so it stays connected: stop what uses it, then retry",
				id, strings.Join(users, "; "))
		}
	}
	return nil
}

// The proof that this driver made a connection. A managed NQN prefix only says a
// subsystem could be ours: the earlier driver's volumes, or ours after the state
// directory was lost, carry the same prefix, and disconnecting them cuts a running
// workload's disk. So every connect writes an intent record (fsynced) *before* its write
// to /dev/nvme-fabrics, and the record goes only after a verified disconnect. Outside
// NodeUnstageVolume nothing is disconnected without such a record of this kernel boot.

// connectionIntentVersion: a record of another version proves nothing.
const connectionIntentVersion = 1

// connectionIntent is <StateDir>/connections/<sha256 of the NQN>.json.
type connectionIntent struct {
	Version int    `json:"version"`
	NQN     string `json:"nqn"`
	Address string `json:"address"`
	Port    int    `json:"port"`
	BootID  string `json:"bootId"` // an earlier boot's record describes no connection now
	// Adopted: the subsystem was already connected (by someone else, or by this driver
	// before its records were lost) when this driver connected to it: not proven ours.
	Adopted bool      `json:"adopted,omitempty"`
	At      time.Time `json:"at"`
}

type connectionLedger struct {
	dir    string
	bootID string
	mu     sync.Mutex
}

func openConnectionLedger(stateDir, bootID string) (*connectionLedger, error) {
	dir := filepath.Join(stateDir, "connections")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the node's connection records directory %s: %w (set --state-dir to a writable host directory)", dir, err)
	}
	return &connectionLedger{dir: dir, bootID: bootID}, nil
}

func (l *connectionLedger) path(nqn string) string {
	sum := sha256.Sum256([]byte(nqn))
	return filepath.Join(l.dir, hex.EncodeToString(sum[:16])+".json")
}

// read returns the intent record at path; ok is false when it proves nothing
// (unreadable, another version, not named for its NQN): it is then left for a human.
func (l *connectionLedger) read(path string) (in connectionIntent, ok bool) {
	raw, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(raw, &in) != nil || in.Version != connectionIntentVersion || l.path(in.NQN) != path {
		return connectionIntent{}, false
	}
	return in, true
}

// proves: this boot's record of a connect that found nothing connected.
func (l *connectionLedger) proves(nqn string) bool {
	in, ok := l.read(l.path(nqn))
	return ok && in.NQN == nqn && in.BootID == l.bootID && !in.Adopted
}

// intend records, durably, that this driver is about to connect t. connected says the
// subsystem is already connected (or that this could not be read); the record then
// marks the connection adopted, unless this boot's record already proves it ours.
func (l *connectionLedger) intend(t nvme.Target, connected bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	in := connectionIntent{Version: connectionIntentVersion, NQN: t.NQN, Address: t.Address, Port: t.Port, BootID: l.bootID, At: time.Now().UTC()}
	in.Adopted = connected && !l.proves(t.NQN)
	if err := writeJSON(l.path(t.NQN), in); err != nil {
		return fmt.Errorf("record the intent to connect %s before connecting: %w", t.NQN, err)
	}
	return nil
}

// forget removes nqn's record after a verified disconnect.
func (l *connectionLedger) forget(nqn string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := removeSynced(l.path(nqn)); err != nil {
		return fmt.Errorf("remove the connection record of %s: %w", nqn, err)
	}
	return nil
}

// owned returns the NQNs (of those connected now) this ledger proves ours, and removes
// records whose subsystem is gone (a crash after the disconnect or before the connect).
func (l *connectionLedger) owned(connected map[string]bool) (map[string]bool, error) {
	names, err := jsonFiles(l.dir)
	if err != nil {
		return nil, fmt.Errorf("read the node's connection records %s: %w", l.dir, err)
	}
	owned := map[string]bool{}
	for _, name := range names {
		in, ok := l.read(filepath.Join(l.dir, name))
		switch {
		case !ok:
		case !connected[in.NQN]:
			if err := l.forget(in.NQN); err != nil {
				return nil, err
			}
		case in.BootID == l.bootID && !in.Adopted:
			owned[in.NQN] = true
		}
	}
	return owned, nil
}

// owningAttacher precedes every connect with its intent record and removes the record
// after every verified disconnect.
type owningAttacher struct {
	attacher
	ledger *connectionLedger
}

func (a *owningAttacher) Connect(ctx context.Context, t nvme.Target, o nvme.Options) (*nvme.Disk, error) {
	h, err := a.attacher.Health(t.NQN)
	if errors.Is(err, nvme.ErrNotManaged) {
		return nil, err // nothing to record: it is never connected
	}
	if err := a.ledger.intend(t, err != nil || h.Connected); err != nil {
		return nil, err
	}
	return a.attacher.Connect(ctx, t, o)
}

func (a *owningAttacher) Disconnect(ctx context.Context, nqn string) error {
	if err := a.attacher.Disconnect(ctx, nqn); err != nil {
		return err
	}
	return a.ledger.forget(nqn)
}

// sweep disconnects the connections this driver made and abandoned (a crash between
// connect and record, an unstage that failed half-way): managed subsystems its intent
// records prove it connected in this boot, that no staged volume claims and nothing
// uses. Managed ones without proof are logged once, counted and shown by the doctor,
// until kubelet stages (adopts) or unstages them. While any staging record is unreadable
// nothing is disconnected: that record may be a volume in use. Stages wait meanwhile.
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
	var owned map[string]bool
	subs, err := n.att.Subsystems()
	if err == nil {
		connected := map[string]bool{}
		for _, s := range subs {
			connected[s.NQN] = true
		}
		owned, err = n.ledger.owned(connected)
	}
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

// settleUnowned: kubelet staged (adopted) or unstaged nqn.
func (n *nodeService) settleUnowned(nqn string) {
	n.unownedMu.Lock()
	defer n.unownedMu.Unlock()
	if n.unowned[nqn] {
		delete(n.unowned, nqn)
		n.m.unownedSubsystems.Set(float64(len(n.unowned)))
	}
}
