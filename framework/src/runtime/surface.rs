//! Surfacing failed reconciles on the object itself: a `Warning` `ReconcileError` Event when an
//! error starts or changes, and the `ReconcileBackoff` status condition (the last error), resolved
//! once a reconcile succeeds again.
//!
//! # Guarantees
//! 1. Best effort, never in the way: a failure to publish or patch is logged and does not change
//!    the reconcile's outcome.
//! 2. No clobbering: the condition is written with a merge patch on the status subresource that
//!    carries the resourceVersion of the cached object it was computed from; a conflict is simply
//!    dropped (the next failed attempt or success recomputes it). Other conditions are kept as
//!    they are.
//! 3. Writes follow what the condition *says*: it is written only when its status, reason,
//!    message or observed generation differ from the object's — a streak of one repeated error is
//!    one write, not one per attempt — and a `True` condition keeps its transition time while it
//!    stays `True`. A successful reconcile writes only if the object still shows
//!    `ReconcileBackoff=True`.
//! 4. At most one Event per failed attempt, and only for an attempt whose error differs from the
//!    previous attempt's (or starts the streak); the same error again later continues the same
//!    Event's series ([`super::events::ErrorEvents`]).
//! 5. Neither write triggers the next attempt: both change only the object's status (or another
//!    object), which the runtime's backoff hold ignores ([`crate::backoff`]).
//!
//! # Assumptions
//! 1. The parent keeps metav1 Conditions in `status.conditions` (a CRD without that field simply
//!    prunes the write).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::Context;
use crate::backoff::{CONDITION_TYPE, ErrorAttempt, REASON_ERROR, resolved_condition};

/// Publish a Warning Event (when the error is new) and set `ReconcileBackoff=True` for a failed
/// attempt.
pub(crate) async fn report<K, D>(
    context: &Context<K, D>,
    key: &ObjectRef<K>,
    attempt: &ErrorAttempt,
    kind: &str,
) where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let Some(object) = context.parents.get(key) else {
        return;
    };
    if attempt.error_changed {
        // No attempt number or delay in the note: the same error again must be the same Event.
        let note = format!(
            "reconcile failed ({kind}), retried with exponential backoff: {}",
            attempt.last_error
        );
        context
            .error_events
            .publish(&object.object_ref(&()), REASON_ERROR, "Reconcile", note)
            .await;
    }
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
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
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

/// `conditions` with `condition` set, or `None` when they already say what it says. A condition
/// whose status does not change keeps its transition time.
fn with_condition(mut conditions: Vec<Condition>, condition: Condition) -> Option<Vec<Condition>> {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) if says_the_same(existing, &condition) => return None,
        Some(existing) if existing.status == condition.status => {
            *existing = Condition {
                last_transition_time: existing.last_transition_time.clone(),
                ..condition
            };
        }
        Some(existing) => *existing = condition,
        None => conditions.push(condition),
    }
    Some(conditions)
}

/// Whether two conditions of one type say the same: the transition time is when it became so,
/// not part of what it says.
fn says_the_same(a: &Condition, b: &Condition) -> bool {
    a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
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
    let Some(conditions) = with_condition(conditions_of(object), condition) else {
        return;
    };
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn condition(type_: &str, status: &str, message: &str, at: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: message.into(),
            last_transition_time: Time(jiff::Timestamp::from_second(at).unwrap()),
            observed_generation: Some(1),
        }
    }

    /// Each case: the conditions on the object, the one to set, and what is written (`None`:
    /// nothing).
    #[test]
    fn a_condition_is_written_only_when_what_it_says_changes() {
        let other = condition("Ready", "True", "fine", 1);
        type Case = (
            &'static str,
            Vec<Condition>,
            Condition,
            Option<Vec<Condition>>,
        );
        let cases: [Case; 5] = [
            (
                "absent: added beside the others",
                vec![other.clone()],
                condition("ReconcileBackoff", "True", "boom", 10),
                Some(vec![
                    other.clone(),
                    condition("ReconcileBackoff", "True", "boom", 10),
                ]),
            ),
            (
                "same message, another transition time: nothing to write",
                vec![condition("ReconcileBackoff", "True", "boom", 10)],
                condition("ReconcileBackoff", "True", "boom", 20),
                None,
            ),
            (
                "a different error: rewritten, still True since the first",
                vec![condition("ReconcileBackoff", "True", "boom", 10)],
                condition("ReconcileBackoff", "True", "bang", 20),
                Some(vec![condition("ReconcileBackoff", "True", "bang", 10)]),
            ),
            (
                "resolved: a new transition time",
                vec![condition("ReconcileBackoff", "True", "boom", 10)],
                condition("ReconcileBackoff", "False", "ok", 30),
                Some(vec![condition("ReconcileBackoff", "False", "ok", 30)]),
            ),
            (
                "another generation is news",
                vec![condition("ReconcileBackoff", "True", "boom", 10)],
                Condition {
                    observed_generation: Some(2),
                    ..condition("ReconcileBackoff", "True", "boom", 20)
                },
                Some(vec![Condition {
                    observed_generation: Some(2),
                    ..condition("ReconcileBackoff", "True", "boom", 10)
                }]),
            ),
        ];
        for (name, existing, new, want) in cases {
            assert_eq!(with_condition(existing, new), want, "{name}");
        }
    }
}
