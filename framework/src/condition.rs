//! Status conditions with standard `metav1.Condition` semantics, typed by the operator.
//!
//! An operator names its condition types once, as an enum implementing [`ConditionType`]; every
//! call site then sets a condition through [`Conditions`] with that enum and a
//! [`ConditionStatus`], never with a type string.
//!
//! Guarantees:
//! 1. [`Conditions::set`] keeps `lastTransitionTime` when the condition's `status` does not
//!    change, so a condition's age means "since it became this", as `kubectl` and alerting expect.
//! 2. At most one condition per `type`; the order of first insertion is kept, so re-computing the
//!    same conditions produces an identical list (no status write without a change).

use std::marker::PhantomData;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The condition types of one operator: each value is one `type` of its status conditions.
pub trait ConditionType: Copy {
    /// The condition `type` as written in the status, e.g. `Ready`.
    fn as_str(self) -> &'static str;
}

/// The `status` of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known (yet).
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`, as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// The conditions of one status as one reconcile pass sets them: the generation observed and the
/// pass's time are given once, each condition by its typed [`ConditionType`].
pub struct Conditions<'a, T> {
    list: &'a mut Vec<Condition>,
    observed_generation: Option<i64>,
    now: Timestamp,
    types: PhantomData<T>,
}

impl<'a, T: ConditionType> Conditions<'a, T> {
    /// The conditions `list`, set for `observed_generation` at `now`.
    pub fn new(
        list: &'a mut Vec<Condition>,
        observed_generation: Option<i64>,
        now: Timestamp,
    ) -> Self {
        Self {
            list,
            observed_generation,
            now,
            types: PhantomData,
        }
    }

    /// Upsert the condition `type_`, preserving `lastTransitionTime` when its status is
    /// unchanged. Returns whether anything changed.
    pub fn set(&mut self, type_: T, status: ConditionStatus, reason: &str, message: &str) -> bool {
        let updated = |last_transition_time| Condition {
            type_: type_.as_str().to_owned(),
            status: status.as_str().to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            observed_generation: self.observed_generation,
            last_transition_time,
        };
        match self.list.iter_mut().find(|c| c.type_ == type_.as_str()) {
            Some(existing) => {
                let transition = if existing.status == status.as_str() {
                    existing.last_transition_time.clone()
                } else {
                    Time(self.now)
                };
                let updated = updated(transition);
                let changed = *existing != updated;
                *existing = updated;
                changed
            }
            None => {
                self.list.push(updated(Time(self.now)));
                true
            }
        }
    }

    /// [`Conditions::set`] with status `True`.
    pub fn set_true(&mut self, type_: T, reason: &str, message: &str) -> bool {
        self.set(type_, ConditionStatus::True, reason, message)
    }

    /// [`Conditions::set`] with status `False`.
    pub fn set_false(&mut self, type_: T, reason: &str, message: &str) -> bool {
        self.set(type_, ConditionStatus::False, reason, message)
    }

    /// [`Conditions::set`] with status `Unknown`.
    pub fn set_unknown(&mut self, type_: T, reason: &str, message: &str) -> bool {
        self.set(type_, ConditionStatus::Unknown, reason, message)
    }
}

/// The condition of `type_` in `conditions`, if present.
pub fn find<T: ConditionType>(conditions: &[Condition], type_: T) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == type_.as_str())
}

/// Whether the condition of `type_` is present with `status`.
pub fn is<T: ConditionType>(conditions: &[Condition], type_: T, status: ConditionStatus) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy)]
    enum Test {
        Ready,
    }

    impl ConditionType for Test {
        fn as_str(self) -> &'static str {
            match self {
                Test::Ready => "Ready",
            }
        }
    }

    #[test]
    fn keeps_transition_time_while_status_is_unchanged() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut list = Vec::new();
        let (unknown, done) = (ConditionStatus::Unknown, ConditionStatus::True);
        assert!(Conditions::new(&mut list, Some(1), t0).set(Test::Ready, unknown, "Running", "m"));
        // Same condition again: nothing changes, not even the time.
        assert!(!Conditions::new(&mut list, Some(1), t1).set(Test::Ready, unknown, "Running", "m"));
        assert_eq!(list[0].last_transition_time, Time(t0));
        // Status flips: the transition time moves.
        assert!(Conditions::new(&mut list, Some(1), t1).set(Test::Ready, done, "Completed", "m"));
        assert_eq!(list[0].last_transition_time, Time(t1));
        assert_eq!(list.len(), 1);
        assert_eq!(
            find(&list, Test::Ready).map(|c| c.reason.as_str()),
            Some("Completed")
        );
        assert!(is(&list, Test::Ready, done));
        assert!(!is(&list, Test::Ready, unknown));
    }

    #[test]
    fn a_reason_change_without_status_change_keeps_the_time() {
        let t0 = Timestamp::from_second(1_000).unwrap();
        let t1 = Timestamp::from_second(2_000).unwrap();
        let mut list = Vec::new();
        let failed = ConditionStatus::False;
        Conditions::new(&mut list, None, t0).set(Test::Ready, failed, "A", "");
        assert!(Conditions::new(&mut list, None, t1).set(Test::Ready, failed, "B", ""));
        assert_eq!(list[0].last_transition_time, Time(t0));
        assert_eq!(list[0].reason, "B");
    }
}
