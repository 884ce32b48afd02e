#!/bin/bash
# node.sh - a real one-node Kubernetes (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd+runc, kubelet) on 127.0.0.1, for `make e2e-kube`. Adapted from
# the kube-node kit's node.sh (../shared/kube-node, a reference only); it runs what build.sh
# put in RDS_KUBE_CACHE.
#
#   node.sh start            bring the node up (idempotent); prints the KUBECONFIG line
#   node.sh stop             delete pods, stop everything this script started (PID files only),
#                            unmount leftovers, remove the pod network, restore sysctls
#   node.sh purge            stop, then delete $KUBE_NODE_STATE
#   node.sh status           processes + node/pod summary
#   node.sh import TAR...    import image archives (docker-archive) into the node's containerd
#   node.sh snapshot-start   install the snapshot.storage.k8s.io CRDs and run snapshot-controller
#   node.sh kubectl ARGS...  kubectl with the admin kubeconfig
#
#   RDS_KUBE_CACHE (default /var/cache/rds-csi-kube): binaries, images and CRDs (build.sh)
#   KUBE_NODE_STATE (default /tmp/rds-csi-kube): etcd data, PKI, logs, PID files, kubelet root
#   KUBELET_V (default 4): kubelet log verbosity (4 shows every CSI call)
# Node name is 127.0.0.1 (kubelet refuses a loopback --node-ip, but takes an IP
# --hostname-override as its address).
#
# Where this differs from the kit, so that deploy.yaml's own pods run unchanged:
#   - A pod network: containerd's CNI is a bridge (rdskube0, 10.244.0.1/24, host-local IPAM in
#     the state dir; the Debian containernetworking-plugins), not loopback only, so pods that
#     are not hostNetwork (the controller Deployment, two replicas of it) get addresses. No
#     masquerading and no iptables: nothing leaves the machine.
#   - The API server listens on 10.96.0.1:443, which is the `kubernetes` Service's ClusterIP
#     itself (an address of the bridge): in-cluster clients (the sidecars, the controller's
#     fencing) reach the API at KUBERNETES_SERVICE_HOST:PORT without kube-proxy. Kubeconfigs
#     use the same address.
#   - The kubelet's root is /var/lib/kubelet, deploy.yaml's hostPaths, as a shared bind mount
#     of $KUBE_NODE_STATE/kubelet (mount propagation: the node plugin's Bidirectional mounts
#     reach the host). It refuses to start where a /var/lib/kubelet of a real node exists.
# Outside the state dir it touches what the kit's does, plus: the bridge rdskube0, the mount
# /var/lib/kubelet (and the directory, when it made it) and the sysctl net.ipv4.ip_forward
# (set by the CNI bridge plugin); stop removes or restores all of them.
set -euo pipefail
CACHE=${RDS_KUBE_CACHE:-/var/cache/rds-csi-kube}
STATE=${KUBE_NODE_STATE:-/tmp/rds-csi-kube}
BIN=$CACHE/bin
NODE=127.0.0.1
KROOT_STORE=$STATE/kubelet # what the kubelet's root holds, bind-mounted at KROOT
KROOT=/var/lib/kubelet
BRIDGE=rdskube0
POD_GW=10.244.0.1 POD_SUBNET=10.244.0.0/24 POD_FIRST=10.244.0.10 # .2-.9: addresses a test may name
API_IP=10.96.0.1 SERVICE_RANGE=10.96.0.0/24 # the first address of the range is the API's ClusterIP
API=https://$API_IP:443
PKI=$STATE/pki
RUN=$STATE/run
export PATH=$BIN:/usr/sbin:/usr/bin:/sbin:/bin
SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward"
log() { echo "[kube-node $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
kc() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" --cache-dir "$STATE/kubectl-cache" "$@"; }

# ---- process bookkeeping: PID file holds "pid starttime" ----------------------
starttime() { awk '{print $22}' "/proc/$1/stat" 2>/dev/null; }
pidof_kit() { # NAME -> pid if the process we started is still alive
  local f=$STATE/pids/$1.pid p t
  [ -f "$f" ] || return 1
  read -r p t < "$f" || return 1
  [ -n "$p" ] && [ -n "$t" ] && [ "$(starttime "$p")" = "$t" ] && echo "$p"
}
start_proc() { # NAME CMD...
  local n=$1; shift
  if pidof_kit "$n" >/dev/null; then log "$n already running"; return; fi
  mkdir -p "$STATE/pids" "$STATE/logs"
  setsid "$@" >>"$STATE/logs/$n.log" 2>&1 </dev/null &
  local p=$!
  echo "$p $(starttime "$p")" > "$STATE/pids/$n.pid"
  sleep 0.5
  if ! pidof_kit "$n" >/dev/null; then
    rm -f "$STATE/pids/$n.pid"; tail -5 "$STATE/logs/$n.log" >&2; die "$n exited at once"
  fi
  log "started $n (pid $p, log $STATE/logs/$n.log)"
}
stop_proc() { # NAME [timeout]
  local n=$1 t=${2:-20} p i
  if p=$(pidof_kit "$n"); then
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do pidof_kit "$n" >/dev/null || break; sleep 0.1; done
    if pidof_kit "$n" >/dev/null; then log "$n: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; sleep 0.5; fi
    log "stopped $n"
  fi
  rm -f "$STATE/pids/$n.pid"
}
stop_many() { # TIMEOUT NAME... : SIGTERM all at once, SIGKILL what is left after TIMEOUT s
  local t=$1 n p i alive; shift
  for n in "$@"; do p=$(pidof_kit "$n") && kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < t * 10; i++)); do
    alive=0; for n in "$@"; do pidof_kit "$n" >/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  for n in "$@"; do
    [ -f "$STATE/pids/$n.pid" ] || continue
    if p=$(pidof_kit "$n"); then log "$n: SIGKILL"; kill -KILL "$p" 2>/dev/null || true; fi
    rm -f "$STATE/pids/$n.pid"; log "stopped $n"
  done
}
wait_for() { # DESC TIMEOUT CMD...
  local d=$1 t=$2 i; shift 2
  for ((i = 0; i < t; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "timed out after ${t}s waiting for $d"
}

no_pvs() { [ -z "$(kc get pv -o name 2>/dev/null)" ]; }
wait_for_quiet() { # TIMEOUT CMD... (no exit on timeout)
  local t=$1 i; shift
  for ((i = 0; i < t; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

# ---- one-time state: PKI, tokens, kubeconfigs, configs -------------------------
gen_cert() { # NAME CN ORG SAN
  [ -f "$PKI/$1.crt" ] && return
  openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$1.key" -subj "/CN=$2${3:+/O=$3}" -out "$PKI/$1.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' \
    "${4:+subjectAltName=$4}" > "$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 3650 \
    -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
}
kubeconfig() { # FILE USER TOKEN
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: kube-node
  cluster: {server: "$API", certificate-authority: "$PKI/ca.crt"}
users:
- name: "$2"
  user: {token: "$3"}
contexts:
- name: kube-node
  context: {cluster: kube-node, user: "$2"}
current-context: kube-node
EOF
}
init_state() {
  mkdir -p "$PKI" "$STATE"/{pids,logs,etcd,cni,manifests,pod-logs,containerd,volumeplugins} "$RUN" "$KROOT_STORE" "$STATE/cni-ipam"
  chmod 700 "$PKI" "$STATE/etcd"
  if [ ! -f "$PKI/ca.crt" ]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kube-node-ca" -days 3650 -out "$PKI/ca.crt"
  fi
  gen_cert apiserver kube-apiserver "" "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:$API_IP"
  gen_cert kubelet "$NODE" "" "IP:127.0.0.1,DNS:localhost"
  gen_cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters ""
  [ -f "$PKI/sa.key" ] || { openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null; openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null; }
  if [ ! -f "$PKI/tokens.csv" ]; then
    local at nt
    at=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'); nt=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
    printf '%s,admin,admin,"system:masters"\n%s,system:node:%s,node,"system:nodes"\n' "$at" "$nt" "$NODE" > "$PKI/tokens.csv"
    chmod 600 "$PKI/tokens.csv"
    kubeconfig "$STATE/admin.kubeconfig" admin "$at"
    kubeconfig "$STATE/kubelet.kubeconfig" "system:node:$NODE" "$nt"
  fi
  # containerd brings up each pod's loopback itself; this is eth0 on the bridge
  cat > "$STATE/cni/10-rds-csi-kube.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "rds-csi-kube", "plugins": [{"type": "bridge", "bridge": "$BRIDGE",
  "isGateway": true, "ipMasq": false, "hairpinMode": true,
  "ipam": {"type": "host-local", "dataDir": "$STATE/cni-ipam", "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GW", "rangeStart": "$POD_FIRST"}]],
           "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF
  cat > "$STATE/containerd/config.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd/containerd.sock"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "rds-csi-test.local/pause:1"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # this VM withholds CAP_SYS_RESOURCE even from root, so the pause container's
  # oom_score_adj=-998 fails in runc ("failed to update /proc/self/oom_score_adj:
  # Permission denied" -> "can't get final child's PID from pipe: EOF"); clamp it.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni"
EOF
  cat > "$STATE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: "unix://$RUN/containerd/containerd.sock"
staticPodPath: "$STATE/manifests"
podLogsDirectory: "$STATE/pod-logs"
volumePluginDir: "$STATE/volumeplugins"
makeIPTablesUtilChains: false
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
}

# ---- start ----------------------------------------------------------------------
start() {
  for b in kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing: run build.sh first"
  done
  for b in etcd containerd containerd-shim-runc-v2 runc ctr openssl; do command -v "$b" >/dev/null || die "$b missing: run build.sh"; done
  [ "$(id -u)" = 0 ] || die "must run as root"
  init_state
  [ -f "$STATE/sysctl.orig" ] || for s in $SYSCTLS; do echo "$s=$(sysctl -n "$s" 2>/dev/null)"; done > "$STATE/sysctl.orig"

  pod_network_up
  kubelet_root_up

  start_proc etcd etcd --name kube-node --data-dir "$STATE/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster kube-node=http://127.0.0.1:2380 --log-level warn
  # containerd 1.6 hard-codes /run/containerd/{runc,s} for runc state and shim sockets
  [ -e /run/containerd ] || [ -f "$STATE/.made-run-containerd" ] || touch "$STATE/.made-run-containerd"
  [ -e /var/log/containers ] || [ -f "$STATE/.made-var-log-containers" ] || touch "$STATE/.made-var-log-containers"
  start_proc containerd containerd --config "$STATE/containerd/config.toml"
  wait_for etcd 60 curl -sf http://127.0.0.1:2379/health
  wait_for containerd 60 ctr --address "$RUN/containerd/containerd.sock" version
  for i in pause busybox; do
    ctr --address "$RUN/containerd/containerd.sock" -n k8s.io images import "$CACHE/images/$i-amd64.tar" >/dev/null
  done

  start_proc kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=$API_IP --advertise-address=$API_IP --secure-port=443 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" --service-cluster-ip-range=$SERVICE_RANGE \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname --endpoint-reconciler-type=none \
    --requestheader-client-ca-file="$PKI/ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --allow-privileged=true --profiling=false
  wait_for kube-apiserver 120 kc get --raw /readyz
  start_proc kube-controller-manager kube-controller-manager --kubeconfig="$STATE/admin.kubeconfig" \
    --authentication-kubeconfig="$STATE/admin.kubeconfig" --authorization-kubeconfig="$STATE/admin.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" --use-service-account-credentials=false --controllers='*' --profiling=false
  start_proc kube-scheduler kube-scheduler --kubeconfig="$STATE/admin.kubeconfig" \
    --authentication-kubeconfig="$STATE/admin.kubeconfig" --authorization-kubeconfig="$STATE/admin.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  start_proc kubelet kubelet --config="$STATE/kubelet-config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$KROOT" --hostname-override="$NODE" --v="${KUBELET_V:-4}"
  wait_for "node $NODE Ready" 180 sh -c "'$BIN/kubectl' --kubeconfig '$STATE/admin.kubeconfig' get node '$NODE' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_for "default ServiceAccount" 60 kc get serviceaccount default
  log "node $NODE is Ready"
  echo "export KUBECONFIG=$STATE/admin.kubeconfig KUBELET_ROOT=$KROOT"
}

# The bridge exists before containerd and the API server: the API listens on an address of it.
pod_network_up() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    touch "$STATE/.made-bridge"
  fi
  # A MAC of its own: else the bridge takes the lowest of its ports' and changes it as pods
  # come and go, and every pod's ARP entry for the gateway goes stale (seen: a controller
  # replica cut off from the API, the RDS and its probes for 30 s when the other started).
  ip link set "$BRIDGE" address 02:00:0a:f4:00:01
  ip addr replace "$POD_GW/24" dev "$BRIDGE"
  ip addr replace "$API_IP/32" dev "$BRIDGE"
  ip link set "$BRIDGE" up
}
pod_network_down() {
  [ -f "$STATE/.made-bridge" ] || return 0
  ip link del "$BRIDGE" 2>/dev/null || true
  rm -f "$STATE/.made-bridge"
}
kubelet_root_up() {
  if mountpoint -q "$KROOT"; then
    [ -f "$STATE/.mounted-kubelet-root" ] || die "$KROOT is a mount point not made by this script: is this a real node?"
    return 0
  fi
  if [ -e "$KROOT" ]; then
    [ -d "$KROOT" ] && [ -z "$(ls -A "$KROOT")" ] || die "$KROOT exists and is not empty: is this a real node? (this script runs a kubelet there)"
  else
    mkdir -p "$KROOT"; touch "$STATE/.made-kubelet-root"
  fi
  mount --bind "$KROOT_STORE" "$KROOT"
  mount --make-rshared "$KROOT"
  touch "$STATE/.mounted-kubelet-root"
}
kubelet_root_down() {
  [ -f "$STATE/.mounted-kubelet-root" ] || return 0
  findmnt -rn -o TARGET | awk -v s="$KROOT/" 'index($0, s) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  umount "$KROOT" 2>/dev/null || umount -l "$KROOT" || log "could not unmount $KROOT"
  rm -f "$STATE/.mounted-kubelet-root"
  if [ -f "$STATE/.made-kubelet-root" ] && rmdir "$KROOT"; then rm -f "$STATE/.made-kubelet-root"; fi
}

import_images() { # TAR...
  local t
  for t in "$@"; do
    ctr --address "$RUN/containerd/containerd.sock" -n k8s.io images import "$t" >/dev/null || die "importing $t failed"
    log "imported $t"
  done
}

# ---- snapshots: CRDs + snapshot-controller (external-snapshotter) -----------------
snapshot_start() {
  ls "$CACHE"/crds/*.yaml >/dev/null 2>&1 || die "no snapshot CRDs in $CACHE/crds: run test/kube/build.sh"
  kc apply -f "$CACHE/crds" >&2
  local k
  for k in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
    kc wait --for=condition=Established --timeout=60s "crd/$k.snapshot.storage.k8s.io" >/dev/null
  done
  start_proc csi-snapshot-controller snapshot-controller --kubeconfig="$STATE/admin.kubeconfig" --leader-election=false --v=5
}

# ---- stop -----------------------------------------------------------------------
stop() {
  [ -d "$STATE" ] || { log "no state at $STATE"; return 0; }
  local n p
  if pidof_kit kube-apiserver >/dev/null && pidof_kit kubelet >/dev/null; then
    log "deleting all pods (kubelet unpublishes their volumes while drivers are still up)"
    kc delete pods --all --all-namespaces --grace-period=5 --timeout=90s >/dev/null 2>&1 || log "pod deletion incomplete"
    if [ "${KUBE_NODE_KEEP_VOLUMES:-0}" != 1 ]; then
      log "deleting all PVCs (drivers get DeleteVolume; KUBE_NODE_KEEP_VOLUMES=1 skips this)"
      kc delete pvc --all --all-namespaces --timeout=60s >/dev/null 2>&1 || log "PVC deletion incomplete"
      wait_for_quiet 60 no_pvs || log "some PVs remain: $(kc get pv -o name | tr '\n' ' ')"
    fi
  fi
  for p in "$STATE"/pids/csi-*.pid; do [ -e "$p" ] && stop_proc "$(basename "$p" .pid)" 15; done
  stop_proc kubelet 20
  if pidof_kit containerd >/dev/null; then # containers left behind by kubelet: kill them via containerd
    local c=(ctr --address "$RUN/containerd/containerd.sock" -n k8s.io)
    for n in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks kill -s SIGKILL "$n" >/dev/null 2>&1 || true; done
    sleep 1
    for n in $("${c[@]}" tasks ls -q 2>/dev/null); do "${c[@]}" tasks delete -f "$n" >/dev/null 2>&1 || true; done
    for n in $("${c[@]}" containers ls -q 2>/dev/null); do "${c[@]}" containers rm "$n" >/dev/null 2>&1 || true; done
  fi
  stop_many 30 kube-scheduler kube-controller-manager containerd kube-apiserver
  stop_many 20 etcd
  kubelet_root_down
  pod_network_down
  # leftover mounts under the state dir (pod volumes, CSI mounts, container rootfs/shm)
  findmnt -rn -o TARGET | awk -v s="$STATE/" 'index($0, s) == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  # pod cgroups made by kubelet/runc (empty now)
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # symlinks kubelet keeps in the hard-coded /var/log/containers that point into our state
  for l in /var/log/containers/*.log; do
    [ -L "$l" ] && case "$(readlink "$l")" in "$STATE"/*) rm -f "$l" ;; esac
  done
  if [ -f "$STATE/sysctl.orig" ]; then
    while IFS='=' read -r k v; do [ -n "$v" ] && sysctl -qw "$k=$v" 2>/dev/null || true; done < "$STATE/sysctl.orig"
    rm -f "$STATE/sysctl.orig"
  fi
  [ -f "$STATE/.made-var-log-containers" ] && rmdir /var/log/containers 2>/dev/null && rm -f "$STATE/.made-var-log-containers"
  if [ -f "$STATE/.made-run-containerd" ] && ! pgrep -x containerd >/dev/null; then
    rm -rf /run/containerd; rm -f "$STATE/.made-run-containerd"
  fi
  losetup -a 2>/dev/null | grep -F "$STATE" | sed 's/^/[kube-node] loop device still attached: /' >&2 || true
  log "stopped"
}

status() {
  local n p
  for p in "$STATE"/pids/*.pid; do
    [ -e "$p" ] || continue; n=$(basename "$p" .pid)
    if pidof_kit "$n" >/dev/null; then echo "running  $n ($(pidof_kit "$n"))"; else echo "DEAD     $n"; fi
  done
  pidof_kit kube-apiserver >/dev/null && { kc get nodes -o wide; kc get csinodes,csidrivers,sc,pv,pvc,pods -A 2>/dev/null; } || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  purge) stop; rm -rf "$STATE"; log "removed $STATE" ;;
  status) status ;;
  import) shift; import_images "$@" ;;
  snapshot-start) snapshot_start ;;
  kubectl) shift; kc "$@" ;;
  *) sed -n '2,19p' "$0"; exit 2 ;;
esac
