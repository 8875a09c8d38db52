# syntax=docker/dockerfile:1

# One image for the whole fleet: syncfleet-api, syncfleet-scheduler,
# syncfleet-worker and syncfleet-loadtest. The Helm chart picks the binary
# with `command`; the default runs the api.
#
#   docker build -t syncfleet:0.1.0 .

ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
# The registry and target caches persist between builds on the same builder;
# the binaries are copied out of the target cache within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
    && mkdir -p /out \
    && cp target/release/syncfleet-api \
          target/release/syncfleet-scheduler \
          target/release/syncfleet-worker \
          target/release/syncfleet-loadtest \
          /out/

FROM ${RUNTIME_IMAGE} AS runtime
LABEL org.opencontainers.image.title="syncfleet" \
      org.opencontainers.image.description="Syncfleet: scheduler, worker, api and loadtest binaries" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 syncfleet \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin syncfleet
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# Nothing is written to disk: the image runs with a read-only root filesystem.
WORKDIR /
EXPOSE 8080 9090
CMD ["syncfleet-api", "serve"]
