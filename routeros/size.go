package routeros

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
	tib = int64(1) << 40

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
	if bytes > MaxDiskSize {
		bytes = MaxDiskSize
	}
	return (bytes + mib - 1) / mib * mib
}

// FormatSize renders a size for `file-size=`: rounded up to a whole MiB, then in the
// largest binary unit that divides it exactly. 1.5 GiB is "1536M", never "1G" or "1.5G"
// (truncating to whole units once gave a user less than they asked for).
func FormatSize(bytes int64) string {
	n := RoundUpMiB(bytes)
	for _, u := range []struct {
		size   int64
		suffix string
	}{{tib, "T"}, {gib, "G"}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.suffix
		}
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

// parseHumanSize reads RouterOS's rounded human sizes ("10.0GiB", "512.0MiB", "1.5KiB",
// "20B"), and plain byte counts. The result is approximate: RouterOS rounds to one decimal.
func parseHumanSize(s string) (int64, error) {
	v, _, err := parseHumanSizeParts(s)
	if err != nil {
		return 0, err
	}
	return int64(math.Round(v)), nil
}

// parseHumanSizeParts reads a human size into its value in bytes and the unit of its last
// printed digit (see printedULP).
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
	var unit float64
	switch strings.ToUpper(strings.TrimSpace(t[i:])) {
	case "", "B":
		unit = 1
	case "K", "KB", "KIB":
		unit = float64(kib)
	case "M", "MB", "MIB":
		unit = float64(mib)
	case "G", "GB", "GIB":
		unit = float64(gib)
	case "T", "TB", "TIB":
		unit = float64(tib)
	case "P", "PB", "PIB":
		unit = float64(tib << 10)
	default:
		return 0, 0, fmt.Errorf("%q has an unknown size unit", s)
	}
	v = num * unit
	if v >= math.MaxInt64 {
		return 0, 0, fmt.Errorf("%q is too large", s)
	}
	return v, printedULP(t[:i], unit), nil
}
