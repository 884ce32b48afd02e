package nvme

import (
	"fmt"
	"regexp"
	"strings"
)

// maxNQNLen is the kernel's limit: NVMF_NQN_SIZE is 223 including the terminating NUL.
const maxNQNLen = 223

// slotPrefixRe is the slot-style prefix: it matches the part of an NQN after its last ':'
// (the RDS slot, which is the volume ID, e.g. "pvc-<uuid>").
var slotPrefixRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{3,}$`)

// slotNameRe is a whole RDS slot name, the subsystem NQN of RouterOS before 7.21.
var slotNameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// ValidatePrefix checks a managed NQN prefix. Two forms are accepted:
//   - an NQN prefix: starts with "nqn.", has a naming authority, a ':' and at least one
//     character after it, and is shorter than 223 bytes (e.g. "nqn.2000-02.com.mikrotik:pvc-");
//   - a slot prefix: at least 4 characters of [a-z0-9-] (e.g. "pvc-"), matched against the
//     part of each NQN after its last ':'.
//
// A prefix that stops at the ':' is refused: it would claim every NQN of that naming
// authority, which on a diskless node includes the subsystem holding its own /var.
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

// badNQNChar describes the first character of s that has no place in an NQN we send to
// the kernel: a ',' would inject options into the connect string, and whitespace or
// control characters never occur in real NQNs. It returns "" when s is clean.
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

// Guard decides which NQNs this driver may touch. It is the only gate: connect,
// disconnect, rescan, resolve, health and the sweep all ask it first.
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

// Manages reports whether nqn is a well-formed NQN inside the managed prefix. The part
// after the prefix must be non-empty: the prefix alone names no volume.
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

// reject explains why nqn is not managed, or returns "".
func (g *Guard) reject(nqn string) string {
	// RouterOS before 7.21 names each export's subsystem after its slot ("pvc-…", no
	// "nqn." form); a slot-style prefix exists for exactly those, so there a bare slot name
	// is a valid subsystem name.
	bareSlot := g.slot && !strings.Contains(nqn, ":") && slotNameRe.MatchString(nqn)
	if !bareSlot && !strings.HasPrefix(nqn, "nqn.") || len(nqn) >= maxNQNLen {
		return fmt.Sprintf("it is not a valid NQN (must start with \"nqn.\" and be under %d bytes)", maxNQNLen)
	}
	if bad := badNQNChar(nqn); bad != "" {
		return "it is not a valid NQN: it contains " + bad
	}
	name, what := nqn, "managed prefix"
	if g.slot {
		// The slot is the part after the NQN's last ':', or the whole bare slot name.
		name, what = nqn[strings.LastIndexByte(nqn, ':')+1:], "managed slot prefix (matched after the last ':')"
	}
	if !strings.HasPrefix(name, g.prefix) || len(name) == len(g.prefix) {
		return fmt.Sprintf("it is outside the %s %q; this driver never touches subsystems it does not own", what, g.prefix)
	}
	return ""
}
