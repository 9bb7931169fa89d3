//! What the benchmarks share (`tests/src/bin/loadbench.rs`, `make bench`, on the Tekton simulator;
//! `tests/src/bin/tektonbench.rs`, `make bench-tekton`, on real Tekton): the release- or
//! debug-built operator as a process of its own, the API server's write counters, `/proc`
//! sampling, the benchmark's own watches, and one load phase that creates WorkflowExecutions and
//! measures them until they end.
//!
//! Start with [`load::load_phase`]: it takes a [`load::LoadSetup`] (the client, the running
//! [`process::OperatorProcess`], the [`load::Shared`] tracker fed by [`load::start_watches`]) and
//! returns a [`load::LoadResult`].
//!
//! Guarantees:
//! 1. Every request goes to the loopback control plane or the operator's loopback endpoints.
//! 2. Every request loop is bounded in count and in time (a deadline per phase); a phase that runs
//!    out of time reports what did not end as incomplete, never silently drops it.
//! 3. Latencies come from the benchmark's own watches on a millisecond clock; writes from the API
//!    server's `apiserver_request_total` before and after a phase.
//!
//! Assumptions:
//! 1. The client is an administrator of the control plane (it reads `/metrics`).
//! 2. Linux: CPU seconds and memory are read from `/proc`.
//!
//! Caveats:
//! 1. Everything shares the machine's cores: the figures are for this machine, measured side by
//!    side, not for a cluster.
//! 2. `apiserver_request_total` does not name the client: who made a write is read from its verb
//!    and resource ([`apiserver::is_operator_write`]), which holds only where one party writes
//!    each kind.

pub mod apiserver;
pub mod flags;
pub mod histogram;
pub mod load;
pub mod process;
pub mod report;
