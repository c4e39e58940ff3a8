#!/usr/bin/env bash
# Build benchmark (`make bench`): the default recipe (recipes/trixie-minimal.yaml)
# through `apt-ostree-factory build`, against the same package set through
# `mmdebstrap` + `ostree commit`, with warm caches on both sides, and a
# one-package incremental rebuild. Prints wall times, ratios and our peak RSS
# against the targets of issue 4:
#   cold build (debs cached, fresh repository) <= 1/2 of mmdebstrap + ostree commit,
#   incremental rebuild (one more package)     <= 1/5 of our cold build
#     (measured with `build --incremental`; the default, from-scratch
#     configure of the same rebuild is printed too),
#   peak memory                                 < 1 GB.
#
# Usage: sudo scripts/bench-build.sh
# Environment: BENCH_CACHE (default <repo>/.cache/bench), BENCH_RUNS (default 1),
#              BENCH_MIRROR (default: what apt is configured with).
#
# Warm caches: our build resolves with cached indexes and fetches nothing
# (.debs in its cache); mmdebstrap gets the same .debs in
# /var/cache/apt/archives through a setup hook (it still downloads the
# Packages indexes, which it cannot cache: that time is printed separately).
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"
log() { echo "bench-build: $*" >&2; }
die() {
  echo "bench-build: $*" >&2
  exit 1
}
[[ $(id -u) -eq 0 ]] || die "run as root (mmdebstrap --mode=root builds the reference tree): sudo make bench"
bash scripts/install-test-deps.sh --bench
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH=$PATH:/usr/local/go/bin
fi
runs=${BENCH_RUNS:-1}
mirror=${BENCH_MIRROR:-$(bash scripts/debian-mirror.sh)}
cache=${BENCH_CACHE:-$repo_root/.cache/bench}
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

go build -o "$tmp/aof" ./cmd/apt-ostree-factory || die "go build failed"
aofcache=$cache/aof-cache
recipe=recipes/trixie-minimal.yaml
export SOURCE_DATE_EPOCH=1763800000

