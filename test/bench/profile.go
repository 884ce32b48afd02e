package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// profiler captures pprof profiles of the driver processes in a -profile run. Their
// binaries are built with an overlay that adds net/http/pprof to package main, served on
// the address in BENCH_PPROF_ADDR: the repository never carries it, and the binaries of a
// normal run never contain it. The figures of a -profile run are therefore not the
// official ones (the report is not written).
type profiler struct {
	dir     string // where the profiles go
	overlay string // go build -overlay file
	saved   []string
}

// prof is set by -profile; nil otherwise.
var prof *profiler

const pprofHook = `package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

// Added by test/bench -profile through go build -overlay; not part of the repository.
func init() {
	if addr := os.Getenv("BENCH_PPROF_ADDR"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
`

func newProfiler(root, work, dir string) (*profiler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	hook := filepath.Join(work, "pprof_hook.go")
	if err := os.WriteFile(hook, []byte(pprofHook), 0o644); err != nil {
		return nil, err
	}
	overlay, err := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "zz_bench_pprof_hook.go"): hook}})
	if err != nil {
		return nil, err
	}
	p := &profiler{dir: dir, overlay: filepath.Join(work, "pprof_overlay.json")}
	return p, os.WriteFile(p.overlay, overlay, 0o644)
}

// env is what a driver process needs to serve pprof on addr.
func (p *profiler) env(addr string) []string {
	if p == nil {
		return nil
	}
	return []string{"BENCH_PPROF_ADDR=" + addr}
}

// heap saves the process's heap profile (in use and allocated).
func (p *profiler) heap(d *driver, name string) {
	if p == nil {
		return
	}
	p.fetch(d, name+".heap.pprof", "/debug/pprof/heap", 30*time.Second)
}

// cpu profiles the process for the given time while work runs over and over.
func (p *profiler) cpu(d *driver, name string, seconds int, work func() error) {
	if p == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.fetch(d, name+".cpu.pprof", fmt.Sprintf("/debug/pprof/profile?seconds=%d", seconds), time.Duration(seconds+30)*time.Second)
	}()
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	for time.Now().Before(end) {
		if err := work(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: profile %s: %v\n", name, err)
			break
		}
	}
	<-done
}

func (p *profiler) fetch(d *driver, file, path string, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.pprofAddr+path, nil)
	if err != nil {
		return
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: profile %s: %v\n", file, err)
		return
	}
	defer resp.Body.Close()
	out := filepath.Join(p.dir, file)
	f, err := os.Create(out)
	if err != nil {
		return
	}
	_, err = io.Copy(f, resp.Body)
	if err = errors.Join(err, f.Close()); err == nil && resp.StatusCode == http.StatusOK {
		p.saved = append(p.saved, out)
	}
}

// summary lists the saved profiles and how to read them.
func (p *profiler) summary() string {
	if p == nil {
		return ""
	}
	s := fmt.Sprintf("\nprofiles in %s (read with: go tool pprof -top -cum <file>):\n", p.dir)
	for _, f := range p.saved {
		s += "  " + filepath.Base(f) + "\n"
	}
	return s
}
