package main

import (
	"context"
	"errors"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

// nodeStatus turns an error of the nvme or mount packages into a gRPC status with the
// code the CO acts on, keeping the message (which already says what is wrong and how to
// fix it) behind what the node was doing. An error that already is a status passes
// through unchanged.
func nodeStatus(doing string, err error) error {
	if err == nil {
		return nil
	}
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		return err
	}
	return status.Errorf(nodeCode(err), "%s: %v", doing, err)
}

func nodeCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nvme.ErrTimeout):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, nvme.ErrBadOption):
		return codes.InvalidArgument
	case errors.Is(err, nvme.ErrSubsystemUnknown):
		return codes.NotFound
	case errors.Is(err, nvme.ErrUnreachable), errors.Is(err, nvme.ErrNotLive),
		errors.Is(err, nvme.ErrNotConnected), errors.Is(err, nvme.ErrNoDisk):
		return codes.Unavailable
	case errors.Is(err, nvme.ErrNotManaged), errors.Is(err, nvme.ErrIdentityConflict), errors.Is(err, nvme.ErrFabricsMissing),
		errors.Is(err, mount.ErrNotBlank), errors.Is(err, mount.ErrNeedsRepair), errors.Is(err, mount.ErrInUse),
		errors.Is(err, unix.EUCLEAN):
		return codes.FailedPrecondition
	case errors.Is(err, mount.ErrMountStorm):
		return codes.ResourceExhausted
	default:
		return codes.Internal
	}
}
