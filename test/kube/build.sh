#!/bin/bash
# build.sh - everything `make e2e-kube` runs on, built once and then reused (stamped):
#
#   1. the kube-node kit's own build (KUBE_NODE_KIT/build.sh into KUBE_NODE_CACHE): Kubernetes
#      v1.34 (kubelet, apiserver, controller-manager, scheduler, kubectl), external-provisioner,
#      external-attacher, the kit's registrar and its busybox/pause images. ~10 min cold.
#   2. what the kit lacks and deploy.yaml runs, into RDS_KUBE_CACHE (default
#      /var/cache/rds-csi-kube): csi-resizer, csi-snapshotter, snapshot-controller and the
#      snapshot.storage.k8s.io CRDs (from the external-snapshotter client module), ~8 min
#      cold; csi-node-driver-registrar and livenessprobe from their release sources in
#      ../shared/sidecars (with vendor/; the proxy serves neither), ~2 min cold.
#   3. a container image of each sidecar deploy.yaml runs (`rds-image wrap`: scratch + the
#      static binary at the path upstream's image has it), into RDS_KUBE_CACHE/images, named
#      rds-csi-test.local/<sidecar>:<the version built>.
#
# Only apt (through the kit) and the Go module proxy are used. Versions follow deploy.yaml
# where the proxy serves them: csi-resizer v2.2.1 is not served (v2.2.0 and v2.3.0 are), so
# v2.2.0; csi-snapshotter v8.6.0 as deployed; csi-provisioner v5.3.0 (the kit's; v6.x needs a
# module the proxy refuses); the registrar v2.17.0 and livenessprobe v2.19.0 (the sources we
# have; deploy.yaml names v2.18.0 and v2.20.0, whose flags are the same for what it uses).
#
#   KUBE_NODE_KIT      the kit (default: ../shared/kube-node beside the repository)
#   KUBE_NODE_CACHE    the kit's cache (default /var/cache/kube-node)
#   RDS_KUBE_CACHE     our sidecars' cache (default /var/cache/rds-csi-kube)
#   SIDECAR_SRC        the registrar's and livenessprobe's release sources (default ../shared/sidecars)
#   RESIZER_VERSION, SNAPSHOTTER_VERSION, REGISTRAR_VERSION, LIVENESSPROBE_VERSION
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KIT=${KUBE_NODE_KIT:-$REPO/../shared/kube-node}
CACHE=${RDS_KUBE_CACHE:-/var/cache/rds-csi-kube}
KCACHE=${KUBE_NODE_CACHE:-/var/cache/kube-node}
RESIZER_VERSION=${RESIZER_VERSION:-v2.2.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.6.0}
REGISTRAR_VERSION=${REGISTRAR_VERSION:-v2.17.0}
LIVENESSPROBE_VERSION=${LIVENESSPROBE_VERSION:-v2.19.0}
SIDECAR_SRC=${SIDECAR_SRC:-$REPO/../shared/sidecars}
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
# vendored_build NAME VERSION CMD: a release source archive of ../shared/sidecars, built offline
vendored_build() {
  local n=$1 v=$2 cmd=$3 tgz=$SIDECAR_SRC/$1-$2.tar.gz
  fresh "$cmd" "$n@$v" && { log "$cmd: cached ($n@$v)"; return; }
  [ -f "$tgz" ] || { log "ERROR: no $tgz (set SIDECAR_SRC)"; exit 1; }
  rm -rf "$CACHE/src/$n-$v"
  tar -xzf "$tgz" -C "$CACHE/src"
  log "$cmd: building $n $v (vendored)"
  (cd "$CACHE/src/$n-$v" && GOFLAGS=-mod=vendor go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$BIN/$cmd" "./cmd/$cmd")
  echo "$n@$v" > "$BIN/.$cmd.stamp"
}
vendored_build node-driver-registrar "$REGISTRAR_VERSION" csi-node-driver-registrar
vendored_build livenessprobe "$LIVENESSPROBE_VERSION" livenessprobe

# Sidecar images: each binary at / under its own name, as upstream's images hold it (the
# registrar's liveness probe in deploy.yaml execs /csi-node-driver-registrar). Stamped with
# the binary's and the image tool's sources, so a rebuilt binary or tool makes a new image.
IMAGES=$CACHE/images
mkdir -p "$IMAGES"
tool_sum=$(cd "$REPO" && cat cmd/rds-image/*.go internal/imagebuild/*.go | sha256sum | cut -c1-16)
image_of() { # NAME VERSION BINARY
  local b=$1 v=$2 bin=$3 stamp
  [ -n "$v" ] || { log "ERROR: no version known for $b"; exit 1; }
  echo "$b $v" >>"$IMAGES/tags.new"
  stamp="$tool_sum $v $(sha256sum <"$bin" | cut -c1-16)"
  if [ -f "$IMAGES/$b-amd64.tar" ] && [ "$(cat "$IMAGES/.$b.stamp" 2>/dev/null)" = "$stamp" ]; then return; fi
  (cd "$REPO" && go run ./cmd/rds-image wrap -binary "$bin" -path "/$b" -image "rds-csi-test.local/$b" -version "$v" -out "$IMAGES") >&2
  echo "$stamp" >"$IMAGES/.$b.stamp"
}
# tags.txt: "<name> <tag>" of each image, for the suite's kustomization
rm -f "$IMAGES/tags.new"
image_of csi-provisioner "$(cat "$KCACHE/bin/.csi-provisioner.stamp" 2>/dev/null | sed 's/.*@//')" "$KCACHE/bin/csi-provisioner"
image_of csi-attacher "$(cat "$KCACHE/bin/.csi-attacher.stamp" 2>/dev/null | sed 's/.*@//')" "$KCACHE/bin/csi-attacher"
image_of csi-resizer "$RESIZER_VERSION" "$BIN/csi-resizer"
image_of csi-snapshotter "$SNAPSHOTTER_VERSION" "$BIN/csi-snapshotter"
image_of csi-node-driver-registrar "$REGISTRAR_VERSION" "$BIN/csi-node-driver-registrar"
image_of livenessprobe "$LIVENESSPROBE_VERSION" "$BIN/livenessprobe"
mv "$IMAGES/tags.new" "$IMAGES/tags.txt"
log "done: $(cd "$BIN" && echo *) + $(cd "$CACHE/crds" && echo *.yaml) + $(cd "$IMAGES" && echo *.tar)"
