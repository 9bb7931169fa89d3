//! Pace: at most one progress write per object per interval, the latest progress never lost.
//!
//! A child that reports progress often (Tekton changes a PipelineRun's status at every task start
//! and end) would cost its parent one status write per change if every change were mirrored at
//! once. [`Pace`] remembers when this process last wrote each object's status; a status change an
//! operator declares as mere progress ([`crate::lifecycle::Outcome::progress`]) is written only
//! when the last write is at least the interval old, and otherwise held back, the object being
//! reconciled again when the interval ends ([`Pace::decide`] says when), so the latest progress
//! is written then. Everything else (a phase change, an outcome with effects) is written at once
//! and starts a new interval.
//!
//! A held status is not thrown away: [`Pace::hold`] keeps it with the status it was decided on
//! (type `S`), and [`Pace::held`] gives it back to the next pass of the object while the stored
//! status is still that one, so a fact decided once (a step seen running, say) is never decided
//! away by a later pass that can no longer see it. It then rides on the next write, whichever
//! comes first: the end of the interval or a phase change.
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
//!    the latest progress.
//! 2. Holding back never delays anything but progress: the decision is taken only for outcomes
//!    declared as progress, without effects.
//! 3. Within the process, a held status is never lost: it is given back ([`Pace::held`]) to
//!    every pass of the object until a write of this process ([`Pace::record`]) replaces it, the
//!    stored status changes under it (someone else wrote the status: it is dropped, their write
//!    wins), or the object is forgotten ([`Pace::forget`], after its deletion).
//! 4. Memory stays bounded by the objects written within the longest interval asked about plus
//!    the objects holding a status: other records are dropped whenever the set has doubled since
//!    the last pruning ([`crate::object_records`]).
//!
//! # Assumptions
//! 1. Every status write of this process is recorded ([`crate::lifecycle`] does it for the writes
//!    it makes); an unrecorded write only lets the next progress through early.
//! 2. The status decided from a held status still holds what was decided before (a handler that
//!    starts from the held status keeps its facts unless it knows better).
//!
//! # Caveats
//! 1. The records live in memory: a new process (or a new leader) writes the first progress it
//!    sees at once, and a process that stops loses the statuses it held, at most one interval of
//!    progress per object. A fact that only progress carried is then lost only if what showed it
//!    is gone too before the new process looks (for a WorkflowExecution: the operator crashes
//!    *and* the run is deleted with its TaskRuns within the interval after a step was first seen
//!    running); otherwise the new process decides it again from the cluster.
//! 2. Progress is held against this process's writes only; writes by others do not start an
//!    interval.
//! 3. A held status stays until the object's next write or its deletion is seen by
//!    [`Pace::forget`]: an object deleted without that (its finalizer removed by hand) keeps one
//!    status in memory for the life of the process.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use kube::{Resource, ResourceExt};

use crate::object_records::ObjectRecords;

/// Whether a progress-only status change is written now or held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceDecision {
    /// Write it now.
    Write,
    /// Hold it back; reconcile again after this long (the rest of the interval).
    Hold(Duration),
}

/// What is known of one object: when this process last wrote its status, and the status it
/// holds back.
struct Record<S> {
    written: Instant,
    held: Option<Held<S>>,
}

/// A status held back, and what it was decided on.
struct Held<S> {
    /// The object's uid: a new object of the same name never gets it.
    uid: Option<String>,
    /// The stored status it was decided on.
    base: Option<S>,
    /// The status held back.
    status: S,
}

/// When this process last wrote each object of kind `K`, and the progress status (of type `S`)
/// it holds back for it.
///
/// Clones share the records.
pub struct Pace<K: Resource<DynamicType = ()> + 'static, S = ()> {
    records: ObjectRecords<K, Record<S>>,
    /// The longest interval a decision was asked for, in nanoseconds: records older than it
    /// decide nothing.
    longest: Arc<AtomicU64>,
}

