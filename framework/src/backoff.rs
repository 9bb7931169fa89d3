//! Exponential backoff: a pure delay schedule and a per-object error backoff.
//!
//! [`Backoff`] is the schedule `delay(n) = min(base · 2^min(n−1, max_exponent), max)` for the
//! `n`-th consecutive failure, with optional jitter ([`Backoff::delay_with_jitter`]).
//! [`ErrorBackoff`] applies it to a controller's error policy: it counts consecutive failed
//! reconciles per object, hands out the delay before the next attempt, decides whether a
//! reconcile asked for before that attempt is due may run ([`ErrorBackoff::hold_at`]), and forgets
//! the object when a reconcile succeeds. Its [`ErrorAttempt`] renders as a status condition
//! ([`ErrorAttempt::condition`]) and its size is exported as a Prometheus gauge
//! ([`ErrorBackoff::register_metrics`]).
//!
//! # What cuts a backoff short
//! An object in backoff is reconciled again when its next attempt is due, and before that only
//! when something a reconcile reads changed since the failed attempt started:
//! * the object itself, compared by its [`fingerprint`]: everything but `status`,
//!   `metadata.resourceVersion` and `metadata.managedFields` (spec, labels, annotations,
//!   finalizers, deletionTimestamp, …). Reporting a failure on the object (a status condition)
//!   changes none of these, so the report never triggers the next attempt;
//! * anything the caller declares a change with [`ErrorBackoff::note_change`] (the runtime does so
//!   for every watch event of one of the object's children).
//!
//! # Guarantees
//!
//! 1. [`Backoff::delay`] never overflows and never exceeds `max`: arithmetic saturates at `max`
//!    for any attempt number, base or exponent. Attempt `0` is treated as attempt `1`.
//! 2. [`Backoff::delay_with_jitter`] returns a value in `[delay · (1 − jitter), delay]`: jitter
//!    only ever shortens a delay, so `max` still bounds every wait.
//! 3. [`ErrorBackoff`] is safe to share between reconcile tasks (`&self` methods behind one
//!    mutex); the attempt counter of one object is independent of every other object's.
//! 4. [`ErrorBackoff::hold_at`] holds a reconcile back only while the object is in backoff, its
//!    next attempt is not due, its fingerprint equals the one the failed attempt was handed and no
//!    change was noted since that attempt started; otherwise it lets the reconcile run.
//! 5. [`ErrorAttempt::condition`] depends only on the error text, the streak's start and the
//!    object's generation — not on the attempt number or the next attempt's time — so a condition
//!    written from it changes only when the error does. [`ErrorAttempt::error_changed`] tells
//!    which attempts are the first with their error, the ones worth an Event.
//!
//! # Assumptions
//!
//! 1. The controller calls [`ErrorBackoff::reset`] after every successful reconcile of an object
//!    (including the one that finishes its deletion), so counters describe *consecutive* failures
//!    and entries do not outlive their objects.
//! 2. Objects serialize deterministically (same content, same JSON), as every `serde`-derived
//!    Kubernetes type does.
//!
//! # Caveats
//!
//! 1. Counters live in memory: a restart (or a leadership hand-over) starts every object at
//!    attempt 1 again. Durable, cluster-visible backoff belongs in the object's status.
//! 2. `next_attempt` is computed from the local clock when the error is recorded; the controller
//!    requeues by `delay`, and [`ErrorBackoff::hold_at`] compares with the same local clock.
//! 3. A failing reconcile that itself changed the object's metadata or spec (say, added a
//!    finalizer) before it failed changed the fingerprint: the watch event of that write is a real
//!    change and runs one more attempt at once. Writes are not attributed to their author.
//! 4. A change noted while the *first* failing attempt of a streak runs is not remembered (the
//!    object is not in backoff yet); it is picked up by the first retry, after `base`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use prometheus::{IntGauge, Registry};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::duration::add_saturating;
use crate::metrics::{MetricError, Registrar};

/// The name of the gauge of objects in error backoff.
const OBJECTS_GAUGE: &str = "reconcile_error_backoff_objects";

