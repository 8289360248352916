# autoheal — the commands users and CI rely on (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
LOCAL := $(CURDIR)/.local
export KUBECONFIG := $(LOCAL)/kubeconfig

.PHONY: all build test test-chaos crds cluster-up cluster-down demo k8s-bins tools image bench bench-probe bench-replace bench-refresh fuzz fmt lint clean

all: build

build:
	$(CARGO) build --workspace

## k8s-bins: build (once, cached) etcd, kube-apiserver, kube-controller-manager, kubectl
k8s-bins:
	@hack/build-k8s.sh >/dev/null

## tools: build (once, cached in ~/.cache/autoheal/tools) crane, from the Go module proxy
tools:
	@hack/build-tools.sh >/dev/null

## image: the static binary and an OCI image archive in target/image/, with no Docker engine
image: tools
	hack/image.sh

## crds: regenerate crds/ from the Rust types
crds:
	$(CARGO) run -q --bin autoheal -- crds --output-dir crds
	cp crds/*.yaml charts/autoheal/crds/

## test: everything CI runs: unit and end-to-end tests against a real control plane, then lint
## (tests/image.rs runs hack/image.sh: a release build of the static binary, then crane)
test: k8s-bins tools
	$(CARGO) build --workspace --all-targets
	$(CARGO) test --workspace --no-fail-fast
	$(MAKE) lint

## test-chaos: the long version of tests/chaos.rs (API server restart, probe blackout, etcd
## pause, leader kill mid-drain, 60 s of conflicting writers, 3000 garbage inputs); `make test`
## runs its short version. AUTOHEAL_CHAOS_SEED=N replays a fuzzer run.
test-chaos: k8s-bins
	AUTOHEAL_CHAOS_LONG=1 $(CARGO) test --test chaos -- --nocapture

## chart-tools: build (once, cached) helm and promtool, which the chart tests use
.PHONY: chart-tools manifests
chart-tools:
	@hack/build-tools.sh helm promtool >/dev/null

## manifests: regenerate deploy/ from charts/autoheal (helm template; a test fails on drift)
manifests:
	hack/manifests.sh

test: chart-tools

cluster-up: k8s-bins
	$(CARGO) run -q -p testkit --bin cluster -- up --dir $(LOCAL)

cluster-down:
	$(CARGO) run -q -p testkit --bin cluster -- down --dir $(LOCAL)

## demo: local control plane + CRDs + podsim + operator + deploy/examples/web.yaml
demo: k8s-bins
	hack/demo.sh

## bench-probe: probe engine benchmark (installs wrk, the reference, when missing)
bench-probe:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } || echo "wrk could not be installed: the reference is skipped"
	$(CARGO) bench --bench probe

## bench-replace: ReplicaSet vs ScalingGroup replacement and scale-up times (release builds; writes bench/REPLACE.md)
## (cargo bench builds target/release/autoheal itself, with the bench's feature set, and
## the bench spawns that binary: CARGO_BIN_EXE_autoheal)
bench-replace: k8s-bins
	$(CARGO) bench --bench replace

## bench: every "proof at scale" scenario (release builds; writes bench/RESULTS.md): ReplicaSet vs
## ScalingGroup with kube-controller-manager's default and raised client limits, detection, 10,000
## Instances, restart, refresh. Sizes from env: BENCH_RUNS (5), BENCH_N (100), BENCH_K (1,10),
## BENCH_SCALE (1000), BENCH_DETECT_SAMPLES (100), BENCH_GROUPS (100), BENCH_GROUP_SIZE (100),
## BENCH_STEADY_SECONDS (60), BENCH_ONLY (scenario numbers 1-6; 7, refresh, runs unless BENCH_SKIP_REFRESH=1).
## Scenarios 5 and 6 run target/release/podsim as 10 processes, one per 10 groups.
BENCH_RUNS ?= 5
bench: k8s-bins
	@if [ -z "$$BENCH_SKIP_REFRESH" ]; then $(CARGO) bench --bench refresh -- --runs $(BENCH_RUNS) --kcm-variants; fi
	$(CARGO) build --release -p podsim
	BENCH_RUNS=$(BENCH_RUNS) $(CARGO) bench --bench replace -- --suite

## bench-refresh: Deployment vs ScalingGroup rolling 50 to a new template with the same bounds
## (maxSurge 25 % / maxUnavailable 25 % ⇔ maxHealthy 125 / minHealthy 75); writes bench/REFRESH.md
bench-refresh: k8s-bins
	$(CARGO) bench --bench refresh

## install-plugin: the kubectl plugin `kubectl autoheal` (binary kubectl-autoheal) into ~/.cargo/bin
## (`make build` also builds it in target/debug; kubectl finds it on PATH)
.PHONY: install-plugin
install-plugin:
	$(CARGO) install --locked --path . --bin kubectl-autoheal

## fuzz: every cargo-fuzz target in fuzz/ for FUZZ_SECONDS each (default 600), one at a time
## (nightly and cargo-fuzz needed; not part of `make test`). Starts from the committed seeds in
## fuzz/corpus/<target>; what it finds goes to fuzz/target/corpus/<target> (ignored by git), a
## crash to fuzz/artifacts/<target>/.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= annotations int_or_percent health_evaluator replacement_planner refresh_planner lifecycle probe_http_answer
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t corpus/$$t && \
		$(CARGO) +nightly fuzz run -O --debug-assertions $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
