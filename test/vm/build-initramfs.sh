#!/bin/sh
# Builds $NVMF_VM_WORK/initramfs.cpio (default /tmp/rds-csi-vm): busybox, the NVMe/TCP
# host+target modules (deps via modules.dep), mkfs/fsck/mount/losetup tools + their shared libs,
# guest/init and the nvmet-* helpers. Run install-deps.sh first. Rebuild: ~2 s.
# Every listed tool is required (a guest silently missing one would make later suites fail
# in confusing ways); NVMF_VM_EXTRA_BINS="path ..." adds optional host binaries (libs via ldd).
set -eu
KIT=$(cd "$(dirname "$0")" && pwd)
WORK=${NVMF_VM_WORK:-/tmp/rds-csi-vm}
K=$WORK/kernel
[ -f "$K/.done" ] || { echo "run $KIT/install-deps.sh first" >&2; exit 1; }
kver=$(ls "$K/lib/modules")
MODS="configfs nvmet nvmet-tcp nvme-fabrics nvme-tcp xfs loop"
BINS="/bin/busybox /bin/dash /usr/sbin/mke2fs /usr/sbin/mkfs.ext4 /usr/sbin/mkfs.ext3 /usr/sbin/e2fsck /usr/sbin/fsck.ext4
 /usr/sbin/resize2fs /usr/sbin/tune2fs /usr/sbin/dumpe2fs /usr/sbin/mkfs.xfs /usr/sbin/xfs_repair
 /usr/sbin/xfs_growfs /usr/sbin/xfs_io /usr/sbin/xfs_db /usr/sbin/xfs_admin /usr/sbin/fsck.xfs
 /usr/sbin/blkid /usr/sbin/wipefs /usr/sbin/fsck /usr/bin/mount /usr/bin/umount /usr/bin/findmnt
 /usr/bin/lsblk /usr/sbin/losetup"
for b in $BINS; do [ -e "$b" ] || { echo "build-initramfs: required tool $b is missing: run $KIT/install-deps.sh" >&2; exit 1; }; done
BINS="$BINS ${NVMF_VM_EXTRA_BINS:-}"
R=$(mktemp -d "$WORK/rootfs.XXXXXX")   # private staging dir: concurrent builds don't clash
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/bin "$R"/sbin "$R"/usr/bin "$R"/usr/sbin "$R"/usr/local/bin "$R"/lib64 \
  "$R"/lib/x86_64-linux-gnu "$R"/etc "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/run "$R"/mnt "$R"/root "$R"/payload
cp /bin/busybox "$R/bin/busybox"
for a in $(busybox --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
ln -s /bin/busybox "$R/sbin/modprobe"   # kernel request_module() path (mount -t xfs autoloads xfs)
# modules: dependency closure from modules.dep, then depmod so busybox modprobe works
for m in $MODS; do modprobe -d "$K" -S "$kver" --show-depends "$m"; done |
  awk '$1=="insmod"{print $2}' | sort -u | while read -r ko; do
    rel=${ko#"$K"/}; mkdir -p "$R/${rel%/*}"; cp "$ko" "$R/$rel"
  done
cp "$K/lib/modules/$kver"/modules.order "$K/lib/modules/$kver"/modules.builtin* "$R/lib/modules/$kver/"
depmod -b "$R" "$kver"
# tools + shared libs
for b in $BINS; do
  [ -e "$b" ] || { echo "skip missing $b" >&2; continue; }
  mkdir -p "$R${b%/*}"
  if [ -L "$b" ]; then ln -sf "$(readlink "$b")" "$R$b"; else cp "$b" "$R$b"; fi
  [ -L "$b" ] || ldd "$b" 2>/dev/null | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$R${lib%/*}"; cp -L "$lib" "$R$lib"
done
# /bin/sh = dash: Debian's busybox ash prefers its own applets over $PATH (mount, blkid,
# mke2fs, losetup would silently be busybox's); dash runs util-linux/e2fsprogs as on a node.
# util-linux tools win over busybox's applets of the same name: /usr/sbin precedes /bin in PATH.
ln -sf dash "$R/bin/sh"
cp /etc/mke2fs.conf "$R/etc/" 2>/dev/null || true
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$R/etc/passwd"
printf 'root:x:0:\n' > "$R/etc/group"
ln -s /proc/mounts "$R/etc/mtab"
cp "$KIT/guest/init" "$R/init"
cp "$KIT/guest/nvmet-ctl" "$R/usr/local/bin/nvmet-ctl"
for a in nvmet-port-add nvmet-export nvmet-unexport nvmet-port-down nvmet-port-up nvmet-port-del \
         nvmet-ns-enable nvmet-ns-disable nvmet-status; do ln -s nvmet-ctl "$R/usr/local/bin/$a"; done
chmod +x "$R/init" "$R/usr/local/bin/nvmet-ctl"
(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$R.cpio"
mv -f "$R.cpio" "$WORK/initramfs.cpio"
echo "rds-csi-vm: $WORK/initramfs.cpio ($(du -h "$WORK/initramfs.cpio" | cut -f1)), kernel $kver"
