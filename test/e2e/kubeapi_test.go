//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// clusterAPI is the little of the Kubernetes API the controller reads, as a cluster would
// answer it: the CSINode objects kubelet keeps for each node whose node plugin registered
// (a node ID nobody registered is NotFound to ControllerPublish), and the VolumeAttachments
// the controller rebuilds its fencing records from (none: no controller restarts here).
type clusterAPI struct {
	mu    sync.Mutex
	nodes map[string]bool
	srv   *http.Server
	url   string
}

func startClusterAPI(t *testing.T) *clusterAPI {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &clusterAPI{nodes: map[string]bool{}, url: "http://" + ln.Addr().String()}
	c.srv = &http.Server{Handler: http.HandlerFunc(c.serve)}
	go func() { _ = c.srv.Serve(ln) }()
	t.Cleanup(func() { c.srv.Close() })
	return c
}

// register is what node-driver-registrar and kubelet do when a node plugin starts.
func (c *clusterAPI) register(nodeID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nodes[nodeID] = true
}

type object = map[string]any

func csiNodeObject(nodeID string) object {
	return object{"metadata": object{"name": nodeID},
		"spec": object{"drivers": []object{{"name": driverName, "nodeID": nodeID}}}}
}

func (c *clusterAPI) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	const csiNodes = "/apis/storage.k8s.io/v1/csinodes"
	var reply object
	switch p := r.URL.Path; {
	case p == "/apis/storage.k8s.io/v1/volumeattachments":
		reply = object{"metadata": object{}, "items": []object{}}
	case p == csiNodes:
		items := []object{}
		for id := range c.nodes {
			items = append(items, csiNodeObject(id))
		}
		reply = object{"metadata": object{}, "items": items}
	case strings.HasPrefix(p, csiNodes+"/") && c.nodes[strings.TrimPrefix(p, csiNodes+"/")]:
		reply = csiNodeObject(strings.TrimPrefix(p, csiNodes+"/"))
	default:
		w.WriteHeader(http.StatusNotFound)
		reply = object{"kind": "Status", "reason": "NotFound", "code": 404}
	}
	_ = json.NewEncoder(w).Encode(reply)
}

// kubeconfig writes a kubeconfig for the API as --kubeconfig takes it: JSON, the shape
// kubectl config view --raw --minify --flatten -o json prints.
func (c *clusterAPI) kubeconfig(t *testing.T, dir string) string {
	path := filepath.Join(dir, "kubeconfig")
	writeFile(t, path, fmt.Sprintf(`{"apiVersion": "v1", "kind": "Config", "current-context": "e2e",
  "clusters": [{"name": "e2e", "cluster": {"server": %q}}],
  "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "e2e"}}],
  "users": [{"name": "e2e", "user": {"token": "e2e"}}]}
`, c.url))
	return path
}
