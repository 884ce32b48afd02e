package sim

import (
	"fmt"
	"strconv"
	"strings"
)

// version is a RouterOS version such as 7.24.4; features are switched on by comparing it.
type version [3]int

func parseVersion(s string) (version, error) {
	var v version
	parts := strings.Split(s, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return v, fmt.Errorf("sim: RouterOS version %q is not MAJOR.MINOR[.PATCH]", s)
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return v, fmt.Errorf("sim: RouterOS version %q is not MAJOR.MINOR[.PATCH]", s)
		}
		v[i] = n
	}
	return v, nil
}

func (v version) atLeast(major, minor int) bool {
	return v[0] > major || v[0] == major && v[1] >= minor
}

// hasServerNQN: nvme-tcp-server-nqn exists from RouterOS 7.21; before it the NQN is the slot.
func (v version) hasServerNQN() bool { return v.atLeast(7, 21) }
