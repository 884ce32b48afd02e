package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
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

// kubeCluster answers fencing and checkNode from the Kubernetes API.
type kubeCluster struct{ api *kube.Client }

const (
	volumeAttachmentsPath = "/apis/storage.k8s.io/v1/volumeattachments"
	csiNodesPath          = "/apis/storage.k8s.io/v1/csinodes"
)

type volumeAttachment struct {
	Name, Attacher, NodeName, PVName string
	Attached, Deleting               bool
}

type kubeVolumeAttachment struct {
	Metadata struct {
		Name              string  `json:"name"`
		DeletionTimestamp *string `json:"deletionTimestamp"`
	} `json:"metadata"`
	Spec struct {
		Attacher string `json:"attacher"`
		NodeName string `json:"nodeName"`
		Source   struct {
			PersistentVolumeName *string `json:"persistentVolumeName"`
		} `json:"source"`
	} `json:"spec"`
	Status struct {
		Attached bool `json:"attached"`
	} `json:"status"`
}

func (k kubeCluster) listVolumeAttachments(ctx context.Context, attacher string) ([]volumeAttachment, error) {
	items, err := kube.List[kubeVolumeAttachment](ctx, k.api, volumeAttachmentsPath)
	if err != nil {
		return nil, withRBACHint(err)
	}
	var out []volumeAttachment
	for _, it := range items {
		if it.Spec.Attacher != attacher || it.Spec.Source.PersistentVolumeName == nil {
			continue
		}
		out = append(out, volumeAttachment{Name: it.Metadata.Name, Attacher: it.Spec.Attacher, NodeName: it.Spec.NodeName,
			PVName: *it.Spec.Source.PersistentVolumeName, Attached: it.Status.Attached, Deleting: it.Metadata.DeletionTimestamp != nil})
	}
	return out, nil
}

type nodeRegistry interface {
	nodeRegistered(ctx context.Context, driver, nodeID string) (bool, error)
}

type csiNode struct {
	Spec struct {
		Drivers []struct {
			Name   string `json:"name"`
			NodeID string `json:"nodeID"`
		} `json:"drivers"`
	} `json:"spec"`
}

func (n *csiNode) lists(driver, nodeID string) bool {
	for _, d := range n.Spec.Drivers {
		if d.Name == driver && d.NodeID == nodeID {
			return true
		}
	}
	return false
}

// nodeRegistered looks the node ID up in the CSINode named like it (the node plugin's ID
// is the node name), then, for a node plugin given another --node-id, in all of them.
func (k kubeCluster) nodeRegistered(ctx context.Context, driver, nodeID string) (bool, error) {
	n, err := kube.Get[csiNode](ctx, k.api, csiNodesPath+"/"+url.PathEscape(nodeID))
	switch {
	case err == nil && n.lists(driver, nodeID):
		return true, nil
	case err != nil && !kube.IsNotFound(err):
		return false, withRBACHint(err)
	}
	nodes, err := kube.List[csiNode](ctx, k.api, csiNodesPath)
	if err != nil {
		return false, withRBACHint(err)
	}
	return slices.ContainsFunc(nodes, func(n csiNode) bool { return n.lists(driver, nodeID) }), nil
}

// withRBACHint names the missing permission when the API refuses the controller.
func withRBACHint(err error) error {
	var se *kube.StatusError
	if errors.As(err, &se) && se.Code == http.StatusForbidden {
		return fmt.Errorf("%w (the controller's service account needs get and list on volumeattachments and csinodes (storage.k8s.io); see deploy.yaml)", err)
	}
	return err
}
