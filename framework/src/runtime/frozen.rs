//! The parent cache: every parent kept frozen, as one compact JSON text compressed (LZ4) against
//! a dictionary of earlier parents' texts, and thawed into a typed object when it is read.
//!
//! A typed parent holds each string, list and map of its spec and status in an allocation of its
//! own (a finished WorkflowExecution: 48 allocations, 3.8 KiB of heap); its JSON text is one
//! allocation about half that size. The runtime reads a parent a few times per reconcile and
//! keeps every parent for as long as it exists, so the cache holds text and a read parses it
//! (a few microseconds for a WorkflowExecution).
//!
//! The store is the runtime's own (as the child stores are, see [`ChildStore`](super::ChildStore)):
//! a frozen parent is its own key, its name and namespace shared with every reference the
//! runtime keeps to it (a `ParentKey`), where kube's store would keep an `ObjectRef` beside each object and
//! need the object to carry a whole `ObjectMeta`.
//!
//! # Guarantees
//! 1. [`ParentStore::get`] and [`ParentStore::state`] hand out parents equal to the ones stored:
//!    freezing checks that the text parses back into an object that serializes to the same text,
//!    and keeps a parent whose text would not (a type whose serialization does not round-trip,
//!    or is not deterministic) as it is instead.
//! 2. A frozen parent keeps its name and namespace beside the text, so references need no
//!    thawing; everything else is in the text.
//! 3. [`ParentWriter`] applies watch events as kube's reflector `Writer` does (a re-list swaps the
//!    whole store at its end) and [`ParentStore::wait_until_ready`] returns once the first list
//!    completed; every waiter is woken.
//! 4. The last 128 to 256 parents read stay thawed (about 1 MiB of WorkflowExecutions), so a
//!    parent read again soon (a peer in several decisions) is parsed once; a parent replaced in
//!    the store is thawed anew.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use kube::{
    Resource,
    runtime::{reflector::ObjectRef, watcher::Event},
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    packed::{Compact, Packer},
    stores::{CacheWriterDropped, Filling, Keyed, Shelf},
};

/// A parent's name and namespace as the runtime keys it (its store, its reconcile queue and
/// timers): both texts shared with the cached parent, so a key costs no allocation of its own.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct ParentKey {
    namespace: Option<Arc<str>>,
    name: Arc<str>,
}

impl ParentKey {
    /// The key of the object named `name` in `namespace`.
    pub(crate) fn new(namespace: Option<Arc<str>>, name: &str) -> Self {
        ParentKey {
            namespace,
            name: Arc::from(name),
        }
    }

    /// The key of the object `reference` names.
    #[cfg(test)]
    pub(crate) fn of<K: Resource<DynamicType = ()>>(reference: &ObjectRef<K>) -> Self {
        ParentKey {
            namespace: reference.namespace.as_deref().map(Arc::from),
            name: Arc::from(reference.name.as_str()),
        }
    }

    /// A reference to the object (name and namespace only).
    pub(crate) fn reference<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        let reference = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(namespace) => reference.within(namespace),
            None => reference,
        }
    }
}

impl fmt::Display for ParentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{namespace}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Debug for ParentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A parent as the cache holds it: its name and namespace, and the whole object
/// as compact JSON text, compressed.
pub struct Frozen<K> {
    key: ParentKey,
    body: Body<K>,
}

/// What a frozen parent holds besides its identity.
enum Body<K> {
    /// The whole object as compact JSON text (which parses back into an equal `K`), compressed
    /// against earlier texts of `K` when that makes it smaller.
    Compact(Compact),
    /// The object itself: its text did not parse back into an equal `K`.
    Whole(Arc<K>),
}

impl<K> Frozen<K> {
    /// The parent's name.
    pub fn name(&self) -> &str {
        &self.key.name
    }

    /// The parent's namespace (`None` for a cluster-scoped one).
    pub fn namespace(&self) -> Option<&str> {
        self.key.namespace.as_deref()
    }

    /// The parent's key.
    pub(crate) fn key(&self) -> &ParentKey {
        &self.key
    }
}

