// Package routeros is rds-csi's control plane: typed operations on a MikroTik ROSE Data
// Server (RDS) over SSH with the RouterOS CLI (exactly the commands of docs/routeros-cli.md,
// the contract with routeros/sim), and a parser for what RouterOS prints (the hardware facts
// are in reference/routeros-rds.md). It knows nothing of CSI. Every value sent is checked
// against an allow-list and then quoted, so nothing from a request can reach `[ ]`, `$`, `;`
// or a newline; what the RDS reports is read back after every change.
package routeros

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Config configures a Client.
type Config struct {
	Address string     // host name or IP of the RDS
	Port    int        // SSH port; default 22
	User    string     // RouterOS user (a `+ct` suffix turns colours and terminal detection off)
	KeyFile string     // private key (PEM or OpenSSH format, unencrypted); or Signer
	Signer  ssh.Signer // an in-memory key; exclusive with KeyFile
	// Exactly one: the host key is checked against KnownHostsFile, or, as an explicit
	// opt-in, not at all.
	KnownHostsFile      string
	InsecureSkipHostKey bool
	DialTimeout         time.Duration // TCP connect plus SSH handshake; default 10s
	// MaxSessions bounds concurrent exec sessions (a real RDS stalled with 19); default 4.
	// Further commands queue in FIFO order.
	MaxSessions  int
	AllowedBases []string // if set, the only directories paths may lie below (see ValidatePath)
	// RedialBackoff is the pause after a failed dial, doubling up to MaxRedialBackoff;
	// defaults 1s and 30s. The first dial after a broken connection is immediate.
	RedialBackoff, MaxRedialBackoff time.Duration
	// CommandTimeout, if positive, bounds each operation (one method call) within the
	// caller's context. CopyFile is exempt: a large copy takes as long as it takes.
	CommandTimeout time.Duration
	Logger         *slog.Logger
	// Observe, if set, is called once per operation with its name (the method's, e.g.
	// "GetDisk"), duration and outcome: the hook for metrics and health.
	Observe func(op string, d time.Duration, err error)
}

// Client runs typed RouterOS operations over one persistent SSH connection. It dials on
// first use and again, with backoff, after the connection breaks. Safe for concurrent use.
type Client struct {
	cfg      Config
	addr     string
	sshCfg   *ssh.ClientConfig
	log      *slog.Logger
	sessions *fifoSemaphore
	life     context.Context // ends at Close: aborts a dial in progress
	stop     context.CancelFunc

	mu       sync.Mutex
	conn     *connection   // nil while not connected
	dialing  chan struct{} // closed when the dial in progress ends; nil when none runs
	closed   bool
	dialErr  error     // why the last dial failed
	nextDial time.Time // no dial before this (backoff after a failure)
	backoff  time.Duration

	// noNQNArg is set once the RDS rejected nvme-tcp-server-nqn (RouterOS < 7.21); it is
	// forgotten on reconnect, since an upgrade needs a reboot.
	noNQNArg atomic.Bool
}

// connection is one SSH connection; dead is closed once it is gone.
type connection struct {
	*ssh.Client
	dead chan struct{}
}

