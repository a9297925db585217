#!/usr/bin/env bash
# Installs everything the project needs into ignored, project-local folders.
#
#   .cache/bootstrap   a tiny virtualenv holding uv (the Python installer)
#   .venv              the project's virtualenv, synced from requirements.lock
#   .cache/kafka/libs  the Apache Kafka broker classpath (Maven Central)
#   .cache/bin/geth    geth v1.13.15, built through the Go module proxy
#   .cache/bin/helm    helm v3, built the same way (renders the chart offline)
#   .cache/k8s-schemas Gateway API / ServiceMonitor CRDs and skaffold's schema (Go modules)
#   contracts/node_modules   the pinned Solidity compiler (npm solc)
#
# PostgreSQL, Java, nginx (the local gateway) and Prometheus come from Debian's
# packages when they are missing.
# Every step is skipped when its stamp matches its inputs, so a second run
# takes seconds. Usage: deploy/local/install.sh [python|kafka|geth|helm|schemas|solc|postgres|nginx|prometheus|all]...
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE="$ROOT/.cache"
STAMPS="$CACHE/stamps"
GETH_VERSION="1.13.15"
# Go >= 1.23 cannot link geth 1.13's fjl/memsize; this toolchain comes from
# the Go module proxy through GOTOOLCHAIN.
GETH_GO_TOOLCHAIN="go1.22.12"
# Helm renders and lints the Kubernetes chart offline (no cluster needed).
HELM_VERSION="3.19.0"
mkdir -p "$STAMPS" "$CACHE/bin"

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

# Runs "$@" and reports how long it took.
timed() {
  local name=$1; shift
  local start=$SECONDS
  "$@"
  log "$name: done in $((SECONDS - start)) s"
}

# stamp_ok NAME KEY: true when step NAME already ran with inputs KEY.
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { printf '%s' "$2" >"$STAMPS/$1"; }
hash_files() { cat "$@" | sha256sum | cut -c1-16; }

