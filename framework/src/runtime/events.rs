//! Reporting: Events and logs for decode failures, failed reconciles and template reloads.
//!
//! # Guarantees
//! 1. Publishing an Event never fails the caller: failures are logged and dropped (Events are
//!    best-effort in Kubernetes too).
//! 2. Notes are cut to the events.k8s.io limit on a character boundary, so an overlong error
//!    message cannot make the API reject the Event.
//! 3. Every template reload outcome other than `Unchanged` is logged, counted in
//!    `framework_template_reloads_total{outcome}` and published: `Normal TemplateReloaded` or
//!    `Warning TemplateRejected` (a broken edit is reported once: the store reports it once).
//! 4. Failed-reconcile Events ([`ErrorEvents`]) aggregate per object, reason *and note*: the same
//!    error published again within [`SERIES_TTL`] of its last occurrence bumps the `series` of the
//!    Event already published (one patch), a different error gets an Event of its own. (kube's
//!    `Recorder` keys its series without the note, so a second, different error within six
//!    minutes would only count up under the first error's note.)

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use k8s_openapi::{
    api::{
        core::v1::ObjectReference,
        events::v1::{Event as K8sEvent, EventSeries},
    },
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client, Resource,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
    core::error_boundary::InvalidObject,
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;

use super::{Context, FrameworkMetrics, metrics};
use crate::template::{ReloadOutcome, TemplateStore};

/// Longest Event note the events.k8s.io API accepts.
const EVENT_NOTE_MAX: usize = 1024;

/// Logs, counts and publishes (as a Warning Event) an object that failed to deserialize.
pub(crate) fn report_invalid<K, D>(context: &Context<K, D>, object: InvalidObject)
where
    K: Resource<DynamicType = ()> + 'static,
{
    context.metrics.decode_errors.inc();
    let meta = &object.metadata;
    tracing::error!(
        kind = %K::kind(&()),
        namespace = meta.namespace.as_deref().unwrap_or_default(),
        name = meta.name.as_deref().unwrap_or_default(),
        resource_version = meta.resource_version.as_deref().unwrap_or_default(),
        error = %object.error,
        "object cannot be decoded; it is skipped until it is fixed"
    );
    let reference = ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "DecodeFailed".into(),
        note: Some(format!(
            "{} cannot be decoded and is ignored until fixed: {}",
            K::kind(&()),
            object.error
        )),
        action: "Decode".into(),
        secondary: None,
    };
    let recorder = context.recorder.clone();
    tokio::spawn(async move { publish_event(&recorder, &reference, event).await });
}

pub(crate) async fn publish_event(
    recorder: &Recorder,
    reference: &ObjectReference,
    mut event: Event,
) {
    if let Some(note) = event.note.as_mut() {
        truncate_note(note);
    }
    if let Err(error) = recorder.publish(&event, reference).await {
        tracing::warn!(
            %error,
            reason = %event.reason,
            regarding = reference.name.as_deref().unwrap_or_default(),
            "publishing an Event failed"
        );
    }
}

/// How long after its last occurrence an error Event is continued as a series rather than
/// published anew (what kube's `Recorder` uses).
pub(crate) const SERIES_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(6);

/// Which Event a repeated error continues: the object, the reason and the note.
type SeriesKey = (ObjectKey, String, String);
type ObjectKey = (Option<String>, Option<String>, Option<String>);

/// An Event already published, continued while its error repeats.
#[derive(Clone, Debug)]
struct Published {
    namespace: String,
    name: String,
    count: i32,
    last: jiff::Timestamp,
}

/// Publishes `Warning` Events about failed reconciles, aggregated per object, reason and note.
pub(crate) struct ErrorEvents {
    client: Client,
    controller: String,
    instance: String,
    published: Mutex<HashMap<SeriesKey, Published>>,
}

impl ErrorEvents {
    /// Events reported as `controller` (`reportingController`) from `instance`
    /// (`reportingInstance`).
    pub(crate) fn new(client: Client, controller: String, instance: String) -> Self {
        Self {
            client,
            controller,
            instance,
            published: Mutex::new(HashMap::new()),
        }
    }

