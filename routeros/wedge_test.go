package routeros

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// The simulator always acknowledges a closed session (x/crypto/ssh does so by itself), so
// a wedged RDS needs this minimal server: a command containing "wedge" makes it stop
// reading its socket, as a hung appliance does, until the client hangs up.

type wedgeServer struct {
	port   int
	conns  atomic.Int32
	wedged chan struct{} // closed when the first wedge command arrived
	once   sync.Once
}

func startWedgeServer(t *testing.T) *wedgeServer {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostKey, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	conf := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	conf.AddHostKey(hostKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ws := &wedgeServer{port: ln.Addr().(*net.TCPAddr).Port, wedged: make(chan struct{})}
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			ws.conns.Add(1)
			go ws.serve(&freezableConn{Conn: nc, stop: stop}, conf)
		}
	}()
	return ws
}

func (ws *wedgeServer) serve(fc *freezableConn, conf *ssh.ServerConfig) {
	defer fc.Close()
	_, chans, reqs, err := ssh.NewServerConn(fc, conf)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nch := range chans {
		ch, creqs, err := nch.Accept()
		if err != nil {
			return
		}
		go func() {
			for r := range creqs {
				if r.Type != "exec" {
					_ = r.Reply(false, nil)
					continue
				}
				cmd := string(r.Payload[4:])
				_ = r.Reply(true, nil)
				if strings.Contains(cmd, "wedge") {
					fc.frozen.Store(true)
					ws.once.Do(func() { close(ws.wedged) })
					return
				}
				_, _ = ch.Write([]byte("7.24.4 (stable)\n"))
				_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				ch.Close()
			}
		}()
	}
}

// freezableConn stops delivering what the client sends once frozen.
type freezableConn struct {
	net.Conn
	frozen atomic.Bool
	stop   chan struct{}
}

func (c *freezableConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.frozen.Load() {
		<-c.stop // a hung appliance: what arrived is never processed
		return 0, net.ErrClosed
	}
	return n, err
}

func wedgeClient(t *testing.T, ws *wedgeServer) *Client {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	c, err := New(Config{Address: "127.0.0.1", Port: ws.port, User: "admin", Signer: signer,
		InsecureSkipHostKey: true, DialTimeout: 300 * time.Millisecond, RedialBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestWedgedSessionReplacesConnection: a command abandoned at its deadline whose session the
// RDS never closes costs the connection (after abandonGrace), not the next caller.
func TestWedgedSessionReplacesConnection(t *testing.T) {
	defer func(g time.Duration) { abandonGrace = g }(abandonGrace)
	abandonGrace = 200 * time.Millisecond
	ws := startWedgeServer(t)
	c := wedgeClient(t, ws)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.GetDisk(ctx, "wedge"); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > time.Second {
		t.Fatalf("wedged command: %v after %v", err, time.Since(start))
	}
	for deadline := time.Now().Add(3 * time.Second); c.connected() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if c.connected() {
		t.Fatal("the wedged connection was kept")
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if v, err := c.Version(ctx2); err != nil || v != "7.24.4 (stable)" {
		t.Fatalf("after the wedge: %q, %v", v, err)
	}
	if n := ws.conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2", n)
	}
}

// TestStalledSessionOpen: when the RDS stops answering, a new session open gives up after
// DialTimeout with ErrTransport, and the connection is replaced.
func TestStalledSessionOpen(t *testing.T) {
	ws := startWedgeServer(t)
	c := wedgeClient(t, ws)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	wedgedErr := make(chan error, 1)
	go func() { _, err := c.GetDisk(ctx, "wedge"); wedgedErr <- err }()
	select {
	case <-ws.wedged:
	case <-ctx.Done():
		t.Fatal("the wedge command never arrived")
	}
	start := time.Now()
	_, err := c.Version(ctx)
	if !errors.Is(err, ErrTransport) || time.Since(start) > 3*time.Second {
		t.Errorf("command on a stalled connection: %v after %v, want ErrTransport after ~300ms", err, time.Since(start))
	}
	if err := <-wedgedErr; !errors.Is(err, ErrTransport) {
		t.Errorf("the wedged command: %v, want ErrTransport once the connection is replaced", err)
	}
	if v, err := c.Version(ctx); err != nil || v == "" {
		t.Errorf("after redial: %q, %v", v, err)
	}
}
