//! Reflectors that run on every replica: they fill the parent store and each child and grandchild
//! kind's store, isolate objects
//! that fail to deserialize, and fan watch events out to whichever controller term is running.
//!
//! # Guarantees
//! 1. An object that fails to deserialize into `K` never ends or stalls the watch: it is
//!    reported (by the caller's `report` hook: log, metric, Event) once per resourceVersion and kept
//!    out of the store. If a valid version of it was cached before, that stale version is removed,
//!    so the reconciler never acts on outdated data.
//! 2. `managedFields` are stripped from every cached object (they are often larger than the
//!    object itself and no reconciler needs them); cached children are also pruned by the
//!    operator's prune function for their kind (`Operator::children_pruned`, else
//!    `Operator::prune_children`), if it gave one, once per watch event, and then frozen
//!    ([`FrozenObject`](super::stores::FrozenObject)); parents are frozen too
//!    ([`Frozen`]).
//! 5. The parent mapping of the triggers reads children as the watch handed them over (pruned,
//!    not frozen); when a receiver fell behind, as the cache hands them out (thawed).
//! 3. A trigger is broadcast only after the store holds the object, so a reconcile started by it
//!    finds the object (or a newer version) in the store.
//! 4. Broadcasting never blocks the reflector: a receiver that falls behind is told so and
//!    re-triggers every cached object instead of losing events silently.

use std::{collections::HashMap, sync::Arc};

use futures::{Stream, StreamExt, stream};
use kube::{
    Api, Resource, ResourceExt,
    api::DynamicObject,
    core::{DeserializeGuard, error_boundary::InvalidObject},
    runtime::{
        WatchStreamExt,
        reflector::ObjectRef,
        watcher::{self, Event},
    },
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    frozen::{Frozen, ParentStore, ParentWriter},
    stores::ChildWriter,
};
use tokio::sync::broadcast;

/// Converts watch events of `DeserializeGuard<K>` into events of `K`, keeping undecodable objects
/// out and remembering which (name, resourceVersion) pairs were already reported.
pub(crate) struct ErrorBoundary<K> {
    reported: HashMap<(Option<String>, String), Option<String>>,
    _kind: std::marker::PhantomData<fn() -> K>,
}

impl<K> Default for ErrorBoundary<K> {
    fn default() -> Self {
        Self {
            reported: HashMap::new(),
            _kind: std::marker::PhantomData,
        }
    }
}

/// The result of admitting one guarded watch event.
pub(crate) struct Admitted<K> {
    /// The event to apply to the store, if any.
    pub event: Option<Event<K>>,
    /// An undecodable object seen for the first time at this resourceVersion.
    pub newly_invalid: Option<InvalidObject>,
}

