//! Reading a run's TaskRuns (the children of the PipelineRun) from the API server.
//!
//! The reconciler needs them for three facts: why a run failed ([`read`], then
//! [`crate::failure::failure_details`]), whether a step of it ran ([`learn_step_ran`] while it
//! runs, [`of_deleted_run`] once it is gone) and whether one is held back
//! ([`crate::failure::held_back`]); the rules are the status mapping's `grandchildren` section.
//! While the run runs, its TaskRuns come from the runtime's grandchild cache ([`cached`], pruned
//! by [`prune_cached_task_run`]), whose watch reconciles the WorkflowExecution on every change.
//!
//! Which TaskRuns are the run's is the mapping's to say ([`StatusMapping::grandchild_lookup`]): the
//! names the run lists (Tekton's `childReferences`), or — a mapping whose `grandchildren` have an
//! `ownerLabel` and no `names`, as a Job's pods — the objects carrying that label with the run's
//! name. [`cached_of_run`] and [`read_of_run`] find them either way; [`cached`] and [`read`] take
//! the names directly.
//!
//! Guarantees:
//! 1. [`read`] is one GET per TaskRun named, in order; [`read_of_run`] is that, or one
//!    label-selected LIST; [`of_deleted_run`] is one label-selected LIST; [`cached`] and
//!    [`cached_of_run`] make no API call.
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
use kubernaut_framework::{
    runtime::KindStores,
    status::{GrandchildLookup, StatusMapping},
};
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
    read_by(api, &named(names)).await
}

/// The TaskRuns of `run` (a whole object) that still exist, by name, found as the mapping says
/// ([`StatusMapping::grandchild_lookup`]): a GET per name the run lists, or one LIST by the
/// owner label. None without a `grandchildren` section.
///
/// # Errors
/// An API error other than not-found.
pub async fn read_of_run(
    api: &Api<DynamicObject>,
    mapping: &StatusMapping,
    run: &Value,
) -> kube::Result<BTreeMap<String, Value>> {
    match mapping.grandchild_lookup(run) {
        Some(lookup) => read_by(api, &lookup).await,
        None => Ok(BTreeMap::new()),
    }
}

async fn read_by(
    api: &Api<DynamicObject>,
    lookup: &GrandchildLookup,
) -> kube::Result<BTreeMap<String, Value>> {
    let mut task_runs = BTreeMap::new();
    match lookup {
        GrandchildLookup::Named(names) => {
            for (_, name) in names {
                if let Some(tr) = api.get_opt(name).await? {
                    task_runs.insert(name.clone(), whole(&tr));
                }
            }
        }
        GrandchildLookup::Labelled { .. } => {
            let selector = lookup.label_selector().unwrap_or_default();
            let list = api.list(&ListParams::default().labels(&selector)).await?;
            task_runs.extend(list.items.iter().map(|tr| (tr.name_any(), whole(tr))));
        }
    }
    Ok(task_runs)
}

/// The TaskRuns `names` of a run in `namespace` as the grandchild cache holds them (pruned by
/// [`prune_cached_task_run`]), by name; names not in the cache are left out.
pub fn cached(
    stores: &KindStores,
    resource: &ApiResource,
    namespace: &str,
    names: impl IntoIterator<Item = String>,
) -> BTreeMap<String, Value> {
    cached_by(stores, resource, namespace, &named(names))
}

/// The TaskRuns of `run` (a whole object) in `namespace` as the grandchild cache holds them, by
/// name, found as the mapping says ([`StatusMapping::grandchild_lookup`]): the names the run
/// lists, or the cached objects whose owner label carries the run's name. None without a
/// `grandchildren` section.
pub fn cached_of_run(
    stores: &KindStores,
    resource: &ApiResource,
    namespace: &str,
    mapping: &StatusMapping,
    run: &Value,
) -> BTreeMap<String, Value> {
    mapping
        .grandchild_lookup(run)
        .map(|lookup| cached_by(stores, resource, namespace, &lookup))
        .unwrap_or_default()
}

