//! The Kubernaut WorkflowExecution operator.
#![deny(missing_docs)]

pub mod app;
pub mod audit;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod controller;
pub mod decide;
pub mod engine;
pub mod failure;
pub mod metrics;
pub mod operator;
pub mod pipelinerun;
pub mod run_status;
pub mod templates;
#[cfg(test)]
#[path = "../tests/support/runs.rs"]
mod test_runs;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
pub mod types;
pub mod validate;
