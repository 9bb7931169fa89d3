//! Reading a run's TaskRuns (the children of the PipelineRun) from the API server.
//!
//! The reconciler needs them for three facts: why a run failed ([`read`], then
//! [`crate::failure::failure_details`]), whether a step of it ran ([`learn_step_ran`] while it
//! runs, [`of_deleted_run`] once it is gone) and whether one is held back
//! ([`crate::failure::held_back`]); the rules are the status mapping's `grandchildren` section.
//! While the run runs, its TaskRuns come from the runtime's grandchild cache ([`cached`], pruned
//! by [`prune_cached_task_run`]), whose watch reconciles the WorkflowExecution on every change.
//!
//! Guarantees:
//! 1. [`read`] is one GET per TaskRun named, in order; [`of_deleted_run`] is one label-selected
//!    LIST; [`cached`] makes no API call.
//! 2. A TaskRun that no longer exists is skipped, never an error: TaskRuns are garbage-collected
//!    after their run.
//! 3. TaskRuns are handed on as whole documents (`metadata` included), as the mapping's paths
//!    expect.
//!
//! Caveats:
//! 1. A TaskRun read a moment after its run changed may already say more than the run did; the
//!    facts only ever move forward (a step that ran stays ran), so this is harmless.
use std::collections::BTreeMap;

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams},
    runtime::reflector::{ObjectRef, Store},
};
use kubernaut_framework::status::StatusMapping;
use serde_json::Value;

use crate::pipelinerun::ANNOTATION_WORKFLOW_EXECUTION;
use crate::types::PipelineRunStatusSummary;

/// The TaskRuns `names` that still exist, by name.
///
/// # Errors
/// An API error other than not-found.
pub async fn read(
    api: &Api<DynamicObject>,
    names: impl IntoIterator<Item = String>,
) -> kube::Result<BTreeMap<String, Value>> {
    let mut task_runs = BTreeMap::new();
    for name in names {
        if let Some(tr) = api.get_opt(&name).await? {
            task_runs.insert(name, whole(&tr));
        }
    }
    Ok(task_runs)
}

/// The TaskRuns `names` of a run in `namespace` as the grandchild cache holds them (pruned by
/// [`prune_cached_task_run`]), by name; names not in the cache are left out.
pub fn cached(
    store: &Store<DynamicObject>,
    resource: &ApiResource,
    namespace: &str,
    names: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Value> {
    names
        .into_iter()
        .filter_map(|name| {
            let reference = ObjectRef::new_with(&name, resource.clone()).within(namespace);
            let task_run = store.get(&reference)?;
            Some((name, whole(&task_run)))
        })
        .collect()
}

/// Whether to record now that a step of the unfinished run ran: `stored` (the WFE's
/// `pipelineRunStatus`) does not say so yet and a step of one of `task_runs` ran.
///
/// Recorded as soon as it is seen, at the cost of one status write when nothing else changed:
/// once Tekton stops a TaskRun it rewrites its steps, and a step that started in the same second
/// as its TaskRun's creation then looks like one that never started (the mapping's `ran` rules
/// cannot tell them apart); what was seen while it ran is the only sure evidence.
pub fn learn_step_ran(
    mapping: &StatusMapping,
    task_runs: &BTreeMap<String, Value>,
    stored: Option<&PipelineRunStatusSummary>,
) -> bool {
    let known = stored.and_then(|s| s.execution_started) == Some(true);
    !known && task_runs.values().any(|tr| mapping.grandchild_ran(tr))
}

/// Drops what the reconciler never reads from a cached TaskRun: its spec, the resolved task
/// spec and provenance Tekton copies into its status, results, sidecars and every annotation
/// but the owner's full name. Kept: identity, labels, `creationTimestamp`, conditions, steps and
/// times — everything the mapping's `grandchildren` paths read.
pub fn prune_cached_task_run(task_run: &mut DynamicObject) {
    if let Some(fields) = task_run.data.as_object_mut() {
        fields.remove("spec");
    }
    if let Some(status) = task_run
        .data
        .get_mut("status")
        .and_then(Value::as_object_mut)
    {
        for heavy in [
            "taskSpec",
            "provenance",
            "results",
            "sidecars",
            "artifacts",
            "spanContext",
        ] {
            status.remove(heavy);
        }
    }
    if let Some(annotations) = task_run.metadata.annotations.as_mut() {
        annotations.retain(|key, _| key == ANNOTATION_WORKFLOW_EXECUTION);
        if annotations.is_empty() {
            task_run.metadata.annotations = None;
        }
    }
}

/// The TaskRuns still present of a run that is gone, found by the mapping's
/// `grandchildren.ownerLabel` (none when the mapping declares no such label).
///
/// # Errors
/// An API error.
pub async fn of_deleted_run(
    api: &Api<DynamicObject>,
    mapping: &StatusMapping,
    run_name: &str,
) -> kube::Result<BTreeMap<String, Value>> {
    let Some(label) = mapping.grandchild_owner_label() else {
        return Ok(BTreeMap::new());
    };
    let list = api
        .list(&ListParams::default().labels(&format!("{label}={run_name}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .map(|tr| (tr.name_any(), whole(&tr)))
        .collect())
}

/// The TaskRun as one JSON document, `metadata` included: the mapping's paths may compare with
/// it (Tekton marks the steps it stopped before they started with the TaskRun's
/// `creationTimestamp`), and `DynamicObject::data` holds everything but `metadata`.
fn whole(tr: &DynamicObject) -> Value {
    serde_json::to_value(tr).unwrap_or_else(|_| tr.data.clone())
}
