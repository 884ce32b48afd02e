package main

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/routeros"
)

// rdsStatus turns a RouterOS failure while doing `what` into the gRPC status the CO acts
// on. An RDS that cannot be reached is Unavailable (retried), never NotFound (which would
// tell the CO a volume is gone) or Internal.
func (c *controllerService) rdsStatus(what string, err error) error {
	var ce *routeros.CommandError
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Errorf(codes.DeadlineExceeded, "%s: the RDS at %s did not answer in time: %v; it is retried — if this persists, check the RDS's load and the network, or raise --rds-command-timeout", what, c.rdsAddr, err)
	case errors.Is(err, context.Canceled):
		return status.Errorf(codes.Canceled, "%s: the caller gave up: %v", what, err)
	case errors.Is(err, routeros.ErrTransport):
		return status.Errorf(codes.Unavailable, "%s: cannot reach the RDS at %s over SSH: %v; check that the RDS is up and reachable from the controller, and the controller's --rds-address, --rds-ssh-port, SSH key and known_hosts", what, c.rdsAddr, err)
	case errors.Is(err, routeros.ErrNotFound):
		return status.Errorf(codes.NotFound, "%s: %v", what, err)
	case errors.Is(err, routeros.ErrAlreadyExists):
		return status.Errorf(codes.AlreadyExists, "%s: %v", what, err)
	case errors.Is(err, routeros.ErrNoSpace):
		return status.Errorf(codes.ResourceExhausted, "%s: the RDS pool is full: %v; free space on the pool", what, err)
	case errors.Is(err, routeros.ErrInvalidArgument) && !errors.As(err, &ce):
		// refused before anything was sent: a value from the request
		return status.Errorf(codes.InvalidArgument, "%s: %v", what, err)
	case errors.Is(err, routeros.ErrInvalidArgument):
		return status.Errorf(codes.Internal, "%s: the RDS rejected the command rds-csi sent: %v; this RouterOS version may not support it: report it with the output of /system resource print", what, err)
	}
	return status.Errorf(codes.Internal, "%s: the RDS refused: %v", what, err)
}

// noSpaceStatus is ResourceExhausted for an RDS pool too full for need bytes, with the
// pool's free space read back so the user sees how much is missing.
func (c *controllerService) noSpaceStatus(ctx context.Context, what, volumePath string, need int64, cause error) error {
	pool, err := c.client.PoolCapacity(ctx, volumePath)
	if err != nil {
		return status.Errorf(codes.ResourceExhausted, "%s: the RDS has not enough space for %s (%v); its free space could not be read: %v; free space on the pool holding %s",
			what, humanBytes(need), cause, err, volumePath)
	}
	c.recordPool(pool)
	return status.Errorf(codes.ResourceExhausted, "%s: the RDS pool %q has %s free (%d bytes) and this needs %s (%d bytes): free space on the pool (delete unused volumes) or ask for less",
		what, pool.Name, humanBytes(pool.Free), pool.Free, humanBytes(need), need)
}

// busy is the answer when another operation holds the volume: the sidecars retry Aborted.
func busy(id string) error {
	return status.Errorf(codes.Aborted, "an operation on volume %s is already in progress; retry when it has finished", id)
}

// required is InvalidArgument for a missing request field.
func required(field, rpc string) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf("%s is required in %s", field, rpc))
}
