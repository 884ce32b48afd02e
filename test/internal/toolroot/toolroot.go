// Package toolroot proves that a root directory's filesystem tools are complete: it runs
// each of them inside the root (chroot, in a private mount namespace with /proc and /dev
// like a container's) on real filesystem images, with nothing from the host but the kernel.
// The Dockerfile's collected root (test/deploy) and cmd/rds-image's image (test/image) are
// proven the same way.
package toolroot

import (
	"context"
	"fmt"
	"os/exec"
	"time"
)

// timeout bounds a whole exercise (formatting a few small images takes seconds).
const timeout = 5 * time.Minute

// script runs in a private mount namespace: the root gets /proc and /dev, and both vanish
// with the namespace. Every tool starts (-V), then ext4 is made, checked, grown and checked,
// and xfs made and checked.
const script = `set -eu
R=$ROOTFS
mkdir -p "$R/proc" "$R/dev"
mount -t proc proc "$R/proc"
mount --bind /dev "$R/dev"
inroot() { chroot "$R" "$@"; }
for tool in mkfs.ext4 e2fsck mkfs.xfs xfs_repair xfs_growfs; do inroot /usr/sbin/$tool -V; done
inroot /usr/sbin/resize2fs 2>&1 | grep '^resize2fs '
truncate -s 64M "$R/tmp/ext4.img"
inroot /usr/sbin/mkfs.ext4 -F -q /tmp/ext4.img
inroot /usr/sbin/e2fsck -fn /tmp/ext4.img
truncate -s 128M "$R/tmp/ext4.img"
inroot /usr/sbin/resize2fs /tmp/ext4.img
inroot /usr/sbin/e2fsck -fn /tmp/ext4.img
truncate -s 320M "$R/tmp/xfs.img"
inroot /usr/sbin/mkfs.xfs -q -f /tmp/xfs.img
inroot /usr/sbin/xfs_repair -n /tmp/xfs.img
rm -f "$R/tmp/ext4.img" "$R/tmp/xfs.img"
`

// Exercise runs the tools of root (which must hold /usr/sbin/<tool> and a /tmp) and returns
// what they printed; an error carries the output. Needs root, unshare, mount, chroot and
// truncate on the host.
func Exercise(ctx context.Context, root string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	cmd.Env = []string{"ROOTFS=" + root, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("the tools do not run in %s: %w\n%s", root, err, out)
	}
	return string(out), nil
}
