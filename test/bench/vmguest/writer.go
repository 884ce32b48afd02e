package main

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// writer writes and fsyncs 64 KiB every 10 ms, round-robin over 32 slots of a file, and
// keeps the longest write+fsync.
type writer struct {
	mu      sync.Mutex
	n       int
	longest time.Duration
	err     error
	once    sync.Once
	quit    chan struct{}
	done    chan struct{}
}

func startWriter(path string) *writer {
	w := &writer{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			w.fail(err)
			return
		}
		defer f.Close()
		buf := make([]byte, 64<<10)
		for i := 0; ; i++ {
			select {
			case <-w.quit:
				return
			default:
			}
			copy(buf, fmt.Sprintf("write %d\n", i))
			start := time.Now()
			_, err := f.WriteAt(buf, int64(i%32)*int64(len(buf)))
			if err == nil {
				err = f.Sync()
			}
			took := time.Since(start)
			if err != nil {
				w.fail(fmt.Errorf("write %d: %w", i, err))
				return
			}
			w.mu.Lock()
			w.n++
			w.longest = max(w.longest, took)
			w.mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	w.err = err
	w.mu.Unlock()
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// stop ends the writer (waiting at most a minute for a write in progress) and returns
// the longest write+fsync and the writer's error.
func (w *writer) stop() (time.Duration, error) {
	w.once.Do(func() { close(w.quit) })
	select {
	case <-w.done:
	case <-time.After(time.Minute):
		return 0, fmt.Errorf("a write has been blocked for over a minute")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.longest, w.err
}
