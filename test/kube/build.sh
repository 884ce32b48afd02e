#!/bin/bash
# build.sh - everything `make e2e-kube` runs on, built once and then reused (stamped):
#
#   1. the kube-node kit's own build (KUBE_NODE_KIT/build.sh into KUBE_NODE_CACHE): Kubernetes
#      v1.34 (kubelet, apiserver, controller-manager, scheduler, kubectl), external-provisioner,
#      external-attacher, the kit's registrar and its busybox/pause images. ~10 min cold.
#   2. what the kit lacks and deploy.yaml runs, into RDS_KUBE_CACHE (default
#      /var/cache/rds-csi-kube): csi-resizer, csi-snapshotter, snapshot-controller and the
#      snapshot.storage.k8s.io CRDs (from the external-snapshotter client module). ~8 min cold.
#
# Only apt (through the kit) and the Go module proxy are used. Versions follow deploy.yaml
# where the proxy serves them: csi-resizer v2.2.1 is not served (v2.2.0 and v2.3.0 are), so
# v2.2.0; csi-snapshotter v8.6.0 as deployed.
#
#   KUBE_NODE_KIT      the kit (default: ../shared/kube-node beside the repository)
#   KUBE_NODE_CACHE    the kit's cache (default /var/cache/kube-node)
#   RDS_KUBE_CACHE     our sidecars' cache (default /var/cache/rds-csi-kube)
#   RESIZER_VERSION, SNAPSHOTTER_VERSION
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KIT=${KUBE_NODE_KIT:-$REPO/../shared/kube-node}
CACHE=${RDS_KUBE_CACHE:-/var/cache/rds-csi-kube}
RESIZER_VERSION=${RESIZER_VERSION:-v2.2.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.6.0}
BIN=$CACHE/bin
export PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0
log() { echo "[e2e-kube build $(date +%T)] $*" >&2; }

[ -x "$KIT/build.sh" ] || { log "ERROR: no kube-node kit at $KIT (set KUBE_NODE_KIT)"; exit 1; }
"$KIT/build.sh"

mkdir -p "$BIN" "$CACHE/src" "$CACHE/crds"
fresh() { [ -f "$BIN/.$1.stamp" ] && [ "$(cat "$BIN/.$1.stamp")" = "$2" ] && [ -x "$BIN/$1" ]; }

# moddir MODULE@VERSION -> the module's extracted source directory (downloads it)
moddir() { (cd "$CACHE/src" && go mod download -json "$1") | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }

# wrap_build MODULE VERSION PKG OUT [EXTRA-REQUIRE...]: the kit's way of building a sidecar
# that `go install` refuses (replace directives in its go.mod): a wrapper module requires
# MODULE@VERSION, copies its non-local replace directives and its go.sum. A local replace
# (external-snapshotter's client => ./client) is dropped, so the wrapper requires that
# module at the same version from the proxy instead (EXTRA-REQUIRE "MOD VER").
wrap_build() {
  local m=$1 v=$2 p=$3 o=$4 d gm dir r
  shift 4
  fresh "$o" "$m@$v" && { log "$o: cached ($m@$v)"; return; }
  d=$CACHE/src/$(echo "$m@$v" | tr '/@' '__')
  mkdir -p "$d"
  gm=$( (cd "$CACHE/src" && go mod download -json "$m@$v") | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  dir=$(moddir "$m@$v")
  {
    echo "module rdscsi.local/wrap"
    grep -E '^go ' "$gm"
    echo "require $m $v"
    for r in "$@"; do echo "require $r"; done
    awk '/^replace \(/{b=1;next} b&&/^\)/{b=0;next} b{print "replace "$0;next} /^replace /{print}' "$gm" |
      grep -v -E '=>[[:space:]]*\.{0,2}/' || true
  } > "$d/go.mod"
  if [ -f "$dir/go.sum" ]; then cp "$dir/go.sum" "$d/go.sum" && chmod u+w "$d/go.sum"; fi
  log "$o: building $p@$v"
  (cd "$d" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$BIN/$o" "$p")
  echo "$m@$v" > "$BIN/.$o.stamp"
}

RESIZER=github.com/kubernetes-csi/external-resizer/v2
SNAP=github.com/kubernetes-csi/external-snapshotter/v8
SNAPCLIENT=github.com/kubernetes-csi/external-snapshotter/client/v8
wrap_build "$RESIZER" "$RESIZER_VERSION" "$RESIZER/cmd/csi-resizer" csi-resizer
wrap_build "$SNAP" "$SNAPSHOTTER_VERSION" "$SNAP/cmd/csi-snapshotter" csi-snapshotter "$SNAPCLIENT $SNAPSHOTTER_VERSION"
wrap_build "$SNAP" "$SNAPSHOTTER_VERSION" "$SNAP/cmd/snapshot-controller" snapshot-controller "$SNAPCLIENT $SNAPSHOTTER_VERSION"

# The VolumeSnapshot CRDs ship in the client module (config/crd); group snapshots are not used.
if [ "$(cat "$CACHE/crds/.stamp" 2>/dev/null)" != "$SNAPCLIENT@$SNAPSHOTTER_VERSION" ]; then
  dir=$(moddir "$SNAPCLIENT@$SNAPSHOTTER_VERSION")
  rm -f "$CACHE"/crds/*.yaml
  for k in volumesnapshotclasses volumesnapshotcontents volumesnapshots; do
    cp "$dir/config/crd/snapshot.storage.k8s.io_$k.yaml" "$CACHE/crds/"
  done
  chmod u+w "$CACHE"/crds/*.yaml
  echo "$SNAPCLIENT@$SNAPSHOTTER_VERSION" > "$CACHE/crds/.stamp"
  log "snapshot CRDs: $SNAPCLIENT@$SNAPSHOTTER_VERSION"
fi
log "done: $(cd "$BIN" && echo *) + $(cd "$CACHE/crds" && echo *.yaml)"
