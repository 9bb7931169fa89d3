//! Status conditions with standard `metav1.Condition` semantics.
//!
//! Guarantees:
//! 1. [`set_condition`] keeps `lastTransitionTime` when the condition's `status` does not change,
//!    so a condition's age means "since it became this", as `kubectl` and alerting expect.
//! 2. At most one condition per `type`; the order of first insertion is kept, so re-computing the
//!    same conditions produces an identical list (no status write without a change).

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A desired condition; [`set_condition`] turns it into a `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition<'a> {
    /// The condition type, e.g. `Ready`.
    pub type_: &'a str,
    /// `True`, `False` or `Unknown`.
    pub status: &'a str,
    /// A CamelCase reason.
    pub reason: &'a str,
    /// A human-readable message.
    pub message: &'a str,
}

/// Upsert `desired` into `conditions`, preserving `lastTransitionTime` when the status is
/// unchanged. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition<'_>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let transition = if existing.status == desired.status {
                existing.last_transition_time.clone()
            } else {
                Time(now)
            };
            let updated = Condition {
                type_: desired.type_.to_string(),
                status: desired.status.to_string(),
                reason: desired.reason.to_string(),
                message: desired.message.to_string(),
                observed_generation,
                last_transition_time: transition,
            };
            let changed = *existing != updated;
            *existing = updated;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_string(),
                status: desired.status.to_string(),
                reason: desired.reason.to_string(),
                message: desired.message.to_string(),
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &str, reason: &str) -> DesiredCondition<'static> {
        let (status, reason): (&'static str, &'static str) = match (status, reason) {
            ("True", _) => ("True", "Completed"),
            ("False", "Failed") => ("False", "Failed"),
            _ => ("Unknown", "Running"),
        };
        DesiredCondition {
            type_: "Ready",
            status,
            reason,
            message: "m",
        }
    }

    #[test]
    fn keeps_transition_time_while_status_is_unchanged() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            ready("Unknown", "Running"),
            Some(1),
            t0
        ));
        // Same condition again: nothing changes, not even the time.
        assert!(!set_condition(
            &mut conditions,
            ready("Unknown", "Running"),
            Some(1),
            t1
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t0));
        // Status flips: the transition time moves.
        assert!(set_condition(
            &mut conditions,
            ready("True", "Completed"),
            Some(1),
            t1
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t1));
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            find_condition(&conditions, "Ready").map(|c| c.reason.as_str()),
            Some("Completed")
        );
    }

    #[test]
    fn a_reason_change_without_status_change_keeps_the_time() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            DesiredCondition {
                type_: "Ready",
                status: "False",
                reason: "A",
                message: "",
            },
            None,
            t0,
        );
        assert!(set_condition(
            &mut conditions,
            DesiredCondition {
                type_: "Ready",
                status: "False",
                reason: "B",
                message: ""
            },
            None,
            t1
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t0));
        assert_eq!(conditions[0].reason, "B");
    }
}
