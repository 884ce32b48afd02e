package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/mount"
	"srvlab.io/rds-csi/nvme"
)

func TestNodeErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code codes.Code
	}{
		{nvme.ErrTimeout, codes.DeadlineExceeded},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{context.Canceled, codes.Canceled},
		{nvme.ErrBadOption, codes.InvalidArgument},
		{nvme.ErrSubsystemUnknown, codes.NotFound},
		{nvme.ErrUnreachable, codes.Unavailable},
		{nvme.ErrNotLive, codes.Unavailable},
		{nvme.ErrNotConnected, codes.Unavailable},
		{nvme.ErrNoDisk, codes.Unavailable},
		{nvme.ErrNotManaged, codes.FailedPrecondition},
		{nvme.ErrIdentityConflict, codes.FailedPrecondition},
		{nvme.ErrFabricsMissing, codes.FailedPrecondition},
		{mount.ErrNotBlank, codes.FailedPrecondition},
		{mount.ErrNeedsRepair, codes.FailedPrecondition},
		{mount.ErrInUse, codes.FailedPrecondition},
		{unix.EUCLEAN, codes.FailedPrecondition},
		{mount.ErrMountStorm, codes.ResourceExhausted},
		{errors.New("something else"), codes.Internal},
		{status.Error(codes.Aborted, "kept as it is"), codes.Aborted},
	} {
		wrapped := fmt.Errorf("connect pvc-1: %w", tc.err)
		err := nodeStatus("stage volume pvc-1", wrapped)
		if status.Code(err) != tc.code {
			t.Errorf("%v: code %v, want %v", tc.err, status.Code(err), tc.code)
		}
		if !strings.Contains(status.Convert(err).Message(), tc.err.Error()) {
			t.Errorf("%v: message %q lost the cause", tc.err, status.Convert(err).Message())
		}
	}
	if nodeStatus("x", nil) != nil {
		t.Error("nil error became a status")
	}
}
