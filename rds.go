package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// rdsClientConfig maps the configuration onto the RouterOS client's. AllowedBases is a
// second line of defence: the client refuses any other file path before it is sent.
// Every operation but a copy (the copy tracker bounds those) ends by --rds-command-timeout.
func rdsClientConfig(cfg *Config, log *slog.Logger, m *metrics) routeros.Config {
	return routeros.Config{
		Address:             cfg.RDSAddress,
		Port:                cfg.RDSSSHPort,
		User:                cfg.RDSUser,
		KeyFile:             cfg.RDSKeyFile,
		KnownHostsFile:      cfg.RDSKnownHosts,
		InsecureSkipHostKey: cfg.RDSInsecureSkipHostKey,
		MaxSessions:         cfg.RDSMaxSessions,
		AllowedBases:        append([]string{cfg.RDSVolumePath}, cfg.RDSAllowedPaths...),
		CommandTimeout:      cfg.RDSCommandTimeout,
		Logger:              log.With("component", "routeros"),
		Observe: func(op string, d time.Duration, err error) {
			m.observeRouterOS(op, d, routerosErrorKind(err))
		},
	}
}

// routerosErrors maps the client's sentinel errors, once for every RPC: the first that
// matches gives the metrics label and the gRPC code (rdsStatus).
var routerosErrors = []struct {
	err  error
	kind string
	code codes.Code
}{
	{routeros.ErrTransport, "transport", codes.Unavailable}, {routeros.ErrNotFound, "not_found", codes.NotFound},
	{routeros.ErrAlreadyExists, "already_exists", codes.AlreadyExists}, {routeros.ErrNoSpace, "no_space", codes.ResourceExhausted},
	{routeros.ErrInvalidArgument, "invalid_argument", codes.InvalidArgument},
}

func routerosErrorKind(err error) string {
	if err == nil {
		return ""
	}
	for _, k := range routerosErrors {
		if errors.Is(err, k.err) {
			return k.kind
		}
	}
	return "other"
}

// rdsHealth tracks whether the RDS answered recently. The controller never exits because
// the RDS is unreachable (it would crash-loop through an appliance reboot): Probe reports
// not ready and pings retry in the background.
type rdsHealth struct {
	ping               func(context.Context) error
	interval, maxDelay time.Duration // between pings while healthy; backoff bound while not
	log                *slog.Logger
	onChange           func(up bool)
	lastOK             atomic.Int64 // unix nanoseconds of the last contact
	up                 atomic.Bool
}

func newRDSHealth(ping func(context.Context) error, log *slog.Logger, onChange func(bool)) *rdsHealth {
	return &rdsHealth{ping: ping, interval: 15 * time.Second, maxDelay: 30 * time.Second, log: log, onChange: onChange}
}

// ready is true when the RDS answered within three healthy intervals.
func (h *rdsHealth) ready() bool {
	last := h.lastOK.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < 3*h.interval
}

// observe takes one operation's outcome (the client's Observe hook): any answer, also a
// refusal such as "not found", shows the RDS up; a transport failure or deadline does
// not. run judges the pings itself.
func (h *rdsHealth) observe(op string, err error) {
	var ce *routeros.CommandError
	if op != "Ping" && (err == nil || errors.As(err, &ce) && ce.Kind != routeros.KindTransport) {
		h.setUp(true)
	}
}

func (h *rdsHealth) setUp(up bool) {
	if up {
		h.lastOK.Store(time.Now().UnixNano())
	}
	if h.up.Swap(up) == up {
		return
	}
	if up {
		h.log.Info("RDS reachable")
	}
	if h.onChange != nil {
		h.onChange(up)
	}
}

