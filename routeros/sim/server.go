package sim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// ServerConfig is the SSH side of a simulator.
type ServerConfig struct {
	HostKey        ssh.Signer
	AuthorizedKeys []ssh.PublicKey // any user name is accepted with one of these keys
}

// servers tracks listeners and connections so Close can stop them all.
type servers struct {
	mu        sync.Mutex
	closed    bool
	refusing  bool // rebooting: connections are closed as soon as accepted
	listeners map[net.Listener]struct{}
	conns     map[net.Conn]struct{}
	wg        sync.WaitGroup
}

func (sv *servers) track(c net.Conn) bool {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	if sv.closed || sv.refusing {
		return false
	}
	if sv.conns == nil {
		sv.conns = map[net.Conn]struct{}{}
	}
	sv.conns[c] = struct{}{}
	sv.wg.Add(1)
	return true
}

func (sv *servers) untrack(c net.Conn) {
	sv.mu.Lock()
	delete(sv.conns, c)
	sv.mu.Unlock()
	sv.wg.Done()
}

// closeAll stops everything; it reports false when already closed.
func (sv *servers) closeAll() bool {
	sv.mu.Lock()
	if sv.closed {
		sv.mu.Unlock()
		return false
	}
	sv.closed = true
	for l := range sv.listeners {
		l.Close()
	}
	for c := range sv.conns {
		c.Close()
	}
	sv.mu.Unlock()
	sv.wg.Wait()
	return true
}

// dropAll closes every connection and, while refusing, closes new ones at once: the
// network side of a reboot.
func (sv *servers) dropAll(refuse bool) {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	sv.refusing = refuse
	if refuse {
		for c := range sv.conns {
			c.Close()
		}
	}
}

// handshakeTimeout bounds a client that connects and never finishes SSH negotiation.
const handshakeTimeout = 10 * time.Second

// sessionGrace is how long a channel open waits for a slot at the session limit: a client
// that just closed a channel may open the next one before this side has seen the close.
const sessionGrace = 50 * time.Millisecond

// Serve accepts SSH connections on ln until Close, then returns nil (it closes ln). Like
// RouterOS it runs one command per exec channel, refuses PTYs and shells, and never answers
// keepalive@openssh.com.
func (s *Sim) Serve(ln net.Listener, cfg ServerConfig) error {
	if cfg.HostKey == nil {
		return errors.New("sim: ServerConfig.HostKey is nil")
	}
	conf := &ssh.ServerConfig{
		ServerVersion: "SSH-2.0-ROSSSH",
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range cfg.AuthorizedKeys {
				if bytes.Equal(k.Marshal(), key.Marshal()) {
					return &ssh.Permissions{}, nil
				}
			}
			return nil, fmt.Errorf("key %s is not authorized for %q", ssh.FingerprintSHA256(key), meta.User())
		},
	}
	conf.AddHostKey(cfg.HostKey)
	s.srv.mu.Lock()
	if s.srv.closed {
		s.srv.mu.Unlock()
		ln.Close()
		return nil
	}
	if s.srv.listeners == nil {
		s.srv.listeners = map[net.Listener]struct{}{}
	}
	s.srv.listeners[ln] = struct{}{}
	s.srv.mu.Unlock()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.srv.mu.Lock()
			closed := s.srv.closed
			delete(s.srv.listeners, ln)
			s.srv.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("sim: accept: %w", err)
		}
		if !s.srv.track(nc) {
			nc.Close()
			continue
		}
		go func() {
			defer s.srv.untrack(nc)
			s.serveConn(nc, conf)
		}()
	}
}

// conn is one SSH connection: its console width and its exec channel slots.
type conn struct {
	nc     net.Conn
	width  int
	ctx    context.Context
	mu     sync.Mutex
	active int
	peak   int
}

