# syntax=docker/dockerfile:1
# The operator's image: a static (musl) binary on distroless/static, non-root.
#
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/autoheal/autoheal:0.1.0 .
#
# The release workflow (.github/workflows/release.yml) builds and pushes it on a `v*` tag.
# Without a Docker engine, `make image` builds the same image (same user, entrypoint and
# labels) from the same static binary with crane, as an OCI archive.

# Alpine's Rust targets musl natively on every architecture: a static binary, no cross C
# toolchain (ring compiles C) needed under buildx's emulation.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-alpine AS builder
RUN apk add --no-cache musl-dev file
WORKDIR /src
COPY . .
ARG AUTOHEAL_GIT_COMMIT=unknown
ENV AUTOHEAL_GIT_COMMIT=${AUTOHEAL_GIT_COMMIT} \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin autoheal \
 && cp target/release/autoheal /autoheal \
 && file /autoheal | grep -Eq 'statically linked|static-pie linked' \
 && /autoheal version

FROM gcr.io/distroless/static:nonroot
ARG VERSION=0.1.0
ARG AUTOHEAL_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="autoheal" \
      org.opencontainers.image.description="Auto scaling groups with health checking and automatic repair for Kubernetes" \
      org.opencontainers.image.source="https://github.com/autoheal/autoheal" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${AUTOHEAL_GIT_COMMIT}"
COPY --from=builder /autoheal /autoheal
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/autoheal"]
CMD ["run"]
