//! Test harness for kubernaut-operators: a real local Kubernetes control plane (`etcd` +
//! `kube-apiserver` built from their published Go modules), Tekton's own CRDs ([`tekton`]), a
//! simulator replaying runs recorded from real Tekton ([`simulator`]), and helpers shared by the
//! integration tests in `tests/tests/`; the end-to-end cluster ([`e2e`]: real Tekton on a
//! container-free cluster) the `tests/tests/e2e_*.rs` tests run against; and what the benchmarks
//! share ([`bench`](mod@bench)).
#![deny(missing_docs)]

pub mod bench;
pub mod checkout;
pub mod controlplane;
pub mod deploy;
pub mod e2e;
pub mod image;
pub mod requests;
pub mod runtime;
pub mod simulator;
pub mod tekton;

pub use controlplane::ControlPlane;