fn key_of(meta: &kube::core::ObjectMeta) -> (Option<String>, String) {
    (
        meta.namespace.clone(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K> ErrorBoundary<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + 'static,
{
    /// Admits one event; `store` is the reader of the store the result is applied to.
    pub(crate) fn admit(
        &mut self,
        event: Event<DeserializeGuard<K>>,
        store: &ParentStore<K>,
    ) -> Admitted<K> {
        let mut newly_invalid = None;
        let mut invalid = |this: &mut Self, object: InvalidObject| {
            let key = key_of(&object.metadata);
            let version = object.metadata.resource_version.clone();
            if this.reported.get(&key) != Some(&version) {
                this.reported.insert(key, version);
                newly_invalid = Some(object);
            }
        };
        let stale = |meta: &kube::core::ObjectMeta| {
            let mut reference = ObjectRef::<K>::new(meta.name.as_deref().unwrap_or_default());
            if let Some(ns) = &meta.namespace {
                reference = reference.within(ns);
            }
            store
                .get(&reference)
                .map(|cached| Event::Delete((*cached).clone()))
        };
        let event = match event {
            Event::Apply(DeserializeGuard(Ok(object))) => {
                self.reported.remove(&key_of(object.meta()));
                Some(Event::Apply(object))
            }
            Event::InitApply(DeserializeGuard(Ok(object))) => {
                self.reported.remove(&key_of(object.meta()));
                Some(Event::InitApply(object))
            }
            Event::Delete(DeserializeGuard(Ok(object))) => {
                self.reported.remove(&key_of(object.meta()));
                Some(Event::Delete(object))
            }
            Event::Apply(DeserializeGuard(Err(object))) => {
                let event = stale(&object.metadata);
                invalid(self, object);
                event
            }
            // Not buffered, so the store swap at InitDone drops any stale valid version.
            Event::InitApply(DeserializeGuard(Err(object))) => {
                invalid(self, object);
                None
            }
            Event::Delete(DeserializeGuard(Err(object))) => {
                self.reported.remove(&key_of(&object.metadata));
                stale(&object.metadata)
            }
            Event::Init => Some(Event::Init),
            Event::InitDone => Some(Event::InitDone),
        };
        Admitted {
            event,
            newly_invalid,
        }
    }
}

/// A stream of objects to (re)trigger from a broadcast receiver; when the receiver lags behind,
/// every cached object (`cached()`, each turned into a trigger by `trigger` one at a time, as
/// the stream is read: thawing them all at once would hold the whole cache thawed) is emitted
/// instead of the lost events.
pub(crate) fn trigger_stream<C, T>(
    receiver: broadcast::Receiver<Arc<T>>,
    cached: impl Fn() -> Vec<Arc<C>> + Clone + Send + Sync + 'static,
    trigger: impl Fn(Arc<C>) -> Option<Arc<T>> + Clone + Send + Sync + 'static,
) -> impl Stream<Item = Arc<T>> + Send + 'static
where
    C: Send + Sync + 'static,
    T: Send + Sync + 'static,
{
    stream::unfold(receiver, move |mut receiver| {
        let cached = cached.clone();
        async move {
            match receiver.recv().await {
                Ok(object) => Some((Batch::One(object), receiver)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "controller fell behind the watch; re-triggering every cached object"
                    );
                    Some((Batch::Cached(cached()), receiver))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }
    })
    .flat_map(move |batch| {
        let trigger = trigger.clone();
        let (one, cached) = match batch {
            Batch::One(object) => (Some(object), Vec::new()),
            Batch::Cached(cached) => (None, cached),
        };
        stream::iter(one).chain(stream::iter(cached.into_iter().filter_map(trigger)))
    })
}

/// What one receive of a trigger stream yields.
enum Batch<C, T> {
    /// One object from the watch.
    One(Arc<T>),
    /// Every cached object (the receiver fell behind).
    Cached(Vec<Arc<C>>),
}

fn broadcast<T>(sender: &broadcast::Sender<Arc<T>>, object: Arc<T>) {
    // No receiver (standby replica, or between controller terms) is normal.
    let _ = sender.send(object);
}

/// Runs the parent reflector until the watch stream ends (it does not end on its own).
///
/// `report` is called for each newly undecodable object, `forget` for each parent that left the
/// store (deleted or turned undecodable).
pub(crate) async fn reflect_parents<K>(
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    mut writer: ParentWriter<K>,
    index: Arc<super::index::ParentIndex<K>>,
    sender: broadcast::Sender<Arc<Frozen<K>>>,
    report: impl Fn(InvalidObject),
    forget: impl Fn(&K),
) where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let reader = writer.as_reader();
    let mut boundary = ErrorBoundary::<K>::default();
    let events = watcher::watcher(api, config)
        .default_backoff()
        .modify(|object: &mut DeserializeGuard<K>| object.managed_fields_mut().clear());
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, kind = %K::kind(&()), "parent watch failed; retrying with backoff");
                continue;
            }
        };
        let Admitted {
            event,
            newly_invalid,
        } = boundary.admit(event, &reader);
        if let Some(object) = newly_invalid {
            report(object);
        }
        let Some(event) = event else { continue };
        writer.apply_watcher_event(&event);
        index.apply(&event);
        match &event {
            Event::Apply(object) => {
                let meta = object.meta();
                if let Some(cached) = reader.frozen_named(
                    meta.name.as_deref().unwrap_or_default(),
                    meta.namespace.as_deref(),
                ) {
                    broadcast(&sender, cached);
                }
            }
            Event::Delete(object) => forget(object),
            Event::InitDone => {
                for object in reader.frozen_state() {
                    broadcast(&sender, object);
                }
            }
            Event::Init | Event::InitApply(_) => {}
        }
    }
}

/// What an operator drops from a child before it is cached.
pub(crate) type PruneFn = dyn Fn(&mut DynamicObject) + Send + Sync;

