#!/usr/bin/env bash
# Builds the images' local base, localhost/borealis-base:bookworm, from
# Debian 12 packages with mmdebstrap, for machines that reach a Debian
# mirror but no container registry. It stands in for the Containerfile's
# default base, gcr.io/distroless/cc-debian12:nonroot, and holds the same
# things: glibc (libc6), libgcc_s (libgcc-s1), the CA bundle, a `nonroot`
# user and group 65532, /tmp 1777, and base-files' directories and
# /etc/os-release. No shell, no programs at all.
#
#   scripts/image-base.sh [--rebuild]
#
# The image is reused if it exists, unless --rebuild. Runs as root (the
# files' owners, and root's podman storage, which scripts/image-test.sh
# uses); installs mmdebstrap and podman with apt-get if they are missing.
# BOREALIS_DEBIAN_MIRROR and BOREALIS_DEBIAN_SECURITY_MIRROR override the
# mirrors, which are otherwise the host's own (/etc/apt), else
# deb.debian.org.
#
# How: mmdebstrap's `extract` variant. `custom` installs with dpkg, and
# dpkg cannot configure libc6 or ca-certificates without dpkg itself and
# /bin/sh in the image (their maintainer scripts are shell scripts), nor
# ca-certificates without openssl, debconf and perl: the image would carry
# a shell and an interpreter. `extract` unpacks the packages and runs none
# of their scripts. A hook then (an --extract-hook: this variant runs no
# --customize-hook)
#   - deletes the files of the dependencies that only the maintainer
#     scripts need (openssl, libssl3, debconf, mawk: anything not in KEEP);
#   - builds /etc/ssl/certs/ca-certificates.crt as update-ca-certificates
#     would, from the ca-certificates package's own certificates (not from
#     the host's bundle: the image's trust is that package's version);
#   - writes /etc/passwd, /etc/group, /etc/nsswitch.conf, /home/nonroot,
#     /tmp 1777, and a dpkg status of the packages kept (for image scanners);
#   - removes apt's and mmdebstrap's files and the host's resolv.conf.
# dpkg path-exclude filters drop documentation (not copyright files), man
# pages, locales, gconv modules and every executable while unpacking.
set -euo pipefail

IMAGE=localhost/borealis-base:bookworm
SUITE=bookworm
# The packages whose files stay; their dependencies are unpacked, then removed.
KEEP=(base-files ca-certificates gcc-12-base libc6 libgcc-s1)

say() { echo "image-base: $*" >&2; }

