//! Object records: one value per object this process wrote, shared by clones, bounded by pruning
//! whenever the set has doubled.
//!
//! What this process remembers about its own writes ([`crate::own_writes`]: the versions it
//! replaced; [`crate::pace`]: when it last wrote a status, and the progress it holds back) is a
//! record per object, read and changed by concurrent reconciles and the runtime, which must not
//! grow with every object ever written. [`ObjectRecords`] is that table: [`ObjectRecords::update`]
//! reads and changes one object's record under one lock, and after a change that added a record
//! the table is pruned once it holds twice as many records as after the last pruning, keeping
//! only the records its `keep` rule keeps.
//!
//! ```
//! # use k8s_openapi::api::core::v1::ConfigMap;
//! # use kube::api::ObjectMeta;
//! use kubernaut_framework::object_records::ObjectRecords;
//!
//! let named = |name: &str| ConfigMap {
//!     metadata: ObjectMeta {
//!         name: Some(name.into()),
//!         namespace: Some("ns".into()),
//!         ..ObjectMeta::default()
//!     },
//!     ..ConfigMap::default()
//! };
//! // Counts writes per object; a pruning keeps the objects written more than once.
//! let writes = ObjectRecords::<ConfigMap, u32>::new(|count| *count > 1);
//! writes.update(&named("a"), |count| *count = Some(count.unwrap_or(0) + 1));
//! assert_eq!(writes.get(&named("a"), |count| *count), Some(1));
//! ```
//!
//! # Guarantees
//! 1. A change of one object's record is atomic: [`ObjectRecords::update`] sees and replaces the
//!    record under one lock, so a reader never sees half a change.
//! 2. Memory stays bounded by what `keep` keeps: whenever a change leaves at least twice as many
//!    records as the last pruning left (and at least [`MIN_PRUNE_AT`]), every record `keep`
//!    refuses is dropped. Pruning costs one pass over the table per doubling, so amortised O(1)
//!    per change.
//! 3. Clones share the table.
//!
//! # Assumptions
//! 1. `keep` is cheap and does not touch the table (it runs under its lock).
//!
//! # Caveats
//! 1. A record `keep` keeps stays until it is removed or `keep` refuses it at a later pruning:
//!    the owner of the table decides what a record for an object that went away costs.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use kube::{Resource, runtime::reflector::ObjectRef};

/// The fewest records kept before pruning is considered.
pub const MIN_PRUNE_AT: usize = 1024;

/// Whether a record survives a pruning.
type Keep<V> = dyn Fn(&V) -> bool + Send + Sync;

/// One record of type `V` per object of kind `K`; see the module.
pub struct ObjectRecords<K: Resource<DynamicType = ()> + 'static, V> {
    table: Arc<Mutex<Table<K, V>>>,
    keep: Arc<Keep<V>>,
}

struct Table<K: Resource<DynamicType = ()> + 'static, V> {
    records: HashMap<ObjectRef<K>, V>,
    /// The size at which the next pruning runs.
    prune_at: usize,
}

impl<K: Resource<DynamicType = ()> + 'static, V> Clone for ObjectRecords<K, V> {
    fn clone(&self) -> Self {
        Self {
            table: Arc::clone(&self.table),
            keep: Arc::clone(&self.keep),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static, V> std::fmt::Debug for ObjectRecords<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRecords")
            .field("objects", &self.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()> + 'static, V> ObjectRecords<K, V> {
    /// No records; a pruning keeps the records `keep` says so of.
    pub fn new(keep: impl Fn(&V) -> bool + Send + Sync + 'static) -> Self {
        Self {
            table: Arc::new(Mutex::new(Table {
                records: HashMap::new(),
                prune_at: MIN_PRUNE_AT,
            })),
            keep: Arc::new(keep),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<K, V>> {
        // Every method leaves the table consistent, so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads and changes the record of `object` at once: `change` gets it (`None`: no record)
    /// and leaves what is kept (`None` removes it). Prunes the table when the change added a
    /// record and the table has doubled since the last pruning.
    pub fn update<R>(&self, object: &K, change: impl FnOnce(&mut Option<V>) -> R) -> R {
        let key = ObjectRef::from_obj(object);
        let mut table = self.lock();
        let mut record = table.records.remove(&key);
        let result = change(&mut record);
        if let Some(record) = record {
            table.records.insert(key, record);
            if table.records.len() >= table.prune_at {
                let keep = &self.keep;
                table.records.retain(|_, record| keep(record));
                table.prune_at = MIN_PRUNE_AT.max(table.records.len() * 2);
            }
        }
        result
    }

    /// What `read` makes of the record of `object`, if it has one.
    pub fn get<R>(&self, object: &K, read: impl FnOnce(&V) -> R) -> Option<R> {
        self.lock()
            .records
            .get(&ObjectRef::from_obj(object))
            .map(read)
    }

    /// Removes the record of `object`; returns it.
    pub fn remove(&self, object: &K) -> Option<V> {
        self.lock().records.remove(&ObjectRef::from_obj(object))
    }

    /// How many objects have records.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether no object has a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    /// ConfigMap `ns/name`: the object of the tests of the per-object records.
    pub(crate) fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[test]
    fn an_update_sees_the_record_and_leaves_what_it_keeps() {
        let records = ObjectRecords::<ConfigMap, u32>::new(|_| true);
        let seen = records.update(&cm("a"), |r| {
            let before = *r;
            *r = Some(1);
            before
        });
        assert_eq!(seen, None);
        records.update(&cm("a"), |r| *r = r.map(|n| n + 1));
        assert_eq!(records.get(&cm("a"), |n| *n), Some(2));
        assert_eq!(records.get(&cm("b"), |n| *n), None, "another object");
        records.update(&cm("a"), |r| *r = None);
        assert!(records.is_empty(), "None removes the record");
    }

    #[test]
    fn pruning_runs_when_the_table_doubles_and_keeps_what_keep_keeps() {
        // Keeps the even records only.
        let records = ObjectRecords::<ConfigMap, usize>::new(|n| n % 2 == 0);
        for i in 0..MIN_PRUNE_AT - 1 {
            records.update(&cm(&format!("o{i}")), |r| *r = Some(i));
        }
        assert_eq!(
            records.len(),
            MIN_PRUNE_AT - 1,
            "no pruning below the bound"
        );
        records.update(&cm("last"), |r| *r = Some(0));
        assert_eq!(records.len(), MIN_PRUNE_AT / 2 + 1, "the odd ones dropped");
        assert_eq!(records.get(&cm("o1"), |n| *n), None);
        assert_eq!(records.get(&cm("o2"), |n| *n), Some(2));
    }

    #[test]
    fn clones_share_the_table() {
        let records = ObjectRecords::<ConfigMap, u32>::new(|_| true);
        let other = records.clone();
        records.update(&cm("a"), |r| *r = Some(7));
        assert_eq!(other.remove(&cm("a")), Some(7));
        assert!(records.is_empty());
    }
}
