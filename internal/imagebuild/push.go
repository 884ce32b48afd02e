package imagebuild

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// requestTimeout bounds every registry request (a blob upload included).
const requestTimeout = 3 * time.Minute

// Reference is a parsed image reference host/repository:tag.
type Reference struct {
	Host, Repository, Tag string
}

func (r Reference) String() string { return r.Host + "/" + r.Repository + ":" + r.Tag }

// ParseReference reads host/repository:tag. The host is required (no implied Docker Hub).
func ParseReference(s string) (Reference, error) {
	host, rest, ok := strings.Cut(s, "/")
	if !ok || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return Reference{}, fmt.Errorf("image reference %q must start with a registry host (e.g. ghcr.io/owner/rds-csi:v1.0.0)", s)
	}
	repo, tag, ok := strings.Cut(rest, ":")
	if !ok || repo == "" || tag == "" || strings.ContainsAny(tag, "/@") {
		return Reference{}, fmt.Errorf("image reference %q must end in :<tag>", s)
	}
	if repo != strings.ToLower(repo) {
		return Reference{}, fmt.Errorf("image reference %q: repository names are lower case", s)
	}
	return Reference{Host: host, Repository: repo, Tag: tag}, nil
}

// Registry pushes image layouts to a registry through the OCI distribution API.
type Registry struct {
	Client   *http.Client
	User     string // with Password: basic credentials, or what a token service is asked with
	Password string
	// PlainHTTP talks http:// instead of https:// (a local test registry).
	PlainHTTP bool
	Logf      func(format string, args ...any)

	token string // bearer token from the registry's token service
}

func (g *Registry) logf(format string, args ...any) {
	if g.Logf != nil {
		g.Logf(format, args...)
	}
}

// Push uploads the image layout in dir (index.json naming one image index or manifest)
// and tags it ref; it returns the digest the tag now points at.
func (g *Registry) Push(ctx context.Context, dir string, ref Reference) (string, error) {
	read := func(d Descriptor) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, blobPath(d.Digest)))
		if err != nil {
			return nil, err
		}
		if Digest(b) != d.Digest || int64(len(b)) != d.Size {
			return nil, fmt.Errorf("blob %s in %s does not match its descriptor", d.Digest, dir)
		}
		return b, nil
	}
	var layout index
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err == nil {
		err = json.Unmarshal(raw, &layout)
	}
	if err != nil {
		return "", fmt.Errorf("%s is not an OCI image layout: %w", dir, err)
	}
	if len(layout.Manifests) != 1 {
		return "", fmt.Errorf("%s/index.json names %d images, want one", dir, len(layout.Manifests))
	}
	top := layout.Manifests[0]
	topBytes, err := read(top)
	if err != nil {
		return "", err
	}
	var manifests []Descriptor
	switch top.MediaType {
	case MediaTypeIndex:
		var ix index
		if err := json.Unmarshal(topBytes, &ix); err != nil {
			return "", err
		}
		manifests = ix.Manifests
	case MediaTypeManifest:
	default:
		return "", fmt.Errorf("%s: top descriptor has media type %s", dir, top.MediaType)
	}
	for _, md := range manifests {
		mb, err := read(md)
		if err != nil {
			return "", err
		}
		if err := g.pushManifestBlobs(ctx, ref, mb, read); err != nil {
			return "", err
		}
		if err := g.putManifest(ctx, ref, md.Digest, md.MediaType, mb); err != nil {
			return "", err
		}
	}
	if top.MediaType == MediaTypeManifest {
		if err := g.pushManifestBlobs(ctx, ref, topBytes, read); err != nil {
			return "", err
		}
	}
	if err := g.putManifest(ctx, ref, ref.Tag, top.MediaType, topBytes); err != nil {
		return "", err
	}
	return top.Digest, nil
}

// pushManifestBlobs uploads a manifest's config and layers unless the registry has them.
func (g *Registry) pushManifestBlobs(ctx context.Context, ref Reference, manifestBytes []byte, read func(Descriptor) ([]byte, error)) error {
	var m manifest
	if err := json.Unmarshal(manifestBytes, &m); err != nil {
		return err
	}
	for _, d := range append([]Descriptor{m.Config}, m.Layers...) {
		b, err := read(d)
		if err != nil {
			return err
		}
		if err := g.pushBlob(ctx, ref, d.Digest, b); err != nil {
			return err
		}
	}
	return nil
}

func (g *Registry) baseURL(ref Reference) string {
	scheme := "https"
	if g.PlainHTTP {
		scheme = "http"
	}
	return scheme + "://" + ref.Host + "/v2/" + ref.Repository
}