// New validates cfg and loads the key. It does not dial: the first operation does.
func New(cfg Config) (*Client, error) {
	switch {
	case cfg.Address == "":
		return nil, errors.New("routeros: Config.Address is empty: give the RDS host name or IP")
	case cfg.User == "":
		return nil, errors.New("routeros: Config.User is empty: give the RouterOS user the driver logs in as")
	case cfg.Port < 0 || cfg.Port > 65535:
		return nil, fmt.Errorf("routeros: Config.Port %d is not a TCP port", cfg.Port)
	}
	cfg.Port = cmp.Or(cfg.Port, 22)
	cfg.DialTimeout = positiveOr(cfg.DialTimeout, 10*time.Second)
	cfg.MaxSessions = positiveOr(cfg.MaxSessions, 4)
	cfg.RedialBackoff = positiveOr(cfg.RedialBackoff, time.Second)
	if cfg.MaxRedialBackoff < cfg.RedialBackoff {
		cfg.MaxRedialBackoff = max(30*time.Second, cfg.RedialBackoff)
	}
	for _, b := range cfg.AllowedBases {
		if err := validateCleanPath(b); err != nil {
			return nil, fmt.Errorf("routeros: Config.AllowedBases: %w", err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	signer, err := loadSigner(cfg)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(cfg.Address, strconv.Itoa(cfg.Port))
	sshCfg := &ssh.ClientConfig{User: cfg.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, Timeout: cfg.DialTimeout}
	switch {
	case cfg.KnownHostsFile != "" && cfg.InsecureSkipHostKey:
		return nil, errors.New("routeros: both KnownHostsFile and InsecureSkipHostKey are set: choose one")
	case cfg.KnownHostsFile != "":
		cb, err := knownhosts.New(cfg.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("routeros: read known_hosts %s: %w", cfg.KnownHostsFile, err)
		}
		sshCfg.HostKeyCallback = cb
		// Offer only the key types known_hosts holds for this host: otherwise the server
		// may present another type and the check fails with "key mismatch".
		if sshCfg.HostKeyAlgorithms, err = knownHostAlgorithms(cb, addr); err != nil {
			return nil, fmt.Errorf("routeros: %s: %w", cfg.KnownHostsFile, err)
		}
	case cfg.InsecureSkipHostKey:
		sshCfg.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	default:
		return nil, errors.New("routeros: no host key check configured: set KnownHostsFile (recommended) or, explicitly, InsecureSkipHostKey")
	}
	life, stop := context.WithCancel(context.Background())
	return &Client{cfg: cfg, addr: addr, sshCfg: sshCfg, log: cfg.Logger, sessions: &fifoSemaphore{free: cfg.MaxSessions},
		life: life, stop: stop, backoff: cfg.RedialBackoff}, nil
}

func positiveOr[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func loadSigner(cfg Config) (ssh.Signer, error) {
	switch {
	case cfg.Signer != nil && cfg.KeyFile != "":
		return nil, errors.New("routeros: both KeyFile and Signer are set: choose one")
	case cfg.Signer != nil:
		return cfg.Signer, nil
	case cfg.KeyFile == "":
		return nil, errors.New("routeros: no SSH key: set Config.KeyFile to the private key the RDS user accepts")
	}
	pem, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("routeros: read SSH key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	switch {
	case errors.As(err, new(*ssh.PassphraseMissingError)):
		return nil, fmt.Errorf("routeros: SSH key %s is passphrase-protected: give an unencrypted key (it is read from a Secret)", cfg.KeyFile)
	case err != nil:
		return nil, fmt.Errorf("routeros: parse SSH key %s: %w", cfg.KeyFile, err)
	}
	return signer, nil
}

// knownHostAlgorithms lists the host key algorithms known_hosts accepts for addr, by asking
// the callback about a key it cannot know (only the host name is matched when one is given,
// so the remote address is a placeholder).
func knownHostAlgorithms(cb ssh.HostKeyCallback, addr string) ([]string, error) {
	var ke *knownhosts.KeyError
	if err := cb(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey{}); !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil, fmt.Errorf("no host key for %s: add the RDS's key (ssh-keyscan -p PORT HOST)", addr)
	}
	var algos []string
	for _, k := range ke.Want {
		names := []string{k.Key.Type()}
		if k.Key.Type() == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, n := range names {
			if !slices.Contains(algos, n) {
				algos = append(algos, n)
			}
		}
	}
	return algos, nil
}

// probeKey is a public key no known_hosts file lists.
type probeKey struct{}

func (probeKey) Type() string                        { return "rds-csi-probe" }
func (probeKey) Marshal() []byte                     { return []byte("rds-csi-probe") }
func (probeKey) Verify([]byte, *ssh.Signature) error { return errors.New("probe key") }

// Close closes the connection; operations after it fail with ErrTransport.
func (c *Client) Close() error {
	c.mu.Lock()
	conn := c.conn
	c.closed, c.conn = true, nil
	c.mu.Unlock()
	c.stop()
	if conn != nil {
		return conn.Close()
	}
	return nil
}

// Ping checks liveness by opening and closing a session (RouterOS does not answer
// keepalive@openssh.com, so that is never sent). It dials when not connected.
func (c *Client) Ping(ctx context.Context) error {
	_, err := do(c, ctx, "Ping", nil, func(o call) (string, error) { return o.run("") })
	return err
}

// call is one operation in progress: its context (with CommandTimeout) and name.
type call struct {
	*Client
	ctx context.Context
	op  string
}

// do runs operation op: f under the operation's context (with CommandTimeout), unless
// the arguments were refused (bad); Observe hears the outcome either way.
func do[T any](c *Client, ctx context.Context, op string, bad error, f func(o call) (T, error)) (v T, err error) {
	start := time.Now()
	if c.cfg.Observe != nil {
		defer func() { c.cfg.Observe(op, time.Since(start), err) }()
	}
	if bad != nil {
		return v, bad
	}
	if c.cfg.CommandTimeout > 0 && op != "CopyFile" { // exempt: see Config.CommandTimeout
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CommandTimeout)
		defer cancel()
	}
	return f(call{c, ctx, op})
}

// connect returns the connection, dialling if there is none. One dial runs at a time; the
// others wait for it. After a failed dial, callers fail fast until the backoff has passed.
func (o call) connect() (*connection, error) {
	c := o.Client
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, transportError(errors.New("client closed"))
		case c.conn != nil:
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		case c.dialing == nil && time.Now().Before(c.nextDial):
			err := fmt.Errorf("connect to %s: %w (next attempt in %v)", c.addr, c.dialErr, time.Until(c.nextDial).Round(time.Millisecond))
			c.mu.Unlock()
			return nil, transportError(err)
		case c.dialing == nil:
			c.dialing = make(chan struct{})
			go c.dial(c.dialing)
		}
		wait := c.dialing
		c.mu.Unlock()
		select {
		case <-wait:
		case <-o.ctx.Done():
			return nil, fmt.Errorf("routeros %s: waiting for the connection to %s: %w", o.op, c.addr, o.ctx.Err())
		}
	}
}

