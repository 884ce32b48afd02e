package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ControllerPublishVolume is the fence that admits a volume to a node (nothing changes on
// the RDS): one node for a single-node mode, at most the two of a live migration for raw
// block ReadWriteMany. PUBLISH_READONLY is not advertised: NodePublish mounts read-only.
func (c *controllerService) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, nodeID := req.GetVolumeId(), req.GetNodeId()
	if err := requireAll("ControllerPublishVolume", "volume_id", id, "node_id", nodeID); err != nil {
		return nil, err
	}
	if req.GetVolumeCapability() == nil {
		return nil, required("volume_capability", "ControllerPublishVolume")
	}
	access, err := requestCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	disk, release, err := c.lockVolume(ctx, id, "publish volume "+id)
	if err != nil {
		return nil, err
	}
	defer release()
	if !disk.NVMeExport {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %s is not exported over NVMe/TCP, so no node can attach it: on the RDS run /disk set [find slot=%q] nvme-tcp-export=yes", id, id)
	}
	if err := c.checkNode(ctx, nodeID); err != nil {
		return nil, err
	}
	seconds, err := migrationTimeoutFrom(req.GetVolumeContext())
	if err != nil {
		logFrom(ctx).Warn("using the default migration timeout", "err", err)
	}
	if err := c.fencing.publish(ctx, id, nodeID, access.maxNodes, time.Duration(seconds)*time.Second); err != nil {
		return nil, err
	}
	return &csi.ControllerPublishVolumeResponse{}, nil
}

// checkNode answers NotFound for a node ID no CSINode lists. When the cluster cannot be
// asked the publish goes on: the check gives a clearer error, never blocks a real attach.
func (c *controllerService) checkNode(ctx context.Context, nodeID string) error {
	if c.nodes == nil {
		return nil
	}
	ok, err := c.nodes.nodeRegistered(ctx, c.cfg.DriverName, nodeID)
	switch {
	case err != nil:
		logFrom(ctx).Warn("cannot check the node against the cluster's CSINodes; publishing anyway", "err", err)
	case !ok:
		return status.Errorf(codes.NotFound, "node %s does not exist: no CSINode lists the %s node plugin with this node ID; check that the node plugin runs there (kubectl get csinode %s -o yaml)",
			nodeID, c.cfg.DriverName, nodeID)
	}
	return nil
}

// ControllerUnpublishVolume releases a volume from a node (every node when none is named);
// it always succeeds, as the volume or the node may be long gone.
func (c *controllerService) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, required("volume_id", "ControllerUnpublishVolume")
	}
	c.fencing.unpublish(req.GetVolumeId(), req.GetNodeId())
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

type attachmentLister interface {
	listVolumeAttachments(ctx context.Context, attacher string) ([]volumeAttachment, error)
}

// fencing records which nodes each volume is published to. The records are rebuilt from
// the cluster's VolumeAttachments, never from the driver's own notes (which go stale when
// an appliance or node crashes); until the first rebuild, publishing is Unavailable.
type fencing struct {
	mu        sync.Mutex
	published map[string]*volumePublications // by volume ID
	rebuilt   bool

	source   attachmentLister // nil: out of a cluster, in-memory only
	attacher string
	log      *slog.Logger
	now      func() time.Time
	// onMigrationTimeout is called once per volume that stays on two nodes too long.
	onMigrationTimeout func(volumeID string, nodes []string, since time.Duration)
}

type volumePublications struct {
	nodes            []string  // in publish order
	multiSince       time.Time // when a second node joined
	migrationTimeout time.Duration
	timeoutReported  bool
}

const defaultMigrationTimeout = 300 * time.Second // also for records rebuilt after a restart

const notRebuilt = "attachment records are not rebuilt from the cluster's VolumeAttachments yet (is the API server reachable and may the controller list volumeattachments?); retry shortly"

func newFencing(source attachmentLister, attacher string, log *slog.Logger) *fencing {
	f := &fencing{published: map[string]*volumePublications{}, source: source, attacher: attacher, log: log, now: time.Now}
	if source == nil {
		f.rebuilt = true
		log.Warn("no Kubernetes API configured (not in a cluster and no --kubeconfig): attachment fencing state is in-memory only and starts empty")
	}
	return f
}

