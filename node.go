package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// nodeService is the CSI Node service: it attaches volumes over NVMe/TCP (through an
// attacher), formats and mounts filesystem volumes at the staging path, publishes them
// by bind mount (filesystem) or device node (raw block), and keeps them usable across
// NVMe/TCP reconnects by replacing stale mounts (heal.go).
//
// Its own state is one staging record per staged volume in the state directory; the
// kernel (sysfs, the mount table) is asked for everything else on every call.
type nodeService struct {
	csi.UnimplementedNodeServer
	cfg     *Config
	log     *slog.Logger
	m       *metrics
	att     attacher
	guard   *nvme.Guard
	records *recordStore
	ledger  *connectionLedger
	// unreadableRecords counts staging records that could not be read at start: each may
	// be a volume in use, so the sweep disconnects nothing while there are any.
	unreadableRecords int
	locks             *volumeLocks
	breaker           *breaker
	storm             mount.StormGuard
	fs                filesystems
	bootID            string
	now               func() time.Time
	after             func(time.Duration) <-chan time.Time // the watcher's timer (tests fake it)

	// sweepMu keeps stages out while the sweep runs: a volume connected but not yet
	// recorded would look like an orphan to it.
	sweepMu sync.RWMutex
	// kick asks the healing watcher for a pass now (NodeGetVolumeStats saw trouble).
	kick chan struct{}
	// heals remembers the last healing outcome per volume, for VolumeCondition.
	heals sync.Map // volume ID → healOutcome
	// pathNotes remembers why a path's last connect failed, for the volume condition.
	pathNotes sync.Map // volume ID + "\x00" + address → message
	// unowned holds the managed subsystems the sweep left alone for want of proof, until
	// kubelet stages (adopts) or unstages them.
	unownedMu sync.Mutex
	unowned   map[string]bool
	done      chan struct{}
	swept     chan struct{} // closed once the start-up sweep is over
	started   atomic.Bool
	once      sync.Once
}

// filesystems are the mount package's filesystem operations, a seam so tests can prove
// what the node decided (e.g. that it never asked for a format).
type filesystems struct {
	probe  func(ctx context.Context, device string) (mount.ProbeResult, error)
	format func(ctx context.Context, device, fstype string) error
	repair func(ctx context.Context, device, fstype string) error
	grow   func(ctx context.Context, device, mountPoint, fstype string) error
}

var systemFilesystems = filesystems{probe: mount.Probe, format: mount.Format, repair: mount.Repair, grow: mount.Grow}

// newNodeService builds the node service. It succeeds where /dev/nvme-fabrics is missing
// (the attacher logs it; staging then fails saying so), so the plugin registers and
// answers probes on a node whose nvme-tcp module is loaded later.
func newNodeService(cfg *Config, log *slog.Logger, m *metrics) (*nodeService, error) {
	guard, err := nvme.NewGuard(cfg.ManagedNQNPrefix)
	if err != nil {
		return nil, fmt.Errorf("--managed-nqn-prefix %q: %w", cfg.ManagedNQNPrefix, err)
	}
	att, err := newAttacher(cfg, guard, log, m)
	if err != nil {
		return nil, err
	}
	return newNodeServiceWith(cfg, log, m, guard, att)
}

// newNodeServiceWith builds the node service over a given attacher (tests use the
// loop-device stand-in).
func newNodeServiceWith(cfg *Config, log *slog.Logger, m *metrics, guard *nvme.Guard, att attacher) (*nodeService, error) {
	records, bad, err := openRecordStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	log = log.With("service", "node")
	for _, e := range bad {
		log.Error("ignoring a staging record", "err", e)
	}
	bootID := kernelBootID(log)
	ledger, err := openConnectionLedger(cfg.StateDir, bootID)
	if err != nil {
		return nil, err
	}
	n := &nodeService{
		cfg: cfg, log: log, m: m, att: &owningAttacher{attacher: att, ledger: ledger}, guard: guard,
		records: records, ledger: ledger, unreadableRecords: len(bad),
		locks: newVolumeLocks(), storm: mount.StormGuard{Limit: cfg.MountStormLimit},
		fs: systemFilesystems, bootID: bootID, now: time.Now, after: time.After,
		kick: make(chan struct{}, 1), done: make(chan struct{}), swept: make(chan struct{}), unowned: map[string]bool{},
	}
	n.breaker = newBreaker(n.now, func(open int) { m.breakersOpen.Set(float64(open)) })
	return n, nil
}

