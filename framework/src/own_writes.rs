//! Own writes: remembers which versions of an object this process has itself replaced, so a
//! reconcile handed an outdated copy from the cache can stand aside instead of acting on it.
//!
//! A reconcile that writes an object (a finalizer patch, a status update) produces a new
//! `resourceVersion`; the cache only learns it when the watch event arrives. Meanwhile a
//! reconcile queued by the *earlier* watch events runs on the older copy, repeats decisions that
//! were already taken and writes with a stale `resourceVersion`: a `409 Conflict`, an error, a
//! retry — needless API calls exactly when the API server is busiest. [`OwnWrites::record`] notes
//! after each successful write that the version written *from* is outdated;
//! [`OwnWrites::is_outdated`] tells the next reconcile whether its copy is one of those.
//!
//! ```
//! # use k8s_openapi::api::core::v1::ConfigMap;
//! # use kube::api::ObjectMeta;
//! use kubernaut_framework::own_writes::OwnWrites;
//!
//! let version = |rv: &str| ConfigMap {
//!     metadata: ObjectMeta {
//!         name: Some("a".into()),
//!         namespace: Some("ns".into()),
//!         resource_version: Some(rv.into()),
//!         ..ObjectMeta::default()
//!     },
//!     ..ConfigMap::default()
//! };
//! let writes = OwnWrites::<ConfigMap>::new();
//! writes.record(&version("1"), &version("2")); // our write turned version 1 into 2
//! assert!(writes.is_outdated(&version("1"))); // the cache still holds 1: stand aside
//! assert!(!writes.is_outdated(&version("2"))); // the cache caught up: reconcile
//! ```
//!
//! # Guarantees
//! 1. Only a version this process replaced by a successful write of its own is ever reported
//!    outdated; any other version (the latest write, a newer one by someone else, an object never
//!    written) is not. Versions are compared for equality only, never ordered.
//! 2. Skipping an outdated copy loses nothing: the write that replaced it produces a watch event,
//!    and the reconcile that event triggers sees the newer version. Given to the runtime
//!    ([`crate::runtime::Operator::own_writes`]), an outdated copy is not even skipped: the
//!    reconcile handed it waits in its slot for that watch event and runs on the newer version.
//! 3. Memory stays bounded by the objects written since their last reconcile: the first check
//!    that finds a copy that is not outdated forgets the object, at most
//!    [`MAX_VERSIONS_PER_OBJECT`] versions are kept per object, and the records of objects
//!    written more than [`KEPT_FOR`] ago are dropped whenever the set has doubled
//!    ([`crate::object_records`]).
//!
//! # Assumptions
//! 1. Every write to the object made by this process is recorded (a write that is not recorded
//!    only costs the conflict this module avoids, never correctness).
//! 2. Two reconciles of one object never run at once (the runtime guarantees it).
//!
//! # Caveats
//! 1. The records live in memory: a new process (or a new leader) starts without them and may
//!    meet one outdated copy per object, as without this module.
//! 2. An object deleted right after a recorded write keeps its record until [`OwnWrites::forget`]
//!    is called, its name is reused and reconciled, or a pruning finds it older than
//!    [`KEPT_FOR`]: a cache more than that behind its watch is not waited for.

use std::time::{Duration, Instant};

use kube::{Resource, ResourceExt};

use crate::object_records::ObjectRecords;

/// The most replaced versions remembered per object (older ones are dropped first).
pub const MAX_VERSIONS_PER_OBJECT: usize = 16;

/// How long a record is kept by a pruning after its last write: far longer than any watch
/// lags behind a write it saw succeed.
pub const KEPT_FOR: Duration = Duration::from_secs(600);

/// The versions of one object replaced by this process's writes, and when it last wrote.
#[derive(Debug)]
struct Replaced {
    versions: Vec<String>,
    at: Instant,
}

/// The versions of objects of kind `K` that this process replaced by its own writes.
///
/// Clones share the records: the operator that records its writes and the runtime that waits
/// for them ([`crate::runtime::Operator::own_writes`]) hold the same set.
pub struct OwnWrites<K: Resource<DynamicType = ()> + 'static> {
    replaced: ObjectRecords<K, Replaced>,
}

