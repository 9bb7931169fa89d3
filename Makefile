# kubernaut-operators — developer commands. `make test` is what CI runs.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

# Builds are cached outside the clone so repeated runs (and CI on a fresh clone) are fast.
CACHE_DIR ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kubernaut-operators
export CARGO_TARGET_DIR ?= $(CACHE_DIR)/target
CARGO ?= cargo

.PHONY: all test validate-render unit-test integration-test lint fmt controlplane kustomize deploy-check static-operator image demo bench bench-tekton crds golden clean-cache help e2e e2e-deps record-tekton

all: test

help:
	@echo "make test             build the local control plane and e2e components if missing, lint, validate"
	@echo "                      rendered samples with Tekton's validation, build the image, unit +"
	@echo "                      integration + e2e tests"
	@echo "make unit-test        unit tests only (no control plane needed)"
	@echo "make deploy-check     kustomize build deploy/, apply it to a local control plane (twice), delete it;"
	@echo "                      run the operator as its ServiceAccount under real RBAC (also part of make test)"
	@echo "make image            build the operator's container image (static binary, OCI layout + oci-archive,"
	@echo "                      no container engine); prints where it is, its digest and size"
	@echo "make demo             control plane + operator + Tekton simulator + samples, live table"
	@echo "make bench            ceiling, load, scale and micro benchmarks -> docs/performance.md"
	@echo "make bench-tekton     100 WFEs of a three-task workflow on real Tekton (the e2e cluster) next to"
	@echo "                      the simulator -> the \"Real Tekton\" section of docs/performance.md"
	@echo "make controlplane-shell  a local control plane with the CRDs, namespaces and a Tekton simulator,"
	@echo "                      printing how to reach it and how to run the operator against it"
	@echo "make controlplane     build kube-apiserver and etcd from their Go modules (cached)"
	@echo "make kustomize        build kustomize from its Go module (cached)"
	@echo "make e2e              end-to-end tests: the operator binary on real Tekton in a container-free"
	@echo "                      cluster (kube-controller-manager, kube-scheduler, kwok); see docs/e2e.md"
	@echo "make e2e-deps         build the end-to-end components from their Go modules (cached)"
	@echo "make record-tekton    re-record what the fast tiers take from real Tekton: the e2e runs"
	@echo "                      (tests/e2e/recorded/), Tekton's CRDs (tests/crds/), golden status outputs"
	@echo "make crds             regenerate crds/ from the Rust types (CI fails on drift)"
	@echo "make golden           regenerate the golden files (review the diff)"
	@echo "make lint             cargo fmt --check and clippy -D warnings"

controlplane:
	@tests/controlplane/install.sh >/dev/null

kustomize:
	@tests/kustomize/install.sh >/dev/null

# The end-to-end tier (docs/e2e.md): kube-controller-manager, kube-scheduler, kwok, Tekton
# Pipelines and tests/tekton-tools, built from Go modules into the cache like the control plane.
e2e-deps: controlplane
	@tests/e2e/install.sh >/dev/null

# The end-to-end tests (tests/tests/e2e_*.rs) against real Tekton, with the operator binary (the
# debug build the workspace's tests use: these tests judge behaviour, and a release build would add
# the longest cold build of all to a fresh machine's CI run).
E2E_ARGS ?=
e2e: e2e-deps
	$(CARGO) build --locked -p workflowexecution-operator --bin workflowexecution-operator
	@echo "end-to-end components:"
	@sed 's/^/  /' "$$(tests/e2e/install.sh --print)/versions"
	@echo "  $$("$(CARGO_TARGET_DIR)/debug/workflowexecution-operator" version)"
	$(CARGO) test --locked -p kubernaut-test-harness --features e2e --test 'e2e_*' -- $(E2E_ARGS)

