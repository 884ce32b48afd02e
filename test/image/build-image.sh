#!/usr/bin/env bash
# Builds the rds-csi container image from the Dockerfile (`make image-docker`; `make image`
# builds the same image without an engine, with cmd/rds-image) with the first container
# builder that works here: docker, podman or buildah. A builder counts only if it can reach
# its engine (`docker info` succeeds, ...); an installed CLI without an engine does not.
# With none, this says so and exits 1: an image that was not built must not look built.
#
#   IMAGE     repository to tag (default ghcr.io/srvlab/rds-csi, as deploy.yaml and `make image` use)
#   VERSION   tag and main.version (default: git describe)
#   ENGINE    force docker, podman or buildah
#   MAX_MIB   fail when the image is larger than this many MiB (default 30)
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-ghcr.io/srvlab/rds-csi}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
MAX_MIB=${MAX_MIB:-30}
tag="$IMAGE:$VERSION"

# works NAME: succeeds when NAME is installed and reaches its engine; otherwise records why.
reasons=()
works() {
  local name=$1 out
  if ! command -v "$name" >/dev/null 2>&1; then
    reasons+=("$name not installed")
    return 1
  fi
  if out=$("$name" info 2>&1 >/dev/null </dev/null); then
    return 0
  fi
  out=$(printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)
  reasons+=("$name info failed: ${out:-exit status non-zero}")
  return 1
}

engine=${ENGINE:-}
if [ -n "$engine" ]; then
  works "$engine" || engine=""
else
  for candidate in docker podman buildah; do
    if works "$candidate"; then engine=$candidate; break; fi
  done
fi
if [ -z "$engine" ]; then
  joined=$(printf '%s; ' "${reasons[@]}")
  echo "build-image: no container builder on this machine (${joined%; }); the Dockerfile is checked by test/deploy instead" >&2
  exit 1
fi

build_args=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION" -f Dockerfile -t "$tag" .)
echo "build-image: building $tag with $engine"
case $engine in
  docker | podman) "$engine" build "${build_args[@]}" ;;
  buildah) buildah bud "${build_args[@]}" ;;
  *) echo "build-image: ENGINE=$engine is not one of docker, podman, buildah" >&2; exit 1 ;;
esac

# The image's uncompressed size, against the target.
case $engine in
  docker | podman) bytes=$("$engine" image inspect --format '{{.Size}}' "$tag") ;;
  buildah) bytes=$(buildah inspect --type image --format '{{.FromImageSize}}' "$tag" 2>/dev/null || echo 0) ;;
esac
if ! [[ ${bytes:-} =~ ^[0-9]+$ ]] || [ "$bytes" -eq 0 ]; then
  echo "build-image: built $tag; $engine did not report its size, so the < $MAX_MIB MiB target is unchecked" >&2
  exit 0
fi
mib=$(( (bytes + 1048575) / 1048576 ))
echo "build-image: $tag is $mib MiB (target < $MAX_MIB MiB)"
if [ "$mib" -ge "$MAX_MIB" ]; then
  echo "build-image: $tag is $mib MiB, over the $MAX_MIB MiB target" >&2
  exit 1
fi
