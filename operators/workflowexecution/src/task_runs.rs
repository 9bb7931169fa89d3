//! What the operator keeps of a run's grandchildren (the objects that carry its failure facts,
//! as the engine's status mapping names them: `grandchildren.child`).
//!
//! The framework finds and reads them as the engine's status mapping says
//! ([`kubernaut_framework::status::grandchildren`], [`StatusMapping::read_grandchildren`]); while
//! a run runs they come from the runtime's grandchild cache, whose watch reconciles the
//! WorkflowExecution on every change. This module decides when to record that work of the run
//! ran ([`learn_step_ran`]) and what of a cached grandchild to keep ([`project_cached_task_run`]).
use std::collections::BTreeMap;

use kube::api::DynamicObject;
use kubernaut_framework::runtime::prune::project;
use kubernaut_framework::status::{Projection, StatusMapping};
use serde_json::Value;

use crate::pipelinerun::{ANNOTATION_WORKFLOW_EXECUTION, keeps_label};
use crate::types::PipelineRunStatusSummary;

/// Whether to record now that work of the unfinished run ran: `stored` (the WFE's
/// `pipelineRunStatus`) does not say so yet and work ran in one of `task_runs` (its
/// grandchildren).
///
/// Recorded as soon as it is seen: an engine may rewrite what it stopped (a step that started in
/// the same second as its grandchild's creation then looks like one that never started, and the
/// mapping's `ran` rules cannot tell them apart); what was seen while it ran is the only sure
/// evidence. The record is progress: held within `status.progressInterval` like the rest of the
/// run's summary, every later pass of this process decides from it, and it rides on the next
/// write (see `controller::progress`).
pub fn learn_step_ran(
    mapping: &StatusMapping,
    task_runs: &BTreeMap<String, Value>,
    stored: Option<&PipelineRunStatusSummary>,
) -> bool {
    let known = stored.and_then(|s| s.execution_started) == Some(true);
    !known && task_runs.values().any(|tr| mapping.grandchild_ran(tr))
}

/// Keeps of a cached grandchild what the reconciler reads: identity (name, `creationTimestamp`
/// …), the operator's labels ([`keeps_label`]), the owner's full name (how the runtime maps it
/// to its WorkflowExecution) and what the engine's status mapping reads (`projection`:
/// [`StatusMapping::grandchild_projection`], e.g. of a TaskRun its `Succeeded` condition, its
/// steps' states and its completion time, plus the `ownerLabel`).
pub fn project_cached_task_run(task_run: &mut DynamicObject, projection: &Projection) {
    project(task_run, projection, keeps_label, |key| {
        key == ANNOTATION_WORKFLOW_EXECUTION
    });
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A cached grandchild keeps what the mapping reads, the operator's labels and the owner's
    /// name, nothing else.
    #[test]
    fn projection_keeps_what_the_mapping_reads() {
        let mapping = crate::testing::load_status_mapping(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../templates/workflowexecution"),
        )
        .unwrap();
        let projection = mapping.grandchild_projection().unwrap();
        let mut task_run: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "metadata": {"name": "t", "labels": {"kubernaut.ai/workflow-execution": "w",
                                                 "tekton.dev/pipelineRun": "r",
                                                 "tekton.dev/task": "x"},
                         "annotations": {ANNOTATION_WORKFLOW_EXECUTION: "wfe", "other": "x"}},
            "spec": {"params": []},
            "status": {"conditions": [{"type": "Succeeded", "status": "True",
                                       "reason": "Succeeded", "lastTransitionTime": "t"}],
                       "steps": [{"name": "s", "container": "step-s",
                                  "terminated": {"reason": "Completed", "exitCode": 0,
                                                 "startedAt": "a", "finishedAt": "b"}}],
                       "podName": "p", "results": [], "taskSpec": {}},
        }))
        .unwrap();
        project_cached_task_run(&mut task_run, &projection);
        assert_eq!(
            task_run.data,
            json!({"status": {
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
                "steps": [{"name": "s", "terminated": {"reason": "Completed", "exitCode": 0,
                                                       "startedAt": "a"}}]
            }})
        );
        assert_eq!(
            task_run.metadata.labels.unwrap().keys().collect::<Vec<_>>(),
            ["kubernaut.ai/workflow-execution", "tekton.dev/pipelineRun"]
        );
        assert_eq!(
            task_run
                .metadata
                .annotations
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            [ANNOTATION_WORKFLOW_EXECUTION]
        );
    }
}
