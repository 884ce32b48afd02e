package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/kube"
	"srvlab.io/rds-csi/routeros"
)

// controllerService is the CSI Controller service: volumes are file-backed disks on the
// RDS, exported over NVMe/TCP and managed over SSH; attachments are fenced so a volume is
// never on more nodes than its access mode allows.
type controllerService struct {
	csi.UnimplementedControllerServer
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	client  *routeros.Client // every operation bounded by --rds-command-timeout (rdsClientConfig)
	health  *rdsHealth
	fencing *fencing
	// nodes checks node IDs against the cluster's CSINodes; nil out of a cluster, where
	// every node ID is taken as given (an optional feature off must not break publishing).
	nodes   nodeRegistry
	locks   *volumeLocks
	copies  *copyTracker // the file copies of snapshots, restores and clones
	bases   []string     // --rds-volume-path, then --rds-allowed-paths
	rdsAddr string       // host:port, for messages

	// Background intervals; variables so tests can shorten them.
	migrationCheckEvery, poolRefreshEvery time.Duration
}

// newControllerService builds the controller from the configuration. It neither dials the
// RDS nor calls the Kubernetes API: run does, retrying, so an unreachable RDS at start-up
// means "not ready", never a crash loop.
func newControllerService(cfg *Config, log *slog.Logger, m *metrics) (*controllerService, error) {
	if _, err := volumeBases(cfg); err != nil {
		return nil, err
	}
	var source attachmentLister
	api, err := kube.New(cfg.Kubeconfig, os.Getenv)
	switch {
	case errors.Is(err, kube.ErrNotConfigured):
	case err != nil:
		return nil, fmt.Errorf("kubernetes API (for VolumeAttachments): %w", err)
	default:
		source = kubeCluster{api}
	}
	if cfg.RDSInsecureSkipHostKey {
		log.Warn("RDS host key verification is OFF (--rds-insecure-skip-host-key): a machine in the middle could impersonate the RDS; pin the key with --rds-known-hosts")
	}
	return newController(cfg, log, m, rdsClientConfig(cfg, log, m), source)
}

// newController wires the controller around a RouterOS client built from rc and the
// cluster's attachments (nil: none, fencing is in-memory only). The client does not dial
// yet. Tests build controllers with it, over the simulator.
func newController(cfg *Config, log *slog.Logger, m *metrics, rc routeros.Config, source attachmentLister) (*controllerService, error) {
	bases, err := volumeBases(cfg)
	if err != nil {
		return nil, err
	}
	c := &controllerService{
		cfg: cfg, log: log, metrics: m,
		locks: newVolumeLocks(), bases: bases,
		rdsAddr:             net.JoinHostPort(cfg.RDSAddress, strconv.Itoa(cfg.RDSSSHPort)),
		migrationCheckEvery: 10 * time.Second, poolRefreshEvery: time.Minute,
	}
	c.health = newRDSHealth(func(ctx context.Context) error { return c.client.Ping(ctx) }, log, func(up bool) {
		if up {
			m.rdsConnected.Set(1)
		} else {
			m.rdsConnected.Set(0)
		}
	})
	// every operation's outcome also tells the health loop whether the RDS answers
	observe := rc.Observe
	rc.Observe = func(op string, d time.Duration, err error) {
		c.health.observe(op, err)
		if observe != nil {
			observe(op, d, err)
		}
	}
	if c.client, err = routeros.New(rc); err != nil {
		return nil, err
	}
	// half the sessions at most for copy commands, which may hold one for the whole copy
	c.copies = newCopyTracker(c.client.CopyFile, log, cfg.RDSMaxSessions/2)
	c.fencing = newFencing(source, cfg.DriverName, log)
	c.fencing.onMigrationTimeout = func(string, []string, time.Duration) { m.migrationTimeouts.Inc() }
	if nr, ok := source.(nodeRegistry); ok {
		c.nodes = nr
	}
	return c, nil
}

// run does the background work until ctx ends: RDS health, the rebuild of attachment
// records from the cluster, migration timeouts, and the pool figures for metrics.
func (c *controllerService) run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() { c.health.run(ctx) })
	wg.Go(func() { c.fencing.runRebuild(ctx) })
	wg.Go(func() { every(ctx, c.migrationCheckEvery, c.fencing.checkMigrations) })
	wg.Go(func() { every(ctx, c.poolRefreshEvery, func() { c.refreshPools(ctx) }) })
	wg.Wait()
}