// run pings until ctx ends: every interval while healthy, with backoff from 1 s while not.
func (h *rdsHealth) run(ctx context.Context) {
	delay := time.Second
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := h.ping(pctx)
		cancel()
		next := h.interval
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			h.setUp(true)
			delay = time.Second
		default:
			if h.up.Load() || h.lastOK.Load() == 0 && delay == time.Second {
				h.log.Warn("RDS not reachable; retrying in the background (Probe reports not ready)", "err", err)
			}
			h.setUp(false)
			next, delay = delay, min(delay*2, h.maxDelay)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// After breakerThreshold staging failures of one volume in a row, the node stops trying
// it for breakerCooldown, then lets one trial through.
const (
	breakerThreshold = 3
	breakerCooldown  = 5 * time.Minute
)

// breaker is a per-volume circuit breaker for staging: when the cause is on the RDS side
// (a volume not exported, a target refusing the host), each of kubelet's quick retries
// costs a connect attempt and log noise on both ends. Open, it answers Unavailable at once
// until the cooldown ends; then one trial goes through, whose success closes it and whose
// failure opens it again. In memory only: restarting the node plugin resets it.
type breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time
	onChange  func(open int) // how many volumes are not closed (a gauge)
	mu        sync.Mutex
	vols      map[string]*breakerState
}

type breakerState struct {
	failures  int
	openUntil time.Time // end of the cooldown, once failures >= threshold
	trial     bool      // a half-open trial is running
	lastErr   string
}

func newBreaker(now func() time.Time, onChange func(int)) *breaker {
	return &breaker{threshold: breakerThreshold, cooldown: breakerCooldown, now: now, onChange: onChange, vols: map[string]*breakerState{}}
}

// allow returns nil when a staging attempt may go ahead, or Unavailable saying when the
// next attempt happens and what resets the breaker.
func (b *breaker) allow(id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.vols[id]
	if s == nil || s.failures < b.threshold {
		return nil
	}
	now := b.now()
	if !now.Before(s.openUntil) && !s.trial {
		s.trial = true // half-open: this call is the one trial
		return nil
	}
	retry := s.openUntil
	if !now.Before(retry) {
		retry = now.Add(time.Second) // a trial is running; the next call after it decides
	}
	return status.Errorf(codes.Unavailable,
		"volume %s: staging failed %d times in a row (last error: %s); the node plugin pauses staging it and retries automatically at %s; a successful stage or restarting the node plugin resets it",
		id, s.failures, s.lastErr, retry.UTC().Format("15:04:05 MST"))
}

func (b *breaker) success(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.vols[id]; ok {
		delete(b.vols, id)
		b.changed()
	}
}

// failure counts a failed attempt; at the threshold, or when a trial fails, the breaker
// opens for a cooldown.
func (b *breaker) failure(id string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.vols[id]
	if s == nil {
		s = &breakerState{}
		b.vols[id] = s
	}
	s.failures++
	s.lastErr = status.Convert(err).Message()
	s.trial = false
	if s.failures >= b.threshold {
		s.openUntil = b.now().Add(b.cooldown)
	}
	b.changed()
}

// changed reports the number of breakers not closed; the caller holds b.mu.
func (b *breaker) changed() {
	if b.onChange == nil {
		return
	}
	n := 0
	for _, s := range b.vols {
		if s.failures >= b.threshold {
			n++
		}
	}
	b.onChange(n)
}

// rdsStatus turns a RouterOS failure while doing `what` into the gRPC status the CO acts
// on. An unreachable RDS is Unavailable (retried), never NotFound (the CO would take the
// volume as gone) or Internal.
func (c *controllerService) rdsStatus(what string, err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: the RDS at %s did not answer in time: %v; it is retried — if this persists, check the RDS's load and the network, or raise --rds-command-timeout", what, c.rdsAddr, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: the caller gave up: %v", what, err)
	}
	var ce *routeros.CommandError
	for _, k := range routerosErrors {
		switch {
		case !errors.Is(err, k.err):
			continue
		case k.kind == "transport":
			return status.Errorf(codes.Unavailable, "%s: cannot reach the RDS at %s over SSH: %v; check that the RDS is up and reachable from the controller, and the controller's --rds-address, --rds-ssh-port, SSH key and known_hosts", what, c.rdsAddr, err)
		case k.kind == "no_space":
			return status.Errorf(codes.ResourceExhausted, "%s: the RDS pool is full: %v; free space on the pool", what, err)
		case k.kind == "invalid_argument" && errors.As(err, &ce): // sent, and refused
			return status.Errorf(codes.Internal, "%s: the RDS rejected the command rds-csi sent: %v; this RouterOS version may not support it: report it with the output of /system resource print", what, err)
		}
		return status.Errorf(k.code, "%s: %v", what, err) // invalid_argument: refused before sending
	}
	return status.Errorf(codes.Internal, "%s: the RDS refused: %v", what, err)
}

