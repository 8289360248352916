#!/usr/bin/env bash
# `make image`: the operator as a static binary and an OCI image archive, with no Docker
# engine and no registry: crane (hack/build-tools.sh) assembles the image in a registry of
# its own, in memory on loopback, from an empty base (as `FROM scratch`), and saves it.
#
# Output (under target/image/, or $IMAGE_OUT):
#   autoheal                   the static binary (linux/amd64)
#   oci/                       the image as an OCI image layout
#   autoheal-VERSION.oci.tar   the same layout as one archive (`docker load`, `podman load`,
#                              `skopeo copy oci-archive:…`, `crane push oci/ REF`)
#   image.json                 {reference, digest, config digest, size}
#
# The image holds what distroless/static gives a non-root static binary that matters here:
# /etc/passwd and /etc/group with nonroot (65532), /home/nonroot, /tmp; no shell, no CA
# bundle (the operator talks to its own cluster's API server with the service account CA).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${IMAGE:-ghcr.io/autoheal/autoheal}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
OUT=${IMAGE_OUT:-$PWD/target/image}
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[[ -z $(git status --porcelain --untracked-files=no 2>/dev/null) ]] || COMMIT="$COMMIT-dirty"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

log() { echo "image: $*" >&2; }

# Run from `cargo test` (tests/image.rs), the environment carries the test's CARGO_PKG_*,
# CARGO_MANIFEST_* and the like, which build scripts watch (ring's: rerun-if-env-changed):
# drop them, or each run from the other context rebuilds half the dependencies.
for var in $(compgen -e); do
  case $var in
    CARGO_PKG_* | CARGO_MANIFEST_* | CARGO_CRATE_* | CARGO_BIN_* | CARGO_CFG_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR) unset "$var" ;;
  esac
done

# --- the static binary ---------------------------------------------------------------------
# musl (fully static, as the Dockerfile builds) when the target and a musl C compiler (ring
# compiles C) are there; else glibc linked statically (+crt-static).
musl=x86_64-unknown-linux-musl
gnu=x86_64-unknown-linux-gnu
target=$gnu
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx $musl; then
  rustup target add $musl >/dev/null 2>&1 || log "cannot add the $musl target"
fi
if [[ -d "$(rustc --print sysroot)/lib/rustlib/$musl" ]] &&
  { command -v musl-gcc >/dev/null || command -v x86_64-linux-musl-gcc >/dev/null; }; then
  target=$musl
else
  log "no musl toolchain (rustup target $musl and musl-gcc from musl-tools): linking glibc statically"
  export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
fi
log "building target/$target/release/autoheal ($COMMIT)"
AUTOHEAL_GIT_COMMIT=$COMMIT cargo build --release --locked --target $target --bin autoheal
bin=target/$target/release/autoheal
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "image: $bin has dynamic dependencies:" >&2
  ldd "$bin" >&2
  exit 1
fi
file "$bin" 2>/dev/null | grep -Eq 'statically linked|static-pie linked' ||
  { command -v file >/dev/null && { echo "image: $bin is not static: $(file "$bin")" >&2; exit 1; }; }

# --- the layer -----------------------------------------------------------------------------
rm -rf "$OUT" && mkdir -p "$OUT"
rootfs=$(mktemp -d)
chmod 0755 "$rootfs"
registry_pid=
cleanup() {
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null
  rm -rf "$rootfs"
}
trap cleanup EXIT
# Symbols stripped (as `strip = true` would, without rebuilding every dependency).
if command -v strip >/dev/null; then strip -o "$rootfs/autoheal" "$bin"; else cp "$bin" "$rootfs/autoheal"; fi
chmod 0755 "$rootfs/autoheal"
cp "$rootfs/autoheal" "$OUT/autoheal"
mkdir -p "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/home/nonroot"
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"
# Owners in the layer: root, except nonroot's home (as distroless).
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner --owner=0 --group=0 \
  --exclude=./home/nonroot -cf "$OUT/layer.tar" -C "$rootfs" .
tar --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner --owner=65532 --group=65532 \
  -rf "$OUT/layer.tar" -C "$rootfs" ./home/nonroot

# --- the image -----------------------------------------------------------------------------
tools=$(hack/build-tools.sh crane)
crane=$tools/crane
port_file=$(mktemp)
"$crane" registry serve --address 127.0.0.1:0 >"$port_file" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
  port=$(sed -n 's/.*serving on port \([0-9][0-9]*\).*/\1/p' "$port_file" | head -1)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n ${port:-} ]] || { echo "image: crane registry did not start: $(cat "$port_file")" >&2; exit 1; }
rm -f "$port_file"
ref=127.0.0.1:$port/autoheal:$VERSION
log "assembling $IMAGE:$VERSION (scratch + 1 layer) in crane's registry at 127.0.0.1:$port"
"$crane" append --oci-empty-base -f "$OUT/layer.tar" -t "$ref" >/dev/null
"$crane" mutate "$ref" -t "$ref" \
  --set-platform linux/amd64 \
  --user 65532:65532 \
  --workdir / \
  --entrypoint /autoheal \
  --cmd run \
  -l org.opencontainers.image.title=autoheal \
  -l "org.opencontainers.image.description=Auto scaling groups with health checking and automatic repair for Kubernetes" \
  -l org.opencontainers.image.source=https://github.com/autoheal/autoheal \
  -l org.opencontainers.image.licenses=Apache-2.0 \
  -l "org.opencontainers.image.version=$VERSION" \
  -l "org.opencontainers.image.revision=$COMMIT" \
  -l "org.opencontainers.image.created=$CREATED" \
  -a "org.opencontainers.image.ref.name=$VERSION" \
  >/dev/null
"$crane" pull --format oci "$ref" "$OUT/oci"
(cd "$OUT/oci" && tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --numeric-owner --owner=0 --group=0 \
  -cf "$OUT/autoheal-$VERSION.oci.tar" .)
digest=$("$crane" digest "$ref")
config_digest=$("$crane" config "$ref" | sha256sum | cut -d' ' -f1)
size=$(stat -c %s "$OUT/autoheal-$VERSION.oci.tar")
rm -f "$OUT/layer.tar"
cat >"$OUT/image.json" <<JSON
{"reference": "$IMAGE:$VERSION", "digest": "$digest", "config": "sha256:$config_digest", "archive": "autoheal-$VERSION.oci.tar", "archiveBytes": $size, "target": "$target", "commit": "$COMMIT"}
JSON
log "$OUT/autoheal-$VERSION.oci.tar: $IMAGE:$VERSION $digest, $((size / 1024 / 1024)) MiB ($target)"
echo "$OUT/autoheal-$VERSION.oci.tar"
