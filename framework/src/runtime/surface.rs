//! Surfacing failed reconciles on the object itself: a `Warning` Event per failed attempt and the
//! `ReconcileBackoff` status condition (attempt, next attempt, last error), resolved once a
//! reconcile succeeds again.
//!
//! # Guarantees
//! 1. Best effort, never in the way: a failure to publish or patch is logged at debug level and
//!    does not change the reconcile's outcome.
//! 2. No clobbering: the condition is written with a merge patch on the status subresource that
//!    carries the resourceVersion of the cached object it was computed from; a conflict is simply
//!    dropped (the next reconcile recomputes it). Other conditions are kept as they are.
//! 3. No write when nothing changed: a successful reconcile writes only if the object still shows
//!    `ReconcileBackoff=True`.
//!
//! # Assumptions
//! 1. The parent keeps metav1 Conditions in `status.conditions` (a CRD without that field simply
//!    prunes the write).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::{
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use serde::Serialize;
use serde_json::{Value, json};

use super::Context;
use crate::backoff::{CONDITION_TYPE, ErrorAttempt, resolved_condition};

/// Publish a Warning Event and set `ReconcileBackoff=True` for a failed attempt.
pub(crate) async fn report<K, D>(
    context: &Context<K, D>,
    key: &ObjectRef<K>,
    attempt: &ErrorAttempt,
    kind: &str,
) where
    K: Resource<DynamicType = ()> + Clone + Serialize + Send + Sync + 'static,
{
    let Some(object) = context.parents.get(key) else {
        return;
    };
    let note = format!(
        "reconcile attempt {} failed ({kind}); retrying in {:?}: {}",
        attempt.attempt, attempt.delay, attempt.last_error
    );
    context
        .publish(
            &object.object_ref(&()),
            Event {
                type_: EventType::Warning,
                reason: "ReconcileError".into(),
                note: Some(note),
                action: "Reconcile".into(),
                secondary: None,
            },
        )
        .await;
    write_condition(
        context,
        &*object,
        attempt.condition(object.meta().generation),
    )
    .await;
}

/// After a successful reconcile: flip a `ReconcileBackoff=True` condition to `False`.
pub(crate) async fn resolve<K, D>(context: &Context<K, D>, key: &ObjectRef<K>)
where
    K: Resource<DynamicType = ()> + Clone + Serialize + Send + Sync + 'static,
{
    let Some(object) = context.parents.get(key) else {
        return;
    };
    let failing = conditions_of(&*object)
        .iter()
        .any(|c| c.type_ == CONDITION_TYPE && c.status == "True");
    if failing {
        let condition = resolved_condition(object.meta().generation, jiff::Timestamp::now());
        write_condition(context, &*object, condition).await;
    }
}

fn conditions_of<K: Serialize>(object: &K) -> Vec<Condition> {
    serde_json::to_value(object)
        .ok()
        .and_then(|v| {
            let list = v.get("status")?.get("conditions")?.clone();
            serde_json::from_value(list).ok()
        })
        .unwrap_or_default()
}

async fn write_condition<K, D>(context: &Context<K, D>, object: &K, condition: Condition)
where
    K: Resource<DynamicType = ()> + Serialize + 'static,
{
    let (Some(namespace), Some(resource_version)) = (object.namespace(), object.resource_version())
    else {
        return;
    };
    let mut conditions = conditions_of(object);
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) if *existing == condition => return,
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
    let resource = ApiResource::erase::<K>(&());
    let api: Api<DynamicObject> =
        Api::namespaced_with(context.client.clone(), &namespace, &resource);
    let patch: Value = json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {"conditions": conditions},
    });
    if let Err(error) = api
        .patch_status(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        tracing::debug!(%error, object = %object.name_any(), "could not write the ReconcileBackoff condition");
    }
}
