# The WorkflowExecution operator image: one static (musl) binary on an empty base, run as the
# non-root user 65532. Nothing else is copied: configuration and templates come from the ConfigMaps
# that deploy/ mounts, and the in-cluster API CA from the ServiceAccount mount.
#
#   make image                      (IMAGE=<registry>/<name>:<tag> to choose the name)

FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# Alpine's Rust targets musl and links statically by default.
RUN cargo build --locked --release -p workflowexecution-operator --bin workflowexecution-operator \
 && cp target/release/workflowexecution-operator /workflowexecution-operator

FROM scratch
COPY --from=build /workflowexecution-operator /workflowexecution-operator
USER 65532:65532
ENTRYPOINT ["/workflowexecution-operator"]
CMD ["run"]
