#!/usr/bin/env bash
# Resolve benchmark (part of `make bench`): times `apt-ostree-factory resolve`
# of minbase + a bootable OSTree system (indexes already cached) next to
# `apt-get install --simulate` of the same request, with apt's own options
# pointed at a private copy of the same archive's lists, and checks that both
# choose the same package set.
#
# Environment: BENCH_CACHE (default <repo>/.cache/bench), BENCH_RUNS (5),
# BENCH_SUITE / BENCH_MIRROR (default: what apt on this machine uses, see
# scripts/debian-mirror.sh), BENCH_ARCH (amd64).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
log() { echo "bench-resolve: $*" >&2; }
die() { log "$*"; exit 1; }

command -v apt-get >/dev/null || die "apt-get is required"
runs=${BENCH_RUNS:-5}
arch=${BENCH_ARCH:-amd64}
mirror=${BENCH_MIRROR:-$(bash scripts/debian-mirror.sh)}
suite=${BENCH_SUITE:-$(bash scripts/debian-mirror.sh --suite)}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[[ -r $keyring ]] || die "$keyring is missing (apt-get install debian-archive-keyring)"
cache=${BENCH_CACHE:-$repo_root/.cache/bench}
mkdir -p "$cache"
work=$(mktemp -d "$cache/resolve.XXXXXX")
trap '[[ -n ${BENCH_KEEP:-} ]] || rm -rf "$work"' EXIT

includes=(systemd-sysv udev "linux-image-$arch" ostree ostree-boot)

go build -o "$work/aof" ./cmd/apt-ostree-factory
cat >"$work/recipe.yaml" <<YAML
name: bench-resolve
architecture: $arch
sources:
  - uri: $mirror
    suite: $suite
    signed-by: [$keyring]
variant: minbase
packages: [$(IFS=,; echo "${includes[*]}")]
YAML

# apt with a private state: same archive, same architecture, no host dpkg status.
aptroot=$work/apt
mkdir -p "$aptroot"/etc/apt/{sources.list.d,preferences.d,apt.conf.d} "$aptroot"/var/lib/apt/lists/partial \
  "$aptroot"/var/cache/apt/archives/partial "$aptroot"/var/lib/dpkg
: >"$aptroot/var/lib/dpkg/status"
echo "deb [signed-by=$keyring] $mirror $suite main" >"$aptroot/etc/apt/sources.list"
aptopts=(-o "Dir=$aptroot" -o "Dir::State::status=$aptroot/var/lib/dpkg/status" -o "APT::Architecture=$arch"
  -o "APT::Architectures=$arch" -o "APT::Install-Recommends=false" -o "Debug::NoLocking=true"
  -o "Acquire::GzipIndexes=false" -o "Acquire::Languages=none" -o "APT::Sandbox::User=root" -q)
log "apt-get update into $aptroot"
apt-get "${aptopts[@]}" update >/dev/null

# The same request for apt: mmdebstrap's minbase is Essential:yes plus
# Priority:required (apt among them) of the native architecture, plus the includes.
lists=("$aptroot"/var/lib/apt/lists/*_Packages)
base=$(awk -v arch="$arch" '
  /^Package: / {p=$2; e=0; r=0; a=""}
  /^Essential: yes/ {e=1}
  /^Priority: required/ {r=1}
  /^Architecture: / {a=$2}
  /^$/ { if ((e||r) && (a==arch || a=="all")) print p }
  END { if ((e||r) && (a==arch || a=="all")) print p }' "${lists[@]}" | sort -u)
request=($base "${includes[@]}")

log "warming caches (our index cache, apt's pkgcache.bin)"
"$work/aof" resolve "$work/recipe.yaml" --cache-dir="$work/cache" --lock="$work/ours.lock" --list >"$work/ours.list" 2>/dev/null
apt-get "${aptopts[@]}" install --simulate "${request[@]}" >"$work/apt.out"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc -l; }

ours=() apts=()
for ((i = 0; i < runs; i++)); do
  ours+=("$(timeit "$work/aof" resolve "$work/recipe.yaml" --cache-dir="$work/cache" --lock="$work/ours.lock")")
  apts+=("$(timeit apt-get "${aptopts[@]}" install --simulate "${request[@]}")")
done
ours_med=$(printf '%s\n' "${ours[@]}" | median)
apt_med=$(printf '%s\n' "${apts[@]}" | median)

# Same package set? apt prints "Inst NAME (VERSION ...)" for each package.
awk '$1 == "Inst" { v = $3; sub(/^\(/, "", v); print $2, v }' "$work/apt.out" | sort -u >"$work/apt.set"
awk '{print $1, $2}' "$work/ours.list" | sort -u >"$work/ours.set"
same=yes
if ! diff -u "$work/apt.set" "$work/ours.set" >"$work/set.diff"; then same=no; fi

printf '\nResolve benchmark: %s/%s minbase + %s (indexes cached, %d runs, median)\n' "$suite" "$arch" "${includes[*]}" "$runs"
printf '  %-44s %8.3fs\n' "apt-ostree-factory resolve (verify+parse+solve)" "$ours_med"
printf '  %-44s %8.3fs\n' "apt-get install --simulate (pkgcache.bin warm)" "$apt_med"
printf '  %-44s %8.3f\n' "ratio ours/apt" "$(echo "$ours_med / $apt_med" | bc -l)"
printf '  %-44s %s (%d packages ours, %d apt)\n' "same package set as apt-get" "$same" "$(wc -l <"$work/ours.set")" "$(wc -l <"$work/apt.set")"
if [[ $same == no ]]; then
  echo "  differences (- apt, + ours):"
  grep '^[-+][^-+]' "$work/set.diff" | sed 's/^/    /'
fi
