package sim

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseSize reads RouterOS sizes: bytes, or an integer with a binary unit K, M, G, T, P
// (1G = 1 073 741 824 bytes).
func parseSize(v value) (int64, error) {
	if v.sub != nil || v.text == "" {
		return 0, errors.New("empty size")
	}
	t := v.text
	mult := int64(1)
	if i := strings.IndexAny(t, "KMGTPkmgtp"); i >= 0 {
		unit := strings.ToUpper(t[i:])
		unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
		shift := strings.Index("KMGTP", unit)
		if len(unit) != 1 || shift < 0 {
			return 0, fmt.Errorf("bad unit in %q", v.text)
		}
		mult = 1 << (10 * (shift + 1))
		t = t[:i]
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", v.text)
	}
	return n * mult, nil
}

// ParseSize reads a size the way /disk add's file-size does: bytes or an integer with a
// binary unit (1536M, 2G, 1T).
func ParseSize(s string) (int64, error) {
	return parseSize(value{text: s})
}