# timed NAME CMD...: wall seconds to $tmp/NAME.wall, max RSS (kB) to $tmp/NAME.rss.
timed() {
  local name=$1
  shift
  sync
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$tmp/$name.time" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" || rc=$?
  t1=$EPOCHREALTIME
  if ((rc != 0)); then
    tail -n 30 "$tmp/$name.err" >&2
    die "$name failed (exit $rc)"
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f\n", b - a }' >"$tmp/$name.wall"
  sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$tmp/$name.time" >"$tmp/$name.rss"
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "warming our caches (indexes, .debs) and writing the lock"
"$tmp/aof" build "$recipe" --set MIRROR="$mirror" --cache-dir "$aofcache" --repo "$tmp/warm-repo" \
  --write-lock "$tmp/lock" --no-images --quiet >/dev/null || die "warm-up build failed"
rm -rf "$tmp/warm-repo"
npkgs=$(grep -c '^package ' "$tmp/lock" || true)

extra=$tmp/extra.yaml
sed 's/^packages:$/packages:\n  - hello/' "$recipe" >"$extra"

for ((i = 1; i <= runs; i++)); do
  rm -rf "$tmp/repo"
  timed "cold$i" "$tmp/aof" build "$recipe" --set MIRROR="$mirror" --cache-dir "$aofcache" --repo "$tmp/repo" --no-images
  timed "incr$i" "$tmp/aof" build "$extra" --set MIRROR="$mirror" --cache-dir "$aofcache" --repo "$tmp/repo" --no-images
  grep -q '1 unpacked, ' "$tmp/incr$i.err" || die "incremental build did not unpack exactly one .deb: $(grep unpack "$tmp/incr$i.err")"
  # --incremental: the first build keeps its configured tree, the second
  # configures only hello on it.
  rm -rf "$tmp/repo-i"
  timed "icold$i" "$tmp/aof" build "$recipe" --set MIRROR="$mirror" --cache-dir "$aofcache" --repo "$tmp/repo-i" --no-images --incremental
  timed "iincr$i" "$tmp/aof" build "$extra" --set MIRROR="$mirror" --cache-dir "$aofcache" --repo "$tmp/repo-i" --no-images --incremental
  grep -q 'incremental: configuring 1 new package' "$tmp/iincr$i.err" || die "--incremental build did not configure incrementally: $(grep incremental: "$tmp/iincr$i.err")"
done
cold=$(cat "$tmp"/cold*.wall | median)
incr=$(cat "$tmp"/incr*.wall | median)
icold=$(cat "$tmp"/icold*.wall | median)
iincr=$(cat "$tmp"/iincr*.wall | median)
rss=$(cat "$tmp"/cold*.rss "$tmp"/incr*.rss "$tmp"/icold*.rss "$tmp"/iincr*.rss | sort -g | tail -n 1)

# The reference: the same packages through mmdebstrap, then ostree commit.
arch=$(dpkg --print-architecture)
debs=$tmp/debs
mkdir -p "$debs"
# apt names archives name_version_arch.deb with the epoch's ':' as %3a.
while read -r kw name version parch srcid size sha rest; do
  [[ "$kw" == package ]] || continue
  src=$aofcache/debs/$sha.deb
  [[ -f "$src" ]] || die "no cached .deb for $name ($src)"
  ln -f "$src" "$debs/${name}_${version//:/%3a}_${parch}.deb" 2>/dev/null || cp "$src" "$debs/${name}_${version//:/%3a}_${parch}.deb"
done <"$tmp/lock"
include=$(awk '$1 == "package" { printf "%s%s", sep, $2; sep = "," }' "$tmp/lock")
for ((i = 1; i <= runs; i++)); do
  rm -rf "$tmp/mm" "$tmp/mm-repo"
  timed "mm$i" mmdebstrap --mode=root --variant=custom --include="$include" \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="cp $debs/*.deb \"\$1\"/var/cache/apt/archives/" \
    trixie "$tmp/mm" "deb $mirror trixie main"
  find "$tmp/mm" -xdev ! -type f ! -type d ! -type l -delete
  ostree init --repo="$tmp/mm-repo" --mode=archive
  timed "commit$i" ostree commit --repo="$tmp/mm-repo" --branch=bench --timestamp=2025-01-01T00:00:00Z "$tmp/mm"
done
mm=$(cat "$tmp"/mm*.wall | median)
oc=$(cat "$tmp"/commit*.wall | median)
ref=$(awk -v a="$mm" -v b="$oc" 'BEGIN { printf "%.2f", a + b }')


verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t) ? "PASS" : "MISS" }'; }
r_cold=$(awk -v a="$cold" -v b="$ref" 'BEGIN { printf "%.3f", a / b }')
r_incr=$(awk -v a="$incr" -v b="$cold" 'BEGIN { printf "%.3f", a / b }')
r_iincr=$(awk -v a="$iincr" -v b="$cold" 'BEGIN { printf "%.3f", a / b }')
echo
echo "build benchmark: $recipe ($npkgs packages, trixie/$arch), $runs run(s), median, $(nproc) CPUs"
echo "  apt-ostree-factory build, cold (debs cached, fresh repo): ${cold}s"
echo "  apt-ostree-factory build, +1 package (hello):             ${incr}s  (configures everything again)"
echo "  build --incremental, cold (keeps its configured tree):    ${icold}s"
echo "  build --incremental, +1 package (hello):                  ${iincr}s  (configures hello on the kept tree)"
echo "  mmdebstrap (same set, .debs in its apt cache):            ${mm}s"
echo "  ostree commit of that tree:                              ${oc}s"
echo "  cold / (mmdebstrap + ostree commit) = $r_cold  (target <= 0.5: $(verdict "$r_cold" 0.5))"
echo "  +1 package, from-scratch configure / cold = $r_incr  (reproducible mode, for reference)"
echo "  +1 package, --incremental / cold    = $r_iincr  (target <= 0.2: $(verdict "$r_iincr" 0.2))"
echo "  peak RSS of our builds: $((rss / 1024)) MB  (target < 1024 MB: $(verdict "$rss" 1048576))"
