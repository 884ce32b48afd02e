package routeros

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFIFOSemaphoreOrder(t *testing.T) {
	s := newFIFOSemaphore(1)
	ctx := context.Background()
	if err := s.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 5)
	for i := range 5 {
		go func() {
			if err := s.acquire(ctx); err != nil {
				t.Error(err)
				return
			}
			order <- i
			s.release()
		}()
		waitQueued(t, s, i+1)
	}
	s.release()
	for want := range 5 {
		if got := <-order; got != want {
			t.Fatalf("waiter %d ran as number %d", got, want)
		}
	}
}

func TestFIFOSemaphoreContext(t *testing.T) {
	s := newFIFOSemaphore(1)
	if err := s.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := s.acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire while full: %v", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("queued caller left after %v", time.Since(start))
	}
	if s.queued() != 0 {
		t.Errorf("a caller that gave up is still queued")
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ccancel()
	if err := s.acquire(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("acquire with a cancelled context: %v", err)
	}
	// the slot is still there for the next caller once released
	s.release()
	if err := s.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestFIFOSemaphoreHandoffRace: a slot handed over just as the waiter's context ends is
// passed on, never lost.
func TestFIFOSemaphoreHandoffRace(t *testing.T) {
	for range 200 {
		s := newFIFOSemaphore(1)
		_ = s.acquire(context.Background())
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- s.acquire(ctx) }()
		waitQueued(t, s, 1)
		go cancel()
		s.release()
		if err := <-errc; err == nil {
			s.release()
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
		if err := s.acquire(ctx2); err != nil {
			t.Fatalf("slot lost: %v", err)
		}
		cancel2()
	}
}

func waitQueued(t *testing.T, s *fifoSemaphore, n int) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); s.queued() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d queued, want %d", s.queued(), n)
		}
	}
}

func newFIFOSemaphore(n int) *fifoSemaphore { return &fifoSemaphore{free: n} }

// queued reports how many callers are waiting.
func (s *fifoSemaphore) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters.Len()
}
