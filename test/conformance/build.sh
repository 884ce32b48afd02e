#!/bin/bash
# build.sh - what `make conformance` runs besides the real-kubelet node (test/kube/build.sh),
# built once into RDS_KUBE_CACHE/conformance and reused (stamped):
#   - e2e.test: `go test -c k8s.io/kubernetes/test/e2e` at the node's Kubernetes version, in
#     test/kube/build.sh's wrapper module (the staging k8s.io/* modules from the proxy); ~8 min cold;
#   - agnhost (k8s.io/kubernetes/test/images/agnhost), the suite's test-pod program;
#   - the images e2e.test names for storage tests, under the registries repo-list.yaml maps
#     (rds-csi-test.local/e2e/...): agnhost, busybox, nginx and jessie-dnsutils are one root
#     (busybox's shell and applets + /agnhost; the suite only runs shell commands in the last
#     three), pause is test/kube/pause. `e2e.test --list-images` names them, so a version
#     change of Kubernetes renames them too.
#   RDS_KUBE_CACHE (default /var/cache/rds-csi-kube), K8S_VERSION (default v1.34.4)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
KCACHE=${RDS_KUBE_CACHE:-/var/cache/rds-csi-kube}
K8S_VERSION=${K8S_VERSION:-v1.34.4}
CACHE=$KCACHE/conformance
WRAP=$KCACHE/src/k8s-$K8S_VERSION # test/kube/build.sh's wrapper module
export PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0
log() { echo "[conformance build $(date +%T)] $*" >&2; }
[ -f "$WRAP/go.mod" ] || { log "ERROR: no Kubernetes wrapper module at $WRAP: run test/kube/build.sh first"; exit 1; }
mkdir -p "$CACHE/images"

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
ld="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld="$ld -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done
if [ "$(cat "$CACHE/.e2e.stamp" 2>/dev/null)" != "$K8S_VERSION" ] || [ ! -x "$CACHE/e2e.test" ] || [ ! -x "$CACHE/agnhost" ]; then
  log "e2e.test and agnhost $K8S_VERSION: building (cold: ~8 min on 2 cores)"
  (cd "$WRAP" && GOFLAGS=-mod=mod go test -c -trimpath -ldflags "$ld" -o "$CACHE/e2e.test" k8s.io/kubernetes/test/e2e)
  (cd "$WRAP" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ld" -o "$CACHE/agnhost" k8s.io/kubernetes/test/images/agnhost)
  echo "$K8S_VERSION" >"$CACHE/.e2e.stamp"
else
  log "e2e.test and agnhost $K8S_VERSION: cached"
fi

# The images, by the names e2e.test gives them with repo-list.yaml
images=$(KUBE_TEST_REPO_LIST=$HERE/repo-list.yaml "$CACHE/e2e.test" --list-images 2>/dev/null)
refs_of() { # NAME: every image e2e.test names NAME (repository:tag; nginx has two tags)
  local r
  r=$(grep -E "^rds-csi-test\.local/[a-z0-9/-]*/$1:[^:]+$" <<<"$images")
  [ -n "$r" ] || { log "ERROR: e2e.test --list-images names no $1 under rds-csi-test.local (repo-list.yaml)"; exit 1; }
  echo "$r"
}
tool_sum=$(cd "$REPO" && cat cmd/rds-image/*.go internal/imagebuild/*.go | sha256sum | cut -c1-16)
bin_sum=$(cat "$CACHE/agnhost" "$KCACHE/bin/pause" | sha256sum | cut -c1-16)
: >"$CACHE/images/refs.new"
image() { # NAME ENTRYPOINT BINARY PATH [WRAP-FLAGS...]: one archive per tag, NAME-TAG-amd64.tar
  local n=$1 ep=$2 bin=$3 at=$4 ref tag stamp
  shift 4
  for ref in $(refs_of "$n"); do
    tag=${ref##*:}
    echo "$ref" >>"$CACHE/images/refs.new"
    stamp="$tool_sum $bin_sum $ref"
    [ -f "$CACHE/images/$n-$tag-amd64.tar" ] && [ "$(cat "$CACHE/images/.$n-$tag.stamp" 2>/dev/null)" = "$stamp" ] && continue
    rm -rf "$CACHE/images/tmp" && mkdir -p "$CACHE/images/tmp"
    (cd "$REPO" && go run ./cmd/rds-image wrap -binary "$bin" -path "$at" -image "${ref%:*}" -version "$tag" \
      -entrypoint "$ep" -out "$CACHE/images/tmp" "$@") >&2
    mv "$CACHE/images/tmp/$n-amd64.tar" "$CACHE/images/$n-$tag-amd64.tar"
    echo "$stamp" >"$CACHE/images/.$n-$tag.stamp"
  done
}
shell=(-busybox /bin/busybox)
image agnhost /agnhost "$CACHE/agnhost" /agnhost "${shell[@]}"
image busybox /bin/sh "$CACHE/agnhost" /agnhost "${shell[@]}"
image nginx /bin/sh "$CACHE/agnhost" /agnhost "${shell[@]}"
image jessie-dnsutils /bin/sh "$CACHE/agnhost" /agnhost "${shell[@]}"
image pause /pause "$KCACHE/bin/pause" /pause
rm -rf "$CACHE/images/tmp"
mv "$CACHE/images/refs.new" "$CACHE/images/refs.txt"
log "done: $CACHE/e2e.test + $(tr '\n' ' ' <"$CACHE/images/refs.txt")"