    /// Publishes a `Warning` Event about `regarding`, or counts one more occurrence of the same
    /// one; failures are logged, never returned (Events are best-effort).
    pub(crate) async fn publish(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        mut note: String,
    ) {
        truncate_note(&mut note);
        let now = jiff::Timestamp::now();
        let key: SeriesKey = (
            (
                regarding.namespace.clone(),
                regarding.name.clone(),
                regarding.uid.clone(),
            ),
            reason.to_owned(),
            note.clone(),
        );
        let previous = {
            let mut published = self.lock();
            published.retain(|_, event| event.last + SERIES_TTL > now);
            published.get(&key).cloned()
        };
        let continued = match previous {
            // An Event that is gone (deleted, expired) is published anew.
            Some(previous) => self.continue_series(previous, now).await.ok(),
            None => None,
        };
        let result = match continued {
            Some(published) => Ok(published),
            None => self.create(regarding, reason, action, note, now).await,
        };
        match result {
            Ok(published) => {
                self.lock().insert(key, published);
            }
            Err(error) => tracing::warn!(
                %error,
                reason,
                regarding = regarding.name.as_deref().unwrap_or_default(),
                "publishing an Event failed"
            ),
        }
    }

    async fn create(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
        now: jiff::Timestamp,
    ) -> Result<Published, kube::Error> {
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some("Warning".to_owned()),
            reason: Some(reason.to_owned()),
            action: Some(action.to_owned()),
            note: Some(note),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        Ok(Published {
            namespace,
            name,
            count: 1,
            last: now,
        })
    }

    async fn continue_series(
        &self,
        previous: Published,
        now: jiff::Timestamp,
    ) -> Result<Published, kube::Error> {
        // The API counts a series from 2: the first occurrence is the Event itself.
        let count = previous.count.saturating_add(1).max(2);
        let series = EventSeries {
            count,
            last_observed_time: MicroTime(now),
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &previous.namespace);
        api.patch(
            &previous.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "series": series })),
        )
        .await?;
        Ok(Published {
            count,
            last: now,
            ..previous
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SeriesKey, Published>> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Cuts an Event note to the API's limit on a character boundary.
fn truncate_note(note: &mut String) {
    if note.len() > EVENT_NOTE_MAX {
        let mut end = EVENT_NOTE_MAX - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
}

/// An `ObjectReference` to this process's Pod, from the `POD_NAME` and `POD_NAMESPACE`
/// environment variables (downward API); `None` when either is unset.
pub fn pod_reference_from_env() -> Option<ObjectReference> {
    let name = std::env::var("POD_NAME").ok().filter(|v| !v.is_empty())?;
    let namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|v| !v.is_empty())?;
    Some(ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name),
        namespace: Some(namespace),
        uid: std::env::var("POD_UID").ok().filter(|v| !v.is_empty()),
        ..ObjectReference::default()
    })
}

/// Consumes the template store's reload outcomes: log, metric and Event for each change.
pub(crate) async fn watch_templates(
    store: Arc<TemplateStore>,
    poll: Duration,
    reference: Option<ObjectReference>,
    recorder: Recorder,
    metrics: FrameworkMetrics,
) {
    let mut outcomes = store.watch(poll);
    while let Some(outcome) = outcomes.recv().await {
        let event = match outcome {
            ReloadOutcome::Unchanged => continue,
            ReloadOutcome::Loaded { revision } => {
                metrics
                    .template_reloads
                    .with_label_values(&[metrics::OUTCOME_LOADED])
                    .inc();
                tracing::info!(%revision, "templates reloaded");
                Event {
                    type_: EventType::Normal,
                    reason: "TemplateReloaded".into(),
                    note: Some(format!("loaded template revision {revision}")),
                    action: "ReloadTemplates".into(),
                    secondary: None,
                }
            }
            ReloadOutcome::Rejected {
                kept_revision,
                error,
            } => {
                metrics
                    .template_reloads
                    .with_label_values(&[metrics::OUTCOME_REJECTED])
                    .inc();
                tracing::warn!(%kept_revision, %error, "changed templates rejected; the previous revision keeps serving");
                Event {
                    type_: EventType::Warning,
                    reason: "TemplateRejected".into(),
                    note: Some(format!(
                        "changed templates rejected, revision {kept_revision} keeps serving: {error}"
                    )),
                    action: "ReloadTemplates".into(),
                    secondary: None,
                }
            }
        };
        if let Some(reference) = &reference {
            publish_event(&recorder, reference, event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_notes_are_cut_on_a_char_boundary() {
        let cases = [
            ("short", "x".repeat(10), 10),
            ("at the limit", "x".repeat(EVENT_NOTE_MAX), EVENT_NOTE_MAX),
            ("ascii over", "x".repeat(EVENT_NOTE_MAX + 1), EVENT_NOTE_MAX),
            (
                "multibyte over",
                "é".repeat(EVENT_NOTE_MAX),
                EVENT_NOTE_MAX - 1,
            ),
        ];
        for (name, mut note, want_len) in cases {
            truncate_note(&mut note);
            assert_eq!(note.len(), want_len, "{name}");
            assert!(note.len() <= EVENT_NOTE_MAX, "{name}");
        }
    }
}
