//! A secondary index over the parent cache: parents grouped by a key the operator derives from
//! each object (for example the target resource a WorkflowExecution acts on).
//!
//! The index is fed the same watcher events as the reflector store, right after the store applied
//! them, so a decision such as "is another parent on this target running?" reads only the parents
//! with that key instead of scanning the whole cache.
//!
//! # Guarantees
//! 1. After the store applied an event, the index reflects it too: an `Apply` moves the object to
//!    its current key (removing it from a previous one), a `Delete` removes it.
//! 2. A re-list (`Init` … `InitDone`) rebuilds the index atomically at `InitDone`, as the store does;
//!    until then lookups see the previous contents.
//! 3. [`ParentIndex::get`] returns the cached objects (cheap `Arc` clones) for the keys currently
//!    indexed; objects the store no longer holds are skipped.
//!
//! # Caveats
//! 1. The key function must be deterministic and cheap; it runs once per watch event.
//! 2. Lookups are as fresh as the cache: an object written a moment ago may not be indexed yet.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use kube::{
    Resource,
    runtime::{reflector::ObjectRef, watcher::Event},
};
use serde::{Serialize, de::DeserializeOwned};

use super::frozen::{ParentKey, ParentStore};

/// Derives the index key of a parent; `None` leaves it unindexed.
pub type IndexKeyFn<K> = dyn Fn(&K) -> Option<String> + Send + Sync;

/// Parents grouped by a derived key.
pub struct ParentIndex<K: Resource<DynamicType = ()> + 'static> {
    key_of: Option<Arc<IndexKeyFn<K>>>,
    state: RwLock<State>,
}

/// Each indexed object is named by its name and namespace (each namespace one shared text), and
/// each index key is one shared text, however many maps name them; a key usually holds one
/// object, so its objects are a vector, not a hash set.
#[derive(Default)]
struct State {
    by_key: HashMap<Arc<str>, Vec<ParentKey>>,
    key_of: HashMap<ParentKey, Arc<str>>,
    relist: Option<Vec<(ParentKey, String)>>,
    namespaces: HashSet<Arc<str>>,
}

impl State {
    /// `object`'s name and namespace, the namespace shared.
    fn parent_key<K: Resource>(&mut self, object: &K) -> ParentKey {
        let meta = object.meta();
        let namespaces = &mut self.namespaces;
        let namespace = meta.namespace.as_deref().map(|ns| {
            namespaces.get(ns).cloned().unwrap_or_else(|| {
                let shared: Arc<str> = Arc::from(ns);
                namespaces.insert(shared.clone());
                shared
            })
        });
        ParentKey::new(namespace, meta.name.as_deref().unwrap_or_default())
    }

