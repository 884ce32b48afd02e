// Package nvmet reads the kernel NVMe target's configfs for the VM suites (test/e2e,
// test/bench/vmguest): one copy of what they look up there.
package nvmet

import (
	"fmt"
	"os"
	"path/filepath"

	"srvlab.io/rds-csi/internal/vmsys"
)

// Root is nvmet's configfs directory.
const Root = "/sys/kernel/config/nvmet"

// PortOf returns the nvmet port (its configfs name) that serves subsystem nqn, on address
// unless address is "".
func PortOf(nqn, address string) (string, error) {
	ports, _ := os.ReadDir(filepath.Join(Root, "ports"))
	for _, p := range ports {
		dir := filepath.Join(Root, "ports", p.Name())
		if _, err := os.Lstat(filepath.Join(dir, "subsystems", nqn)); err == nil &&
			(address == "" || vmsys.Attr(filepath.Join(dir, "addr_traddr")) == address) {
			return p.Name(), nil
		}
	}
	if address != "" {
		return "", fmt.Errorf("no nvmet port serves %s on %s", nqn, address)
	}
	return "", fmt.Errorf("no nvmet port serves %s", nqn)
}
