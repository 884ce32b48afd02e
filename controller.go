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

// newController wires the controller around a RouterOS client built from rc (not dialled
// yet) and the cluster's attachments (nil: fencing is in-memory only). Tests use it.
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
		m.rdsConnected.Set(map[bool]float64{true: 1}[up])
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
	c.nodes, _ = source.(nodeRegistry)
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

// volumeIDFor maps a CreateVolume name to the volume ID (also the RDS slot and file name).
// A name that is a valid slot — the provisioner's pvc-<uuid>, as the earlier RDS driver
// used too — is the ID. Any other (the CSI name is an arbitrary idempotency key; csi-sanity
// sends long upper-case ones) maps to a deterministic "vol-<96 bits of SHA-256>", so a
// retried CreateVolume finds the same volume.
func volumeIDFor(name string) string { return idFor(name, derivedIDPrefix) }

// idFor is name when it can be an ID, else prefix and 96 bits of the name's SHA-256.
func idFor(name, prefix string) string {
	if isVolumeID(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return prefix + hex.EncodeToString(sum[:])[:24]
}

// isVolumeID reports whether id can name a volume (or snapshot) of this driver: a slot of
// at most 63 characters of [a-z0-9-]. Any other ID can never exist on the RDS:
// DeleteVolume answers OK for it, the other RPCs NotFound.
func isVolumeID(id string) bool {
	return len(id) <= maxVolumeIDLen && routeros.ValidateSlot(id) == nil
}

// defaultNQN is the subsystem NQN requested for a volume. RouterOS before 7.21 ignores it
// and exports the slot as the NQN: callers use the NQN the RDS reports, never this.
func defaultNQN(id string) string { return nqnPrefix + id }

// volumeFileName is the backing file's name in its volume path.
func volumeFileName(id string) string { return id + ".img" }

// maxNVMePaths bounds nvmeAddresses: an RDS2216 has six storage ports, and a node that
// connects more paths per volume only multiplies its reconnect work during an outage.
const maxNVMePaths = 4

// reservedParamPrefix marks the parameters the external-provisioner adds itself (PVC name,
// namespace, …); they are accepted and ignored.
const reservedParamPrefix = "csi.storage.k8s.io/"

// volumeParams are a validated set of StorageClass parameters.
type volumeParams struct {
	volumePath  string
	nvmeAddress string         // "" until resolved for CreateVolume (see withAddress)
	paths       []string       // nvmeAddresses: every path, nvmeAddress first; nil for one path
	ints        map[string]int // every parameter that is set or has a default
}

// parseParams validates StorageClass parameters. Every problem is reported at once, each
// naming the parameter and what it accepts, so one edit of the StorageClass fixes them all.
func (c *controllerService) parseParams(params map[string]string) (*volumeParams, error) {
	p := &volumeParams{volumePath: c.cfg.RDSVolumePath, ints: map[string]int{}}
	var problems []string
	add := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	for _, o := range volumeOptions {
		if o.def != nil {
			p.ints[o.key] = *o.def
		}
	}
	for _, k := range slices.Sorted(maps.Keys(params)) { // a stable message
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
			p.nvmeAddress, p.paths = p.paths[0], nil // one path is plain nvmeAddress
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

// checkNVMeAddress says what is wrong with an NVMe/TCP target address ("" when nothing).
// The kernel connects to an IP only: it resolves no host names.
func checkNVMeAddress(v string) string {
	switch ip := net.ParseIP(v); {
	case ip == nil:
		return "must be the RDS's IP address (NVMe/TCP connects to an IP; the kernel resolves no host names)"
	case ip.IsUnspecified() || ip.IsMulticast():
		return "must be the RDS's unicast IP address"
	}
	return ""
}

// parseNVMeAddresses splits an nvmeAddresses value ("10.0.0.10,10.0.1.10") and says what
// is wrong with it ("" when nothing): every entry an IP, none twice (as IPs: "fd00::1" and
// "fd00:0::1" are one path), at most maxNVMePaths. The node reads the volume context
// with the same function.
func parseNVMeAddresses(v string) ([]string, string) {
	var paths, bad []string
	for a := range strings.SplitSeq(v, ",") {
		a = strings.TrimSpace(a)
		if checkNVMeAddress(a) != "" {
			bad = append(bad, strconv.Quote(a))
			continue
		}
		if slices.ContainsFunc(paths, func(seen string) bool { return sameAddress(seen, a) }) {
			return nil, fmt.Sprintf("names %s twice: each entry must be a different path to the RDS", a)
		}
		paths = append(paths, a)
	}
	switch {
	case len(bad) > 0:
		return nil, fmt.Sprintf("has %s, which is not an IP address: list the RDS's IPs on each storage network, comma separated, like 10.0.0.10,10.0.1.10 (NVMe/TCP connects to an IP; the kernel resolves no host names)", strings.Join(bad, ", "))
	case len(paths) > maxNVMePaths:
		return nil, fmt.Sprintf("lists %d paths; at most %d are supported: keep one address per storage network", len(paths), maxNVMePaths)
	}
	return paths, ""
}

// sameAddress compares two valid IP addresses.
func sameAddress(a, b string) bool { return net.ParseIP(a).Equal(net.ParseIP(b)) }

// withAddress fills in the NVMe/TCP address for a new volume: the nvmeAddress parameter,
// else --rds-address when that is an IP.
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

// volumeContext is what the node needs to attach the volume, and nothing it must look up:
// target, NQN as the RDS reports it, and the connection options (only those set or
// defaulted, so the node's own defaults apply to the rest).
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

// migrationTimeoutFrom reads migrationTimeoutSeconds from a volume context; PVs of the
// earlier driver, or without the key, get the default, and so does a bad value, with the
// error saying why.
func migrationTimeoutFrom(vc map[string]string) (int, error) {
	o := mustOption(paramMigrationTimeout)
	seconds, _, err := o.contextValue(vc)
	if err != nil {
		return *o.def, err
	}
	return seconds, nil
}
