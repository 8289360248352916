#!/usr/bin/env bash
# Builds the release, chart and monitoring tools (once, cached) from their Go modules into a
# cache outside the repository, and prints the directory holding them.
#
#   hack/build-tools.sh [TOOL...]   # default: every tool below
#
# Each tool is a function of its own (built into $cache/NAME-VERSION, linked as
# $cache/NAME); the directory is printed last, so `PATH="$(hack/build-tools.sh helm):$PATH"`.
set -euo pipefail

cache="${AUTOHEAL_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/autoheal/tools}"
mkdir -p "$cache"

export GOTOOLCHAIN=local CGO_ENABLED=0

log() { echo "build-tools: $*" >&2; }

# go_install NAME VERSION PACKAGE [LDFLAGS]: `go install PACKAGE@VERSION` into
# $cache/NAME-VERSION (once), linked as $cache/NAME.
go_install() {
  local name=$1 version=$2 package=$3 ldflags="-s -w ${4:-}"
  local bin="$cache/$name-$version"
  if [[ ! -x $bin ]]; then
    log "building $name $version (first time only; minutes)"
    local gobin
    gobin=$(mktemp -d "$cache/.gobin-$name.XXXXXX")
    GOBIN="$gobin" go install -trimpath -ldflags "$ldflags" "$package@$version"
    mv "$gobin/$name" "$bin"
    rmdir "$gobin"
  fi
  ln -sfn "$name-$version" "$cache/$name"
}

## crane: go-containerregistry's crane assembles the operator's OCI image without a Docker
## engine (`make image`, hack/image.sh).
CRANE_VERSION=v0.22.1
crane() {
  go_install crane "$CRANE_VERSION" github.com/google/go-containerregistry/cmd/crane
}

## helm: renders deploy/ from charts/autoheal (`make manifests`); the chart tests lint,
## template and install it (tests/chart.rs).
HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37 # helm v3.22.0 is built with client-go v0.37
helm() {
  # As helm's own Makefile does: its version, and the Kubernetes version of its client-go
  # (1.37) as the default of `helm template` and `helm lint` (else 1.20, which the chart's
  # kubeVersion refuses).
  local flags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "$flags"
}

## promtool: Prometheus's own checker; the chart tests run `promtool check rules` on the
## PrometheusRule and `promtool check metrics` on the operator's /metrics (tests/chart.rs).
## v0.316.0 is the Go module version of Prometheus 3.16.0.
PROMETHEUS_VERSION=v0.316.0
PROMETHEUS_RELEASE=3.16.0
promtool() {
  go_install promtool "$PROMETHEUS_VERSION" github.com/prometheus/prometheus/cmd/promtool \
    "-X github.com/prometheus/common/version.Version=$PROMETHEUS_RELEASE"
}

tools=("$@")
((${#tools[@]})) || tools=(crane helm promtool)
for tool in "${tools[@]}"; do
  case $tool in
    crane) crane ;;
    helm) helm ;;
    promtool) promtool ;;
    *) echo "build-tools: unknown tool $tool (known: crane, helm, promtool)" >&2; exit 2 ;;
  esac
done
echo "$cache"