/// Runs the child reflector until the watch stream ends (it does not end on its own).
///
/// Applied and deleted children are both broadcast: a deleted child is a reason to reconcile
/// its parent.
pub(crate) async fn reflect_children(
    api: Api<DynamicObject>,
    config: watcher::Config,
    resource: kube::api::ApiResource,
    mut writer: ChildWriter,
    sender: broadcast::Sender<Arc<DynamicObject>>,
    prune: Option<Arc<PruneFn>>,
) {
    let reader = writer.as_reader();
    let events = watcher::watcher(api, config).default_backoff().modify(
        move |object: &mut DynamicObject| {
            object.managed_fields_mut().clear();
            if let Some(prune) = &prune {
                prune(object);
            }
        },
    );
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, kind = %resource.kind, "child watch failed; retrying with backoff");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        match event {
            // The object as stored (before it was frozen).
            Event::Apply(object) | Event::Delete(object) => broadcast(&sender, Arc::new(object)),
            // Thawed one at a time, and only for a running controller term.
            Event::InitDone if sender.receiver_count() > 0 => {
                for frozen in reader.frozen_state() {
                    if let Some(object) = frozen.thaw() {
                        broadcast(&sender, Arc::new(object));
                    }
                }
            }
            Event::Init | Event::InitApply(_) | Event::InitDone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config_map as cm;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn bad(name: &str, rv: &str) -> DeserializeGuard<ConfigMap> {
        DeserializeGuard(Err(InvalidObject {
            error: "invalid type: string \"x\", expected u32".into(),
            metadata: cm(name, rv).metadata,
        }))
    }

    fn good(name: &str, rv: &str) -> DeserializeGuard<ConfigMap> {
        DeserializeGuard(Ok(cm(name, rv)))
    }

    fn describe(event: &Option<Event<ConfigMap>>) -> String {
        match event {
            None => "none".into(),
            Some(Event::Apply(o)) => format!("apply {}", o.name_any()),
            Some(Event::Delete(o)) => format!("delete {}", o.name_any()),
            Some(Event::InitApply(o)) => format!("initapply {}", o.name_any()),
            Some(Event::Init) => "init".into(),
            Some(Event::InitDone) => "initdone".into(),
        }
    }

    /// Each case: the event, what reaches the store, whether it is reported.
    #[test]
    fn error_boundary_admits_valid_and_isolates_invalid_objects() {
        let mut writer = ParentWriter::<ConfigMap>::default();
        let reader = writer.as_reader();
        let mut boundary = ErrorBoundary::<ConfigMap>::default();
        let cases: Vec<(&str, Event<DeserializeGuard<ConfigMap>>, &str, bool)> = vec![
            ("init passes", Event::Init, "init", false),
            (
                "valid object during init",
                Event::InitApply(good("a", "1")),
                "initapply a",
                false,
            ),
            (
                "invalid object during init",
                Event::InitApply(bad("b", "1")),
                "none",
                true,
            ),
            ("init done passes", Event::InitDone, "initdone", false),
            (
                "same invalid version is reported once",
                Event::Apply(bad("b", "1")),
                "none",
                false,
            ),
            (
                "new invalid version is reported again",
                Event::Apply(bad("b", "2")),
                "none",
                true,
            ),
            (
                "valid object turning invalid is evicted",
                Event::Apply(bad("a", "2")),
                "delete a",
                true,
            ),
            (
                "invalid object turning valid is admitted",
                Event::Apply(good("b", "3")),
                "apply b",
                false,
            ),
            (
                "it is reported again when it breaks again",
                Event::Apply(bad("b", "3")),
                "delete b",
                true,
            ),
            (
                "deleting an uncached invalid object is a no-op",
                Event::Delete(bad("c", "1")),
                "none",
                false,
            ),
            (
                "valid delete passes",
                Event::Delete(good("a", "3")),
                "delete a",
                false,
            ),
        ];
        for (name, event, want, want_report) in cases {
            let admitted = boundary.admit(event, &reader);
            assert_eq!(describe(&admitted.event), want, "{name}");
            assert_eq!(admitted.newly_invalid.is_some(), want_report, "{name}");
            if let Some(event) = &admitted.event {
                writer.apply_watcher_event(event);
            }
        }
        assert!(reader.is_empty(), "no stale object left in the store");
    }

    #[tokio::test]
    async fn lagging_receiver_gets_every_cached_object() {
        let (reader, mut writer) = kube::runtime::reflector::store::<ConfigMap>();
        for name in ["a", "b", "c"] {
            writer.apply_watcher_event(&Event::Apply(cm(name, "1")));
        }
        let (sender, receiver) = broadcast::channel(1);
        let triggers = trigger_stream(receiver, move || reader.state(), Some);
        for name in ["x", "y"] {
            let _ = sender.send(Arc::new(cm(name, "1")));
        }
        drop(sender);
        let mut names: Vec<String> = triggers.map(|o| o.name_any()).collect().await;
        names.sort();
        // "x" was overwritten (lagged): the store is re-emitted, then "y" follows.
        assert_eq!(names, ["a", "b", "c", "y"]);
    }
}