impl<K> Frozen<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    /// `object` frozen: as text when the text parses back into `object`'s serialization.
    pub fn freeze(object: K) -> Self {
        let namespace = object.meta().namespace.as_deref().map(Arc::from);
        Self::freeze_in(object, namespace, &Self::packer())
    }

    /// The packer of `K`'s texts.
    fn packer() -> Arc<Packer> {
        Packer::of(&K::api_version(&()), &K::kind(&()))
    }

    /// `object` frozen by `packer`, `namespace` (its namespace) shared.
    fn freeze_in(object: K, namespace: Option<Arc<str>>, packer: &Packer) -> Self {
        let key = ParentKey {
            namespace,
            name: Arc::from(object.meta().name.as_deref().unwrap_or_default()),
        };
        let body = match serde_json::to_string(&object) {
            Ok(text) if round_trips::<K>(&text) => Body::Compact(packer.compact(text.into_bytes())),
            _ => Body::Whole(Arc::new(object)),
        };
        Frozen { key, body }
    }

    /// The parent as it was frozen. `None` only if its text no longer parsed, which `freeze`
    /// rules out (it keeps as text only what parses back); it is logged.
    pub fn thaw(&self) -> Option<Arc<K>> {
        let parsed = match &self.body {
            Body::Whole(object) => return Some(object.clone()),
            Body::Compact(compact) => serde_json::from_slice(&compact.text(self.name())?),
        };
        match parsed {
            Ok(object) => Some(Arc::new(object)),
            Err(error) => {
                tracing::error!(name = %self.key.name, %error, "a cached parent does not thaw");
                None
            }
        }
    }
}

impl<K> Keyed for Frozen<K> {
    fn key_name(&self) -> &str {
        &self.key.name
    }

    fn key_namespace(&self) -> Option<&str> {
        self.key.namespace.as_deref()
    }
}

/// Whether `text` parses back into a `K` that serializes to `text` again.
fn round_trips<K: Serialize + DeserializeOwned>(text: &str) -> bool {
    serde_json::from_str::<K>(text)
        .ok()
        .and_then(|back| serde_json::to_string(&back).ok())
        .is_some_and(|again| again == text)
}

impl<K> Clone for Frozen<K> {
    fn clone(&self) -> Self {
        Frozen {
            key: self.key.clone(),
            body: match &self.body {
                Body::Compact(compact) => Body::Compact(compact.clone()),
                Body::Whole(object) => Body::Whole(object.clone()),
            },
        }
    }
}

impl<K> std::fmt::Debug for Frozen<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frozen")
            .field("name", &self.name())
            .field("namespace", &self.namespace())
            .finish_non_exhaustive()
    }
}

/// The parent cache: the runtime's store of [`Frozen`] parents, read as typed parents.
pub struct ParentStore<K: 'static> {
    shelf: Shelf<Frozen<K>>,
    thawed: Arc<Mutex<Thawed<K>>>,
}

impl<K> Clone for ParentStore<K> {
    fn clone(&self) -> Self {
        ParentStore {
            shelf: self.shelf.clone(),
            thawed: self.thawed.clone(),
        }
    }
}

/// How many recently read parents stay thawed (about 1 MiB of finished WorkflowExecutions).
const THAWED: usize = 256;

/// The parents read last, thawed, so a parent read again soon (a peer in the decisions of
/// several WorkflowExecutions on its target, the object of a reconcile read twice) is parsed
/// once: two generations of at most [`THAWED`] / 2 entries each; a hit in the older one moves to
/// the newer, and the older is dropped when the newer is full. Each entry is keyed by the address
/// of the frozen parent it was thawed from and keeps that parent alive, so an address is never
/// reused while it is a key; a parent replaced in the store is a new frozen parent.
struct Thawed<K> {
    newer: HashMap<usize, (Arc<Frozen<K>>, Arc<K>)>,
    older: HashMap<usize, (Arc<Frozen<K>>, Arc<K>)>,
}

impl<K> Default for Thawed<K> {
    fn default() -> Self {
        Thawed {
            newer: HashMap::new(),
            older: HashMap::new(),
        }
    }
}

impl<K> Thawed<K> {
    fn get(&mut self, frozen: &Arc<Frozen<K>>) -> Option<Arc<K>> {
        let key = Arc::as_ptr(frozen) as usize;
        if let Some((_, object)) = self.newer.get(&key) {
            return Some(object.clone());
        }
        let (kept, object) = self.older.remove(&key)?;
        self.insert(kept, object.clone());
        Some(object)
    }

