//! One annotation set or removed on one exact object: a record kept on a child (say, that it is
//! kept as a block) must never land on a replacement of the same name.
//!
//! # Guarantees
//! 1. [`annotate_exact`] sends one JSON merge patch that carries the object's `uid`: the API
//!    server refuses it (`409 Conflict`) for another object of the same name, and nothing is
//!    written there.
//! 2. Only the one annotation is set or removed; nothing else of the object changes.
//!
//! # Caveats
//! 1. Without a `resourceVersion` the patch applies to whatever version of the object is current:
//!    the annotation is a record of its own, not a decision from the version read.

use std::fmt::Debug;

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;
use serde_json::json;

/// What [`annotate_exact`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Annotated {
    /// The annotation is set (or removed) on the object.
    Written,
    /// The object is gone, or another object took its name: nothing was written.
    Gone,
}

/// Sets annotation `key` of `object` to `value` (`None` removes it), on that very object: by
/// name through `api`, with its uid in the patch.
///
/// # Errors
///
/// The API error of the patch, unless it says the object is gone (`404`) or replaced (`409`).
pub async fn annotate_exact<K>(
    api: &Api<K>,
    object: &K,
    key: &str,
    value: Option<&str>,
) -> kube::Result<Annotated>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = json!({"metadata": {"uid": object.uid(), "annotations": {key: value}}});
    let params = PatchParams::default();
    match api
        .patch(&object.name_any(), &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Annotated::Written),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(Annotated::Gone),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use serde_json::Value;

    use super::*;
    use crate::testing::{Exchange, Scenario, status_body};

    const PATH: &str = "/api/v1/namespaces/ns/configmaps/cm";

    fn cm() -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("cm".to_owned()),
                namespace: Some("ns".to_owned()),
                uid: Some("uid-1".to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    async fn annotate(
        status: u16,
        body: Value,
        value: Option<&str>,
    ) -> (kube::Result<Annotated>, Value) {
        let (client, scenario) = Scenario::start(vec![Exchange::new("PATCH", PATH, status, body)]);
        let api: Api<ConfigMap> = Api::namespaced(client, "ns");
        let result = annotate_exact(&api, &cm(), "example.kubernaut.ai/block", value).await;
        drop(api);
        let served = scenario.finish().await;
        (result, served.bodies[0].clone())
    }

    #[tokio::test]
    async fn the_patch_names_the_uid_and_sets_or_removes_only_the_annotation() {
        let written = serde_json::to_value(cm()).unwrap();
        let (result, sent) = annotate(200, written.clone(), Some("kept")).await;
        assert_eq!(result.unwrap(), Annotated::Written);
        assert_eq!(
            sent,
            json!({"metadata": {"uid": "uid-1", "annotations": {"example.kubernaut.ai/block": "kept"}}})
        );
        let (_, sent) = annotate(200, written, None).await;
        assert_eq!(
            sent["metadata"]["annotations"]["example.kubernaut.ai/block"],
            Value::Null
        );
    }

    #[tokio::test]
    async fn a_gone_or_replaced_object_is_not_an_error_but_a_failed_patch_is() {
        for (code, expected) in [
            (404, Some(Annotated::Gone)),
            (409, Some(Annotated::Gone)),
            (500, None),
        ] {
            let (result, _) = annotate(code, status_body(code, "Reason"), Some("kept")).await;
            assert_eq!(result.ok(), expected, "{code}");
        }
    }
}
