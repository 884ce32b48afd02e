#!/bin/bash
# Runs the nvme package's real-kernel tests (nvme/*_test.go with the vmtest build tag) in
# the test VM: a real kernel NVMe/TCP target and initiator (see run-in-vm.sh).
#   1. build the test binary: CGO_ENABLED=0 go test -c -tags vmtest ./nvme
#   2. install the VM's prerequisites if needed (install-deps.sh: apt + Debian's cloud kernel)
#   3. boot the VM twice: native multipath naming (the default), then nvme_core.multipath=N
# Exit status: the tests' (0 = all passed). Missing prerequisites (qemu, the kernel) fail
# the run when CI=true; elsewhere they are reported as SKIPPED with exit 0, unless
# NVMF_VM_REQUIRED=1.
# Env: NVMF_VM_WORK (default /tmp/rds-csi-vm), GO (default: go, else /usr/local/go/bin/go),
#      RDS_VM_TEST_ARGS (extra go test flags, e.g. "-test.run TestVM/sweep").
set -euo pipefail
VM=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$VM/../.." && pwd)
export NVMF_VM_WORK=${NVMF_VM_WORK:-/tmp/rds-csi-vm}
export NVMF_VM_TIMEOUT=${NVMF_VM_TIMEOUT:-300}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
required=${NVMF_VM_REQUIRED:-}
[ "${CI:-}" = true ] && required=1

prereq_missing() {
  if [ -n "$required" ]; then
    echo "run-nvme-tests: FAIL: $1" >&2
    exit 1
  fi
  echo "run-nvme-tests: SKIPPED (not CI): $1" >&2
  exit 0
}

out=$(mktemp -d "${TMPDIR:-/tmp}/rds-csi-nvme-vm.XXXXXX")
trap 'rm -rf "$out"' EXIT
(cd "$ROOT" && CGO_ENABLED=0 "$GO" test -c -tags vmtest -o "$out/nvme.test" ./nvme)
"$VM/install-deps.sh" >&2 || prereq_missing "the VM's prerequisites could not be installed ($VM/install-deps.sh needs root and Debian apt)"

run() { # $1 = label, then run-in-vm.sh arguments
  local label=$1 rc=0 t0=$SECONDS
  shift
  echo "=== run-nvme-tests: $label" >&2
  "$VM/run-in-vm.sh" -e RDS_CSI_VM=1 -e NVMF_VM_TARGET=none "$@" || rc=$?
  echo "=== run-nvme-tests: $label: exit $rc in $((SECONDS - t0))s" >&2
  [ "$rc" != 3 ] || prereq_missing "run-in-vm.sh could not find or build its prerequisites"
  return "$rc"
}
# Both boots always run; the status is the first failure's.
status=0
# shellcheck disable=SC2086 # RDS_VM_TEST_ARGS is a list of flags
run "multipath naming" "$out/nvme.test" -test.v -test.timeout 240s \
  -test.run '^TestVM$' -test.bench '^BenchmarkVM' -test.benchtime 5x ${RDS_VM_TEST_ARGS:-} || status=$?
# shellcheck disable=SC2086
NVMF_VM_APPEND="nvme_core.multipath=N" run "multipath off" "$out/nvme.test" -test.v -test.timeout 120s \
  -test.run '^TestVMMultipathOff$' ${RDS_VM_TEST_ARGS:-} || { rc=$?; [ "$status" != 0 ] || status=$rc; }
[ "$status" = 0 ] && echo "run-nvme-tests: PASS" >&2 || echo "run-nvme-tests: FAIL (exit $status)" >&2
exit "$status"