apt_install() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "error: '$*' is missing and installing it needs root: apt-get install -y $*" >&2
    exit 1
  fi
  log "apt-get install $*"
  if [[ ! -f "$STAMPS/apt-updated" ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    touch "$STAMPS/apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_python() {
  local key
  key=$(hash_files "$ROOT/requirements.lock" "$ROOT/pyproject.toml")
  if stamp_ok python "$key" && [[ -x "$ROOT/.venv/bin/python" ]]; then
    log "python: up to date (.venv)"; return
  fi
  export UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR="$CACHE/uv"
  if [[ ! -x "$CACHE/bootstrap/bin/uv" ]]; then
    python3 -m venv "$CACHE/bootstrap"
    "$CACHE/bootstrap/bin/pip" install --quiet uv
  fi
  local uv="$CACHE/bootstrap/bin/uv"
  [[ -x "$ROOT/.venv/bin/python" ]] || "$uv" venv --quiet --python python3 "$ROOT/.venv"
  VIRTUAL_ENV="$ROOT/.venv" "$uv" pip sync --quiet "$ROOT/requirements.lock"
  VIRTUAL_ENV="$ROOT/.venv" "$uv" pip install --quiet --no-deps -e "$ROOT"
  stamp_set python "$key"
}

install_java() {
  command -v java >/dev/null && command -v mvn >/dev/null && return
  apt_install openjdk-17-jre-headless maven
}

install_kafka() {
  local pom="$ROOT/deploy/local/kafka/pom.xml" key
  key=$(hash_files "$pom")
  if stamp_ok kafka "$key" && ls "$CACHE/kafka/libs"/kafka_2.13-*.jar >/dev/null 2>&1; then
    log "kafka: up to date (.cache/kafka/libs)"; return
  fi
  install_java
  rm -rf "$CACHE/kafka/libs"
  mvn -B -q -f "$pom" -Dmaven.repo.local="$CACHE/m2" \
    dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$CACHE/kafka/libs"
  stamp_set kafka "$key"
}

# geth_is_pinned BINARY: true when BINARY reports the pinned version. The output
# is read whole before matching: `geth version | grep -q` lets grep exit at the
# match, geth's next write then dies of SIGPIPE, and with pipefail the check
# fails (exit 141) at random.
geth_is_pinned() {
  local out
  [[ -x "$1" ]] && out=$("$1" version 2>/dev/null) || return 1
  grep -q "^Version: $GETH_VERSION-stable" <<<"$out"
}

install_geth() {
  local geth="$CACHE/bin/geth"
  if geth_is_pinned "$geth"; then
    log "geth: up to date ($geth)"; return
  fi
  command -v go >/dev/null || apt_install golang-go
  log "geth: building v$GETH_VERSION with $GETH_GO_TOOLCHAIN (several minutes when cold)"
  GOTOOLCHAIN="$GETH_GO_TOOLCHAIN" GOFLAGS=-modcacherw CGO_ENABLED=1 \
    GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOBIN="$CACHE/bin" \
    go install "github.com/ethereum/go-ethereum/cmd/geth@v$GETH_VERSION"
  if ! geth_is_pinned "$geth"; then
    echo "error: $geth does not report version $GETH_VERSION-stable after the build" >&2
    exit 1
  fi
}

install_helm() {
  local helm="$CACHE/bin/helm"
  if stamp_ok helm "$HELM_VERSION" && [[ -x "$helm" ]]; then
    log "helm: up to date ($helm)"; return
  fi
  command -v go >/dev/null || apt_install golang-go
  log "helm: building v$HELM_VERSION (a few minutes when cold)"
  GOFLAGS=-modcacherw CGO_ENABLED=0 \
    GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOBIN="$CACHE/bin" \
    go install "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  "$helm" version >/dev/null
  stamp_set helm "$HELM_VERSION"
}

# CRD and skaffold schemas for the offline chart checks (tests/deploy), taken from
# the Go modules that publish them and copied into .cache/k8s-schemas.
GATEWAY_API_VERSION="1.2.1"
PROMETHEUS_OPERATOR_VERSION="0.79.2"
SKAFFOLD_VERSION="2.13.2"
install_schemas() {
  local out="$CACHE/k8s-schemas"
  local key="$GATEWAY_API_VERSION/$PROMETHEUS_OPERATOR_VERSION/$SKAFFOLD_VERSION"
  if stamp_ok schemas "$key" && [[ -f "$out/skaffold-v4beta11.json" ]]; then
    log "schemas: up to date (.cache/k8s-schemas)"; return
  fi
  command -v go >/dev/null || apt_install golang-go
  mkdir -p "$out"
  local dir
  mod_dir() {
    GOFLAGS=-modcacherw GOMODCACHE="$CACHE/go/mod" go mod download -json "$1" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
  }
  dir=$(mod_dir "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION")
  cp "$dir/config/crd/standard/gateway.networking.k8s.io_gateways.yaml" \
     "$dir/config/crd/standard/gateway.networking.k8s.io_httproutes.yaml" "$out/"
  dir=$(mod_dir "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION")
  cp "$dir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" "$out/"
  dir=$(mod_dir "github.com/GoogleContainerTools/skaffold/v2@v$SKAFFOLD_VERSION")
  cp "$dir/docs-v2/content/en/schemas/v4beta11.json" "$out/skaffold-v4beta11.json"
  chmod u+w "$out"/*
  stamp_set schemas "$key"
}

install_solc() {
  local dir="$ROOT/contracts" key
  key=$(hash_files "$dir/package.json" "$dir/package-lock.json")
  if stamp_ok solc "$key" && [[ -d "$dir/node_modules/solc" ]]; then
    log "solc: up to date (contracts/node_modules)"; return
  fi
  command -v npm >/dev/null || apt_install nodejs npm
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  stamp_set solc "$key"
}

install_postgres() {
  if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
    log "postgres: present"; return
  fi
  apt_install postgresql
}

install_nginx() {
  if [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null; then
    log "nginx: present"; return
  fi
  # nginx-light: the core HTTP proxy only. The stack runs it as a plain process with
  # its own config; the package's system service is neither enabled nor needed.
  apt_install --no-install-recommends nginx-light
}

install_prometheus() {
  if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    log "prometheus: present"; return
  fi
  apt_install --no-install-recommends prometheus
}

main() {
  local steps=("$@")
  [[ ${#steps[@]} -eq 0 || "${steps[0]}" == all ]] && steps=(python kafka geth helm schemas solc postgres nginx prometheus)
  for step in "${steps[@]}"; do
    case $step in
      python|kafka|geth|helm|schemas|solc|postgres|nginx|prometheus) timed "$step" "install_$step" ;;
      *) echo "error: unknown step '$step' (python|kafka|geth|helm|schemas|solc|postgres|nginx|prometheus|all)" >&2; exit 2 ;;
    esac
  done
}

# Sourcing the script (the tests do) defines the functions without running a step.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