# Re-records everything the fast tiers take from real Tekton (docs/e2e.md, "Recordings"): Tekton's
# PipelineRun/TaskRun CRDs from the module the e2e tier builds (tests/crds/), the e2e scenarios' runs
# (tests/e2e/recorded/, which the simulator replays), and the golden status outputs mapped from them.
# Review the diff.
record-tekton: e2e-deps
	@version=$$(tests/crds/vendor.sh); \
	  echo "recording from tekton-pipelines $$version"; \
	  sed -i "s/^pub const VERSION: &str = \".*\";/pub const VERSION: \&str = \"$$version\";/" tests/src/tekton.rs
	$(CARGO) build --locked --release -p workflowexecution-operator --bin workflowexecution-operator
	@rec=$$(mktemp -d); trap 'rm -rf "$$rec"' EXIT; \
	  KUBERNAUT_E2E_RECORD="$$rec" $(CARGO) test --locked -p kubernaut-test-harness --features e2e \
	    --test e2e_workflows; \
	  rm -f tests/e2e/recorded/*.yaml; cp "$$rec"/*.yaml tests/e2e/recorded/
	UPDATE_GOLDEN=1 $(CARGO) test --locked -p workflowexecution-operator --test golden
	$(CARGO) test --locked -p kubernaut-test-harness --lib
	@echo "re-recorded from $$(sed -n 's/^# Recorded from \(tekton-pipelines [^ ]*\) .*/\1/p' tests/e2e/recorded/succeed.yaml); review git diff"

# The deploy check (tests/tests/deploy.rs, deploy_rbac.rs). `make test` runs the same tests as
# part of the workspace's.
deploy-check: controlplane kustomize
	$(CARGO) test --locked -p kubernaut-test-harness --test deploy --test deploy_rbac

VERSION ?= $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1)

# The operator linked statically (glibc, crt-static), release profile, into the cache's target
# directory. The explicit --target keeps crt-static off the build scripts and proc-macros (they
# run on this machine and stay dynamic) and puts the binary in its own directory,
# $(CARGO_TARGET_DIR)/$(STATIC_TARGET)/release, beside the other builds' caches. getrandom's
# linux_raw backend asks the kernel for random bytes directly: its default looks glibc's wrapper up
# at run time, which a static binary cannot, and would fall back to reading /dev/urandom. (RUSTFLAGS
# are part of every crate's fingerprint: they must not vary between runs, or nothing is reused.)
STATIC_TARGET := x86_64-unknown-linux-gnu
STATIC_BINARY := $(CARGO_TARGET_DIR)/$(STATIC_TARGET)/release/workflowexecution-operator
static-operator:
	RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_raw"' \
	  $(CARGO) build --locked --release --target $(STATIC_TARGET) -p workflowexecution-operator \
	  --bin workflowexecution-operator

# The operator's container image without a container engine (docs/operations.md, "The container
# image"): the static binary at /workflowexecution-operator on an empty base, user 65532, as an
# OCI image layout directory and the same layout as an oci-archive tarball, both under IMAGE_DIR
# (outside the clone). IMAGE_TAG is the tag the layout gives it. tests/tests/image.rs checks it.
IMAGE_DIR ?= $(CACHE_DIR)/image
IMAGE_TAG ?= $(VERSION)
image: static-operator
	$(CARGO) build --locked -q -p kubernaut-test-harness --bin oci-image
	"$(CARGO_TARGET_DIR)/debug/oci-image" --binary "$(STATIC_BINARY)" --version "$(VERSION)" \
	  --tag "$(IMAGE_TAG)" --layout "$(IMAGE_DIR)/workflowexecution-operator-$(IMAGE_TAG)" \
	  --archive "$(IMAGE_DIR)/workflowexecution-operator-$(IMAGE_TAG).tar"

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked --features kubernaut-test-harness/e2e -- -D warnings
	RUSTDOCFLAGS="-D warnings -D missing_docs" $(CARGO) doc --locked --no-deps -p kubernaut-framework -p workflowexecution-operator