    fn insert(&mut self, frozen: Arc<Frozen<K>>, object: Arc<K>) {
        if self.newer.len() >= THAWED / 2 {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer
            .insert(Arc::as_ptr(&frozen) as usize, (frozen, object));
    }
}

impl<K> std::fmt::Debug for ParentStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentStore")
            .field("len", &self.shelf.len())
            .finish()
    }
}

impl<K> ParentStore<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + 'static,
{
    /// The cached parent `reference` names, thawed.
    pub fn get(&self, reference: &ObjectRef<K>) -> Option<Arc<K>> {
        self.thaw(
            &self
                .shelf
                .get(&reference.name, reference.namespace.as_deref())?,
        )
    }

    /// `frozen` (a parent of this store) thawed, from the recently read ones when it is one.
    pub(crate) fn thaw(&self, frozen: &Arc<Frozen<K>>) -> Option<Arc<K>> {
        let mut thawed = self.thawed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(object) = thawed.get(frozen) {
            return Some(object);
        }
        let object = frozen.thaw()?;
        thawed.insert(frozen.clone(), object.clone());
        Some(object)
    }

    /// Whether a parent of that name is cached (without thawing it).
    pub fn contains(&self, reference: &ObjectRef<K>) -> bool {
        self.shelf
            .get(&reference.name, reference.namespace.as_deref())
            .is_some()
    }

    /// Every cached parent, thawed.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.shelf
            .all()
            .into_iter()
            .filter_map(|frozen| frozen.thaw())
            .collect()
    }
}

impl<K> ParentStore<K> {
    /// How many parents are cached.
    pub fn len(&self) -> usize {
        self.shelf.len()
    }

    /// Whether no parent is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the store completed its first list. Every waiter is woken (the runtime
    /// waits, and reconciles only after every cache synced, so a reconciler need not).
    ///
    /// # Errors
    /// [`CacheWriterDropped`] when the writer went away before the first list completed.
    pub async fn wait_until_ready(&self) -> Result<(), CacheWriterDropped> {
        self.shelf.wait_until_ready().await
    }

    /// The frozen parent `key` names.
    pub(crate) fn frozen(&self, key: &ParentKey) -> Option<Arc<Frozen<K>>> {
        self.shelf.get(&key.name, key.namespace.as_deref())
    }

    /// The frozen parent named `name` in `namespace`.
    pub(crate) fn frozen_named(
        &self,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<Arc<Frozen<K>>> {
        self.shelf.get(name, namespace)
    }

    /// Every cached parent, frozen.
    pub(crate) fn frozen_state(&self) -> Vec<Arc<Frozen<K>>> {
        self.shelf.all()
    }
}

/// Fills a [`ParentStore`] from watch events of typed parents, freezing each.
pub struct ParentWriter<K: 'static> {
    filling: Filling<Frozen<K>>,
    /// The recently read parents of every reader of this store.
    thawed: Arc<Mutex<Thawed<K>>>,
    /// `K`'s packer, looked up at the first event.
    packer: Option<Arc<Packer>>,
}

impl<K> Default for ParentWriter<K> {
    fn default() -> Self {
        ParentWriter {
            filling: Filling::default(),
            thawed: Arc::default(),
            packer: None,
        }
    }
}

impl<K> ParentWriter<K>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + 'static,
{
    /// Applies one watch event: the parents it carries are frozen, then stored as kube's
    /// reflector would store them.
    pub fn apply_watcher_event(&mut self, event: &Event<K>) {
        let packer = self.packer.get_or_insert_with(Frozen::<K>::packer);
        self.filling.apply(event, |object, namespace| {
            Frozen::freeze_in(object.clone(), namespace, packer)
        });
    }

