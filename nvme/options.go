package nvme

import (
	"cmp"
	"fmt"
	"net"
	"slices"
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

// connectOption is one per-connection option: its kernel name, value, and the default
// sent when the value is nil (nil: leave it to the kernel).
type connectOption struct {
	name     string
	val, def *int
}

func intp(v int) *int { return &v }

// Values are not range-checked here: the driver checks each against its one table of
// volume options before it gets this far, and the kernel refuses what it cannot use.
func (o Options) options() []connectOption {
	return []connectOption{
		{"ctrl_loss_tmo", o.CtrlLossTmo, intp(DefaultCtrlLossTmo)},
		{"reconnect_delay", o.ReconnectDelay, intp(DefaultReconnectDelay)},
		{"keep_alive_tmo", o.KeepAliveTmo, nil},
		{"fast_io_fail_tmo", o.FastIOFailTmo, nil},
		{"nr_io_queues", o.NrIOQueues, nil},
		{"queue_size", o.QueueSize, nil},
	}
}

// baseOptions are sent on every connect, before the per-connection options.
var baseOptions = []string{"transport", "traddr", "trsvcid", "nqn", "hostnqn", "hostid"}

// Sent returns the kernel names of every connect option a connect with o sends, in the
// order it sends them.
func (o Options) Sent() []string {
	names := slices.Clone(baseOptions)
	for _, c := range o.options() {
		if c.val != nil || c.def != nil {
			names = append(names, c.name)
		}
	}
	return names
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
	for _, c := range o.options() {
		if v := cmp.Or(c.val, c.def); v != nil {
			opts = append(opts, c.name+"="+strconv.Itoa(*v))
		}
	}
	for _, kv := range opts {
		name, _, _ := strings.Cut(kv, "=")
		if !f.Supports(name) {
			return "", fmt.Errorf("%w: this host's kernel does not support the NVMe connect option %q; remove the StorageClass parameter that sets it, or use a newer kernel", ErrBadOption, name)
		}
	}
	return strings.Join(opts, ","), nil
}
