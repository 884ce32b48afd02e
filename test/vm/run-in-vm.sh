#!/bin/bash
# run-in-vm.sh [-e K=V]... [-a PATH]... [-i] <static-binary-or-script> [args...]
# Boots Debian's cloud kernel under qemu with our initramfs, runs the program as root in
# /payload with nvmet ready (guest/init), streams the serial console, and exits with the
# program's exit code (124 timeout, 125 no exit marker / VM failure, 3 prerequisites missing:
# qemu or the kernel could not be installed). Adapted from ../shared/nvmf-vm.
#  -e K=V   set K=V in the guest before the program (also NVMF_* defaults, NVMF_VM_SHELL=1)
#  -a PATH  copy PATH (file or dir) into the guest's /payload/
#  -i       interactive: after the program, a root shell on the console (exit = power off;
#           Ctrl-A x kills qemu)
# Host env: NVMF_VM_WORK=/tmp/rds-csi-vm NVMF_VM_ACCEL=auto|tcg|kvm NVMF_VM_SMP=1 NVMF_VM_MEM=1536
#           NVMF_VM_TIMEOUT=600 NVMF_VM_LOGLEVEL=4 (7 shows all kernel messages) NVMF_VM_LOG=file
#           NVMF_VM_APPEND="..." extra kernel command line (e.g. nvme_core.multipath=N)
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
WORK=${NVMF_VM_WORK:-/tmp/rds-csi-vm}
envs=() adds=() inter=
while [ $# -gt 0 ]; do
  case $1 in
    -i) inter=1; envs+=(NVMF_VM_SHELL=1); shift ;;
    -e) envs+=("$2"); shift 2 ;;
    -a) adds+=("$2"); shift 2 ;;
    --) shift; break ;;
    -*) echo "run-in-vm: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
prog=$1; shift
[ -f "$prog" ] || { echo "run-in-vm: $prog: no such file" >&2; exit 2; }
if ! command -v qemu-system-x86_64 >/dev/null || [ ! -f "$WORK/kernel/.done" ] || [ ! -f "$WORK/vmlinuz" ]; then
  "$KIT/install-deps.sh" >&2 || { echo "run-in-vm: prerequisites missing: $KIT/install-deps.sh failed (needs root and Debian apt)" >&2; exit 3; }
fi
command -v qemu-system-x86_64 >/dev/null || { echo "run-in-vm: qemu-system-x86_64 not found after install-deps.sh" >&2; exit 3; }
if [ ! -f "$WORK/initramfs.cpio" ] || [ -n "$(find "$KIT/guest" "$KIT/build-initramfs.sh" "$WORK/kernel/.done" -newer "$WORK/initramfs.cpio")" ]; then
  "$KIT/build-initramfs.sh" >&2 || { echo "run-in-vm: building the initramfs failed" >&2; exit 3; }
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rds-csi-vm-run.XXXXXX")
cleanup() { [ -s "$tmp/qemu.pid" ] && kill "$(cat "$tmp/qemu.pid")" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$tmp/r/payload"
cp "$prog" "$tmp/r/payload/prog"; chmod +x "$tmp/r/payload/prog"
for a in "${adds[@]}"; do cp -a "$a" "$tmp/r/payload/"; done
q() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{ printf 'set --'; for a in "$@"; do printf ' %s' "$(q "$a")"; done; echo; } > "$tmp/r/payload/args.sh"
for e in "${envs[@]}"; do printf 'export %s=%s\n' "${e%%=*}" "$(q "${e#*=}")"; done > "$tmp/r/payload/env.sh"
(cd "$tmp/r" && find . | cpio -o -H newc -R 0:0 --quiet) > "$tmp/payload.cpio"
cat "$WORK/initramfs.cpio" "$tmp/payload.cpio" > "$tmp/initrd"
accel=${NVMF_VM_ACCEL:-auto}
if [ "$accel" = auto ]; then
  # real KVM only with VMX/SVM (kvm_intel/kvm_amd); under kvm_pvm a stock kernel is emulated and fails
  accel=tcg
  if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then accel=kvm; fi
fi
if [ "$accel" = kvm ]; then cpu=(-accel kvm -cpu host); else cpu=(-accel tcg,thread=multi,tb-size=256 -cpu max); fi
log=${NVMF_VM_LOG:-$tmp/console.log}
if [ -n "$inter" ]; then exec 3<&0; con=mon:stdio; else exec 3</dev/null; con=stdio; fi
# background pipeline + wait, so that INT/TERM run the trap (kills qemu via its pidfile)
{ timeout -k 5 "${NVMF_VM_TIMEOUT:-600}" qemu-system-x86_64 "${cpu[@]}" \
    -machine q35 -smp "${NVMF_VM_SMP:-1}" -m "${NVMF_VM_MEM:-1536}" \
    -nodefaults -no-user-config -display none -no-reboot -serial "$con" -pidfile "$tmp/qemu.pid" \
    -kernel "$WORK/vmlinuz" -initrd "$tmp/initrd" \
    -append "console=ttyS0 loglevel=${NVMF_VM_LOGLEVEL:-4} panic=-1 rdinit=/init random.trust_cpu=on mitigations=off ${NVMF_VM_APPEND:-}" \
    <&3 2>&1; { echo $? > "$tmp/qemu.rc"; } 2>/dev/null; } | tr -d '\r' | tee "$log" &
wait $!
rc=$(sed -n 's/^NVMF-VM-EXIT: \([0-9]*\).*/\1/p' "$log" | tail -n 1)
if [ -n "$rc" ]; then exit "$rc"; fi
st=$(cat "$tmp/qemu.rc" 2>/dev/null || echo '?')
if [ "$st" = 124 ] || [ "$st" = 137 ]; then echo "run-in-vm: timeout" >&2; exit 124; fi
echo "run-in-vm: VM ended without exit marker (qemu status $st)" >&2
exit 125
