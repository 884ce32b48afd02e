package main

import (
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseYAMLSubset(t *testing.T) {
	tests := []struct {
		name string
		src  string
		want any
	}{
		{"block mapping", "a: 1\nb: two\nc: \"x: y\"\n", map[string]any{"a": int64(1), "b": "two", "c": "x: y"}},
		{"nested", "a:\n  b:\n    c: d\n", map[string]any{"a": map[string]any{"b": map[string]any{"c": "d"}}}},
		{"sequence of mappings", "l:\n- name: x\n  v: 1\n- name: y\n", map[string]any{"l": []any{map[string]any{"name": "x", "v": int64(1)}, map[string]any{"name": "y"}}}},
		{"indented sequence", "l:\n  - a\n  - 'b''c'\n", map[string]any{"l": []any{"a", "b'c"}}},
		{"flow mapping", `c: {server: "https://h:6443", certificate-authority: /p/ca.crt, n: [1, 2]}`,
			map[string]any{"c": map[string]any{"server": "https://h:6443", "certificate-authority": "/p/ca.crt", "n": []any{int64(1), int64(2)}}}},
		{"comments and document marker", "---\n# c\na: b # trailing\nu: http://x#y\n", map[string]any{"a": "b", "u": "http://x#y"}},
		{"json", `{"a": {"b": [true]}}`, map[string]any{"a": map[string]any{"b": []any{true}}}},
		{"null and bools", "a:\nb: true\nc: ~\n", map[string]any{"a": nil, "b": true, "c": nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseYAMLSubset(tc.src)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v\nwant %#v", got, tc.want)
			}
		})
	}
	for _, bad := range []string{"a: 1\n   b: 2\n", "a: [1, 2\n", "a: \"open\n", "- a\nb: c\n"} {
		if _, err := parseYAMLSubset(bad); err == nil {
			t.Errorf("parseYAMLSubset(%q) accepted malformed input", bad)
		}
	}
}

// The kube-node kit writes exactly this shape (flow mappings).
const kitKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: kube-node
  cluster: {server: "%s", certificate-authority: "%s"}
users:
- name: "admin"
  user: {token: "%s"}
contexts:
- name: kube-node
  context: {cluster: kube-node, user: "admin"}
current-context: kube-node
`

func vaJSON(name, attacher, node, pv string, attached, deleting bool) string {
	del := ""
	if deleting {
		del = `,"deletionTimestamp":"2026-01-01T00:00:00Z"`
	}
	return fmt.Sprintf(`{"metadata":{"name":%q%s},"spec":{"attacher":%q,"nodeName":%q,"source":{"persistentVolumeName":%q}},"status":{"attached":%v}}`,
		name, del, attacher, node, pv, attached)
}

func fakeAPIServer(t *testing.T, token string) *httptest.Server {
	t.Helper()
	pages := []string{
		`{"metadata":{"continue":"page2"},"items":[` + vaJSON("va1", defaultDriverName, "node-a", "pvc-1", true, false) + "," +
			vaJSON("va-other", "other.csi.io", "node-a", "pvc-x", true, false) + `]}`,
		`{"metadata":{},"items":[` + vaJSON("va2", defaultDriverName, "node-b", "pvc-2", false, true) + `]}`,
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"kind":"Status","message":"forbidden"}`, http.StatusForbidden)
			return
		}
		if r.URL.Path != "/apis/storage.k8s.io/v1/volumeattachments" || r.URL.Query().Get("limit") == "" {
			http.NotFound(w, r)
			return
		}
		page := 0
		if r.URL.Query().Get("continue") == "page2" {
			page = 1
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, pages[page])
	}))
	t.Cleanup(srv.Close)
	return srv
}

func writeCA(t testing.TB, srv *httptest.Server, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "ca.crt")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestListVolumeAttachmentsThroughKubeconfig(t *testing.T) {
	srv := fakeAPIServer(t, "s3cret")
	dir := t.TempDir()
	kcPath := filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(kcPath, []byte(fmt.Sprintf(kitKubeconfig, srv.URL, writeCA(t, srv, dir), "s3cret")), 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := newKubeAPI(kcPath, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := api.listVolumeAttachments(context.Background(), defaultDriverName)
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

func TestInClusterServiceAccountAndTokenRotation(t *testing.T) {
	srv := fakeAPIServer(t, "rotated")
	dir := t.TempDir()
	writeCA(t, srv, dir)
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	saved := inClusterPaths.dir
	inClusterPaths.dir = dir
	defer func() { inClusterPaths.dir = saved }()
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "https://"), ":")
	api, err := newKubeAPI("", envOf(map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = api.listVolumeAttachments(context.Background(), defaultDriverName)
	if err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "volumeattachments") {
		t.Fatalf("stale token: got %v, want a 403 that names the missing permission", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("rotated\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := api.listVolumeAttachments(context.Background(), defaultDriverName); err != nil || len(got) != 2 {
		t.Fatalf("after rotation: %v, %v", got, err)
	}
}

func TestNoKubeAPIOutsideACluster(t *testing.T) {
	if _, err := newKubeAPI("", envOf(nil)); err != errNoKubeAPI {
		t.Fatalf("got %v, want errNoKubeAPI", err)
	}
}

func TestKubeconfigErrors(t *testing.T) {
	tests := []struct{ name, src, want string }{
		{"no context", "clusters: []\n", "no current-context"},
		{"missing cluster", "current-context: c\ncontexts:\n- name: c\n  context: {cluster: x}\n", `cluster "x" not found`},
		{"exec plugin", "current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\nclusters:\n- name: k\n  cluster: {server: https://h}\nusers:\n- name: u\n  user:\n    exec: {command: aws}\n", "exec credential plugins"},
	}
	for _, tc := range tests {
		if _, err := parseKubeconfig(tc.src); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestKubeNodeRegistered(t *testing.T) {
	kube := startFakeKube(t)
	kube.addNode("worker-1", "worker-1")
	kube.addNode("worker-2", "custom-id")
	api := kube.api(t)
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
	if got, _ := api.nodeRegistered(context.Background(), "other.csi.io", "worker-1"); got {
		t.Error("another driver's registration counted")
	}
	api.token, api.tokenFile = "wrong", ""
	_, err := api.nodeRegistered(context.Background(), defaultDriverName, "worker-1")
	if err == nil || !strings.Contains(err.Error(), "csinodes") || !strings.Contains(err.Error(), "403") {
		t.Errorf("forbidden: got %v, want an error naming the missing csinodes permission", err)
	}
}
