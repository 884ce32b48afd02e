package routeros_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// countingListener accepts TCP connections and hangs up at once, counting them: an RDS
// that is up on TCP but never speaks SSH.
type countingListener struct {
	port int
	mu   sync.Mutex
	n    int
}

func newCountingListener(t *testing.T) *countingListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	cl := &countingListener{port: ln.Addr().(*net.TCPAddr).Port}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			cl.mu.Lock()
			cl.n++
			cl.mu.Unlock()
			conn.Close()
		}
	}()
	return cl
}

func (cl *countingListener) accepted() int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.n
}

func testSigner(t testing.TB) ssh.Signer {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rewriteKnownHosts copies a known_hosts file, listing its key for another address.
func rewriteKnownHosts(t testing.TB, file, from, host string, port int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	to := knownhosts.Normalize(net.JoinHostPort(host, strconv.Itoa(port)))
	out := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(out, []byte(strings.ReplaceAll(string(b), knownhosts.Normalize(from), to)), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// newSilentListener accepts TCP connections and never says anything; it returns its port.
func newSilentListener(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
