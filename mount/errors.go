package mount

import "errors"

// Sentinel errors let callers map failures to the right response (for CSI:
// FailedPrecondition, ResourceExhausted, ...) with errors.Is.
var (
	// ErrNotBlank: Format refused because the device is not provably blank.
	ErrNotBlank = errors.New("device is not blank")
	// ErrNeedsRepair: the filesystem has errors a safe automatic check
	// could not fix; a human must repair it.
	ErrNeedsRepair = errors.New("filesystem needs repair")
	// ErrInUse: the device or path is mounted or busy, so the operation
	// would be unsafe.
	ErrInUse = errors.New("in use")
	// ErrMountStorm: the source already has too many mounts.
	ErrMountStorm = errors.New("too many mounts of one source")
)
