package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

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
