#!/bin/bash
# run.sh - rds-csi installed as users install it - deploy.yaml's own pods, through the root
# kustomization - on a real one-node Kubernetes 1.34 (node.sh, adapted from the kube-node
# kit), driven by the real kubelet. Part of `make test` (issue 15).
#
# The images: the driver's is the one `make image` builds (cmd/rds-image: scratch + the static
# binary + the filesystem tools and their libraries from Debian's packages), built with the
# loopnvme tag; the sidecars' are their release binaries built from source (build.sh) and
# wrapped by `rds-image wrap`. All are imported into the node's containerd: nothing is pulled.
# The driver is the loopnvme test build: the RouterOS simulator (cmd/rds-sim) exports the
# volumes and the node plugin attaches them as loop devices over its backing files instead of
# NVMe/TCP, so kubelet's NodeStage/NodePublish/NodeExpand calls format, mount and map real
# block devices.
#
# What the test changes in deploy.yaml, all in its own overlay (printed at the start):
TEST_ONLY_CHANGES=(
  "images: the locally built ones (rds-csi-test.local/...), present in containerd so never pulled; sidecar versions are those the module proxy and ../shared/sidecars serve (provisioner v5.3.0, resizer v2.2.0, registrar v2.17.0, livenessprobe v2.19.0)"
  "ConfigMap rds-csi-config: the simulated RDS's address and user, through the overlay's configMapGenerator as a user sets them"
  "Secret rds-csi-ssh: the simulator's key and pinned host key, created as the README says"
  "controller: RDS_SSH_PORT, the simulator's SSH port (the RDS's is 22)"
  "controller: replicas 2, to prove leader election (deploy.yaml runs 1)"
  "node: the loop stand-in's exports (env RDS_CSI_LOOP_NVME_EXPORTS_DIR and the simulator's directory mounted at its own path)"
  "node: the state and NVMe host directories under the work directory, not the machine's /var/lib/rds-csi and /etc/nvme"
  "StorageClass rds-nvme-xfs (added): rds-nvme with fstype xfs (xfs grows online here; ext4's online resize needs CAP_SYS_RESOURCE, which this sandbox withholds) and two NVMe/TCP paths (nvmeAddresses)"
)
# Scenarios (each asserts on data, not only on return codes):
#   - deploy.yaml: kubectl apply --dry-run=server, without and with the snapshot CRDs;
#   - install: every pod Running and Ready, no restarts; kubelet registered the driver through
#     node-driver-registrar (CSINode); the liveness and readiness endpoints answer;
#   - a filesystem PVC (rds-nvme, ext4) and a raw block PVC (rds-nvme-block, the KubeVirt
#     shape) in one pod that writes and reads; the data is in the simulator's backing files;
#   - the pod deleted (volumes detached and disconnected) and recreated: the data is still there;
#   - leader election: the sidecars' leader replica deleted, a new PVC is still provisioned;
#   - the node plugin's pod deleted while volumes are in use: its DaemonSet recreates it and
#     nothing was disconnected or unmounted;
#   - PVCs expanded while in use (an xfs filesystem PVC with two paths, and the block PVC);
#   - fencing: a second VolumeAttachment of the RWO volume to another node is refused with
#     our message in its attachError, and the real attachment is untouched;
#   - a VolumeSnapshot restored into a new PVC and a PVC clone;
#   - every PVC deleted: the disk, its file and its export are gone from the simulator;
#   - every RPC kubelet and the sidecars made was answered OK (but the fencing refusal), and
#     no container of the driver restarted.
# Prints ok/FAIL lines, the wall time of each phase and 'N passed, N failed'; exit 1 on failure.
# Root only (mounts, loop devices, kubelet, a bridge). The first build takes ~25 min (Kubernetes,
# the sidecars; then cached and stamped); a run ~5 min, of which ~1 min is kubelet noticing an
# expansion (its pod resync), not the driver.
#
#   RDS_KUBE_CACHE   Kubernetes, the sidecars, their images and the CRDs (build.sh; default
#                    /var/cache/rds-csi-kube)
#   KUBE_NODE_STATE  the node's state, logs included (default /tmp/rds-csi-kube; purged at start)
#   E2E_KUBE_KEEP=1  keep the work directory (simulator files, keys, driver state) on success
#   E2E_CONFORMANCE  subset (default), full or none: the Kubernetes storage conformance suite
#                    (e2e.test External.Storage, test/conformance) after the scenarios
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export RDS_KUBE_CACHE=${RDS_KUBE_CACHE:-/var/cache/rds-csi-kube}
export KUBE_NODE_STATE=${KUBE_NODE_STATE:-/tmp/rds-csi-kube}
export PATH=/usr/local/go/bin:$PATH
STATE=$KUBE_NODE_STATE
CONFORMANCE=${E2E_CONFORMANCE:-subset}
NODESH=$HERE/node.sh
DEPLOY=$REPO/deploy.yaml
DRV=rds.csi.srvlab.io
NS=rds-csi
KLOG=$STATE/logs/kubelet.log
NODE=127.0.0.1
RDS_IP=10.244.0.1     # the simulated RDS listens on the pod network's gateway (node.sh's bridge)
RDS_IP2=10.244.0.2    # a second NVMe/TCP path for the two-path StorageClass
IMG=rds-csi-test.local
VOLDIR_RDS=/storage-pool/metal-csi # volumePath of deploy.yaml's StorageClasses
NQN_PREFIX=nqn.2000-02.com.mikrotik:pvc-

# ---- reporting ------------------------------------------------------------------------
pass=0 fail=0 skip=0 phases=() phase="" phase_t0=0 keep_work=${E2E_KUBE_KEEP:-0}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
end_phase() {
  [ -n "$phase" ] || return 0
  local t; t=$(since "$phase_t0")
  phases+=("$(printf '%-46s %7ss' "$phase" "$t")")
  echo "time  $phase: ${t}s"
  phase=""
}
begin() { end_phase; phase=$1 phase_t0=$(now); echo "==== $phase"; }
ok() { echo "ok    $1"; pass=$((pass + 1)); }
bad() { # DESC [DETAIL]: a failure, with the end of what the command said
  echo "FAIL  $1"; fail=$((fail + 1)); keep_work=1
  if [ -n "${2:-}" ]; then printf '%s\n' "$2" | tail -n 8 | sed 's/^/      | /'; fi
}
skipped() { echo "skip  $1"; skip=$((skip + 1)); }
info() { echo "info  $*"; }
check() { # DESC CMD...: ok when CMD (a command or a function below) succeeds
  local d=$1 out; shift
  if out=$("$@" 2>&1); then ok "$d"; return 0; fi
  bad "$d" "$out"; return 1
}
must() { # DESC CMD...: a check the remaining phases cannot do without
  check "$@" || { echo "abort: the remaining phases need this"; exit 1; }
}
retry() { # SECONDS CMD...: until CMD succeeds; on timeout prints CMD's last output
  local t=$1 i out; shift
  for ((i = 0; i < t; i++)); do
    if out=$("$@" 2>&1); then return 0; fi
    sleep 1
  done
  printf 'after %ss: %s\n' "$t" "$out"; return 1
}
summary() {
  end_phase
  echo "==== phase wall times"
  printf '      %s\n' "${phases[@]}"
  local line="$pass passed, $fail failed"
  [ "$skip" -gt 0 ] && line="$line, $skip skipped"
  echo "$line"
}

