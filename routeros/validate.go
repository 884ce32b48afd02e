package routeros

import (
	"fmt"
	"path"
	"strings"
)

// Every value that reaches a command is first checked against an allow-list here and then
// quoted; the allow-lists exclude everything RouterOS treats as syntax (quotes, `$`, `[ ]`,
// `;`, spaces, control characters), so quoting is a second line of defence, not the only one.

const (
	maxSlotLen      = 64 // pvc-<uuid> is 40; the claimed 32-character limit is unverified
	maxPathLen      = 1024
	maxComponentLen = 255
	maxNQNLen       = 223 // NVMe Base Specification: NQNs are at most 223 bytes
)

// ValidateSlot checks a disk slot name: 1–64 characters of [a-z0-9-], starting and
// ending with a letter or digit (Kubernetes PV names like pvc-<uuid> qualify).
func ValidateSlot(slot string) error {
	if slot == "" || len(slot) > maxSlotLen {
		return invalidf("slot %q must be 1 to %d characters long", clip(slot, 80), maxSlotLen)
	}
	if !isSlotText(slot) {
		return invalidf("slot %q may contain only lower-case letters, digits and '-'", clip(slot, 80))
	}
	if slot[0] == '-' || slot[len(slot)-1] == '-' {
		return invalidf("slot %q must start and end with a letter or digit", slot)
	}
	return nil
}

// validateSlotPrefix checks a prefix for ListDisks: empty, or slot characters only.
func validateSlotPrefix(prefix string) error {
	if len(prefix) > maxSlotLen || !isSlotText(prefix) {
		return invalidf("slot prefix %q may contain only lower-case letters, digits and '-' (at most %d)", clip(prefix, 80), maxSlotLen)
	}
	return nil
}

func isSlotText(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// ValidatePath checks a RouterOS file path: absolute, clean (no `.`/`..` components, no
// double or trailing slash), made of [A-Za-z0-9._-] components, with a pool and at least
// one name below it. With bases, p must also lie strictly below one of them, compared
// component by component (/pool/vol is not below /pool/v).
func ValidatePath(p string, bases ...string) error {
	if err := validateCleanPath(p); err != nil {
		return err
	}
	if strings.Count(p, "/") < 2 {
		return invalidf("path %q names a pool, not a file or directory in one: give /<pool>/<name>", p)
	}
	if len(bases) == 0 {
		return nil
	}
	for _, b := range bases {
		if strings.HasPrefix(p, strings.TrimSuffix(b, "/")+"/") {
			return nil
		}
	}
	return invalidf("path %q is not below an allowed base (%s)", p, strings.Join(bases, ", "))
}

func validateCleanPath(p string) error {
	if p == "" || p[0] != '/' {
		return invalidf("path %q must be absolute (start with '/')", clip(p, 80))
	}
	if len(p) > maxPathLen {
		return invalidf("path %q… is longer than %d bytes", clip(p, 80), maxPathLen)
	}
	if path.Clean(p) != p || p == "/" {
		return invalidf("path %q must be clean: no '.' or '..' components, no repeated or trailing '/'", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if len(c) > maxComponentLen {
			return invalidf("path %q has a component longer than %d bytes", clip(p, 80), maxComponentLen)
		}
		for i := 0; i < len(c); i++ {
			if b := c[i]; !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '_' || b == '-') {
				return invalidf("path %q contains %q: only letters, digits, '.', '_', '-' and '/' are allowed", clip(p, 80), b)
			}
		}
	}
	return nil
}

// maxCommentLen bounds disk comments this package sets.
const maxCommentLen = 255

// ValidateComment checks a comment for an item: at most 255 characters of letters, digits,
// spaces and `.:_-/=`, nothing RouterOS could read as syntax even before quoting.
func ValidateComment(s string) error {
	if len(s) > maxCommentLen {
		return invalidf("comment %q… is longer than %d bytes", clip(s, 80), maxCommentLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(" .:_-/=", c) >= 0) {
			return invalidf("comment %q contains %q: only letters, digits, spaces and '.:_-/=' are allowed", clip(s, 80), c)
		}
	}
	return nil
}

// ValidateNQN checks an NVMe Qualified Name: at most 223 bytes, `nqn.yyyy-mm.` followed by
// a reverse domain name and optionally `:` and a string, or the `nqn.2014-08.org.nvmexpress:uuid:`
// form. The string part is limited to [A-Za-z0-9._:-] (the NVMe rules allow more UTF-8;
// nothing this driver names needs it, and nothing else can reach the RouterOS console).
func ValidateNQN(nqn string) error {
	if len(nqn) > maxNQNLen {
		return invalidf("NQN %q… is longer than %d bytes", clip(nqn, 80), maxNQNLen)
	}
	rest, ok := strings.CutPrefix(nqn, "nqn.")
	if !ok || len(rest) < 8 || !allDigits(rest[:4]) || rest[4] != '-' || !allDigits(rest[5:7]) || rest[7] != '.' {
		return invalidf("NQN %q must start with nqn.yyyy-mm. (e.g. nqn.2000-02.com.mikrotik:pvc-…)", clip(nqn, 80))
	}
	if m := rest[5:7]; m < "01" || m > "12" {
		return invalidf("NQN %q has month %s: want 01 to 12", nqn, m)
	}
	domain, id, hasID := strings.Cut(rest[8:], ":")
	if domain == "" || domain[0] == '.' || domain[len(domain)-1] == '.' || strings.Contains(domain, "..") {
		return invalidf("NQN %q needs a reverse domain name after the date (e.g. com.mikrotik)", nqn)
	}
	for i := 0; i < len(domain); i++ {
		if c := domain[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return invalidf("NQN %q: the domain may contain only letters, digits, '.' and '-'", nqn)
		}
	}
	if hasID && id == "" {
		return invalidf("NQN %q ends with ':': give the name after it or drop the ':'", nqn)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':') {
			return invalidf("NQN %q contains %q: only letters, digits, '.', '-', '_' and ':' are allowed", nqn, c)
		}
	}
	return nil
}

// invalidf builds an ErrInvalidArgument error; nothing was sent to the RDS.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidArgument, fmt.Sprintf(format, args...))
}
