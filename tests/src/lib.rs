//! Test harness for kubernaut-operators: a real local Kubernetes control plane (`etcd` +
//! `kube-apiserver` built from their published Go modules), the Tekton stand-in CRDs, and helpers
//! shared by the integration tests in `tests/tests/`.
#![deny(missing_docs)]

pub mod controlplane;
pub mod deploy;
pub mod requests;
pub mod simulator;
pub mod tekton;

pub use controlplane::ControlPlane;
