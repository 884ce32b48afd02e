#!/bin/bash
# shellcheck disable=SC2317 # the suite functions run through suite's "$@"
# Runs every real-kernel suite in the test VM (run-in-vm.sh) and fails if any fails:
#   nvme     nvme/ against the kernel's NVMe/TCP host and target (run-nvme-tests.sh, two boots)
#   node     the node service over real NVMe/TCP (run-node-tests.sh, when present)
#   sim      the simulator's nvmet exporter against the kernel target (routeros/sim, tag nvmetvm)
#   e2e      the whole product (test/e2e, tag e2e): rds-sim --nvmet and static rds-csi
#            --mode=all in the VM, csi-sanity on its socket (every spec with filesystem
#            volumes, the node specs again with block volumes), then the scenarios (two nodes,
#            RDS reboot, ctrl_loss healing, unmanaged subsystem, online expansion, SIGKILL,
#            multipath: rds-sim exports on 127.0.0.1 and 127.0.0.2)
# Every suite runs even when an earlier one failed; the summary has one line per suite with
# its exit status and wall time; the exit status is the first failure's (0 = all passed).
# Missing prerequisites (qemu, the Debian kernel) fail the run when CI=true (or
# NVMF_VM_REQUIRED=1); elsewhere they are reported as SKIPPED with exit 0.
# Env: RDS_E2E_SUITES (default "nvme node sim e2e"), RDS_E2E_TEST_ARGS (extra flags for the
#      e2e test binary, e.g. "-test.run TestE2E/environment"), GO, NVMF_VM_* (run-in-vm.sh).
set -euo pipefail
VM=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$VM/../.." && pwd)
export NVMF_VM_WORK=${NVMF_VM_WORK:-/tmp/rds-csi-vm}
export GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
suites=${RDS_E2E_SUITES:-nvme node sim e2e}
required=${NVMF_VM_REQUIRED:-}
[ "${CI:-}" = true ] && required=1

prereq_missing() {
  if [ -n "$required" ]; then
    echo "run-e2e: FAIL: $1" >&2
    exit 1
  fi
  echo "run-e2e: SKIPPED (not CI): $1" >&2
  exit 0
}

out=$(mktemp -d "${TMPDIR:-/tmp}/rds-csi-e2e.XXXXXX")
trap 'rm -rf "$out"' EXIT
"$VM/install-deps.sh" >&2 || prereq_missing "the VM's prerequisites could not be installed ($VM/install-deps.sh needs root and Debian apt)"

summary=() status=0
suite() { # $1 = name, then the command
  local name=$1 rc=0 t0=$SECONDS
  shift
  echo "=== run-e2e: $name" >&2
  "$@" || rc=$?
  summary+=("$(printf '%-5s exit %-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
  [ "$rc" = 0 ] || [ "$status" != 0 ] || status=$rc
}

# The VM runner's own exit code 3 means its prerequisites went missing after install-deps.
in_vm() {
  local rc=0
  "$VM/run-in-vm.sh" "$@" || rc=$?
  [ "$rc" != 3 ] || prereq_missing "run-in-vm.sh could not find or build its prerequisites"
  return "$rc"
}

sim_suite() {
  (cd "$ROOT" && CGO_ENABLED=0 "$GO" test -c -tags nvmetvm -o "$out/sim.test" ./routeros/sim) &&
    in_vm -e RDS_CSI_VM=1 "$out/sim.test" -test.v -test.timeout 120s -test.run NVMetKernel
}

e2e_suite() {
  (cd "$ROOT" &&
    CGO_ENABLED=0 "$GO" build -trimpath -o "$out/bin/rds-csi" . &&
    CGO_ENABLED=0 "$GO" build -trimpath -o "$out/bin/rds-sim" ./cmd/rds-sim &&
    CGO_ENABLED=0 "$GO" test -c -tags e2e -o "$out/e2e.test" ./test/e2e) || return 1
  # shellcheck disable=SC2086 # RDS_E2E_TEST_ARGS is a list of flags
  NVMF_VM_TIMEOUT=${NVMF_VM_TIMEOUT:-330} in_vm -e RDS_E2E_REQUIRED=1 -e NVMF_VM_TARGET=none \
    -a "$out/bin/rds-csi" -a "$out/bin/rds-sim" \
    "$out/e2e.test" -test.v -test.timeout 300s ${RDS_E2E_TEST_ARGS:-}
}

for s in $suites; do
  case $s in
    nvme) suite nvme "$VM/run-nvme-tests.sh" ;;
    node)
      if [ -x "$VM/run-node-tests.sh" ]; then suite node "$VM/run-node-tests.sh"
      else echo "=== run-e2e: node: no test/vm/run-node-tests.sh yet" >&2; fi ;;
    sim) suite sim sim_suite ;;
    e2e) suite e2e e2e_suite ;;
    *) echo "run-e2e: unknown suite $s (nvme, node, sim, e2e)" >&2; exit 2 ;;
  esac
done
echo "=== run-e2e summary" >&2
for l in "${summary[@]}"; do echo "    $l" >&2; done
[ "$status" = 0 ] && echo "run-e2e: PASS" >&2 || echo "run-e2e: FAIL (exit $status)" >&2
exit "$status"