// kernelBootID identifies this boot of the kernel, to tell staging records of this boot
// from those whose connections and mounts a reboot took away.
func kernelBootID(log *slog.Logger) string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		log.Warn("cannot read the kernel boot ID; staging records are then all taken as this boot's", "err", err)
		return "unknown"
	}
	return strings.TrimSpace(string(raw))
}

// run does the node's background work until ctx ends: rebuild the view of staged volumes
// from the records and the mount table, sweep NVMe subsystems nobody claims, then heal
// stale volumes every HealInterval (and whenever NodeGetVolumeStats asks).
func (n *nodeService) run(ctx context.Context) {
	n.started.Store(true)
	defer close(n.done)
	n.rebuild(ctx)
	n.sweep(ctx)
	close(n.swept)
	n.watch(ctx)
}

// close waits (bounded) for the background work to stop after its context ended, so a
// heal is not cut off between unmounting and mounting by the process exiting.
func (n *nodeService) close() {
	n.once.Do(func() {
		if !n.started.Load() {
			return
		}
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			n.log.Warn("the healing watcher did not stop within 10s")
		}
	})
}

func (n *nodeService) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: n.cfg.NodeID}, nil
}

func (n *nodeService) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	var caps []*csi.NodeServiceCapability
	for _, t := range []csi.NodeServiceCapability_RPC_Type{
		csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
		csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
		csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
		csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	} {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: t}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// requireVolumeID checks a request's volume ID.
func requireVolumeID(id string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if err := validVolumeIDForFile(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "%v; this driver's volume IDs are PV names (pvc-<uuid>)", err)
	}
	return nil
}

// requirePath checks that a path field is given and absolute: mountinfo shows absolute
// paths only, and a relative one would silently match nothing.
func requirePath(field, p string) error {
	if p == "" {
		return status.Errorf(codes.InvalidArgument, "%s is missing", field)
	}
	if !filepath.IsAbs(p) {
		return status.Errorf(codes.InvalidArgument, "%s %q is not an absolute path", field, p)
	}
	return nil
}

// lockVolume takes the volume's lock without waiting: a concurrent call for the same
// volume answers Aborted and the CO retries, so a stuck call never piles callers up.
func (n *nodeService) lockVolume(id string) (func(), error) {
	release, ok := n.locks.tryLock(id)
	if !ok {
		return nil, status.Errorf(codes.Aborted, "another operation on volume %s is still running on this node; it is retried when that one finishes", id)
	}
	return release, nil
}

// devNum is a block device number.
type devNum struct{ major, minor uint32 }

func entryDev(e *mount.Entry) devNum { return devNum{uint32(e.Major), uint32(e.Minor)} }
func diskDev(d *nvme.Disk) devNum    { return devNum{d.Major, d.Minor} }
func (r *stagingRecord) dev() devNum { return devNum{r.Major, r.Minor} }

// top returns the visible (last) of the entries stacked at one mount point.
func top(entries []*mount.Entry) *mount.Entry {
	if len(entries) == 0 {
		return nil
	}
	return entries[len(entries)-1]
}

// mountReadOnly reports whether a mount is read-only, per mount or for the whole
// filesystem (ext4 with errors=remount-ro after I/O errors shows "ro" in the super
// options).
func mountReadOnly(e *mount.Entry) bool {
	return hasOption(e.Options, "ro") || hasOption(e.VFSOptions, "ro")
}

// hasOption reports whether a comma-separated mountinfo option field holds opt.
func hasOption(options, opt string) bool { return slices.Contains(strings.Split(options, ","), opt) }

// nodeStatus turns an error of the nvme or mount packages into a gRPC status with the
// code the CO acts on, keeping the message (which already says what is wrong and how to
// fix it) behind what the node was doing. An error that already is a status passes
// through unchanged.
func nodeStatus(doing string, err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return err
	}
	return status.Errorf(nodeCode(err), "%s: %v", doing, err)
}

func nodeCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nvme.ErrTimeout):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, nvme.ErrBadOption):
		return codes.InvalidArgument
	case errors.Is(err, nvme.ErrSubsystemUnknown):
		return codes.NotFound
	case errors.Is(err, nvme.ErrUnreachable), errors.Is(err, nvme.ErrNotLive),
		errors.Is(err, nvme.ErrNotConnected), errors.Is(err, nvme.ErrNoDisk):
		return codes.Unavailable
	case errors.Is(err, nvme.ErrNotManaged), errors.Is(err, nvme.ErrIdentityConflict), errors.Is(err, nvme.ErrFabricsMissing),
		errors.Is(err, mount.ErrNotBlank), errors.Is(err, mount.ErrNeedsRepair), errors.Is(err, mount.ErrInUse),
		errors.Is(err, unix.EUCLEAN):
		return codes.FailedPrecondition
	case errors.Is(err, mount.ErrMountStorm):
		return codes.ResourceExhausted
	default:
		return codes.Internal
	}
}

// parseVolumeContext validates the NVMe part of a volume context and returns where to
// connect and how: t.Address is the primary path, paths every path (t.Address first; one
// entry unless the context has nvmeAddresses). Options the context leaves out stay nil: nvme then applies the
// driver's defaults (ctrl_loss_tmo -1, reconnect_delay 5) and the kernel's for the rest.
// Errors are gRPC statuses: InvalidArgument for malformed values, FailedPrecondition for
// an NQN outside this node's managed prefix.
func parseVolumeContext(vc map[string]string, guard *nvme.Guard) (t nvme.Target, paths []string, o nvme.Options, err error) {
	t, o, err = parseTarget(vc, guard)
	if err != nil {
		return t, nil, o, err
	}
	raw, ok := vc[paramNVMeAddresses]
	if !ok || strings.TrimSpace(raw) == "" {
		return t, []string{t.Address}, o, nil
	}
	paths, msg := parseNVMeAddresses(raw)
	if msg != "" {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q %s: fix the StorageClass parameter %s", paramNVMeAddresses, raw, msg, paramNVMeAddresses)
	}
	if !sameAddress(paths[0], t.Address) {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q does not start with %s=%q: the controller writes the primary path first in both; the PV was edited by hand, make them agree", paramNVMeAddresses, raw, paramNVMeAddress, t.Address)
	}
	return t, paths, o, nil
}

// parseTarget validates the single-path part of a volume context.
func parseTarget(vc map[string]string, guard *nvme.Guard) (nvme.Target, nvme.Options, error) {
	var t nvme.Target
	var o nvme.Options
	t.NQN = strings.TrimSpace(vc[contextNQN])
	if t.NQN == "" {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the volume was not created by this driver (or its PV was edited); the controller sets it at CreateVolume", contextNQN)
	}
	if err := guard.Check(t.NQN); err != nil {
		return t, o, status.Errorf(codes.FailedPrecondition,
			"volume NQN %q is outside this node's managed NQN prefix %q: the node plugin never touches NVMe subsystems it does not own; if this is one of the driver's volumes, set --managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) to cover its NQNs (%v)",
			t.NQN, guard.Prefix(), err)
	}
	t.Address = strings.TrimSpace(vc[paramNVMeAddress])
	if t.Address == "" {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the RDS's NVMe/TCP IP address is needed to connect; the controller sets it at CreateVolume", paramNVMeAddress)
	}
	if net.ParseIP(t.Address) == nil {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q is not an IP address: NVMe/TCP connects to an IP (the kernel resolves no host names); set the StorageClass parameter %s to the RDS's IP", paramNVMeAddress, t.Address, paramNVMeAddress)
	}
	port, _, err := mustOption(paramNVMePort).contextValue(vc)
	if err != nil {
		return t, o, status.Error(codes.InvalidArgument, err.Error())
	}
	t.Port, t.NSID = port, 1
	for _, opt := range volumeOptions {
		if opt.connect == nil {
			continue
		}
		// Options the context leaves out stay nil: nvme sends its defaults for those
		// it has one for (the table's), the kernel's apply to the rest.
		v, set, err := opt.contextValue(vc)
		if err != nil {
			return t, o, status.Error(codes.InvalidArgument, err.Error())
		}
		if set {
			opt.connect(&o, v)
		}
	}
	return t, o, nil
}
