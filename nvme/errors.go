package nvme

import "errors"

// Errors returned by this package, for errors.Is. Every returned error wraps one of these
// and carries a message that names what is wrong and how to fix it.
var (
	// ErrFabricsMissing: /dev/nvme-fabrics does not exist (nvme-tcp is not loaded).
	ErrFabricsMissing = errors.New("NVMe over Fabrics is not available on this host")
	// ErrUnreachable: nothing answered at the target address and port.
	ErrUnreachable = errors.New("NVMe/TCP target unreachable")
	// ErrSubsystemUnknown: the target does not export the NQN or does not allow this host.
	ErrSubsystemUnknown = errors.New("NVMe subsystem unknown to the target or host not allowed")
	// ErrBadOption: the connect options are invalid or unsupported by this kernel.
	ErrBadOption = errors.New("invalid NVMe connect option")
	// ErrIdentityConflict: the host NQN/ID pair conflicts with one already in use on this host,
	// or the identity files are unusable.
	ErrIdentityConflict = errors.New("NVMe host identity conflict")
	// ErrNotManaged: the NQN is outside the managed prefix; the package refuses to touch it.
	ErrNotManaged = errors.New("NQN is not managed by this driver")
	// ErrNotConnected: no controller of the subsystem exists on this host.
	ErrNotConnected = errors.New("NVMe subsystem not connected")
	// ErrNotLive: the subsystem is connected but no controller is live (target unreachable,
	// reconnecting).
	ErrNotLive = errors.New("no live NVMe controller")
	// ErrNoDisk: the subsystem is connected but the namespace has no usable disk.
	ErrNoDisk = errors.New("NVMe namespace has no disk")
	// ErrTimeout: the operation did not finish before its deadline.
	ErrTimeout = errors.New("NVMe operation timed out")
)
