package routeros

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Config configures a Client.
type Config struct {
	Address string // host name or IP of the RDS
	Port    int    // SSH port; default 22
	User    string // RouterOS user (a `+ct` suffix turns colours and terminal detection off)

	KeyFile string     // private key (PEM or OpenSSH format, unencrypted); or Signer
	Signer  ssh.Signer // an in-memory key; exclusive with KeyFile

	// Exactly one of these: the RDS host key is checked against KnownHostsFile, or not at
	// all when InsecureSkipHostKey is set (an explicit opt-in).
	KnownHostsFile      string
	InsecureSkipHostKey bool

	DialTimeout time.Duration // TCP connect plus SSH handshake; default 10s
	// MaxSessions bounds concurrent exec sessions on the connection (a real RDS stalled
	// with 19 at once); default 4. Further commands queue in FIFO order.
	MaxSessions int

	// AllowedBases, if set, are the only directories paths may lie below (see ValidatePath).
	AllowedBases []string

	// RedialBackoff is the pause after a failed dial, doubling up to MaxRedialBackoff;
	// defaults 1s and 30s. The first dial after a broken connection is immediate.
	RedialBackoff, MaxRedialBackoff time.Duration

	// CommandTimeout, if positive, bounds each operation (one method call, which may run
	// several commands) when the caller's context has no earlier deadline, so no caller
	// waits on the RDS without bound. CopyFile is exempt: a synchronous copy of a large
	// file takes as long as it takes, and its caller's context bounds it.
	CommandTimeout time.Duration

	Logger *slog.Logger
	// Observe, if set, is called once per operation with its name (the method's, e.g.
	// "GetDisk"), how long it took and its outcome: the hook for metrics and health.
	Observe func(op string, d time.Duration, err error)
}

const (
	defaultPort             = 22
	defaultDialTimeout      = 10 * time.Second
	defaultMaxSessions      = 4
	defaultRedialBackoff    = time.Second
	defaultMaxRedialBackoff = 30 * time.Second
)

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
	if cfg.Address == "" {
		return nil, errors.New("routeros: Config.Address is empty: give the RDS host name or IP")
	}
	if cfg.User == "" {
		return nil, errors.New("routeros: Config.User is empty: give the RouterOS user the driver logs in as")
	}
	if cfg.Port == 0 {
		cfg.Port = defaultPort
	}
	if cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("routeros: Config.Port %d is not a TCP port", cfg.Port)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = defaultMaxSessions
	}
	if cfg.RedialBackoff <= 0 {
		cfg.RedialBackoff = defaultRedialBackoff
	}
	if cfg.MaxRedialBackoff < cfg.RedialBackoff {
		cfg.MaxRedialBackoff = max(defaultMaxRedialBackoff, cfg.RedialBackoff)
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
	sshCfg := &ssh.ClientConfig{
		User:    cfg.User,
		Auth:    []ssh.AuthMethod{ssh.PublicKeys(signer)},
		Timeout: cfg.DialTimeout,
	}
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
		sshCfg.HostKeyAlgorithms, err = knownHostAlgorithms(cb, addr)
		if err != nil {
			return nil, fmt.Errorf("routeros: %s: %w", cfg.KnownHostsFile, err)
		}
	case cfg.InsecureSkipHostKey:
		sshCfg.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	default:
		return nil, errors.New("routeros: no host key check configured: set KnownHostsFile (recommended) or, explicitly, InsecureSkipHostKey")
	}
	life, stop := context.WithCancel(context.Background())
	return &Client{
		cfg:      cfg,
		addr:     addr,
		sshCfg:   sshCfg,
		log:      cfg.Logger,
		sessions: newFIFOSemaphore(cfg.MaxSessions),
		life:     life,
		stop:     stop,
		backoff:  cfg.RedialBackoff,
	}, nil
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
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return nil, fmt.Errorf("routeros: SSH key %s is passphrase-protected: give an unencrypted key (it is read from a Secret)", cfg.KeyFile)
	case err != nil:
		return nil, fmt.Errorf("routeros: parse SSH key %s: %w", cfg.KeyFile, err)
	}
	return signer, nil
}

