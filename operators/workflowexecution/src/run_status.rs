//! What a PipelineRun's status says, read through the status mapping file.
//!
//! The phase rules and field paths live in `templates/workflowexecution/tekton/status.yaml`
//! ([`crate::templates::STATUS_MAPPING`]); this module deserializes their answers into the
//! operator's own types: a [`RunPhase`], the projected [`RunFields`] and the
//! `status.pipelineRunStatus` summary. No field of Tekton's is named here.
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
use serde::{Deserialize, Deserializer};
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

/// The fields the status mapping projects out of a run or one of its TaskRuns (its `fields`
/// and `grandchildren.fields`), typed. A value of another shape reads as absent — numbers and
/// booleans as text — never as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunFields {
    /// The outcome condition's status (`True`, `False`, `Unknown`).
    #[serde(default, deserialize_with = "text")]
    pub status: Option<String>,
    /// The outcome condition's reason.
    #[serde(default, deserialize_with = "text")]
    pub reason: Option<String>,
    /// The outcome condition's message.
    #[serde(default, deserialize_with = "text")]
    pub message: Option<String>,
    /// When it started.
    #[serde(default, deserialize_with = "timestamp")]
    pub start_time: Option<Timestamp>,
    /// When it finished.
    #[serde(default, deserialize_with = "timestamp")]
    pub completion_time: Option<Timestamp>,
    /// How many tasks the resolved pipeline has.
    #[serde(default, deserialize_with = "count")]
    pub total_tasks: Option<u32>,
}

impl RunFields {
    /// The mapping's fields of `run`.
    pub fn of_run(mapping: &StatusMapping, run: &Value) -> RunFields {
        RunFields::from_map(mapping.fields(run))
    }

    /// The mapping's grandchild fields of `task_run`.
    pub fn of_task_run(mapping: &StatusMapping, task_run: &Value) -> RunFields {
        RunFields::from_map(mapping.grandchild_fields(task_run))
    }

    fn from_map(fields: BTreeMap<String, Value>) -> RunFields {
        // Every field deserializes leniently and unknown ones are ignored, so a map always
        // deserializes; the default is only the type system's due.
        serde_json::from_value(Value::Object(fields.into_iter().collect())).unwrap_or_default()
    }
}

/// Text: a string, or a number or boolean written as text.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    })
}

/// An RFC 3339 timestamp; anything else is absent.
fn timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Timestamp>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok()))
}

/// A count that fits a `u32`; anything else is absent.
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok()))
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
    /// The run's kind, as messages name it (the mapping's `child`).
    pub kind: String,
    /// What carries its failure facts, as messages name it (the mapping's `grandchildren.child`;
    /// `task` when it has none).
    pub part: String,
}

/// Reads `run` through `mapping`; `task_runs` (by name), when given, supply `completedTasks`.
pub fn observe_run(
    mapping: &StatusMapping,
    run: &Value,
    task_runs: Option<&BTreeMap<String, Value>>,
) -> RunObservation {
    observe(mapping, run, &RunFields::of_run(mapping, run), task_runs)
}

/// [`observe_run`] with the run's fields already projected, so that one reconcile evaluates
/// the mapping's fields once.
pub fn observe(
    mapping: &StatusMapping,
    run: &Value,
    fields: &RunFields,
    task_runs: Option<&BTreeMap<String, Value>>,
) -> RunObservation {
    let phase = mapping
        .phase(run)
        .and_then(RunPhase::from_name)
        .unwrap_or(RunPhase::Running);
    let summary = PipelineRunStatusSummary {
        status: fields.status.clone(),
        reason: fields.reason.clone(),
        message: fields.message.clone(),
        completed_tasks: task_runs.map(|trs| completed_task_count(mapping, run, trs)),
        // A pipeline has at least one task: 0 means it is not resolved yet, not "no tasks".
        total_tasks: fields.total_tasks.filter(|n| *n > 0),
        execution_started: task_runs
            .is_some_and(|trs| steps_ran(mapping, trs))
            .then_some(true),
    };
    RunObservation {
        phase,
        summary,
        start_time: fields.start_time,
        completion_time: fields.completion_time,
        kind: mapping.child().kind.clone(),
        part: mapping
            .grandchild_kind()
            .map_or_else(|| "task".to_owned(), |k| k.kind.clone()),
    }
}

/// Whether a step of any of `task_runs` ran, by the mapping's `grandchildren.ran` rules.
///
/// A mapping without a `grandchildren` section cannot tell whether the child's work ran before
/// it failed or went away, so it counts as having run: the failure is an execution failure
/// (`wasExecutionFailure: true`), which blocks the target until someone clears it rather than
/// re-running a workflow that may have changed it.
pub fn steps_ran(mapping: &StatusMapping, task_runs: &BTreeMap<String, Value>) -> bool {
    !mapping.reads_grandchildren() || task_runs.values().any(|tr| mapping.grandchild_ran(tr))
}

fn completed_task_count(
    mapping: &StatusMapping,
    run: &Value,
    task_runs: &BTreeMap<String, Value>,
) -> u32 {
    let finished = mapping
        .grandchild_order(run, task_runs)
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
            assert_eq!(RunFields::from_map(map), expected, "{what}");
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
