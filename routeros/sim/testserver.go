package sim

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// TestServer is a simulator serving SSH on a random 127.0.0.1 port for another package's
// tests, with fresh keys in the test's temporary directory.
type TestServer struct {
	*Sim
	Addr           string     // host:port
	User           string     // any user is accepted; this is RouterOS's usual one
	KeyFile        string     // the client's OpenSSH private key
	KnownHostsFile string     // a known_hosts line for Addr and the host key
	Signer         ssh.Signer // the client key, for in-memory use
	HostKey        ssh.PublicKey
}

// StartTest starts a simulator for t and stops it when t ends. opts.Dir defaults to a
// directory under t.TempDir().
func StartTest(t testing.TB, opts Options) *TestServer {
	t.Helper()
	tmp := t.TempDir()
	if opts.Dir == "" {
		opts.Dir = filepath.Join(tmp, "rds")
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	clientKey, clientPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &TestServer{
		Sim:            s,
		Addr:           ln.Addr().String(),
		User:           "admin",
		KeyFile:        filepath.Join(tmp, "id_ed25519"),
		KnownHostsFile: filepath.Join(tmp, "known_hosts"),
		Signer:         clientKey,
		HostKey:        hostKey.PublicKey(),
	}
	if err := os.WriteFile(ts.KeyFile, clientPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(ts.Addr)}, ts.HostKey) + "\n"
	if err := os.WriteFile(ts.KnownHostsFile, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.Serve(ln, ServerConfig{HostKey: hostKey, AuthorizedKeys: []ssh.PublicKey{clientKey.PublicKey()}})
	}()
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("sim: close: %v", err)
		}
		if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("sim: serve: %v", err)
		}
	})
	return ts
}

// ClientConfig returns an SSH client configuration that authenticates with the test key
// and checks the host key.
func (ts *TestServer) ClientConfig() *ssh.ClientConfig {
	return &ssh.ClientConfig{
		User:            ts.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(ts.Signer)},
		HostKeyCallback: ssh.FixedHostKey(ts.HostKey),
		Timeout:         5 * time.Second,
	}
}