// every calls f now and then every d until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		f()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *controllerService) ready() bool                   { return c.health.ready() }
func (c *controllerService) supportsOnlineExpansion() bool { return true }
func (c *controllerService) close()                        { _ = c.client.Close() }

// controllerCapabilities are what the controller does. LIST_VOLUMES with published nodes
// lets the external-attacher reconcile attachments; GET/LIST_VOLUME_HEALTH replace the
// VOLUME_CONDITION of CSI before 1.13. Snapshots, restores and clones copy the volume's
// file on the RDS (controller_snapshot*.go).
var controllerCapabilities = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES,
	csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES,
	csi.ControllerServiceCapability_RPC_GET_VOLUME,
	csi.ControllerServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_LIST_VOLUME_HEALTH,
	csi.ControllerServiceCapability_RPC_GET_CAPACITY,
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS,
	csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
}

func (c *controllerService) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := make([]*csi.ControllerServiceCapability, 0, len(controllerCapabilities))
	for _, t := range controllerCapabilities {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// rdsStatus turns a RouterOS failure while doing `what` into the gRPC status the CO acts
// on. An RDS that cannot be reached is Unavailable (retried), never NotFound (which would
// tell the CO a volume is gone) or Internal.
func (c *controllerService) rdsStatus(what string, err error) error {
	var ce *routeros.CommandError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: the RDS at %s did not answer in time: %v; it is retried — if this persists, check the RDS's load and the network, or raise --rds-command-timeout", what, c.rdsAddr, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: the caller gave up: %v", what, err)
	case errors.Is(err, routeros.ErrTransport):
		return status.Errorf(codes.Unavailable, "%s: cannot reach the RDS at %s over SSH: %v; check that the RDS is up and reachable from the controller, and the controller's --rds-address, --rds-ssh-port, SSH key and known_hosts", what, c.rdsAddr, err)
	case errors.Is(err, routeros.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: %v", what, err)
	case errors.Is(err, routeros.ErrAlreadyExists):
		return status.Errorf(codes.AlreadyExists, "%s: %v", what, err)
	case errors.Is(err, routeros.ErrNoSpace):
		return status.Errorf(codes.ResourceExhausted, "%s: the RDS pool is full: %v; free space on the pool", what, err)
	case errors.Is(err, routeros.ErrInvalidArgument) && !errors.As(err, &ce):
		// refused before anything was sent: a value from the request
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	case errors.Is(err, routeros.ErrInvalidArgument):
		return status.Errorf(codes.Internal, "%s: the RDS rejected the command rds-csi sent: %v; this RouterOS version may not support it: report it with the output of /system resource print", what, err)
	}
	return status.Errorf(codes.Internal, "%s: the RDS refused: %v", what, err)
}

// noSpaceStatus is ResourceExhausted for an RDS pool too full for need bytes, with the
// pool's free space read back so the user sees how much is missing.
func (c *controllerService) noSpaceStatus(ctx context.Context, what, volumePath string, need int64, cause error) error {
	pool, err := c.client.PoolCapacity(ctx, volumePath)
	if err != nil {
		return status.Errorf(codes.ResourceExhausted, "%s: the RDS has not enough space for %s (%v); its free space could not be read: %v; free space on the pool holding %s",
			what, humanBytes(need), cause, err, volumePath)
	}
	c.recordPool(pool)
	return status.Errorf(codes.ResourceExhausted, "%s: the RDS pool %q has %s free (%d bytes) and this needs %s (%d bytes): free space on the pool (delete unused volumes) or ask for less",
		what, pool.Name, humanBytes(pool.Free), pool.Free, humanBytes(need), need)
}

// busy is the answer when another operation holds the volume: the sidecars retry Aborted.
func busy(id string) error {
	return status.Errorf(codes.Aborted, "an operation on volume %s is already in progress; retry when it has finished", id)
}

// required is InvalidArgument for a missing request field.
func required(field, rpc string) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf("%s is required in %s", field, rpc))
}

// maxVolumeIDLen bounds volume IDs that are request names used as they are. Kubernetes
// names PVs pvc-<uuid> (40 characters); 63 is a DNS label, which every slot we make fits.
const maxVolumeIDLen = 63