impl<K: Resource<DynamicType = ()> + 'static> Default for OwnWrites<K> {
    fn default() -> Self {
        Self {
            replaced: ObjectRecords::new(|r: &Replaced| r.at.elapsed() < KEPT_FOR),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for OwnWrites<K> {
    fn clone(&self) -> Self {
        Self {
            replaced: self.replaced.clone(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> std::fmt::Debug for OwnWrites<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnWrites")
            .field("objects", &self.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> OwnWrites<K> {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that a successful write of this process turned `before` into `after`: `before`'s
    /// version is outdated from now on. Nothing is recorded when `before` has no version or the
    /// write did not change it.
    pub fn record(&self, before: &K, after: &K) {
        let Some(old) = before.resource_version() else {
            return;
        };
        if after.resource_version().as_deref() == Some(old.as_str()) {
            return;
        }
        self.replaced.update(before, |record| {
            let replaced = record.get_or_insert_with(|| Replaced {
                versions: Vec::new(),
                at: Instant::now(),
            });
            replaced.at = Instant::now();
            if !replaced.versions.contains(&old) {
                if replaced.versions.len() == MAX_VERSIONS_PER_OBJECT {
                    replaced.versions.remove(0);
                }
                replaced.versions.push(old);
            }
        });
    }

    /// Whether `object` is a version this process already replaced by its own write. When it is
    /// not, the object's records are dropped: the copy is current (or newer than anything
    /// written here), so older versions cannot come back from the watch.
    pub fn is_outdated(&self, object: &K) -> bool {
        let version = object.resource_version();
        self.replaced.update(object, |record| {
            let outdated = match (record.as_ref(), &version) {
                (Some(replaced), Some(version)) => replaced.versions.contains(version),
                _ => false,
            };
            if !outdated {
                *record = None;
            }
            outdated
        })
    }

    /// Drops the records of `object` (for example after it was deleted).
    pub fn forget(&self, object: &K) {
        self.replaced.remove(object);
    }

    /// How many objects have records.
    pub fn len(&self) -> usize {
        self.replaced.len()
    }

    /// Whether no object has records.
    pub fn is_empty(&self) -> bool {
        self.replaced.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str, rv: Option<&str>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: rv.map(Into::into),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Each case: the writes recorded (name, from, to), the copy checked, whether it is
    /// outdated, and how many objects keep records afterwards.
    #[test]
    fn outdated_copies_are_exactly_the_replaced_versions() {
        type Write = (&'static str, Option<&'static str>, Option<&'static str>);
        type Case = (
            &'static str,
            &'static [Write],
            (&'static str, Option<&'static str>),
            bool,
            usize,
        );
        let cases: [Case; 9] = [
            ("never written", &[], ("a", Some("1")), false, 0),
            (
                "the version written from",
                &[("a", Some("1"), Some("2"))],
                ("a", Some("1")),
                true,
                1,
            ),
            (
                "the version written",
                &[("a", Some("1"), Some("2"))],
                ("a", Some("2")),
                false,
                0,
            ),
            (
                "an intermediate version of a chain of writes",
                &[("a", Some("1"), Some("2")), ("a", Some("2"), Some("3"))],
                ("a", Some("2")),
                true,
                1,
            ),
            (
                "a newer version written by someone else",
                &[("a", Some("1"), Some("2"))],
                ("a", Some("7")),
                false,
                0,
            ),
            (
                "another object with the same version",
                &[("a", Some("1"), Some("2"))],
                ("b", Some("1")),
                false,
                1,
            ),
            (
                "a write without a version is not recorded",
                &[("a", None, Some("2"))],
                ("a", None),
                false,
                0,
            ),
            (
                "a no-op write is not recorded",
                &[("a", Some("1"), Some("1"))],
                ("a", Some("1")),
                false,
                0,
            ),
            (
                "a copy without a version is not outdated",
                &[("a", Some("1"), Some("2"))],
                ("a", None),
                false,
                0,
            ),
        ];
        for (name, writes, (object, rv), want, left) in cases {
            let own = OwnWrites::<ConfigMap>::new();
            for (n, from, to) in writes {
                own.record(&cm(n, *from), &cm(n, *to));
            }
            assert_eq!(own.is_outdated(&cm(object, rv)), want, "{name}");
            assert_eq!(own.len(), left, "{name}: objects with records");
        }
    }

    #[test]
    fn a_current_copy_clears_the_records() {
        let own = OwnWrites::<ConfigMap>::new();
        own.record(&cm("a", Some("1")), &cm("a", Some("2")));
        assert!(!own.is_outdated(&cm("a", Some("2"))));
        // Forgotten: version 1 is no longer reported (the watch cannot go back to it).
        assert!(!own.is_outdated(&cm("a", Some("1"))));
        assert!(own.is_empty());
    }

    #[test]
    fn versions_per_object_are_bounded_oldest_first() {
        let own = OwnWrites::<ConfigMap>::new();
        let total = MAX_VERSIONS_PER_OBJECT + 2;
        for v in 0..total {
            own.record(
                &cm("a", Some(&v.to_string())),
                &cm("a", Some(&(v + 1).to_string())),
            );
        }
        assert!(own.is_outdated(&cm("a", Some(&(total - 1).to_string()))));
        assert!(own.is_outdated(&cm("a", Some("2"))));
        // The two oldest were dropped; asking for one of them finds it current and clears all.
        assert!(!own.is_outdated(&cm("a", Some("0"))));
        assert!(own.is_empty());
    }

    #[test]
    fn clones_share_the_records() {
        let own = OwnWrites::<ConfigMap>::new();
        let runtime_copy = own.clone();
        own.record(&cm("a", Some("1")), &cm("a", Some("2")));
        assert!(runtime_copy.is_outdated(&cm("a", Some("1"))));
        assert!(!runtime_copy.is_outdated(&cm("a", Some("2"))));
        assert!(
            own.is_empty(),
            "a current copy seen through one clone clears both"
        );
    }

    #[test]
    fn forget_drops_the_records() {
        let own = OwnWrites::<ConfigMap>::new();
        own.record(&cm("a", Some("1")), &cm("a", Some("2")));
        own.forget(&cm("a", Some("2")));
        assert!(!own.is_outdated(&cm("a", Some("1"))));
    }
}
