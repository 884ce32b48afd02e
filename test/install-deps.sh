#!/bin/sh
# Installs the host tools the test suites use, idempotently: filesystem tools for the
# loop-device suites, then the VM kit's qemu and kernel for the real NVMe/TCP suites.
set -eu
# debian-archive-keyring: cmd/rds-image verifies the Debian archive it takes the image's
# tools from (test/image); containerd and runc: test/image runs the built image under them;
# openssh-client and curl: the real-kubelet suite talks to the simulated RDS and the probes.
PKGS="e2fsprogs xfsprogs util-linux btrfs-progs debian-archive-keyring containerd runc openssh-client curl"
missing=
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
if [ -x "$(dirname "$0")/vm/install-deps.sh" ]; then
  "$(dirname "$0")/vm/install-deps.sh"
fi
