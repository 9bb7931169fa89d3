//! Building blocks of the prune functions handed to [`super::Operator::prune_children`],
//! [`super::Operator::children_pruned`] and [`super::Operator::grandchildren`]: what a cached
//! object may lose.
//!
//! [`prune`] drops named parts; [`project`] keeps only what a status mapping reads
//! ([`Projection`]) and the object's identity. The cache then keeps what is left frozen
//! ([`FrozenObject`](super::FrozenObject): one compact JSON text, compressed, instead of a tree
//! of maps — a JSON object costs a B-tree node of about 600 bytes however few members it has).
//!
//! Guarantees:
//! 1. [`prune`]: identity, labels, `metadata.creationTimestamp` and every field not named stay
//!    untouched.
//! 2. [`project`]: identity stays (name, namespace, uid, resourceVersion, generation,
//!    creationTimestamp, deletionTimestamp and its grace period, finalizers); of the rest only what
//!    the projection keeps (labels and annotations also when the caller's predicate keeps them).
//! 3. An object whose last annotation (or label) is dropped has none (`None`, not an empty map),
//!    as the API server would return it.
use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;

use crate::status::Projection;

/// Drops `spec` and the `status` fields named in `status_fields` from `object`, and every
/// annotation whose key `keep_annotation` refuses.
pub fn prune(
    object: &mut DynamicObject,
    status_fields: &[&str],
    keep_annotation: impl Fn(&str) -> bool,
) {
    if let Some(fields) = object.data.as_object_mut() {
        fields.remove("spec");
    }
    if let Some(status) = object.data.get_mut("status").and_then(Value::as_object_mut) {
        for field in status_fields {
            status.remove(*field);
        }
    }
    retain(&mut object.metadata.annotations, keep_annotation);
}

/// Keeps of `object` its identity and what `projection` keeps (of the whole object, `metadata`
/// included, as the mapping reads it), plus the labels `keep_label` and the annotations
/// `keep_annotation` accept. Built once per watch event: a status mapping's
/// [`child_projection`](crate::status::StatusMapping::child_projection) evaluated over the
/// result reads what it reads over the whole object.
pub fn project(
    object: &mut DynamicObject,
    projection: &Projection,
    keep_label: impl Fn(&str) -> bool,
    keep_annotation: impl Fn(&str) -> bool,
) {
    let data = std::mem::take(&mut object.data);
    object.data = projection.apply(data);
    let metadata = &mut object.metadata;
    let kept = |field: &str| projection.keeps(&["metadata", field]);
    if !kept("ownerReferences") {
        metadata.owner_references = None;
    }
    if !kept("generateName") {
        metadata.generate_name = None;
    }
    if !kept("selfLink") {
        metadata.self_link = None;
    }
    if !kept("managedFields") {
        metadata.managed_fields = None;
    }
    keep_entries(projection, "labels", &mut metadata.labels, keep_label);
    keep_entries(
        projection,
        "annotations",
        &mut metadata.annotations,
        keep_annotation,
    );
}

/// Keeps the labels or annotations (`field`) that `keep` accepts or `projection` reads.
fn keep_entries(
    projection: &Projection,
    field: &str,
    map: &mut Option<BTreeMap<String, String>>,
    keep: impl Fn(&str) -> bool,
) {
    let path = ["metadata", field];
    if projection.keeps_whole(&path) || projection.keeps_every_member(&path) {
        return;
    }
    let named = projection.kept_members(&path);
    retain(map, |key| keep(key) || named.iter().any(|n| n == key));
}

/// Keeps the entries of `map` whose key `keep` accepts; `None` when none is left.
fn retain(map: &mut Option<BTreeMap<String, String>>, keep: impl Fn(&str) -> bool) {
    if let Some(entries) = map.as_mut() {
        entries.retain(|key, _| keep(key));
        if entries.is_empty() {
            *map = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The spec, the named status fields and the refused annotations go; the rest stays, and an
    /// object left without annotations has none.
    #[test]
    fn prune_drops_spec_named_status_fields_and_refused_annotations() {
        let object = |annotations: Value| -> DynamicObject {
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": annotations,
                             "creationTimestamp": "2025-06-01T11:50:02Z"},
                "spec": {"containers": []},
                "status": {"conditions": [], "results": [], "heavy": {}},
            }))
            .unwrap()
        };
        let mut pod = object(json!({"keep": "1", "drop": "2"}));
        prune(&mut pod, &["results", "heavy", "absent"], |key| {
            key == "keep"
        });
        assert_eq!(pod.data, json!({"status": {"conditions": []}}));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["a"], "b");
        assert!(pod.metadata.creation_timestamp.is_some());
        assert_eq!(
            pod.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            ["keep"]
        );
        let mut pod = object(json!({"drop": "2"}));
        prune(&mut pod, &[], |_| false);
        assert_eq!(pod.metadata.annotations, None);
        assert_eq!(pod.data["status"]["results"], json!([]));
    }

    /// Identity and what the projection reads stay; the spec, the status the mapping does not
    /// read, owner references and the labels and annotations neither the predicates nor the
    /// projection name go.
    #[test]
    fn project_keeps_identity_and_what_the_mapping_reads() {
        let mut run: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {
                "name": "r", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "generation": 1, "creationTimestamp": "2025-06-01T11:50:02Z",
                "deletionTimestamp": "2025-06-01T11:50:09Z", "finalizers": ["f"],
                "labels": {"ours/owner": "w", "tekton.dev/pipeline": "p", "read/by-mapping": "x"},
                "annotations": {"ours/name": "w", "other": "x"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "x"}]
            },
            "spec": {"params": []},
            "status": {"startTime": "t", "pipelineSpec": {"tasks": [{"name": "a"}]},
                       "provenance": {}}
        }))
        .unwrap();
        let whole = run.clone();
        let mut projection = Projection::default();
        projection.add(
            &jsonpath_rust::parser::parse_json_path("$.status.startTime").unwrap(),
            crate::status::Use::Value,
        );
        projection.add_member(&["metadata", "labels", "read/by-mapping"]);
        project(
            &mut run,
            &projection,
            |key| key.starts_with("ours/"),
            |key| key.starts_with("ours/"),
        );
        assert_eq!(run.data, json!({"status": {"startTime": "t"}}));
        let (meta, was) = (&run.metadata, &whole.metadata);
        assert_eq!(
            (
                &meta.name,
                &meta.namespace,
                &meta.uid,
                &meta.resource_version
            ),
            (&was.name, &was.namespace, &was.uid, &was.resource_version)
        );
        assert_eq!(meta.generation, was.generation);
        assert_eq!(meta.creation_timestamp, was.creation_timestamp);
        assert_eq!(meta.deletion_timestamp, was.deletion_timestamp);
        assert_eq!(meta.finalizers, was.finalizers);
        assert_eq!(meta.owner_references, None);
        let keys = |map: &Option<BTreeMap<String, String>>| {
            map.iter()
                .flat_map(|m| m.keys().cloned())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&meta.labels), ["ours/owner", "read/by-mapping"]);
        assert_eq!(keys(&meta.annotations), ["ours/name"]);
        assert_eq!(run.types, whole.types);
        project(&mut run, &projection, |_| false, |_| false);
        assert_eq!(keys(&run.metadata.labels), ["read/by-mapping"]);
        assert_eq!(run.metadata.annotations, None);
    }
}