func (s *Sim) serveConn(nc net.Conn, conf *ssh.ServerConfig) {
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
	sc, chans, reqs, err := ssh.NewServerConn(nc, conf)
	if err != nil {
		s.logf("rds-sim: %s: handshake: %v", nc.RemoteAddr(), err)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &conn{nc: nc, width: consoleWidth(sc.User(), s.opts.Width), ctx: ctx}
	s.faults.update(func(st *Stats) { st.Connections++ })
	s.logf("rds-sim: %s: connected as %q", nc.RemoteAddr(), sc.User())
	go func() {
		for r := range reqs {
			// RouterOS does not answer keepalive@openssh.com at all: a client that waits for
			// the reply waits forever, which is why liveness must be probed with a session.
			if r.Type == "keepalive@openssh.com" {
				continue
			}
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}()
	var wg sync.WaitGroup
	for nch := range chans {
		if nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.UnknownChannelType, "only session channels")
			continue
		}
		if !s.acquire(c) {
			s.faults.update(func(st *Stats) { st.Rejected++ })
			_ = nch.Reject(ssh.ResourceShortage, "too many sessions")
			continue
		}
		ch, creqs, err := nch.Accept()
		if err != nil {
			s.release(c)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.session(c, ch, creqs)
		}()
	}
	cancel()
	wg.Wait()
	s.logf("rds-sim: %s: disconnected", nc.RemoteAddr())
}

// consoleWidth honours RouterOS login suffixes: `admin+c512w` asks for width 512
// (whether the hardware applies it over exec is unverified; the client must parse any width).
func consoleWidth(user string, def int) int {
	_, suffix, ok := strings.Cut(user, "+")
	if !ok {
		return def
	}
	num := ""
	for _, r := range suffix {
		switch {
		case r >= '0' && r <= '9':
			num += string(r)
		case r == 'w' && num != "":
			if n, err := strconv.Atoi(num); err == nil && n > 0 {
				def = n
			}
			num = ""
		default:
			num = ""
		}
	}
	return def
}

func (s *Sim) acquire(c *conn) bool {
	deadline := time.Now().Add(sessionGrace)
	for {
		limit := s.faults.sessionLimit()
		c.mu.Lock()
		if limit <= 0 || c.active < limit {
			c.active++
			c.peak = max(c.peak, c.active)
			peak := c.peak
			c.mu.Unlock()
			s.faults.update(func(st *Stats) {
				st.Sessions++
				st.Active++
				st.PeakConcurrency = max(st.PeakConcurrency, peak)
			})
			return true
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (s *Sim) release(c *conn) {
	c.mu.Lock()
	c.active--
	c.mu.Unlock()
	s.faults.update(func(st *Stats) { st.Active-- })
}

// session serves one exec channel: one command, its output, its exit status, close.
func (s *Sim) session(c *conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { s.release(c) }) }
	defer release()
	execs := make(chan string, 1)
	go func() {
		// The request channel closes when the client closes the channel (or the
		// connection goes): that cancels a command still waiting or running.
		defer cancel()
		gotExec := false
		for r := range reqs {
			if r.Type == "exec" && !gotExec {
				var payload struct{ Command string }
				if err := ssh.Unmarshal(r.Payload, &payload); err != nil {
					_ = r.Reply(false, nil)
					continue
				}
				gotExec = true
				_ = r.Reply(true, nil)
				execs <- payload.Command
				continue
			}
			// pty-req, shell, subsystem, env, a second exec: RouterOS over exec has none.
			if r.WantReply {
				_ = r.Reply(false, nil)
			}
		}
	}()
	var cmd string
	select {
	case cmd = <-execs:
	case <-ctx.Done():
		ch.Close()
		return
	}
	p := s.faults.admit(cmd)
	s.logf("rds-sim: %s: %s", c.nc.RemoteAddr(), cmd)
	if err := p.wait(ctx); err != nil {
		ch.Close()
		return
	}
	if p.drop != nil && p.drop.at == DropBeforeRun {
		c.nc.Close()
		return
	}
	out, err := s.execLine(ctx, cmd, c.width)
	if p.drop != nil {
		c.nc.Close()
		return
	}
	var cliErr *cliError
	if err != nil && !errors.As(err, &cliErr) {
		ch.Close() // the client went away mid-command
		return
	}
	_, _ = ch.Write([]byte(s.lineEndings(out)))
	status := 0
	if cliErr != nil {
		stream, code := s.faults.errorOutput()
		msg := []byte(s.lineEndings(cliErr.msg + "\n"))
		if stream == Stderr {
			_, _ = ch.Stderr().Write(msg)
		} else {
			_, _ = ch.Write(msg)
		}
		status = code
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
	release() // before the close reaches the client, so its next channel finds the slot free
	_ = ch.CloseWrite()
	ch.Close()
}
