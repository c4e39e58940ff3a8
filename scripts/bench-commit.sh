#!/usr/bin/env bash
# Commit benchmark (`make bench`): commits the same real Debian tree with our
# writer (`apt-ostree-factory commit`) and with `ostree commit`, into fresh
# archive repositories at the same zlib level, checks that both produce the same
# commit checksum and that `ostree fsck` accepts ours, and prints the wall-time,
# peak-memory and repository-size ratios against the targets:
#   wall time ours/ostree <= 1/3, repository size ours/ostree <= 1.05,
#   our peak RSS < 300 MB.
#
# Usage: sudo scripts/bench-commit.sh [--prepare]
#   --prepare   only build (or find) the cached Debian tree, then exit.
#
# Environment:
#   BENCH_CACHE       cache directory (default: <repo>/.cache/bench); the tree is
#                     built once with mmdebstrap and reused; temporary
#                     repositories are made here too (same filesystem as the tree)
#   BENCH_RUNS        timed runs of each tool, median reported (default: 3)
#   BENCH_MIRROR      Debian mirror (default: what apt is configured with,
#                     see scripts/debian-mirror.sh)
#   BENCH_SUITE       Debian suite (default: the configured one)
#   BENCH_INCLUDE     packages added to minbase (default below)
#   BENCH_ZLIB_LEVEL  compression level for both repositories (default: 6,
#                     ostree's default [archive] zlib-level)
#   BENCH_TIMESTAMP   commit timestamp for both tools (default: 2025-01-01T00:00:00Z)
#
# Exit status: 0 when the benchmark ran and the results verified (even if a
# performance target is missed, which is printed as MISS); non-zero when a tool
# fails, the commit checksums differ, or `ostree fsck` rejects our repository.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

prepare_only=0
case "${1:-}" in
  "") ;;
  --prepare) prepare_only=1 ;;
  -h | --help)
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "bench-commit: unknown argument: $1" >&2
    exit 2
    ;;
esac

log() { echo "bench-commit: $*" >&2; }
die() {
  echo "bench-commit: $*" >&2
  exit 1
}

if [[ $(id -u) -ne 0 ]]; then
  die "must run as root: mmdebstrap builds the Debian tree in root mode (real ownership and setuid bits, as in an image), and both tools must read every file of it. Run: sudo make bench"
fi

runs=${BENCH_RUNS:-3}
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, got '$runs'"
level=${BENCH_ZLIB_LEVEL:-6}
[[ "$level" =~ ^[0-9]$ ]] || die "BENCH_ZLIB_LEVEL must be 0..9, got '$level'"
timestamp=${BENCH_TIMESTAMP:-2025-01-01T00:00:00Z}
branch=bench
subject=bench
cache=${BENCH_CACHE:-$repo_root/.cache/bench}

bash scripts/install-test-deps.sh --bench

for tool in ostree mmdebstrap /usr/bin/time; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found after scripts/install-test-deps.sh --bench"
done
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
  PATH=$PATH:/usr/local/go/bin # sudo's secure_path often drops it
fi

mirror=${BENCH_MIRROR:-$(bash scripts/debian-mirror.sh)}
suite=${BENCH_SUITE:-$(bash scripts/debian-mirror.sh --suite)}
arch=$(dpkg --print-architecture)
include=${BENCH_INCLUDE:-systemd-sysv,udev,linux-image-$arch,ostree,initramfs-tools}

# ---------------------------------------------------------------------------
# The Debian tree, built once and cached. The cache key covers everything that
# changes its content except the archive's own updates.
key=$(printf '%s\n' "$suite" "$arch" minbase "$include" | sha256sum | cut -c1-12)
tree=$cache/tree-$suite-$arch-$key
marker=$tree.done

mkdir -p "$cache"
if [[ -f "$marker" && -d "$tree" ]]; then
  log "reusing cached tree $tree (built $(sed -n 's/^built=//p' "$marker"))"
