package routeros

import (
	"fmt"
	"math"
	"path"
	"strconv"
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
	maxCommentLen   = 255

	alnum     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	slotChars = "abcdefghijklmnopqrstuvwxyz0123456789-"
)

// firstBad returns the index of the first byte of s not in allowed, or -1.
func firstBad(s, allowed string) int {
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(allowed, s[i]) < 0 {
			return i
		}
	}
	return -1
}

// ValidateSlot checks a disk slot name: 1–64 characters of [a-z0-9-], starting and
// ending with a letter or digit (Kubernetes PV names like pvc-<uuid> qualify).
func ValidateSlot(slot string) error {
	switch {
	case slot == "" || len(slot) > maxSlotLen:
		return invalidf("slot %q must be 1 to %d characters long", clip(slot, 80), maxSlotLen)
	case firstBad(slot, slotChars) >= 0:
		return invalidf("slot %q may contain only lower-case letters, digits and '-'", clip(slot, 80))
	case slot[0] == '-' || slot[len(slot)-1] == '-':
		return invalidf("slot %q must start and end with a letter or digit", slot)
	}
	return nil
}

// validateSlotPrefix checks a prefix for ListDisks: empty, or slot characters only.
func validateSlotPrefix(prefix string) error {
	if len(prefix) > maxSlotLen || firstBad(prefix, slotChars) >= 0 {
		return invalidf("slot prefix %q may contain only lower-case letters, digits and '-' (at most %d)", clip(prefix, 80), maxSlotLen)
	}
	return nil
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
	switch {
	case p == "" || p[0] != '/':
		return invalidf("path %q must be absolute (start with '/')", clip(p, 80))
	case len(p) > maxPathLen:
		return invalidf("path %q… is longer than %d bytes", clip(p, 80), maxPathLen)
	case path.Clean(p) != p || p == "/":
		return invalidf("path %q must be clean: no '.' or '..' components, no repeated or trailing '/'", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if len(c) > maxComponentLen {
			return invalidf("path %q has a component longer than %d bytes", clip(p, 80), maxComponentLen)
		}
		if i := firstBad(c, alnum+"._-"); i >= 0 {
			return invalidf("path %q contains %q: only letters, digits, '.', '_', '-' and '/' are allowed", clip(p, 80), c[i])
		}
	}
	return nil
}

// ValidateComment checks a comment for an item: at most 255 characters of letters, digits,
// spaces and `.:_-/=`, nothing RouterOS could read as syntax even before quoting.
func ValidateComment(s string) error {
	if len(s) > maxCommentLen {
		return invalidf("comment %q… is longer than %d bytes", clip(s, 80), maxCommentLen)
	}
	if i := firstBad(s, alnum+" .:_-/="); i >= 0 {
		return invalidf("comment %q contains %q: only letters, digits, spaces and '.:_-/=' are allowed", clip(s, 80), s[i])
	}
	return nil
}

// ValidateNQN checks an NVMe Qualified Name: at most 223 bytes, `nqn.yyyy-mm.` followed by
// a reverse domain name and optionally `:` and a string (which covers the
// `nqn.2014-08.org.nvmexpress:uuid:` form). The string is limited to [A-Za-z0-9._:-]: the
// NVMe rules allow more UTF-8, but nothing this driver names needs it.
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
	switch {
	case domain == "" || domain[0] == '.' || domain[len(domain)-1] == '.' || strings.Contains(domain, ".."):
		return invalidf("NQN %q needs a reverse domain name after the date (e.g. com.mikrotik)", nqn)
	case firstBad(domain, alnum+".-") >= 0:
		return invalidf("NQN %q: the domain may contain only letters, digits, '.' and '-'", nqn)
	case hasID && id == "":
		return invalidf("NQN %q ends with ':': give the name after it or drop the ':'", nqn)
	}
	if i := firstBad(id, alnum+".-_:"); i >= 0 {
		return invalidf("NQN %q contains %q: only letters, digits, '.', '-', '_' and ':' are allowed", nqn, id[i])
	}
	return nil
}

// quote renders s as a RouterOS double-quoted string: `"`, `\`, `$` (a variable) and `?`
// (console help) are backslash-escaped, every byte outside printable ASCII becomes `\HH`.
// A control byte's hex starts with 0, 1 or 7, so `\HH` never reads as `\a`, `\b`, `\f`.
func quote(s string) string {
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\' || c == '$' || c == '?':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return string(append(b, '"'))
}

