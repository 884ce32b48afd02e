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

// nodeService is the CSI Node service: it attaches volumes over NVMe/TCP, formats and
// mounts filesystem volumes at the staging path, publishes them by bind mount or device
// node, and heals them across reconnects (heal.go). Its own state is one staging record
// per volume; everything else is asked of the kernel on every call.
type nodeService struct {
	csi.UnimplementedNodeServer
	cfg     *Config
	log     *slog.Logger
	m       *metrics
	att     attacher
	guard   *nvme.Guard
	records *recordStore
	ledger  *connectionLedger
	// unreadableRecords: each may be a volume in use, so the sweep disconnects nothing.
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
	sweepMu   sync.RWMutex
	kick      chan struct{} // asks the watcher for a pass now
	heals     sync.Map      // volume ID → last healOutcome
	pathNotes sync.Map      // volume ID + "\x00" + address → pathFailure
	// unowned: managed subsystems the sweep left alone for want of proof, until kubelet
	// stages (adopts) or unstages them.
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

// attacher is what the node needs from the NVMe host: *nvme.Host, or in tests and
// loopnvme builds the loop-device stand-in (nvme/loopback) with the same methods.
type attacher interface {
	Probe() (nvme.Features, error)
	// Multipath reports whether native NVMe multipath is on: only then may a volume
	// connect more than one path.
	Multipath() (bool, error)
	Connect(ctx context.Context, t nvme.Target, o nvme.Options) (*nvme.Disk, error)
	Resolve(nqn string, nsid int) (*nvme.Disk, error)
	Health(nqn string) (nvme.Health, error)
	Disconnect(ctx context.Context, nqn string) error
	Rescan(ctx context.Context, nqn string, nsid int) (*nvme.Disk, error)
	Subsystems() ([]nvme.Subsystem, error)
	Sweep(ctx context.Context, claimed, owned map[string]bool, inUse func(nvme.Disk) bool) (nvme.SweepReport, error)
}

var _ attacher = (*nvme.Host)(nil)

// newAttacher builds the node's attacher; attacher_loop.go (tag loopnvme) replaces it.
var newAttacher = newNVMeAttacher

// newNVMeAttacher is the real host. It succeeds where /dev/nvme-fabrics is missing, so
// the plugin registers on a node whose nvme-tcp module is loaded later; staging then
// fails saying so.
func newNVMeAttacher(cfg *Config, guard *nvme.Guard, log *slog.Logger, m *metrics) (attacher, error) {
	return nvme.NewHost(nvme.Config{
		SysfsRoot: cfg.SysfsRoot, DevRoot: cfg.DevRoot, HostDir: cfg.NVMeHostDir,
		Guard: guard, Logger: log, Observe: m.observeNVMe,
	})
}

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
		fs:     filesystems{probe: mount.Probe, format: mount.Format, repair: mount.Repair, grow: mount.Grow},
		bootID: bootID, now: time.Now, after: time.After,
		kick: make(chan struct{}, 1), done: make(chan struct{}), swept: make(chan struct{}), unowned: map[string]bool{},
	}
	n.breaker = newBreaker(n.now, func(open int) { m.breakersOpen.Set(float64(open)) })
	return n, nil
}

// kernelBootID tells staging records of this boot from those whose connections and
// mounts a reboot took away.
func kernelBootID(log *slog.Logger) string {
	raw, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		log.Warn("cannot read the kernel boot ID; staging records are then all taken as this boot's", "err", err)
		return "unknown"
	}
	return strings.TrimSpace(string(raw))
}

// run does the background work until ctx ends: log the staged volumes, sweep NVMe
// subsystems nobody claims, then heal.
func (n *nodeService) run(ctx context.Context) {
	n.started.Store(true)
	defer close(n.done)
	n.rebuild(ctx)
	n.sweep(ctx)
	close(n.swept)
	n.watch(ctx)
}

// close waits (bounded) for the background work to stop, so a heal is not cut off
// between unmounting and mounting by the process exiting.
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

// checkRequest validates a request's volume ID and its absolute path fields (mountinfo
// shows absolute paths only; a relative one would silently match nothing), given as
// field name, value pairs.
func checkRequest(id string, fields ...string) error {
	if id == "" {
		return status.Error(codes.InvalidArgument, "volume_id is missing")
	}
	if err := validVolumeIDForFile(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "%v; this driver's volume IDs are PV names (pvc-<uuid>)", err)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		switch field, p := fields[i], fields[i+1]; {
		case p == "":
			return status.Errorf(codes.InvalidArgument, "%s is missing", field)
		case !filepath.IsAbs(p):
			return status.Errorf(codes.InvalidArgument, "%s %q is not an absolute path", field, p)
		}
	}
	return nil
}

