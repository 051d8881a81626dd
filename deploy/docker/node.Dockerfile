# The kuberaft-node image: one Raft member per container (a StatefulSet pod).
#
#   docker build -f deploy/docker/node.Dockerfile -t kuberaft-node .
#
# Two stages: `builder` compiles in the Rust image; `runtime` is a minimal
# glibc base (distroless/cc has libc, libgcc_s and CA certificates, no shell)
# with the binaries, running as the unprivileged user 65532.
#
# The base is an argument so that the runtime stage can be built on any
# compatible base: the Docker end-to-end suite (tests/src/docker/image.rs)
# builds this stage alone, on a base it makes itself, from binaries it
# compiled, because its machine has no registry. It relies on every file the
# runtime stage takes from the builder living under /out: keep it that way.

ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# Stripped to keep the image within 40 MB on distroless/cc (debug info is
# three quarters of the binaries' size); a panic still reports its message
# and source location, its backtrace only addresses. `raftctl` is a link to
# `kuberaft-node`, which runs raftctl when started under that name: the two
# share nearly all their code, and a second binary cost 7 MB.
RUN cargo build --release --locked -p kuberaft-node --bin kuberaft-node \
 && mkdir -p /out/bin /out/data \
 && cp target/release/kuberaft-node /out/bin/ \
 && strip --strip-all /out/bin/kuberaft-node \
 && ln -s kuberaft-node /out/bin/raftctl

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="kuberaft-node" \
      org.opencontainers.image.description="A member of a kuberaft Raft cluster" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kuberaft/kuberaft"
COPY --from=builder /out/bin/ /usr/local/bin/
# The data dir exists in the image, owned by the member's user, so that a
# fresh Docker volume mounted there starts out writable (Kubernetes uses the
# pod's fsGroup for the same purpose).
COPY --from=builder --chown=65532:65532 /out/data /var/lib/kuberaft
USER 65532:65532
ENV KUBERAFT_DATA_DIR=/var/lib/kuberaft
# 7000: Raft between members; 7001: clients (kv, admin reads, health, reflection);
# 7002: metrics, probes, web view; 7003: admin (membership changes; members and operator only).
EXPOSE 7000 7001 7002 7003
ENTRYPOINT ["/usr/local/bin/kuberaft-node"]