else
  partial=$tree.partial
  rm -rf "$tree" "$partial" "$marker"
  mkdir -p "$partial"
  log "building the Debian tree: mmdebstrap --variant=minbase --include=$include $suite from $mirror"
  log "(this downloads ~200 MB and takes a few minutes; it is done once)"
  # mode root: real ownership; the target directory is empty, so no --skip=check/empty.
  mmdebstrap --mode=root --variant=minbase --include="$include" \
    --aptopt='Acquire::Retries "3"' \
    "$suite" "$partial" "$mirror"
  # OSTree stores only regular files, directories and symlinks: `ostree commit`
  # refuses device nodes, FIFOs and sockets. mmdebstrap populates /dev with
  # nodes in root mode; an OSTree system gets /dev from devtmpfs anyway.
  special=$(find "$partial" -xdev ! -type f ! -type d ! -type l -print -delete | wc -l)
  log "removed $special device nodes/FIFOs/sockets (not representable in OSTree)"
  mv "$partial" "$tree"
  {
    echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "mirror=$mirror"
    echo "suite=$suite"
    echo "arch=$arch"
    echo "include=$include"
    echo "removed_special=$special"
  } >"$marker"
fi

tree_bytes=$(du -sb "$tree" | cut -f1)
tree_files=$(find "$tree" -xdev -type f | wc -l)
tree_dirs=$(find "$tree" -xdev -type d | wc -l)
tree_links=$(find "$tree" -xdev -type l | wc -l)
tree_kernel=$(find "$tree/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f ' 2>/dev/null || true)
log "tree: $tree"
log "tree: $((tree_bytes / 1000000)) MB (du -sb), $tree_files files, $tree_dirs directories, $tree_links symlinks; kernel: ${tree_kernel:-none}"

if ((prepare_only)); then
  exit 0
fi

# ---------------------------------------------------------------------------
# Our binary, and scratch space on the tree's filesystem (not /tmp, which may be
# a tmpfs and would turn a disk benchmark into a RAM one).
tmp=$(mktemp -d "$cache/run.XXXXXX")
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

log "building ./cmd/apt-ostree-factory"
go build -o "$tmp/apt-ostree-factory" ./cmd/apt-ostree-factory || die "go build ./cmd/apt-ostree-factory failed"
ours=$tmp/apt-ostree-factory

# Reads the whole tree once so that both tools find it in the page cache.
warm_tree() {
  # Through a pipe: GNU tar skips reading file data when writing to /dev/null.
  tar -C "$tree" -cf - . | cat >/dev/null
}

# run_timed NAME OUTDIR CMD... : runs CMD under /usr/bin/time -v, records wall
# seconds (from the shell's monotonic-enough EPOCHREALTIME) and max RSS (kB).
run_timed() {
  local name=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  sync # previous runs' dirty pages are not written back on this run's clock
  local t0 t1 rc=0
  t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$dir/time" "$@" >"$dir/stdout" 2>"$dir/stderr" || rc=$?
  t1=$EPOCHREALTIME
  if ((rc != 0)); then
    echo "===================================================================" >&2
    echo "FAIL: $name exited with status $rc: $*" >&2
    sed 's/^/  | /' "$dir/stderr" | tail -n 30 >&2
    echo "===================================================================" >&2
    exit 1
  fi
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", b - a }' >"$dir/wall"
  sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$dir/time" >"$dir/rss"
  # CPU seconds (user + system): less sensitive than wall time to other load.
  awk -F': ' '/^[[:space:]]*(User|System) time \(seconds\)/ { s += $2 } END { printf "%.2f\n", s }' "$dir/time" >"$dir/cpu"
  # The checksum is the last line of stdout (both tools print it).
  grep -E '^[0-9a-f]{64}$' "$dir/stdout" | tail -n 1 >"$dir/checksum" || true
  [[ -s "$dir/checksum" ]] || {
    echo "FAIL: $name printed no commit checksum; stdout was:" >&2
    cat "$dir/stdout" >&2
    exit 1
  }
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

log "warming the page cache with the tree (both tools then read it from memory; not timed)"
warm_tree

# Wall times are only meaningful on an otherwise idle machine; say so if not.
load_before=$(cut -d' ' -f1 /proc/loadavg)
busy=$(awk -v l="$load_before" -v n="$(nproc)" 'BEGIN { print (l > 0.5 * n) ? 1 : 0 }')
if ((busy)); then
  log "WARNING: load average is $load_before on $(nproc) CPUs: other processes compete for the CPUs, wall times will be noisy"
fi

log "ostree $(ostree --version | sed -n "s/^ *Version: *'\(.*\)'/\1/p"), zlib level $level, timestamp $timestamp, $runs run(s) each, $(nproc) CPUs"
for ((i = 1; i <= runs; i++)); do
  # Only the last pair of repositories is kept, for verification and sizes.
  rm -rf "$tmp/ostree-repo" "$tmp/ours-repo"

  ostree init --repo="$tmp/ostree-repo" --mode=archive
  ostree config --repo="$tmp/ostree-repo" set archive.zlib-level "$level"
  if [[ "$level" != 6 ]]; then
    # Our writer creates the repository with ostree's default level 6 when it
    # is missing; for another level give it a repository configured like A.
    ostree init --repo="$tmp/ours-repo" --mode=archive
    ostree config --repo="$tmp/ours-repo" set archive.zlib-level "$level"
  fi

  warm_tree
  run_timed "ostree commit (run $i)" "$tmp/r$i-ostree" \
    ostree commit --repo="$tmp/ostree-repo" --branch="$branch" --subject="$subject" \
    --timestamp="$timestamp" "$tree"
  warm_tree
  run_timed "apt-ostree-factory commit (run $i)" "$tmp/r$i-ours" \
    "$ours" commit --repo="$tmp/ours-repo" --branch="$branch" --subject="$subject" \
    --timestamp="$timestamp" "$tree"
  log "run $i/$runs: ostree $(cat "$tmp/r$i-ostree/wall")s $(cat "$tmp/r$i-ostree/rss")kB, ours $(cat "$tmp/r$i-ours/wall")s $(cat "$tmp/r$i-ours/rss")kB"
  load_after=$(cut -d' ' -f1 /proc/loadavg)
done

# ---------------------------------------------------------------------------
# Correctness: same commit checksum (every run), ref and fsck.
A=$tmp/ostree-repo
B=$tmp/ours-repo
ref_ostree=$(cat "$tmp/r1-ostree/checksum")
ref_ours=$(cat "$tmp/r1-ours/checksum")
fail=()
for ((i = 1; i <= runs; i++)); do
  [[ "$(cat "$tmp/r$i-ostree/checksum")" == "$ref_ostree" ]] || fail+=("ostree commit is not reproducible across runs")
  [[ "$(cat "$tmp/r$i-ours/checksum")" == "$ref_ours" ]] || fail+=("our commit is not reproducible across runs (run $i)")
done
if [[ "$ref_ours" != "$ref_ostree" ]]; then
  fail+=("commit checksums differ: ostree $ref_ostree, ours $ref_ours")
fi
ref_b=$(ostree rev-parse --repo="$B" "$branch" 2>&1) || true
[[ "$ref_b" == "$ref_ours" ]] || fail+=("ref $branch in our repository is '$ref_b', not the printed checksum $ref_ours")
mode_b=$(ostree config --repo="$B" get core.mode 2>&1) || true
[[ "$mode_b" == archive-z2 || "$mode_b" == archive ]] || fail+=("our repository's core.mode is '$mode_b', not archive-z2")

log "ostree fsck --repo=<ours>"
fsck_rc=0
ostree fsck --repo="$B" >"$tmp/fsck.out" 2>&1 || fsck_rc=$?
if ((fsck_rc != 0)); then
  fail+=("ostree fsck --repo=<ours> failed (status $fsck_rc): $(tail -n 5 "$tmp/fsck.out" | tr '\n' ' ')")
fi

if ((${#fail[@]} > 0)); then
  diag=$cache/failure-$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$diag"
  cp "$tmp/fsck.out" "$diag/" 2>/dev/null || true
  if [[ "$ref_ours" != "$ref_ostree" ]]; then
    # Where do the trees differ? Listings with xattrs, and the commit objects.
    ostree ls -R -X --repo="$A" "$branch" >"$diag/ostree.ls" 2>&1 || true
    ostree ls -R -X --repo="$B" "$branch" >"$diag/ours.ls" 2>&1 || true
    ostree ls -R -C --repo="$A" "$branch" >"$diag/ostree.ls-C" 2>&1 || true
    ostree ls -R -C --repo="$B" "$branch" >"$diag/ours.ls-C" 2>&1 || true
    ostree show --repo="$A" --print-metadata-key=ostree.ref-binding "$branch" >"$diag/ostree.show" 2>&1 || true
    ostree show --repo="$A" "$branch" >>"$diag/ostree.show" 2>&1 || true
    ostree show --repo="$B" --print-metadata-key=ostree.ref-binding "$branch" >"$diag/ours.show" 2>&1 || true
    ostree show --repo="$B" "$branch" >>"$diag/ours.show" 2>&1 || true
    diff -u "$diag/ostree.ls" "$diag/ours.ls" >"$diag/ls.diff" || true
    diff -u "$diag/ostree.ls-C" "$diag/ours.ls-C" >"$diag/ls-C.diff" || true
    diff -u "$diag/ostree.show" "$diag/ours.show" >"$diag/show.diff" || true
  fi
  echo "===================================================================" >&2
  echo "FAIL: the benchmark's results do not verify:" >&2
  printf '  - %s\n' "${fail[@]}" >&2
  if [[ "$ref_ours" != "$ref_ostree" ]]; then
    echo "  commit objects (ostree vs ours), diff of 'ostree show':" >&2
    sed 's/^/  | /' "$diag/show.diff" | head -n 30 >&2
    echo "  first differences of 'ostree ls -R -X' (mode uid gid size path xattrs):" >&2
    sed 's/^/  | /' "$diag/ls.diff" | head -n 40 >&2
    echo "  first differences of 'ostree ls -R -C' (object checksums):" >&2
    sed 's/^/  | /' "$diag/ls-C.diff" | head -n 20 >&2
  fi
  echo "  full listings and diffs kept in $diag" >&2
  echo "===================================================================" >&2
  exit 1
fi

# ---------------------------------------------------------------------------
# Results.
wall_ostree=$(for ((i = 1; i <= runs; i++)); do cat "$tmp/r$i-ostree/wall"; done | median)
wall_ours=$(for ((i = 1; i <= runs; i++)); do cat "$tmp/r$i-ours/wall"; done | median)
cpu_ostree=$(for ((i = 1; i <= runs; i++)); do cat "$tmp/r$i-ostree/cpu"; done | median)
cpu_ours=$(for ((i = 1; i <= runs; i++)); do cat "$tmp/r$i-ours/cpu"; done | median)
rss_ostree=$(for ((i = 1; i <= runs; i++)); do cat "$tmp/r$i-ostree/rss"; done | sort -g | tail -n 1)
rss_ours=$(for ((i = 1; i <= runs; i++)); do cat "$tmp/r$i-ours/rss"; done | sort -g | tail -n 1)
size_ostree=$(du -sb "$A/objects" | cut -f1)
size_ours=$(du -sb "$B/objects" | cut -f1)
objects() { # objects REPO: "N files, N dirtrees, N dirmetas, 1 commit"
  find "$1/objects" -type f -printf '%f\n' | awk -F. '
    { n[$NF]++; t++ }
    END { printf "%d objects (%d file, %d dirtree, %d dirmeta, %d commit)", t, n["filez"], n["dirtree"], n["dirmeta"], n["commit"] }'
}
objects_ostree=$(objects "$A")
objects_ours=$(objects "$B")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.3f", a / b }'; }
verdict() { awk -v v="$1" -v op="$2" -v lim="$3" 'BEGIN { ok = (op == "<=") ? (v <= lim) : (v < lim); print (ok ? "PASS" : "MISS") }'; }

r_wall=$(ratio "$wall_ours" "$wall_ostree")
r_cpu=$(ratio "$cpu_ours" "$cpu_ostree")
r_rss=$(ratio "$rss_ours" "$rss_ostree")
r_size=$(ratio "$size_ours" "$size_ostree")
rss_ours_mb=$(awk -v k="$rss_ours" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
rss_ostree_mb=$(awk -v k="$rss_ostree" 'BEGIN { printf "%.1f", k * 1024 / 1e6 }')
size_ours_mb=$(awk -v b="$size_ours" 'BEGIN { printf "%.1f", b / 1e6 }')
size_ostree_mb=$(awk -v b="$size_ostree" 'BEGIN { printf "%.1f", b / 1e6 }')
v_wall=$(verdict "$r_wall" "<=" 0.333)
v_size=$(verdict "$r_size" "<=" 1.05)
v_rss=$(verdict "$rss_ours_mb" "<" 300)

echo
echo "Commit benchmark: $suite/$arch minbase + $include"
echo "  tree     $((tree_bytes / 1000000)) MB, $tree_files files, $tree_dirs directories, $tree_links symlinks ($tree)"
echo "  mirror   $mirror"
echo "  setup    archive repositories, zlib level $level, same branch/subject/timestamp;"
echo "           tree warm in the page cache before every run; sync before every run;"
echo "           $runs run(s) per tool on fresh repositories, median wall time, max peak RSS"
echo "  machine  $(nproc) CPUs, load average $load_before before the runs, $load_after after$( ((busy)) && echo ' (BUSY: wall times are noisy)')"
echo "  commit   $ref_ours (identical for ostree and ours)"
echo "  fsck     ostree fsck of our repository: ok"
echo "  objects  ostree: $objects_ostree"
echo "           ours:   $objects_ours"
echo
printf '%-22s %14s %14s %10s   %-24s %s\n' "metric" "ours" "ostree" "ours/ostr" "target" "result"
printf '%-22s %14s %14s %10s   %-24s %s\n' "----------------------" "--------------" "--------------" "----------" "------------------------" "------"
printf '%-22s %13ss %13ss %10s   %-24s %s\n' "wall time (median)" "$wall_ours" "$wall_ostree" "$r_wall" "ratio <= 0.333" "$v_wall"
printf '%-22s %13ss %13ss %10s   %-24s %s\n' "CPU user+sys (median)" "$cpu_ours" "$cpu_ostree" "$r_cpu" "(information)" ""
printf '%-22s %12sMB %12sMB %10s   %-24s %s\n' "peak RSS (max)" "$rss_ours_mb" "$rss_ostree_mb" "$r_rss" "ours < 300 MB" "$v_rss"
printf '%-22s %12sMB %12sMB %10s   %-24s %s\n' "repo size (objects/)" "$size_ours_mb" "$size_ostree_mb" "$r_size" "ratio <= 1.05" "$v_size"
echo
echo "all runs (wall / CPU user+sys / peak RSS):"
for ((i = 1; i <= runs; i++)); do
  printf '  run %d: ours %8ss %7ss %7skB   ostree %8ss %7ss %7skB\n' "$i" \
    "$(cat "$tmp/r$i-ours/wall")" "$(cat "$tmp/r$i-ours/cpu")" "$(cat "$tmp/r$i-ours/rss")" \
    "$(cat "$tmp/r$i-ostree/wall")" "$(cat "$tmp/r$i-ostree/cpu")" "$(cat "$tmp/r$i-ostree/rss")"
done
echo
echo "PASS: results verified (same commit checksum, fsck ok); targets: time $v_wall, memory $v_rss, size $v_size"
