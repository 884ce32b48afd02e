package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"srvlab.io/rds-csi/kube"
)

// The controller asks the cluster two things, read through the kube client: where this
// driver's attacher has volumes attached (fencing's truth), and whether a node ID belongs to
// a registered node plugin (a clearer publish error). The object shapes below hold only the
// fields those answers need.

const (
	volumeAttachmentsPath = "/apis/storage.k8s.io/v1/volumeattachments"
	csiNodesPath          = "/apis/storage.k8s.io/v1/csinodes"
)

// kubeCluster answers both questions from the Kubernetes API.
type kubeCluster struct{ api *kube.Client }

// volumeAttachment is what fencing needs from a storage.k8s.io/v1 VolumeAttachment.
type volumeAttachment struct {
	Name     string
	Attacher string
	NodeName string
	PVName   string
	Attached bool
	Deleting bool
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

// listVolumeAttachments returns every VolumeAttachment of the given attacher that attaches
// a PersistentVolume (the only kind this driver publishes).
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

// nodeRegistry answers whether a CSI node ID belongs to a node where this driver's node
// plugin is registered (the CSINode objects kubelet keeps).
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

// nodeRegistered looks the node ID up among the CSINode objects: first the one named like
// it (the node plugin's ID is the node name), then, in case a node plugin was given
// another --node-id, all of them.
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
