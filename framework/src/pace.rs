//! Pace: at most one progress write per object per interval, the latest progress never lost.
//!
//! A child that reports progress often (Tekton changes a PipelineRun's status at every task start
//! and end) would cost its parent one status write per change if every change were mirrored at
//! once. [`Pace`] remembers when this process last wrote each object's status; a status change an
//! operator declares as mere progress ([`crate::lifecycle::Outcome::progress`]) is written only
//! when the last write is at least the interval old, and otherwise held back, the object being
//! reconciled again when the interval ends ([`Pace::decide`] says when), so the latest progress
//! is written then. Everything else (a phase change, a fact a later decision depends on, an
//! outcome with effects) is written at once and starts a new interval.
//!
//! ```
//! # use std::time::{Duration, Instant};
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kubernaut_framework::pace::{Pace, PaceDecision};
//!
//! let (start, interval) = (Instant::now(), Duration::from_secs(5));
//! // Written a second ago: hold the progress for the four seconds left.
//! assert_eq!(
//!     Pace::<ConfigMap>::decide(Some(start), start + Duration::from_secs(1), interval),
//!     PaceDecision::Hold(Duration::from_secs(4))
//! );
//! // Never written by this process, or long enough ago: write it.
//! assert_eq!(
//!     Pace::<ConfigMap>::decide(None, start, interval),
//!     PaceDecision::Write
//! );
//! ```
//!
//! # Guarantees
//! 1. Between two status writes of one object recorded here, a progress-only change waits at most
//!    the interval: a held change asks for a reconcile at the end of the interval, which writes
//!    the latest progress (a progress outcome is recomputed from the cluster then, not replayed).
//! 2. Holding back never delays anything but progress: the decision is taken only for outcomes
//!    declared as progress, without effects.
//! 3. Memory stays bounded by the objects written within the longest interval asked about: older
//!    records are dropped whenever the set has doubled since the last pruning.
//!
//! # Assumptions
//! 1. Every status write of this process is recorded ([`crate::lifecycle`] does it for the writes
//!    it makes); an unrecorded write only lets the next progress through early.
//! 2. A held progress change is recomputed from the caches when the object is reconciled again, so
//!    nothing but the time of that reconcile needs remembering.
//!
//! # Caveats
//! 1. The records live in memory: a new process (or a new leader) writes the first progress it
//!    sees at once.
//! 2. Progress is held against this process's writes only; writes by others do not start an
//!    interval.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use kube::{Resource, runtime::reflector::ObjectRef};

/// The fewest records kept before pruning is considered.
const MIN_PRUNE_AT: usize = 1024;

/// Whether a progress-only status change is written now or held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceDecision {
    /// Write it now.
    Write,
    /// Hold it back; reconcile again after this long (the rest of the interval).
    Hold(Duration),
}

/// When this process last wrote each object of kind `K`.
///
/// Clones share the records.
pub struct Pace<K: Resource<DynamicType = ()> + 'static> {
    inner: Arc<Mutex<Records<K>>>,
}

struct Records<K: Resource<DynamicType = ()> + 'static> {
    written: HashMap<ObjectRef<K>, Instant>,
    /// The size at which the next pruning runs.
    prune_at: usize,
    /// The longest interval a decision was asked for: records older than it decide nothing.
    longest: Duration,
}

impl<K: Resource<DynamicType = ()> + 'static> Default for Pace<K> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Records {
                written: HashMap::new(),
                prune_at: MIN_PRUNE_AT,
                longest: Duration::ZERO,
            })),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Pace<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> std::fmt::Debug for Pace<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("objects", &self.lock().written.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Pace<K> {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Records<K>> {
        // Every method leaves the records consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The decision for a progress-only change at `now`, last written at `last`, paced at
    /// `interval`: written when never written here or at least `interval` ago, else held for
    /// the rest of the interval.
    pub fn decide(last: Option<Instant>, now: Instant, interval: Duration) -> PaceDecision {
        let Some(last) = last else {
            return PaceDecision::Write;
        };
        let since = now.saturating_duration_since(last);
        match interval.checked_sub(since) {
            Some(rest) if !rest.is_zero() => PaceDecision::Hold(rest),
            _ => PaceDecision::Write,
        }
    }

    /// The decision for a progress-only change of `object` now, paced at `interval`.
    pub fn progress(&self, object: &K, interval: Duration) -> PaceDecision {
        let mut records = self.lock();
        records.longest = records.longest.max(interval);
        let last = records.written.get(&ObjectRef::from_obj(object)).copied();
        Self::decide(last, Instant::now(), interval)
    }

    /// Records that this process wrote `object`'s status now (an interval starts).
    pub fn record(&self, object: &K) {
        let now = Instant::now();
        let mut records = self.lock();
        records.written.insert(ObjectRef::from_obj(object), now);
        if records.written.len() >= records.prune_at {
            let longest = records.longest;
            records
                .written
                .retain(|_, at| now.saturating_duration_since(*at) < longest);
            records.prune_at = MIN_PRUNE_AT.max(records.written.len() * 2);
        }
    }

    /// Drops the record of `object` (for example once it is finished).
    pub fn forget(&self, object: &K) {
        self.lock().written.remove(&ObjectRef::from_obj(object));
    }

    /// How many objects have records.
    pub fn len(&self) -> usize {
        self.lock().written.len()
    }

    /// Whether no object has records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// Each case: seconds since the last write (`None`: never written), the interval in
    /// seconds, the decision.
    #[test]
    fn progress_is_held_for_the_rest_of_the_interval_only() {
        let s = Duration::from_secs;
        let cases = [
            (None, 5, PaceDecision::Write),
            (Some(0), 5, PaceDecision::Hold(s(5))),
            (Some(1), 5, PaceDecision::Hold(s(4))),
            (Some(4), 5, PaceDecision::Hold(s(1))),
            (Some(5), 5, PaceDecision::Write),
            (Some(60), 5, PaceDecision::Write),
            (Some(0), 0, PaceDecision::Write),
        ];
        let start = Instant::now();
        for (since, interval, expected) in cases {
            let now = start + s(100);
            let last = since.map(|since| now - s(since));
            assert_eq!(
                Pace::<ConfigMap>::decide(last, now, s(interval)),
                expected,
                "{since:?}s ago, interval {interval}s"
            );
        }
    }

    #[test]
    fn a_recorded_write_holds_that_object_only() {
        let pace = Pace::<ConfigMap>::new();
        let interval = Duration::from_secs(3600);
        pace.record(&cm("a"));
        assert!(matches!(
            pace.progress(&cm("a"), interval),
            PaceDecision::Hold(_)
        ));
        assert_eq!(pace.progress(&cm("b"), interval), PaceDecision::Write);
        pace.forget(&cm("a"));
        assert_eq!(pace.progress(&cm("a"), interval), PaceDecision::Write);
        assert!(pace.is_empty());
    }

    #[test]
    fn records_older_than_the_longest_interval_are_pruned() {
        let pace = Pace::<ConfigMap>::new();
        // Asked with a zero interval: no record decides anything, so pruning drops them all.
        assert_eq!(pace.progress(&cm("x"), Duration::ZERO), PaceDecision::Write);
        for i in 0..MIN_PRUNE_AT {
            pace.record(&cm(&format!("o{i}")));
        }
        assert!(pace.len() < MIN_PRUNE_AT, "{} records kept", pace.len());
    }
}
