//! What a reconcile asks for next ([`Action`]) and the timers of a controller term that keep
//! those requests ([`Timers`]).
//!
//! # Guarantees
//! 1. An object has at most one timer: asking again keeps the earlier of the two times, as
//!    kube's scheduler does.
//! 2. [`Timers::cancel`] drops an object's timer (a reconcile triggered now supersedes a later
//!    requeue; the reconcile's own action sets the next one).
//! 3. [`Timers::next_due`] hands out due objects in the order of their times, each once.
//! 4. What the timers keep shrinks with them (the map once drained, the tree as it goes): a term that requeued every object of a restart
//!    gives that memory back once most timers fired.

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    time::Duration,
};

use tokio::time::Instant;

use super::slots::drained_room;

/// What a reconcile asks the controller to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile the object again after `duration` if no watch event triggers it before.
    #[must_use]
    pub const fn requeue(duration: Duration) -> Self {
        Action {
            requeue_after: Some(duration),
        }
    }

    /// Reconcile the object again only when a watch event (of it or of a child) triggers it.
    #[must_use]
    pub const fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    /// When to reconcile again without a watch event (`None`: only on one).
    #[must_use]
    pub const fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// The requeue timers of a controller term: at most one per object (see the module docs).
pub(crate) struct Timers<T> {
    /// Each object's time, and the sequence number that orders equal times.
    due: HashMap<T, (Instant, u64)>,
    /// The same timers in the order they fire.
    order: BTreeMap<(Instant, u64), T>,
    next: u64,
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Timers {
            due: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
        }
    }
}

impl<T: Hash + Eq + Clone> Timers<T> {
    /// `key` is due at `at`, unless it already is earlier.
    pub(crate) fn at(&mut self, key: T, at: Instant) {
        if let Some(&(current, sequence)) = self.due.get(&key) {
            if current <= at {
                return;
            }
            self.order.remove(&(current, sequence));
        }
        let sequence = self.next;
        self.next += 1;
        self.order.insert((at, sequence), key.clone());
        self.due.insert(key, (at, sequence));
    }

    /// Drops `key`'s timer, if it has one.
    pub(crate) fn cancel(&mut self, key: &T) {
        if let Some(entry) = self.due.remove(key) {
            self.order.remove(&entry);
            self.shrink_when_drained();
        }
    }

    /// When the first timer fires.
    pub(crate) fn first(&self) -> Option<Instant> {
        self.order.first_key_value().map(|((at, _), _)| *at)
    }

    /// The first object due at or before `now`, its timer dropped.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let entry = self.order.first_entry()?;
        if entry.key().0 > now {
            return None;
        }
        let key = entry.remove();
        self.due.remove(&key);
        self.shrink_when_drained();
        Some(key)
    }

    /// Gives back the map's room once it drained ([`drained_room`]).
    fn shrink_when_drained(&mut self) {
        if let Some(room) = drained_room(self.due.len(), self.due.capacity()) {
            self.due.shrink_to(room);
        }
    }

    /// How many objects have a timer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_tells_when_to_look_again() {
        assert_eq!(
            Action::requeue(Duration::from_secs(3)).requeue_after(),
            Some(Duration::from_secs(3))
        );
        assert_eq!(Action::await_change().requeue_after(), None);
    }

    /// The earlier of two times is kept; a cancelled timer never fires; due objects come out in
    /// the order of their times, each once.
    #[test]
    fn timers_keep_the_earliest_time_and_fire_in_order() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut timers = Timers::default();
        timers.at("a", at(300));
        timers.at("b", at(100));
        timers.at("a", at(200));
        timers.at("a", at(400));
        timers.at("c", at(50));
        timers.cancel(&"c");
        assert_eq!((timers.len(), timers.first()), (2, Some(at(100))));
        assert_eq!(timers.pop_due(at(99)), None, "nothing due yet");
        assert_eq!(timers.pop_due(at(1000)), Some("b"));
        assert_eq!(timers.pop_due(at(1000)), Some("a"));
        assert_eq!(timers.pop_due(at(1000)), None, "each once");
        assert_eq!(timers.first(), None);
    }

    /// A term that requeued many objects gives the room back once the timers fired.
    #[test]
    fn drained_timers_give_their_memory_back() {
        let start = Instant::now();
        let mut timers = Timers::default();
        for i in 0..10_000 {
            timers.at(i, start);
        }
        let grown = timers.due.capacity();
        while timers.pop_due(start).is_some() {}
        assert!(
            timers.due.capacity() * 8 < grown,
            "{} of {grown}",
            timers.due.capacity()
        );
    }
}