    /// A reader of the store this writer fills.
    pub fn as_reader(&self) -> ParentStore<K> {
        ParentStore {
            shelf: self.filling.reader(),
            thawed: self.thawed.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

    use super::*;
    use crate::testing::config_map as cm;

    /// A frozen parent thaws to what it was; it keeps its name and namespace beside the text.
    #[test]
    fn a_frozen_parent_thaws_to_what_it_was() {
        let mut object = cm("a", "7");
        object.metadata.namespace = Some("ns".into());
        object.metadata.labels = Some([("k".to_string(), "v".to_string())].into());
        object.data = Some([("key".to_string(), "value \"quoted\" ✓".to_string())].into());
        let frozen = Frozen::freeze(object.clone());
        assert!(matches!(frozen.body, Body::Compact(_)));
        assert_eq!(frozen.thaw().as_deref(), Some(&object));
        assert_eq!(frozen.name(), "a");
        assert_eq!(frozen.namespace(), Some("ns"));
        assert_eq!(
            frozen.key().reference::<ConfigMap>(),
            ObjectRef::new("a").within("ns"),
            "its key names it"
        );
    }

    /// A parent with a long text is kept compressed and thaws to what it was.
    #[test]
    fn a_long_parent_is_kept_compressed() {
        let mut object = cm("a", "7");
        object.data = Some(
            (0..20)
                .map(|i| (format!("key-{i}"), "value".repeat(4)))
                .collect(),
        );
        let frozen = Frozen::freeze(object.clone());
        assert!(matches!(frozen.body, Body::Compact(Compact::Packed(_))));
        assert_eq!(frozen.thaw().as_deref(), Some(&object));
    }

    /// A parent read again is handed out from the recently read ones (the same object); a newer
    /// version of it is thawed anew; the recently read ones stay bounded.
    #[test]
    fn a_parent_read_again_is_thawed_once_and_a_newer_version_anew() {
        let mut writer = ParentWriter::<ConfigMap>::default();
        let store = writer.as_reader();
        writer.apply_watcher_event(&Event::Apply(cm("a", "1")));
        let reference = ObjectRef::<ConfigMap>::new("a").within("ns");
        let first = store.get(&reference).expect("cached");
        let again = store.get(&reference).expect("cached");
        assert!(Arc::ptr_eq(&first, &again), "read again: not thawed again");
        writer.apply_watcher_event(&Event::Apply(cm("a", "2")));
        let newer = store.get(&reference).expect("cached");
        assert_eq!(newer.resource_version().as_deref(), Some("2"));
        for i in 0..THAWED * 2 {
            writer.apply_watcher_event(&Event::Apply(cm(&format!("o{i}"), "1")));
            store.get(&ObjectRef::new(&format!("o{i}")).within("ns"));
        }
        let thawed = store.thawed.lock().unwrap();
        assert!(thawed.newer.len() + thawed.older.len() <= THAWED);
    }

    /// A type whose text does not parse back into the same object is kept whole.
    #[test]
    fn a_parent_whose_text_does_not_round_trip_is_kept_whole() {
        assert!(round_trips::<ConfigMap>(
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#
        ));
        assert!(
            !round_trips::<ConfigMap>(
                r#"{"metadata":{"name":"a"},"apiVersion":"v1","kind":"ConfigMap"}"#
            ),
            "reordered: not the text it serializes to"
        );
        assert!(!round_trips::<ConfigMap>("not json"));
        let whole = Frozen {
            key: ParentKey::of(&ObjectRef::<ConfigMap>::new("b")),
            body: Body::Whole(Arc::new(cm("b", "1"))),
        };
        assert_eq!(whole.thaw().as_deref(), Some(&cm("b", "1")));
    }

    /// The writer stores frozen parents, the store hands them out thawed, a delete removes them,
    /// and the store is ready once the first list completed.
    #[test]
    fn the_store_holds_what_the_writer_applied() {
        use futures::FutureExt as _;
        let mut writer = ParentWriter::<ConfigMap>::default();
        let store = writer.as_reader();
        assert!(store.wait_until_ready().now_or_never().is_none());
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(cm("a", "1")));
        writer.apply_watcher_event(&Event::InitDone);
        assert!(store.wait_until_ready().now_or_never().is_some());
        writer.apply_watcher_event(&Event::Apply(cm("b", "2")));
        let reference = ObjectRef::<ConfigMap>::new("b").within("ns");
        assert_eq!(store.get(&reference).as_deref(), Some(&cm("b", "2")));
        assert!(store.contains(&reference));
        assert_eq!(store.len(), 2);
        writer.apply_watcher_event(&Event::Delete(cm("a", "1")));
        let names: Vec<String> = store.state().iter().map(|o| o.name_any()).collect();
        assert_eq!(names, ["b"]);
        let key = ParentKey::of(&ObjectRef::<ConfigMap>::new("b").within("ns"));
        assert_eq!(
            (key.to_string(), key.reference::<ConfigMap>()),
            ("ns/b".to_string(), reference),
            "a key names what its reference names"
        );
    }
}
