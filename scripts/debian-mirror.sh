#!/usr/bin/env bash
# Prints the Debian archive mirror that apt on this machine is configured with.
#
# Usage: scripts/debian-mirror.sh            # the mirror URL, e.g. http://ftp.xx.debian.org/debian
#        scripts/debian-mirror.sh --suite    # the suite of that entry, e.g. bookworm
#
# The answer is read at run time from apt's sources (sources.list and the *.list
# and *.sources files in sources.list.d, as apt-config reports their locations;
# both one-line and deb822 formats). Nothing is hard-coded: the entry chosen is
# the one that serves the main Debian archive, that is an enabled "deb" entry
#   - whose suite is a plain codename or alias (bookworm, trixie, sid, stable...),
#     never a -security/-updates/-backports/-proposed-updates pocket, and
#   - that is signed by the debian-archive-keyring, or, when it names no keyring,
#     whose suite is a known Debian codename (distro-info-data, /etc/os-release,
#     or the built-in list of release names below).
# Entries signed by another keyring (packages.cloud.google.com, nodesource, ...)
# are never chosen. Among several candidates the one whose suite matches this
# system's VERSION_CODENAME wins, then the first in apt's reading order.
#
# The environment variables DEBIAN_MIRROR_SOURCES_LIST and
# DEBIAN_MIRROR_SOURCES_PARTS override the locations (for tests).
# Exits 1 with a message on stderr when no such entry is configured.
set -euo pipefail

want=url
case "${1:-}" in
  "") ;;
  --suite) want=suite ;;
  --url) want=url ;;
  -h | --help)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "debian-mirror: unknown argument: $1 (use --suite or nothing)" >&2
    exit 2
    ;;
esac

sources_list=/etc/apt/sources.list
sources_parts=/etc/apt/sources.list.d
if command -v apt-config >/dev/null 2>&1; then
  SL='' SP=''
  eval "$(apt-config shell SL Dir::Etc::sourcelist/f SP Dir::Etc::sourceparts/d 2>/dev/null || true)"
  [[ -n "$SL" ]] && sources_list=$SL
  [[ -n "$SP" ]] && sources_parts=${SP%/}
fi
sources_list=${DEBIAN_MIRROR_SOURCES_LIST:-$sources_list}
sources_parts=${DEBIAN_MIRROR_SOURCES_PARTS:-$sources_parts}

files=()
[[ -f "$sources_list" ]] && files+=("$sources_list")
if [[ -d "$sources_parts" ]]; then
  # apt reads the parts in alphanumeric order; other extensions are ignored by apt.
  while IFS= read -r f; do
    files+=("$f")
  done < <(find "$sources_parts" -maxdepth 1 -type f \( -name '*.list' -o -name '*.sources' \) | LC_ALL=C sort)
