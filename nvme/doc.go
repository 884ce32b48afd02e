// Package nvme attaches and detaches NVMe/TCP volumes with the Linux kernel's own
// interface: it writes connect strings to /dev/nvme-fabrics and reads sysfs itself (no
// nvme-cli, no udev). It knows nothing of CSI or RouterOS.
//
// Safety rests on two rules. First, every operation that names a subsystem goes through a
// Guard built from the node's managed NQN prefix, so the package cannot touch subsystems it
// does not own (a diskless node may boot its own /var over NVMe/TCP). Second, device names
// are never built from numbers: a volume's disk is found in sysfs on every call, by the
// subsystem's NQN and the namespace ID, because the kernel renumbers disks after a
// controller is lost and re-created.
//
// The kernel interface this package relies on is described in the project's
// reference/nvme-tcp-kernel.md.
package nvme
