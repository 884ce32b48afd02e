#!/bin/bash
# build.sh - everything `make e2e-kube` runs on, built once into RDS_KUBE_CACHE (default
# /var/cache/rds-csi-kube) and then reused (each artefact stamped with what it was built from).
# Adapted from the kube-node kit's build.sh (../shared/kube-node, a reference: nothing of it is
# used at run time). Only apt and the Go module proxy are used.
#
#   1. Debian packages: containerd, runc, etcd, the CNI plugins, busybox, openssl, curl.
#   2. Kubernetes (kubelet, apiserver, controller-manager, scheduler, kubectl) from the
#      k8s.io/kubernetes module, ~6 min cold on 2 cores.
#   3. The sidecars deploy.yaml runs: external-provisioner, -attacher, -resizer, -snapshotter
#      and snapshot-controller from the proxy; node-driver-registrar and livenessprobe from
#      their release sources in ./sidecars (the proxy serves neither); the snapshot CRDs.
#   4. Images (`rds-image wrap`, scratch + static binaries), into RDS_KUBE_CACHE/images:
#      each sidecar at the path upstream's image has it, rds-csi-test.local/<name>:<version>;
#      the node's pod sandbox rds-csi-test.local/pause:1 (./pause) and the test pods'
#      rds-csi-test.local/busybox:1.
#
# Versions follow deploy.yaml where the proxy serves them: csi-resizer v2.2.1 is not served
# (v2.2.0 and v2.3.0 are), so v2.2.0; csi-snapshotter v8.6.0 and csi-attacher v4.13.0 as
# deployed; csi-provisioner v5.3.0 (v6.x needs a module the proxy refuses); the registrar
# v2.17.0 and livenessprobe v2.19.0 (deploy.yaml names v2.18.0 and v2.20.0, whose flags are
# the same for what it uses).
#
#   RDS_KUBE_CACHE     the cache (default /var/cache/rds-csi-kube)
#   K8S_VERSION        default v1.34.4 (1.35+ refuse cgroup v1, 1.36+ drop Debian 12's containerd 1.6)
#   PROVISIONER_VERSION, ATTACHER_VERSION, RESIZER_VERSION, SNAPSHOTTER_VERSION
#   SKIP_APT=1         do not run apt-get
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${RDS_KUBE_CACHE:-/var/cache/rds-csi-kube}
K8S_VERSION=${K8S_VERSION:-v1.34.4}
PROVISIONER_VERSION=${PROVISIONER_VERSION:-v5.3.0}
ATTACHER_VERSION=${ATTACHER_VERSION:-v4.13.0}
RESIZER_VERSION=${RESIZER_VERSION:-v2.2.0}
SNAPSHOTTER_VERSION=${SNAPSHOTTER_VERSION:-v8.6.0}
REGISTRAR_VERSION=v2.17.0 LIVENESSPROBE_VERSION=v2.19.0 # the sources in ./sidecars
BIN=$CACHE/bin
export PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0
log() { echo "[e2e-kube build $(date +%T)] $*" >&2; }

mkdir -p "$BIN" "$CACHE/src" "$CACHE/crds" "$CACHE/images"
fresh() { [ -f "$BIN/.$1.stamp" ] && [ "$(cat "$BIN/.$1.stamp")" = "$2" ] && [ -x "$BIN/$1" ]; }

# ---- Debian packages ------------------------------------------------------------------
PKGS="containerd runc etcd-server containernetworking-plugins busybox-static openssl util-linux e2fsprogs curl"
if [ "${SKIP_APT:-0}" != 1 ]; then
  missing=""
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    log "apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

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

