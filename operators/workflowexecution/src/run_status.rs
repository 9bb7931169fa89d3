//! What a run's status says, read through its engine's status mapping.
//!
//! The mapping's phase rules and field paths live in each engine's `status.yaml`; the framework
//! evaluates them once per reconcile ([`StatusMapping::read`], a [`Reading`]) and this module
//! deserializes the answers into the operator's own types: a [`RunPhase`], the projected
//! [`RunFields`] and the `status.pipelineRunStatus` summary ([`observe`]). No field of any
//! engine's is named here.
//!
//! Guarantees:
//! 1. Pure: the same reading always gives the same observation.
//! 2. A mapping that selects no phase, or a value that is not a [`RunPhase`], reads as
//!    [`RunPhase::Running`]: the WorkflowExecution keeps waiting rather than guessing an outcome.
//! 3. Timestamps that do not parse are treated as absent, never as an error.
//!
//! Caveats:
//! 1. `completedTasks` is counted from the grandchildren when they were read (those the
//!    mapping's `grandchildren.finished` says ended); a run's own status need not carry the
//!    number.
//! 2. `executionStarted` is likewise only known from the grandchildren: whether work ran in one
//!    is the mapping's `grandchildren.ran` ([`StatusMapping::work_ran`]). Without them it is left
//!    out, which means "not seen", not "did not run".
use std::collections::BTreeMap;

use jiff::Timestamp;
use kubernaut_framework::status::{Reading, StatusMapping, fields_as, lenient};
use serde::Deserialize;
use serde_json::Value;

use crate::types::PipelineRunStatusSummary;

kubernaut_framework::string_enum! {
    /// Where a run is in its life, as the status mapping reads it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum RunPhase {
        /// Not started by its engine yet.
        Pending = "Pending",
        /// Started, not finished.
        Running = "Running",
        /// Finished successfully.
        Completed = "Completed",
        /// Finished unsuccessfully.
        Failed = "Failed",
    }
}

impl RunPhase {
    /// Whether the run has finished.
    pub fn is_finished(self) -> bool {
        matches!(self, RunPhase::Completed | RunPhase::Failed)
    }
}

/// The fields the status mapping projects out of a run or its failed grandchild (its `fields`
/// and `grandchildren.fields`), typed. A value of another shape reads as absent — numbers and
/// booleans as text — never as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFields {
    /// The outcome condition's status (`True`, `False`, `Unknown`).
    #[serde(default, deserialize_with = "lenient::text")]
    pub status: Option<String>,
    /// The outcome condition's reason.
    #[serde(default, deserialize_with = "lenient::text")]
    pub reason: Option<String>,
    /// The outcome condition's message.
    #[serde(default, deserialize_with = "lenient::text")]
    pub message: Option<String>,
    /// When it started.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub start_time: Option<Timestamp>,
    /// When it finished.
    #[serde(default, deserialize_with = "lenient::timestamp")]
    pub completion_time: Option<Timestamp>,
    /// How many tasks the resolved pipeline has.
    #[serde(default, deserialize_with = "lenient::count")]
    pub total_tasks: Option<u32>,
}

/// Everything the reconciler needs from one reading of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunObservation {
    /// The run's phase.
    pub phase: RunPhase,
    /// The summary for `status.pipelineRunStatus`.
    pub summary: PipelineRunStatusSummary,
    /// When the engine started the run.
    pub start_time: Option<Timestamp>,
    /// When the run finished.
    pub completion_time: Option<Timestamp>,
    /// The run's kind, as messages name it (the mapping's `child`).
    pub kind: String,
    /// What carries its failure facts, as messages name it (the mapping's `grandchildren.child`;
    /// `task` when it has none).
    pub part: String,
}

/// Reads `run` through `mapping`; `grandchildren` (by name), when given, supply
/// `completedTasks` and `executionStarted`.
pub fn observe_run(
    mapping: &StatusMapping,
    run: &Value,
    grandchildren: Option<&BTreeMap<String, Value>>,
) -> RunObservation {
    let mut reading = mapping.read(run);
    reading.grandchildren = grandchildren.map(|found| mapping.read_grandchildren(run, found));
    observe(mapping, &reading)
}

/// The observation of a run `reading` (evaluated once per reconcile) made with `mapping`.
pub fn observe(mapping: &StatusMapping, reading: &Reading) -> RunObservation {
    let fields: RunFields = fields_as(&reading.fields);
    let grandchildren = reading.grandchildren.as_ref();
    let summary = PipelineRunStatusSummary {
        completed_tasks: grandchildren.map(|g| u32::try_from(g.finished).unwrap_or(u32::MAX)),
        // A pipeline has at least one task: 0 means it is not resolved yet, not "no tasks".
        total_tasks: fields.total_tasks.filter(|n| *n > 0),
        execution_started: grandchildren.is_some_and(|g| g.work_ran).then_some(true),
        status: fields.status,
        reason: fields.reason,
        message: fields.message,
    };
    RunObservation {
        phase: reading
            .phase
            .as_deref()
            .and_then(RunPhase::from_name)
            .unwrap_or(RunPhase::Running),
        summary,
        start_time: fields.start_time,
        completion_time: fields.completion_time,
        kind: mapping.child().kind.clone(),
        part: part_kind(mapping).to_owned(),
    }
}

/// The kind of the mapping's grandchildren (`task` when it has none), as messages name them.
pub fn part_kind(mapping: &StatusMapping) -> &str {
    mapping
        .grandchild_kind()
        .map_or("task", |k| k.kind.as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::load_status_mapping;

    fn mapping() -> StatusMapping {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../templates/workflowexecution");
        load_status_mapping(&dir).unwrap()
    }

    /// The projected fields deserialize into the operator's types leniently: a value of another
    /// shape is absent (numbers and booleans are text), unknown fields are ignored.
    #[test]
    fn projected_fields_deserialize_leniently() {
        // (what, fields, expected)
        let cases = [
            (
                "all present",
                json!({"status": "False", "reason": "Failed", "message": "m",
                       "startTime": "2026-12-02T06:33:12Z", "completionTime": "2026-12-02T06:34:12Z",
                       "totalTasks": 2}),
                RunFields {
                    status: Some("False".to_owned()),
                    reason: Some("Failed".to_owned()),
                    message: Some("m".to_owned()),
                    start_time: Some("2026-12-02T06:33:12Z".parse().unwrap()),
                    completion_time: Some("2026-12-02T06:34:12Z".parse().unwrap()),
                    total_tasks: Some(2),
                },
            ),
            (
                "numbers and booleans as text",
                json!({"reason": 42, "message": true}),
                RunFields {
                    reason: Some("42".to_owned()),
                    message: Some("true".to_owned()),
                    ..RunFields::default()
                },
            ),
            (
                "other shapes are absent",
                json!({"status": ["x"], "startTime": "yesterday", "completionTime": 5,
                       "totalTasks": 5_000_000_000_u64, "reason": null, "somethingElse": 1}),
                RunFields::default(),
            ),
        ];
        for (what, fields, expected) in cases {
            let map = fields.as_object().unwrap().clone().into_iter().collect();
            assert_eq!(fields_as::<RunFields>(&map), expected, "{what}");
        }
        for phase in [
            RunPhase::Pending,
            RunPhase::Running,
            RunPhase::Completed,
            RunPhase::Failed,
        ] {
            assert_eq!(RunPhase::from_name(phase.as_str()), Some(phase));
        }
        assert_eq!(RunPhase::from_name("Succeeded"), None);
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
