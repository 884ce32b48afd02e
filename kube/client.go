// Package kube is a tiny read-only Kubernetes API client on net/http and encoding/json: the
// driver only gets and lists a few objects, which does not justify client-go. It reaches
// the API through the pod's service account, or off-cluster through a JSON kubeconfig.
package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Client reads from one API server.
type Client struct {
	server    string
	http      *http.Client
	token     string
	tokenFile string // re-read on every request: projected service-account tokens rotate
}

// ErrNotConfigured means neither a kubeconfig nor an in-cluster service account is available.
var ErrNotConfigured = errors.New("no Kubernetes API configured")

// serviceAccountDir holds the files a pod gets; a variable so tests can move it.
var serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// New connects through the kubeconfig file when one is given, else through the pod's
// service account (KUBERNETES_SERVICE_HOST and _PORT in getenv), else returns
// ErrNotConfigured.
func New(kubeconfigPath string, getenv func(string) string) (*Client, error) {
	if kubeconfigPath != "" {
		b, err := os.ReadFile(kubeconfigPath)
		if err != nil {
			return nil, fmt.Errorf("read kubeconfig: %w", err)
		}
		c, u, err := parseKubeconfig(b, filepath.Dir(kubeconfigPath))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kubeconfigPath, err)
		}
		return newClient(c, u)
	}
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, ErrNotConfigured
	}
	return newClient(
		cluster{Server: "https://" + net.JoinHostPort(host, port), CertificateAuthority: filepath.Join(serviceAccountDir, "ca.crt")},
		user{TokenFile: filepath.Join(serviceAccountDir, "token")})
}

func newClient(c cluster, u user) (*Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipTLSVerify} //nolint:gosec // only when the kubeconfig says so
	ca, err := load(c.CertificateAuthorityData, c.CertificateAuthority, "certificate authority")
	if err != nil {
		return nil, err
	}
	if ca != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return nil, errors.New("certificate authority holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	}
	cert, err := load(u.ClientCertificateData, u.ClientCertificate, "client certificate")
	if err != nil {
		return nil, err
	}
	key, err := load(u.ClientKeyData, u.ClientKey, "client key")
	if err != nil {
		return nil, err
	}
	if cert != nil || key != nil {
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		tlsCfg.Certificates = []tls.Certificate{pair}
	}
	if addr, err := url.Parse(c.Server); err != nil || addr.Host == "" {
		return nil, fmt.Errorf("API server address %q is not a URL", c.Server)
	}
	// Bounded handshakes and answers: a hung API server must not hold a caller without a
	// deadline of its own forever.
	transport := &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment,
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second}
	return &Client{server: strings.TrimRight(c.Server, "/"), http: &http.Client{Transport: transport},
		token: u.Token, tokenFile: u.TokenFile}, nil
}

// load returns the base64 data if set, else the file's content, else nil.
func load(data, file, what string) ([]byte, error) {
	if data != "" {
		b, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return nil, fmt.Errorf("%s data is not base64: %w", what, err)
		}
		return b, nil
	}
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return b, nil
}

// Get fetches one object, e.g. "/apis/storage.k8s.io/v1/csinodes/NAME".
func Get[T any](ctx context.Context, c *Client, path string) (T, error) {
	var out T
	err := c.get(ctx, path, &out)
	return out, err
}

// List fetches every item of a collection, e.g. "/apis/storage.k8s.io/v1/volumeattachments",
// page by page (following metadata.continue) so one answer stays small in a large cluster.
func List[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	var items []T
	query := url.Values{"limit": {"500"}}
	for {
		var page struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []T `json:"items"`
		}
		if err := c.get(ctx, path+"?"+query.Encode(), &page); err != nil {
			return nil, err
		}
		items = append(items, page.Items...)
		if page.Metadata.Continue == "" {
			return items, nil
		}
		query.Set("continue", page.Metadata.Continue)
	}
}

// get fetches path (with query) and decodes the JSON answer into out.
func (c *Client) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	token := c.token
	if c.tokenFile != "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return fmt.Errorf("read service-account token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &StatusError{Path: path, Code: resp.StatusCode, Status: resp.Status, Body: strings.TrimSpace(string(body))}
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("GET %s: decode: %w", path, err)
	}
	return nil
}

// StatusError is an API answer other than 200 OK.
type StatusError struct {
	Path   string // with the query
	Code   int
	Status string // e.g. "404 Not Found"
	Body   string // the start of the answer, usually a Status object
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("GET %s: %s: %s", e.Path, e.Status, e.Body)
}

// IsNotFound tells whether err is the API's 404.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}