# ---- Kubernetes -------------------------------------------------------------------------
# k8s.io/kubernetes replaces k8s.io/* with ./staging/...; the wrapper maps each to the
# published k8s.io/<x> v0.<minor>.<patch> module instead.
K8S_BINS="kubelet kube-apiserver kube-controller-manager kube-scheduler kubectl"
need=0
for b in $K8S_BINS; do fresh "$b" "$K8S_VERSION" || need=1; done
if [ $need = 1 ]; then
  d=$CACHE/src/k8s-$K8S_VERSION
  mkdir -p "$d"
  sv=v0.${K8S_VERSION#v1.} minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  gm=$( (cd "$d" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION") | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module rdscsi.local/k8sbuild"
    grep -E '^go ' "$gm"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    sed -n '/^replace (/,/^)/p' "$gm" | awk -v sv="$sv" '/=>/{print "replace "$1" => "$1" "sv}'
  } >"$d/go.mod"
  ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  pk=""
  for b in $K8S_BINS; do pk="$pk k8s.io/kubernetes/cmd/$b"; done
  log "kubernetes $K8S_VERSION: building $K8S_BINS (cold: ~6 min on 2 cores, ~2 GiB RAM)"
  (cd "$d" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$BIN/" $pk)
  for b in $K8S_BINS; do echo "$K8S_VERSION" >"$BIN/.$b.stamp"; done
else
  log "kubernetes $K8S_VERSION: cached"
fi

# ---- sidecars ----------------------------------------------------------------------------
wrap_build github.com/kubernetes-csi/external-provisioner/v5 "$PROVISIONER_VERSION" \
  github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner csi-provisioner
wrap_build github.com/kubernetes-csi/external-attacher/v4 "$ATTACHER_VERSION" \
  github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher csi-attacher
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
# source_build NAME VERSION CMD: a release source of ./sidecars, its modules from the proxy
source_build() {
  local n=$1 v=$2 cmd=$3 src=$HERE/sidecars/$1-$2 sum
  sum=$(cd "$src" && find . -type f -print0 | sort -z | xargs -0 cat | sha256sum | cut -c1-16)
  fresh "$cmd" "$n@$v $sum" && { log "$cmd: cached ($n@$v)"; return; }
  log "$cmd: building $n $v from ./sidecars"
  (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X main.version=$v" -o "$BIN/$cmd" "./cmd/$cmd")
  echo "$n@$v $sum" >"$BIN/.$cmd.stamp"
}
source_build node-driver-registrar "$REGISTRAR_VERSION" csi-node-driver-registrar
source_build livenessprobe "$LIVENESSPROBE_VERSION" livenessprobe
(cd "$REPO" && go build -trimpath -ldflags "-s -w" -o "$BIN/pause" ./test/kube/pause)

# Sidecar images: each binary at / under its own name, as upstream's images hold it (the
# registrar's liveness probe in deploy.yaml execs /csi-node-driver-registrar). Stamped with
# the binary's and the image tool's sources, so a rebuilt binary or tool makes a new image.
IMAGES=$CACHE/images
mkdir -p "$IMAGES"
tool_sum=$(cd "$REPO" && cat cmd/rds-image/*.go internal/imagebuild/*.go | sha256sum | cut -c1-16)
image_of() { # NAME VERSION BINARY [WRAP-FLAGS...]: rds-csi-test.local/NAME:VERSION, BINARY at /NAME
  local b=$1 v=$2 bin=$3 stamp
  shift 3
  [ -n "$v" ] || { log "ERROR: no version known for $b"; exit 1; }
  echo "$b $v" >>"$IMAGES/tags.new"
  stamp="$tool_sum $v $(sha256sum <"$bin" | cut -c1-16) $*"
  if [ -f "$IMAGES/$b-amd64.tar" ] && [ "$(cat "$IMAGES/.$b.stamp" 2>/dev/null)" = "$stamp" ]; then return; fi
  (cd "$REPO" && go run ./cmd/rds-image wrap -binary "$bin" -path "/$b" -image "rds-csi-test.local/$b" -version "$v" -out "$IMAGES" "$@") >&2
  echo "$stamp" >"$IMAGES/.$b.stamp"
}
# tags.txt: "<name> <tag>" of each image, for the suite's kustomization
rm -f "$IMAGES/tags.new"
image_of csi-provisioner "$PROVISIONER_VERSION" "$BIN/csi-provisioner"
image_of csi-attacher "$ATTACHER_VERSION" "$BIN/csi-attacher"
image_of csi-resizer "$RESIZER_VERSION" "$BIN/csi-resizer"
image_of csi-snapshotter "$SNAPSHOTTER_VERSION" "$BIN/csi-snapshotter"
image_of csi-node-driver-registrar "$REGISTRAR_VERSION" "$BIN/csi-node-driver-registrar"
image_of livenessprobe "$LIVENESSPROBE_VERSION" "$BIN/livenessprobe"
# the node's pod sandbox (containerd's sandbox_image) and the test pods' shell
image_of pause 1 "$BIN/pause"
image_of busybox 1 /bin/busybox -path /bin/busybox -busybox /bin/busybox -entrypoint /bin/sh
mv "$IMAGES/tags.new" "$IMAGES/tags.txt"
log "done: $(cd "$BIN" && echo *) + $(cd "$CACHE/crds" && echo *.yaml) + $(cd "$IMAGES" && echo *.tar)"
