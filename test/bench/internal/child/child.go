// Package child runs the processes the bench harness and its VM program measure: each
// with its output in a log file, SIGKILLed if the harness dies, stopped with SIGTERM and a
// grace period, and a Probe wait for CSI drivers.
package child

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
)

// Process is a started child. Its stdout lines are kept (for WaitLine) and, with stderr,
// appended to the log file.
type Process struct {
	Name    string
	LogPath string
	Cmd     *exec.Cmd
	Started time.Time // just before the exec
	done    chan struct{}

	mu    sync.Mutex
	lines []string
}

// live are the processes started and not yet seen to exit, for KillAll.
var live struct {
	sync.Mutex
	m map[*Process]bool
}

// Start execs bin with args and env (nil: the caller's environment).
func Start(name, logPath, bin string, args, env []string) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "=== %s %s\n", bin, strings.Join(args, " "))
	p := &Process{Name: name, LogPath: logPath, done: make(chan struct{})}
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Env = env
	p.Cmd.Stderr = log
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.Cmd.StdoutPipe()
	if err != nil {
		log.Close()
		return nil, err
	}
	p.Started = time.Now()
	if err := p.Cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p.track(true)
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			fmt.Fprintln(log, sc.Text())
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_, _ = io.Copy(log, out)
		_ = p.Cmd.Wait()
		log.Close()
		p.track(false)
		close(p.done)
	}()
	return p, nil
}

func (p *Process) track(running bool) {
	live.Lock()
	defer live.Unlock()
	if live.m == nil {
		live.m = map[*Process]bool{}
	}
	if running {
		live.m[p] = true
	} else {
		delete(live.m, p)
	}
}

// KillAll SIGKILLs every process started here that is still running.
func KillAll() {
	live.Lock()
	defer live.Unlock()
	for p := range live.m {
		_ = p.Cmd.Process.Kill()
	}
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exit describes how the process ended (once it has).
func (p *Process) Exit() string {
	if p.Running() {
		return "running"
	}
	return p.Cmd.ProcessState.String()
}

// WaitLine waits until the process prints a stdout line starting with prefix.
func (p *Process) WaitLine(prefix string, d time.Duration) error {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.HasPrefix(l, prefix) {
				p.mu.Unlock()
				return nil
			}
		}
		p.mu.Unlock()
		if !p.Running() {
			return fmt.Errorf("%s exited (%s): %s", p.Name, p.Exit(), p.Tail(3, " | "))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not print %q within %v: %s", p.Name, prefix, d, p.Tail(3, " | "))
}

// Stop sends SIGTERM and waits up to grace for a clean exit, then SIGKILLs.
func (p *Process) Stop(grace time.Duration) error {
	if p == nil || !p.Running() {
		return nil
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if !p.Cmd.ProcessState.Success() {
			return fmt.Errorf("%s exited with %v after SIGTERM", p.Name, p.Cmd.ProcessState)
		}
		return nil
	case <-time.After(grace):
		_ = p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.Name, grace)
	}
}

// Tail returns the last n lines of the log joined with sep, for messages.
func (p *Process) Tail(n int, sep string) string {
	if p == nil {
		return "(not started)"
	}
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, sep)
}

// WaitReady waits until the driver's Probe says ready (for a controller: the RDS answered).
func WaitReady(p *Process, ident csi.IdentityClient, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := errors.New("no answer")
	for time.Now().Before(deadline) {
		if !p.Running() {
			return fmt.Errorf("%s exited (%s): %s", p.Name, p.Exit(), p.Tail(1, " | "))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := ident.Probe(ctx, &csi.ProbeRequest{}, grpc.WaitForReady(true))
		cancel()
		switch {
		case err != nil:
			last = err
		case !r.GetReady().GetValue():
			last = errors.New("Probe: not ready")
		default:
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready within %v (%v): %s", p.Name, timeout, last, p.Tail(2, " | "))
}
