package kube

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type obj = map[string]any

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// writeKubeconfig writes, into dir, a kubeconfig of one context as kubectl config view
// --raw --minify -o json prints it.
func writeKubeconfig(t *testing.T, dir string, cluster, user obj) string {
	t.Helper()
	b, err := json.Marshal(obj{
		"kind": "Config", "apiVersion": "v1", "preferences": obj{}, "current-context": "c",
		"clusters": []obj{{"name": "k", "cluster": cluster}},
		"contexts": []obj{{"name": "c", "context": obj{"cluster": "k", "user": "u"}}},
		"users":    []obj{{"name": "u", "user": user}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(dir, "kubeconfig-*")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// testClientCert is a self-signed client certificate, made once.
var testClientCert = sync.OnceValues(func() (certPEM, keyPEM []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
})

// clientCertTLS makes a server accept testClientCert in place of a token.
func clientCertTLS(t *testing.T) *tls.Config {
	t.Helper()
	certPEM, _ := testClientCert()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatal("test client certificate")
	}
	return &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
}

// Every way a kubeconfig can name the server's CA and the user's credentials; file names
// are relative to the kubeconfig's directory, never to the working directory.
func TestKubeconfigCredentials(t *testing.T) {
	srv := startAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{}`))
	})
	certPEM, keyPEM := testClientCert()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "ca.crt"), caPEM(srv))
	writeFile(t, filepath.Join(dir, "token"), []byte(testToken+"\n"))
	writeFile(t, filepath.Join(dir, "client.crt"), certPEM)
	writeFile(t, filepath.Join(dir, "client.key"), keyPEM)
	caData := obj{"server": srv.URL, "certificate-authority-data": b64(caPEM(srv))}
	tests := []struct {
		name          string
		cluster, user obj
		wantErr       string
	}{
		{"token, CA data (as --flatten writes it)", caData, obj{"token": testToken}, ""},
		{"token file, CA file, relative", obj{"server": srv.URL + "/", "certificate-authority": "ca.crt"}, obj{"tokenFile": "token"}, ""},
		{"absolute CA file", obj{"server": srv.URL, "certificate-authority": filepath.Join(dir, "ca.crt")}, obj{"token": testToken}, ""},
		{"client certificate data", caData, obj{"client-certificate-data": b64(certPEM), "client-key-data": b64(keyPEM)}, ""},
		{"client certificate files, relative", caData, obj{"client-certificate": "client.crt", "client-key": "client.key"}, ""},
		{"insecure-skip-tls-verify", obj{"server": srv.URL, "insecure-skip-tls-verify": true}, obj{"token": testToken}, ""},
		{"no CA: the server's certificate is not trusted", obj{"server": srv.URL}, obj{"token": testToken}, "certificate"},
		{"no credentials", caData, obj{}, "403"},
		{"wrong token", caData, obj{"token": "wrong"}, "403"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(writeKubeconfig(t, dir, tc.cluster, tc.user), noEnv)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Get[struct{}](context.Background(), c, "/api")
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestKubeconfigRefused(t *testing.T) {
	certPEM, _ := testClientCert()
	server := obj{"server": "https://h:6443"}
	dir := t.TempDir()
	kubeconfig := func(cluster, user obj) string {
		b, err := os.ReadFile(writeKubeconfig(t, dir, cluster, user))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tests := []struct{ name, src, want string }{
		{"YAML", "apiVersion: v1\nkind: Config\ncurrent-context: c\n", "kubeconfig is not JSON; write one with: kubectl config view --raw --minify --flatten -o json"},
		{"empty", "", "kubeconfig is not JSON; write one with: kubectl config view --raw --minify --flatten -o json"},
		{"broken JSON", `{"current-context": `, "JSON kubeconfig: unexpected end"},
		{"wrong type", `{"current-context": 1}`, "JSON kubeconfig: json: cannot unmarshal number"},
		{"no context", `{"clusters": []}`, "kubeconfig has no current-context"},
		{"missing context", `{"current-context": "x"}`, `kubeconfig: context "x" not found`},
		{"missing cluster", `{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "x"}}]}`, `kubeconfig: cluster "x" not found`},
		{"missing user", `{"current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k", "user": "x"}}], "clusters": [{"name": "k", "cluster": {"server": "https://h"}}]}`, `kubeconfig: user "x" not found`},
		{"no server", kubeconfig(obj{}, obj{}), "the current context's cluster has no server"},
		{"exec plugin", kubeconfig(server, obj{"exec": obj{"command": "aws"}}), "exec credential plugins are not supported"},
		{"server not a URL", kubeconfig(obj{"server": "h:6443"}, obj{}), `API server address "h:6443" is not a URL`},
		{"CA data not base64", kubeconfig(obj{"server": "https://h", "certificate-authority-data": "%%"}, obj{}), "certificate authority data is not base64"},
		{"CA not PEM", kubeconfig(obj{"server": "https://h", "certificate-authority-data": b64([]byte("junk"))}, obj{}), "certificate authority holds no PEM certificate"},
		{"CA file missing", kubeconfig(obj{"server": "https://h", "certificate-authority": "nope.crt"}, obj{}), "read certificate authority: open " + filepath.Join(dir, "nope.crt")},
		{"certificate without key", kubeconfig(server, obj{"client-certificate-data": b64(certPEM)}), "client certificate: tls:"},
		{"exec plugin, null", kubeconfig(server, obj{"exec": nil}), "exec credential plugins are not supported"},
		{"client key file missing", kubeconfig(server, obj{"client-key": "nope.key"}), "read client key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "kubeconfig")
			writeFile(t, path, []byte(tc.src))
			_, err := New(path, noEnv)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := New(filepath.Join(dir, "absent"), noEnv); err == nil || !strings.HasPrefix(err.Error(), "read kubeconfig: ") {
		t.Errorf("absent file: got %v", err)
	}
	// Parse errors name the file.
	path := filepath.Join(dir, "kubeconfig")
	writeFile(t, path, []byte("apiVersion: v1\n"))
	if _, err := New(path, noEnv); err == nil || !strings.HasPrefix(err.Error(), path+": ") {
		t.Errorf("got %v, want the file named first", err)
	}
}
