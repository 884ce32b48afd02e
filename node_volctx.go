package main

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/nvme"
)

// Volume-context keys. Our controller writes them, and the earlier RDS driver's PVs carry
// the same names, so its volumes stage here unchanged.
const (
	ctxNQN            = "nqn"
	ctxAddress        = "nvmeAddress"
	ctxPort           = "nvmePort"
	ctxCtrlLossTmo    = "ctrlLossTmo"
	ctxReconnectDelay = "reconnectDelay"
	ctxKeepAliveTmo   = "keepAliveTmo"
	ctxFastIOFailTmo  = "fastIoFailTmo"
	ctxNrIOQueues     = "nrIoQueues"
	ctxQueueSize      = "queueSize"
)

// intOption is one integer volume-context key, its range and what the range protects.
type intOption struct {
	key      string
	min, max int
	why      string
	set      func(o *nvme.Options, v int)
}

const unbounded = int(^uint(0) >> 1)

var intOptions = []intOption{
	{ctxCtrlLossTmo, -1, unbounded, "seconds; -1 reconnects forever", func(o *nvme.Options, v int) { o.CtrlLossTmo = &v }},
	{ctxReconnectDelay, 1, unbounded, "seconds between reconnect attempts", func(o *nvme.Options, v int) { o.ReconnectDelay = &v }},
	{ctxKeepAliveTmo, 1, unbounded, "seconds; 0 would never notice a dead target", func(o *nvme.Options, v int) { o.KeepAliveTmo = &v }},
	{ctxFastIOFailTmo, -1, unbounded, "seconds; -1 is off", func(o *nvme.Options, v int) { o.FastIOFailTmo = &v }},
	{ctxNrIOQueues, 1, unbounded, "at least one I/O queue", func(o *nvme.Options, v int) { o.NrIOQueues = &v }},
	{ctxQueueSize, 16, 1024, "the kernel's limits", func(o *nvme.Options, v int) { o.QueueSize = &v }},
}

// parseVolumeContext validates the NVMe part of a volume context and returns where to
// connect and how: t.Address is the primary path, paths every path (t.Address first; one
// entry unless the context has nvmeAddresses). Options the context leaves out stay nil: nvme then applies the
// driver's defaults (ctrl_loss_tmo -1, reconnect_delay 5) and the kernel's for the rest.
// Errors are gRPC statuses: InvalidArgument for malformed values, FailedPrecondition for
// an NQN outside this node's managed prefix.
func parseVolumeContext(vc map[string]string, guard *nvme.Guard) (t nvme.Target, paths []string, o nvme.Options, err error) {
	t, o, err = parseTarget(vc, guard)
	if err != nil {
		return t, nil, o, err
	}
	raw, ok := vc[paramNVMeAddresses]
	if !ok || strings.TrimSpace(raw) == "" {
		return t, []string{t.Address}, o, nil
	}
	paths, msg := parseNVMeAddresses(raw)
	if msg != "" {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q %s: fix the StorageClass parameter %s", paramNVMeAddresses, raw, msg, paramNVMeAddresses)
	}
	if !sameAddress(paths[0], t.Address) {
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q does not start with %s=%q: the controller writes the primary path first in both; the PV was edited by hand, make them agree", paramNVMeAddresses, raw, ctxAddress, t.Address)
	}
	return t, paths, o, nil
}

// parseTarget validates the single-path part of a volume context.
func parseTarget(vc map[string]string, guard *nvme.Guard) (nvme.Target, nvme.Options, error) {
	var t nvme.Target
	var o nvme.Options
	t.NQN = strings.TrimSpace(vc[ctxNQN])
	if t.NQN == "" {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the volume was not created by this driver (or its PV was edited); the controller sets it at CreateVolume", ctxNQN)
	}
	if err := guard.Check(t.NQN); err != nil {
		return t, o, status.Errorf(codes.FailedPrecondition,
			"volume NQN %q is outside this node's managed NQN prefix %q: the node plugin never touches NVMe subsystems it does not own; if this is one of the driver's volumes, set --managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) to cover its NQNs (%v)",
			t.NQN, guard.Prefix(), err)
	}
	t.Address = strings.TrimSpace(vc[ctxAddress])
	if t.Address == "" {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the RDS's NVMe/TCP IP address is needed to connect; the controller sets it at CreateVolume", ctxAddress)
	}
	if net.ParseIP(t.Address) == nil {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q is not an IP address: NVMe/TCP connects to an IP (the kernel resolves no host names); set the StorageClass parameter %s to the RDS's IP", ctxAddress, t.Address, ctxAddress)
	}
	t.Port = nvme.DefaultPort
	if raw, ok := vc[ctxPort]; ok && strings.TrimSpace(raw) != "" {
		p, err := contextInt(ctxPort, raw, 1, 65535, "a TCP port, usually 4420")
		if err != nil {
			return t, o, err
		}
		t.Port = p
	}
	t.NSID = 1
	for _, opt := range intOptions {
		raw, ok := vc[opt.key]
		if !ok || strings.TrimSpace(raw) == "" {
			continue
		}
		v, err := contextInt(opt.key, raw, opt.min, opt.max, opt.why)
		if err != nil {
			return t, o, err
		}
		opt.set(&o, v)
	}
	return t, o, nil
}

func contextInt(key, raw string, lo, hi int, why string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "volume context %s=%q is not an integer (%s): fix the StorageClass parameter %s", key, raw, why, key)
	}
	if v < lo || v > hi {
		rng := fmt.Sprintf("at least %d", lo)
		if hi != unbounded {
			rng = fmt.Sprintf("between %d and %d", lo, hi)
		}
		return 0, status.Errorf(codes.InvalidArgument, "volume context %s=%d must be %s (%s): fix the StorageClass parameter %s", key, v, rng, why, key)
	}
	return v, nil
}
