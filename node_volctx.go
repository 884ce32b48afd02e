package main

import (
	"net"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"srvlab.io/rds-csi/nvme"
)

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
		return t, nil, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q does not start with %s=%q: the controller writes the primary path first in both; the PV was edited by hand, make them agree", paramNVMeAddresses, raw, paramNVMeAddress, t.Address)
	}
	return t, paths, o, nil
}

// parseTarget validates the single-path part of a volume context.
func parseTarget(vc map[string]string, guard *nvme.Guard) (nvme.Target, nvme.Options, error) {
	var t nvme.Target
	var o nvme.Options
	t.NQN = strings.TrimSpace(vc[contextNQN])
	if t.NQN == "" {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the volume was not created by this driver (or its PV was edited); the controller sets it at CreateVolume", contextNQN)
	}
	if err := guard.Check(t.NQN); err != nil {
		return t, o, status.Errorf(codes.FailedPrecondition,
			"volume NQN %q is outside this node's managed NQN prefix %q: the node plugin never touches NVMe subsystems it does not own; if this is one of the driver's volumes, set --managed-nqn-prefix (CSI_MANAGED_NQN_PREFIX) to cover its NQNs (%v)",
			t.NQN, guard.Prefix(), err)
	}
	t.Address = strings.TrimSpace(vc[paramNVMeAddress])
	if t.Address == "" {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context has no %q: the RDS's NVMe/TCP IP address is needed to connect; the controller sets it at CreateVolume", paramNVMeAddress)
	}
	if net.ParseIP(t.Address) == nil {
		return t, o, status.Errorf(codes.InvalidArgument, "volume context %s=%q is not an IP address: NVMe/TCP connects to an IP (the kernel resolves no host names); set the StorageClass parameter %s to the RDS's IP", paramNVMeAddress, t.Address, paramNVMeAddress)
	}
	port, _, err := mustOption(paramNVMePort).contextValue(vc)
	if err != nil {
		return t, o, status.Error(codes.InvalidArgument, err.Error())
	}
	t.Port, t.NSID = port, 1
	for _, opt := range volumeOptions {
		if opt.connect == nil {
			continue
		}
		// Options the context leaves out stay nil: nvme sends its defaults for those
		// it has one for (the table's), the kernel's apply to the rest.
		v, set, err := opt.contextValue(vc)
		if err != nil {
			return t, o, status.Error(codes.InvalidArgument, err.Error())
		}
		if set {
			opt.connect(&o, v)
		}
	}
	return t, o, nil
}
