//! Reading a run's TaskRuns (the children of the PipelineRun) from the API server.
//!
//! The reconciler needs them for two facts: why a run failed ([`read`], then
//! [`crate::failure::failure_details`]) and whether a step of it ran ([`learn_step_ran`] while
//! it runs, [`of_deleted_run`] once it is gone; the rules are the status mapping's
//! `grandchildren` section).
//!
//! Guarantees:
//! 1. One GET per TaskRun named, in order; [`any_step_ran`] stops at the first TaskRun in which a
//!    step ran. [`of_deleted_run`] is one label-selected LIST.
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
    api::{DynamicObject, ListParams},
};
use kubernaut_framework::status::StatusMapping;
use serde_json::Value;

use crate::run_status::child_task_runs;
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

/// Whether a step of one of the TaskRuns `names` ran (`grandchildren.ran` of `mapping`).
///
/// # Errors
/// An API error other than not-found.
pub async fn any_step_ran(
    api: &Api<DynamicObject>,
    mapping: &StatusMapping,
    names: impl IntoIterator<Item = String>,
) -> kube::Result<bool> {
    for name in names {
        if let Some(tr) = api.get_opt(&name).await?
            && mapping.grandchild_ran(&whole(&tr))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether to record now that a step of the unfinished `run` ran: asked of its TaskRuns only
/// when `stored` (the WFE's `pipelineRunStatus`) does not say so yet and the run's summary
/// changed (`observed` differs from `stored`, a TaskRun appeared or finished). The status is
/// written then anyway, so remembering the fact costs reads, never an extra write.
///
/// # Errors
/// An API error other than not-found.
pub async fn learn_step_ran(
    api: &Api<DynamicObject>,
    mapping: &StatusMapping,
    run: &Value,
    stored: Option<&PipelineRunStatusSummary>,
    observed: &PipelineRunStatusSummary,
) -> kube::Result<bool> {
    let stored = stored.cloned().unwrap_or_default();
    if stored.execution_started == Some(true) {
        return Ok(false);
    }
    let changed = PipelineRunStatusSummary {
        execution_started: stored.execution_started,
        ..observed.clone()
    } != stored;
    if !changed {
        return Ok(false);
    }
    let names = child_task_runs(run).into_iter().map(|(_, name)| name);
    any_step_ran(api, mapping, names).await
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