// rebuild replaces the records with the cluster's VolumeAttachments. A node holds a volume
// when attached (also while being deleted), or while attaching once this controller has
// confirmed the publish. A merely attaching one holds nothing: kubelet uses a volume only
// once attached, and counting it would let the attachment being decided fence itself in.
func (f *fencing) rebuild(ctx context.Context) error {
	if f.source == nil {
		return nil
	}
	vas, err := f.source.listVolumeAttachments(ctx, f.attacher)
	if err != nil {
		return fmt.Errorf("list VolumeAttachments: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	fresh := map[string]*volumePublications{}
	for _, va := range vas {
		confirmed := f.published[va.PVName] != nil && slices.Contains(f.published[va.PVName].nodes, va.NodeName)
		if va.NodeName == "" || !va.Attached && (va.Deleting || !confirmed) {
			continue
		}
		p := fresh[va.PVName]
		if p == nil {
			p = &volumePublications{}
			fresh[va.PVName] = p
		}
		if !slices.Contains(p.nodes, va.NodeName) {
			p.nodes = append(p.nodes, va.NodeName)
		}
	}
	for id, p := range fresh {
		slices.Sort(p.nodes)
		if old := f.published[id]; old != nil {
			p.migrationTimeout, p.multiSince, p.timeoutReported = old.migrationTimeout, old.multiSince, old.timeoutReported
		}
		if len(p.nodes) > 1 && p.multiSince.IsZero() {
			p.multiSince = f.now()
		}
	}
	f.published = fresh
	if !f.rebuilt {
		f.log.Info("attachment records rebuilt from VolumeAttachments", "volumes", len(fresh))
	}
	f.rebuilt = true
	return nil
}

func (f *fencing) runRebuild(ctx context.Context) {
	for delay := time.Second; ; delay = min(delay*2, 30*time.Second) {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := f.rebuild(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return
		}
		f.log.Warn("cannot rebuild attachment records yet; ControllerPublish answers Unavailable until it works", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
	}
}

// recheck re-reads the cluster's attachments for a volume the records show on holders,
// so a stale record never blocks a legitimate attach or delete.
func (f *fencing) recheck(ctx context.Context, volumeID string, holders []string) error {
	if err := f.rebuild(ctx); err != nil {
		return status.Errorf(codes.Unavailable, "volume %s looks attached to %s; could not confirm with the cluster's VolumeAttachments: %v", volumeID, strings.Join(holders, ", "), err)
	}
	return nil
}

// publish records nodeID for volumeID, or refuses with FailedPrecondition when the access
// mode allows no further node (maxNodes), after a recheck.
func (f *fencing) publish(ctx context.Context, volumeID, nodeID string, maxNodes int, migrationTimeout time.Duration) error {
	err := f.tryPublish(volumeID, nodeID, maxNodes, migrationTimeout)
	var conflict *fencingConflict
	if !errors.As(err, &conflict) || f.source == nil {
		return err
	}
	if err := f.recheck(ctx, volumeID, conflict.holders); err != nil {
		return err
	}
	return f.tryPublish(volumeID, nodeID, maxNodes, migrationTimeout)
}

type fencingConflict struct {
	volumeID string
	holders  []string
	maxNodes int
}

func (c *fencingConflict) Error() string {
	if c.maxNodes == maxNodesSingle {
		return fmt.Sprintf("volume %s is attached to node %s and its access mode allows one node: detach it there first (delete the pod using it, or wait for Kubernetes to detach it), or use volumeMode: Block with ReadWriteMany for KubeVirt live migration", c.volumeID, c.holders[0])
	}
	return fmt.Sprintf("volume %s is attached to nodes %s; a raw block volume may be on at most %d nodes (the source and target of one live migration): let the running migration finish first", c.volumeID, strings.Join(c.holders, " and "), c.maxNodes)
}

func (c *fencingConflict) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, c.Error())
}

func (f *fencing) tryPublish(volumeID, nodeID string, maxNodes int, migrationTimeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.rebuilt {
		return status.Error(codes.Unavailable, notRebuilt)
	}
	p := f.published[volumeID]
	if p == nil {
		p = &volumePublications{}
		f.published[volumeID] = p
	}
	switch {
	case slices.Contains(p.nodes, nodeID):
		return nil
	case len(p.nodes) >= maxNodes:
		return &fencingConflict{volumeID: volumeID, holders: slices.Clone(p.nodes), maxNodes: maxNodes}
	}
	p.nodes = append(p.nodes, nodeID)
	p.migrationTimeout = migrationTimeout
	if len(p.nodes) > 1 {
		p.multiSince, p.timeoutReported = f.now(), false
	}
	return nil
}

func (f *fencing) unpublish(volumeID, nodeID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.published[volumeID]
	if p == nil {
		return
	}
	p.nodes = slices.DeleteFunc(p.nodes, func(n string) bool { return n == nodeID || nodeID == "" })
	if len(p.nodes) < 2 {
		p.multiSince, p.timeoutReported = time.Time{}, false
	}
	if len(p.nodes) == 0 {
		delete(f.published, volumeID)
	}
}

func (f *fencing) nodes(volumeID string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p := f.published[volumeID]; p != nil {
		return slices.Sorted(slices.Values(p.nodes))
	}
	return nil
}

// checkMigrations reports volumes on two nodes longer than their migration timeout. The
// attach is left alone: cutting off a running VM is worse than a long migration.
func (f *fencing) checkMigrations() {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for id, p := range f.published {
		timeout := p.migrationTimeout
		if timeout <= 0 {
			timeout = defaultMigrationTimeout
		}
		since := now.Sub(p.multiSince)
		if len(p.nodes) < 2 || p.timeoutReported || since <= timeout {
			continue
		}
		p.timeoutReported = true
		f.log.Warn("live migration exceeds migrationTimeoutSeconds: the volume is still attached to two nodes",
			"volume_id", id, "nodes", strings.Join(p.nodes, ","), "for", since.Round(time.Second), "timeout", timeout)
		if f.onMigrationTimeout != nil {
			f.onMigrationTimeout(id, slices.Clone(p.nodes), since)
		}
	}
}

func (f *fencing) isRebuilt() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rebuilt
}

// attachedNodes returns the nodes volumeID is attached to, for a delete that must not
// remove a volume in use: Unavailable before the first rebuild, rechecked when attached.
func (f *fencing) attachedNodes(ctx context.Context, volumeID string) ([]string, error) {
	if !f.isRebuilt() {
		return nil, status.Errorf(codes.Unavailable, "cannot confirm that volume %s is detached: %s", volumeID, notRebuilt)
	}
	nodes := f.nodes(volumeID)
	if len(nodes) == 0 || f.source == nil {
		return nodes, nil
	}
	if err := f.recheck(ctx, volumeID, nodes); err != nil {
		return nil, err
	}
	return f.nodes(volumeID), nil
}