# ---- cluster and simulator helpers ----------------------------------------------------
# kubectl's discovery cache lives in the node's state: the shared ~/.kube/cache would remember
# the snapshot CRDs of an earlier run on the same address and change the dry-run's answer
k() { "$RDS_KUBE_CACHE/bin/kubectl" --kubeconfig "$STATE/admin.kubeconfig" --cache-dir "$STATE/kubectl-cache" "$@"; }
logged() { # LOG CMD...: run CMD with its output in LOG; on failure show the end of LOG
  local log=$1; shift
  "$@" >"$log" 2>&1 || { tail -n 20 "$log"; return 1; }
}
kubelet_calls() { grep -c "calling $1 rpc" "$KLOG" 2>/dev/null || true; }
kubelet_called() { # RPC ATLEAST
  local n; n=$(kubelet_calls "$1")
  [ "$n" -ge "$2" ] || { echo "kubelet called $1 $n times, want >= $2"; return 1; }
}
# The driver's logs: saved per pod and container as the run goes, since a deleted pod's logs
# go with it; DLOG is all the driver containers' logs together.
save_pod_logs() {
  local p c
  mkdir -p "$WORK/pod-logs"
  for p in $(k -n "$NS" get pods -o jsonpath='{.items[*].metadata.name}' 2>/dev/null); do
    for c in $(k -n "$NS" get pod "$p" -o jsonpath='{.spec.containers[*].name}' 2>/dev/null); do
      k -n "$NS" logs "$p" -c "$c" >"$WORK/pod-logs/$p.$c.log.new" 2>/dev/null &&
        mv "$WORK/pod-logs/$p.$c.log.new" "$WORK/pod-logs/$p.$c.log"
      rm -f "$WORK/pod-logs/$p.$c.log.new"
    done
  done
}
driver_log() { save_pod_logs; cat "$WORK"/pod-logs/*.rds-csi.log >"$DLOG" 2>/dev/null || true; }
driver_answers() { driver_log; grep -c "msg=rpc method=$1 .*code=OK" "$DLOG" 2>/dev/null || true; }
driver_answered() { # RPC ATLEAST: the driver answered RPC with OK at least ATLEAST times
  local n; n=$(driver_answers "$1")
  [ "$n" -ge "$2" ] || { echo "the driver answered $1 OK $n times, want >= $2"; return 1; }
}
equals() { # WANT CMD...: CMD prints exactly WANT
  local got; got=$("${@:2}") || return 1
  [ "$got" = "$1" ] || { echo "want '$1', got '$got'"; return 1; }
}
jp() { k get "$1" "$2" -o "jsonpath=$3"; }
gone() { # KIND NAME: the object no longer exists
  if k get "$1" "$2" >/dev/null 2>&1; then echo "$1/$2 still exists"; return 1; fi
}
none_of() { # KIND: no object of that kind (in the default namespace when namespaced)
  local o; o=$(k get "$1" -o name 2>&1)
  [ -z "$o" ] || { echo "$o"; return 1; }
}
phase_is() { equals "$3" jp "$1" "$2" "{.status.phase}"; }
capacity_is() { equals "$2" jp pvc "$1" '{.status.capacity.storage}'; }
pv_of() { jp pvc "$1" '{.spec.volumeName}'; }
img_of() { echo "$SIMDIR$VOLDIR_RDS/$1.img"; } # the simulator's backing file of a volume
size_is() { equals "$2" stat -c %s "$1"; }
# rsim CMD: a RouterOS command on the simulated RDS, over SSH with the driver's key and pin
rsim() {
  ssh -q -i "$WORK/id_ed25519" -p "$SIM_PORT" -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o UserKnownHostsFile="$WORK/known_hosts" "admin@$RDS_IP" "$1"
}
sim_answers() { rsim '/system resource print' | grep -q version; }
has_disk() { rsim "/disk print detail where slot=\"$1\"" | grep -qF "slot=\"$1\""; }
no_disk() {
  local out; out=$(rsim "/disk print detail where slot=\"$1\"") || { echo "ssh to the simulator failed"; return 1; }
  ! grep -qF "slot=\"$1\"" <<<"$out" || { echo "$out"; return 1; }
}
no_loops_on() { # FILE...: no loop device is attached to any of them
  local f l
  for f in "$@"; do l=$(losetup -j "$f" 2>/dev/null); [ -z "$l" ] || { echo "$l"; return 1; }; done
}
foreign_mount_holders() { # processes outside our mount namespace that see mounts of the node
  local self p out=""
  self=$(readlink /proc/self/ns/mnt)
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/mnt" 2>/dev/null)" != "$self" ] || continue
    grep -qF "/var/lib/kubelet/pods/" "$p/mountinfo" 2>/dev/null && out="$out ${p#/proc/}($(cat "$p/comm" 2>/dev/null))"
  done
  echo "${out:- none}"
}
rpcs_ok() { # the driver's log of its answers: anything but OK is a failure, except fencing's refusal
  local failed
  driver_log
  failed=$(grep 'msg=rpc ' "$DLOG" | grep -v 'code=OK' |
    grep -v 'method=ControllerPublishVolume .*node_id=other-node .*code=FailedPrecondition')
  [ -z "$failed" ] || {
    sed -E 's/.*method=([A-Za-z]+) .*code=([A-Za-z]+)( error=)?(.*)/\1 \2 \4/' <<<"$failed" | sort | uniq -c
    return 1
  }
}
no_sim_loops() { ! losetup -a | grep -F "$SIMDIR"; }
docs_of_kind() { # KIND FILE: the YAML documents of that kind
  awk -v kind="$1" '
    function flush() { if (doc ~ ("\nkind: " kind "\n")) printf "---%s", doc; doc = "\n" }
    BEGIN { doc = "\n" }
    /^---$/ { flush(); next }
    { doc = doc $0 "\n" }
    END { flush() }' "$2"
}
apply_kind() { docs_of_kind "$1" "$DEPLOY" | k apply -f -; }

# pvc NAME CLASS MODE SIZE [SOURCE-KIND SOURCE-NAME [SOURCE-APIGROUP]]
pvc() {
  local src=""
  [ -n "${5:-}" ] && src="  dataSource: {kind: $5, name: $6${7:+, apiGroup: $7}}"
  k apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec:
  storageClassName: $2
  accessModes: [ReadWriteOnce]
  volumeMode: $3
  resources: {requests: {storage: $4}}
$src
YAML
}
# pod NAME [fs:CLAIM:MOUNTPATH | blk:CLAIM:DEVICEPATH]...: a hostNetwork busybox pod that sleeps
pod() {
  local name=$1 mounts="" devices="" vols="" i=0 a kind claim path
  shift
  for a in "$@"; do
    IFS=: read -r kind claim path <<<"$a"
    i=$((i + 1))
    vols="$vols
  - {name: v$i, persistentVolumeClaim: {claimName: $claim}}"
    if [ "$kind" = fs ]; then
      mounts="$mounts
    - {name: v$i, mountPath: $path}"
    else
      devices="$devices
    - {name: v$i, devicePath: $path}"
    fi
  done
  k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $name}
spec:
  hostNetwork: true
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: $IMG/busybox:1
    imagePullPolicy: Never
    command: ["sleep", "3600"]${mounts:+
    volumeMounts:$mounts}${devices:+
    volumeDevices:$devices}
  volumes:$vols
YAML
}
pod_ready() { k wait --for=condition=Ready "pod/$1" --timeout="${2:-180}s"; }
pod_deleted() { k delete pod "$1" --wait=false >/dev/null 2>&1; retry 120 gone pod "$1"; }
ex() { local p=$1; shift; k exec "$p" -- "$@"; }
mounted_as() { ex "$1" grep -q " $2 $3 " /proc/mounts; } # POD PATH FSTYPE
kib_of() { ex "$1" df -k "$2" | awk 'NR == 2 { print $2 }'; }
grown_beyond() { local kb; kb=$(kib_of "$1" "$2"); [ "${kb:-0}" -gt "$3" ] || { echo "size ${kb:-?} KiB"; return 1; }; }
# raw block I/O at offset 4 KiB; the token is then found at that offset of the backing file
blk_write() { ex "$1" sh -c "printf '%s' '$3' | dd of=$2 bs=512 seek=8 conv=notrunc,fsync 2>/dev/null"; }
blk_read() { ex "$1" sh -c "dd if=$2 bs=512 skip=8 count=1 2>/dev/null | head -c ${#3}"; }
file_read_at() { dd if="$1" bs=512 skip=8 count=1 2>/dev/null | head -c "$2"; }
vas_of() { # PV: "node=attached" of each VolumeAttachment of PV
  k get volumeattachments -o jsonpath="{range .items[?(@.spec.source.persistentVolumeName==\"$1\")]}{.spec.nodeName}={.status.attached}{\"\\n\"}{end}"
}
attached_on() { # NODE PV...: each PV has an attached VolumeAttachment on NODE
  local n=$1 v; shift
  for v in "$@"; do vas_of "$v" | grep -qx "$n=true" || { echo "$v: $(vas_of "$v" | tr '\n' ' ')"; return 1; }; done
}
detached() { # PV...: no VolumeAttachment references them
  local v a
  for v in "$@"; do a=$(vas_of "$v"); [ -z "$a" ] || { echo "$v still attached: $a"; return 1; }; done
}

# ---- cleanup: always, also on failure -------------------------------------------------
SIM_PID="" WORK="" SIMDIR="" DLOG=/dev/null
# The user's workloads go first (kubelet unpublishes and unstages them through the running
# node plugin, the controller deletes their storage), then the driver itself.
remove_workloads() {
  k get crd volumesnapshots.snapshot.storage.k8s.io >/dev/null 2>&1 &&
    { k delete volumesnapshots --all --all-namespaces --timeout=60s >/dev/null 2>&1 || info "snapshot deletion incomplete"; }
  k delete pods --all -n default --timeout=90s >/dev/null 2>&1 || info "pod deletion incomplete"
  k delete pvc --all -n default --timeout=60s >/dev/null 2>&1 || info "PVC deletion incomplete"
  retry 60 none_of pv >/dev/null || info "PVs left: $(k get pv -o name | tr '\n' ' ')"
  save_pod_logs
  [ -f "$WORK/overlay/kustomization.yaml" ] &&
    { k delete -k "$WORK/overlay" --ignore-not-found --timeout=120s >/dev/null 2>&1 || info "removing the driver incomplete"; }
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  begin "teardown"
  if [ -f "$STATE/admin.kubeconfig" ] && k get --raw /readyz >/dev/null 2>&1; then remove_workloads; fi
  "$NODESH" stop >"$WORK/node-stop.log" 2>&1 || info "node.sh stop failed: see $WORK/node-stop.log"
  if [ -n "$SIM_PID" ]; then kill "$SIM_PID" 2>/dev/null; wait "$SIM_PID" 2>/dev/null; fi
  if [ -n "$SIMDIR" ]; then check "no loop device left on the simulator's files after teardown" no_sim_loops; fi
  summary
  if [ "$keep_work" = 1 ]; then
    echo "kept: work dir $WORK (simulator files, keys, driver state, pod logs), node logs $STATE/logs"
  else
    rm -rf "$WORK"
  fi
  # (a bare `exit` in an EXIT trap would return the status from before the trap)
  if [ "$fail" = 0 ] && [ "$rc" = 0 ]; then exit 0; fi
  exit 1
}

[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (kubelet, mounts, loop devices, a bridge)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/rds-csi-e2e-kube.XXXXXX)
SIMDIR=$WORK/rds DLOG=$WORK/driver.log
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "rds-csi e2e-kube: work dir $WORK, node state $STATE"
echo "deploy.yaml is installed through the root kustomization; what this test changes, in its overlay:"
printf '      - %s\n' "${TEST_ONLY_CHANGES[@]}"

# ---- build ------------------------------------------------------------------------------
begin "build"
build_bins() {
  cd "$REPO" &&
    CGO_ENABLED=0 go build -trimpath -tags grpcnotrace,loopnvme -ldflags "-s -w -X main.version=loopnvme" -o "$WORK/bin/rds-csi" . &&
    CGO_ENABLED=0 go build -trimpath -o "$WORK/bin/rds-sim" ./cmd/rds-sim
}
# `make image`'s tool and recipe (scratch + the binary + the node's filesystem tools from
# Debian's packages), with the loopnvme build instead of the production one
driver_image() {
  cd "$REPO" && go run ./cmd/rds-image build -image "$IMG/rds-csi" -version loopnvme \
    -out "$WORK/image" -binary "amd64=$WORK/bin/rds-csi"
}
must "Kubernetes, the sidecars and their images built (test/kube/build.sh, log $WORK/build.log)" logged "$WORK/build.log" "$HERE/build.sh"
must "driver (loopnvme test build) and rds-sim built" build_bins
must "driver image built by cmd/rds-image (log $WORK/image.log)" logged "$WORK/image.log" driver_image
info "driver image: $(grep -m1 'unpacked' "$WORK/image.log")"

# ---- Kubernetes node ------------------------------------------------------------------------
begin "Kubernetes node start"
"$NODESH" purge >"$WORK/node-purge.log" 2>&1 || true # a fresh etcd: nothing left from an earlier run
must "node $NODE Ready (node.sh start, log $WORK/node-start.log)" logged "$WORK/node-start.log" "$NODESH" start

# ---- simulated RDS ------------------------------------------------------------------------
begin "simulated RDS"
keys() {
  ssh-keygen -q -t ed25519 -N '' -C rds-csi-e2e-kube -f "$WORK/id_ed25519" &&
    ssh-keygen -q -t ed25519 -N '' -C rds-sim -f "$WORK/host_key" &&
    cp "$WORK/id_ed25519.pub" "$WORK/authorized_keys"
}
must "SSH keys generated (driver key, simulator host key)" keys
# on the pod network's gateway, where the controller's pods reach it
setsid "$WORK/bin/rds-sim" --listen "$RDS_IP:0" --dir "$SIMDIR" --host-key "$WORK/host_key" \
  --authorized-keys "$WORK/authorized_keys" --verbose >"$WORK/rds-sim.out" 2>"$WORK/rds-sim.log" </dev/null &
SIM_PID=$!
must "rds-sim listening" retry 20 grep -q "listening on" "$WORK/rds-sim.out"
SIM_PORT=$(sed -n 's/^rds-sim: listening on [0-9.]*:\([0-9]*\).*/\1/p' "$WORK/rds-sim.out")
# known_hosts pins the simulator's host key, as a user pins the RDS's
echo "[$RDS_IP]:$SIM_PORT $(cut -d' ' -f1,2 "$WORK/host_key.pub")" >"$WORK/known_hosts"
must "the simulated RDS answers over SSH with the pinned host key ($RDS_IP:$SIM_PORT)" sim_answers

# ---- deploy.yaml against the real API server ----------------------------------------------
begin "deploy.yaml server dry-run"
objects=$(grep -c '^kind:' "$DEPLOY")
accepted() { grep -c '(server dry run)$' "$1.out"; }
errors_of() { grep -v '^Warning:' "$1.err"; } # kubectl's warnings are not refusals
only_snapshotclass_refused() {
  errors_of "$1" | grep -q 'no matches for kind "VolumeSnapshotClass"' &&
    ! errors_of "$1" | grep -v -e 'VolumeSnapshotClass' -e 'ensure CRDs are installed first' | grep .
}
no_errors() { ! errors_of "$1" | grep .; }
# The namespace exists before the rest is applied, as deploy.yaml's install steps say
# (kubectl create namespace rds-csi, then the Secret); a dry run does not create it.
check "namespace rds-csi created from deploy.yaml" apply_kind Namespace
k apply --dry-run=server -f "$DEPLOY" >"$WORK/dry1.out" 2>"$WORK/dry1.err"
info "without the snapshot CRDs: $(accepted "$WORK/dry1")/$objects objects accepted; kubectl said: $(errors_of "$WORK/dry1" | tr '\n' ' ')"
check "without the snapshot CRDs, every object but the VolumeSnapshotClass is accepted" equals "$((objects - 1))" accepted "$WORK/dry1"
check "without the snapshot CRDs, the one refusal is the VolumeSnapshotClass (no such kind)" only_snapshotclass_refused "$WORK/dry1"
must "snapshot CRDs installed and snapshot-controller running" logged "$WORK/snapshot-start.log" "$NODESH" snapshot-start
k apply --dry-run=server -f "$DEPLOY" >"$WORK/dry2.out" 2>"$WORK/dry2.err"
check "with the snapshot CRDs, all $objects objects of deploy.yaml are accepted" equals "$objects" accepted "$WORK/dry2"
check "with the snapshot CRDs, kubectl reports no error" no_errors "$WORK/dry2"

# ---- install: deploy.yaml's own pods ----------------------------------------------------------
begin "install (kubectl apply -k)"
tag_of() { awk -v n="$1" '$1 == n { print $2 }' "$RDS_KUBE_CACHE/images/tags.txt"; }
# The overlay a user would write (overlays/example), plus the changes TEST_ONLY_CHANGES lists.
write_overlay() {
  local o=$WORK/overlay s
  mkdir -p "$o"
  {
    cat <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$o" "$REPO")
  - storageclass-xfs.yaml
configMapGenerator:
  - name: rds-csi-config
    namespace: $NS
    behavior: merge
    options: {disableNameSuffixHash: true}
    literals:
      - rds-address=$RDS_IP
      - rds-user=admin
      - rds-volume-path=$VOLDIR_RDS
      - managed-nqn-prefix=$NQN_PREFIX
images:
  - {name: ghcr.io/srvlab/rds-csi, newName: $IMG/rds-csi, newTag: loopnvme}
YAML
    for s in csi-provisioner csi-attacher csi-resizer csi-snapshotter csi-node-driver-registrar livenessprobe; do
      echo "  - {name: registry.k8s.io/sig-storage/$s, newName: $IMG/$s, newTag: $(tag_of "$s")}"
    done
    cat <<YAML
patches:
  - path: controller.yaml
  - path: node.yaml
YAML
  } >"$o/kustomization.yaml"
  cat >"$o/controller.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: rds-csi-controller, namespace: $NS}
spec:
  replicas: 2
  template:
    spec:
      containers:
        - name: rds-csi
          env:
            - {name: RDS_SSH_PORT, value: "$SIM_PORT"}
YAML
  cat >"$o/node.yaml" <<YAML
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: rds-csi-node, namespace: $NS}
spec:
  template:
    spec:
      containers:
        - name: rds-csi
          env:
            - {name: RDS_CSI_LOOP_NVME_EXPORTS_DIR, value: "$SIMDIR/.nvme-exports"}
          volumeMounts:
            - {name: rds-sim, mountPath: "$SIMDIR"}
      volumes:
        - {name: rds-sim, hostPath: {path: "$SIMDIR", type: Directory}}
        - {name: state, hostPath: {path: "$WORK/node-state", type: DirectoryOrCreate}}
        - {name: nvme-host, hostPath: {path: "$WORK/etc-nvme", type: DirectoryOrCreate}}
YAML
  # rds-nvme as xfs with two NVMe/TCP paths (the second address is outside the pods' range)
  docs_of_kind StorageClass "$DEPLOY" | awk '/^---$/ { n++ } n == 1' |
    sed -e 's/^  name: rds-nvme$/  name: rds-nvme-xfs/' -e 's/fstype: ext4$/fstype: xfs/' \
      -e "/^  volumePath:/a\\  nvmeAddresses: \"$RDS_IP,$RDS_IP2\"" >"$o/storageclass-xfs.yaml"
}
write_overlay
overlay_sound() { # what the overlay makes, as kubectl renders it
  k kustomize "$WORK/overlay" >"$WORK/installed.yaml" || return 1
  local want got
  want="rds-nvme rds-nvme-block rds-nvme-xfs"
  got=$(docs_of_kind StorageClass "$WORK/installed.yaml" | sed -n 's/^  name: \(rds-nvme.*\)$/\1/p' | sort | tr '\n' ' ')
  [ "$got" = "$want " ] || { echo "StorageClasses: $got"; return 1; }
  grep -q "nvmeAddresses: \"\?$RDS_IP,$RDS_IP2\"\?$" "$WORK/installed.yaml" || { echo "no two-path StorageClass"; return 1; }
  ! grep -n 'image: \(registry.k8s.io\|ghcr.io\)' "$WORK/installed.yaml" || { echo "an image is not the local one"; return 1; }
}
must "the overlay renders (kubectl kustomize): deploy.yaml's objects, local images, rds-nvme-xfs" overlay_sound
info "images: $(sed -n 's/^ *image: //p' "$WORK/installed.yaml" | sort -u | tr '\n' ' ')"
must "the driver's and the sidecars' images imported into the node's containerd" \
  logged "$WORK/import.log" "$NODESH" import "$WORK/image/rds-csi-amd64.tar" "$RDS_KUBE_CACHE"/images/*-amd64.tar
ssh_secret() {
  k -n "$NS" create secret generic rds-csi-ssh \
    --from-file=id_ed25519="$WORK/id_ed25519" --from-file=known_hosts="$WORK/known_hosts"
}
must "Secret rds-csi-ssh created (the driver's key and the pinned host key, as the README says)" ssh_secret
must "kubectl apply -k <overlay> accepted (log $WORK/apply.log)" logged "$WORK/apply.log" k apply -k "$WORK/overlay"
check "deploy.yaml's VolumeSnapshotClass rds-nvme-snapshot installed" k get volumesnapshotclass rds-nvme-snapshot

pods_of() { k -n "$NS" get pods -l "app.kubernetes.io/component=$1" -o jsonpath='{.items[*].metadata.name}'; }
controllers_available() { equals 2 k -n "$NS" get deployment rds-csi-controller -o 'jsonpath={.status.availableReplicas}'; }
node_pod() { k -n "$NS" get pods -l app.kubernetes.io/component=node -o jsonpath='{.items[?(@.status.phase=="Running")].metadata.name}'; }
all_ready() { # every pod of the driver Running, every container ready
  local bad
  bad=$(k -n "$NS" get pods -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[*].ready}{"\n"}{end}' |
    awk '$2 != "Running" || / false/')
  [ -z "$bad" ] || { echo "$bad"; return 1; }
}
no_restarts() {
  local r
  r=$(k -n "$NS" get pods -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.name}={.restartCount} {end}{"\n"}{end}' |
    tr ' ' '\n' | grep -v -e '=0$' -e '^$')
  [ -z "$r" ] || { echo "restarted: $r"; return 1; }
}
registered() { jp csinode "$NODE" '{.spec.drivers[*].name}' | grep -qw "$DRV"; }
http_ok() { curl -fsS -m 5 -o /dev/null "$1"; } # URL
pod_ip() { k -n "$NS" get pod "$1" -o jsonpath='{.status.podIP}'; }
controller_endpoints() { # each replica's own /healthz (liveness) and livenessprobe's (readiness: CSI Probe)
  local p ip
  for p in $(pods_of controller); do
    ip=$(pod_ip "$p")
    http_ok "http://$ip:9809/healthz" || { echo "$p: :9809/healthz"; return 1; }
    http_ok "http://$ip:9808/healthz" || { echo "$p: :9808/healthz"; return 1; }
  done
}
leases() { k -n "$NS" get leases -o jsonpath='{range .items[*]}{.metadata.name}={.spec.holderIdentity}{"\n"}{end}'; }
# external-provisioner's lease is named after the driver, dots as dashes; its holder is an
# identity of its own (<ms>-<random>-<driver>), so its leader is the replica whose
# provisioner logged taking the lease. The other sidecars hold theirs as their pod's name.
LEASE=${DRV//./-}
provisioner_leader() {
  local p
  for p in $(pods_of controller); do
    # grep -c reads it all: grep -q would stop early and fail the pipe (pipefail)
    [ "$(k -n "$NS" logs "$p" -c csi-provisioner 2>/dev/null | grep -c "successfully acquired lease $NS/$LEASE")" -gt 0 ] && echo "$p"
  done
}
leases_held() { # each sidecar's lease is held by a controller replica
  local l h n=0 holders
  holders=" $(pods_of controller) "
  while IFS='=' read -r l h; do
    [ -n "$l" ] || continue
    [ "$l" = "$LEASE" ] && h=$(provisioner_leader)
    [[ $holders == *" $h "* ]] || { echo "lease $l is held by '$h', not one controller replica ($holders)"; return 1; }
    n=$((n + 1))
  done < <(leases)
  [ "$n" -ge 4 ] || { echo "$n leases: $(leases | tr '\n' ' ')"; return 1; }
}
must "controller Deployment: 2 replicas available" retry 240 controllers_available
must "node DaemonSet: its pod on $NODE ready" k -n "$NS" rollout status ds/rds-csi-node --timeout=240s
check "every pod of the driver Running, every container ready" retry 60 all_ready
check "no container of the driver restarted" no_restarts
check "kubelet registered the driver through node-driver-registrar (CSINode $NODE)" retry 60 registered
check "the node plugin's /healthz (:9819) and livenessprobe (:9818) answer on the node" \
  sh -c "curl -fsS -m 5 -o /dev/null http://$NODE:9819/healthz && curl -fsS -m 5 -o /dev/null http://$NODE:9818/healthz"
check "each controller replica's /healthz (:9809) and readiness (:9808, CSI Probe: the RDS answers) answer on its pod IP" controller_endpoints
check "provisioner, attacher, resizer and snapshotter each hold a leader lease in a controller replica" retry 90 leases_held
info "leases: $(leases | tr '\n' ' ')"
k get pods -A -o wide | sed 's/^/      /'

# ---- filesystem and raw block PVCs in a pod -------------------------------------------------
begin "fs + block PVC, pod writes and reads"
TOK_FS=fs-$RANDOM$RANDOM TOK_BLK=blk-$RANDOM$RANDOM
stage0=$(kubelet_calls NodeStageVolume) pub0=$(kubelet_calls NodePublishVolume)
pvc fs-claim rds-nvme Filesystem 64Mi >/dev/null
pvc block-claim rds-nvme-block Block 64Mi >/dev/null
must "PVC fs-claim (rds-nvme) Bound (CreateVolume)" retry 90 phase_is pvc fs-claim Bound
must "PVC block-claim (rds-nvme-block, volumeMode Block) Bound (CreateVolume)" retry 90 phase_is pvc block-claim Bound
PV_FS=$(pv_of fs-claim) PV_BLK=$(pv_of block-claim)
info "fs-claim -> $PV_FS, block-claim -> $PV_BLK"
check "the simulator has both backing files" test -f "$(img_of "$PV_FS")" -a -f "$(img_of "$PV_BLK")"
check "the simulator lists the fs disk (/disk print)" has_disk "$PV_FS"
check "the simulator lists the block disk (/disk print)" has_disk "$PV_BLK"
pod user1 fs:fs-claim:/data blk:block-claim:/dev/xvda >/dev/null
must "pod user1 Ready (ControllerPublish, NodeStage, NodePublish)" pod_ready user1
check "both volumes attached to $NODE (VolumeAttachments)" attached_on "$NODE" "$PV_FS" "$PV_BLK"
check "kubelet called NodeStageVolume for both" kubelet_called NodeStageVolume $((stage0 + 2))
check "kubelet called NodePublishVolume for both" kubelet_called NodePublishVolume $((pub0 + 2))
check "the filesystem volume is ext4 in the pod" mounted_as user1 /data ext4
check "the block volume is a block device in the pod" ex user1 test -b /dev/xvda
check "the pod writes a file" ex user1 sh -c "echo $TOK_FS > /data/token && sync"
check "the pod writes the raw block device" blk_write user1 /dev/xvda "$TOK_BLK"
check "the pod reads the file back" equals "$TOK_FS" ex user1 cat /data/token
check "the pod reads the block device back" equals "$TOK_BLK" blk_read user1 /dev/xvda "$TOK_BLK"
check "the block data is in the simulated RDS's backing file at the same offset" \
  equals "$TOK_BLK" file_read_at "$(img_of "$PV_BLK")" "${#TOK_BLK}"
check "the file's data is in the simulated RDS's backing file" grep -qaF "$TOK_FS" "$(img_of "$PV_FS")"

# ---- pod deleted and recreated ----------------------------------------------------------------
begin "pod deleted and recreated"
unstage0=$(kubelet_calls NodeUnstageVolume) unpub0=$(kubelet_calls NodeUnpublishVolume)
check "pod user1 deleted" pod_deleted user1
check "kubelet called NodeUnpublishVolume for both" retry 60 kubelet_called NodeUnpublishVolume $((unpub0 + 2))
check "kubelet called NodeUnstageVolume for both" retry 60 kubelet_called NodeUnstageVolume $((unstage0 + 2))
check "both volumes detached (VolumeAttachments gone: ControllerUnpublish)" retry 90 detached "$PV_FS" "$PV_BLK"
check "the node disconnected both (no loop device on their backing files)" \
  retry 30 no_loops_on "$(img_of "$PV_FS")" "$(img_of "$PV_BLK")"
pod user2 fs:fs-claim:/data blk:block-claim:/dev/xvda >/dev/null
must "pod user2 Ready on the same PVCs" pod_ready user2
check "the file is still there" equals "$TOK_FS" ex user2 cat /data/token
check "the block data is still there" equals "$TOK_BLK" blk_read user2 /dev/xvda "$TOK_BLK"

# ---- leader election ---------------------------------------------------------------------------
begin "leader election: the leader replica deleted"
holder() { k -n "$NS" get lease "$LEASE" -o jsonpath='{.spec.holderIdentity}'; }
other_holder() { local h; h=$(holder); [ -n "$h" ] && [ "$h" != "$1" ] || { echo "holder '$h'"; return 1; }; }
OLD_LEADER=$(provisioner_leader) OLD_HOLDER=$(holder)
info "provisioner lease $LEASE held by ${OLD_HOLDER:-nobody}: replica ${OLD_LEADER:-none}"
check "exactly one controller replica leads the provisioner" equals 1 sh -c "echo '$OLD_LEADER' | grep -c ."
save_pod_logs
k -n "$NS" delete pod "${OLD_LEADER:-none}" --wait=false >/dev/null 2>&1
pvc leader-claim rds-nvme Filesystem 64Mi >/dev/null
check "a PVC created as the leader goes is Bound (CreateVolume through the new leader)" retry 150 phase_is pvc leader-claim Bound
check "the lease moved to another holder" retry 60 other_holder "${OLD_HOLDER:-none}"
new_leader() { local p; p=$(provisioner_leader); [ -n "$p" ] && [ "$p" != "$1" ] || { echo "leader: '$p'"; return 1; }; }
check "another replica leads the provisioner now" retry 90 new_leader "${OLD_LEADER:-none}"
info "provisioner led by $(provisioner_leader)"
check "the Deployment is back to 2 available replicas" retry 180 controllers_available
check "the new PVC's disk is on the simulated RDS" has_disk "$(pv_of leader-claim)"

# ---- node plugin restart while volumes are in use -----------------------------------------------
begin "node plugin pod deleted while volumes are in use"
# "/dev/loopN: [dev]:inode": the path losetup prints after it depends on the mount
# namespace that attached the device
loops_now() { { losetup -j "$(img_of "$PV_FS")"; losetup -j "$(img_of "$PV_BLK")"; } | cut -d' ' -f1,2; }
node_pod_replaced() { # OLD: a new node pod, Running with every container ready
  local p; p=$(node_pod)
  [ -n "$p" ] && [ "$p" != "$1" ] || { echo "node pod '$p'"; return 1; }
  equals "true true true" k -n "$NS" get pod "$p" -o jsonpath='{.status.containerStatuses[*].ready}'
}
swept_nothing() { # the new node plugin's start-up sweep disconnected nothing
  local l; l=$(k -n "$NS" logs "$1" -c rds-csi | grep 'msg="NVMe sweep done"')
  [[ $l == *"disconnected=[] kept=2 "* ]] || { echo "sweep: '${l:-not logged}'"; return 1; }
}
LOOPS0=$(loops_now)
OLD_NODE_POD=$(node_pod)
info "node pod $OLD_NODE_POD; loop devices in use: $(echo "$LOOPS0" | cut -d: -f1 | tr '
' ' ')"
save_pod_logs
check "node pod $OLD_NODE_POD deleted (SIGTERM: the plugin stops serving, volumes stay)"   k -n "$NS" delete pod "$OLD_NODE_POD" --timeout=90s
check "its DaemonSet recreated it, every container ready" retry 120 node_pod_replaced "$OLD_NODE_POD"
NEW_NODE_POD=$(node_pod)
check "the new node plugin's start-up sweep kept both volumes and disconnected nothing" retry 30 swept_nothing "$NEW_NODE_POD"
check "nothing was disconnected: the same loop devices on both backing files" equals "$LOOPS0" loops_now
no_heal() { # the new node plugin found both volumes as they were: nothing reconnected or remounted
  local h; h=$(k -n "$NS" logs "$1" -c rds-csi | grep -e 'reconnecting a lost volume' -e 'replacing stale mounts' -e 'healed')
  [ -z "$h" ] || { echo "$h"; return 1; }
}
check "the new node plugin healed nothing (nothing was lost)" no_heal "$NEW_NODE_POD"
check "the staged filesystem is still mounted in user2" mounted_as user2 /data ext4
check "user2 still reads its file" equals "$TOK_FS" ex user2 cat /data/token
check "user2 still reads its block device" equals "$TOK_BLK" blk_read user2 /dev/xvda "$TOK_BLK"
check "kubelet still lists the driver (CSINode, re-registered by the new registrar)" retry 60 registered

# ---- expansion while in use ---------------------------------------------------------------------
begin "PVC expansion while in use (an xfs PVC with two paths, the block PVC)"
{
  TOK_X=xfs-$RANDOM$RANDOM
  nodeexp0=$(driver_answers NodeExpandVolume)
  pvc grow-claim rds-nvme-xfs Filesystem 300Mi >/dev/null
  check "PVC grow-claim (rds-nvme-xfs, 300Mi) Bound" retry 90 phase_is pvc grow-claim Bound
  PV_X=$(pv_of grow-claim)
  check "grow-claim's PV carries both NVMe/TCP paths" \
    equals "$RDS_IP,$RDS_IP2" jp pv "$PV_X" '{.spec.csi.volumeAttributes.nvmeAddresses}'
  pod grower fs:grow-claim:/data >/dev/null
  check "pod grower Ready" pod_ready grower
  check "the filesystem volume is xfs in the pod" mounted_as grower /data xfs
  check "the pod writes a file" ex grower sh -c "echo $TOK_X > /data/token && sync"
  kb0=$(kib_of grower /data)
  check "PVC grow-claim resized to 600Mi while mounted" k patch pvc grow-claim -p '{"spec":{"resources":{"requests":{"storage":"600Mi"}}}}'
  check "PVC block-claim resized to 128Mi while mapped in user2" k patch pvc block-claim -p '{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}'
  check "grow-claim's capacity is 600Mi (ControllerExpandVolume, then kubelet's NodeExpandVolume)" \
    retry 120 capacity_is grow-claim 600Mi
  check "the simulator's backing file of grow-claim is 600Mi" size_is "$(img_of "$PV_X")" $((600 << 20))
  check "the pod sees the filesystem grown (df)" retry 30 grown_beyond grower /data $((${kb0:-0} + 250 * 1024))
  info "xfs in the pod: ${kb0:-?} KiB before, $(kib_of grower /data) KiB after"
  check "the file survived the growth" equals "$TOK_X" ex grower cat /data/token
  check "block-claim's capacity is 128Mi" retry 120 capacity_is block-claim 128Mi
  check "the simulator's backing file of block-claim is 128Mi" size_is "$(img_of "$PV_BLK")" $((128 << 20))
  check "the pod sees the block device grown to 128Mi" retry 30 equals $((128 << 20)) ex user2 blockdev --getsize64 /dev/xvda
  check "the block data survived the growth" equals "$TOK_BLK" blk_read user2 /dev/xvda "$TOK_BLK"
  # kubelet logs no "calling NodeExpandVolume rpc" line; the driver logs each RPC it answers
  check "kubelet's NodeExpandVolume reached the driver for both volumes" driver_answered NodeExpandVolume $((nodeexp0 + 2))
  # the loop stand-in is one path, as a kernel with native multipath off: the first is used
  # and the node says why the second is not
  check "the node used one path of grow-claim and said how to use both (native multipath is off here)" \
    grep -q "enable native multipath.*volume_id=$PV_X" "$DLOG"
}

# ---- fencing with the attacher ------------------------------------------------------------------
begin "fencing (second VolumeAttachment)"
# other-node exists as far as the API server knows: a Node and a CSINode listing our driver,
# so the attacher finds its node ID and the driver's node check passes; only fencing refuses.
other_node() {
  k apply -f - <<YAML
apiVersion: v1
kind: Node
metadata: {name: other-node, labels: {kubernetes.io/hostname: other-node}}
spec: {unschedulable: true} # nothing of ours may land there
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata: {name: other-node}
spec:
  drivers:
  - {name: $DRV, nodeID: other-node, topologyKeys: null}
YAML
}
second_attachment() {
  k apply -f - <<YAML
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: fence-other-node}
spec:
  attacher: $DRV
  nodeName: other-node
  source: {persistentVolumeName: $PV_FS}
YAML
}
attach_error() { jp volumeattachment fence-other-node '{.status.attachError.message}'; }
refused_with() { local m; m=$(attach_error); [[ $m == *"$1"* ]] || { echo "attachError: '$m'"; return 1; }; }
not_attached() { [ "$(jp volumeattachment fence-other-node '{.status.attached}')" != true ]; }
check "Node and CSINode other-node created" other_node
check "a second VolumeAttachment of fs-claim's RWO volume, to other-node, created" second_attachment
check "the attach is refused with our message in status.attachError" \
  retry 60 refused_with "volume $PV_FS is attached to node $NODE and its access mode allows one node"
info "attachError: $(attach_error)"
check "the second VolumeAttachment is not attached" not_attached
k delete volumeattachment fence-other-node --wait=false >/dev/null 2>&1
check "the refused VolumeAttachment is deleted (attacher's ControllerUnpublish for other-node)" \
  retry 60 gone volumeattachment fence-other-node
check "the real attachment on $NODE is untouched" attached_on "$NODE" "$PV_FS"
check "user2 still reads its file" equals "$TOK_FS" ex user2 cat /data/token
k delete csinode other-node >/dev/null 2>&1
k delete node other-node >/dev/null 2>&1

# ---- snapshot restore and clone -----------------------------------------------------------------
begin "snapshot restore and clone"
snapshot() {
  k apply -f - <<YAML
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap1}
spec:
  volumeSnapshotClassName: rds-nvme-snapshot
  source: {persistentVolumeClaimName: fs-claim}
YAML
}
snapshot_handle() {
  k get volumesnapshotcontent "$(jp volumesnapshot snap1 '{.status.boundVolumeSnapshotContentName}')" \
    -o jsonpath='{.status.snapshotHandle}'
}
sim_has_file_named() { find "$SIMDIR" -type f -name "*$1*" | grep -q .; }
sim_lacks_file_named() { ! find "$SIMDIR" -type f -name "*$1*" | grep .; }
{
  check "VolumeSnapshot snap1 of fs-claim (in use by user2) created" snapshot
  check "snap1 readyToUse (CreateSnapshot)" retry 120 equals true jp volumesnapshot snap1 '{.status.readyToUse}'
  SNAP_HANDLE=$(snapshot_handle)
  info "snap1 -> snapshot ${SNAP_HANDLE:-?}"
  check "the snapshot's file is on the simulated RDS" sim_has_file_named "${SNAP_HANDLE:-no-handle}"
  # written after the snapshot: the restore must show the data as it was when it was taken
  check "user2 overwrites the file after the snapshot" ex user2 sh -c "echo after-snapshot > /data/token && sync"
  pvc restore-claim rds-nvme Filesystem 64Mi VolumeSnapshot snap1 snapshot.storage.k8s.io >/dev/null
  check "PVC restore-claim from snap1 Bound (CreateVolume from a snapshot)" retry 120 phase_is pvc restore-claim Bound
  vols=(fs:restore-claim:/restore)
  pvc clone-claim rds-nvme Filesystem 64Mi PersistentVolumeClaim fs-claim >/dev/null
  check "PVC clone-claim from fs-claim Bound (CreateVolume from a volume)" retry 120 phase_is pvc clone-claim Bound
  vols+=(fs:clone-claim:/clone)
  pod restorer "${vols[@]}" >/dev/null
  check "pod restorer Ready" pod_ready restorer
  check "the restored volume holds the data as of the snapshot" equals "$TOK_FS" ex restorer cat /restore/token
  check "the clone holds the source's data at clone time" equals after-snapshot ex restorer cat /clone/token
  check "pod restorer deleted" pod_deleted restorer
  k delete volumesnapshot snap1 --wait=false >/dev/null 2>&1
  check "VolumeSnapshot snap1 and its content deleted (DeleteSnapshot)" retry 90 none_of volumesnapshotcontents
  check "the snapshot's file is gone from the simulated RDS" sim_lacks_file_named "${SNAP_HANDLE:-no-handle}"
}

# ---- everything deleted ---------------------------------------------------------------------------
begin "PVCs deleted, storage gone from the simulator"
pods=$(k get pods -o jsonpath='{.items[*].metadata.name}')
k delete pods --all --wait=false >/dev/null 2>&1
for p in $pods; do check "pod $p deleted" retry 120 gone pod "$p"; done
if ! retry 20 none_of volumeattachments >/dev/null; then
  # A filesystem stays alive after its unmount while another mount namespace holds a copy of
  # the mount (a process that unshared its namespace meanwhile), and its loop device cannot go.
  info "detaching takes more than 20 s; other mount namespaces holding pod mounts:$(foreign_mount_holders)"
fi
check "every volume detached (no VolumeAttachments left)" retry 100 none_of volumeattachments
pvs=$(k get pv -o jsonpath='{.items[*].metadata.name}')
k delete pvc --all --wait=false >/dev/null 2>&1
for v in $pvs; do
  check "PV $v deleted (DeleteVolume)" retry 120 gone pv "$v"
  check "$v: no /disk entry on the simulator" no_disk "$v"
  check "$v: backing file gone from the simulator" test ! -e "$(img_of "$v")"
  check "$v: no export left on the simulator" test ! -e "$SIMDIR/.nvme-exports/nqn.2000-02.com.mikrotik:$v"
done
check "no loop device left on the simulator's files" no_sim_loops
check "every RPC kubelet and the sidecars made was answered OK, but the fencing refusals" rpcs_ok
check "no container of the driver restarted during the run" no_restarts
check "every pod of the driver still Running and ready" all_ready
info "driver log: $(grep -c 'level=ERROR' "$DLOG") ERROR, $(grep -c 'level=WARN' "$DLOG") WARN lines ($DLOG)"

# ---- the Kubernetes storage conformance suite ------------------------------------------------
# e2e.test's External.Storage tests against this installation (test/conformance): "subset" in
# `make test` (one pattern of each test suite), "full" for `make conformance`, "none" to skip.
CONFORMANCE_DIR=$REPO/test/conformance
case $CONFORMANCE in
  none) ;;
  subset | full)
    begin "conformance: e2e.test External.Storage ($CONFORMANCE)"
    must "e2e.test and its test images built (test/conformance/build.sh, log $WORK/conformance-build.log)" \
      logged "$WORK/conformance-build.log" "$CONFORMANCE_DIR/build.sh"
    must "the test images imported into the node's containerd" \
      logged "$WORK/conformance-import.log" "$NODESH" import "$RDS_KUBE_CACHE"/conformance/images/*-amd64.tar
    must "the summary tool built" go build -C "$REPO" -o "$WORK/bin/summary" ./test/conformance/summary
    conformance_run() {
      local focus skip
      focus=$(grep -v '^#' "$CONFORMANCE_DIR/$CONFORMANCE.focus" | paste -sd'|')
      skip=$(grep -v '^#' "$CONFORMANCE_DIR/skip.txt" | paste -sd'|')
      mkdir -p "$WORK/conformance"
      # The full run takes over an hour on 2 cores (its first run hit a 1 h bound
      # mid-suite); the subset ~15 min.
      local bound=3600
      [ "$CONFORMANCE" = full ] && bound=10800
      KUBE_TEST_REPO_LIST=$CONFORMANCE_DIR/repo-list.yaml timeout $((bound + 300)) "$RDS_KUBE_CACHE/conformance/e2e.test" \
        --kubeconfig="$STATE/admin.kubeconfig" --provider=local --storage.testdriver="$CONFORMANCE_DIR/testdriver.yaml" \
        --ginkgo.focus="External.Storage.*($focus)" --ginkgo.skip="$skip" --ginkgo.timeout=${bound}s \
        --ginkgo.json-report="$WORK/conformance/report.json" --report-dir="$WORK/conformance" \
        --ginkgo.no-color --ginkgo.v >"$WORK/conformance/e2e.log" 2>&1
      info "e2e.test exited with $? (log $WORK/conformance/e2e.log)"
      "$WORK/bin/summary" "$WORK/conformance/report.json"
    }
    check "e2e.test External.Storage ($CONFORMANCE): no failure (table below)" conformance_run
    "$WORK/bin/summary" "$WORK/conformance/report.json" 2>&1 | sed 's/^/      /'
    ;;
  *) bad "E2E_CONFORMANCE=$CONFORMANCE: want none, subset or full" ;;
esac
