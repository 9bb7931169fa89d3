//! Reusable building blocks for Kubernetes reconcilers with declarative resource templates.
//!
//! An operator built on this crate is a *declaration*: its CRD types, one handler per phase, a
//! template directory for the child resource, a status mapping file and a config struct. The
//! primitives below carry everything else.
#![deny(missing_docs)]

pub mod audit;
pub mod backoff;
pub mod condition;
pub mod config;
pub mod finalizer;
pub mod glob;
pub mod lock;
pub mod own_writes;
pub mod phase;
pub mod runtime;
pub mod status;
pub mod template;
pub mod yaml;
