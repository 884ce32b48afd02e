// Package nvme attaches and detaches NVMe/TCP volumes through the kernel's own interface
// (connect strings to /dev/nvme-fabrics, sysfs; no nvme-cli, no udev). It knows nothing of
// CSI or RouterOS. Two safety rules: every operation naming a subsystem goes through the
// Guard of the managed NQN prefix (a diskless node may boot its own /var over NVMe/TCP),
// and a disk is found in sysfs on every call by NQN and namespace ID, never built from
// numbers (the kernel renumbers disks after a controller loss).
package nvme

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// Errors, for errors.Is; every error wraps one and says what is wrong and how to fix it.
var (
	ErrFabricsMissing   = errors.New("NVMe over Fabrics is not available on this host") // nvme-tcp not loaded
	ErrUnreachable      = errors.New("NVMe/TCP target unreachable")
	ErrSubsystemUnknown = errors.New("NVMe subsystem unknown to the target or host not allowed")
	ErrBadOption        = errors.New("invalid NVMe connect option") // or unsupported by this kernel
	// ErrIdentityConflict: the host NQN/ID pair conflicts with one in use, or the files are unusable.
	ErrIdentityConflict = errors.New("NVMe host identity conflict")
	ErrNotManaged       = errors.New("NQN is not managed by this driver") // outside the managed prefix
	ErrNotConnected     = errors.New("NVMe subsystem not connected")      // no controller on this host
	ErrNotLive          = errors.New("no live NVMe controller")           // connected, all reconnecting
	ErrNoDisk           = errors.New("NVMe namespace has no disk")        // connected, no usable disk
	ErrTimeout          = errors.New("NVMe operation timed out")
)

// maxNQNLen is the kernel's limit: NVMF_NQN_SIZE is 223 including the terminating NUL.
const maxNQNLen = 223

