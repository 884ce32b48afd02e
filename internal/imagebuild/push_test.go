package imagebuild

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeRegistry is the part of the OCI distribution API a push uses, behind a token
// service like ghcr.io's: every /v2/ request without the token gets a Bearer challenge.
type fakeRegistry struct {
	mu        sync.Mutex
	blobs     map[string][]byte
	manifests map[string][]byte // by tag and by digest
	types     map[string]string
	uploads   int
	user      string
	srv       *httptest.Server
}

const fakeToken = "tok-123"

func newFakeRegistry(t *testing.T) *fakeRegistry {
	r := &fakeRegistry{blobs: map[string][]byte{}, manifests: map[string][]byte{}, types: map[string]string{}, user: "bot"}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *fakeRegistry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.URL.Path == "/token" {
		u, p, ok := req.BasicAuth()
		if !ok || u != r.user || p != "secret" || req.URL.Query().Get("scope") != "repository:srvlab/rds-csi:pull,push" {
			http.Error(w, "bad credentials or scope", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, `{"token":%q}`, fakeToken)
		return
	}
	if req.Header.Get("Authorization") != "Bearer "+fakeToken {
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="fake",scope="repository:srvlab/rds-csi:pull"`, r.srv.URL))
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		return
	}
	const prefix = "/v2/srvlab/rds-csi/"
	rest, ok := strings.CutPrefix(req.URL.Path, prefix)
	if !ok {
		http.NotFound(w, req)
		return
	}
	body, _ := io.ReadAll(req.Body)
	switch {
	case req.Method == http.MethodHead && strings.HasPrefix(rest, "blobs/"):
		if _, ok := r.blobs[strings.TrimPrefix(rest, "blobs/")]; !ok {
			w.WriteHeader(http.StatusNotFound)
		}
	case req.Method == http.MethodPost && rest == "blobs/uploads/":
		r.uploads++
		w.Header().Set("Location", fmt.Sprintf("/v2/srvlab/rds-csi/blobs/uploads/u%d?state=x", r.uploads))
		w.WriteHeader(http.StatusAccepted)
	case req.Method == http.MethodPut && strings.HasPrefix(rest, "blobs/uploads/"):
		d := req.URL.Query().Get("digest")
		if req.URL.Query().Get("state") != "x" || Digest(body) != d {
			http.Error(w, "digest mismatch or lost upload state", http.StatusBadRequest)
			return
		}
		r.blobs[d] = body
		w.WriteHeader(http.StatusCreated)
	case req.Method == http.MethodPut && strings.HasPrefix(rest, "manifests/"):
		ref := strings.TrimPrefix(rest, "manifests/")
		// A registry refuses a manifest whose blobs it lacks.
		for d := range r.referencedBlobs(body) {
			if _, ok := r.blobs[d]; !ok {
				if _, ok := r.manifests[d]; !ok {
					http.Error(w, "MANIFEST_BLOB_UNKNOWN "+d, http.StatusBadRequest)
					return
				}
			}
		}
		r.manifests[ref], r.manifests[Digest(body)] = body, body
		r.types[ref] = req.Header.Get("Content-Type")
		w.Header().Set("Docker-Content-Digest", Digest(body))
		w.WriteHeader(http.StatusCreated)
	default:
		http.Error(w, "unexpected "+req.Method+" "+req.URL.Path, http.StatusMethodNotAllowed)
	}
}

func (r *fakeRegistry) referencedBlobs(b []byte) map[string]bool {
	out := map[string]bool{}
	s := string(b)
	for {
		i := strings.Index(s, `"digest":"`)
		if i < 0 {
			return out
		}
		s = s[i+len(`"digest":"`):]
		out[s[:strings.Index(s, `"`)]] = true
	}
}

func TestPushUploadsEveryBlobAndTagsTheIndex(t *testing.T) {
	reg := newFakeRegistry(t)
	dir := filepath.Join(t.TempDir(), "oci")
	images := testImages(t)
	top, err := WriteLayout(dir, "v1.2.3", images)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(reg.srv.URL)
	ref, err := ParseReference(u.Host + "/srvlab/rds-csi:v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	client := &Registry{User: "bot", Password: "secret", PlainHTTP: true}
	got, err := client.Push(context.Background(), dir, ref)
	if err != nil {
		t.Fatal(err)
	}
	if got != top.Digest {
		t.Errorf("Push returned %s, the layout's index is %s", got, top.Digest)
	}
	if Digest(reg.manifests["v1.2.3"]) != top.Digest || reg.types["v1.2.3"] != MediaTypeIndex {
		t.Errorf("tag v1.2.3 points at %s (%s), want the index %s", Digest(reg.manifests["v1.2.3"]), reg.types["v1.2.3"], top.Digest)
	}
	for _, im := range images {
		if reg.manifests[im.Desc.Digest] == nil {
			t.Errorf("%s manifest not pushed", im.Arch.Name)
		}
		for _, d := range []string{Digest(im.Config), Digest(im.Layer.Gzip)} {
			if reg.blobs[d] == nil {
				t.Errorf("%s blob %s not pushed", im.Arch.Name, d)
			}
		}
	}
	uploads := reg.uploads
	// A second push finds every blob and uploads none.
	if _, err := (&Registry{User: "bot", Password: "secret", PlainHTTP: true}).Push(context.Background(), dir, ref); err != nil {
		t.Fatal(err)
	}
	if reg.uploads != uploads {
		t.Errorf("the second push uploaded %d blobs the registry had", reg.uploads-uploads)
	}

	// Wrong credentials: the token service's refusal, with what to set.
	_, err = (&Registry{User: "bot", Password: "wrong", PlainHTTP: true}).Push(context.Background(), dir, ref)
	if err == nil || !strings.Contains(err.Error(), "REGISTRY_USER") || !strings.Contains(err.Error(), "HTTP 401") {
		t.Errorf("push with a wrong password: %v", err)
	}
}

func TestParseReference(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: "ghcr.io/srvlab/rds-csi:v0.1.0", want: "ghcr.io|srvlab/rds-csi|v0.1.0"},
		{in: "localhost:5000/rds-csi:dev", want: "localhost:5000|rds-csi|dev"},
		{in: "srvlab/rds-csi:v1", err: "registry host"},
		{in: "ghcr.io/srvlab/rds-csi", err: ":<tag>"},
		{in: "ghcr.io/SrvLab/rds-csi:v1", err: "lower case"},
	} {
		r, err := ParseReference(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseReference(%q): %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if got := r.Host + "|" + r.Repository + "|" + r.Tag; err != nil || got != tc.want {
			t.Errorf("ParseReference(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestParseChallenge(t *testing.T) {
	scheme, p := parseChallenge(`Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull"`)
	if scheme != "Bearer" || p["realm"] != "https://ghcr.io/token" || p["service"] != "ghcr.io" || p["scope"] != "repository:a/b:pull" {
		t.Errorf("parsed %s %v", scheme, p)
	}
	if scheme, p := parseChallenge(`Basic realm="registry"`); scheme != "Basic" || p["realm"] != "registry" {
		t.Errorf("parsed %s %v", scheme, p)
	}
}

func TestParseDepends(t *testing.T) {
	got := parseDepends("libc6 (>= 2.34), libblkid1 (>= 2.36), python3:any, libfoo | libbar, logsave")
	want := []string{"libc6", "libblkid1", "python3", "libfoo", "logsave"}
	if !equalStrings(got, want) {
		t.Errorf("parseDepends = %v, want %v", got, want)
	}
}
