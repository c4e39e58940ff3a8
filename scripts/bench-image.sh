#!/usr/bin/env bash
# Image benchmark (`make bench`): disk image assembly for the default recipe
# (recipes/trixie-minimal.yaml) from a commit already in the repository:
# `apt-ostree-factory image` (GPT, FAT32 ESP, ext4 /boot and root with the
# seeded sysroot, all in Go) against the same work done with the reference
# tools: `ostree admin init-fs/os-init/pull-local/deploy` into a directory,
# `mkfs.fat` + `mcopy` for the ESP, `mkfs.ext4 -d` for /boot and root,
# `sgdisk` and `dd conv=sparse` to assemble the disk. Prints wall times, our
# peak RSS and the ratio.
#
# Usage: sudo scripts/bench-image.sh
# Environment: BENCH_CACHE (default <repo>/.cache/bench), BENCH_RUNS (default 3),
#              BENCH_MIRROR (default: what apt is configured with).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
log() { echo "bench-image: $*" >&2; }
die() {
  echo "bench-image: $*" >&2
  exit 1
}
[[ $(id -u) -eq 0 ]] || die "run as root (the reference deploys with ostree admin and builds with mkfs.ext4 -d from a root-owned tree): sudo make bench"
bash scripts/install-test-deps.sh --bench
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH=$PATH:/usr/local/go/bin
fi
runs=${BENCH_RUNS:-3}
mirror=${BENCH_MIRROR:-$(bash scripts/debian-mirror.sh)}
cache=${BENCH_CACHE:-$repo_root/.cache/bench}
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/image.XXXXXX")
cleanup() {
  chattr -i "$tmp"/ref/ostree/deploy/*/deploy/*.0 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
go build -o "$tmp/aof" ./cmd/apt-ostree-factory || die "go build failed"
# The default recipe with its raw image only (it also lists a qcow2 twin).
recipe=$tmp/trixie-minimal.yaml
awk '/# The same disk as qcow2/ { skip = 1 } !skip' recipes/trixie-minimal.yaml >"$recipe"
grep -q 'format: qcow2' "$recipe" && die "could not drop the qcow2 image from the recipe"
aofcache=$cache/aof-cache

timed() { # name cmd...: wall seconds in $tmp/name.wall, peak RSS (KiB) in $tmp/name.rss
  local name=$1
  shift
  /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || {
    cat "$tmp/$name.err" >&2
    die "$name failed: $*"
  }
  sed -n 's/^[[:space:]]*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$tmp/$name.time" |
    awk -F: '{ if (NF == 3) print $1 * 3600 + $2 * 60 + $3; else print $1 * 60 + $2 }' >"$tmp/$name.wall"
  sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$tmp/$name.time" >"$tmp/$name.rss"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "building the commit (images skipped)"
export SOURCE_DATE_EPOCH=1763800000
commit=$("$tmp/aof" build "$recipe" --set MIRROR="$mirror" --cache-dir "$aofcache" --repo "$tmp/repo" --no-images --quiet) ||
  die "build failed"

for ((i = 1; i <= runs; i++)); do
  rm -rf "$tmp/out"
  timed "aof$i" "$tmp/aof" image --recipe "$recipe" --set MIRROR="$mirror" --repo "$tmp/repo" --output-dir "$tmp/out"
done
ours=$(cat "$tmp"/aof*.wall | median)
rss=$(cat "$tmp"/aof*.rss | sort -g | tail -n 1)
img=$tmp/out/trixie-minimal.raw
size=$(stat -c %s "$img")
alloc=$(($(stat -c %b "$img") * 512))
# Partition sizes as ours, so both sides write the same layout.
mapfile -t parts < <(sgdisk -p "$img" | awk '$1 ~ /^[0-9]+$/ { print $2 " " $3 }')
(( ${#parts[@]} == 3 )) || die "expected 3 partitions in $img"
read -r esp_s esp_e <<<"${parts[0]}"
read -r boot_s boot_e <<<"${parts[1]}"
read -r root_s root_e <<<"${parts[2]}"
kver=$(ostree show --repo="$tmp/repo" --print-metadata-key=ostree.linux "$commit" | tr -d "'")

reference() {
  local r=$tmp/ref
  rm -rf "$r" "$tmp/ref-boot" "$tmp/ref.img" "$tmp"/ref-*.img
  mkdir -p "$r"
  ostree admin init-fs "$r" >/dev/null
  ostree admin --sysroot="$r" os-init debian >/dev/null
  ostree --repo="$r/ostree/repo" config set sysroot.bootloader none
  ostree --repo="$r/ostree/repo" pull-local "$tmp/repo" "$commit" >/dev/null
  ostree --repo="$r/ostree/repo" refs --create=debian/trixie/x86_64 "$commit"
  ostree admin --sysroot="$r" deploy --os=debian --karg=root=LABEL=root --karg=rw debian/trixie/x86_64 >/dev/null
  mv "$r/boot" "$tmp/ref-boot" && mkdir "$r/boot"
  truncate -s $(((esp_e - esp_s + 1) * 512)) "$tmp/ref-esp.img"
  mkfs.fat -F 32 -n ESP "$tmp/ref-esp.img" >/dev/null
  mmd -i "$tmp/ref-esp.img" ::/EFI ::/EFI/BOOT ::/EFI/systemd ::/EFI/systemd/drivers ::/loader ::/loader/entries
  ostree cat --repo="$tmp/repo" "$commit" /usr/lib/apt-ostree/boot/BOOTX64.EFI >"$tmp/bootx64.efi"
  ostree cat --repo="$tmp/repo" "$commit" /usr/lib/apt-ostree/boot/drivers/ext4x64.efi >"$tmp/ext4x64.efi"
  printf 'timeout 3\n' >"$tmp/loader.conf"
  mcopy -i "$tmp/ref-esp.img" "$tmp/bootx64.efi" ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$tmp/ref-esp.img" "$tmp/ext4x64.efi" ::/EFI/systemd/drivers/ext4x64.efi
  mcopy -i "$tmp/ref-esp.img" "$tmp/loader.conf" ::/loader/loader.conf
  mkfs.ext4 -q -F -L boot -d "$tmp/ref-boot" "$tmp/ref-boot.img" $(((boot_e - boot_s + 1) / 2))k
  mkfs.ext4 -q -F -L root -d "$r" "$tmp/ref-root.img" $(((root_e - root_s + 1) / 2))k
  truncate -s "$size" "$tmp/ref.img"
  sgdisk -q -n 1:"$esp_s":"$esp_e" -t 1:ef00 -n 2:"$boot_s":"$boot_e" -t 2:ea00 -n 3:"$root_s":"$root_e" -t 3:8304 "$tmp/ref.img"
  dd if="$tmp/ref-esp.img" of="$tmp/ref.img" bs=1M seek=$((esp_s * 512)) oflag=seek_bytes conv=sparse,notrunc status=none
  dd if="$tmp/ref-boot.img" of="$tmp/ref.img" bs=1M seek=$((boot_s * 512)) oflag=seek_bytes conv=sparse,notrunc status=none
  dd if="$tmp/ref-root.img" of="$tmp/ref.img" bs=1M seek=$((root_s * 512)) oflag=seek_bytes conv=sparse,notrunc status=none
  sync -f "$tmp/ref.img"
  chattr -i "$r"/ostree/deploy/*/deploy/*.0
}
export -f reference
export tmp commit esp_s esp_e boot_s boot_e root_s root_e size
for ((i = 1; i <= runs; i++)); do
  timed "ref$i" bash -c reference
done
ref=$(cat "$tmp"/ref*.wall | median)
ratio=$(awk -v a="$ours" -v b="$ref" 'BEGIN { printf "%.3f", a / b }')
refalloc=$(($(stat -c %b "$tmp/ref.img") * 512))

echo
echo "image benchmark: recipes/trixie-minimal.yaml (raw image), commit ${commit:0:12}, kernel $kver, $runs run(s), median, $(nproc) CPUs"
echo "  apt-ostree-factory image (raw, $((size >> 20)) MiB disk, $((alloc >> 20)) MiB allocated): ${ours}s, peak RSS $((rss / 1024)) MB"
echo "  reference (ostree admin deploy + mkfs.fat/mcopy + mkfs.ext4 -d + sgdisk + dd, $((refalloc >> 20)) MiB allocated): ${ref}s"
echo "  ours / reference = $ratio"
