#!/usr/bin/env bash
# The container images (Dockerfile, alias Containerfile): builds them with
# podman on the local base (scripts/image-base.sh), checks their
# configuration and contents, then runs them as a container runtime would
# with `--read-only --user 65532:65532`: each image's root filesystem
# (podman export) mounted read-only in a private mount namespace, /proc, a
# minimal /dev, tmpfs volumes, the image's environment, working directory,
# user and entrypoint; the network is the host's loopback. A relay and an
# agent from the images then carry a request from the host's CLI to an
# echo server on the host. (`podman run` is not used: it needs a cgroup
# setup that not every CI machine has.)
#
# Needs root (mount namespaces, chroot). Builds the release binaries with
# cargo if they are missing. Prints the images' sizes; the agent's must stay
# within 25 MB. Everything it starts or makes is removed however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "image-test: must run as root (it mounts in a mount namespace and changes root)" >&2
  exit 1
fi
# Nothing of the caller's Borealis settings (BOREALIS_TOKEN, BOREALIS_RELAY, ...).
while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^BOREALIS_' || true)

BIN=target/release # the Dockerfile's build context takes the binaries from here
BASE_IMAGE=localhost/borealis-base:bookworm
RELAY_IMAGE=localhost/borealis-relay:test
AGENT_IMAGE=localhost/borealis-agent:test
AGENT_MAX_MB=25
ID=$$
WORK=$(mktemp -d /tmp/borealis-image-test.XXXXXX)
PIDS=()
CONTAINERS=()
passed=0
failed=0

