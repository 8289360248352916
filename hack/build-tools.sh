#!/usr/bin/env bash
# Builds the release tools (once, cached) from their Go modules into a cache outside the
# repository, and prints the directory holding them.
#
#   hack/build-tools.sh [TOOL...]   # default: every tool below
#
# Each tool is a function of its own (built into $cache/NAME-VERSION, linked as
# $cache/NAME); the directory is printed last, so `PATH="$(hack/build-tools.sh crane):$PATH"`.
set -euo pipefail

cache="${AUTOHEAL_TOOLS_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/autoheal/tools}"
mkdir -p "$cache"

export GOTOOLCHAIN=local CGO_ENABLED=0

log() { echo "build-tools: $*" >&2; }

# go_install NAME VERSION PACKAGE: `go install PACKAGE@VERSION` into $cache/NAME-VERSION
# (once), linked as $cache/NAME.
go_install() {
  local name=$1 version=$2 package=$3
  local bin="$cache/$name-$version"
  if [[ ! -x $bin ]]; then
    log "building $name $version (first time only)"
    local gobin
    gobin=$(mktemp -d "$cache/.gobin-$name.XXXXXX")
    GOBIN="$gobin" go install -trimpath -ldflags "-s -w" "$package@$version"
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

tools=("$@")
((${#tools[@]})) || tools=(crane)
for tool in "${tools[@]}"; do
  case $tool in
    crane) crane ;;
    *) echo "build-tools: unknown tool $tool (known: crane)" >&2; exit 2 ;;
  esac
done
echo "$cache"
