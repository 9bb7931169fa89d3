//! What a PipelineRun's status says, read through the status mapping file.
//!
//! The phase rules and field paths live in `templates/workflowexecution/tekton/status.yaml`
//! ([`crate::templates::STATUS_MAPPING`]); this module turns their answers into typed values for
//! the reconciler: a [`RunPhase`] and the `status.pipelineRunStatus` summary.
//!
//! Guarantees:
//! 1. Pure: the same run (and TaskRuns) always give the same observation.
//! 2. A mapping that selects no phase, or a value that is not a [`RunPhase`], reads as
//!    [`RunPhase::Running`]: the WorkflowExecution keeps waiting rather than guessing an outcome.
//! 3. Timestamps that do not parse are treated as absent, never as an error.
//!
//! Caveats:
//! 1. `completedTasks` is counted from the TaskRuns when they are given (those the mapping's
//!    `grandchildren.finished` says ended); Tekton's PipelineRun status does not carry the number
//!    itself.
//! 2. `executionStarted` is likewise only known from TaskRuns: whether a step of one ran is the
//!    mapping's `grandchildren.ran` ([`steps_ran`]). Without TaskRuns it is left out, which means
//!    "not seen", not "did not run".
use std::collections::BTreeMap;

use jiff::Timestamp;
use kubernaut_framework::status::StatusMapping;
use serde_json::Value;

use crate::types::PipelineRunStatusSummary;

kubernaut_framework::string_enum! {
    /// Where a PipelineRun is in its life, as the status mapping reads it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RunPhase {
        /// Not started by Tekton yet.
        Pending = "Pending",
        /// Started, not finished.
        Running = "Running",
        /// Finished successfully (`Succeeded=True`).
        Completed = "Completed",
        /// Finished unsuccessfully (`Succeeded=False`).
        Failed = "Failed",
    }
}

impl RunPhase {
    /// Whether the run has finished.
    pub fn is_finished(self) -> bool {
        matches!(self, RunPhase::Completed | RunPhase::Failed)
    }
}

/// Everything the reconciler needs from one look at a PipelineRun.
#[derive(Debug, Clone, PartialEq)]
pub struct RunObservation {
    /// The run's phase.
    pub phase: RunPhase,
    /// The summary for `status.pipelineRunStatus`.
    pub summary: PipelineRunStatusSummary,
    /// When Tekton started the run.
    pub start_time: Option<Timestamp>,
    /// When the run finished.
    pub completion_time: Option<Timestamp>,
}

/// Reads `run` through `mapping`; `task_runs` (by name), when given, supply `completedTasks`.
pub fn observe_run(
    mapping: &StatusMapping,
    run: &Value,
    task_runs: Option<&BTreeMap<String, Value>>,
) -> RunObservation {
    let phase = mapping
        .phase(run)
        .and_then(RunPhase::from_name)
        .unwrap_or(RunPhase::Running);
    let fields = mapping.fields(run);
    let summary = PipelineRunStatusSummary {
        status: string_field(&fields, "status"),
        reason: string_field(&fields, "reason"),
        message: string_field(&fields, "message"),
        completed_tasks: task_runs.map(|trs| completed_task_count(mapping, run, trs)),
        // A pipeline has at least one task: 0 means it is not resolved yet, not "no tasks".
        total_tasks: fields
            .get("totalTasks")
            .and_then(Value::as_u64)
            .filter(|n| *n > 0)
            .and_then(|n| u32::try_from(n).ok()),
        execution_started: task_runs
            .is_some_and(|trs| steps_ran(mapping, trs))
            .then_some(true),
    };
    RunObservation {
        phase,
        summary,
        start_time: timestamp_field(&fields, "startTime"),
        completion_time: timestamp_field(&fields, "completionTime"),
    }
}

/// Whether a step of any of `task_runs` ran, by the mapping's `grandchildren.ran` rules.
pub fn steps_ran(mapping: &StatusMapping, task_runs: &BTreeMap<String, Value>) -> bool {
    task_runs.values().any(|tr| mapping.grandchild_ran(tr))
}

/// A string field of the mapping's output (numbers and booleans are written as text).
pub fn string_field(fields: &BTreeMap<String, Value>, name: &str) -> Option<String> {
    match fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A timestamp field of the mapping's output; `None` when absent or not RFC 3339.
pub fn timestamp_field(fields: &BTreeMap<String, Value>, name: &str) -> Option<Timestamp> {
    fields.get(name)?.as_str()?.parse().ok()
}

fn completed_task_count(
    mapping: &StatusMapping,
    run: &Value,
    task_runs: &BTreeMap<String, Value>,
) -> u32 {
    let finished = mapping
        .grandchild_names(run)
        .into_iter()
        .filter(|(_, name)| {
            task_runs
                .get(name)
                .is_some_and(|tr| mapping.grandchild_finished(tr))
        })
        .count();
    u32::try_from(finished).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::templates::load_status_mapping;

    fn mapping() -> StatusMapping {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../templates/workflowexecution");
        load_status_mapping(&dir).unwrap()
    }

    #[test]
    fn total_tasks_count_the_resolved_pipeline_not_the_task_runs_started_so_far() {
        let mapping = mapping();
        // Two tasks and a finally task; only the first TaskRun exists yet.
        let run = json!({"status": {
            "startTime": "2026-12-02T06:33:12Z",
            "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running"}],
            "childReferences": [{"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "a"}],
            "pipelineSpec": {
                "tasks": [{"name": "a"}, {"name": "b"}],
                "finally": [{"name": "cleanup"}],
            },
        }});
        assert_eq!(
            observe_run(&mapping, &run, None).summary.total_tasks,
            Some(3)
        );
        // Without finally tasks.
        let mut no_finally = run.clone();
        no_finally["status"]["pipelineSpec"]
            .as_object_mut()
            .unwrap()
            .remove("finally");
        assert_eq!(
            observe_run(&mapping, &no_finally, None).summary.total_tasks,
            Some(2)
        );
        // Still resolving the bundle: unknown, not zero.
        let mut resolving = run;
        resolving["status"]
            .as_object_mut()
            .unwrap()
            .remove("pipelineSpec");
        assert_eq!(
            observe_run(&mapping, &resolving, None).summary.total_tasks,
            None
        );
    }
}
