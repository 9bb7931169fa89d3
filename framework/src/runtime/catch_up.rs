//! Catching up with our own writes: a reconcile handed a cached copy that this process already
//! replaced by its own write ([`OwnWrites::is_outdated`]) waits, in its reconcile slot, for the
//! watch event of that write and then runs on the newer version.
//!
//! Why in the slot: the cache lags our own write only for the moment the write's watch event is
//! on its way (the reconcile right after a write, started by an event that arrived while the
//! write was being made, is the typical case). Handing the outdated copy to the reconciler makes
//! it stand aside and leaves the object to the trigger of that watch event, which queues behind
//! every other object waiting for a slot: in a burst, seconds to minutes. Waiting here costs the
//! slot a few milliseconds and the object its queueing.
//!
//! # Guarantees
//! 1. A copy that is not outdated is handed on at once, without waiting.
//! 2. An outdated copy is replaced by the first cached version that is not outdated, taken from
//!    the store right after the parent reflector stored it (or at once when the store already
//!    holds it); nothing is read from the API server.
//! 3. The wait is bounded ([`CatchUp::within`]): after it, or when the object left the cache, the
//!    latest cached copy (still outdated) is handed on and the reconciler stands aside as before;
//!    the watch event, when it comes, triggers the object as usual.
//!
//! # Assumptions
//! 1. The reflector broadcasts an object only after the store holds it (see [`super::reflect`]).

use std::{sync::Arc, time::Duration};

use kube::{Resource, runtime::reflector::ObjectRef};
use serde::{Serialize, de::DeserializeOwned};
use tokio::{sync::broadcast, time::Instant};

use super::frozen::{Frozen, ParentStore};
use crate::own_writes::OwnWrites;

/// How long a reconcile waits at most for the watch event of its own write.
pub(crate) const OWN_WRITE_WAIT: Duration = Duration::from_secs(5);

/// What a reconcile is handed after [`CatchUp::latest`].
#[derive(Debug)]
pub(crate) enum Latest<K> {
    /// The copy it was given: not outdated.
    Current(Arc<K>),
    /// A newer cached copy than the outdated one it was given, after waiting this long.
    CaughtUp(Arc<K>, Duration),
    /// Still outdated after [`CatchUp::within`] (or the object left the cache).
    Outdated(Arc<K>),
}

impl<K> Latest<K> {
    /// The copy to reconcile.
    pub(crate) fn object(self) -> Arc<K> {
        match self {
            Latest::Current(object) | Latest::CaughtUp(object, _) | Latest::Outdated(object) => {
                object
            }
        }
    }
}

/// Waits for the parent cache to catch up with this process's own writes.
pub(crate) struct CatchUp<K: Resource<DynamicType = ()> + 'static> {
    /// The versions replaced by this process's writes (shared with the reconciler).
    pub(crate) own_writes: OwnWrites<K>,
    /// The parent cache.
    pub(crate) store: ParentStore<K>,
    /// The parent reflector's events (sent after the store holds the object).
    pub(crate) events: broadcast::Sender<Arc<Frozen<K>>>,
    /// The longest wait.
    pub(crate) within: Duration,
}

