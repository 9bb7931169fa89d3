//! Finding a child's grandchildren, from the API server or from the runtime's grandchild cache,
//! the way its status mapping says ([`StatusMapping::grandchild_lookup`]): the names the child
//! lists, or — a `grandchildren` section with an `ownerLabel` and no `names`, as a Job's pods —
//! the objects carrying that label with the child's name.
//!
//! # Guarantees
//!
//! 1. [`read`] is one GET per name the child lists, in order, or one label-selected LIST;
//!    [`read_of_deleted`] is one label-selected LIST; [`cached`] makes no API call.
//! 2. A grandchild that no longer exists is skipped, never an error: grandchildren are
//!    garbage-collected after their child.
//! 3. Grandchildren are handed on as whole documents, `metadata` included ([`whole`]), as the
//!    mapping's paths expect.
//! 4. Without a `grandchildren` section there is nothing to find: no API call, an empty map.
use std::collections::BTreeMap;

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams},
    runtime::reflector::ObjectRef,
};
use serde_json::Value;

use super::{GrandchildLookup, StatusMapping};
use crate::runtime::KindStores;

/// The grandchildren of `child` (a whole object) that still exist, by name.
///
/// # Errors
/// An API error other than not-found.
pub async fn read(
    api: &Api<DynamicObject>,
    mapping: &StatusMapping,
    child: &Value,
) -> kube::Result<BTreeMap<String, Value>> {
    let mut found = BTreeMap::new();
    match mapping.grandchild_lookup(child) {
        None => {}
        Some(GrandchildLookup::Named(names)) => {
            for (_, name) in names {
                if let Some(object) = api.get_opt(&name).await? {
                    found.insert(name, whole(&object));
                }
            }
        }
        Some(lookup @ GrandchildLookup::Labelled { .. }) => {
            let selector = lookup.label_selector().unwrap_or_default();
            let list = api.list(&ListParams::default().labels(&selector)).await?;
            found.extend(list.items.iter().map(|g| (g.name_any(), whole(g))));
        }
    }
    Ok(found)
}

/// The grandchildren of `child` (a whole object) in `namespace` as the grandchild cache holds
/// them, by name; those not in the cache are left out.
pub fn cached(
    stores: &KindStores,
    resource: &ApiResource,
    namespace: &str,
    mapping: &StatusMapping,
    child: &Value,
) -> BTreeMap<String, Value> {
    match mapping.grandchild_lookup(child) {
        None => BTreeMap::new(),
        Some(GrandchildLookup::Named(names)) => names
            .into_iter()
            .filter_map(|(_, name)| {
                let reference = ObjectRef::new_with(&name, resource.clone()).within(namespace);
                let object = stores.get(&reference)?;
                Some((name, whole(&object)))
            })
            .collect(),
        Some(GrandchildLookup::Labelled { label, value }) => stores
            .of(resource)
            .map(|store| {
                // Matched on the metadata the cache keeps: only the matches are thawed.
                store.matching(|frozen| {
                    frozen.namespace() == Some(namespace)
                        && frozen.label(&label).as_deref() == Some(value.as_str())
                })
            })
            .unwrap_or_default()
            .iter()
            .map(|g| (g.name_any(), whole(g)))
            .collect(),
    }
}

/// The grandchildren still present of a child called `child_name` that is gone, found by the
/// mapping's `grandchildren.ownerLabel` (none when the mapping declares no such label).
///
/// # Errors
/// An API error.
pub async fn read_of_deleted(
    api: &Api<DynamicObject>,
    mapping: &StatusMapping,
    child_name: &str,
) -> kube::Result<BTreeMap<String, Value>> {
    let Some(label) = mapping.grandchild_owner_label() else {
        return Ok(BTreeMap::new());
    };
    let list = api
        .list(&ListParams::default().labels(&format!("{label}={child_name}")))
        .await?;
    Ok(list
        .items
        .iter()
        .map(|g| (g.name_any(), whole(g)))
        .collect())
}

/// An object as one JSON document, `metadata` included (`DynamicObject::data` holds everything
/// but `metadata`): the mapping's paths may read its name, labels or `creationTimestamp`.
pub fn whole(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or_else(|_| object.data.clone())
}

#[cfg(test)]
mod tests {
    use kube::runtime::watcher;

    use crate::runtime::ChildWriter;
    use serde_json::json;

    use super::*;
    use crate::status::MappingRules;

    fn mapping(grandchildren: &str) -> StatusMapping {
        let head = "child: {apiVersion: batch/v1, kind: Job}\n";
        StatusMapping::from_yaml(&format!("{head}{grandchildren}"), &MappingRules::default())
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
        let mut writer = ChildWriter::new(resource.clone());
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        KindStores::new([(resource.clone(), writer.as_reader())])
    }

    /// A mapping whose grandchildren have an owner label and no names finds the cached ones by
    /// that label, in the child's namespace only; one with names finds exactly the names listed;
    /// one without the section finds nothing.
    #[test]
    fn cached_grandchildren_are_found_by_label_or_by_the_names_the_child_lists() {
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
        let found = cached(&store, &resource, "exec", &by_label, &job);
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["job-1-a", "job-1-b"],
            "the label's value is the child's name; another namespace's pods are not its"
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
        let found = cached(&store, &resource, "exec", &by_name, &run);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["tr-1"]);

        assert!(cached(&store, &resource, "exec", &mapping(""), &run).is_empty());
    }
}
