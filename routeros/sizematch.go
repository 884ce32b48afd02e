package routeros

import (
	"math"
	"strings"
)

// PrintedSizeMatches reports whether RouterOS could print `printed` — a rounded size from
// /file print such as "10.0GiB", or a plain byte count — for a file of exactly `exact`
// bytes. The printed figure must lie within one unit of its last digit of the exact size,
// which holds whether RouterOS rounds, truncates or rounds up (which it does is not
// verified). A 10 GiB copy 50 MiB short of its end therefore matches "10.0GiB": callers
// that need to know a copy is complete must add other evidence (see the controller's copy
// tracking).
func PrintedSizeMatches(printed string, exact int64) bool {
	v, ulp, err := parseHumanSizeParts(printed)
	if err != nil || exact < 0 {
		return false
	}
	return math.Abs(v-float64(exact)) <= ulp*(1+1e-9) // the decimal ulp is inexact in binary
}

// printedULP is the unit of the last printed digit of a human size: 0.1 GiB for "10.0GiB",
// 1 byte for "20".
func printedULP(number string, unit float64) float64 {
	_, frac, ok := strings.Cut(number, ".")
	if !ok {
		return unit
	}
	return unit / math.Pow10(len(frac))
}
