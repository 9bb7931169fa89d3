//! The child and grandchild caches: one store per watched kind.
//!
//! Each store is filled by its kind's reflector as kube's reflector store is (a re-list swaps the
//! whole store at its end), so children of several kinds (say a Tekton `PipelineRun` and a
//! `batch/v1` `Job`) are cached in one store each. [`KindStores`] puts them behind one reader
//! that picks the store by the kind a reference names.
//!
//! The stores are the runtime's own rather than kube's: kube's keeps each object's key (an
//! `ObjectRef`, 190 bytes of heap) beside the object and needs the object to carry a whole
//! `ObjectMeta` (360 bytes inline, mostly empty); a [`FrozenObject`] is its own key.
//!
//! # Guarantees
//! 1. [`KindStores::get`] looks only in the store of the reference's kind (its `dyntype`); a kind
//!    that is not watched holds nothing.
//! 2. Each store holds its objects frozen ([`FrozenObject`]: name, namespace and resourceVersion
//!    kept as they are, labels and the rest one text, compressed against earlier objects of the
//!    kind); [`KindStores::get`], [`KindStores::state`] and [`ChildStore`]'s readers hand them
//!    out thawed, as they were stored.
//! 3. [`KindStores::wait_until_ready`] returns once every kind's store completed its first list
//!    (at once when no kind is watched); every waiter is woken.

use std::{
    collections::{BTreeMap, HashSet},
    hash::{BuildHasher, RandomState},
    sync::{Arc, PoisonError, RwLock},
};

use hashbrown::HashTable;
use kube::{
    api::{ApiResource, DynamicObject},
    runtime::{reflector::ObjectRef, watcher::Event},
};
use tokio::sync::watch;

use super::packed::{Compact, Packer};

/// A child or grandchild as its kind's cache holds it: its name, namespace and resourceVersion
/// (what references and version checks read), and its labels and everything else as one
/// compact text, compressed against earlier objects of its kind.
///
/// The namespace is shared by every object of the store in it.
#[derive(Clone, Debug)]
pub struct FrozenObject {
    namespace: Option<Arc<str>>,
    name: Box<str>,
    resource_version: Option<Box<str>>,
    /// Labels that `key=value` lines cannot carry (a key with `=`, a key or value with a line
    /// break or a NUL: none the API server accepts; or an empty map), kept as they are.
    odd_labels: Option<Arc<BTreeMap<String, String>>>,
    /// The labels as `key=value` lines, a NUL, and the object without name, namespace, labels
    /// and resourceVersion as compact JSON text.
    body: Compact,
}

impl FrozenObject {
    /// `object` frozen, compressed against earlier objects of its kind (`apiVersion` and `kind`).
    pub fn freeze(object: DynamicObject) -> Self {
        let (api_version, kind) = object
            .types
            .as_ref()
            .map(|types| (types.api_version.as_str(), types.kind.as_str()))
            .unwrap_or_default();
        let packer = Packer::of(api_version, kind);
        let namespace = object.metadata.namespace.as_deref().map(Arc::from);
        Self::freeze_with(object, &packer, namespace)
    }

