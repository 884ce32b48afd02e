package nvme

import (
	"context"
	"fmt"
)

// withDeadline runs f in its own goroutine and returns its result, or ctx's error
// (wrapped in ErrTimeout) as soon as ctx is done, even if f is still blocked in the
// kernel. A kernel call cannot be cancelled: f then finishes on its own, and late is
// called with its result so the caller can log what happened. What a late result means
// is documented where withDeadline is used.
func withDeadline[T any](ctx context.Context, what string, f func() (T, error), late func(T, error)) (T, error) {
	if err := ctx.Err(); err != nil { // no time left: do not start a kernel call at all
		var zero T
		return zero, fmt.Errorf("%w: %s: %w", ErrTimeout, what, err)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1) // buffered: f never blocks on a caller that has left
	go func() {
		v, err := f()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		go func() {
			r := <-done
			if late != nil {
				late(r.v, r.err)
			}
		}()
		var zero T
		return zero, fmt.Errorf("%w: %s: %w", ErrTimeout, what, ctx.Err())
	}
}