fi
if ((${#files[@]} == 0)); then
  echo "debian-mirror: no apt sources found (looked at $sources_list and $sources_parts/*.list, *.sources)" >&2
  exit 1
fi

# Known Debian release names: distro-info-data when installed, this system's
# codename, and the release names used so far plus the suite aliases.
codenames=" buzz rex bo hamm slink potato woody sarge etch lenny squeeze wheezy jessie stretch buster bullseye bookworm trixie forky duke sid experimental stable testing unstable oldstable oldoldstable "
if [[ -r /usr/share/distro-info/debian.csv ]]; then
  while IFS=, read -r _ _ series _; do
    [[ -n "$series" && "$series" != series ]] && codenames+="$series "
  done </usr/share/distro-info/debian.csv
fi
os_codename=''
if [[ -r /etc/os-release ]]; then
  # shellcheck source=/dev/null
  os_codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [[ -n "$os_codename" ]] && codenames+="$os_codename "
fi

# Emits one line per (uri, suite) of every enabled "deb" entry:
#   uri <TAB> suite <TAB> signed-by (or "-") <TAB> file
parse_list() { # one-line format
  awk -v file="$1" '
    { sub(/#.*/, "") }
    NF == 0 { next }
    $1 != "deb" { next }
    {
      line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
      signed = "-"
      if (line ~ /^\[/) {
        opts = substr(line, 2, index(line, "]") - 2)
        line = substr(line, index(line, "]") + 1)
        n = split(opts, o, /[ \t]+/)
        for (i = 1; i <= n; i++) if (tolower(o[i]) ~ /^signed-by=/) signed = substr(o[i], 11)
      }
      n = split(line, w, /[ \t]+/); k = 0
      for (i = 1; i <= n; i++) if (w[i] != "") f[++k] = w[i]
      if (k >= 2) printf "%s\t%s\t%s\t%s\n", f[1], f[2], signed, file
    }' "$1"
}

parse_deb822() { # deb822 format: stanzas separated by blank lines
  awk -v file="$1" '
    function flush(   nu, ns, u, s, i, j, t, isdeb) {
      if (types != "" && tolower(enabled) != "no") {
        isdeb = 0; nt = split(types, t, /[ \t]+/)
        for (i = 1; i <= nt; i++) if (t[i] == "deb") isdeb = 1
        if (isdeb) {
          nu = split(uris, u, /[ \t]+/); ns = split(suites, s, /[ \t]+/)
          for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
            if (u[i] != "" && s[j] != "")
              printf "%s\t%s\t%s\t%s\n", u[i], s[j], (signed == "" ? "-" : signed), file
        }
      }
      types = uris = suites = signed = enabled = ""; field = ""
    }
    /^#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]/ {              # continuation line (e.g. an inline key in Signed-By)
      if (field == "signed-by" && signed !~ /^INLINE/) signed = "INLINE-KEY"
      else if (field == "uris") uris = uris " " $0
      else if (field == "suites") suites = suites " " $0
      next
    }
    {
      field = tolower(substr($0, 1, index($0, ":") - 1))
      value = substr($0, index($0, ":") + 1)
      gsub(/^[ \t]+|[ \t]+$/, "", value)
      if (field == "types") types = value
      else if (field == "uris") uris = value
      else if (field == "suites") suites = value
      else if (field == "signed-by") signed = (value == "" ? "INLINE-KEY" : value)
      else if (field == "enabled") enabled = value
    }
    END { flush() }' "$1"
}

entries=()
for f in "${files[@]}"; do
  case "$f" in
    *.sources) parser=parse_deb822 ;;
    *) parser=parse_list ;;
  esac
  while IFS= read -r line; do
    entries+=("$line")
  done < <("$parser" "$f")
done

best='' best_score=-1
for e in "${entries[@]}"; do
  IFS=$'\t' read -r uri suite signed _file <<<"$e"
  case "$uri" in
    cdrom:* | "") continue ;;
  esac
  # Pockets and flat repositories are not the main archive.
  case "$suite" in
    */* | *-security | *-updates | *-backports | *-backports-sloppy | *-proposed-updates | *-proposed) continue ;;
  esac
  known=0
  [[ "$codenames" == *" $suite "* ]] && known=1
  score=0
  case "$signed" in
    *debian-archive-keyring* | *debian-archive-*-stable.* | *debian-archive-*-automatic.*)
      # Signed by the Debian archive keys: the suite must still look like a release.
      [[ "$suite" == *-* ]] && continue
      score=2
      ;;
    - | /etc/apt/trusted.gpg.d/debian-*)
      # No keyring named: trust it only if the suite is a Debian release name.
      ((known)) || continue
      score=1
      ;;
    *)
      # Any other keyring is a third-party repository.
      continue
      ;;
  esac
  ((known)) && score=$((score + 2))
  [[ -n "$os_codename" && "$suite" == "$os_codename" ]] && score=$((score + 4))
  if ((score > best_score)); then
    best_score=$score best="$uri"$'\t'"$suite"
  fi
done

if [[ -z "$best" ]]; then
  echo "debian-mirror: no Debian archive entry found in apt sources (${files[*]})." >&2
  echo "debian-mirror: expected an enabled 'deb' entry for a Debian release (e.g. bookworm) signed by debian-archive-keyring." >&2
  exit 1
fi

IFS=$'\t' read -r uri suite <<<"$best"
if [[ "$want" == suite ]]; then
  echo "$suite"
else
  echo "${uri%/}"
fi
