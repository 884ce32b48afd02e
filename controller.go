package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
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

// controllerService is the CSI Controller service: volumes are file disks on the RDS,
// exported over NVMe/TCP and managed over SSH; attachments are fenced by access mode.
type controllerService struct {
	csi.UnimplementedControllerServer
	cfg     *Config
	log     *slog.Logger
	metrics *metrics
	client  *routeros.Client
	health  *rdsHealth
	fencing *fencing
	// nodes checks node IDs against the CSINodes; nil out of a cluster, where any ID is taken.
	nodes   nodeRegistry
	locks   *volumeLocks
	copies  *copyTracker
	bases   []string // --rds-volume-path, then --rds-allowed-paths
	rdsAddr string   // host:port, for messages

	migrationCheckEvery, poolRefreshEvery time.Duration // variables for tests
}

// newControllerService builds the controller without dialling the RDS or calling the
// Kubernetes API (run does, retrying), so an unreachable RDS means "not ready", not a crash loop.
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
// cluster's attachments (nil: fencing is in-memory only).
func newController(cfg *Config, log *slog.Logger, m *metrics, rc routeros.Config, source attachmentLister) (*controllerService, error) {
	bases, err := volumeBases(cfg)
	if err != nil {
		return nil, err
	}
	c := &controllerService{
		cfg: cfg, log: log, metrics: m, locks: newVolumeLocks(), bases: bases,
		rdsAddr:             net.JoinHostPort(cfg.RDSAddress, strconv.Itoa(cfg.RDSSSHPort)),
		migrationCheckEvery: 10 * time.Second, poolRefreshEvery: time.Minute,
	}
	c.health = newRDSHealth(func(ctx context.Context) error { return c.client.Ping(ctx) }, log, func(up bool) {
		m.rdsConnected.Set(map[bool]float64{true: 1}[up])
	})
	observe := rc.Observe // every operation's outcome also feeds the health
	rc.Observe = func(op string, d time.Duration, err error) {
		c.health.observe(op, err)
		if observe != nil {
			observe(op, d, err)
		}
	}
	if c.client, err = routeros.New(rc); err != nil {
		return nil, err
	}
	// half the sessions at most for copies, which may hold one for the whole copy
	c.copies = newCopyTracker(c.client.CopyFile, log, cfg.RDSMaxSessions/2)
	c.fencing = newFencing(source, cfg.DriverName, log)
	c.fencing.onMigrationTimeout = func(string, []string, time.Duration) { m.migrationTimeouts.Inc() }
	c.nodes, _ = source.(nodeRegistry)
	return c, nil
}

// run does the background work until ctx ends: RDS health, the rebuild of attachment
// records, migration timeouts and the pool figures for metrics.
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

func (c *controllerService) ready() bool { return c.health.ready() }
func (c *controllerService) close()      { _ = c.client.Close() }

// controllerCapabilities: LIST_VOLUMES with published nodes lets the external-attacher
// reconcile attachments; GET/LIST_VOLUME_HEALTH replace CSI's pre-1.13 VOLUME_CONDITION.
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
	resp := &csi.ControllerGetCapabilitiesResponse{}
	for _, t := range controllerCapabilities {
		resp.Capabilities = append(resp.Capabilities, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{
			Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return resp, nil
}

// busy is the answer when another operation holds the volume: the sidecars retry Aborted.
func busy(id string) error { return busyErr("volume", id) }

func busyErr(kind, id string) error {
	return status.Errorf(codes.Aborted, "an operation on %s %s is already in progress; retry when it has finished", kind, id)
}

// lock takes the operation lock of a volume (kind "volume") or a snapshot, or is busy.
func (c *controllerService) lock(kind, id string) (release func(), err error) {
	key := id
	if kind == "snapshot" {
		key = "snapshot:" + id // ':' never occurs in a volume ID
	}
	release, ok := c.locks.tryLock(key)
	if !ok {
		return nil, busyErr(kind, id)
	}
	return release, nil
}

// lockVolume takes a volume's lock and looks it up (lookupVolume).
func (c *controllerService) lockVolume(ctx context.Context, id, what string) (*routeros.Disk, func(), error) {
	release, err := c.lock("volume", id)
	if err != nil {
		return nil, nil, err
	}
	disk, err := c.lookupVolume(ctx, id, what)
	if err != nil {
		release()
		return nil, nil, err
	}
	return disk, release, nil
}

// required is InvalidArgument for a missing request field.
func required(field, rpc string) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf("%s is required in %s", field, rpc))
}

// requireAll is required for the first of field, value pairs whose value is empty.
func requireAll(rpc string, fieldValues ...string) error {
	for i := 0; i < len(fieldValues); i += 2 {
		if fieldValues[i+1] == "" {
			return required(fieldValues[i], rpc)
		}
	}
	return nil
}

const (
	// maxVolumeIDLen: Kubernetes names PVs pvc-<uuid> (40 characters); 63 is a DNS label.
	maxVolumeIDLen = 63
	// derivedIDPrefix starts the IDs derived from names that cannot be slots.
	derivedIDPrefix = "vol-"
	// nqnPrefix is the NQN the controller asks for, as the earlier RDS driver did, so a
	// node's --managed-nqn-prefix covers the volumes of both.
	nqnPrefix = "nqn.2000-02.com.mikrotik:"
	// reservedParamPrefix marks the parameters the external-provisioner adds (PVC name,
	// namespace, …); they are accepted and ignored.
	reservedParamPrefix = "csi.storage.k8s.io/"
)

// volumeIDFor maps a CreateVolume name to the volume ID (RDS slot and file name): a name
// that is a valid slot (pvc-<uuid>) is the ID; any other maps deterministically to
// "vol-<96 bits of SHA-256>", so a retried CreateVolume finds the same volume.
func volumeIDFor(name string) string { return idFor(name, derivedIDPrefix) }

