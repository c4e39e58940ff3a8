#!/usr/bin/env bash
# Installs the tools the test suite and benchmarks use as oracles, when they are
# missing. Safe to run repeatedly; does nothing when everything is present.
# Usage: scripts/install-test-deps.sh [--bench]
set -euo pipefail

# command:package pairs the tests need.
need=(
  "ostree:ostree"
  "gpg:gnupg"
  "setfattr:attr"
  "e2fsck:e2fsprogs"
  "xz:xz-utils"
  "mmdebstrap:mmdebstrap"
  "apt-get:apt"
  "dpkg-deb:dpkg"
  "newuidmap:uidmap"
  "unshare:util-linux"
  "cpio:cpio"
  "busybox:busybox"
  "sfdisk:fdisk"
  "qemu-system-x86_64:qemu-system-x86"
  "qemu-img:qemu-utils"
  "/usr/share/OVMF/OVMF_CODE_4M.fd:ovmf"
  "sgdisk:gdisk"
  "fsck.fat:dosfstools"
  "mdir:mtools"
  "losetup:mount"
  "lsattr:e2fsprogs"
)
if [[ "${1:-}" == "--bench" ]]; then
  need+=("/usr/bin/time:time" "bc:bc")
fi

missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  if [[ "$cmd" == /* ]]; then
    [[ -e "$cmd" ]] || missing+=("$pkg")
  else
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps: missing packages: ${missing[*]}; run this script as root or install them" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${missing[*]}" >&2
# Third-party sources configured on a machine may be unreachable; the Debian
# archive is what matters, so a partial update is not fatal here. The install
# below fails loudly if the Debian lists are missing.
apt-get update -q -o Acquire::Retries=3 >&2 || echo "install-test-deps: apt-get update reported errors; trying the install anyway" >&2
apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
