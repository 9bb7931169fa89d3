//! Effects: what follows a status change — Events, log lines, audit records and metric updates —
//! listed by a phase handler in its [`Outcome`] and applied by a [`Reporter`] only after the
//! status write that reached it ([`lifecycle::commit`]).
//!
//! An operator declares only its own vocabulary: its metric updates (a type, applied by
//! [`MetricUpdates`] on its metrics) and its audit actions (a type, turned into its audit record by
//! [`AuditRecord`]). Events go through the runtime's recorder, log lines through `tracing`,
//! audit records through the framework's [`Auditor`].
//!
//! ```
//! # use kube::runtime::events::EventType;
//! # use kubernaut_framework::{effect::Effect, lifecycle::Outcome, runtime::Action};
//! #[derive(Debug, PartialEq)]
//! enum Metric { Finished }
//! #[derive(Debug, PartialEq)]
//! enum Audited { Completed }
//!
//! let done: Outcome<&str, Effect<Metric, Audited>> = Outcome::write("Completed", Action::await_change())
//!     .metric(Metric::Finished)
//!     .log("the job completed")
//!     .event(EventType::Normal, "JobCompleted", "The job completed")
//!     .audit(Audited::Completed);
//! assert_eq!(done.event_reasons(), ["JobCompleted"]);
//! assert_eq!(done.audits(), [&Audited::Completed]);
//! ```
//!
//! # Guarantees
//! 1. [`Reporter`] applies an effect once, about the object it is given (the object as the
//!    status write returned it), in the order the outcome lists it.
//! 2. Applying never fails and never waits: an Event is published beside the reconcile
//!    ([`Context::publish_detached`]), an audit record is handed to the sink, which buffers it.
//!
//! # Caveats
//! 1. Log lines name the object in the field `object` (`namespace/name`).
//! 2. An Event's `action` is its `reason`.
//!
//! [`lifecycle::commit`]: crate::lifecycle::commit

use std::sync::Arc;

use kube::{
    Resource,
    runtime::events::{Event, EventType},
};
use serde::Serialize;
use tracing::{info, warn};

use crate::{
    audit::Auditor,
    lifecycle::{Effects, Outcome},
    names::namespaced_name,
    runtime::Context,
};

/// Something that follows a status change, reported once by the pass that wrote it: `M` are the
/// operator's metric updates, `A` its audit actions.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect<M, A> {
    /// A Kubernetes Event about the object.
    Event {
        /// `Normal` or `Warning`.
        type_: EventType,
        /// The Event's reason (also its action).
        reason: &'static str,
        /// The Event's note.
        note: String,
    },
    /// A log line about the object.
    Log {
        /// Logged as a warning rather than as information.
        warning: bool,
        /// The line.
        message: String,
    },
    /// An audit record of the object in its new status.
    Audit(A),
    /// A metric update.
    Metric(M),
}

impl<M, A> Effect<M, A> {
    /// An Event of `type_` with `reason` and `note`.
    pub fn event(type_: EventType, reason: &'static str, note: impl Into<String>) -> Self {
        Effect::Event {
            type_,
            reason,
            note: note.into(),
        }
    }
}

/// The effects added to an [`Outcome`] by name.
impl<S, M, A> Outcome<S, Effect<M, A>> {
    /// Adds an Event.
    #[must_use]
    pub fn event(self, type_: EventType, reason: &'static str, note: impl Into<String>) -> Self {
        self.with(Effect::event(type_, reason, note))
    }

    /// Adds an information log line.
    #[must_use]
    pub fn log(self, message: impl Into<String>) -> Self {
        self.with(Effect::Log {
            warning: false,
            message: message.into(),
        })
    }

    /// Adds a warning log line.
    #[must_use]
    pub fn warn(self, message: impl Into<String>) -> Self {
        self.with(Effect::Log {
            warning: true,
            message: message.into(),
        })
    }

    /// Adds an audit record of `action`.
    #[must_use]
    pub fn audit(self, action: A) -> Self {
        self.with(Effect::Audit(action))
    }

    /// Adds a metric update.
    #[must_use]
    pub fn metric(self, update: M) -> Self {
        self.with(Effect::Metric(update))
    }

    /// The reasons of the Events this outcome publishes, in order.
    pub fn event_reasons(&self) -> Vec<&'static str> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    /// The audit actions this outcome records, in order.
    pub fn audits(&self) -> Vec<&A> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Audit(action) => Some(action),
                _ => None,
            })
            .collect()
    }

    /// The metric updates this outcome applies, in order.
    pub fn metric_updates(&self) -> Vec<&M> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Metric(update) => Some(update),
                _ => None,
            })
            .collect()
    }
}

/// An operator's metrics, updated by its own metric updates about an object of kind `K`.
pub trait MetricUpdates<K> {
    /// The operator's metric updates.
    type Update;

    /// Applies `update` about `object`.
    fn update(&self, object: &K, update: Self::Update);
}

/// An operator's audit record about an object of kind `K`: what the framework's [`Auditor`]
/// carries.
pub trait AuditRecord<K>: Serialize + Send + 'static {
    /// The operator's audited actions.
    type Action;

    /// The record of `action` about `object` in its current status.
    fn record(object: &K, action: Self::Action) -> Self;
}