    fn insert(&mut self, object: ParentKey, key: String) {
        if let Some(old) = self.key_of.get(&object) {
            if **old == *key {
                return;
            }
            self.remove(&object);
        }
        let key: Arc<str> = match self.by_key.get_key_value(key.as_str()) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(key),
        };
        match self.by_key.get_mut(&key) {
            Some(objects) => objects.push(object.clone()),
            None => {
                self.by_key.insert(key.clone(), vec![object.clone()]);
            }
        }
        self.key_of.insert(object, key);
    }

    fn remove(&mut self, object: &ParentKey) {
        let Some(key) = self.key_of.remove(object) else {
            return;
        };
        if let Some(objects) = self.by_key.get_mut(&key) {
            objects.retain(|o| o != object);
            if objects.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> ParentIndex<K> {
    /// An index keyed by `key_of`.
    pub fn new(key_of: impl Fn(&K) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            key_of: Some(Arc::new(key_of)),
            state: RwLock::new(State::default()),
        }
    }

    /// An index that indexes nothing (the runtime's default).
    pub fn disabled() -> Self {
        Self {
            key_of: None,
            state: RwLock::new(State::default()),
        }
    }

    /// Whether a key function is configured.
    pub fn is_enabled(&self) -> bool {
        self.key_of.is_some()
    }

    /// Apply one watcher event (after the store applied it).
    pub fn apply(&self, event: &Event<K>) {
        let Some(key_of) = &self.key_of else { return };
        let mut state = match self.state.write() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        match event {
            Event::Apply(object) => {
                let parent = state.parent_key(object);
                match key_of(object) {
                    Some(key) => state.insert(parent, key),
                    None => state.remove(&parent),
                }
            }
            Event::Delete(object) => {
                let parent = state.parent_key(object);
                state.remove(&parent);
            }
            Event::Init => state.relist = Some(Vec::new()),
            Event::InitApply(object) => {
                if let Some(key) = key_of(object) {
                    let parent = state.parent_key(object);
                    state
                        .relist
                        .get_or_insert_with(Vec::new)
                        .push((parent, key));
                }
            }
            Event::InitDone => {
                let entries = state.relist.take().unwrap_or_default();
                state.by_key.clear();
                state.key_of.clear();
                for (object, key) in entries {
                    state.insert(object, key);
                }
            }
        }
    }

    /// The objects indexed under `key`.
    fn keys(&self, key: &str) -> Vec<ParentKey> {
        let state = match self.state.read() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.by_key.get(key).cloned().unwrap_or_default()
    }

    /// The references indexed under `key`.
    pub fn refs(&self, key: &str) -> Vec<ObjectRef<K>> {
        self.keys(key).iter().map(ParentKey::reference).collect()
    }

    /// The cached objects indexed under `key`, read from `store`.
    pub fn get(&self, key: &str, store: &ParentStore<K>) -> Vec<Arc<K>>
    where
        K: Serialize + DeserializeOwned,
    {
        self.keys(key)
            .iter()
            .filter_map(|object| store.thaw(&store.frozen(object)?))
            .collect()
    }

    /// The cached objects indexed under `object`'s key, `object` itself (as cached) included;
    /// each is checked to still have that key, as the store may hold a newer version than the
    /// index saw. Empty when `object` has no key or no key function is configured.
    pub fn same_key(&self, object: &K, store: &ParentStore<K>) -> Vec<Arc<K>>
    where
        K: Serialize + DeserializeOwned,
    {
        let Some(key_of) = &self.key_of else {
            return Vec::new();
        };
        let Some(key) = key_of(object) else {
            return Vec::new();
        };
        self.get(&key, store)
            .into_iter()
            .filter(|other| key_of(other).as_ref() == Some(&key))
            .collect()
    }

    /// How many keys are indexed.
    pub fn len(&self) -> usize {
        match self.state.read() {
            Ok(state) => state.by_key.len(),
            Err(poisoned) => poisoned.into_inner().by_key.len(),
        }
    }

    /// Whether no key is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn cm(name: &str, target: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some([("target".to_string(), target.to_string())].into()),
            ..Default::default()
        }
    }

    fn index() -> ParentIndex<ConfigMap> {
        ParentIndex::new(|cm: &ConfigMap| cm.data.as_ref()?.get("target").cloned())
    }

    fn names(index: &ParentIndex<ConfigMap>, key: &str) -> Vec<String> {
        let mut names: Vec<String> = index.refs(key).into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    #[test]
    fn apply_moves_objects_between_keys_indexes_each_once_and_delete_removes_them() {
        let index = index();
        index.apply(&Event::Apply(cm("a", "t1")));
        index.apply(&Event::Apply(cm("b", "t1")));
        assert_eq!(names(&index, "t1"), ["a", "b"]);
        index.apply(&Event::Apply(cm("a", "t2")));
        index.apply(&Event::Apply(cm("a", "t2")));
        assert_eq!(names(&index, "t1"), ["b"]);
        assert_eq!(
            names(&index, "t2"),
            ["a"],
            "indexed once however often applied"
        );
        index.apply(&Event::Delete(cm("b", "t1")));
        assert!(names(&index, "t1").is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_relist_replaces_the_contents_atomically_at_init_done() {
        let index = index();
        index.apply(&Event::Apply(cm("old", "t1")));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(cm("new", "t1")));
        // Until InitDone the previous contents serve lookups.
        assert_eq!(names(&index, "t1"), ["old"]);
        index.apply(&Event::InitDone);
        assert_eq!(names(&index, "t1"), ["new"]);
    }

    #[test]
    fn same_key_reads_the_store_and_skips_objects_whose_key_moved_on() {
        let index = index();
        let mut writer = super::super::ParentWriter::<ConfigMap>::default();
        for object in [cm("a", "t1"), cm("b", "t1"), cm("c", "t2")] {
            writer.apply_watcher_event(&Event::Apply(object.clone()));
            index.apply(&Event::Apply(object));
        }
        // The store holds a newer `b` than the index saw.
        writer.apply_watcher_event(&Event::Apply(cm("b", "t2")));
        let store = writer.as_reader();
        let mut same: Vec<String> = index
            .same_key(&cm("a", "t1"), &store)
            .iter()
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect();
        same.sort();
        assert_eq!(same, ["a"]);
        assert!(index.same_key(&cm("x", "none"), &store).is_empty());
        let disabled = ParentIndex::<ConfigMap>::disabled();
        assert!(disabled.same_key(&cm("a", "t1"), &store).is_empty());
    }

    #[test]
    fn a_disabled_index_indexes_nothing() {
        let index = ParentIndex::<ConfigMap>::disabled();
        index.apply(&Event::Apply(cm("a", "t1")));
        assert!(index.is_empty());
        assert!(!index.is_enabled());
    }
}
