package main

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// copyState reads dst once and judges its copy (a nil file: there is none yet).
func (c *controllerService) copyState(ctx context.Context, dst string, want int64) (copyState, error) {
	asked := c.copies.now()
	f, err := c.client.GetFile(ctx, dst)
	switch {
	case errors.Is(err, routeros.ErrNotFound):
		f = nil
	case err != nil:
		return copyState{}, err
	}
	return c.copies.state(dst, f, want, asked), nil
}

// awaitCopy follows the copy into dst until it is no longer running, or until the RPC
// must answer (see copyTracker.mayWait); the state then says which.
func (c *controllerService) awaitCopy(ctx context.Context, dst string, want int64) (copyState, error) {
	began := c.copies.now()
	for {
		st, err := c.copyState(ctx, dst, want)
		if err != nil || st.phase != copyRunning {
			return st, err
		}
		next := st.recheck
		if next.IsZero() {
			next = c.copies.now().Add(c.copies.poll)
		}
		if !c.copies.mayWait(ctx, began, next) {
			return st, nil
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-timer.C:
		case <-c.copies.finishedCh(dst):
		case <-ctx.Done():
		}
		timer.Stop()
		if ctx.Err() != nil {
			return st, nil
		}
	}
}

// startCopy starts the copy of src into dst unless dst is already there or being written;
// a stalled copy is removed and started again. It returns the copy's state before the
// start, for copyFailed to report.
func (c *controllerService) startCopy(ctx context.Context, src, dst string, want int64) (copyState, error) {
	st, err := c.copyState(ctx, dst, want)
	if err != nil {
		return st, err
	}
	switch st.phase {
	case copyStalled:
		c.log.Warn("a copy on the RDS stopped before it was complete; starting it again", "from", src, "to", dst, "state", st.detail)
		if err := c.client.RemoveFile(ctx, dst); err != nil {
			return st, err
		}
		c.copies.forget(dst)
		fallthrough
	case copyAbsent:
		c.copies.start(src, dst)
		return copyState{phase: copyRunning}, nil
	}
	return st, nil
}

// copyFailure cleans up after a copy command that failed — the partial file is removed,
// so the retry copies afresh — and says what went wrong. `what` names the operation,
// `dir` is where space ran out and `need` the bytes the copy needed.
func (c *controllerService) copyFailure(ctx context.Context, what, dst, dir string, need int64, cause error) error {
	if errors.Is(cause, routeros.ErrAlreadyExists) {
		// something made the file before the command ran: follow it on the retry
		return status.Errorf(codes.Aborted, "%s: %s appeared on the RDS while the copy started (%v); retry", what, dst, cause)
	}
	if err := c.client.RemoveFile(ctx, dst); err != nil {
		c.log.Warn("cannot remove the partial copy; the retry removes it", "file", dst, "err", err)
	}
	c.copies.forget(dst)
	if errors.Is(cause, routeros.ErrNoSpace) {
		return c.noSpaceStatus(ctx, what, dir, need, cause)
	}
	return c.rdsStatus(what+": the copy failed and is started again on the retry", cause)
}