/// The condition type [`ErrorAttempt::condition`] produces.
pub const CONDITION_TYPE: &str = "ReconcileBackoff";
/// The reason of a backoff condition while errors continue.
pub const REASON_ERROR: &str = "ReconcileError";
/// The reason of the cleared condition ([`resolved_condition`]).
pub const REASON_RESOLVED: &str = "ReconcileSucceeded";
/// Longest last-error text copied into a condition message (in bytes, cut at a char boundary).
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// An exponential delay schedule. Serialized with human durations, camelCase keys
/// (`{base: 1m, max: 10m, maxExponent: 4}`), so it can sit in an operator's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Delay after the first failure.
    #[serde(with = "crate::config::duration")]
    pub base: Duration,
    /// Upper bound of every delay.
    #[serde(with = "crate::config::duration")]
    pub max: Duration,
    /// Largest power of two applied to `base`.
    pub max_exponent: u32,
}

impl Default for Backoff {
    /// Base 1m, max 10m, max exponent 4: 1m, 2m, 4m, 8m, 10m, 10m, …
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(60),
            max: Duration::from_secs(600),
            max_exponent: 4,
        }
    }
}

impl Backoff {
    /// The delay after the `attempt`-th consecutive failure:
    /// `min(base · 2^min(attempt − 1, max_exponent), max)`. Saturates at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.max(1).saturating_sub(1).min(self.max_exponent);
        let scaled = 1u32
            .checked_shl(exponent)
            .and_then(|factor| self.base.checked_mul(factor));
        match scaled {
            Some(delay) => delay.min(self.max),
            None => self.max,
        }
    }

    /// [`delay`](Self::delay) shortened by a random fraction of at most `jitter`: uniform in
    /// `[delay · (1 − jitter), delay]`. `jitter` is clamped to `0..=1`; NaN counts as `0`.
    pub fn delay_with_jitter(&self, attempt: u32, jitter: f64, rng: &mut impl Rng) -> Duration {
        let delay = self.delay(attempt);
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        if jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        let keep = 1.0 - rng.random_range(0.0..=jitter);
        // `keep` is in [0, 1], so the product is finite and at most `delay`.
        delay.mul_f64(keep).min(delay)
    }
}

/// The state of one object in error backoff, as returned by [`ErrorBackoff::record_error`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAttempt {
    /// Consecutive failed reconciles, starting at 1.
    pub attempt: u32,
    /// How long to wait before the next attempt.
    pub delay: Duration,
    /// When the next attempt is due (local clock).
    pub next_attempt: jiff::Timestamp,
    /// The most recent error, as displayed.
    pub last_error: String,
    /// When the first error of this streak was recorded (the condition's transition time).
    pub since: jiff::Timestamp,
    /// Whether this attempt's error differs from the previous attempt's, or starts the streak:
    /// the attempts worth reporting (an Event) — every other one repeats what was said.
    pub error_changed: bool,
    /// What the failed attempt saw; a reconcile asked for later runs early only when the object
    /// differs from it ([`ErrorBackoff::hold_at`]).
    pub basis: AttemptBasis,
}

/// What a reconcile attempt was started from, to tell a real change from the echo of its own
/// failure report: taken by [`ErrorBackoff::hold_at`], handed back to
/// [`ErrorBackoff::record_failure_at`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptBasis {
    /// The [`fingerprint`] of the object the attempt was handed; `None` when unknown (then any
    /// version of the object counts as changed).
    pub fingerprint: Option<u64>,
    /// The number of changes noted for the object when the attempt started
    /// ([`ErrorBackoff::note_change`]).
    pub changes: u64,
}

/// Whether a reconcile asked for now may run ([`ErrorBackoff::hold_at`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Run it; on failure, record it with this basis, its `fingerprint` set to the object the
    /// attempt was handed.
    Run(AttemptBasis),
    /// Nothing a reconcile reads changed and the next attempt is due in this long: requeue.
    Wait(Duration),
}

impl ErrorAttempt {
    /// The status condition describing this backoff: type `ReconcileBackoff`, status `True`,
    /// reason `ReconcileError`, a message carrying the last error (cut to [`MAX_ERROR_MESSAGE`]
    /// bytes), and the start of the streak as transition time.
    ///
    /// The attempt number and the next attempt's time are deliberately left out: they change on
    /// every attempt, and a condition that changes on every attempt is a status write per attempt
    /// (the runtime's log line and `framework_reconcile_errors_total` carry them instead).
    pub fn condition(&self, observed_generation: Option<i64>) -> Condition {
        Condition {
            type_: CONDITION_TYPE.to_owned(),
            status: "True".to_owned(),
            reason: REASON_ERROR.to_owned(),
            message: format!(
                "the last reconcile attempt failed; retried with exponential backoff: {}",
                truncate(&self.last_error, MAX_ERROR_MESSAGE)
            ),
            last_transition_time: Time(self.since),
            observed_generation,
        }
    }
}

