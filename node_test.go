package main

import (
	"cmp"
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

const testPrefix = "nqn.2000-02.com.mikrotik:pvc-"

func testGuard(t testing.TB) *nvme.Guard {
	t.Helper()
	g, err := nvme.NewGuard(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestNodeVolumeContext(t *testing.T) {
	base := func(kv ...string) map[string]string {
		m := map[string]string{contextNQN: testPrefix + "1", paramNVMeAddress: "10.0.0.5"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	intp := func(v int) *int { return &v }
	for _, tc := range []struct {
		name     string
		vc       map[string]string
		code     codes.Code
		msg      string // part of the error message
		port     int
		ctrlLoss *int
		queue    *int
		paths    string // every path, comma separated; "" means the address alone
	}{
		{name: "defaults", vc: base(), port: 4420},
		{name: "earlier driver's PV", vc: base(paramNVMePort, "4421", paramCtrlLossTmo, "-1", paramReconnectDelay, "5", paramKeepAliveTmo, "10", "volumePath", "/storage-pool/metal-csi", "migrationTimeoutSeconds", "300"),
			port: 4421, ctrlLoss: intp(-1)},
		{name: "all options", vc: base(paramFastIOFailTmo, "-1", paramNrIOQueues, "2", paramQueueSize, "128"), port: 4420, queue: intp(128)},
		{name: "blank option means default", vc: base(paramCtrlLossTmo, " "), port: 4420},
		{name: "no nqn", vc: map[string]string{paramNVMeAddress: "10.0.0.5"}, code: codes.InvalidArgument, msg: `no "nqn"`},
		{name: "nqn outside the prefix", vc: base(contextNQN, "nqn.2024-01.io.nixos:var"), code: codes.FailedPrecondition, msg: `"nqn.2024-01.io.nixos:var" is outside this node's managed NQN prefix "` + testPrefix + `"`},
		{name: "no address", vc: map[string]string{contextNQN: testPrefix + "1"}, code: codes.InvalidArgument, msg: "nvmeAddress"},
		{name: "host name", vc: base(paramNVMeAddress, "rds.lan"), code: codes.InvalidArgument, msg: "not an IP address"},
		{name: "port text", vc: base(paramNVMePort, "nvme"), code: codes.InvalidArgument, msg: `nvmePort="nvme" must be a whole number from 1 to 65535`},
		{name: "port range", vc: base(paramNVMePort, "0"), code: codes.InvalidArgument, msg: `nvmePort="0" must be a whole number from 1 to 65535`},
		{name: "ctrl_loss below -1", vc: base(paramCtrlLossTmo, "-2"), code: codes.InvalidArgument, msg: `ctrlLossTmo="-2" must be a whole number from -1 to 31536000`},
		{name: "reconnect 0", vc: base(paramReconnectDelay, "0"), code: codes.InvalidArgument, msg: `reconnectDelay="0" must be`},
		{name: "keep-alive 0", vc: base(paramKeepAliveTmo, "0"), code: codes.InvalidArgument, msg: `keepAliveTmo="0" must be`},
		{name: "keep-alive beyond the controller's limit", vc: base(paramKeepAliveTmo, "3601"), code: codes.InvalidArgument, msg: "from 1 to 3600"},
		{name: "queue size", vc: base(paramQueueSize, "2048"), code: codes.InvalidArgument, msg: "from 16 to 1024"},
		{name: "two paths", vc: base(paramNVMeAddresses, "10.0.0.5,10.0.1.5"), port: 4420, paths: "10.0.0.5,10.0.1.5"},
		{name: "empty paths key: the address alone", vc: base(paramNVMeAddresses, ""), port: 4420},
		{name: "paths not starting with the address", vc: base(paramNVMeAddresses, "10.0.1.5,10.0.0.5"), code: codes.InvalidArgument, msg: "does not start with nvmeAddress"},
		{name: "bad path", vc: base(paramNVMeAddresses, "10.0.0.5,rds-b"), code: codes.InvalidArgument, msg: `"rds-b", which is not an IP address`},
		{name: "duplicate path", vc: base(paramNVMeAddresses, "10.0.0.5,10.0.0.5"), code: codes.InvalidArgument, msg: "twice"},
		{name: "too many paths", vc: base(paramNVMeAddresses, "10.0.0.5,10.0.0.6,10.0.0.7,10.0.0.8,10.0.0.9"), code: codes.InvalidArgument, msg: "at most 4"},
		{name: "comma injection", vc: base(paramCtrlLossTmo, "5,nqn=x"), code: codes.InvalidArgument, msg: "must be a whole number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tgt, paths, o, err := parseVolumeContext(tc.vc, testGuard(t))
			if status.Code(err) != tc.code {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tc.code)
			}
			if err != nil {
				if !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("message %q lacks %q", err, tc.msg)
				}
				return
			}
			if tgt.Port != tc.port || tgt.NSID != 1 || tgt.NQN != tc.vc[contextNQN] || tgt.Address != tc.vc[paramNVMeAddress] {
				t.Fatalf("target %+v", tgt)
			}
			if want := cmp.Or(tc.paths, tc.vc[paramNVMeAddress]); strings.Join(paths, ",") != want {
				t.Fatalf("paths %q, want %q", paths, want)
			}
			if (o.CtrlLossTmo == nil) != (tc.ctrlLoss == nil) || (o.CtrlLossTmo != nil && *o.CtrlLossTmo != *tc.ctrlLoss) {
				t.Fatalf("ctrl_loss_tmo %v, want %v", o.CtrlLossTmo, tc.ctrlLoss)
			}
			if (o.QueueSize == nil) != (tc.queue == nil) || (o.QueueSize != nil && *o.QueueSize != *tc.queue) {
				t.Fatalf("queue_size %v, want %v", o.QueueSize, tc.queue)
			}
		})
	}
}
