#!/bin/bash
# Runs the node service's real-kernel tests (node_vm_test.go, build tag vmtest) in the test
# VM: stage/publish over real NVMe/TCP, healing after ctrl_loss_tmo expiry, online ext4
# expansion, two-path (multipath) failover (see run-in-vm.sh for the VM).
#   1. build the test binary: CGO_ENABLED=0 go test -c -tags vmtest . (the root package)
#   2. install the VM's prerequisites if needed (install-deps.sh)
#   3. boot the VM and run TestNodeVM, then boot it with nvme_core.multipath=N and run
#      TestNodeVMMultipathOff
# Exit status: the tests' (0 = all passed). Missing prerequisites fail the run when CI=true
# (or NVMF_VM_REQUIRED=1); elsewhere they are reported as SKIPPED with exit 0.
# Env: NVMF_VM_WORK (default /tmp/rds-csi-vm), GO (default: go, else /usr/local/go/bin/go),
#      RDS_VM_TEST_ARGS (extra go test flags, e.g. "-test.run TestNodeVM/heal").
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
    echo "run-node-tests: FAIL: $1" >&2
    exit 1
  fi
  echo "run-node-tests: SKIPPED (not CI): $1" >&2
  exit 0
}

out=$(mktemp -d "${TMPDIR:-/tmp}/rds-csi-node-vm.XXXXXX")
trap 'rm -rf "$out"' EXIT
(cd "$ROOT" && CGO_ENABLED=0 "$GO" test -c -tags vmtest -o "$out/node.test" .)
"$VM/install-deps.sh" >&2 || prereq_missing "the VM's prerequisites could not be installed ($VM/install-deps.sh needs root and Debian apt)"

run() { # $1 = label, then run-in-vm.sh arguments
  local label=$1 rc=0 t0=$SECONDS
  shift
  echo "=== run-node-tests: $label" >&2
  "$VM/run-in-vm.sh" -e RDS_CSI_VM=1 -e NVMF_VM_TARGET=none "$@" || rc=$?
  echo "=== run-node-tests: $label: exit $rc in $((SECONDS - t0))s" >&2
  [ "$rc" != 3 ] || prereq_missing "run-in-vm.sh could not find or build its prerequisites"
  return "$rc"
}
status=0
# shellcheck disable=SC2086 # RDS_VM_TEST_ARGS is a list of flags
run "node service over real NVMe/TCP" "$out/node.test" -test.v -test.timeout 240s \
  -test.run '^TestNodeVM$' ${RDS_VM_TEST_ARGS:-} || status=$?
# shellcheck disable=SC2086
NVMF_VM_APPEND="nvme_core.multipath=N" run "two-path volume, native multipath off" "$out/node.test" -test.v -test.timeout 120s \
  -test.run '^TestNodeVMMultipathOff$' ${RDS_VM_TEST_ARGS:-} || { rc=$?; [ "$status" != 0 ] || status=$rc; }
[ "$status" = 0 ] && echo "run-node-tests: PASS" >&2 || echo "run-node-tests: FAIL (exit $status)" >&2
exit "$status"
