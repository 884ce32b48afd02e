package kube

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const testToken = "s3cret"

// startAPI serves handler over TLS to requests that carry testToken or a verified client
// certificate (see kubeconfig_test.go); everything else is refused with 403.
func startAPI(t *testing.T, handler http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken && len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, `{"kind":"Status","reason":"Forbidden"}`, http.StatusForbidden)
			return
		}
		handler(w, r)
	}))
	srv.TLS = clientCertTLS(t)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func caPEM(srv *httptest.Server) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// clientFor returns a client for srv through a kubeconfig with the test token.
func clientFor(t *testing.T, srv *httptest.Server) *Client {
	t.Helper()
	c, err := New(writeKubeconfig(t, t.TempDir(), obj{"server": srv.URL, "certificate-authority-data": b64(caPEM(srv))}, obj{"token": testToken}), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func noEnv(string) string { return "" }

// In a pod the client reads the service account's CA and token, and re-reads the token on
// every request: projected tokens rotate.
func TestInClusterServiceAccountAndTokenRotation(t *testing.T) {
	srv := startAPI(t, func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"name":"ok"}`) })
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.crt"), caPEM(srv))
	writeFile(t, filepath.Join(dir, "token"), []byte("old\n"))
	saved := serviceAccountDir
	serviceAccountDir = dir
	t.Cleanup(func() { serviceAccountDir = saved })
	host, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "https://"), ":")
	c, err := New("", func(k string) string {
		return map[string]string{"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Get[struct{}](context.Background(), c, "/x"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("stale token: got %v, want 403", err)
	}
	writeFile(t, filepath.Join(dir, "token"), []byte(testToken+"\n"))
	got, err := Get[struct{ Name string }](context.Background(), c, "/x")
	if err != nil || got.Name != "ok" {
		t.Fatalf("after rotation: %+v, %v", got, err)
	}
	if err := os.Remove(filepath.Join(dir, "token")); err != nil {
		t.Fatal(err)
	}
	if _, err := Get[struct{}](context.Background(), c, "/x"); err == nil || !strings.Contains(err.Error(), "read service-account token") {
		t.Fatalf("token gone: got %v", err)
	}
}

func TestNotConfiguredOutsideACluster(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"no environment": nil,
		"host only":      {"KUBERNETES_SERVICE_HOST": "10.0.0.1"},
		"port only":      {"KUBERNETES_SERVICE_PORT": "443"},
	} {
		if _, err := New("", func(k string) string { return env[k] }); !errors.Is(err, ErrNotConfigured) {
			t.Errorf("%s: got %v, want ErrNotConfigured", name, err)
		}
	}
}

// List follows metadata.continue across pages, asking for bounded pages, and fails as a
// whole when any page fails.
func TestListFollowsContinue(t *testing.T) {
	pages := map[string]string{ // continue token → answer
		"":   `{"metadata":{"continue":"p2"},"items":[{"n":1},{"n":2}]}`,
		"p2": `{"metadata":{"continue":"p3"},"items":[{"n":3}]}`,
		"p3": `{"metadata":{},"items":[{"n":4},{"n":5}]}`,
	}
	var mu sync.Mutex
	var seen []string
	srv := startAPI(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		q := r.URL.Query()
		seen = append(seen, r.URL.Path+" limit="+q.Get("limit")+" continue="+q.Get("continue"))
		page, ok := pages[q.Get("continue")]
		if !ok {
			http.Error(w, `{"kind":"Status","reason":"Expired"}`, http.StatusGone)
			return
		}
		fmt.Fprint(w, page)
	})
	c := clientFor(t, srv)
	type item struct{ N int }
	got, err := List[item](context.Background(), c, "/apis/g/v1/things")
	if err != nil {
		t.Fatal(err)
	}
	if want := []item{{1}, {2}, {3}, {4}, {5}}; !reflect.DeepEqual(got, want) {
		t.Errorf("items %v, want %v", got, want)
	}
	wantSeen := []string{"/apis/g/v1/things limit=500 continue=", "/apis/g/v1/things limit=500 continue=p2", "/apis/g/v1/things limit=500 continue=p3"}
	if !reflect.DeepEqual(seen, wantSeen) {
		t.Errorf("requests %q, want %q", seen, wantSeen)
	}

	mu.Lock()
	delete(pages, "p3") // the continue token expired
	mu.Unlock()
	if got, err := List[item](context.Background(), c, "/apis/g/v1/things"); err == nil || got != nil || !strings.Contains(err.Error(), "410") {
		t.Errorf("failing last page: got %v, %v; want no items and the 410", got, err)
	}
}

func TestGetErrors(t *testing.T) {
	srv := startAPI(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.Error(w, `{"kind":"Status","reason":"NotFound"}`, http.StatusNotFound)
		case "/broken":
			http.Error(w, strings.Repeat("x", 2000), http.StatusInternalServerError)
		case "/garbage":
			fmt.Fprint(w, "not json")
		}
	})
	c := clientFor(t, srv)
	tests := []struct {
		path, want string
		notFound   bool
	}{
		{"/missing", `GET /missing: 404 Not Found: {"kind":"Status","reason":"NotFound"}`, true},
		{"/broken", "GET /broken: 500 Internal Server Error: " + strings.Repeat("x", 512), false},
		{"/garbage", "GET /garbage: decode: ", false},
	}
	for _, tc := range tests {
		_, err := Get[struct{}](context.Background(), c, tc.path)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), strings.Repeat("x", 513)) {
			t.Errorf("%s: got %v, want %q", tc.path, err, tc.want)
		}
		if IsNotFound(err) != tc.notFound || IsNotFound(fmt.Errorf("wrapped: %w", err)) != tc.notFound {
			t.Errorf("%s: IsNotFound = %v, want %v", tc.path, IsNotFound(err), tc.notFound)
		}
	}
	if IsNotFound(nil) {
		t.Error("IsNotFound(nil)")
	}
	refused := clientFor(t, srv)
	refused.token = "wrong"
	_, err := Get[struct{}](context.Background(), refused, "/missing")
	var se *StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden || IsNotFound(err) {
		t.Errorf("forbidden: got %#v, want a *StatusError with code 403", err)
	}
}

// A hung API server holds a caller no longer than the caller's deadline.
func TestDeadline(t *testing.T) {
	hung := make(chan struct{})
	srv := startAPI(t, func(w http.ResponseWriter, r *http.Request) { <-hung })
	t.Cleanup(func() { close(hung) }) // before the server closes, which waits for handlers
	c := clientFor(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := List[struct{}](ctx, c, "/hang")
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("got %v after %v, want the deadline", err, time.Since(start))
	}
}