impl<K: Resource<DynamicType = ()> + 'static, S: 'static> Default for Pace<K, S> {
    fn default() -> Self {
        let longest = Arc::new(AtomicU64::new(0));
        let in_use = Arc::clone(&longest);
        Self {
            records: ObjectRecords::new(move |record: &Record<S>| {
                let longest = Duration::from_nanos(in_use.load(Ordering::Relaxed));
                record.held.is_some() || record.written.elapsed() < longest
            }),
            longest,
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static, S> Clone for Pace<K, S> {
    fn clone(&self) -> Self {
        Self {
            records: self.records.clone(),
            longest: Arc::clone(&self.longest),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static, S> std::fmt::Debug for Pace<K, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pace")
            .field("objects", &self.records.len())
            .finish()
    }
}

impl<K: Resource<DynamicType = ()> + 'static, S: 'static> Pace<K, S> {
    /// No records.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<K: Resource<DynamicType = ()> + 'static, S> Pace<K, S> {
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
        let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        self.longest.fetch_max(nanos, Ordering::Relaxed);
        let last = self.records.get(object, |r| r.written);
        Self::decide(last, Instant::now(), interval)
    }

    /// Records that this process wrote `object`'s status now: an interval starts, and what was
    /// held back is replaced by what was written.
    pub fn record(&self, object: &K) {
        self.records.update(object, |record| {
            *record = Some(Record {
                written: Instant::now(),
                held: None,
            });
        });
    }

    /// Holds `status` back for `object`, decided on its stored status `base`, until
    /// [`Pace::held`] gives it to the next pass (replacing what was held before).
    pub fn hold(&self, object: &K, base: Option<S>, status: S) {
        let held = Held {
            uid: object.uid(),
            base,
            status,
        };
        self.records.update(object, |record| match record {
            Some(record) => record.held = Some(held),
            // Pruned since it was decided on: the interval starts again, which only delays.
            None => {
                *record = Some(Record {
                    written: Instant::now(),
                    held: Some(held),
                })
            }
        });
    }

    /// Stops holding a status back for `object` (a later decision replaced it).
    pub fn release(&self, object: &K) {
        self.records.update(object, |record| {
            if let Some(record) = record {
                record.held = None;
            }
        });
    }

    /// Drops the records of `object` (for example once it is deleted).
    pub fn forget(&self, object: &K) {
        self.records.remove(object);
    }

    /// How many objects have records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no object has records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Resource<DynamicType = ()> + 'static, S: PartialEq + Clone> Pace<K, S> {
    /// The status held back for `object`, whose stored status is `stored`: the one decided on
    /// that very status of that very object. One held on another status (someone else wrote
    /// it since) is dropped.
    pub fn held(&self, object: &K, stored: Option<&S>) -> Option<S> {
        let uid = object.uid();
        self.records.update(object, |record| {
            let record = record.as_mut()?;
            let held = record.held.as_ref()?;
            if held.uid == uid && held.base.as_ref() == stored {
                return Some(held.status.clone());
            }
            record.held = None;
            None
        })
    }

    /// The status held back for `object`, whatever it was decided on (to look at, not to
    /// decide from: see [`Pace::held`]).
    pub fn holding(&self, object: &K) -> Option<S> {
        self.records
            .get(object, |r| r.held.as_ref().map(|h| h.status.clone()))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_records::{MIN_PRUNE_AT, tests::cm};
    use k8s_openapi::api::core::v1::ConfigMap;

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

    #[test]
    fn a_held_status_is_given_back_while_the_stored_status_is_the_one_it_was_decided_on() {
        let pace = Pace::<ConfigMap, &str>::new();
        pace.record(&cm("a"));
        pace.hold(&cm("a"), Some("stored"), "held");
        assert_eq!(pace.held(&cm("a"), Some(&"stored")), Some("held"));
        assert_eq!(
            pace.held(&cm("a"), Some(&"stored")),
            Some("held"),
            "given back to every pass, not once"
        );
        assert_eq!(pace.held(&cm("b"), Some(&"stored")), None, "another object");
        assert_eq!(pace.holding(&cm("a")), Some("held"));
        // Someone else wrote the status: their write wins, the held status is dropped.
        assert_eq!(pace.held(&cm("a"), Some(&"theirs")), None);
        assert_eq!(pace.held(&cm("a"), Some(&"stored")), None);
    }

    #[test]
    fn a_new_object_of_the_same_name_gets_nothing_held_for_the_old_one() {
        let pace = Pace::<ConfigMap, &str>::new();
        let mut old = cm("a");
        old.metadata.uid = Some("1".into());
        let mut new = cm("a");
        new.metadata.uid = Some("2".into());
        pace.hold(&old, None, "held");
        assert_eq!(pace.held(&new, None), None);
    }

    #[test]
    fn a_write_or_a_release_ends_the_hold_and_a_write_starts_an_interval() {
        let pace = Pace::<ConfigMap, &str>::new();
        let interval = Duration::from_secs(3600);
        pace.hold(&cm("a"), None, "held");
        pace.record(&cm("a"));
        assert_eq!(pace.held(&cm("a"), None), None, "written: nothing held");
        assert!(matches!(
            pace.progress(&cm("a"), interval),
            PaceDecision::Hold(_)
        ));
        pace.hold(&cm("a"), None, "again");
        pace.release(&cm("a"));
        assert_eq!(pace.holding(&cm("a")), None);
        assert!(
            matches!(pace.progress(&cm("a"), interval), PaceDecision::Hold(_)),
            "a release keeps the interval"
        );
        pace.hold(&cm("a"), None, "again");
        pace.forget(&cm("a"));
        assert_eq!(pace.holding(&cm("a")), None);
        assert!(pace.is_empty());
    }

    #[test]
    fn pruning_keeps_every_held_status() {
        let pace = Pace::<ConfigMap, &str>::new();
        // Asked with a zero interval: no write record decides anything, so pruning drops them.
        assert_eq!(pace.progress(&cm("x"), Duration::ZERO), PaceDecision::Write);
        pace.hold(&cm("held"), None, "kept");
        for i in 0..MIN_PRUNE_AT {
            pace.record(&cm(&format!("o{i}")));
        }
        assert_eq!(pace.held(&cm("held"), None), Some("kept"));
    }
}
