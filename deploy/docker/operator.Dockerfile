# The kuberaft-operator image: the controller that runs RaftClusters.
#
#   docker build -f deploy/docker/operator.Dockerfile -t kuberaft-operator .
#
# Built like node.Dockerfile (see there): a `builder` stage in the Rust image,
# a `runtime` stage on a minimal glibc base that is a build argument, every
# file the runtime takes from the builder under /out.

ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kuberaft-operator --bin kuberaft-operator \
 && mkdir -p /out/bin \
 && cp target/release/kuberaft-operator /out/bin/ \
 && strip --strip-all /out/bin/*

FROM ${BASE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="kuberaft-operator" \
      org.opencontainers.image.description="The controller that runs kuberaft RaftClusters on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kuberaft/kuberaft"
COPY --from=builder /out/bin/ /usr/local/bin/
USER 65532:65532
# /livez, /readyz and /metrics.
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kuberaft-operator"]
CMD ["run"]
