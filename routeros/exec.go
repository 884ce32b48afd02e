package routeros

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
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
	exit           int   // set before done is closed; -1: no exit status received
	err            error // set before done is closed

	mu       sync.Mutex
	sess     *ssh.Session
	aborted  bool
	openErrs int   // session opens the server refused (its own session limit)
	lastOpen error // the last of those refusals
}

func (j *job) isAborted() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.aborted
}

// run executes cmd under the call's context and returns its standard output. When the
// context ends, run returns at once with an error wrapping ctx.Err() and abandons the job.
func (o call) run(cmd string) (string, error) {
	c, start := o.Client, time.Now()
	if err := o.ctx.Err(); err != nil {
		return "", fmt.Errorf("routeros %s: not started: %w", o.op, err)
	}
	if err := c.sessions.acquire(o.ctx); err != nil {
		return "", fmt.Errorf("routeros %s: gave up waiting for a free SSH session (%d in use): %w", o.op, c.cfg.MaxSessions, err)
	}
	conn, err := o.connect()
	if err != nil {
		c.sessions.release()
		if ce, ok := err.(*CommandError); ok {
			ce.Op, ce.Command = o.op, cmd
		}
		return "", err
	}
	j := &job{cmd: cmd, done: make(chan struct{}), exit: -1}
	go c.execute(conn, j)
	select {
	case <-j.done:
		out, err := o.result(j)
		c.log.Debug("command", "op", o.op, "command", cmd, "took", time.Since(start), "error", err)
		return out, err
	case <-o.ctx.Done():
		c.abandon(conn, j)
		err := o.ctxError(j)
		c.log.Debug("command abandoned", "op", o.op, "command", cmd, "after", time.Since(start), "error", err)
		return "", err
	}
}

// execute opens a session (retrying while the server refuses it for being at its own
// session limit), runs the command and waits for it. It releases the session slot.
func (c *Client) execute(conn *connection, j *job) {
	defer close(j.done)
	defer c.sessions.release()
	var sess *ssh.Session
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		var err error
		if sess, err = c.openSession(conn); err == nil {
			break
		}
		if !errors.As(err, new(*ssh.OpenChannelError)) {
			c.drop(conn, "session open failed: "+err.Error())
			j.err = transportError(err)
			return
		}
		j.mu.Lock()
		j.openErrs++
		j.lastOpen = err
		j.mu.Unlock()
		if j.isAborted() {
			return
		}
		time.Sleep(delay)
	}
	defer sess.Close()
	j.mu.Lock()
	aborted := j.aborted
	j.sess = sess
	j.mu.Unlock()
	if aborted {
		return
	}
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
	if j.isAborted() {
		return // we closed the session ourselves; nobody reads the result
	}
	var exitErr *ssh.ExitError
	switch {
	case err == nil:
		j.exit = 0
	case errors.As(err, &exitErr):
		j.exit = exitErr.ExitStatus()
	case errors.As(err, new(*ssh.ExitMissingError)):
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
func (o call) result(j *job) (string, error) {
	if j.err != nil {
		if ce, ok := j.err.(*CommandError); ok {
			ce.Op, ce.Command = o.op, j.cmd
			return "", ce
		}
		return "", &CommandError{Op: o.op, Kind: KindOther, Command: j.cmd, Exit: j.exit, Err: j.err}
	}
	stdout, stderr := j.stdout.String(), j.stderr.String()
	for _, stream := range []string{stdout, stderr} {
		if kind, line, ok := classifyOutput(stream); ok {
			return "", &CommandError{Op: o.op, Kind: kind, Command: j.cmd, Output: trimOutput(stdout, stderr, line), Exit: j.exit}
		}
	}
	if j.exit > 0 {
		return "", &CommandError{Op: o.op, Kind: KindOther, Command: j.cmd, Output: trimOutput(stdout, stderr, ""), Exit: j.exit}
	}
	if strings.TrimSpace(stderr) != "" {
		o.log.Warn("RouterOS wrote to stderr on success", "op", o.op, "command", j.cmd, "stderr", clip(stderr, 200))
	}
	return stdout, nil
}

// trimOutput keeps the error line first, then the rest of the output (bounded).
func trimOutput(stdout, stderr, line string) string {
	all := strings.TrimSpace(stdout + "\n" + stderr)
	if line != "" && all != line {
		all = line + "\n" + all
	}
	return clip(all, 2000)
}

func transportError(err error) *CommandError {
	return &CommandError{Kind: KindTransport, Exit: -1, Err: err}
}

// ctxError reports a command given up on because its context ended; it wraps ctx.Err().
func (o call) ctxError(j *job) error {
	j.mu.Lock()
	refused, last := j.openErrs, j.lastOpen
	j.mu.Unlock()
	switch {
	case refused > 0:
		return fmt.Errorf("routeros %s: the RDS refused %d session opens (its own session limit?), last: %v: %w", o.op, refused, last, o.ctx.Err())
	case j.cmd == "":
		return fmt.Errorf("routeros %s: no answer from the RDS: %w", o.op, o.ctx.Err())
	}
	return fmt.Errorf("routeros %s: no answer to [%s]: %w (the command may still take effect)", o.op, j.cmd, o.ctx.Err())
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

// fifoSemaphore bounds concurrent SSH sessions. Callers beyond the bound wait in arrival
// order (a plain buffered channel would let a late caller overtake an early one), and a
// waiter whose context ends leaves the queue at once.
type fifoSemaphore struct {
	mu      sync.Mutex
	free    int
	waiters list.List // of chan struct{}, closed when the slot is handed over
}

func (s *fifoSemaphore) acquire(ctx context.Context) error {
	s.mu.Lock()
	if s.free > 0 && s.waiters.Len() == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return err
	}
	ch := make(chan struct{})
	el := s.waiters.PushBack(ch)
	s.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		select {
		case <-ch: // handed over while the context ended: pass it on
			s.mu.Unlock()
			s.release()
		default:
			s.waiters.Remove(el)
			s.mu.Unlock()
		}
		return ctx.Err()
	}
}

func (s *fifoSemaphore) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if front := s.waiters.Front(); front != nil {
		s.waiters.Remove(front)
		close(front.Value.(chan struct{}))
		return
	}
	s.free++
}
