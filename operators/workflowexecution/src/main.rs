//! `workflowexecution-operator` command line.
//!
//! ```text
//! workflowexecution-operator run [--config FILE] [--templates DIR]
//! workflowexecution-operator render --wfe FILE [--engine NAME] [--config FILE] [--templates DIR]
//!     [-o yaml|json]
//! workflowexecution-operator crd
//! workflowexecution-operator check-config [--config FILE] [--templates DIR]
//! workflowexecution-operator version
//! ```
//!
//! Exit codes: 0 success, 1 the command failed (the message on stderr says why), 2 bad usage.
//! The command line is the framework's (`kubernaut_framework::app`); what is the operator's own
//! is `workflowexecution_operator::app::WorkflowExecutionApp`.
use std::process::ExitCode;

fn main() -> ExitCode {
    kubernaut_framework::app::main::<workflowexecution_operator::app::WorkflowExecutionApp>()
}