// knownHostAlgorithms lists the host key algorithms known_hosts accepts for addr, by asking
// the callback about a key it cannot know.
func knownHostAlgorithms(cb ssh.HostKeyCallback, addr string) ([]string, error) {
	// only the host name is matched when one is given: the remote address is a placeholder
	err := cb(addr, &net.TCPAddr{IP: net.IPv4zero}, probeKey{})
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) || len(ke.Want) == 0 {
		return nil, fmt.Errorf("no host key for %s: add the RDS's key (ssh-keyscan -p PORT HOST)", addr)
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		names := []string{k.Key.Type()}
		if k.Key.Type() == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
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
	c.closed = true
	conn := c.conn
	c.conn = nil
	c.mu.Unlock()
	c.stop()
	if conn != nil {
		return conn.Close()
	}
	return nil
}

// Ping checks liveness by opening and closing a session (RouterOS does not answer
// keepalive@openssh.com, so that is never sent). It dials when not connected.
func (c *Client) Ping(ctx context.Context) (err error) {
	ctx, end := c.begin(ctx, "Ping")
	defer end(&err)
	_, err = c.run(ctx, "Ping", "")
	return err
}

// begin starts operation op: its context gains the CommandTimeout, and end, deferred
// with the operation's error, releases it and reports the outcome to Observe.
func (c *Client) begin(ctx context.Context, op string) (_ context.Context, end func(err *error)) {
	start := time.Now()
	cancel := context.CancelFunc(func() {})
	if c.cfg.CommandTimeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.cfg.CommandTimeout)
	}
	return ctx, func(err *error) {
		cancel()
		c.observe(op, start, err)
	}
}

func (c *Client) observe(op string, start time.Time, err *error) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(op, time.Since(start), *err)
	}
}

// connect returns the connection, dialling if there is none. One dial runs at a time; the
// others wait for it. After a failed dial, callers fail fast until the backoff has passed.
func (c *Client) connect(ctx context.Context, op string) (*connection, error) {
	for {
		c.mu.Lock()
		switch {
		case c.closed:
			c.mu.Unlock()
			return nil, &CommandError{Op: op, Kind: KindTransport, Exit: -1, Err: errors.New("client closed")}
		case c.conn != nil:
			conn := c.conn
			c.mu.Unlock()
			return conn, nil
		case c.dialing == nil && time.Now().Before(c.nextDial):
			err := fmt.Errorf("connect to %s: %w (next attempt in %v)", c.addr, c.dialErr, time.Until(c.nextDial).Round(time.Millisecond))
			c.mu.Unlock()
			return nil, &CommandError{Op: op, Kind: KindTransport, Exit: -1, Err: err}
		case c.dialing == nil:
			c.dialing = make(chan struct{})
			go c.dial(c.dialing)
		}
		wait := c.dialing
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("routeros %s: waiting for the connection to %s: %w", op, c.addr, ctx.Err())
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
	if err != nil {
		c.dialErr = err
		c.nextDial = time.Now().Add(c.backoff)
		c.log.Warn("RDS connection failed", "address", c.addr, "error", err, "retry_in", c.backoff)
		c.backoff = min(2*c.backoff, c.cfg.MaxRedialBackoff)
		return
	}
	if c.closed {
		conn.Close()
		return
	}
	c.conn, c.dialErr, c.nextDial, c.backoff = conn, nil, time.Time{}, c.cfg.RedialBackoff
	c.noNQNArg.Store(false)
	c.log.Info("RDS connected", "address", c.addr, "took", time.Since(start).Round(time.Millisecond))
	go c.watch(conn)
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
	lost := c.conn == conn
	if lost {
		c.conn = nil
	}
	c.mu.Unlock()
	if lost {
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
