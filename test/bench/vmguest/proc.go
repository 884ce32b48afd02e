package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// process is a child whose output goes to a log file.
type process struct {
	name, logPath string
	cmd           *exec.Cmd
	done          chan struct{}

	mu    sync.Mutex
	lines []string // stdout lines seen so far
}

func start(name, logPath, bin string, args ...string) (*process, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	p := &process{name: name, logPath: logPath, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		log.Close()
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Fprintln(log, sc.Text())
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
		_, _ = io.Copy(log, out)
		_ = p.cmd.Wait()
		fmt.Fprintf(log, "=== exit: %v\n", p.cmd.ProcessState)
		log.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// waitLog waits until the process prints a stdout line starting with prefix.
func (p *process) waitLog(prefix string, d time.Duration) error {
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
		if !p.running() {
			return fmt.Errorf("%s exited: %s", p.name, p.tail(5))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s did not print %q within %v: %s", p.name, prefix, d, p.tail(5))
}

// stop sends SIGTERM and waits; the process must exit cleanly.
func (p *process) stop(d time.Duration) error {
	if p == nil || !p.running() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if !p.cmd.ProcessState.Success() {
			return fmt.Errorf("%s exited with %v after SIGTERM", p.name, p.cmd.ProcessState)
		}
		return nil
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM", p.name, d)
	}
}

func (p *process) tail(n int) string {
	if p == nil {
		return "(not started)"
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
