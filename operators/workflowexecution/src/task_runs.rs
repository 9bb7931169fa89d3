//! What the operator keeps of a run's grandchildren (the objects that carry its failure facts,
//! as the engine's status mapping names them: `grandchildren.child`).
//!
//! The framework finds and reads them as the engine's status mapping says
//! ([`kubernaut_framework::status::grandchildren`], [`StatusMapping::read_grandchildren`]); while
//! a run runs they come from the runtime's grandchild cache, whose watch reconciles the
//! WorkflowExecution on every change. This module decides when to record that work of the run
//! ran ([`learn_step_ran`]) and what of a cached grandchild to keep ([`prune_cached_task_run`]).
use std::collections::BTreeMap;

use kube::api::DynamicObject;
use kubernaut_framework::runtime::prune::prune;
use kubernaut_framework::status::StatusMapping;
use serde_json::Value;

use crate::pipelinerun::ANNOTATION_WORKFLOW_EXECUTION;
use crate::types::PipelineRunStatusSummary;

/// What a cached grandchild's `status` may carry that the reconciler never reads: the resolved
/// spec and provenance an engine copies into it, results, sidecars, artifacts, tracing context.
pub const PRUNED_STATUS_FIELDS: [&str; 6] = [
    "taskSpec",
    "provenance",
    "results",
    "sidecars",
    "artifacts",
    "spanContext",
];

/// Whether to record now that work of the unfinished run ran: `stored` (the WFE's
/// `pipelineRunStatus`) does not say so yet and work ran in one of `task_runs` (its
/// grandchildren).
///
/// Recorded as soon as it is seen, at the cost of one status write when nothing else changed:
/// an engine may rewrite what it stopped (a step that started in the same second as its
/// grandchild's creation then looks like one that never started, and the mapping's `ran` rules
/// cannot tell them apart); what was seen while it ran is the only sure evidence.
pub fn learn_step_ran(
    mapping: &StatusMapping,
    task_runs: &BTreeMap<String, Value>,
    stored: Option<&PipelineRunStatusSummary>,
) -> bool {
    let known = stored.and_then(|s| s.execution_started) == Some(true);
    !known && task_runs.values().any(|tr| mapping.grandchild_ran(tr))
}

/// Drops what the reconciler never reads from a cached grandchild: its spec, the
/// [`PRUNED_STATUS_FIELDS`] of its status and every annotation but the owner's full name. Kept:
/// identity, labels, `creationTimestamp`, conditions, steps and times — everything the mapping's
/// `grandchildren` paths read.
pub fn prune_cached_task_run(task_run: &mut DynamicObject) {
    prune(task_run, &PRUNED_STATUS_FIELDS, |key| {
        key == ANNOTATION_WORKFLOW_EXECUTION
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A cached grandchild keeps what the mapping reads and the owner's name, nothing else.
    #[test]
    fn pruning_keeps_what_the_mapping_reads() {
        let mut pod: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"},
                         "annotations": {ANNOTATION_WORKFLOW_EXECUTION: "wfe", "other": "x"}},
            "spec": {"containers": []},
            "status": {"conditions": [], "results": [], "taskSpec": {}},
        }))
        .unwrap();
        prune_cached_task_run(&mut pod);
        assert_eq!(pod.data, json!({"status": {"conditions": []}}));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["a"], "b");
        assert_eq!(
            pod.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            [ANNOTATION_WORKFLOW_EXECUTION]
        );
    }
}
