package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"srvlab.io/rds-csi/kube"
)

// fakeKube is an API server serving VolumeAttachments and CSINodes from memory, over TLS
// with a bearer token, for the controller's reads of the cluster.
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

func vaJSON(name, attacher, node, pv string, attached, deleting bool) string {
	del := ""
	if deleting {
		del = `,"deletionTimestamp":"2026-01-01T00:00:00Z"`
	}
	return fmt.Sprintf(`{"metadata":{"name":%q%s},"spec":{"attacher":%q,"nodeName":%q,"source":{"persistentVolumeName":%q}},"status":{"attached":%v}}`,
		name, del, attacher, node, pv, attached)
}

// kubeconfigFile writes a kubeconfig for the server as --kubeconfig takes it: JSON, as
// kubectl config view --raw --minify --flatten -o json prints it.
func (k *fakeKube) kubeconfigFile(t testing.TB) string {
	return k.kubeconfigWithToken(t, fakeKubeToken)
}

func (k *fakeKube) kubeconfigWithToken(t testing.TB, token string) string {
	t.Helper()
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: k.srv.Certificate().Raw})
	type obj = map[string]any
	b, err := json.Marshal(obj{
		"kind": "Config", "apiVersion": "v1", "current-context": "fake",
		"clusters": []obj{{"name": "fake", "cluster": obj{"server": k.srv.URL, "certificate-authority-data": base64.StdEncoding.EncodeToString(ca)}}},
		"users":    []obj{{"name": "admin", "user": obj{"token": token}}},
		"contexts": []obj{{"name": "fake", "context": obj{"cluster": "fake", "user": "admin"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// api returns the controller's view of the cluster, configured through a kubeconfig file.
func (k *fakeKube) api(t testing.TB) kubeCluster { return k.apiWithToken(t, fakeKubeToken) }

func (k *fakeKube) apiWithToken(t testing.TB, token string) kubeCluster {
	t.Helper()
	api, err := kube.New(k.kubeconfigWithToken(t, token), envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	return kubeCluster{api}
}

func TestListVolumeAttachmentsOfOurAttacher(t *testing.T) {
	fake := startFakeKube(t)
	inline := `{"metadata":{"name":"va-inline"},"spec":{"attacher":"` + defaultDriverName + `","nodeName":"node-a","source":{"inlineVolumeSpec":{}}},"status":{"attached":true}}`
	fake.setAttachments(vaJSON("va1", defaultDriverName, "node-a", "pvc-1", true, false),
		vaJSON("va-other", "other.csi.io", "node-a", "pvc-x", true, false),
		inline,
		vaJSON("va2", defaultDriverName, "node-b", "pvc-2", false, true))
	got, err := fake.api(t).listVolumeAttachments(context.Background(), defaultDriverName)
	if err != nil {
		t.Fatal(err)
	}
	want := []volumeAttachment{
		{Name: "va1", Attacher: defaultDriverName, NodeName: "node-a", PVName: "pvc-1", Attached: true},
		{Name: "va2", Attacher: defaultDriverName, NodeName: "node-b", PVName: "pvc-2", Deleting: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestKubeNodeRegistered(t *testing.T) {
	fake := startFakeKube(t)
	fake.addNode("worker-1", "worker-1")
	fake.addNode("worker-2", "custom-id")
	api := fake.api(t)
	tests := []struct {
		nodeID string
		want   bool
	}{
		{"worker-1", true},  // CSINode named like the node ID
		{"custom-id", true}, // found by listing
		{"worker-2", false}, // the CSINode exists, but our driver registered another ID there
		{"absent", false},
	}
	for _, tc := range tests {
		got, err := api.nodeRegistered(context.Background(), defaultDriverName, tc.nodeID)
		if err != nil || got != tc.want {
			t.Errorf("nodeRegistered(%q) = %v, %v; want %v", tc.nodeID, got, err, tc.want)
		}
	}
	// The usual case, node ID = node name, takes one GET, not a list of every CSINode.
	fake.mu.Lock()
	fake.requests = nil
	fake.mu.Unlock()
	if ok, err := api.nodeRegistered(context.Background(), defaultDriverName, "worker-1"); !ok || err != nil {
		t.Fatalf("worker-1: %v, %v", ok, err)
	}
	fake.mu.Lock()
	requests := fake.requests
	fake.mu.Unlock()
	if want := []string{csiNodesPath + "/worker-1"}; !reflect.DeepEqual(requests, want) {
		t.Errorf("requests %q, want %q", requests, want)
	}
	if got, _ := api.nodeRegistered(context.Background(), "other.csi.io", "worker-1"); got {
		t.Error("another driver's registration counted")
	}
}

// A refusal names the permissions the controller's service account lacks.
func TestKubeForbiddenNamesThePermissions(t *testing.T) {
	fake := startFakeKube(t)
	api := fake.apiWithToken(t, "wrong")
	_, vaErr := api.listVolumeAttachments(context.Background(), defaultDriverName)
	_, nodeErr := api.nodeRegistered(context.Background(), defaultDriverName, "worker-1")
	for what, err := range map[string]error{"volumeattachments": vaErr, "csinodes": nodeErr} {
		if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "needs get and list on volumeattachments and csinodes") {
			t.Errorf("%s: got %v, want a 403 that names the missing permissions", what, err)
		}
	}
	down := fake.api(t)
	fake.setDown(true)
	if _, err := down.listVolumeAttachments(context.Background(), defaultDriverName); err == nil || strings.Contains(err.Error(), "needs get and list") {
		t.Errorf("503: got %v, want an error without the permission hint", err)
	}
}