// spaceStatus maps the failure of an operation that needed `need` bytes in dir: "no
// space" is ResourceExhausted with the pool's free space read back, so the user sees how
// much is missing; anything else is rdsStatus(what+more).
func (c *controllerService) spaceStatus(ctx context.Context, what, more, dir string, need int64, cause error) error {
	if !errors.Is(cause, routeros.ErrNoSpace) {
		return c.rdsStatus(what+more, cause)
	}
	pool, err := c.client.PoolCapacity(ctx, dir)
	if err != nil {
		return status.Errorf(codes.ResourceExhausted, "%s: the RDS has not enough space for %s (%v); its free space could not be read: %v; free space on the pool holding %s",
			what, humanBytes(need), cause, err, dir)
	}
	c.recordPool(pool)
	return status.Errorf(codes.ResourceExhausted, "%s: the RDS pool %q has %s free (%d bytes) and this needs %s (%d bytes): free space on the pool (delete unused volumes) or ask for less",
		what, pool.Name, humanBytes(pool.Free), pool.Free, humanBytes(need), need)
}

// volumeBases returns the directories volumes may live in (--rds-volume-path, then
// --rds-allowed-paths), each checked to be a clean absolute RouterOS path.
func volumeBases(cfg *Config) ([]string, error) {
	bases := append([]string{cfg.RDSVolumePath}, cfg.RDSAllowedPaths...)
	for i, b := range bases {
		flag := "--rds-volume-path"
		if i > 0 {
			flag = "--rds-allowed-paths"
		}
		if err := routeros.ValidatePath(b + "/x.img"); err != nil || b == "" || path.Clean(b) != b {
			return nil, fmt.Errorf("%s %q is not a clean absolute RouterOS path like /storage-pool/metal-csi (letters, digits, '.', '_', '-' and '/' only)", flag, b)
		}
	}
	return slices.Compact(bases), nil
}

// managedDisk says why a disk in a volume's slot is not a volume of this driver ("" when
// it is): only file disks on <base>/…/<id>.img below a configured base are ever changed.
func (c *controllerService) managedDisk(d *routeros.Disk) string {
	switch {
	case d.Type != "file":
		return fmt.Sprintf("the disk with slot %q is of type %q, not a file disk made by this driver", d.Slot, d.Type)
	case path.Base(d.FilePath) != volumeFileName(d.Slot):
		return fmt.Sprintf("the disk with slot %q uses file %q, not %s", d.Slot, d.FilePath, volumeFileName(d.Slot))
	case !c.underBases(path.Dir(d.FilePath)):
		return fmt.Sprintf("the disk with slot %q uses file %q outside --rds-volume-path and --rds-allowed-paths (%s); add its directory to --rds-allowed-paths if this driver should manage it",
			d.Slot, d.FilePath, strings.Join(c.bases, ", "))
	}
	return ""
}

// underBases reports whether dir is a base or below one, by whole path components
// (/pool/vol is not under /pool/v).
func (c *controllerService) underBases(dir string) bool {
	return slices.ContainsFunc(c.bases, func(b string) bool {
		return dir == b || strings.HasPrefix(dir, strings.TrimSuffix(b, "/")+"/")
	})
}

// humanBytes renders a byte count for messages, e.g. "1.5 GiB".
func humanBytes(n int64) string {
	units := []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n), 0
	for ; v >= 1024 && i < len(units)-1; i++ {
		v /= 1024
	}
	if i == 0 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	return strings.TrimRight(strings.TrimRight(strconv.FormatFloat(v, 'f', 2, 64), "0"), ".") + " " + units[i]
}
