package nvme

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Defaults the driver sends when Options leaves them nil: never give up on a controller
// (appliance reboots must not turn volumes read-only), retry every 5 s.
const (
	DefaultCtrlLossTmo    = -1
	DefaultReconnectDelay = 5
	DefaultPort           = 4420
)

// optionSpec is one per-connection option: its kernel name, value and accepted range.
type optionSpec struct {
	name     string
	val      *int
	def      *int // sent when val is nil; nil = leave to the kernel
	min, max int
	why      string // what the range protects, for the error message
}

func intp(v int) *int { return &v }

func (o Options) specs() []optionSpec {
	const noMax = int(^uint(0) >> 1)
	return []optionSpec{
		{"ctrl_loss_tmo", o.CtrlLossTmo, intp(DefaultCtrlLossTmo), -1, noMax, "-1 reconnects forever"},
		{"reconnect_delay", o.ReconnectDelay, intp(DefaultReconnectDelay), 1, noMax, "seconds between reconnect attempts"},
		{"keep_alive_tmo", o.KeepAliveTmo, nil, 1, noMax, "0 would switch keep-alive off, so a dead target is never noticed"},
		{"fast_io_fail_tmo", o.FastIOFailTmo, nil, -1, noMax, "-1 is off"},
		{"nr_io_queues", o.NrIOQueues, nil, 1, noMax, "at least one I/O queue"},
		{"queue_size", o.QueueSize, nil, 16, 1024, "the kernel's limits"},
	}
}

// connectString builds the option string written to /dev/nvme-fabrics. Every value is
// validated first; options the kernel does not list are refused rather than sent.
func connectString(t Target, id Identity, o Options, f Features) (string, error) {
	if net.ParseIP(t.Address) == nil {
		return "", fmt.Errorf("%w: target address %q is not an IP address: NVMe/TCP connects to an IP (the kernel resolves no host names); set the volume's nvmeAddress to the RDS's IP", ErrBadOption, t.Address)
	}
	if t.Port < 1 || t.Port > 65535 {
		return "", fmt.Errorf("%w: target port %d is not a TCP port; set the volume's nvmePort (usually 4420)", ErrBadOption, t.Port)
	}
	if t.NSID < 1 {
		return "", fmt.Errorf("%w: namespace ID %d: namespace IDs start at 1", ErrBadOption, t.NSID)
	}
	if bad := badNQNChar(t.NQN); bad != "" {
		return "", fmt.Errorf("%w: subsystem NQN %q contains %s", ErrBadOption, t.NQN, bad)
	}
	if err := validHostNQN(id.HostNQN); err != nil {
		return "", fmt.Errorf("%w: host NQN %q: %v", ErrIdentityConflict, id.HostNQN, err)
	}
	if err := validHostID(id.HostID); err != nil {
		return "", fmt.Errorf("%w: host ID %q: %v", ErrIdentityConflict, id.HostID, err)
	}
	opts := []string{
		"transport=tcp", "traddr=" + t.Address, "trsvcid=" + strconv.Itoa(t.Port), "nqn=" + t.NQN,
		"hostnqn=" + id.HostNQN, "hostid=" + id.HostID,
	}
	for _, s := range o.specs() {
		v := s.val
		if v == nil {
			v = s.def
		}
		if v == nil {
			continue
		}
		if *v < s.min || *v > s.max {
			rng := fmt.Sprintf("at least %d", s.min)
			if s.max < int(^uint(0)>>1) {
				rng = fmt.Sprintf("between %d and %d", s.min, s.max)
			}
			return "", fmt.Errorf("%w: %s=%d: must be %s (%s); fix the StorageClass parameter", ErrBadOption, s.name, *v, rng, s.why)
		}
		opts = append(opts, s.name+"="+strconv.Itoa(*v))
	}
	for _, kv := range opts {
		name, _, _ := strings.Cut(kv, "=")
		if !f.Supports(name) {
			return "", fmt.Errorf("%w: this host's kernel does not support the NVMe connect option %q; remove the StorageClass parameter that sets it, or use a newer kernel", ErrBadOption, name)
		}
	}
	return strings.Join(opts, ","), nil
}
