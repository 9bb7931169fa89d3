//! `workflowexecution-operator` command line.
fn main() {}