// dial runs detached from any caller's context (others may be waiting for it), bounded
// by DialTimeout and Close.
func (c *Client) dial(done chan struct{}) {
	defer close(done)
	ctx, cancel := context.WithTimeout(c.life, c.cfg.DialTimeout)
	defer cancel()
	start := time.Now()
	conn, err := c.dialSSH(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dialing = nil
	switch {
	case err != nil:
		c.dialErr = err
		c.nextDial = time.Now().Add(c.backoff)
		c.log.Warn("RDS connection failed", "address", c.addr, "error", err, "retry_in", c.backoff)
		c.backoff = min(2*c.backoff, c.cfg.MaxRedialBackoff)
	case c.closed:
		conn.Close()
	default:
		c.conn, c.dialErr, c.nextDial, c.backoff = conn, nil, time.Time{}, c.cfg.RedialBackoff
		c.noNQNArg.Store(false)
		c.log.Info("RDS connected", "address", c.addr, "took", time.Since(start).Round(time.Millisecond))
		go c.watch(conn)
	}
}

func (c *Client) dialSSH(ctx context.Context) (*connection, error) {
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 15 * time.Second, Interval: 5 * time.Second, Count: 3}}
	nc, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	// the handshake has no context of its own: an expired deadline aborts it
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	sc, chans, reqs, err := ssh.NewClientConn(nc, c.addr, c.sshCfg)
	if !stop() && err == nil {
		err = ctx.Err()
		sc.Close()
	}
	if err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("SSH handshake with %s did not finish within %v: %w", c.addr, c.cfg.DialTimeout, err)
		}
		return nil, fmt.Errorf("SSH handshake with %s: %w", c.addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	return &connection{Client: ssh.NewClient(sc, chans, reqs), dead: make(chan struct{})}, nil
}

// watch notices a connection that ends on its own (RDS reboot, network cut).
func (c *Client) watch(conn *connection) {
	err := conn.Wait()
	close(conn.dead)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == conn {
		c.conn = nil
		c.log.Warn("RDS connection lost; the next command redials", "address", c.addr, "error", err)
	}
}

// drop closes a connection found broken; the next command dials a new one.
func (c *Client) drop(conn *connection, why string) {
	c.mu.Lock()
	if c.conn == conn {
		c.conn = nil
		c.log.Warn("closing broken RDS connection", "address", c.addr, "reason", why)
	}
	c.mu.Unlock()
	conn.Close()
}