# The hook, run by mmdebstrap with the root directory; see above.
finish_root() {
  local root=$1 deb package path
  if ! [ -d "$root/var/cache/apt/archives" ]; then
    say "hook: no unpacked packages in $root"
    exit 1
  fi

  # 1. Remove what the packages not kept unpacked: files, then the
  #    directories they leave empty.
  local dirs=() status=()
  for deb in "$root"/var/cache/apt/archives/*.deb; do
    package=$(dpkg-deb --field "$deb" Package)
    if [[ " ${KEEP[*]} " == *" $package "* ]]; then
      status+=("$deb")
      continue
    fi
    while IFS= read -r path; do
      path=${path#./}
      [ -n "$path" ] || continue
      if [[ $path == */ ]]; then
        dirs+=("${path%/}")
      elif [ -e "$root/$path" ] || [ -L "$root/$path" ]; then
        [ -d "$root/$path" ] && [ ! -L "$root/$path" ] && continue
        rm -f "$root/$path"
      fi
    done < <(dpkg-deb --fsys-tarfile "$deb" | tar -t)
  done
  if [ ${#dirs[@]} -gt 0 ]; then
    printf '%s\n' "${dirs[@]}" | LC_ALL=C sort -ru | while IFS= read -r path; do
      rmdir "$root/$path" 2>/dev/null || true
    done
  fi

  # 2. The dpkg status of the packages kept, as if installed; nothing else of
  #    dpkg's or apt's stays.
  local status_text
  status_text=$(for deb in "${status[@]}"; do
    dpkg-deb --field "$deb" | awk 'NR == 1 { print; print "Status: install ok installed"; next } { print }'
    echo
  done)
  rm -rf "$root/var/lib/dpkg" "$root/etc/dpkg/dpkg.cfg.d" "$root/etc/apt" "$root/var/lib/apt" \
    "$root/var/cache/apt" "$root/var/log/apt" "$root/var/cache/debconf" "$root/var/log"/*.log \
    "$root/etc/resolv.conf" "$root/etc/hostname" "$root/etc/fstab"
  mkdir -p "$root/var/lib/dpkg"
  printf '%s\n' "$status_text" > "$root/var/lib/dpkg/status"
  chmod 0644 "$root/var/lib/dpkg/status"

  # 3. The CA bundle, in update-ca-certificates' order; the single
  #    certificates are not kept (programs read the bundle).
  local certs=0
  mkdir -p "$root/etc/ssl/certs"
  while IFS= read -r path; do
    sed -e '$a\' "$path"
    certs=$((certs + 1))
  done < <(find "$root/usr/share/ca-certificates" -type f -name '*.crt' | LC_ALL=C sort) \
    > "$root/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$root/etc/ssl/certs/ca-certificates.crt"
  [ "$certs" -ge 100 ] || { say "hook: only $certs CA certificates found"; exit 1; }
  rm -rf "$root/usr/share/ca-certificates" "$root/etc/ca-certificates"

  # 4. Users, groups, name service, home and temporary directories.
  cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat > "$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
  cat > "$root/etc/nsswitch.conf" <<'EOF'
passwd: files
group: files
shadow: files
hosts: files dns
networks: files
protocols: files
services: files
EOF
  chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
  install -d -m 0700 -o 0 -g 0 "$root/root"
  install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
  install -d -m 1777 -o 0 -g 0 "$root/tmp" "$root/var/tmp"
  # /proc, /sys, /dev and /run come from base-files (mmdebstrap has /proc
  # and /sys mounted now); a container runtime mounts its own over them.
}

if [ "${1:-}" = "--finish-root" ]; then
  finish_root "$2"
  exit 0
fi

rebuild=false
for arg in "$@"; do
  case $arg in
    --rebuild) rebuild=true ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument: $arg (usage: scripts/image-base.sh [--rebuild])"; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  say "must run as root (mmdebstrap's root mode writes files owned by 0 and 65532)"
  exit 1
fi
need=()
command -v podman >/dev/null || need+=(podman)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  say "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! $rebuild && podman image exists "$IMAGE"; then
  say "$IMAGE exists; reusing it (--rebuild builds it again)"
  exit 0
fi

# The host's Debian mirrors (one-line and deb822 sources), without comments.
host_mirror() { # suffix: debian or debian-security
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  grep -hv '^[[:space:]]*#' "${files[@]}" | grep -oE '(https?|file)://[^[:space:]]+' | sed 's|/*$||' \
    | grep -E "/$1\$" | head -n 1 || true
}
mirror=${BOREALIS_DEBIAN_MIRROR:-$(host_mirror debian)}
mirror=${mirror:-http://deb.debian.org/debian}
security=${BOREALIS_DEBIAN_SECURITY_MIRROR:-$(host_mirror debian-security)}
security=${security:-http://deb.debian.org/debian-security}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

say "building $IMAGE from $mirror ($SUITE, with updates) and $security"
# Unpacking filters; later lines win (dpkg's path-exclude/path-include).
filters=(
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-exclude=/usr/share/lintian/*'
  'path-exclude=/usr/share/bash-completion/*'
  'path-exclude=/usr/share/base-files/*'
  'path-exclude=/usr/share/gcc/*'
  'path-exclude=/usr/share/gdb/*'
  'path-exclude=/usr/lib/*/gconv/*'
  'path-exclude=/usr/lib/*/audit/*'
  'path-exclude=/usr/libexec/*'
  'path-exclude=/bin/*'
  'path-exclude=/sbin/*'
  'path-exclude=/usr/bin/*'
  'path-exclude=/usr/sbin/*'
  'path-exclude=/usr/games/*'
  'path-exclude=/etc/update-motd.d/*'
  'path-exclude=/etc/profile.d/*'
  'path-exclude=/etc/skel/*'
  'path-exclude=/etc/issue*'
)
dpkgopts=()
for filter in "${filters[@]}"; do dpkgopts+=("--dpkgopt=$filter"); done
include=$(IFS=,; echo "${KEEP[*]}")

# cleanup/apt and cleanup/mmdebstrap: the hook removes those files itself.
# output/dev: no device nodes; the runtime provides /dev.
mmdebstrap --variant=extract --include="$include" "${dpkgopts[@]}" \
  --skip=cleanup/apt,cleanup/mmdebstrap,output/dev \
  --extract-hook="$(printf '%q' "$self") --finish-root \"\$1\"" \
  "$SUITE" "$work/base.tar" \
  "deb $mirror $SUITE main" "deb $mirror $SUITE-updates main" "deb $security $SUITE-security main"

# Nothing that runs: the filters must have left no executable file but the
# libraries (and the dynamic loader).
programs=$(tar -tvf "$work/base.tar" | awk '$1 ~ /^-/ && $1 ~ /x/ { print $NF }' | grep -vE '\.so(\.[0-9]+)*$' || true)
if [ -n "$programs" ]; then
  say "programs left in the base:"$'\n'"$programs"
  exit 1
fi

old=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change "LABEL org.opencontainers.image.description=\"Debian $SUITE: libc6, libgcc-s1, CA certificates; user nonroot (65532); no shell\"" \
  --message "scripts/image-base.sh" --quiet \
  "$work/base.tar" "$IMAGE" >/dev/null
# The previous build, unless images built on it still hold it.
if [ -n "$old" ] && [ -z "$(podman image inspect --format '{{join .RepoTags ","}}' "$old" 2>/dev/null)" ]; then
  podman rmi "$old" >/dev/null 2>&1 || true
fi
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE: $(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }')"
