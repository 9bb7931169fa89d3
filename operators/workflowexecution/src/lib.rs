//! The Kubernaut WorkflowExecution operator.
#![deny(missing_docs)]
