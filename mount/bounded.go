package mount

import (
	"context"
	"fmt"
	"time"
)

// defaultCallTimeout bounds a mount-table read or mount syscall whose
// context carries no deadline: callers forget, and an unbounded call on a
// dead NVMe path hangs an RPC forever.
const defaultCallTimeout = 30 * time.Second

// withDefaultDeadline returns ctx unchanged when it already has a deadline,
// otherwise a child bounded by d.
func withDefaultDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// bounded runs fn in its own goroutine and returns its result, or an error
// when ctx ends first. A syscall stuck in the kernel (D state) cannot be
// interrupted, so its goroutine lingers until the kernel lets go; the result
// channel is buffered so that goroutine never blocks on exit. Callers must
// treat a deadline error as "unknown outcome": the call may still complete.
func bounded[T any](ctx context.Context, what string, fn func() (T, error)) (T, error) {
	ctx, cancel := withDefaultDeadline(ctx, defaultCallTimeout)
	defer cancel()
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, fmt.Errorf("%s: not started: %w", what, err)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := fn()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%s: no answer before the deadline; the call may still complete in the background "+
			"(a hung storage path or a stuck mount is the usual cause; check dmesg for blocked tasks): %w", what, ctx.Err())
	}
}

// boundedErr is bounded for calls that only return an error.
func boundedErr(ctx context.Context, what string, fn func() error) error {
	_, err := bounded(ctx, what, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}
