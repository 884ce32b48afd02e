// Package mount reads the mount table, mounts and unmounts through
// syscalls, and probes, formats, repairs and grows filesystems on block
// devices. It knows nothing of CSI or NVMe.
//
// Two rules shape everything here, both learnt from drivers that lost data
// or wedged nodes:
//
//   - Doubt is an error. An unreadable mount table is an error, never "not
//     mounted"; a device whose superblock areas cannot be read completely, or
//     hold anything but zeroes, is never formatted.
//   - Every external call is bounded. Mount-table reads and mount syscalls
//     run under the caller's context (or a default bound when it has no
//     deadline) and return when it expires even if the kernel call is stuck;
//     the goroutine running a stuck call may linger until the kernel
//     returns. Tools (mkfs, fsck, resize) are killed at the deadline.
//
// The only binaries executed are mkfs.ext4, mkfs.xfs, e2fsck, xfs_repair,
// resize2fs and xfs_growfs; mounting never shells out.
package mount
