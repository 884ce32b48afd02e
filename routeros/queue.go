package routeros

import (
	"container/list"
	"context"
	"sync"
)

// fifoSemaphore bounds concurrent SSH sessions. Callers beyond the bound wait in arrival
// order (a plain buffered channel would let a late caller overtake an early one), and a
// waiter whose context ends leaves the queue at once.
type fifoSemaphore struct {
	mu      sync.Mutex
	free    int
	waiters list.List // of chan struct{}, closed when the slot is handed over
}

func newFIFOSemaphore(n int) *fifoSemaphore {
	return &fifoSemaphore{free: n}
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
		case <-ch:
			// handed over while the context ended: pass it on
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

// queued reports how many callers are waiting, for tests and diagnostics.
func (s *fifoSemaphore) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters.Len()
}
