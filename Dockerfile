# rds-csi container image: one image for the controller and the node plugin.
#
# Final image = the static rds-csi binary + exactly the six filesystem tools the mount package
# executes (mkfs.ext4, e2fsck, resize2fs from e2fsprogs; mkfs.xfs, xfs_repair, xfs_growfs from
# xfsprogs) + the shared libraries they load and the dynamic loader. No shell, no package
# manager, no other tools. For docker/buildx users (`make image-docker`, or
# `docker buildx build --platform linux/amd64,linux/arm64 .`); `make image` and the release
# workflow build the same image without a container engine (cmd/rds-image). test/deploy keeps
# the two recipes in step (tools, packages, Debian release, config files, user, entrypoint,
# labels) and runs this file's tools-stage script on the host.

# ---- build: the static binary ------------------------------------------------------------
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -tags grpcnotrace -ldflags "-s -w -X main.version=$VERSION" -o /out/rds-csi .

# ---- tools: the filesystem tools and everything they load -----------------------------------
FROM debian:12-slim AS tools
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends e2fsprogs xfsprogs \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man /usr/share/locale
# Copy each tool under its own name (mkfs.ext4 is mke2fs; the name selects the filesystem),
# every library ldd resolves for it and the loader, keeping their paths; then prove each tool
# starts inside the new root. ROOTFS is a build argument so the test can run this very step
# on a host.
ARG ROOTFS=/rootfs
RUN set -eu; \
    mkdir -p "$ROOTFS/usr/sbin" "$ROOTFS/etc" "$ROOTFS/tmp"; \
    for tool in mkfs.ext4 e2fsck resize2fs mkfs.xfs xfs_repair xfs_growfs; do \
      path=$(command -v "$tool" || true); \
      [ -n "$path" ] || { echo "tool $tool not found" >&2; exit 1; }; \
      cp -L "$path" "$ROOTFS/usr/sbin/$tool"; \
      for lib in $(ldd "$path" | grep -o '/[^ ]*'); do cp -L --parents "$lib" "$ROOTFS"; done; \
    done; \
    cp /etc/mke2fs.conf "$ROOTFS/etc/mke2fs.conf"; \
    ln -sf ../proc/self/mounts "$ROOTFS/etc/mtab"; \
    printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$ROOTFS/etc/passwd"; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > "$ROOTFS/etc/group"; \
    chmod 1777 "$ROOTFS/tmp"; \
    for tool in mkfs.ext4 e2fsck mkfs.xfs xfs_repair xfs_growfs; do \
      chroot "$ROOTFS" "/usr/sbin/$tool" -V >/dev/null 2>&1 || { echo "$tool does not start in $ROOTFS" >&2; exit 1; }; \
    done; \
    chroot "$ROOTFS" /usr/sbin/resize2fs 2>&1 | grep -q '^resize2fs ' || { echo "resize2fs does not start in $ROOTFS" >&2; exit 1; }

# ---- final ----------------------------------------------------------------------------------
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="rds-csi" \
      org.opencontainers.image.description="CSI driver for MikroTik ROSE Data Server storage over NVMe/TCP (controller and node plugin)" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$REVISION" \
      org.opencontainers.image.base.name="scratch"
COPY --from=tools /rootfs/ /
COPY --from=build /out/rds-csi /usr/bin/rds-csi
ENV PATH=/usr/sbin:/usr/bin
# Non-root by default: the controller only needs SSH and the Kubernetes API. The node
# DaemonSet overrides this with runAsUser 0 and privileged, which it needs for
# /dev/nvme-fabrics, sysfs and mounts.
USER 65532:65532
ENTRYPOINT ["/usr/bin/rds-csi"]
