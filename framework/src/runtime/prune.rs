//! Building blocks of the prune functions handed to [`super::Operator::prune_children`] and
//! [`super::Operator::grandchildren`]: what a cached object may lose.
//!
//! Guarantees:
//! 1. Identity, labels, `metadata.creationTimestamp` and every field not named stay untouched.
//! 2. An object whose last annotation is dropped has none (`None`, not an empty map), as the
//!    API server would return it.
use kube::api::DynamicObject;
use serde_json::Value;

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
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.retain(|key, _| keep_annotation(key));
        if annotations.is_empty() {
            object.metadata.annotations = None;
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
}