cleanup() {
  local pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # The processes' mounts lived in their own mount namespaces: gone with them.
  for c in "${CONTAINERS[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { echo "image-test: $*"; }
show_logs() {
  local log
  for log in relay agent echo; do
    if [ -s "$WORK/$log.log" ]; then
      echo "---- $log log ----" >&2
      tail -n 60 "$WORK/$log.log" >&2
    fi
  done
}
check() { # name, then a command that must succeed
  local name=$1
  shift
  if "$@"; then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    failed=$((failed + 1))
    show_logs
  fi
}
fatal() {
  echo "FAIL $*" >&2
  show_logs
  exit 1
}
forget_pid() { # a process reaped: cleanup must not signal its number again
  local pid kept=()
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for_log() { # file, pattern, seconds
  for _ in $(seq 1 $(($3 * 10))); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "timed out after $3 s waiting for '$2' in $1" >&2
  return 1
}
wait_for_http() { # url, expected body (with status 200), seconds, pid that must stay alive
  local reply=
  for _ in $(seq 1 $(($3 * 10))); do
    kill -0 "$4" 2>/dev/null || { echo "the process for $1 exited" >&2; return 1; }
    reply=$(curl -s --max-time 2 -w ' %{http_code}' "$1" 2>/dev/null || true)
    [ "$reply" = "$2"$'\n'" 200" ] && return 0
    sleep 0.1
  done
  echo "timed out after $3 s waiting for 200 '$2' from $1; last: $reply" >&2
  return 1
}

# ---- binaries and images ----------------------------------------------------

# Always asked of cargo, so that the images hold today's code (a no-op when
# the release build is up to date).
say "building the release binaries (cargo build --release --bins)"
CARGO_TARGET_DIR=target cargo build --release --bins
for b in borealis-relay borealis-agent borealis; do
  # The base has glibc 2.36 (Debian 12): a binary linked against newer
  # symbols would not start in the image.
  newest=$(objdump -T "$BIN/$b" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1 || true)
  say "$b: $(stat -c %s "$BIN/$b") bytes, needs ${newest:-?}"
done

scripts/image-base.sh

version=$("$BIN/borealis-relay" --version | awk '{print $2}')
revision=$(git rev-parse HEAD 2>/dev/null || true)
source_url=$(git remote get-url origin 2>/dev/null || true)
build_image() { # target, tag
  # --no-cache: Buildah 1.28 reuses a cached LABEL step whose --build-arg
  # changed. (Not --layers=false: with it, Podman 4.3 deletes the base image.)
  local before after id old args=(--pull=never --no-cache --build-arg "BASE=$BASE_IMAGE" --build-arg "VERSION=$version"
    --build-arg "REVISION=$revision" --build-arg "SOURCE_URL=$source_url" --target "$1" -t "$2")
  before=$(podman images -a -q --no-trunc | sort -u)
  old=$(podman image inspect --format '{{.Id}}' "$2" 2>/dev/null || true)
  if ! podman build -q "${args[@]}" . >"$WORK/build-$1.log" 2>&1; then
    say "podman build --target $1 failed; again with --isolation=chroot"
    cat "$WORK/build-$1.log"
    podman build -q --isolation=chroot "${args[@]}" . >"$WORK/build-$1.log" 2>&1 \
      || { cat "$WORK/build-$1.log"; fatal "podman build --target $1"; }
  fi
  # This build's intermediate images, and the previous build of the tag.
  after=$(podman images -a -q --no-trunc | sort -u)
  for id in $(comm -13 <(echo "$before") <(echo "$after")); do
    [ -z "$(podman image inspect --format '{{join .RepoTags ","}}' "$id" 2>/dev/null)" ] || continue
    podman rmi "$id" >/dev/null 2>&1 || true
  done
  if [ -n "$old" ] && [ -z "$(podman image inspect --format '{{join .RepoTags ","}}' "$old" 2>/dev/null)" ]; then
    podman rmi "$old" >/dev/null 2>&1 || true
  fi
}
say "building $RELAY_IMAGE and $AGENT_IMAGE"
build_image relay "$RELAY_IMAGE"
build_image agent "$AGENT_IMAGE"

mb() { awk -v s="$1" 'BEGIN { printf "%.1f", s / 1e6 }'; }
relay_size=$(podman image inspect --format '{{.Size}}' "$RELAY_IMAGE")
agent_size=$(podman image inspect --format '{{.Size}}' "$AGENT_IMAGE")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE_IMAGE")
say "image sizes: $RELAY_IMAGE $(mb "$relay_size") MB, $AGENT_IMAGE $(mb "$agent_size") MB" \
  "(base $(mb "$base_size") MB)"
check "the agent image is at most $AGENT_MAX_MB MB ($(mb "$agent_size") MB)" \
  test "$agent_size" -le $((AGENT_MAX_MB * 1000 * 1000))

# ---- configuration ----------------------------------------------------------

# One field of an image's configuration: lists and maps one item a line
# (maps as key=value), strings as they are.
config() { # image, field
  podman image inspect "$1" | python3 -c '
import json, sys
value = json.load(sys.stdin)[0]["Config"].get(sys.argv[1])
if isinstance(value, list):
    print("\n".join(value))
elif isinstance(value, dict):
    print("\n".join(k if v in ({}, None) else f"{k}={v}" for k, v in sorted(value.items())))
elif value:
    print(value)' "$2"
}
license=$(sed -n 's/^license *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
has_line() { grep -qxF -- "$2" <<<"$1"; }
for image in "$RELAY_IMAGE" "$AGENT_IMAGE"; do
  name=${image#localhost/}
  name=${name%:test}
  labels=$(config "$image" Labels)
  check "$name: user 65532:65532" test "$(config "$image" User)" = 65532:65532
  check "$name: stop signal SIGTERM" test "$(config "$image" StopSignal)" = SIGTERM
  check "$name: entrypoint /usr/local/bin/$name" test "$(config "$image" Entrypoint)" = "/usr/local/bin/$name"
  check "$name: no command" test -z "$(config "$image" Cmd)"
  check "$name: label title" has_line "$labels" "org.opencontainers.image.title=$name"
  check "$name: label licenses $license (Cargo.toml)" has_line "$labels" "org.opencontainers.image.licenses=$license"
  check "$name: label version $version" has_line "$labels" "org.opencontainers.image.version=$version"
  check "$name: labels description and source" \
    bash -c 'grep -q "^org.opencontainers.image.description=." <<<"$1" && grep -q "^org.opencontainers.image.source=" <<<"$1"' _ "$labels"
done
relay_env=$(config "$RELAY_IMAGE" Env)
agent_env=$(config "$AGENT_IMAGE" Env)
check "relay: exposes 8080 and 9090" test "$(config "$RELAY_IMAGE" ExposedPorts | tr '\n' ' ')" = "8080/tcp 9090/tcp "
check "relay: volume /var/lib/borealis" test "$(config "$RELAY_IMAGE" Volumes)" = /var/lib/borealis
for kv in BOREALIS_DATA_DIR=/var/lib/borealis BOREALIS_LISTEN=0.0.0.0:8080 BOREALIS_AGENT_LISTEN=0.0.0.0:9090; do
  check "relay: env $kv" has_line "$relay_env" "$kv"
done
check "agent: exposes 9100" test "$(config "$AGENT_IMAGE" ExposedPorts)" = 9100/tcp
check "agent: env BOREALIS_HEALTH_LISTEN=0.0.0.0:9100" has_line "$agent_env" BOREALIS_HEALTH_LISTEN=0.0.0.0:9100

# ---- contents ---------------------------------------------------------------

export_rootfs() { # image, directory
  local container
  container="borealis-image-test-$ID-$(basename "$2")"
  CONTAINERS+=("$container")
  podman create --name "$container" "$1" >/dev/null
  mkdir -p "$2"
  podman export "$container" | tar -x --numeric-owner -C "$2"
  podman rm "$container" >/dev/null
  # What a runtime creates before it mounts: /dev, and the secret's mount point.
  mkdir -p "$2/dev" "$2/proc" "$2/run/secret"
}
RELAY_ROOT=$WORK/relay-root
AGENT_ROOT=$WORK/agent-root
export_rootfs "$RELAY_IMAGE" "$RELAY_ROOT"
export_rootfs "$AGENT_IMAGE" "$AGENT_ROOT"

no_shell() { # root
  local found
  found=$(find "$1" -xdev \( -name sh -o -name bash -o -name dash -o -name busybox -o -name ash \) -print)
  [ -z "$found" ] || { echo "a shell in the image: $found" >&2; return 1; }
}
not_writable_by_nonroot() { # file
  [ "$(stat -c %u "$1")" = 0 ] && [ $(($(stat -c 0%a "$1") & 022)) = 0 ]
}
for root in "$RELAY_ROOT" "$AGENT_ROOT"; do
  name=borealis-$(basename "$root" -root)
  check "$name: no shell" no_shell "$root"
  check "$name: CA bundle" bash -c '[ "$(grep -c "BEGIN CERTIFICATE" "$1")" -ge 100 ]' _ "$root/etc/ssl/certs/ca-certificates.crt"
  check "$name: user nonroot 65532" grep -qx 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' "$root/etc/passwd"
  check "$name: /tmp is 1777" test "$(stat -c %a "$root/tmp")" = 1777
  check "$name: the binary is root's, not writable by others" not_writable_by_nonroot "$root/usr/local/bin/$name"
done
check "relay: the CLI is in the image" not_writable_by_nonroot "$RELAY_ROOT/usr/local/bin/borealis"
check "relay: /var/lib/borealis is 65532's" test "$(stat -c %u:%g "$RELAY_ROOT/var/lib/borealis")" = 65532:65532
say "relay: /var/lib/borealis in the image has mode $(stat -c %a "$RELAY_ROOT/var/lib/borealis")"

# ---- running the images -----------------------------------------------------

# Runs in a new mount namespace: bind-mounts the root filesystem onto
# itself, mounts /proc, a /dev with null, zero, full, random and urandom,
# the volume and the secret, makes the root read-only, then executes the
# entrypoint with the image's environment, working directory and user,
# without capabilities and with no_new_privs.
# Arguments: root, volume (path:mode:uid:gid or ""), secret file (or ""),
# working directory, uid, gid, then NAME=VALUE..., then --, then the command.
IN_IMAGE=$(cat <<'SH'
set -euo pipefail
root=$1 volume=$2 secret=$3 workdir=$4 uid=$5 gid=$6
shift 6
env=()
while [ "$1" != -- ]; do env+=("$1"); shift; done
shift
mount --bind "$root" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,noexec,mode=0755,size=64k tmpfs "$root/dev"
for node in null zero full random urandom; do
  touch "$root/dev/$node"
  mount --bind "/dev/$node" "$root/dev/$node"
done
if [ -n "$volume" ]; then
  IFS=: read -r path mode owner group <<<"$volume"
  mount -t tmpfs -o "nosuid,nodev,mode=$mode,uid=$owner,gid=$group,size=64m" tmpfs "$root$path"
fi
if [ -n "$secret" ]; then
  mount -t tmpfs -o nosuid,nodev,noexec,mode=0755,size=64k tmpfs "$root/run/secret"
  install -m 0400 -o "$uid" -g "$gid" "$secret" "$root/run/secret/client-secret"
  mount -o remount,ro "$root/run/secret"
fi
mount -o remount,bind,ro "$root"
exec /usr/bin/env -i "${env[@]}" "$(command -v setpriv)" --no-new-privs --clear-groups \
  "$(command -v unshare)" --root="$root" --wd="$workdir" --setgid="$gid" --setuid="$uid" -- "$@"
SH
)
start_image() { # image, root, log, volume, secret, NAME=VALUE overrides..., --, arguments...
  local image=$1 root=$2 log=$3 volume=$4 secret=$5
  shift 5
  local overrides=()
  while [ "$1" != -- ]; do overrides+=("$1"); shift; done
  shift
  local user uid gid workdir env=() entrypoint=()
  user=$(config "$image" User)
  uid=${user%%:*}
  gid=${user#*:}
  workdir=$(config "$image" WorkingDir)
  mapfile -t env < <(config "$image" Env)
  env+=("${overrides[@]}")
  mapfile -t entrypoint < <(config "$image" Entrypoint; config "$image" Cmd)
  unshare --mount --propagation private -- bash -c "$IN_IMAGE" in-image \
    "$root" "$volume" "$secret" "${workdir:-/}" "$uid" "$gid" "${env[@]}" -- "${entrypoint[@]}" "$@" \
    >"$log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

HTTP_PORT=$(free_port)
AGENTS_PORT=$(free_port)
HEALTH_PORT=$(free_port)
ECHO_PORT=$(free_port)
RELAY_URL=http://127.0.0.1:$HTTP_PORT

# The relay: its data volume a tmpfs with the image directory's owner and
# mode, as a new volume gets them; the addresses on loopback, as `-e` would.
data_volume="/var/lib/borealis:$(stat -c %a:%u:%g "$RELAY_ROOT/var/lib/borealis")"
start_image "$RELAY_IMAGE" "$RELAY_ROOT" "$WORK/relay.log" "$data_volume" "" \
  "BOREALIS_LISTEN=127.0.0.1:$HTTP_PORT" "BOREALIS_AGENT_LISTEN=127.0.0.1:$AGENTS_PORT" --
RELAY_PID=$STARTED
wait_for_log "$WORK/relay.log" "relay ready" 30 || fatal "the relay did not start"
# No admin token given: the relay makes one in its volume, as the README's docker run does.
ADMIN=$(cat "/proc/$RELAY_PID/root/var/lib/borealis/admin-token") || fatal "no admin-token in the data volume"
check "relay: /readyz answers 200 ready" wait_for_http "$RELAY_URL/readyz" ready 10 "$RELAY_PID"
check "relay: /healthz answers ok" wait_for_http "$RELAY_URL/healthz" ok 5 "$RELAY_PID"

# The process as the image runs it.
proc_field() { awk -v f="$2:" '$1 == f { $1 = ""; sub(/^ /, ""); print }' "/proc/$1/status"; }
root_mount_options() { awk '$5 == "/" { print $6 }' "/proc/$1/mountinfo"; }
is_nonroot() { # pid
  [ "$(proc_field "$1" Uid | tr -s '\t ' ' ')" = "65532 65532 65532 65532" ] \
    && [ "$(proc_field "$1" Gid | tr -s '\t ' ' ')" = "65532 65532 65532 65532" ] \
    && [ -z "$(proc_field "$1" Groups | tr -d ' \t')" ] \
    && [ "$(proc_field "$1" CapEff)" = 0000000000000000 ] \
    && [ "$(proc_field "$1" NoNewPrivs)" = 1 ]
}
root_is_read_only() { # pid
  [[ ",$(root_mount_options "$1")," == *,ro,* ]] || return 1
  # Not even root can write to it (through the process's own view).
  ! touch "/proc/$1/root/.image-test-probe" 2>/dev/null
}
check "relay: runs as 65532:65532 without capabilities or groups" is_nonroot "$RELAY_PID"
check "relay: the root filesystem is read-only ($(root_mount_options "$RELAY_PID"))" root_is_read_only "$RELAY_PID"
check "relay: runs /usr/local/bin/borealis-relay" test "$(readlink "/proc/$RELAY_PID/exe")" = "$RELAY_ROOT/usr/local/bin/borealis-relay"
check "relay: its working directory is the data volume" test "$(readlink "/proc/$RELAY_PID/cwd")" = "$RELAY_ROOT/var/lib/borealis"
check "relay: the data directory is 0700" test "$(stat -c %a "/proc/$RELAY_PID/root/var/lib/borealis")" = 700
check "relay: the database is in the data volume" test -f "/proc/$RELAY_PID/root/var/lib/borealis/borealis.db"

# An agent credential, made with the CLI from the host.
"$BIN/borealis" --relay "$RELAY_URL" --token "$ADMIN" agents create img-agent >"$WORK/creds.txt" 2>"$WORK/cli.log" \
  || { cat "$WORK/creds.txt" "$WORK/cli.log"; fatal "borealis agents create"; }
CLIENT_ID=$(awk '/^client_id:/ {print $2}' "$WORK/creds.txt")
awk '/^client_secret:/ {printf "%s", $2}' "$WORK/creds.txt" >"$WORK/client-secret"
chmod 0600 "$WORK/client-secret"
if [ -z "$CLIENT_ID" ] || ! [ -s "$WORK/client-secret" ]; then
  cat "$WORK/creds.txt"
  fatal "no credential from the CLI"
fi
# In the relay's own namespace and root, as `docker exec` / `kubectl exec`
# would run it: the image's env only, no token given; it finds the admin
# token in the data dir the image names (BOREALIS_DATA_DIR).
check "relay: the image's CLI runs in it with the token from the volume (as docker exec would)" bash -c '
  set -euo pipefail
  nsenter=$(command -v nsenter)
  env -i PATH=/usr/local/bin BOREALIS_DATA_DIR=/var/lib/borealis \
    "$nsenter" --target "$1" --mount --root --wd --setuid 65532 --setgid 65532 \
    /usr/local/bin/borealis --relay "$2" agents list >"$3" 2>&1
  grep -q img-agent "$3" || { cat "$3" >&2; exit 1; }' _ "$RELAY_PID" "$RELAY_URL" "$WORK/cli-in-image.log"

# The agent, its secret in a read-only tmpfs at /run/secret.
start_image "$AGENT_IMAGE" "$AGENT_ROOT" "$WORK/agent.log" "" "$WORK/client-secret" -- \
  --relay "http://127.0.0.1:$AGENTS_PORT" --client-id "$CLIENT_ID" \
  --client-secret-file /run/secret/client-secret --allow 127.0.0.1 --health-listen "127.0.0.1:$HEALTH_PORT"
AGENT_PID=$STARTED
check "agent: /readyz answers 200 ready" wait_for_http "http://127.0.0.1:$HEALTH_PORT/readyz" ready 30 "$AGENT_PID"
check "agent: runs as 65532:65532 without capabilities or groups" is_nonroot "$AGENT_PID"
check "agent: the root filesystem is read-only ($(root_mount_options "$AGENT_PID"))" root_is_read_only "$AGENT_PID"
check "agent: no secret on its command line" bash -c '! tr "\0" "\n" <"/proc/$1/cmdline" | grep -qxF -- "$(cat "$2")"' _ \
  "$AGENT_PID" "$WORK/client-secret"

# An echo server on the host's loopback, reached through the agent.
cat >"$WORK/echo.py" <<'PY'
import http.server, sys
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Echo)
print("ready", flush=True)
server.serve_forever()
PY
python3 -u "$WORK/echo.py" "$ECHO_PORT" >"$WORK/echo.log" 2>&1 &
PIDS+=($!)
wait_for_log "$WORK/echo.log" ready 10 || fatal "the echo server did not start"
proxied() {
  local body
  body=$(curl -sS --max-time 30 -H "Authorization: Bearer $ADMIN" -X POST --data hello \
    "$RELAY_URL/api/v1/proxy?url=http://127.0.0.1:$ECHO_PORT/echo&agent=img-agent")
  [ "$body" = hello ] || { echo "the proxy answered: $body" >&2; return 1; }
}
check "a request through the relay and the agent reaches the echo server" proxied

# SIGTERM, the images' stop signal: both drain and exit 0.
stops() { # pid, name, seconds
  local status
  kill -TERM "$1"
  for _ in $(seq 1 $(($3 * 10))); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$1" 2>/dev/null && { echo "$2 still runs $3 s after SIGTERM" >&2; return 1; }
  status=0
  wait "$1" || status=$?
  forget_pid "$1"
  [ "$status" = 0 ] || { echo "$2 exited with $status" >&2; return 1; }
}
check "agent: stops on SIGTERM, exit 0" stops "$AGENT_PID" agent 40
check "relay: stops on SIGTERM, exit 0" stops "$RELAY_PID" relay 40

echo "image-test: $passed passed, $failed failed;" \
  "$RELAY_IMAGE $(mb "$relay_size") MB, $AGENT_IMAGE $(mb "$agent_size") MB"
[ "$failed" = 0 ]