fn cached_by(
    stores: &KindStores,
    resource: &ApiResource,
    namespace: &str,
    lookup: &GrandchildLookup,
) -> BTreeMap<String, Value> {
    match lookup {
        GrandchildLookup::Named(names) => names
            .iter()
            .filter_map(|(_, name)| {
                let reference = ObjectRef::new_with(name, resource.clone()).within(namespace);
                let task_run = stores.get(&reference)?;
                Some((name.clone(), whole(&task_run)))
            })
            .collect(),
        GrandchildLookup::Labelled { label, value } => stores
            .of(resource)
            .map(Store::state)
            .unwrap_or_default()
            .iter()
            .filter(|tr| {
                tr.metadata.namespace.as_deref() == Some(namespace)
                    && tr.labels().get(label) == Some(value)
            })
            .map(|tr| (tr.name_any(), whole(tr)))
            .collect(),
    }
}

/// A lookup of the TaskRuns `names`, numbered in their order.
fn named(names: impl IntoIterator<Item = String>) -> GrandchildLookup {
    GrandchildLookup::Named((0u32..).zip(names).collect())
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

#[cfg(test)]
mod tests {
    use kube::runtime::{reflector::store::Writer, watcher};
    use serde_json::json;

    use super::*;

    const TEKTON: &str = "../../templates/workflowexecution/tekton/status.yaml";

    fn mapping(grandchildren: &str) -> StatusMapping {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let tekton = std::fs::read_to_string(root.join(TEKTON)).unwrap();
        let head = tekton.split("\ngrandchildren:").next().unwrap();
        StatusMapping::from_yaml(
            &format!("{head}\n{grandchildren}"),
            &crate::templates::mapping_rules(),
        )
        .unwrap()
    }

    fn object(namespace: &str, name: &str, labels: Value, created: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels,
                         "creationTimestamp": created},
            "status": {"phase": "Running"},
        }))
        .unwrap()
    }

    fn store(resource: &ApiResource, objects: Vec<DynamicObject>) -> KindStores {
        let mut writer = Writer::new(resource.clone());
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        KindStores::new([(resource.clone(), writer.as_reader())])
    }

    /// A mapping whose grandchildren have an owner label and no names finds the cached ones by
    /// that label, in the run's namespace only; one with names finds exactly the names listed.
    #[test]
    fn cached_grandchildren_are_found_by_label_or_by_the_names_the_run_lists() {
        let resource = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        let label = "batch.kubernetes.io/job-name";
        let store = store(
            &resource,
            vec![
                object(
                    "exec",
                    "job-1-b",
                    json!({label: "job-1"}),
                    "2025-06-01T11:50:02Z",
                ),
                object(
                    "exec",
                    "job-1-a",
                    json!({label: "job-1"}),
                    "2025-06-01T11:50:03Z",
                ),
                object(
                    "exec",
                    "job-2-a",
                    json!({label: "job-2"}),
                    "2025-06-01T11:50:01Z",
                ),
                object(
                    "other",
                    "job-1-c",
                    json!({label: "job-1"}),
                    "2025-06-01T11:50:01Z",
                ),
                object("exec", "tr-1", json!({}), "2025-06-01T11:50:01Z"),
            ],
        );
        let by_label = mapping(&format!(
            "grandchildren:\n  child: {{apiVersion: v1, kind: Pod}}\n  ownerLabel: {label}\n  \
             ran: ['$.status']\n"
        ));
        let job = json!({"metadata": {"name": "job-1", "namespace": "exec"}});
        let found = cached_of_run(&store, &resource, "exec", &by_label, &job);
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["job-1-a", "job-1-b"],
            "the label's value is the run's name; another namespace's pods are not its"
        );
        assert_eq!(found["job-1-a"]["metadata"]["name"], "job-1-a", "whole");
        assert_eq!(
            by_label.grandchild_order(&job, &found),
            [(0, "job-1-b".to_owned()), (1, "job-1-a".to_owned())],
            "in creation order"
        );

        let by_name = mapping(
            "grandchildren:\n  child: {apiVersion: v1, kind: Pod}\n  names: '$.status.pods[*]'\n  \
             ownerLabel: x/y\n  ran: ['$.status']\n",
        );
        let run = json!({"metadata": {"name": "job-1"}, "status": {"pods": ["tr-1", "gone"]}});
        let found = cached_of_run(&store, &resource, "exec", &by_name, &run);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["tr-1"]);
        assert_eq!(
            found,
            cached(
                &store,
                &resource,
                "exec",
                ["tr-1".to_owned(), "gone".to_owned()]
            )
        );
    }
}