/// The condition that replaces a backoff condition once a reconcile succeeds again: type
/// `ReconcileBackoff`, status `False`, reason `ReconcileSucceeded`, transition time `now`.
pub fn resolved_condition(observed_generation: Option<i64>, now: jiff::Timestamp) -> Condition {
    Condition {
        type_: CONDITION_TYPE.to_owned(),
        status: "False".to_owned(),
        reason: REASON_RESOLVED.to_owned(),
        message: "the last reconcile succeeded".to_owned(),
        last_transition_time: Time(now),
        observed_generation,
    }
}

/// A digest of what a reconcile of `object` can care about: the object without `status`,
/// `metadata.resourceVersion` and `metadata.managedFields`. Two versions with equal fingerprints
/// differ at most in status and bookkeeping. `None` when `object` does not serialize to a JSON
/// object.
pub fn fingerprint<T: Serialize>(object: &T) -> Option<u64> {
    let mut value = serde_json::to_value(object).ok()?;
    let fields = value.as_object_mut()?;
    fields.remove("status");
    if let Some(meta) = fields
        .get_mut("metadata")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    let mut hasher = std::hash::DefaultHasher::new();
    value.to_string().hash(&mut hasher);
    Some(hasher.finish())
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// One object's entry: its failure streak, and the changes noted while it is in backoff.
#[derive(Debug)]
struct Entry {
    state: ErrorAttempt,
    changes: u64,
}

/// Per-object error backoff for a controller's error policy.
///
/// [`hold_at`](Self::hold_at) before a reconcile, [`record_failure_at`](Self::record_failure_at)
/// after a failed one, [`reset`](Self::reset) after a successful one. Keys are whatever
/// identifies an object to the controller (typically `ObjectRef<K>`).
#[derive(Debug)]
pub struct ErrorBackoff<K: Hash + Eq + Clone> {
    backoff: Backoff,
    jitter: f64,
    entries: Mutex<HashMap<K, Entry>>,
    objects: IntGauge,
}

impl<K: Hash + Eq + Clone> ErrorBackoff<K> {
    /// An empty error backoff following `backoff`, without jitter.
    pub fn new(backoff: Backoff) -> Self {
        ErrorBackoff {
            backoff,
            jitter: 0.0,
            entries: Mutex::new(HashMap::new()),
            objects: objects_gauge(),
        }
    }

    /// Shortens each delay by a random fraction up to `jitter` (see
    /// [`Backoff::delay_with_jitter`]), so objects failing together do not retry in lockstep.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The schedule in use.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// Registers the `reconcile_error_backoff_objects` gauge (objects currently in backoff).
    ///
    /// # Errors
    /// A [`MetricError`] when a metric of that name is already registered in `registry`.
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), MetricError> {
        Registrar::new(registry, "").collector(OBJECTS_GAUGE, self.objects.clone())
    }

    /// Whether a reconcile of `key` asked for at `now` may run. It is held back
    /// ([`Hold::Wait`]) only while `key` is in backoff, its next attempt is not due, the object's
    /// current fingerprint (computed only then) equals the failed attempt's and no change was
    /// noted since that attempt started.
    pub fn hold_at(
        &self,
        key: &K,
        fingerprint: impl FnOnce() -> Option<u64>,
        now: jiff::Timestamp,
    ) -> Hold {
        let entries = self.lock();
        let Some(entry) = entries.get(key) else {
            return Hold::Run(AttemptBasis::default());
        };
        let run = Hold::Run(AttemptBasis {
            fingerprint: None,
            changes: entry.changes,
        });
        if entry.changes != entry.state.basis.changes {
            return run;
        }
        let Ok(remaining) = Duration::try_from(entry.state.next_attempt.duration_since(now)) else {
            return run; // due (the difference is negative)
        };
        if remaining.is_zero() {
            return run;
        }
        let Some(before) = entry.state.basis.fingerprint else {
            return run;
        };
        if fingerprint() != Some(before) {
            return run;
        }
        Hold::Wait(remaining)
    }

    /// Notes that something a reconcile of `key` reads changed (for example one of its
    /// children): a reconcile asked for from now on runs even before the next attempt is due.
    /// Does nothing for an object that is not in backoff.
    pub fn note_change(&self, key: &K) {
        if let Some(entry) = self.lock().get_mut(key) {
            entry.changes = entry.changes.wrapping_add(1);
        }
    }

    /// Counts one more consecutive failure of `key` and returns its new backoff state. Without a
    /// [basis](AttemptBasis), any later version of the object counts as a change; the runtime
    /// uses [`record_failure_at`](Self::record_failure_at).
    pub fn record_error(&self, key: &K, error: &str) -> ErrorAttempt {
        self.record_error_at(key, error, jiff::Timestamp::now())
    }

    /// [`record_error`](Self::record_error) with an explicit clock reading.
    pub fn record_error_at(&self, key: &K, error: &str, now: jiff::Timestamp) -> ErrorAttempt {
        let changes = self.lock().get(key).map_or(0, |entry| entry.changes);
        let basis = AttemptBasis {
            fingerprint: None,
            changes,
        };
        self.record_failure_at(key, error, basis, now)
    }

    /// Counts one more consecutive failure of `key`, an attempt started from `basis` (the
    /// [fingerprint] of the object it was handed and the [`Hold::Run`] basis), and returns the
    /// new backoff state.
    pub fn record_failure_at(
        &self,
        key: &K,
        error: &str,
        basis: AttemptBasis,
        now: jiff::Timestamp,
    ) -> ErrorAttempt {
        let mut entries = self.lock();
        let previous = entries.get(key);
        let (attempt, since, error_changed, changes) = match previous {
            Some(previous) => (
                previous.state.attempt.saturating_add(1),
                previous.state.since,
                previous.state.last_error != error,
                previous.changes,
            ),
            None => (1, now, true, 0),
        };
        let delay = if self.jitter > 0.0 {
            self.backoff
                .delay_with_jitter(attempt, self.jitter, &mut rand::rng())
        } else {
            self.backoff.delay(attempt)
        };
        let state = ErrorAttempt {
            attempt,
            delay,
            next_attempt: add_saturating(now, delay),
            last_error: error.to_owned(),
            since,
            error_changed,
            basis: AttemptBasis {
                // Changes noted while the attempt ran stay newer than its basis.
                changes: basis.changes.min(changes),
                ..basis
            },
        };
        entries.insert(
            key.clone(),
            Entry {
                state: state.clone(),
                changes,
            },
        );
        self.objects.set(gauge_value(entries.len()));
        state
    }

    /// Forgets `key` after a successful reconcile; true if it was in backoff.
    pub fn reset(&self, key: &K) -> bool {
        let mut entries = self.lock();
        let removed = entries.remove(key).is_some();
        self.objects.set(gauge_value(entries.len()));
        removed
    }

    /// The state last recorded for `key`, if it is in backoff.
    pub fn get(&self, key: &K) -> Option<ErrorAttempt> {
        self.lock().get(key).map(|entry| entry.state.clone())
    }

    /// Number of objects in backoff.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no object is in backoff.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry>> {
        // The map holds plain counters; a panic elsewhere cannot leave it half-updated.
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

fn objects_gauge() -> IntGauge {
    // The name and help are constants known to be valid; this cannot fail.
    IntGauge::new(
        OBJECTS_GAUGE,
        "Objects whose last reconcile failed and that wait in error backoff",
    )
    .unwrap_or_else(|_| unreachable!("constant metric name is valid"))
}

fn gauge_value(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn default_schedule_table() {
        let backoff = Backoff {
            base: MINUTE,
            max: 10 * MINUTE,
            max_exponent: 4,
        };
        assert_eq!(backoff, Backoff::default());
        // attempt → minutes
        let cases = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 10),
            (6, 10),
            (100, 10),
            (u32::MAX, 10),
        ];
        for (attempt, minutes) in cases {
            assert_eq!(
                backoff.delay(attempt),
                minutes * MINUTE,
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn exponent_cap_and_saturation() {
        // (base, max, max_exponent, attempt, expected)
        let cases = [
            // The exponent cap binds before max does.
            (MINUTE, 100 * MINUTE, 2, 10, 4 * MINUTE),
            // base above max: max wins from the first attempt.
            (20 * MINUTE, 10 * MINUTE, 4, 1, 10 * MINUTE),
            // 2^40 does not fit a u32 factor: saturates at max.
            (Duration::from_secs(1), Duration::MAX, 40, 41, Duration::MAX),
            // Duration overflow saturates at max.
            (Duration::MAX, Duration::MAX, 4, 3, Duration::MAX),
            (Duration::ZERO, MINUTE, 4, 3, Duration::ZERO),
        ];
        for (base, max, max_exponent, attempt, expected) in cases {
            let backoff = Backoff {
                base,
                max,
                max_exponent,
            };
            assert_eq!(
                backoff.delay(attempt),
                expected,
                "{backoff:?} attempt {attempt}"
            );
        }
    }

    #[test]
    fn serializes_with_human_durations() {
        let json = serde_json::to_value(Backoff::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"base": "1m", "max": "10m", "maxExponent": 4})
        );
        let back: Backoff = serde_json::from_value(
            serde_json::json!({"base": "30s", "max": "1h", "maxExponent": 6}),
        )
        .unwrap();
        assert_eq!(back.base, Duration::from_secs(30));
        assert_eq!(back.max, Duration::from_secs(3600));
    }

    #[test]
    fn jitter_edge_values() {
        let backoff = Backoff::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for jitter in [0.0, -1.0, f64::NAN] {
            assert_eq!(backoff.delay_with_jitter(3, jitter, &mut rng), 4 * MINUTE);
        }
        // Full jitter may shorten down to zero but never lengthens.
        for _ in 0..100 {
            assert!(backoff.delay_with_jitter(3, 5.0, &mut rng) <= 4 * MINUTE);
        }
    }

    proptest! {
        #[test]
        fn jitter_stays_in_bounds(
            base_ms in 0u64..10_000_000,
            max_ms in 0u64..100_000_000,
            max_exponent in 0u32..40,
            attempt in any::<u32>(),
            jitter in 0.0f64..=1.0,
            seed in any::<u64>(),
        ) {
            let backoff = Backoff {
                base: Duration::from_millis(base_ms),
                max: Duration::from_millis(max_ms),
                max_exponent,
            };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let exact = backoff.delay(attempt);
            let jittered = backoff.delay_with_jitter(attempt, jitter, &mut rng);
            prop_assert!(exact <= backoff.max);
            prop_assert!(jittered <= exact);
            // Lower bound with a nanosecond of slack for float rounding.
            let floor = exact.mul_f64(1.0 - jitter);
            prop_assert!(jittered + Duration::from_nanos(1) >= floor,
                "{jittered:?} below {floor:?}");
        }

        #[test]
        fn delay_is_monotonic(base_ms in 0u64..10_000_000, max_exponent in 0u32..64, attempt in 1u32..200) {
            let backoff = Backoff { base: Duration::from_millis(base_ms), max: 10 * MINUTE, max_exponent };
            prop_assert!(backoff.delay(attempt) <= backoff.delay(attempt + 1));
        }
    }

    fn at(seconds: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(seconds).unwrap()
    }

    #[test]
    fn error_backoff_counts_per_object_and_resets() {
        let errors = ErrorBackoff::new(Backoff::default());
        let start = at(1_700_000_000);
        let a = "ns/a".to_owned();
        let b = "ns/b".to_owned();

        let first = errors.record_error_at(&a, "boom 1", start);
        assert_eq!(first.attempt, 1);
        assert_eq!(first.delay, MINUTE);
        assert_eq!(first.next_attempt, at(1_700_000_060));
        assert_eq!(first.since, start);

        let second = errors.record_error_at(&a, "boom 2", at(1_700_000_060));
        assert_eq!(
            (second.attempt, second.delay, second.last_error.as_str()),
            (2, 2 * MINUTE, "boom 2")
        );
        assert_eq!(second.since, start, "the streak start is kept");
        assert_eq!(second.next_attempt, at(1_700_000_180));

        assert_eq!(errors.record_error_at(&b, "other", start).attempt, 1);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors.get(&a), Some(second.clone()));

        assert!(errors.reset(&a));
        assert!(!errors.reset(&a), "second reset finds nothing");
        assert_eq!(errors.get(&a), None);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors.record_error_at(&a, "again", start).attempt, 1);
    }

    #[test]
    fn gauge_follows_the_number_of_objects() {
        let errors = ErrorBackoff::new(Backoff::default());
        let registry = Registry::new();
        errors.register_metrics(&registry).unwrap();
        let read = || {
            registry
                .gather()
                .iter()
                .find(|f| f.name() == "reconcile_error_backoff_objects")
                .map(|f| f.get_metric()[0].get_gauge().value())
        };
        assert_eq!(read(), Some(0.0));
        errors.record_error(&1, "x");
        errors.record_error(&1, "x");
        errors.record_error(&2, "y");
        assert_eq!(read(), Some(2.0));
        errors.reset(&1);
        assert_eq!(read(), Some(1.0));
    }

    #[test]
    fn jittered_error_backoff_stays_below_schedule() {
        let errors = ErrorBackoff::new(Backoff::default()).with_jitter(0.5);
        for attempt in 1..=6 {
            let state = errors.record_error(&"k", "e");
            let exact = Backoff::default().delay(attempt);
            assert!(
                state.delay <= exact && state.delay >= exact.mul_f64(0.5) - Duration::from_nanos(1)
            );
        }
    }

    #[test]
    fn condition_describes_the_backoff() {
        let errors = ErrorBackoff::new(Backoff::default());
        let start = at(1_700_000_000);
        errors.record_error_at(&"k", "first", start);
        let state = errors.record_error_at(
            &"k",
            "create PipelineRun: 503 Service Unavailable",
            at(1_700_000_030),
        );
        let condition = state.condition(Some(7));
        assert_eq!(condition.type_, "ReconcileBackoff");
        assert_eq!(condition.status, "True");
        assert_eq!(condition.reason, "ReconcileError");
        assert_eq!(condition.observed_generation, Some(7));
        assert_eq!(condition.last_transition_time, Time(start));
        assert_eq!(
            condition.message,
            "the last reconcile attempt failed; retried with exponential backoff: \
             create PipelineRun: 503 Service Unavailable"
        );
        // The same error on a later attempt says exactly the same: nothing to rewrite.
        let third = errors.record_error_at(
            &"k",
            "create PipelineRun: 503 Service Unavailable",
            at(1_700_000_200),
        );
        assert_eq!(third.attempt, 3);
        assert_eq!(third.condition(Some(7)), condition);

        let resolved = resolved_condition(Some(8), at(1_700_000_500));
        assert_eq!(
            (resolved.status.as_str(), resolved.reason.as_str()),
            ("False", "ReconcileSucceeded")
        );
    }

    #[test]
    fn only_an_error_that_starts_or_changes_is_new() {
        let errors = ErrorBackoff::new(Backoff::default());
        let start = at(1_700_000_000);
        let sequence = [
            ("a", true),
            ("a", false),
            ("b", true),
            ("b", false),
            ("a", true),
        ];
        for (i, (error, new)) in sequence.into_iter().enumerate() {
            let state = errors.record_error_at(&"k", error, start);
            assert_eq!(state.error_changed, new, "attempt {} ({error})", i + 1);
        }
        errors.reset(&"k");
        assert!(
            errors.record_error_at(&"k", "a", start).error_changed,
            "a new streak reports its error again"
        );
    }

    /// Each case: what happens between the failed attempt and the next reconcile asked for, and
    /// whether that reconcile runs.
    #[test]
    fn a_reconcile_before_the_attempt_is_due_runs_only_on_a_real_change() {
        let failed_at = at(1_700_000_000);
        // Base 1m: the next attempt is due at +60s.
        let before_due = at(1_700_000_030);
        let due = at(1_700_000_060);
        // (name, fingerprint recorded, fingerprint now, change noted, asked at, runs)
        type Case = (
            &'static str,
            Option<u64>,
            Option<u64>,
            bool,
            jiff::Timestamp,
            bool,
        );
        let cases: [Case; 7] = [
            (
                "unchanged, not due",
                Some(1),
                Some(1),
                false,
                before_due,
                false,
            ),
            ("unchanged, due", Some(1), Some(1), false, due, true),
            ("object changed", Some(1), Some(2), false, before_due, true),
            ("a child changed", Some(1), Some(1), true, before_due, true),
            (
                "fingerprint unknown then",
                None,
                Some(1),
                false,
                before_due,
                true,
            ),
            (
                "fingerprint unknown now",
                Some(1),
                None,
                false,
                before_due,
                true,
            ),
            (
                "unchanged, asked before the failure",
                Some(1),
                Some(1),
                false,
                failed_at,
                false,
            ),
        ];
        for (name, recorded, current, changed, asked, runs) in cases {
            let errors = ErrorBackoff::new(Backoff::default());
            let basis = match errors.hold_at(&"k", || unreachable!("not in backoff"), failed_at) {
                Hold::Run(basis) => basis,
                Hold::Wait(_) => panic!("{name}: an object not in backoff is held"),
            };
            errors.record_failure_at(
                &"k",
                "boom",
                AttemptBasis {
                    fingerprint: recorded,
                    ..basis
                },
                failed_at,
            );
            if changed {
                errors.note_change(&"k");
            }
            let hold = errors.hold_at(&"k", || current, asked);
            assert_eq!(matches!(hold, Hold::Run(_)), runs, "{name}: {hold:?}");
            if let Hold::Wait(remaining) = hold {
                assert_eq!(
                    remaining,
                    Duration::try_from(due.duration_since(asked)).unwrap(),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn a_change_noted_during_an_attempt_is_not_lost() {
        let errors = ErrorBackoff::new(Backoff::default());
        let start = at(1_700_000_000);
        errors.record_failure_at(
            &"k",
            "boom",
            AttemptBasis {
                fingerprint: Some(1),
                changes: 0,
            },
            start,
        );
        // The retry starts, a child changes while it runs, then it fails again.
        let Hold::Run(basis) = errors.hold_at(&"k", || Some(1), at(1_700_000_060)) else {
            panic!("the due attempt runs");
        };
        errors.note_change(&"k");
        errors.record_failure_at(
            &"k",
            "boom",
            AttemptBasis {
                fingerprint: Some(1),
                ..basis
            },
            at(1_700_000_061),
        );
        assert!(
            matches!(
                errors.hold_at(&"k", || Some(1), at(1_700_000_062)),
                Hold::Run(_)
            ),
            "the change came after what the failed attempt saw"
        );
        // Changes are only counted for objects in backoff.
        errors.note_change(&"other");
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn the_fingerprint_ignores_status_and_bookkeeping_only() {
        use k8s_openapi::api::core::v1::Pod;
        let base: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "ns", "resourceVersion": "1", "generation": 1,
                "labels": {"a": "1"}, "annotations": {"b": "2"}, "finalizers": ["f"],
                "managedFields": [{"manager": "x", "operation": "Update"}],
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending"},
        }))
        .unwrap();
        let edit = |patch: serde_json::Value| -> Pod {
            let mut value = serde_json::to_value(&base).unwrap();
            json_patch_merge(&mut value, &patch);
            serde_json::from_value(value).unwrap()
        };
        let same = [
            (
                "status",
                serde_json::json!({"status": {"phase": "Running", "conditions": [{"type": "ReconcileBackoff", "status": "True"}]}}),
            ),
            (
                "resourceVersion",
                serde_json::json!({"metadata": {"resourceVersion": "2"}}),
            ),
            (
                "managedFields",
                serde_json::json!({"metadata": {"managedFields": [{"manager": "y", "operation": "Update"}]}}),
            ),
        ];
        for (name, patch) in same {
            assert_eq!(fingerprint(&edit(patch)), fingerprint(&base), "{name}");
        }
        let different = [
            (
                "spec",
                serde_json::json!({"spec": {"containers": [{"name": "c", "image": "j"}]}}),
            ),
            (
                "generation",
                serde_json::json!({"metadata": {"generation": 2}}),
            ),
            (
                "label",
                serde_json::json!({"metadata": {"labels": {"a": "2"}}}),
            ),
            (
                "annotation",
                serde_json::json!({"metadata": {"annotations": {"c": "3"}}}),
            ),
            (
                "finalizers",
                serde_json::json!({"metadata": {"finalizers": []}}),
            ),
            (
                "deletion",
                serde_json::json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ];
        for (name, patch) in different {
            assert_ne!(fingerprint(&edit(patch)), fingerprint(&base), "{name}");
        }
        assert!(fingerprint(&base).is_some());
        assert_eq!(fingerprint(&"not an object"), None);
    }

    /// RFC 7386 merge patch, enough for the table above.
    fn json_patch_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(target), serde_json::Value::Object(patch)) => {
                for (key, value) in patch {
                    json_patch_merge(target.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (target, patch) => *target = patch.clone(),
        }
    }

    #[test]
    fn condition_message_is_bounded() {
        let long = "é".repeat(2 * MAX_ERROR_MESSAGE);
        let errors = ErrorBackoff::new(Backoff::default());
        let condition = errors.record_error(&"k", &long).condition(None);
        assert!(condition.message.len() < MAX_ERROR_MESSAGE + 200);
        assert!(condition.message.ends_with('…'));
    }
}