impl<K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + 'static> CatchUp<K> {
    /// The copy of `object` to reconcile: `object` itself unless this process's own write
    /// replaced it, else the first cached version that is not outdated (see the module docs).
    pub(crate) async fn latest(&self, object: Arc<K>) -> Latest<K> {
        if !self.own_writes.is_outdated(&object) {
            return Latest::Current(object);
        }
        let started = Instant::now();
        // Subscribed before the store is read: an event stored after the read is still seen.
        let mut events = self.events.subscribe();
        let key = ObjectRef::from_obj(&*object);
        let mut latest = object;
        let deadline = started + self.within;
        loop {
            match self.store.get(&key) {
                Some(cached) if !self.own_writes.is_outdated(&cached) => {
                    return Latest::CaughtUp(cached, started.elapsed());
                }
                Some(cached) => latest = cached,
                None => return Latest::Outdated(latest),
            }
            let next = tokio::time::timeout_at(deadline, async {
                loop {
                    match events.recv().await {
                        Ok(changed)
                            if changed.name() == key.name
                                && changed.namespace() == key.namespace.as_deref() =>
                        {
                            return true;
                        }
                        Ok(_) => {}
                        // Events were missed: the store may hold the newer version already.
                        Err(broadcast::error::RecvError::Lagged(_)) => return true,
                        Err(broadcast::error::RecvError::Closed) => return false,
                    }
                }
            });
            if !matches!(next.await, Ok(true)) {
                return Latest::Outdated(latest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config_map as cm;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::Event;

    use crate::runtime::ParentWriter;

    struct Fixture {
        writer: ParentWriter<ConfigMap>,
        events: broadcast::Sender<Arc<Frozen<ConfigMap>>>,
        catch_up: Arc<CatchUp<ConfigMap>>,
    }

    /// A store holding `a` at version 1, which our own write replaced by version 2.
    fn fixture(within: Duration) -> Fixture {
        let mut writer = ParentWriter::<ConfigMap>::default();
        writer.apply_watcher_event(&Event::InitDone);
        writer.apply_watcher_event(&Event::Apply(cm("a", "1")));
        let own_writes = OwnWrites::new();
        own_writes.record(&cm("a", "1"), &cm("a", "2"));
        let events = broadcast::channel(16).0;
        let catch_up = Arc::new(CatchUp {
            own_writes,
            store: writer.as_reader(),
            events: events.clone(),
            within,
        });
        Fixture {
            writer,
            events,
            catch_up,
        }
    }

    /// What the reflector does with a watch event: store it, then broadcast it.
    fn deliver(fixture: &mut Fixture, object: ConfigMap) {
        fixture
            .writer
            .apply_watcher_event(&Event::Apply(object.clone()));
        let _ = fixture.events.send(Arc::new(Frozen::freeze(object)));
    }

    fn version(copy: &Latest<ConfigMap>) -> (&'static str, String) {
        let (kind, object) = match copy {
            Latest::Current(o) => ("current", o),
            Latest::CaughtUp(o, _) => ("caught up", o),
            Latest::Outdated(o) => ("outdated", o),
        };
        (
            kind,
            object.metadata.resource_version.clone().unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn a_copy_no_own_write_replaced_is_handed_on_at_once() {
        let fixture = fixture(Duration::from_secs(60));
        let copy = fixture.catch_up.latest(Arc::new(cm("b", "7"))).await;
        assert_eq!(version(&copy), ("current", "7".into()));
    }

    #[tokio::test]
    async fn an_outdated_copy_waits_for_the_watch_event_of_our_write_and_gets_its_version() {
        let mut fixture = fixture(Duration::from_secs(60));
        let catch_up = fixture.catch_up.clone();
        let waiting = tokio::spawn(async move { catch_up.latest(Arc::new(cm("a", "1"))).await });
        tokio::task::yield_now().await;
        deliver(&mut fixture, cm("other", "9"));
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "an event about another object ends no wait"
        );
        deliver(&mut fixture, cm("a", "2"));
        let copy = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends with the event")
            .expect("the wait does not panic");
        assert_eq!(version(&copy), ("caught up", "2".into()));
    }

    #[tokio::test]
    async fn a_store_that_caught_up_already_is_read_without_waiting() {
        let mut fixture = fixture(Duration::from_secs(60));
        fixture
            .writer
            .apply_watcher_event(&Event::Apply(cm("a", "2")));
        let copy = tokio::time::timeout(
            Duration::from_secs(5),
            fixture.catch_up.latest(Arc::new(cm("a", "1"))),
        )
        .await
        .expect("no wait when the store holds the newer version");
        assert_eq!(version(&copy), ("caught up", "2".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_whose_event_never_comes_hands_on_the_outdated_copy_after_the_bound() {
        let fixture = fixture(Duration::from_secs(3));
        let started = Instant::now();
        let copy = fixture.catch_up.latest(Arc::new(cm("a", "1"))).await;
        assert_eq!(version(&copy), ("outdated", "1".into()));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
            "waited {waited:?}"
        );
    }

    #[tokio::test]
    async fn an_object_that_left_the_cache_is_not_waited_for() {
        let mut fixture = fixture(Duration::from_secs(60));
        fixture
            .writer
            .apply_watcher_event(&Event::Delete(cm("a", "1")));
        let copy = tokio::time::timeout(
            Duration::from_secs(5),
            fixture.catch_up.latest(Arc::new(cm("a", "1"))),
        )
        .await
        .expect("no wait for an object that is gone");
        assert_eq!(version(&copy), ("outdated", "1".into()));
    }
}
