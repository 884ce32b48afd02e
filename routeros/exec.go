package routeros

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// abandonGrace is how long a session closed on a caller's deadline may take to end before
// the connection is taken for wedged and replaced (a variable for tests).
var abandonGrace = 5 * time.Second

const (
	// maxOutput bounds what one command may print (a 1 000-disk listing is under 1 MiB).
	maxOutput = 32 << 20
	// exitMissingGrace is how long to wait, after a session ended without an exit status,
	// for the connection to be reported gone (the channel closes just before it does).
	exitMissingGrace = 100 * time.Millisecond
)

// job is one command on one session. The goroutine running it owns the session slot until
// the session has really ended, so the RDS never sees more than MaxSessions sessions, even
// when callers gave up on theirs.
type job struct {
	cmd            string // "" only opens and closes a session (Ping)
	stdout, stderr limitedBuffer
	done           chan struct{}

	// set before done is closed
	exit int // -1: no exit status received
	err  error

	mu       sync.Mutex
	sess     *ssh.Session
	aborted  bool
	openErrs int   // session opens the server refused (its own session limit)
	lastOpen error // the last of those refusals
}

// run executes cmd under ctx and returns its standard output. RouterOS errors are
// recognised on either stream and with any exit status.
func (c *Client) run(ctx context.Context, op, cmd string) (string, error) {
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("routeros %s: not started: %w", op, err)
	}
	if err := c.sessions.acquire(ctx); err != nil {
		return "", fmt.Errorf("routeros %s: gave up waiting for a free SSH session (%d in use): %w", op, c.cfg.MaxSessions, err)
	}
	conn, err := c.connect(ctx, op)
	if err != nil {
		c.sessions.release()
		return "", withCommand(err, cmd)
	}
	j := &job{cmd: cmd, done: make(chan struct{}), exit: -1}
	go c.execute(conn, j)
	select {
	case <-j.done:
	case <-ctx.Done():
		c.abandon(conn, j)
		err := ctxError(op, cmd, ctx, j)
		c.log.Debug("command abandoned", "op", op, "command", cmd, "after", time.Since(start), "error", err)
		return "", err
	}
	out, err := c.result(op, conn, j)
	c.log.Debug("command", "op", op, "command", cmd, "took", time.Since(start), "error", err)
	return out, err
}

// execute opens a session (retrying while the server refuses it for being at its own
// session limit), runs the command and waits for it. It releases the session slot.
func (c *Client) execute(conn *connection, j *job) {
	defer close(j.done)
	defer c.sessions.release()
	var sess *ssh.Session
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		var err error
		sess, err = c.openSession(conn)
		var refused *ssh.OpenChannelError
		if errors.As(err, &refused) {
			j.mu.Lock()
			j.openErrs++
			j.lastOpen = err
			aborted := j.aborted
			j.mu.Unlock()
			if aborted {
				return
			}
			time.Sleep(delay)
			continue
		}
		if err != nil {
			c.drop(conn, "session open failed: "+err.Error())
			j.err = transportError(err)
			return
		}
		break
	}
	defer sess.Close()
	j.mu.Lock()
	if j.aborted {
		j.mu.Unlock()
		return
	}
	j.sess = sess
	j.mu.Unlock()
	if j.cmd == "" {
		// a probe: close at once, and hold the slot until the RDS has closed its side too
		pipe, err := sess.StdoutPipe()
		sess.Close()
		if err == nil {
			_, _ = io.Copy(io.Discard, pipe)
		}
		j.exit = 0
		return
	}
	sess.Stdout, sess.Stderr = &j.stdout, &j.stderr
	err := sess.Run(j.cmd)
	j.mu.Lock()
	aborted := j.aborted
	j.mu.Unlock()
	if aborted {
		return // we closed the session ourselves; nobody reads the result
	}
	var exitErr *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		j.exit = 0
	case errors.As(err, &exitErr):
		j.exit = exitErr.ExitStatus()
	case errors.As(err, &missing):
		// Either the server sent no exit status, or the connection died and took the
		// channel with it: then the output may be cut short and must not be trusted.
		select {
		case <-conn.dead:
			j.err = transportError(errors.New("connection lost while the command ran (it may or may not have taken effect)"))
		case <-time.After(exitMissingGrace):
		}
	default:
		c.drop(conn, "command failed: "+err.Error())
		j.err = transportError(err)
	}
	if j.stdout.overflow || j.stderr.overflow {
		j.err = fmt.Errorf("output exceeds %d bytes", maxOutput)
	}
}