var (
	slotPrefixRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{3,}$`) // matched after an NQN's last ':' (the RDS slot)
	slotNameRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)    // a bare slot: the NQN of RouterOS before 7.21
)

// ValidatePrefix checks a managed prefix: an NQN prefix ("nqn.", a naming authority, ':'
// and at least one character after it, under 223 bytes, e.g. "nqn.2000-02.com.mikrotik:pvc-"),
// or a slot prefix (at least 4 of [a-z0-9-], e.g. "pvc-") matched after each NQN's last ':'.
// A prefix ending at the ':' would claim the whole naming authority, a diskless node's /var too.
func ValidatePrefix(prefix string) error {
	const example = `e.g. "nqn.2000-02.com.mikrotik:pvc-" or the slot prefix "pvc-"`
	switch {
	case prefix == "":
		return fmt.Errorf("the managed NQN prefix is empty: set it to the prefix of the NQNs this driver creates (%s); the driver never touches subsystems outside it", example)
	case strings.HasPrefix(prefix, "nqn."):
		if bad := badNQNChar(prefix); bad != "" {
			return fmt.Errorf("managed NQN prefix %q contains %s: NQNs cannot contain it; use %s", prefix, bad, example)
		}
		if len(prefix) >= maxNQNLen {
			return fmt.Errorf("managed NQN prefix %q is %d bytes: NQNs are limited to %d bytes, so nothing could match; shorten it, %s", prefix, len(prefix), maxNQNLen-1, example)
		}
		colon := strings.IndexByte(prefix, ':')
		if colon < 0 {
			return fmt.Errorf("managed NQN prefix %q has no ':': an NQN is nqn.<date>.<reversed-domain>:<name>; include the ':' and the start of the volume names, %s", prefix, example)
		}
		if colon == len("nqn.") {
			return fmt.Errorf("managed NQN prefix %q has no naming authority before the ':'; use %s", prefix, example)
		}
		if colon == len(prefix)-1 {
			return fmt.Errorf("managed NQN prefix %q ends at the ':', so it would claim every NQN of that naming authority (a diskless node's own /var may be one of them); add the start of the volume names, e.g. %q", prefix, prefix+"pvc-")
		}
		return nil
	case slotPrefixRe.MatchString(prefix):
		return nil
	case len(prefix) < 4 && strings.Trim(prefix, "abcdefghijklmnopqrstuvwxyz0123456789-") == "":
		return fmt.Errorf("managed slot prefix %q is too short (%d characters, want at least 4) to tell volumes from other subsystems; use %s", prefix, len(prefix), example)
	default:
		return fmt.Errorf("managed NQN prefix %q is neither an NQN prefix (starting with \"nqn.\") nor a slot prefix (lower-case letters, digits and '-', at least 4); use %s", prefix, example)
	}
}

// badNQNChar describes the first character of s that has no place in an NQN ("" if none):
// a ',' would inject connect options; space and control characters are in no real NQN.
func badNQNChar(s string) string {
	for _, r := range s {
		switch {
		case r == ',':
			return "a ','"
		case r <= ' ' || r == 0x7f:
			return fmt.Sprintf("the control or space character %q", r)
		}
	}
	return ""
}

// Guard decides which NQNs this driver may touch: connect, disconnect, rescan, resolve,
// health and the sweep all ask it first.
type Guard struct {
	prefix string
	slot   bool // prefix applies to the part after the NQN's last ':'
}

// NewGuard validates prefix (see ValidatePrefix) and returns a Guard for it.
func NewGuard(prefix string) (*Guard, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, err
	}
	return &Guard{prefix: prefix, slot: !strings.HasPrefix(prefix, "nqn.")}, nil
}

// Prefix returns the managed prefix the guard was built from.
func (g *Guard) Prefix() string { return g.prefix }

// Manages reports whether nqn is a well-formed NQN strictly inside the managed prefix.
func (g *Guard) Manages(nqn string) bool {
	return g != nil && g.reject(nqn) == ""
}

// Check returns nil when nqn is managed, else an error wrapping ErrNotManaged that names it.
func (g *Guard) Check(nqn string) error {
	if g == nil {
		return fmt.Errorf("%w: no managed prefix is configured, so NQN %q is refused", ErrNotManaged, nqn)
	}
	if why := g.reject(nqn); why != "" {
		return fmt.Errorf("%w: refusing to touch NQN %q: %s", ErrNotManaged, nqn, why)
	}
	return nil
}

// reject explains why nqn is not managed, or returns "". With a slot prefix a bare slot
// name is an NQN too: RouterOS before 7.21 names each subsystem after its slot.
func (g *Guard) reject(nqn string) string {
	bareSlot := g.slot && !strings.Contains(nqn, ":") && slotNameRe.MatchString(nqn)
	if !bareSlot && !strings.HasPrefix(nqn, "nqn.") || len(nqn) >= maxNQNLen {
		return fmt.Sprintf("it is not a valid NQN (must start with \"nqn.\" and be under %d bytes)", maxNQNLen)
	}
	if bad := badNQNChar(nqn); bad != "" {
		return "it is not a valid NQN: it contains " + bad
	}
	name, what := nqn, "managed prefix"
	if g.slot {
		name, what = nqn[strings.LastIndexByte(nqn, ':')+1:], "managed slot prefix (matched after the last ':')"
	}
	if !strings.HasPrefix(name, g.prefix) || len(name) == len(g.prefix) {
		return fmt.Sprintf("it is outside the %s %q; this driver never touches subsystems it does not own", what, g.prefix)
	}
	return ""
}

// Target is where a volume's subsystem is exported.
type Target struct {
	Address string // IP address of the target (NVMe/TCP takes no host names)
	Port    int    // TCP port; 0 means 4420 (the kernel's own default for tcp is 8009)
	NQN     string // subsystem NQN, inside the managed prefix
	NSID    int    // namespace ID; 0 means 1
}

func (t Target) endpoint() string { return fmt.Sprintf("%s:%d", t.Address, t.Port) }

// Checked returns t with its defaults applied (port 4420, namespace 1), or an error
// wrapping ErrBadOption for an address, port or namespace ID no connect can use.
func (t Target) Checked() (Target, error) {
	t.Port, t.NSID = cmp.Or(t.Port, DefaultPort), cmp.Or(t.NSID, 1)
	switch {
	case net.ParseIP(t.Address) == nil:
		return t, fmt.Errorf("%w: target address %q is not an IP address: NVMe/TCP connects to an IP (the kernel resolves no host names); set the volume's nvmeAddress to the RDS's IP", ErrBadOption, t.Address)
	case t.Port < 1 || t.Port > 65535:
		return t, fmt.Errorf("%w: target port %d is not a TCP port; set the volume's nvmePort (usually 4420)", ErrBadOption, t.Port)
	case t.NSID < 1:
		return t, fmt.Errorf("%w: namespace ID %d: namespace IDs start at 1", ErrBadOption, t.NSID)
	}
	return t, nil
}

// Options are the per-connection kernel options; nil means DefaultCtrlLossTmo,
// DefaultReconnectDelay, or else the kernel's default.
type Options struct {
	CtrlLossTmo    *int // seconds; -1 = never give up
	ReconnectDelay *int // seconds between reconnect attempts, >= 1
	KeepAliveTmo   *int // seconds, >= 1
	FastIOFailTmo  *int // seconds; -1 = off (I/O is queued until the controller is lost)
	NrIOQueues     *int // >= 1
	QueueSize      *int // 16..1024
}

// Defaults: never give up on a controller (an appliance reboot must not turn volumes
// read-only), retry every 5 s.
const (
	DefaultCtrlLossTmo    = -1
	DefaultReconnectDelay = 5
	DefaultPort           = 4420
)

// Controller is one NVMe controller (a path to a subsystem), as sysfs shows it.
type Controller struct {
	Name      string // nvme3
	State     string // live, connecting, resetting, deleting, "deleting (no IO)", dead, new
	Transport string // tcp
	Address   string // the raw address attribute: traddr=…,trsvcid=…[,src_addr=…]
	TrAddr    string // parsed from Address
	TrSvcID   int    // parsed from Address
	HostNQN   string
	HostID    string
}

// Live reports whether the controller can carry I/O now.
func (c Controller) Live() bool { return c.State == "live" }

// dying is a controller state the kernel never recovers from.
func dying(state string) bool { return strings.HasPrefix(state, "deleting") || state == "dead" }

func describeControllers(ctrls []Controller) string {
	parts := make([]string, len(ctrls))
	for i, c := range ctrls {
		parts[i] = c.Name + " " + c.State
	}
	return strings.Join(parts, ", ")
}

// Disk is the usable block device of a namespace.
type Disk struct {
	Name         string // nvme1n2: found in sysfs, never built from numbers
	DevPath      string // <DevRoot>/<Name>
	Major, Minor uint32
	SizeBytes    int64
	NSID         int
	NQN          string
	WWID         string       // stable namespace identifier (e.g. uuid.…), "" if the kernel shows none
	Controllers  []Controller // all controllers of the subsystem
}

// Health is the state of a volume's controllers, for the node's volume condition.
type Health struct {
	Controllers []Controller
	Live        bool // at least one controller is live
	Connected   bool // at least one controller exists (false = gone)
}

// Subsystem is one kernel NVMe subsystem, managed by this driver or not.
type Subsystem struct {
	Name        string // nvme-subsys1
	NQN         string
	Managed     bool // inside the guard's prefix
	Controllers []Controller
	Disks       []Disk
}

// Features is what the kernel's fabrics interface supports.
type Features struct {
	// Options are the connect option names the kernel accepts; nil when it does not list
	// them (before 5.17): every option is then sent and the kernel rejects what it lacks.
	Options map[string]bool
}

// Supports reports whether the kernel accepts option name.
func (f Features) Supports(name string) bool { return f.Options == nil || f.Options[name] }

// parseFeatures reads "instance=-1,cntlid=-1,transport=%s,…,discovery,dhchap_secret=%s".
func parseFeatures(text string) Features {
	f := Features{Options: map[string]bool{}}
	for _, tok := range strings.Split(strings.TrimSpace(text), ",") {
		if name, _, _ := strings.Cut(tok, "="); name != "" && name != "instance" && name != "cntlid" {
			f.Options[name] = true
		}
	}
	return f
}

// connectOption is one option: kernel name, value, the default sent for nil (nil: the
// kernel's), and whether sysfs can change it on a live controller.
type connectOption struct {
	name     string
	val, def *int
	runtime  bool
}

func intp(v int) *int { return &v }

// Values are not range-checked here: the driver's table of volume options checks them, and
// the kernel refuses what it cannot use.
func (o Options) options() []connectOption {
	return []connectOption{
		{"ctrl_loss_tmo", o.CtrlLossTmo, intp(DefaultCtrlLossTmo), true},
		{"reconnect_delay", o.ReconnectDelay, intp(DefaultReconnectDelay), true},
		{"keep_alive_tmo", o.KeepAliveTmo, nil, false},
		{"fast_io_fail_tmo", o.FastIOFailTmo, nil, true},
		{"nr_io_queues", o.NrIOQueues, nil, false},
		{"queue_size", o.QueueSize, nil, false},
	}
}

// Sent returns the kernel names of the options a connect with o sends, in order.
func (o Options) Sent() []string {
	names := []string{"transport", "traddr", "trsvcid", "nqn", "hostnqn", "hostid"}
	for _, c := range o.options() {
		if c.val != nil || c.def != nil {
			names = append(names, c.name)
		}
	}
	return names
}

// connectString builds the option string for /dev/nvme-fabrics, every value validated;
// options the kernel does not list are refused rather than sent.
func connectString(t Target, id Identity, o Options, f Features) (string, error) {
	t, err := t.Checked()
	if err != nil {
		return "", err
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
	vals := map[string]string{"transport": "tcp", "traddr": t.Address, "trsvcid": strconv.Itoa(t.Port),
		"nqn": t.NQN, "hostnqn": id.HostNQN, "hostid": id.HostID}
	for _, c := range o.options() {
		if v := cmp.Or(c.val, c.def); v != nil {
			vals[c.name] = strconv.Itoa(*v)
		}
	}
	var opts []string
	for _, name := range o.Sent() {
		if !f.Supports(name) {
			return "", fmt.Errorf("%w: this host's kernel does not support the NVMe connect option %q; remove the StorageClass parameter that sets it, or use a newer kernel", ErrBadOption, name)
		}
		opts = append(opts, name+"="+vals[name])
	}
	return strings.Join(opts, ","), nil
}
