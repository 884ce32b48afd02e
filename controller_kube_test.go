package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeKube is an API server serving VolumeAttachments and CSINodes from memory, over TLS
// with a bearer token, for the controller's read-only Kubernetes reader.
type fakeKube struct {
	mu       sync.Mutex
	vas      []string          // VolumeAttachment JSON objects
	csiNodes map[string]string // CSINode name → the node ID our driver registered there
	down     bool              // answer 503 to everything
	requests []string
	srv      *httptest.Server
}

const fakeKubeToken = "t0ken"

func startFakeKube(t testing.TB) *fakeKube {
	t.Helper()
	k := &fakeKube{csiNodes: map[string]string{}}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(k.serve))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKube) serve(w http.ResponseWriter, r *http.Request) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.requests = append(k.requests, r.URL.Path)
	switch {
	case r.Header.Get("Authorization") != "Bearer "+fakeKubeToken:
		http.Error(w, `{"kind":"Status","message":"forbidden"}`, http.StatusForbidden)
	case k.down:
		http.Error(w, `{"kind":"Status","message":"etcd is down"}`, http.StatusServiceUnavailable)
	case r.URL.Path == "/apis/storage.k8s.io/v1/volumeattachments":
		fmt.Fprintf(w, `{"metadata":{},"items":[%s]}`, strings.Join(k.vas, ","))
	case r.URL.Path == "/apis/storage.k8s.io/v1/csinodes":
		var items []string
		for name, id := range k.csiNodes {
			items = append(items, csiNodeJSON(name, id))
		}
		fmt.Fprintf(w, `{"metadata":{},"items":[%s]}`, strings.Join(items, ","))
	case strings.HasPrefix(r.URL.Path, "/apis/storage.k8s.io/v1/csinodes/"):
		name := strings.TrimPrefix(r.URL.Path, "/apis/storage.k8s.io/v1/csinodes/")
		id, ok := k.csiNodes[name]
		if !ok {
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
			return
		}
		fmt.Fprint(w, csiNodeJSON(name, id))
	default:
		http.NotFound(w, r)
	}
}

func csiNodeJSON(name, nodeID string) string {
	return fmt.Sprintf(`{"metadata":{"name":%q},"spec":{"drivers":[{"name":"other.csi.io","nodeID":"x"},{"name":%q,"nodeID":%q,"topologyKeys":null}]}}`,
		name, defaultDriverName, nodeID)
}

func (k *fakeKube) setAttachments(vas ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.vas = vas
}

func (k *fakeKube) setDown(down bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.down = down
}

func (k *fakeKube) addNode(name, nodeID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.csiNodes[name] = nodeID
}

// kubeconfigFile writes a kubeconfig for the server, as --kubeconfig would name it.
func (k *fakeKube) kubeconfigFile(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(kitKubeconfig, k.srv.URL, writeCA(t, k.srv, dir), fakeKubeToken)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// api returns the reader, configured through a kubeconfig file.
func (k *fakeKube) api(t testing.TB) *kubeAPI {
	t.Helper()
	api, err := newKubeAPI(k.kubeconfigFile(t), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	return api
}
