package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
)

// kubeconfigCommand prints a kubeconfig the way this package reads it: JSON (so the binary
// needs no YAML parser), only the current context, certificates inlined.
const kubeconfigCommand = "kubectl config view --raw --minify --flatten -o json"

// namedEntry is an entry of any of the three lists: its name and, depending on the list,
// a cluster, a context or a user.
type namedEntry struct {
	Name    string  `json:"name"`
	Cluster cluster `json:"cluster"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
	User user `json:"user"`
}

// cluster is where the API server is. A *-data field holds a file's content in base64 and
// wins over the file's name.
type cluster struct {
	Server                   string `json:"server"`
	CertificateAuthority     string `json:"certificate-authority"`
	CertificateAuthorityData string `json:"certificate-authority-data"`
	InsecureSkipTLSVerify    bool   `json:"insecure-skip-tls-verify"`
}

// user is how the client proves who it is.
type user struct {
	Token                 string          `json:"token"`
	TokenFile             string          `json:"tokenFile"`
	ClientCertificate     string          `json:"client-certificate"`
	ClientCertificateData string          `json:"client-certificate-data"`
	ClientKey             string          `json:"client-key"`
	ClientKeyData         string          `json:"client-key-data"`
	Exec                  json.RawMessage `json:"exec"`
}

// parseKubeconfig reads the current context of a JSON kubeconfig; relative file names in
// it are taken relative to dir, the kubeconfig's directory, as kubectl does.
func parseKubeconfig(src []byte, dir string) (cluster, user, error) {
	fail := func(err error) (cluster, user, error) { return cluster{}, user{}, err }
	if t := bytes.TrimSpace(src); len(t) == 0 || t[0] != '{' {
		return fail(errors.New("kubeconfig is not JSON; write one with: " + kubeconfigCommand))
	}
	var kc struct {
		CurrentContext            string `json:"current-context"`
		Clusters, Contexts, Users []namedEntry
	}
	if err := json.Unmarshal(src, &kc); err != nil {
		return fail(fmt.Errorf("JSON kubeconfig: %w", err))
	}
	if kc.CurrentContext == "" {
		return fail(errors.New("kubeconfig has no current-context"))
	}
	ctx, err := find(kc.Contexts, "context", kc.CurrentContext)
	if err != nil {
		return fail(err)
	}
	cl, err := find(kc.Clusters, "cluster", ctx.Context.Cluster)
	if err != nil {
		return fail(err)
	}
	us := &namedEntry{}
	if ctx.Context.User != "" {
		if us, err = find(kc.Users, "user", ctx.Context.User); err != nil {
			return fail(err)
		}
	}
	c, u := cl.Cluster, us.User
	if c.Server == "" {
		return fail(errors.New("kubeconfig: the current context's cluster has no server"))
	}
	if len(u.Exec) > 0 {
		return fail(errors.New("kubeconfig: exec credential plugins are not supported; use a token or client certificate"))
	}
	for _, p := range []*string{&c.CertificateAuthority, &u.TokenFile, &u.ClientCertificate, &u.ClientKey} {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	return c, u, nil
}

func find(list []namedEntry, kind, name string) (*namedEntry, error) {
	for i := range list {
		if list[i].Name == name {
			return &list[i], nil
		}
	}
	return nil, fmt.Errorf("kubeconfig: %s %q not found", kind, name)
}
