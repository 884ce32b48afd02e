#!/bin/sh
# Installs what the VM tests need, idempotently (root, Debian): the host tools from apt, and
# Debian's cloud kernel unpacked (NOT installed) into $NVMF_VM_WORK/kernel; that kernel ships
# nvme-tcp, nvmet, nvmet-tcp and configfs as modules, which our CI machines' own kernel lacks.
# Adapted from ../shared/nvmf-vm (the kit is a reference; this project does not use it at run time).
# Env: NVMF_VM_WORK (default /tmp/rds-csi-vm), NVMF_VM_KPKG (default: what
# linux-image-cloud-amd64 depends on, e.g. linux-image-6.1.0-56-cloud-amd64).
# Exit status: 0 ready, non-zero when something could not be installed.
set -eu
WORK=${NVMF_VM_WORK:-/tmp/rds-csi-vm}
# mount: util-linux's losetup; the rest: qemu, the initramfs builder's tools and the guest's tools.
PKGS="qemu-system-x86 busybox-static cpio kmod e2fsprogs xfsprogs util-linux mount"
missing=
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
updated=
if [ -n "$missing" ]; then
  apt-get update -q && updated=1
  # shellcheck disable=SC2086 # word splitting of the package list is intended
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
[ -f "$WORK/kernel/.done" ] && [ -f "$WORK/vmlinuz" ] && { echo "rds-csi-vm: deps ok, kernel in $WORK/kernel"; exit 0; }
kpkg=${NVMF_VM_KPKG:-}
if [ -z "$kpkg" ]; then
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$kpkg" ] && [ -z "$updated" ]; then
    apt-get update -q
    kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
fi
[ -n "$kpkg" ] || { echo "rds-csi-vm: cannot resolve linux-image-cloud-amd64 (is a Debian apt source configured?)" >&2; exit 1; }
# A private download dir: a half-finished earlier run (no .done) is simply redone.
rm -rf "$WORK/kernel" "$WORK/dl"; mkdir -p "$WORK/dl"
(cd "$WORK/dl" && apt-get download -q -o APT::Sandbox::User=root "$kpkg")
dpkg-deb -x "$WORK"/dl/"$kpkg"_*.deb "$WORK/kernel"
kver=$(ls "$WORK/kernel/lib/modules")
depmod -b "$WORK/kernel" "$kver"
cp "$WORK/kernel/boot/vmlinuz-$kver" "$WORK/vmlinuz"
rm -rf "$WORK/dl"
touch "$WORK/kernel/.done"
echo "rds-csi-vm: kernel $kver unpacked in $WORK/kernel"
