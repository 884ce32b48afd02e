package main

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

// kubeAPI is a tiny read-only Kubernetes API client on net/http and encoding/json: the
// controller only needs to list VolumeAttachments, which does not justify client-go.
type kubeAPI struct {
	server    string
	client    *http.Client
	token     string
	tokenFile string // re-read on every request: projected service-account tokens rotate
}

// errNoKubeAPI means neither a kubeconfig nor an in-cluster service account is available.
var errNoKubeAPI = errors.New("no Kubernetes API configured")

// inClusterPaths are the service-account files a pod gets; a variable so tests can move them.
var inClusterPaths = struct{ dir string }{dir: "/var/run/secrets/kubernetes.io/serviceaccount"}

// newKubeAPI connects through the kubeconfig file when one is given, else through the pod's
// service account, else returns errNoKubeAPI.
func newKubeAPI(kubeconfigPath string, getenv func(string) string) (*kubeAPI, error) {
	if kubeconfigPath != "" {
		b, err := os.ReadFile(kubeconfigPath)
		if err != nil {
			return nil, fmt.Errorf("read kubeconfig: %w", err)
		}
		kc, err := parseKubeconfig(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kubeconfigPath, err)
		}
		return kubeAPIFromConfig(kc, filepath.Dir(kubeconfigPath))
	}
	host, port := getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errNoKubeAPI
	}
	return kubeAPIFromConfig(&kubeconfig{
		Server:    "https://" + net.JoinHostPort(host, port),
		CAFile:    filepath.Join(inClusterPaths.dir, "ca.crt"),
		TokenFile: filepath.Join(inClusterPaths.dir, "token"),
	}, "")
}

func kubeAPIFromConfig(kc *kubeconfig, baseDir string) (*kubeAPI, error) {
	rel := func(p string) string {
		if p != "" && !filepath.IsAbs(p) && baseDir != "" {
			return filepath.Join(baseDir, p)
		}
		return p
	}
	load := func(data, file, what string) ([]byte, error) {
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
		b, err := os.ReadFile(rel(file))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		return b, nil
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: kc.InsecureSkipTLSVerify} //nolint:gosec // only when the kubeconfig says so
	ca, err := load(kc.CAData, kc.CAFile, "certificate authority")
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
	cert, err := load(kc.ClientCertData, kc.ClientCertFile, "client certificate")
	if err != nil {
		return nil, err
	}
	key, err := load(kc.ClientKeyData, kc.ClientKeyFile, "client key")
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
	u, err := url.Parse(kc.Server)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("API server address %q is not a URL", kc.Server)
	}
	transport := &http.Transport{TLSClientConfig: tlsCfg, Proxy: http.ProxyFromEnvironment,
		TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second, IdleConnTimeout: 90 * time.Second}
	return &kubeAPI{server: strings.TrimRight(kc.Server, "/"), client: &http.Client{Transport: transport},
		token: kc.Token, tokenFile: rel(kc.TokenFile)}, nil
}

// get fetches path (with query) and decodes the JSON answer into out.
func (k *kubeAPI) get(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	token := k.token
	if k.tokenFile != "" {
		b, err := os.ReadFile(k.tokenFile)
		if err != nil {
			return fmt.Errorf("read service-account token: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return &kubeStatusError{path: path, code: resp.StatusCode, status: resp.Status, body: strings.TrimSpace(string(body))}
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("GET %s: decode: %w", path, err)
	}
	return nil
}

// kubeStatusError is an API answer other than 200 OK; callers tell 404 from the rest.
type kubeStatusError struct {
	path, status, body string
	code               int
}

func (e *kubeStatusError) Error() string {
	hint := ""
	if e.code == http.StatusForbidden {
		hint = " (the controller's service account needs get and list on volumeattachments and csinodes (storage.k8s.io); see deploy.yaml)"
	}
	return fmt.Sprintf("GET %s: %s: %s%s", e.path, e.status, e.body, hint)
}

func isKubeNotFound(err error) bool {
	var se *kubeStatusError
	return errors.As(err, &se) && se.code == http.StatusNotFound
}

// volumeAttachment is what fencing needs from a storage.k8s.io/v1 VolumeAttachment.
type volumeAttachment struct {
	Name     string
	Attacher string
	NodeName string
	PVName   string
	Attached bool
	Deleting bool
}

type volumeAttachmentList struct {
	Metadata struct {
		Continue string `json:"continue"`
	} `json:"metadata"`
	Items []struct {
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
	} `json:"items"`
}

// listVolumeAttachments returns every VolumeAttachment of the given attacher, following
// the API's pagination.
func (k *kubeAPI) listVolumeAttachments(ctx context.Context, attacher string) ([]volumeAttachment, error) {
	var out []volumeAttachment
	cont := ""
	for {
		q := url.Values{"limit": {"500"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var list volumeAttachmentList
		if err := k.get(ctx, "/apis/storage.k8s.io/v1/volumeattachments?"+q.Encode(), &list); err != nil {
			return nil, err
		}
		for _, it := range list.Items {
			if it.Spec.Attacher != attacher || it.Spec.Source.PersistentVolumeName == nil {
				continue
			}
			out = append(out, volumeAttachment{Name: it.Metadata.Name, Attacher: it.Spec.Attacher, NodeName: it.Spec.NodeName,
				PVName: *it.Spec.Source.PersistentVolumeName, Attached: it.Status.Attached, Deleting: it.Metadata.DeletionTimestamp != nil})
		}
		if cont = list.Metadata.Continue; cont == "" {
			return out, nil
		}
	}
}

// nodeRegistry answers whether a CSI node ID belongs to a node where this driver's node
// plugin is registered (the CSINode objects kubelet keeps).
type nodeRegistry interface {
	nodeRegistered(ctx context.Context, driver, nodeID string) (bool, error)
}

type csiNode struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
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
func (k *kubeAPI) nodeRegistered(ctx context.Context, driver, nodeID string) (bool, error) {
	var n csiNode
	err := k.get(ctx, "/apis/storage.k8s.io/v1/csinodes/"+url.PathEscape(nodeID), &n)
	switch {
	case err == nil && n.lists(driver, nodeID):
		return true, nil
	case err != nil && !isKubeNotFound(err):
		return false, err
	}
	cont := ""
	for {
		q := url.Values{"limit": {"500"}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var list struct {
			Metadata struct {
				Continue string `json:"continue"`
			} `json:"metadata"`
			Items []csiNode `json:"items"`
		}
		if err := k.get(ctx, "/apis/storage.k8s.io/v1/csinodes?"+q.Encode(), &list); err != nil {
			return false, err
		}
		for i := range list.Items {
			if list.Items[i].lists(driver, nodeID) {
				return true, nil
			}
		}
		if cont = list.Metadata.Continue; cont == "" {
			return false, nil
		}
	}
}
