package nvme

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// Multipath reports whether the kernel's native NVMe multipath is on
// (/sys/module/nvme_core/parameters/multipath is "Y"). Only then do several controllers
// of one subsystem share one head disk (nvme<S>n<H>); with it off (nvme_core.multipath=N,
// or a kernel built without CONFIG_NVME_MULTIPATH, which has no such parameter) every
// controller brings its own disk of the same namespace, and a volume must use one path.
// An unreadable parameter is an error: the caller then uses one path.
func (h *Host) Multipath() (bool, error) {
	path := filepath.Join(h.cfg.SysfsRoot, "module", "nvme_core", "parameters", "multipath")
	v, err := readAttr(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if _, derr := readDirNames(filepath.Join(h.cfg.SysfsRoot, "module", "nvme_core")); derr == nil {
			return false, nil // nvme_core without multipath support
		}
		return false, fmt.Errorf("read %s: %w (is nvme_core loaded?)", path, err)
	case err != nil:
		return false, fmt.Errorf("read %s: %w", path, err)
	}
	return v == "Y" || v == "y" || v == "1", nil
}
