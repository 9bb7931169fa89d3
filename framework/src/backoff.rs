//! Exponential backoff: a pure delay schedule and a per-object error backoff.
//!
//! [`Backoff`] is the schedule `delay(n) = min(base · 2^min(n−1, max_exponent), max)` for the
//! `n`-th consecutive failure, with optional jitter ([`Backoff::delay_with_jitter`]).
//! [`ErrorBackoff`] applies it to a controller's error policy: it counts consecutive failed
//! reconciles per object, hands out the delay before the next attempt, and forgets the object when
//! a reconcile succeeds. Its [`ErrorAttempt`] renders as a status condition
//! ([`ErrorAttempt::condition`]) and its size is exported as a Prometheus gauge
//! ([`ErrorBackoff::register_metrics`]).
//!
//! # Guarantees
//!
//! 1. [`Backoff::delay`] never overflows and never exceeds `max`: arithmetic saturates at `max`
//!    for any attempt number, base or exponent. Attempt `0` is treated as attempt `1`.
//! 2. [`Backoff::delay_with_jitter`] returns a value in `[delay · (1 − jitter), delay]`: jitter
//!    only ever shortens a delay, so `max` still bounds every wait.
//! 3. [`ErrorBackoff`] is safe to share between reconcile tasks (`&self` methods behind one
//!    mutex); the attempt counter of one object is independent of every other object's.
//!
//! # Assumptions
//!
//! 1. The controller calls [`ErrorBackoff::reset`] after every successful reconcile of an object
//!    (including the one that finishes its deletion), so counters describe *consecutive* failures
//!    and entries do not outlive their objects.
//!
//! # Caveats
//!
//! 1. Counters live in memory: a restart (or a leadership hand-over) starts every object at
//!    attempt 1 again. Durable, cluster-visible backoff belongs in the object's status.
//! 2. `next_attempt` is computed from the local clock when the error is recorded; it is a hint for
//!    humans reading the condition, the controller requeues by `delay`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use prometheus::{IntGauge, Registry};
use rand::Rng;
use serde::{Deserialize, Serialize};

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
}

impl ErrorAttempt {
    /// The status condition describing this backoff: type `ReconcileBackoff`, status `True`,
    /// reason `ReconcileError`, a message naming the attempt, the next attempt and the last error
    /// (cut to [`MAX_ERROR_MESSAGE`] bytes), and the start of the streak as transition time.
    pub fn condition(&self, observed_generation: Option<i64>) -> Condition {
        let next = self
            .next_attempt
            .round(jiff::Unit::Second)
            .unwrap_or(self.next_attempt);
        Condition {
            type_: CONDITION_TYPE.to_owned(),
            status: "True".to_owned(),
            reason: REASON_ERROR.to_owned(),
            message: format!(
                "attempt {} failed; next attempt at {} (in {}): {}",
                self.attempt,
                next,
                crate::config::duration::format(round_to_seconds(self.delay)),
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

fn round_to_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_millis() >= 500))
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

/// Per-object error backoff for a controller's error policy.
///
/// `record_error` after a failed reconcile, `reset` after a successful one. Keys are whatever
/// identifies an object to the controller (typically `ObjectRef<K>`).
#[derive(Debug)]
pub struct ErrorBackoff<K: Hash + Eq + Clone> {
    backoff: Backoff,
    jitter: f64,
    entries: Mutex<HashMap<K, ErrorAttempt>>,
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
    pub fn register_metrics(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.objects.clone()))
    }

    /// Counts one more consecutive failure of `key` and returns its new backoff state.
    pub fn record_error(&self, key: &K, error: &str) -> ErrorAttempt {
        self.record_error_at(key, error, jiff::Timestamp::now())
    }

    /// [`record_error`](Self::record_error) with an explicit clock reading.
    pub fn record_error_at(&self, key: &K, error: &str, now: jiff::Timestamp) -> ErrorAttempt {
        let mut entries = self.lock();
        let (attempt, since) = match entries.get(key) {
            Some(previous) => (previous.attempt.saturating_add(1), previous.since),
            None => (1, now),
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
        };
        entries.insert(key.clone(), state.clone());
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
        self.lock().get(key).cloned()
    }

    /// Number of objects in backoff.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no object is in backoff.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, ErrorAttempt>> {
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
        "reconcile_error_backoff_objects",
        "Objects whose last reconcile failed and that wait in error backoff",
    )
    .unwrap_or_else(|_| unreachable!("constant metric name is valid"))
}

fn gauge_value(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

fn add_saturating(at: jiff::Timestamp, delay: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(delay)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
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
            "attempt 2 failed; next attempt at 2023-11-14T22:15:50Z (in 2m): \
             create PipelineRun: 503 Service Unavailable"
        );

        let resolved = resolved_condition(Some(8), at(1_700_000_500));
        assert_eq!(
            (resolved.status.as_str(), resolved.reason.as_str()),
            ("False", "ReconcileSucceeded")
        );
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