fmt:
	$(CARGO) fmt --all

unit-test:
	$(CARGO) test --workspace --locked --exclude kubernaut-test-harness
	$(CARGO) test --locked -p kubernaut-test-harness --lib

# tests/tests/from_checkout.rs runs the operator binary of this build, tests/tests/image.rs the
# static one: build them first.
integration-test: controlplane kustomize static-operator
	$(CARGO) build --locked -p workflowexecution-operator --bin workflowexecution-operator
	$(CARGO) test --locked -p kubernaut-test-harness --tests

# `image` builds the static operator tests/tests/image.rs puts in an image and checks.
test: controlplane kustomize e2e-deps lint validate-render image
	$(CARGO) test --workspace --locked --all-targets
	$(CARGO) test --workspace --locked --doc
	$(MAKE) --no-print-directory e2e

# Tekton's own SetDefaults + Validate (strict decoding: a misspelt field is an error, not silently
# pruned) on the PipelineRun `render` prints for every valid sample. Cheap: no cluster.
validate-render: e2e-deps
	@out=$$(mktemp -d); trap 'rm -rf "$$out"' EXIT; \
	for sample in config/samples/*.yaml; do \
	  case $$sample in *invalid*) continue;; esac; \
	  $(CARGO) run -q --locked -p workflowexecution-operator -- render --config config/workflowexecution.yaml \
	    --templates templates/workflowexecution --wfe "$$sample" > "$$out/$$(basename "$$sample")"; \
	done; \
	"$$(tests/e2e/install.sh --print)/tekton-tools" validate "$$out"/*.yaml

controlplane-shell: controlplane
	$(CARGO) run --locked -p kubernaut-test-harness --bin local-controlplane

demo: controlplane
	$(CARGO) run --locked -p kubernaut-test-harness --bin demo

# Benchmarks (under 10 minutes with cached builds): criterion micro-benchmarks, then the ceiling,
# load and scale runs of the release-built operator against a local control plane. Writes
# docs/performance.md and docs/performance.json. BENCH_ARGS passes options to the driver
# (e.g. BENCH_ARGS="--n 200 --skip-scale").
BENCH_ARGS ?=
bench: controlplane
	$(CARGO) build --locked --release -p workflowexecution-operator --bin workflowexecution-operator
	$(CARGO) build --locked --release -p kubernaut-test-harness --bin loadbench
	$(CARGO) bench --locked -p workflowexecution-operator --bench micro -- --warm-up-time 1 --measurement-time 3
	"$(CARGO_TARGET_DIR)/release/loadbench" --operator "$(CARGO_TARGET_DIR)/release/workflowexecution-operator" \
	  --criterion "$(CARGO_TARGET_DIR)/criterion" --out docs $(BENCH_ARGS)

# The load figure on real Tekton (docs/performance.md, "Real Tekton"): the same WorkflowExecutions on
# the Tekton simulator and on the end-to-end cluster, one after the other. The operator is the
# release build if `make bench` made one, else the debug build made here (the driver says which).
# BENCH_TEKTON_ARGS passes options to the driver (e.g. BENCH_TEKTON_ARGS="--n 50").
BENCH_TEKTON_ARGS ?=
bench-tekton: e2e-deps
	$(CARGO) build --locked -p workflowexecution-operator --bin workflowexecution-operator
	$(CARGO) build --locked -p kubernaut-test-harness --features e2e --bin tektonbench
	"$(CARGO_TARGET_DIR)/debug/tektonbench" --out docs $(BENCH_TEKTON_ARGS)

crds:
	$(CARGO) run -q --locked -p workflowexecution-operator -- crd > crds/kubernaut.ai_workflowexecutions.yaml

golden:
	UPDATE_GOLDEN=1 $(CARGO) test --locked -p workflowexecution-operator

clean-cache:
	rm -rf "$(CARGO_TARGET_DIR)"