// unescape decodes the escapes RouterOS prints inside a quoted value. The letter escapes
// are tried first, as RouterOS does; an unknown escape stands for the character itself.
func unescape(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b = append(b, s[i])
			continue
		}
		i++
		if j := strings.IndexByte("_abfnrtv", s[i]); j >= 0 {
			b = append(b, " \a\b\f\n\r\t\v"[j])
		} else if n, err := strconv.ParseUint(s[i:min(i+2, len(s))], 16, 8); err == nil && i+1 < len(s) {
			b = append(b, byte(n))
			i++
		} else {
			b = append(b, s[i])
		}
	}
	return string(b)
}

const (
	kib, mib, gib, tib int64 = 1 << 10, 1 << 20, 1 << 30, 1 << 40

	// MaxDiskSize bounds sizes this package sends (1 PiB): far above any RDS pool, and
	// small enough that rounding can never overflow.
	MaxDiskSize = int64(1) << 50
)

// RoundUpMiB rounds bytes up to a whole MiB (the unit we allocate in, so a volume never
// gets less than requested). Zero and negative sizes give 0; sizes above MaxDiskSize are
// clamped to it.
func RoundUpMiB(bytes int64) int64 {
	if bytes <= 0 {
		return 0
	}
	return (min(bytes, MaxDiskSize) + mib - 1) / mib * mib
}

// FormatSize renders a size for `file-size=`: rounded up to a whole MiB, then in the
// largest binary unit that divides it exactly. 1.5 GiB is "1536M", never "1G" or "1.5G"
// (truncating to whole units once gave a user less than they asked for).
func FormatSize(bytes int64) string {
	n := RoundUpMiB(bytes)
	switch {
	case n >= tib && n%tib == 0:
		return strconv.FormatInt(n/tib, 10) + "T"
	case n >= gib && n%gib == 0:
		return strconv.FormatInt(n/gib, 10) + "G"
	}
	return strconv.FormatInt(n/mib, 10) + "M"
}

// parseInteger reads an integer as RouterOS prints it (digit groups already joined by the
// parser; a stray group space is tolerated).
func parseInteger(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.ReplaceAll(s, " ", ""), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return n, nil
}

// parseHumanSize reads RouterOS's rounded human sizes ("10.0GiB", "1.5KiB", "20B") and
// plain byte counts; approximate, as RouterOS rounds to one decimal.
func parseHumanSize(s string) (int64, error) {
	v, _, err := parseHumanSizeParts(s)
	return int64(math.Round(v)), err
}

// parseHumanSizeParts also returns the unit of the last printed digit (0.1 GiB for "10.0GiB").
func parseHumanSizeParts(s string) (v, ulp float64, err error) {
	t := strings.TrimSpace(s)
	if n, err := parseInteger(t); err == nil {
		return float64(n), 1, nil
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, err := strconv.ParseFloat(t[:i], 64)
	if err != nil || i == 0 {
		return 0, 0, fmt.Errorf("%q is not a size", s)
	}
	unit := 1.0
	if u := strings.ToUpper(strings.TrimSpace(t[i:])); u != "" && u != "B" {
		e := strings.IndexByte("KMGTP", u[0])
		if e < 0 || u[1:] != "" && u[1:] != "B" && u[1:] != "IB" {
			return 0, 0, fmt.Errorf("%q has an unknown size unit", s)
		}
		unit = float64(kib << (10 * e))
	}
	if v = num * unit; v >= math.MaxInt64 {
		return 0, 0, fmt.Errorf("%q is too large", s)
	}
	ulp = unit
	if _, frac, ok := strings.Cut(t[:i], "."); ok {
		ulp = unit / math.Pow10(len(frac))
	}
	return v, ulp, nil
}

// PrintedSizeMatches reports whether RouterOS could print `printed` (a rounded size such as
// "10.0GiB", or a byte count) for a file of exactly `exact` bytes: within one unit of the
// last printed digit, whether RouterOS rounds, truncates or rounds up (unverified). A 10 GiB
// copy 50 MiB short of its end matches "10.0GiB": proving a copy complete needs more evidence.
func PrintedSizeMatches(printed string, exact int64) bool {
	v, ulp, err := parseHumanSizeParts(printed)
	if err != nil || exact < 0 {
		return false
	}
	return math.Abs(v-float64(exact)) <= ulp*(1+1e-9) // the decimal ulp is inexact in binary
}

func validateOptionalNQN(nqn string) error {
	if nqn == "" {
		return nil
	}
	return ValidateNQN(nqn)
}

// check returns nil if ok, else an ErrInvalidArgument error.
func check(ok bool, format string, args ...any) error {
	if ok {
		return nil
	}
	return invalidf(format, args...)
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
