package main

import (
	"context"
	"errors"
	"time"

	"srvlab.io/rds-csi/routeros"
)

// rdsOps runs the controller's RouterOS operations. Each runs under the caller's deadline
// or --rds-command-timeout, whichever ends first, so no RPC waits on the RDS without bound;
// and each answer from the RDS (also "not found") tells the health loop the RDS is up.
type rdsOps struct {
	client  *routeros.Client
	timeout time.Duration
	health  *rdsHealth
}

// rdsCall runs one operation under the command bound and records whether the RDS answered.
func rdsCall[T any](ctx context.Context, r *rdsOps, op func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	v, err := op(ctx)
	var ce *routeros.CommandError
	if err == nil || errors.As(err, &ce) && ce.Kind != routeros.KindTransport {
		r.health.markOK()
	}
	return v, err
}

// done adapts an operation that returns only an error.
func done(op func(context.Context) error) func(context.Context) (struct{}, error) {
	return func(ctx context.Context) (struct{}, error) { return struct{}{}, op(ctx) }
}

func (r *rdsOps) createDisk(ctx context.Context, req routeros.CreateDiskRequest) (*routeros.Disk, error) {
	return rdsCall(ctx, r, func(ctx context.Context) (*routeros.Disk, error) { return r.client.CreateDisk(ctx, req) })
}

func (r *rdsOps) getDisk(ctx context.Context, slot string) (*routeros.Disk, error) {
	return rdsCall(ctx, r, func(ctx context.Context) (*routeros.Disk, error) { return r.client.GetDisk(ctx, slot) })
}

func (r *rdsOps) listDisks(ctx context.Context) ([]routeros.Disk, error) {
	return rdsCall(ctx, r, func(ctx context.Context) ([]routeros.Disk, error) { return r.client.ListDisks(ctx, "") })
}

func (r *rdsOps) resizeDisk(ctx context.Context, slot string, size int64) (*routeros.Disk, error) {
	return rdsCall(ctx, r, func(ctx context.Context) (*routeros.Disk, error) { return r.client.ResizeDisk(ctx, slot, size) })
}

func (r *rdsOps) removeDisk(ctx context.Context, slot string) error {
	_, err := rdsCall(ctx, r, done(func(ctx context.Context) error { return r.client.RemoveDisk(ctx, slot) }))
	return err
}

func (r *rdsOps) removeFile(ctx context.Context, p string) error {
	_, err := rdsCall(ctx, r, done(func(ctx context.Context) error { return r.client.RemoveFile(ctx, p) }))
	return err
}

func (r *rdsOps) listFiles(ctx context.Context, dir string) ([]routeros.File, error) {
	return rdsCall(ctx, r, func(ctx context.Context) ([]routeros.File, error) { return r.client.ListFiles(ctx, dir) })
}

func (r *rdsOps) poolCapacity(ctx context.Context, p string) (routeros.Pool, error) {
	return rdsCall(ctx, r, func(ctx context.Context) (routeros.Pool, error) { return r.client.PoolCapacity(ctx, p) })
}