/// Applies effects about objects of kind `K`: Events through the runtime's recorder, log lines
/// through `tracing`, audit records `R` through `auditor`, metric updates through `metrics`.
pub struct Reporter<'a, K, D, R, M>
where
    K: Resource<DynamicType = ()> + 'static,
{
    context: &'a Arc<Context<K, D>>,
    auditor: &'a Auditor<R>,
    metrics: &'a M,
}

impl<'a, K, D, R, M> Reporter<'a, K, D, R, M>
where
    K: Resource<DynamicType = ()> + 'static,
{
    /// A reporter publishing Events through `context`, recording to `auditor`, updating
    /// `metrics`.
    pub fn new(context: &'a Arc<Context<K, D>>, auditor: &'a Auditor<R>, metrics: &'a M) -> Self {
        Self {
            context,
            auditor,
            metrics,
        }
    }
}

impl<K, D, R, M> Effects<K, Effect<M::Update, R::Action>> for Reporter<'_, K, D, R, M>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    D: Send + Sync + 'static,
    R: AuditRecord<K>,
    M: MetricUpdates<K>,
{
    fn apply(&self, object: &K, effect: Effect<M::Update, R::Action>) {
        match effect {
            Effect::Event {
                type_,
                reason,
                note,
            } => {
                let event = Event {
                    type_,
                    reason: reason.to_owned(),
                    note: Some(note),
                    action: reason.to_owned(),
                    secondary: None,
                };
                self.context.publish_detached(object, event);
            }
            Effect::Log {
                warning: false,
                message,
            } => info!(object = %namespaced_name(object), "{message}"),
            Effect::Log {
                warning: true,
                message,
            } => warn!(object = %namespaced_name(object), "{message}"),
            Effect::Audit(action) => self.auditor.record(R::record(object, action)),
            Effect::Metric(update) => self.metrics.update(object, update),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use prometheus::Registry;

    use super::*;
    use crate::{
        audit::{AuditSettings, Producer},
        runtime::Action,
        testing::Scenario,
    };

    type Outcome = crate::lifecycle::Outcome<u8, Effect<u32, &'static str>>;

    #[test]
    fn the_builder_lists_effects_in_the_order_they_were_added() {
        let outcome = Outcome::write(1, Action::await_change())
            .metric(7)
            .warn("careful")
            .event(EventType::Warning, "Failed", "it failed")
            .audit("failed")
            .log("done");
        assert_eq!(
            outcome.effects,
            [
                Effect::Metric(7),
                Effect::Log {
                    warning: true,
                    message: "careful".to_owned()
                },
                Effect::event(EventType::Warning, "Failed", "it failed"),
                Effect::Audit("failed"),
                Effect::Log {
                    warning: false,
                    message: "done".to_owned()
                },
            ]
        );
        assert_eq!(outcome.event_reasons(), ["Failed"]);
        assert_eq!(outcome.audits(), [&"failed"]);
        assert_eq!(outcome.metric_updates(), [&7]);
    }

    /// Records the updates it is given, with the name of the object they are about.
    #[derive(Default)]
    struct Counted(Mutex<Vec<(String, u32)>>);

    impl MetricUpdates<ConfigMap> for Counted {
        type Update = u32;

        fn update(&self, object: &ConfigMap, update: u32) {
            let name = namespaced_name(object);
            self.0.lock().unwrap().push((name, update));
        }
    }

    #[derive(Serialize)]
    struct Record {
        name: String,
        action: &'static str,
    }

    impl AuditRecord<ConfigMap> for Record {
        type Action = &'static str;

        fn record(object: &ConfigMap, action: &'static str) -> Self {
            Record {
                name: namespaced_name(object),
                action,
            }
        }
    }

    #[tokio::test]
    async fn each_effect_goes_to_its_sink_about_the_object_given() {
        let (client, scenario) = Scenario::start(Vec::new());
        let context = Arc::new(Context::<ConfigMap>::for_tests(client, ()).unwrap());
        let registry = Registry::new();
        let producer = Producer {
            metric_prefix: "test",
            user_agent: "test",
        };
        let auditor =
            Auditor::<Record>::new(&AuditSettings::default(), &producer, &registry).unwrap();
        let metrics = Counted::default();
        let object = ConfigMap {
            metadata: ObjectMeta {
                name: Some("cm".to_owned()),
                namespace: Some("ns".to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let reporter = Reporter::new(&context, &auditor, &metrics);
        reporter.apply(&object, Effect::Metric(3));
        reporter.apply(&object, Effect::Audit("changed"));
        reporter.apply(
            &object,
            Effect::event(EventType::Normal, "Changed", "it changed"),
        );
        reporter.apply(
            &object,
            Effect::Log {
                warning: false,
                message: "changed".to_owned(),
            },
        );
        assert_eq!(*metrics.0.lock().unwrap(), [("ns/cm".to_owned(), 3)]);
        let written = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "test_audit_events_written_total")
            .map(|f| f.get_metric()[0].get_counter().value());
        assert_eq!(written, Some(1.0), "the log sink wrote the one record");
        drop(context);
        let served = scenario.finish().await;
        assert!(served.bodies.is_empty());
        assert_eq!(served.event_reasons(), ["Changed"]);
        assert_eq!(served.events[0]["note"], "it changed");
        assert_eq!(served.events[0]["action"], "Changed");
    }
}