// openSession opens a session; one that stalls longer than DialTimeout means the
// connection is wedged, and closing it unblocks the open.
func (c *Client) openSession(conn *connection) (*ssh.Session, error) {
	stall := time.AfterFunc(c.cfg.DialTimeout, func() { c.drop(conn, "session open stalled") })
	defer stall.Stop()
	return conn.NewSession()
}

// abandon gives up on a job whose caller's context ended: its session is closed (which
// ends the command on RouterOS) and, should it not end within abandonGrace, the whole
// connection is replaced, since the RDS no longer answers on it.
func (c *Client) abandon(conn *connection, j *job) {
	j.mu.Lock()
	j.aborted = true
	if j.sess != nil {
		j.sess.Close()
	}
	j.mu.Unlock()
	go func() {
		t := time.NewTimer(abandonGrace)
		defer t.Stop()
		select {
		case <-j.done:
		case <-t.C:
			c.drop(conn, "a closed session did not end")
		}
	}()
}

// result turns a finished job into output or a typed error.
func (c *Client) result(op string, conn *connection, j *job) (string, error) {
	if j.err != nil {
		var ce *CommandError
		if errors.As(j.err, &ce) {
			ce.Op, ce.Command = op, j.cmd
			return "", ce
		}
		return "", &CommandError{Op: op, Kind: KindOther, Command: j.cmd, Exit: j.exit, Err: j.err}
	}
	stdout, stderr := j.stdout.String(), j.stderr.String()
	for _, stream := range []string{stdout, stderr} {
		if kind, line, ok := classifyOutput(stream); ok {
			return "", &CommandError{Op: op, Kind: kind, Command: j.cmd, Output: trimOutput(stdout, stderr, line), Exit: j.exit}
		}
	}
	if j.exit > 0 {
		return "", &CommandError{Op: op, Kind: KindOther, Command: j.cmd, Output: trimOutput(stdout, stderr, ""), Exit: j.exit}
	}
	if len(bytes.TrimSpace([]byte(stderr))) > 0 {
		c.log.Warn("RouterOS wrote to stderr on success", "op", op, "command", j.cmd, "stderr", clip(stderr, 200))
	}
	return stdout, nil
}

// trimOutput keeps the error line first, then the rest of the output (bounded).
func trimOutput(stdout, stderr, line string) string {
	all := string(bytes.TrimSpace([]byte(stdout + "\n" + stderr)))
	if line != "" && all != line {
		all = line + "\n" + all
	}
	return clip(all, 2000)
}

func transportError(err error) error {
	return &CommandError{Kind: KindTransport, Exit: -1, Err: err}
}

// ctxError reports a command given up on because its context ended; it wraps ctx.Err().
func ctxError(op, cmd string, ctx context.Context, j *job) error {
	j.mu.Lock()
	refused, last := j.openErrs, j.lastOpen
	j.mu.Unlock()
	if refused > 0 {
		return fmt.Errorf("routeros %s: the RDS refused %d session opens (its own session limit?), last: %v: %w", op, refused, last, ctx.Err())
	}
	if cmd == "" {
		return fmt.Errorf("routeros %s: no answer from the RDS: %w", op, ctx.Err())
	}
	return fmt.Errorf("routeros %s: no answer to [%s]: %w (the command may still take effect)", op, cmd, ctx.Err())
}

// withCommand adds the command to a connection error.
func withCommand(err error, cmd string) error {
	var ce *CommandError
	if errors.As(err, &ce) && ce.Command == "" {
		ce.Command = cmd
	}
	return err
}

// limitedBuffer collects output up to maxOutput and notes when more was written.
type limitedBuffer struct {
	bytes.Buffer
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxOutput {
		b.overflow = true
		return len(p), nil
	}
	return b.Buffer.Write(p)
}
