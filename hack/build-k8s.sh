#!/usr/bin/env bash
# Builds the local control plane's binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl) from Kubernetes' and etcd's own Go modules
# into a cache outside the repository, and prints the directory holding them.
#
# Binaries already present in $KUBEBUILDER_ASSETS (the envtest convention) are
# used as they are; only missing ones are built, and each only once per cache.
set -euo pipefail

K8S_VERSION=v1.36.5
ETCD_VERSION=v3.6.16
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${AUTOHEAL_K8S_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/autoheal/k8s-${K8S_VERSION}}"
mkdir -p "$cache"

# Module downloads: these versions predate parts of the checksum database that
# this machine's proxy serves, so the sums pinned in go.sum are the check.
export GOSUMDB=off GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

log() { echo "build-k8s: $*" >&2; }

have() { # have NAME: true when NAME is usable from KUBEBUILDER_ASSETS or the cache
  local name=$1
  if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/$name" ]]; then
    ln -sf "$KUBEBUILDER_ASSETS/$name" "$cache/$name"
    return 0
  fi
  [[ -x "$cache/$name" ]]
}

k8s_ldflags() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local date; date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date} -X $pkg.gitCommit=module-${K8S_VERSION}"
  done
  echo "$flags"
}

build_k8s() { # build_k8s NAME
  local name=$1
  log "building $name ${K8S_VERSION} (first time only; several minutes)"
  (cd "$here/k8s" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$cache/$name.tmp" "k8s.io/kubernetes/cmd/$name")
  mv "$cache/$name.tmp" "$cache/$name"
}

have etcd || {
  log "building etcd ${ETCD_VERSION} (first time only)"
  (cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$cache/etcd.tmp" .)
  mv "$cache/etcd.tmp" "$cache/etcd"
}
for name in kube-apiserver kube-controller-manager kubectl; do
  have "$name" || build_k8s "$name"
done
echo "$cache"
