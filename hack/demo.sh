#!/usr/bin/env bash
# make demo: a live ScalingGroup on a local control plane.
#
# Builds everything, brings up the local control plane (as `make cluster-up`), installs the
# CRDs, starts podsim and the operator in the background, applies deploy/examples/web.yaml,
# waits until the group is Ready and prints the commands to watch it. Ctrl-C tears it all
# down (the control plane only if this script started it).
#
# DEMO_CHECK=1 hack/demo.sh   exits (tearing down) as soon as the group is Ready: a smoke test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARGO="${CARGO:-cargo}"
LOCAL="$ROOT/.local"
LOGS="$LOCAL/demo-logs"
NS=default
export KUBECONFIG="$LOCAL/kubeconfig"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

PIDS=()
STARTED_CLUSTER=0
cleanup() {
  local code=$?
  trap - INT TERM EXIT
  echo
  say "tearing down"
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $STARTED_CLUSTER == 1 ]]; then
    "$ROOT/target/debug/cluster" down --dir "$LOCAL" >/dev/null 2>&1 || true
    echo "control plane stopped"
  else
    echo "control plane left running (it was running before the demo): make cluster-down"
  fi
  echo "logs: $LOGS"
  exit "$code"
}
trap cleanup INT TERM EXIT

say "building"
$CARGO build --workspace --bins

say "starting the local control plane"
UP_OUT="$("$ROOT/target/debug/cluster" up --dir "$LOCAL")"
echo "$UP_OUT"
if ! grep -q "already running" <<<"$UP_OUT"; then
  STARTED_CLUSTER=1
fi
BIN_DIR="$(sed -n 's/^ *export PATH=\(.*\):\$PATH.*/\1/p' <<<"$UP_OUT" | head -n1)"
if [[ -n "$BIN_DIR" ]]; then
  export PATH="$BIN_DIR:$PATH"
fi
command -v kubectl >/dev/null || { echo "kubectl not found (expected in $BIN_DIR)"; exit 1; }

say "installing the CRDs"
kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established --timeout=60s \
  crd/scalinggroups.autoheal.dev crd/instances.autoheal.dev

mkdir -p "$LOGS"
say "starting podsim (logs: $LOGS/podsim.log)"
"$ROOT/target/debug/podsim" --namespace "$NS" --nodes 2 >"$LOGS/podsim.log" 2>&1 &
PIDS+=($!)

say "starting the operator (logs: $LOGS/autoheal.log)"
RUST_LOG="${RUST_LOG:-info}" "$ROOT/target/debug/autoheal" run \
  --namespace "$NS" --lease-namespace "$NS" --admin-addr 127.0.0.1:0 \
  >"$LOGS/autoheal.log" 2>&1 &
PIDS+=($!)

say "applying deploy/examples/web.yaml"
kubectl -n "$NS" apply -f deploy/examples/web.yaml

say "waiting until sg/web is Ready"
if ! kubectl -n "$NS" wait --for=condition=Ready sg/web --timeout=180s; then
  echo "sg/web did not become Ready; last operator log lines:"
  tail -n 40 "$LOGS/autoheal.log"
  exit 1
fi
kubectl -n "$NS" get sg web
kubectl -n "$NS" get inst -l autoheal.dev/group=web

if [[ "${DEMO_CHECK:-}" == 1 ]]; then
  say "DEMO_CHECK=1: the group is Ready"
  exit 0
fi

ADMIN="$(sed -n 's/.*admin endpoints listening.*addr[^0-9]*\([0-9.]*:[0-9]*\).*/\1/p' "$LOGS/autoheal.log" | head -n1)"
cat <<EOF

The group is live. In another terminal:

  export KUBECONFIG=$KUBECONFIG
  export PATH=$BIN_DIR:$ROOT/target/debug:\$PATH     # kubectl, and the kubectl-autoheal plugin

  kubectl get inst -w                                # watch this one while the group heals

  kubectl annotate pod <name> podsim.autoheal.dev/behavior=fail   # break one: its probe sees HTTP 503,
                                                     # it turns Unhealthy, leaves service, is replaced
  kubectl get sg web -w                              # DESIRED CURRENT INSERVICE HEALTHY UNHEALTHY
  kubectl events --for sg/web                        # what the group did and why
  kubectl get pods -L autoheal.dev/in-service -w     # the Pods and their service membership
  kubectl get endpointslices -l kubernetes.io/service-name=web -o wide
  kubectl describe sg web                            # conditions and Events
  kubectl scale sg/web --replicas=5                  # scale out / in (watch Terminating → ... → Terminated)
  kubectl annotate inst <name> autoheal.dev/health=Unhealthy autoheal.dev/respect-grace-period=false
  kubectl delete inst <name>                         # terminate one: drained, then replaced
  kubectl autoheal why inst/<name>                   # its verdict, evidence, and what the group does next
  kubectl autoheal why sg/web                        # why the group is (not) Ready, what holds repairs
  kubectl autoheal history sg/web                    # the repairs so far
  curl -s http://${ADMIN:-127.0.0.1:8080}/metrics | grep ^autoheal_

Metrics: http://${ADMIN:-127.0.0.1:8080}/metrics
Dashboard: on a cluster with Grafana, import $ROOT/charts/autoheal/files/dashboard.json
  (or install the chart with --set metrics.dashboard.enabled=true); its panels read the
  metrics above through Prometheus. Alerts: $ROOT/charts/autoheal/files/alerts.yaml.
Logs: $LOGS/autoheal.log, $LOGS/podsim.log
Press Ctrl-C to tear everything down.
EOF

while true; do
  for pid in "${PIDS[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "a background process ($pid) exited; see $LOGS"
      exit 1
    fi
  done
  sleep 2
done