// derivedIDPrefix starts the IDs derived from names that cannot be slots.
const derivedIDPrefix = "vol-"

// nqnPrefix is the subsystem NQN the controller asks for; the earlier RDS driver used the
// same, so a node's --managed-nqn-prefix covers the volumes of both.
const nqnPrefix = "nqn.2000-02.com.mikrotik:"

// volumeIDFor maps a CreateVolume name to the volume ID, which is also the RDS slot and the
// file name. A name that is a valid slot is used as it is: that is the provisioner's
// pvc-<uuid>, so PVs made by the earlier RDS driver (which did the same) keep their IDs.
// Any other name — the CSI spec makes the name an arbitrary idempotency key, and
// csi-sanity sends upper-case names longer than 63 characters — maps to a deterministic
// slot, "vol-" and the first 24 hex digits (96 bits) of the name's SHA-256, so a retried
// CreateVolume with the same name always finds the same volume.
func volumeIDFor(name string) string { return idFor(name, derivedIDPrefix) }

// idFor is name when it can be an ID, else prefix and 96 bits of the name's SHA-256.
func idFor(name, prefix string) string {
	if isVolumeID(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:])[:24]
}

// isVolumeID reports whether id can name a volume of this driver: a slot of at most 63
// characters of [a-z0-9-], starting and ending with a letter or digit. An ID that is not
// one can never exist on the RDS: DeleteVolume answers OK for it, the other RPCs NotFound.
func isVolumeID(id string) bool {
	return len(id) <= maxVolumeIDLen && routeros.ValidateSlot(id) == nil
}

// defaultNQN is the subsystem NQN requested for a volume. RouterOS before 7.21 ignores it
// and exports the slot as the NQN: callers use the NQN the RDS reports, never this.
func defaultNQN(id string) string { return nqnPrefix + id }

// volumeFileName is the backing file's name in its volume path.
func volumeFileName(id string) string { return id + ".img" }

// isUnder reports whether p is base or lies below it, comparing whole path components
// (/pool/vol is not under /pool/v). Both are clean absolute paths.
func isUnder(p, base string) bool {
	return p == base || strings.HasPrefix(p, strings.TrimSuffix(base, "/")+"/")
}

// volumeBases returns the directories volumes may live in: --rds-volume-path first, then
// --rds-allowed-paths, each checked to be a clean absolute RouterOS path.
func volumeBases(cfg *Config) ([]string, error) {
	bases := append([]string{cfg.RDSVolumePath}, cfg.RDSAllowedPaths...)
	for i, b := range bases {
		flag := "--rds-volume-path"
		if i > 0 {
			flag = "--rds-allowed-paths"
		}
		// a file below the base must be a valid path: that checks the base's form
		if err := routeros.ValidatePath(b + "/x.img"); err != nil || b == "" || path.Clean(b) != b {
			return nil, fmt.Errorf("%s %q is not a clean absolute RouterOS path like /storage-pool/metal-csi (letters, digits, '.', '_', '-' and '/' only)", flag, b)
		}
	}
	return slices.Compact(bases), nil
}

// managedDisk says why a disk found under a volume's slot is not a volume of this driver
// ("" when it is one): only file disks whose file is <base>/…/<id>.img below a configured
// base are ever changed or removed.
func (c *controllerService) managedDisk(d *routeros.Disk) string {
	switch {
	case d.Type != "file":
		return fmt.Sprintf("the disk with slot %q is of type %q, not a file disk made by this driver", d.Slot, d.Type)
	case path.Base(d.FilePath) != volumeFileName(d.Slot):
		return fmt.Sprintf("the disk with slot %q uses file %q, not %s", d.Slot, d.FilePath, volumeFileName(d.Slot))
	case !c.underBases(path.Dir(d.FilePath)):
		return fmt.Sprintf("the disk with slot %q uses file %q outside --rds-volume-path and --rds-allowed-paths (%s); add its directory to --rds-allowed-paths if this driver should manage it",
			d.Slot, d.FilePath, strings.Join(c.bases, ", "))
	}
	return ""
}

func (c *controllerService) underBases(dir string) bool {
	return slices.ContainsFunc(c.bases, func(b string) bool { return isUnder(dir, b) })
}