func idFor(name, prefix string) string {
	if isVolumeID(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:])[:24]
}

// isVolumeID reports whether id can name a volume or snapshot of this driver (a slot of at
// most 63 characters of [a-z0-9-]); no other ID can exist on the RDS.
func isVolumeID(id string) bool {
	return len(id) <= maxVolumeIDLen && routeros.ValidateSlot(id) == nil
}

// defaultNQN is the NQN requested for a volume. RouterOS before 7.21 ignores it and
// exports the slot as the NQN: callers use the NQN the RDS reports, never this.
func defaultNQN(id string) string { return nqnPrefix + id }

func volumeFileName(id string) string { return id + ".img" }

// volumeParams are a validated set of StorageClass parameters.
type volumeParams struct {
	volumePath  string
	nvmeAddress string         // "" until withAddress
	paths       []string       // nvmeAddresses, nvmeAddress first; nil for one path
	ints        map[string]int // every option that is set or has a default
}

// parseParams validates StorageClass parameters, reporting every problem at once so one
// edit of the StorageClass fixes them all.
func (c *controllerService) parseParams(params map[string]string) (*volumeParams, error) {
	p := &volumeParams{volumePath: c.cfg.RDSVolumePath, ints: map[string]int{}}
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	for _, o := range volumeOptions {
		if o.def != nil {
			p.ints[o.key] = *o.def
		}
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		v := params[k]
		switch o, known := lookupOption(k); {
		case strings.HasPrefix(k, reservedParamPrefix):
		case k == paramVolumePath:
			if msg := c.checkVolumePath(v); msg != "" {
				add("%s", msg)
			}
			p.volumePath = v
		case k == paramNVMeAddress:
			if msg := checkNVMeAddress(v); msg != "" {
				add("parameter %s %q %s", k, v, msg)
			}
			p.nvmeAddress = v
		case k == paramNVMeAddresses:
			paths, msg := parseNVMeAddresses(v)
			if msg != "" {
				add("parameter %s %q %s", k, v, msg)
			}
			p.paths = paths
		case !known:
			add("unknown parameter %q: the known ones are %s", k, strings.Join(knownParams(), ", "))
		default:
			if n, err := o.parse(v); err != nil {
				add("parameter %s %q %v", k, v, err)
			} else {
				p.ints[k] = n
			}
		}
	}
	if p.paths != nil {
		switch {
		case p.nvmeAddress != "" && checkNVMeAddress(p.nvmeAddress) == "" && !sameAddress(p.nvmeAddress, p.paths[0]):
			add("parameter %s %q is not the first entry of %s %q: set %s alone (its first address is the primary path) or make %s its first entry",
				paramNVMeAddress, p.nvmeAddress, paramNVMeAddresses, params[paramNVMeAddresses], paramNVMeAddresses, paramNVMeAddress)
		case len(p.paths) == 1:
			p.nvmeAddress, p.paths = p.paths[0], nil
		default:
			p.nvmeAddress = p.paths[0]
		}
	}
	if len(problems) > 0 {
		return nil, status.Errorf(codes.InvalidArgument, "invalid StorageClass parameters: %s", strings.Join(problems, "; "))
	}
	return p, nil
}

// checkVolumePath says what is wrong with a volumePath parameter ("" when nothing is).
func (c *controllerService) checkVolumePath(v string) string {
	if err := routeros.ValidatePath(v + "/x.img"); err != nil || !strings.HasPrefix(v, "/") {
		return fmt.Sprintf("parameter %s %q must be a clean absolute RouterOS directory like %s (letters, digits, '.', '_', '-' and '/' only, no trailing '/')",
			paramVolumePath, v, c.cfg.RDSVolumePath)
	}
	if c.underBases(v) {
		return ""
	}
	allowed := "--rds-allowed-paths is empty"
	if len(c.cfg.RDSAllowedPaths) > 0 {
		allowed = "--rds-allowed-paths is " + strings.Join(c.cfg.RDSAllowedPaths, ",")
	}
	return fmt.Sprintf("parameter %s %q must be --rds-volume-path (%s) or a directory below it or below one of --rds-allowed-paths (%s); add the directory to --rds-allowed-paths to use it",
		paramVolumePath, v, c.cfg.RDSVolumePath, allowed)
}

// withAddress fills in the NVMe/TCP address of a new volume: nvmeAddress, else
// --rds-address when that is an IP.
func (p *volumeParams) withAddress(rdsAddress string) error {
	if p.nvmeAddress != "" {
		return nil
	}
	if msg := checkNVMeAddress(rdsAddress); msg != "" {
		return status.Errorf(codes.InvalidArgument, "parameter %s is not set and --rds-address %q cannot stand in for it: it %s; set %s in the StorageClass to the RDS's IP on the storage network",
			paramNVMeAddress, rdsAddress, msg, paramNVMeAddress)
	}
	p.nvmeAddress = rdsAddress
	return nil
}

// volumeContext is all the node needs to attach the volume: target, the NQN the RDS
// reports, and the connect options set or defaulted (the node's defaults apply to the rest).
func (p *volumeParams) volumeContext(d *routeros.Disk) map[string]string {
	vc := map[string]string{paramVolumePath: p.volumePath, paramNVMeAddress: p.nvmeAddress, contextNQN: d.NQN}
	if len(p.paths) > 1 {
		vc[paramNVMeAddresses] = strings.Join(p.paths, ",")
	}
	for k, v := range p.ints {
		vc[k] = strconv.Itoa(v)
	}
	if d.NVMePort != 0 {
		vc[paramNVMePort] = strconv.Itoa(d.NVMePort) // what the RDS really exports on
	}
	return vc
}