    /// `object` frozen by `packer`, in `namespace` (its namespace, shared).
    fn freeze_with(
        mut object: DynamicObject,
        packer: &Packer,
        namespace: Option<Arc<str>>,
    ) -> Self {
        let kept = &mut object.metadata;
        let (name, resource_version) = (kept.name.take(), kept.resource_version.take());
        kept.namespace = None;
        let (lines, odd_labels) = match kept.labels.take() {
            None => (String::new(), None),
            Some(labels) => match label_lines(&labels) {
                Some(lines) => (lines, None),
                None => (String::new(), Some(Arc::new(labels))),
            },
        };
        let mut text = lines.into_bytes();
        text.push(0);
        // A JSON tree and typed metadata always serialize.
        serde_json::to_writer(&mut text, &object).unwrap_or_default();
        let body = packer.compact(text);
        FrozenObject {
            namespace,
            name: name.unwrap_or_default().into_boxed_str(),
            resource_version: resource_version.map(String::into_boxed_str),
            odd_labels,
            body,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's namespace (`None` for a cluster-scoped one).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// The object's resourceVersion.
    pub fn resource_version(&self) -> Option<&str> {
        self.resource_version.as_deref()
    }

    /// The label `key`'s value (the text is decompressed, not parsed).
    pub fn label(&self, key: &str) -> Option<String> {
        if let Some(labels) = &self.odd_labels {
            return labels.get(key).cloned();
        }
        let text = self.body.text(&self.name)?;
        let lines = std::str::from_utf8(text.split(|b| *b == 0).next()?).ok()?;
        lines.lines().find_map(|line| {
            let (k, v) = line.split_once('=')?;
            (k == key).then(|| v.to_owned())
        })
    }

    /// The object as it was frozen. `None` only if its text no longer parsed, which cannot happen
    /// to text `freeze` wrote; it is logged.
    pub fn thaw(&self) -> Option<DynamicObject> {
        let text = self.body.text(&self.name)?;
        let (lines, json) = match text.iter().position(|b| *b == 0) {
            Some(at) => (&text[..at], &text[at + 1..]),
            None => (&[][..], &text[..]),
        };
        let mut object: DynamicObject = match serde_json::from_slice(json) {
            Ok(object) => object,
            Err(error) => {
                tracing::error!(name = %self.name, %error, "a cached object does not thaw");
                return None;
            }
        };
        let metadata = &mut object.metadata;
        metadata.name = Some(self.name.to_string());
        metadata.namespace = self.namespace.as_deref().map(str::to_owned);
        metadata.labels = match &self.odd_labels {
            Some(labels) => Some((**labels).clone()),
            None if lines.is_empty() => None,
            None => Some(
                String::from_utf8_lossy(lines)
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
        };
        metadata.resource_version = self.resource_version.as_deref().map(str::to_owned);
        Some(object)
    }
}

/// `labels` as `key=value` lines, when that is unambiguous (see [`FrozenObject`]; an empty map
/// is kept as it is, to thaw as one).
fn label_lines(labels: &BTreeMap<String, String>) -> Option<String> {
    let plain = |text: &str| !text.contains(['\n', '\r', '\0']);
    (!labels.is_empty()
        && labels
            .iter()
            .all(|(k, v)| plain(k) && plain(v) && !k.contains('=')))
    .then(|| {
        let lines: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        lines.join("\n")
    })
}

/// The error of [`ChildStore::wait_until_ready`].
#[derive(Debug, thiserror::Error)]
#[error("the cache's writer was dropped before its first list completed")]
pub struct CacheWriterDropped;

/// An object as a runtime store holds it: its own key (name and namespace).
pub(crate) trait Keyed {
    /// The object's name.
    fn key_name(&self) -> &str;
    /// The object's namespace (`None` for a cluster-scoped one).
    fn key_namespace(&self) -> Option<&str>;
    /// Whether this is the object named `name` in `namespace`.
    fn is(&self, name: &str, namespace: Option<&str>) -> bool {
        self.key_name() == name && self.key_namespace() == namespace
    }
}

impl Keyed for FrozenObject {
    fn key_name(&self) -> &str {
        &self.name
    }

    fn key_namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

/// Frozen objects by namespace and name.
pub(crate) struct Objects<E> {
    table: HashTable<Arc<E>>,
    hasher: RandomState,
}

impl<E> Default for Objects<E> {
    fn default() -> Self {
        Objects {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

impl<E: Keyed> Objects<E> {
    fn hash(&self, name: &str, namespace: Option<&str>) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    fn get(&self, name: &str, namespace: Option<&str>) -> Option<&Arc<E>> {
        let hash = self.hash(name, namespace);
        self.table.find(hash, |o| o.is(name, namespace))
    }

    fn insert(&mut self, object: Arc<E>) {
        let (name, namespace) = (object.key_name(), object.key_namespace());
        let hash = self.hash(name, namespace);
        let hasher = |o: &Arc<E>| self.hasher.hash_one((o.key_namespace(), o.key_name()));
        match self.table.find_mut(hash, |o| o.is(name, namespace)) {
            Some(slot) => *slot = object,
            None => {
                self.table.insert_unique(hash, object, hasher);
            }
        }
    }

    fn remove(&mut self, name: &str, namespace: Option<&str>) {
        let hash = self.hash(name, namespace);
        if let Ok(entry) = self.table.find_entry(hash, |o| o.is(name, namespace)) {
            entry.remove();
        }
    }
}

/// The reading half of a runtime store: its objects as stored, and whether its first list
/// completed.
pub(crate) struct Shelf<E> {
    objects: Arc<RwLock<Objects<E>>>,
    ready: watch::Receiver<bool>,
}

impl<E> Clone for Shelf<E> {
    fn clone(&self) -> Self {
        Shelf {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<E: Keyed> Shelf<E> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Objects<E>> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The object named `name` in `namespace`, as stored.
    pub(crate) fn get(&self, name: &str, namespace: Option<&str>) -> Option<Arc<E>> {
        self.read().get(name, namespace).cloned()
    }

    /// Every object, as stored.
    pub(crate) fn all(&self) -> Vec<Arc<E>> {
        self.read().table.iter().cloned().collect()
    }

    /// How many objects are stored.
    pub(crate) fn len(&self) -> usize {
        self.read().table.len()
    }

    /// Waits until the first list completed; every waiter is woken.
    pub(crate) async fn wait_until_ready(&self) -> Result<(), CacheWriterDropped> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| CacheWriterDropped)
    }
}

/// The writing half of a runtime store: it applies watch events as kube's reflector does (a
/// re-list swaps the whole store at its end and makes the store ready), and shares each
/// namespace's name among the objects in it.
pub(crate) struct Filling<E> {
    objects: Arc<RwLock<Objects<E>>>,
    /// The objects of a re-list, until it completes.
    buffer: Option<Objects<E>>,
    ready: watch::Sender<bool>,
    /// Every namespace seen, shared by the objects in it.
    namespaces: HashSet<Arc<str>>,
}

impl<E> Default for Filling<E> {
    fn default() -> Self {
        Filling {
            objects: Arc::default(),
            buffer: None,
            ready: watch::Sender::new(false),
            namespaces: HashSet::new(),
        }
    }
}

impl<E: Keyed> Filling<E> {
    /// `namespace`, shared with the objects already stored in it.
    fn namespace(&mut self, namespace: Option<&str>) -> Option<Arc<str>> {
        let namespaces = &mut self.namespaces;
        namespace.map(|ns| {
            namespaces.get(ns).cloned().unwrap_or_else(|| {
                let shared: Arc<str> = Arc::from(ns);
                namespaces.insert(shared.clone());
                shared
            })
        })
    }

    /// Applies one watch event, each object it carries frozen by `freeze` (given the object's
    /// shared namespace).
    pub(crate) fn apply<T: kube::Resource>(
        &mut self,
        event: &Event<T>,
        freeze: impl Fn(&T, Option<Arc<str>>) -> E,
    ) {
        fn write<E>(objects: &RwLock<Objects<E>>) -> std::sync::RwLockWriteGuard<'_, Objects<E>> {
            objects.write().unwrap_or_else(PoisonError::into_inner)
        }
        let frozen = |this: &mut Self, object: &T| {
            let namespace = this.namespace(object.meta().namespace.as_deref());
            Arc::new(freeze(object, namespace))
        };
        match event {
            Event::Apply(object) => {
                let frozen = frozen(self, object);
                write(&self.objects).insert(frozen);
            }
            Event::Delete(object) => {
                let meta = object.meta();
                write(&self.objects).remove(
                    meta.name.as_deref().unwrap_or_default(),
                    meta.namespace.as_deref(),
                );
            }
            Event::Init => self.buffer = Some(Objects::default()),
            Event::InitApply(object) => {
                let frozen = frozen(self, object);
                self.buffer.get_or_insert_default().insert(frozen);
            }
            Event::InitDone => {
                let listed = self.buffer.take().unwrap_or_default();
                *write(&self.objects) = listed;
                self.ready.send_replace(true);
            }
        }
    }

    /// The reading half.
    pub(crate) fn reader(&self) -> Shelf<E> {
        Shelf {
            objects: self.objects.clone(),
            ready: self.ready.subscribe(),
        }
    }
}

/// One kind's cache: its frozen objects, read as dynamic objects.
#[derive(Clone)]
pub struct ChildStore {
    shelf: Shelf<FrozenObject>,
}

impl ChildStore {
    /// The cached object of this kind named `name` in `namespace` (or, when there is none, a
    /// cluster-scoped one of that name, as kube's store looks up), thawed.
    pub fn get(&self, name: &str, namespace: Option<&str>) -> Option<Arc<DynamicObject>> {
        let frozen = {
            let objects = self.shelf.read();
            objects
                .get(name, namespace)
                .or_else(|| namespace.and_then(|_| objects.get(name, None)))
                .cloned()
        };
        frozen?.thaw().map(Arc::new)
    }

    /// Every cached object of this kind, thawed.
    pub fn state(&self) -> Vec<Arc<DynamicObject>> {
        self.matching(|_| true)
    }

    /// The cached objects `keep` accepts, thawed; `keep` reads a frozen object (name,
    /// namespace, resourceVersion, labels), and the others are not thawed.
    pub fn matching(&self, keep: impl Fn(&FrozenObject) -> bool) -> Vec<Arc<DynamicObject>> {
        self.frozen_state()
            .iter()
            .filter(|frozen| keep(frozen))
            .filter_map(|frozen| frozen.thaw().map(Arc::new))
            .collect()
    }

    /// Every cached object of this kind, as cached (frozen).
    pub(crate) fn frozen_state(&self) -> Vec<Arc<FrozenObject>> {
        self.shelf.all()
    }

    /// How many objects of this kind are cached.
    pub fn len(&self) -> usize {
        self.shelf.len()
    }

    /// Whether no object of this kind is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the store completed its first list. Unlike kube's store, every waiter is
    /// woken.
    ///
    /// # Errors
    /// [`CacheWriterDropped`] when the writer went away before the first list completed.
    pub async fn wait_until_ready(&self) -> Result<(), CacheWriterDropped> {
        self.shelf.wait_until_ready().await
    }
}

/// Fills a [`ChildStore`] from watch events of one kind, freezing each object.
pub struct ChildWriter {
    filling: Filling<FrozenObject>,
    packer: Arc<Packer>,
}

impl ChildWriter {
    /// A writer of `resource`'s cache.
    pub fn new(resource: ApiResource) -> Self {
        ChildWriter {
            filling: Filling::default(),
            packer: Packer::of(&resource.api_version, &resource.kind),
        }
    }

    /// Applies one watch event as kube's reflector would (a re-list swaps the whole store at its
    /// end and makes the store ready), freezing the objects it carries.
    pub fn apply_watcher_event(&mut self, event: &Event<DynamicObject>) {
        let packer = &self.packer;
        self.filling.apply(event, |object, namespace| {
            FrozenObject::freeze_with(object.clone(), packer, namespace)
        });
    }

    /// A reader of the store this writer fills.
    pub fn as_reader(&self) -> ChildStore {
        ChildStore {
            shelf: self.filling.reader(),
        }
    }
}

/// The caches of several kinds, one per kind, such as [`Context::children`] and
/// [`Context::grandchildren`].
///
/// [`Context::children`]: super::Context::children
/// [`Context::grandchildren`]: super::Context::grandchildren
#[derive(Clone, Default)]
pub struct KindStores {
    stores: Vec<(ApiResource, ChildStore)>,
}

impl KindStores {
    /// Stores of the given kinds; a kind given twice keeps its last store.
    pub fn new(stores: impl IntoIterator<Item = (ApiResource, ChildStore)>) -> Self {
        let mut this = Self::default();
        for (resource, store) in stores {
            this.insert(resource, store);
        }
        this
    }

    /// Sets the store of `resource`'s kind, replacing the one it had.
    pub fn insert(&mut self, resource: ApiResource, store: ChildStore) {
        match self.stores.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, existing)) => *existing = store,
            None => self.stores.push((resource, store)),
        }
    }

    /// The cached object `reference` names, looked up in the store of its kind (its `dyntype`).
    pub fn get(&self, reference: &ObjectRef<DynamicObject>) -> Option<Arc<DynamicObject>> {
        self.of(&reference.dyntype)?
            .get(&reference.name, reference.namespace.as_deref())
    }

    /// Every cached object, of every kind (kinds in the order they were watched).
    pub fn state(&self) -> Vec<Arc<DynamicObject>> {
        self.stores
            .iter()
            .flat_map(|(_, store)| store.state())
            .collect()
    }

    /// The store of `resource`'s kind, when that kind is watched.
    pub fn of(&self, resource: &ApiResource) -> Option<&ChildStore> {
        self.stores
            .iter()
            .find(|(r, _)| r == resource)
            .map(|(_, store)| store)
    }

    /// The watched kinds, in the order they were watched.
    pub fn kinds(&self) -> impl Iterator<Item = &ApiResource> {
        self.stores.iter().map(|(resource, _)| resource)
    }

    /// Waits until every kind's store completed its first list. The runtime reconciles only
    /// after every cache synced, so a reconciler need not wait here
    /// ([`super::Probes::is_synced`] tells whether they did).
    ///
    /// # Errors
    /// [`CacheWriterDropped`] when a store's reflector went away before its first list completed.
    pub async fn wait_until_ready(&self) -> Result<(), CacheWriterDropped> {
        for (_, store) in &self.stores {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for KindStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.stores
                    .iter()
                    .map(|(resource, store)| (&resource.kind, store.len())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::runtime::watcher;

    fn object(resource: &ApiResource, name: &str) -> DynamicObject {
        DynamicObject::new(name, resource).within("ns")
    }

    /// A frozen object keeps its name, namespace, labels and resourceVersion as metadata and
    /// thaws to what it was.
    #[test]
    fn a_frozen_object_thaws_to_what_it_was() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "ns", "labels": {"a": "b"}, "uid": "u",
                         "resourceVersion": "7", "annotations": {"x": "y"},
                         "creationTimestamp": "2025-06-01T11:50:02Z"},
            "status": {"conditions": [{"type": "Succeeded", "status": "True"}],
                       "startTime": "2025-06-01T11:50:02Z", "ratio": 0.1, "n": 3}
        }))
        .unwrap();
        let frozen = FrozenObject::freeze(object.clone());
        assert_eq!((frozen.name(), frozen.namespace()), ("r", Some("ns")));
        assert_eq!(frozen.resource_version(), Some("7"));
        assert!(frozen.odd_labels.is_none(), "as lines");
        assert_eq!(frozen.label("a").as_deref(), Some("b"));
        assert_eq!(frozen.label("b"), None);
        assert_eq!(frozen.thaw(), Some(object.clone()));
        // Labels lines could not carry are kept as they are (the API server accepts none).
        let mut empty = object.clone();
        empty.metadata.labels = Some(BTreeMap::new());
        assert_eq!(FrozenObject::freeze(empty.clone()).thaw(), Some(empty));
        for odd_label in [("k=1", "v\nw"), ("k", "v\0w")] {
            let mut odd = object.clone();
            let (key, value) = (odd_label.0.to_string(), odd_label.1.to_string());
            odd.metadata.labels = Some([(key.clone(), value.clone())].into());
            let frozen = FrozenObject::freeze(odd.clone());
            assert!(frozen.odd_labels.is_some());
            assert_eq!(frozen.label(&key), Some(value));
            assert_eq!(frozen.thaw(), Some(odd));
        }
        // No labels, no namespace, no resourceVersion: thawed as they were.
        let mut bare = object;
        bare.metadata.labels = None;
        bare.metadata.namespace = None;
        bare.metadata.resource_version = None;
        assert_eq!(FrozenObject::freeze(bare.clone()).thaw(), Some(bare));
    }

    /// Two kinds with an object of the same name each: a reference finds the one of its kind,
    /// `state` holds both, and the stores are ready only when both listed.
    #[test]
    fn each_kind_is_looked_up_in_its_own_store_and_all_must_be_ready() {
        let (configmaps, secrets) = (
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<Secret>(&()),
        );
        let mut cm_writer = ChildWriter::new(configmaps.clone());
        let mut secret_writer = ChildWriter::new(secrets.clone());
        let stores = KindStores::new([
            (configmaps.clone(), cm_writer.as_reader()),
            (secrets.clone(), secret_writer.as_reader()),
        ]);
        // Only this test waits on these stores, so polling a fresh waiter each time is safe.
        let is_ready = |stores: &KindStores| stores.wait_until_ready().now_or_never().is_some();
        assert!(!is_ready(&stores), "nothing listed yet");
        cm_writer.apply_watcher_event(&watcher::Event::Init);
        cm_writer.apply_watcher_event(&watcher::Event::InitApply(object(&configmaps, "same")));
        cm_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(!is_ready(&stores), "the Secrets have not listed yet");
        secret_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(is_ready(&stores));
        let reference = |resource: &ApiResource| {
            ObjectRef::<DynamicObject>::new_with("same", resource.clone()).within("ns")
        };
        assert!(stores.get(&reference(&configmaps)).is_some());
        assert!(stores.get(&reference(&secrets)).is_none(), "no such Secret");
        secret_writer.apply_watcher_event(&watcher::Event::Apply(object(&secrets, "same")));
        let found = stores.get(&reference(&secrets));
        assert_eq!(
            found.and_then(|s| s.types.clone()).map(|t| t.kind),
            Some("Secret".into())
        );
        assert_eq!(stores.state().len(), 2);
        assert_eq!(stores.of(&secrets).map(ChildStore::len), Some(1));
        let pods = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        assert!(stores.of(&pods).is_none());
        assert!(stores.get(&reference(&pods)).is_none());
        assert!(is_ready(&KindStores::default()), "no kind: ready at once");
    }
}