// lockVolume takes the volume's lock without waiting: a concurrent call answers Aborted
// and the CO retries, so a stuck call never piles callers up.
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

// topMount is the visible mount at path, nil if none.
func topMount(ctx context.Context, path string) (*mount.Entry, error) {
	entries, err := mount.ByMountPoint(ctx, path)
	return top(entries), err
}

// mountReadOnly: per mount, or for the whole filesystem (ext4 with errors=remount-ro
// shows "ro" in the super options after I/O errors).
func mountReadOnly(e *mount.Entry) bool {
	return hasOption(e.Options, "ro") || hasOption(e.VFSOptions, "ro")
}

func hasOption(options, opt string) bool { return slices.Contains(strings.Split(options, ","), opt) }

// blockNodeAt returns the device the block device node at path stands for (lstat: the
// node itself, not a symlink's target); isBlock is false for anything else.
func blockNodeAt(path string) (dev devNum, isBlock bool, err error) {
	return deviceNodeAt(path, unix.Lstat)
}

// deviceNodeAt is blockNodeAt with the stat to use (unix.Stat follows symlinks).
func deviceNodeAt(path string, stat func(string, *unix.Stat_t) error) (devNum, bool, error) {
	var st unix.Stat_t
	if err := stat(path, &st); err != nil {
		return devNum{}, false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return devNum{}, false, nil
	}
	return devNum{unix.Major(st.Rdev), unix.Minor(st.Rdev)}, true, nil
}

// nodeStatus turns an nvme or mount error into a gRPC status with the code the CO acts
// on, its message behind what the node was doing; a status passes through unchanged.
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

var nodeCodes = []struct {
	code codes.Code
	errs []error
}{
	{codes.DeadlineExceeded, []error{context.DeadlineExceeded, nvme.ErrTimeout}},
	{codes.Canceled, []error{context.Canceled}},
	{codes.InvalidArgument, []error{nvme.ErrBadOption}},
	{codes.NotFound, []error{nvme.ErrSubsystemUnknown}},
	{codes.Unavailable, []error{nvme.ErrUnreachable, nvme.ErrNotLive, nvme.ErrNotConnected, nvme.ErrNoDisk}},
	{codes.FailedPrecondition, []error{nvme.ErrNotManaged, nvme.ErrIdentityConflict, nvme.ErrFabricsMissing,
		mount.ErrNotBlank, mount.ErrNeedsRepair, mount.ErrInUse, unix.EUCLEAN}},
	{codes.ResourceExhausted, []error{mount.ErrMountStorm}},
}

func nodeCode(err error) codes.Code {
	for _, c := range nodeCodes {
		if slices.ContainsFunc(c.errs, func(e error) bool { return errors.Is(err, e) }) {
			return c.code
		}
	}
	return codes.Internal
}

// parseVolumeContext validates the NVMe part of a volume context: t.Address is the
// primary path, paths every path (t.Address first). Options left out stay nil, so nvme
// applies the driver's defaults and the kernel's. Errors are InvalidArgument, or
// FailedPrecondition for an NQN outside the managed prefix.
func parseVolumeContext(vc map[string]string, guard *nvme.Guard) (t nvme.Target, paths []string, o nvme.Options, err error) {
	t.NQN = strings.TrimSpace(vc[contextNQN])
	if t.NQN == "" {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the volume was not created by this driver (or its PV was edited); the controller sets it at CreateVolume", contextNQN)
	}
	if err := guard.Check(t.NQN); err != nil {
		return t, nil, o, status.Errorf(codes.FailedPrecondition,
			"volume NQN %q is outside this node's managed NQN prefix %q: the node plugin never touches NVMe subsystems it does not own; if this is one of the driver's volumes, set --managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) to cover its NQNs (%v)",
			t.NQN, guard.Prefix(), err)
	}
	t.Address = strings.TrimSpace(vc[paramNVMeAddress])
	if t.Address == "" {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the RDS's NVMe/TCP IP address is needed to connect; the controller sets it at CreateVolume", paramNVMeAddress)
	}
	if net.ParseIP(t.Address) == nil {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q is not an IP address: NVMe/TCP connects to an IP (the kernel resolves no host names); set the StorageClass parameter %s to the RDS's IP", paramNVMeAddress, t.Address, paramNVMeAddress)
	}
	port, _, err := mustOption(paramNVMePort).contextValue(vc)
	if err != nil {
		return t, nil, o, status.Error(codes.InvalidArgument, err.Error())
	}
	t.Port, t.NSID = port, 1
	for _, opt := range volumeOptions {
		if opt.connect == nil {
			continue
		}
		v, set, err := opt.contextValue(vc)
		if err != nil {
			return t, nil, o, status.Error(codes.InvalidArgument, err.Error())
		}
		if set {
			opt.connect(&o, v)
		}
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