func (g *Registry) pushBlob(ctx context.Context, ref Reference, digest string, b []byte) error {
	resp, err := g.do(ctx, ref, http.MethodHead, g.baseURL(ref)+"/blobs/"+digest, "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK {
		g.logf("blob %s: already in %s", digest, ref.Host)
		return nil
	}
	resp, err = g.do(ctx, ref, http.MethodPost, g.baseURL(ref)+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted {
		return statusError("starting the upload of "+digest, resp)
	}
	loc, err := resp.Location()
	if err != nil {
		return fmt.Errorf("starting the upload of %s: the registry gave no upload location: %w", digest, err)
	}
	q := loc.Query()
	q.Set("digest", digest)
	loc.RawQuery = q.Encode()
	resp, err = g.do(ctx, ref, http.MethodPut, loc.String(), "application/octet-stream", b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError("uploading "+digest, resp)
	}
	g.logf("blob %s: uploaded (%d bytes)", digest, len(b))
	return nil
}

func (g *Registry) putManifest(ctx context.Context, ref Reference, tagOrDigest, mediaType string, b []byte) error {
	resp, err := g.do(ctx, ref, http.MethodPut, g.baseURL(ref)+"/manifests/"+tagOrDigest, mediaType, b)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated {
		return statusError("putting manifest "+tagOrDigest, resp)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != Digest(b) {
		return fmt.Errorf("putting manifest %s: the registry stored digest %s, ours is %s", tagOrDigest, got, Digest(b))
	}
	g.logf("manifest %s: %s", tagOrDigest, Digest(b))
	return nil
}

// response is what the callers need of an answer: its body has been read and closed.
type response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
	request    *http.Request
}

func (r *response) Location() (*url.URL, error) {
	loc := r.Header.Get("Location")
	if loc == "" {
		return nil, errors.New("no Location header")
	}
	return r.request.URL.Parse(loc)
}

func statusError(what string, r *response) error {
	body := strings.TrimSpace(string(r.Body))
	if len(body) > 500 {
		body = body[:500] + "..."
	}
	return fmt.Errorf("%s: %s %s: HTTP %d: %s", what, r.request.Method, r.request.URL.Redacted(), r.StatusCode, body)
}

// do sends one request under its own deadline, answering the registry's authentication
// challenge once (a bearer token from its token service, or basic credentials).
func (g *Registry) do(ctx context.Context, ref Reference, method, u, contentType string, body []byte) (*response, error) {
	for attempt := 0; ; attempt++ {
		resp, err := g.send(ctx, method, u, contentType, body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			if resp.StatusCode == http.StatusUnauthorized {
				return nil, statusError("the registry refused the credentials (set REGISTRY_USER and REGISTRY_PASSWORD)", resp)
			}
			return resp, nil
		}
		if err := g.authenticate(ctx, ref, resp); err != nil {
			return nil, err
		}
	}
}

func (g *Registry) send(ctx context.Context, method, u, contentType string, body []byte) (*response, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.ContentLength = int64(len(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	switch {
	case g.token != "":
		req.Header.Set("Authorization", "Bearer "+g.token)
	case g.User != "":
		req.SetBasicAuth(g.User, g.Password)
	}
	client := g.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, req.URL.Redacted(), err)
	}
	return &response{StatusCode: resp.StatusCode, Header: resp.Header, Body: b, request: req}, nil
}

// authenticate answers a 401: a Bearer challenge names the token service, which is asked
// (with the basic credentials, if any) for a pull,push token on the repository.
func (g *Registry) authenticate(ctx context.Context, ref Reference, challenge *response) error {
	scheme, params := parseChallenge(challenge.Header.Get("WWW-Authenticate"))
	switch strings.ToLower(scheme) {
	case "basic":
		if g.User == "" {
			return statusError("the registry wants credentials (set REGISTRY_USER and REGISTRY_PASSWORD)", challenge)
		}
		return nil // send sets basic auth on the retry
	case "bearer":
	default:
		return statusError("the registry's authentication challenge is not understood", challenge)
	}
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Host == "" {
		return fmt.Errorf("the registry's token realm %q is not a URL", params["realm"])
	}
	q := realm.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	q.Set("scope", "repository:"+ref.Repository+":pull,push")
	realm.RawQuery = q.Encode()
	saved := g.token
	g.token = ""
	resp, err := g.send(ctx, http.MethodGet, realm.String(), "", nil)
	if err != nil {
		g.token = saved
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return statusError("getting a push token (set REGISTRY_USER and REGISTRY_PASSWORD)", resp)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(resp.Body, &tok); err != nil {
		return fmt.Errorf("the token service's answer is not JSON: %w", err)
	}
	if g.token = tok.Token; g.token == "" {
		g.token = tok.AccessToken
	}
	if g.token == "" {
		return errors.New("the token service answered without a token")
	}
	return nil
}

// parseChallenge reads `Bearer realm="...",service="...",scope="..."`.
func parseChallenge(h string) (scheme string, params map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params = map[string]string{}
	for rest != "" {
		var kv string
		rest = strings.TrimLeft(rest, " ,")
		key, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		if strings.HasPrefix(after, `"`) {
			end := strings.Index(after[1:], `"`)
			if end < 0 {
				break
			}
			kv, rest = after[1:1+end], after[2+end:]
		} else {
			kv, rest, _ = strings.Cut(after, ",")
		}
		params[strings.ToLower(strings.TrimSpace(key))] = kv
	}
	return scheme, params
}
