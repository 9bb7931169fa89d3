//! Reconcile slots: at most `concurrency` reconciles run at once; the others wait in two
//! first-come-first-served lanes, a parent whose child changed ahead of the rest.
//!
//! Why first come, first served: kube's controller, while all its slots are busy, parks every
//! due trigger in an unordered set and later picks from it in hash order, so in a burst some
//! objects waited a minute behind objects triggered after them. Why two lanes: with one, a run's
//! completion waits behind every object triggered before it — in a burst of new objects, the
//! whole backlog. A child's change (a run that finished) is what the parent's status must
//! reflect and what frees its lock; new work can wait for it.
//!
//! Why a queue rather than a wait inside the reconcile: a waiting reconcile would be a running
//! future to the term's loop, which polls running futures as they wake, and would hold its
//! object's place among the running ones, so thousands waiting (a burst, a restart over 10 000
//! objects) cost memory and CPU in proportion to the queue. Here an object that finds no free
//! slot is queued ([`Turn::Wait`]); a freed slot is reserved for the next queued object and that
//! object is triggered again through the channel given to [`Slots::new`] (the term's loop
//! reads it), and its reconcile takes the reserved slot.
//!
//! # Guarantees
//! 1. At most `concurrency` slots are held or reserved at once (no limit for 0).
//! 2. Within a lane, slots are handed out in the order they were asked for; the urgent lane is
//!    served first. A child change moves its parent's waiting reconcile to the back of the
//!    urgent lane, or, when none waits, sends the parent's next reconcile there. An object waits
//!    at most once: asking again while it waits keeps its place.
//! 3. The marks of parents whose next reconcile goes urgent are bounded ([`MAX_MARKED`]): a
//!    child of a parent that never reconciles again (deleted meanwhile) cannot grow them for the
//!    length of a term; past the bound they are dropped, which costs priority, never a reconcile.
//! 4. A slot is given back when its [`Slot`] is dropped, also unused (its object left the cache
//!    meanwhile). A reservation is never lost: when it was not taken in time ([`Slots::expire`]),
//!    the slot goes to the next waiting object. Waiting objects are dropped with the term (the
//!    next term reconciles every cached object anyway).
//! 5. `framework_reconciles_queued` counts the objects waiting, also when the term ends with
//!    some still waiting.
//!
//! # Caveats
//! 1. Urgent work can hold back the other lane for as long as children keep changing faster than
//!    the slots reconcile them.
//! 2. A reservation whose trigger raced with another trigger of the same object costs one extra,
//!    queued reconcile of it (reconciles are idempotent).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use prometheus::IntGauge;
use tokio::sync::mpsc;

/// How many parents may be marked at once (guarantee 3).
pub(crate) const MAX_MARKED: usize = 4096;

/// The slots of one controller term for objects keyed by `T` (see the module docs). Clones
/// share them.
pub(crate) struct Slots<T> {
    inner: Arc<Mutex<State<T>>>,
}

impl<T> Clone for Slots<T> {
    fn clone(&self) -> Self {
        Slots {
            inner: self.inner.clone(),
        }
    }
}

/// What a reconcile asking for a slot gets.
pub(crate) enum Turn<T: Hash + Eq + Clone> {
    /// A slot, and how long the object waited in the queue for it (zero when one was free).
    Run(Slot<T>, Duration),
    /// None free: the object waits in its lane and is triggered again when a slot is reserved
    /// for it.
    Wait,
}

/// Which lane a waiter is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Urgent,
    Normal,
}

/// One waiting object: its place in its lane (a ticket) and since when it waits.
struct Waiter {
    ticket: u64,
    lane: Lane,
    since: Instant,
}

/// A slot kept for an object that was triggered again to take it.
struct Reservation {
    /// When the object started waiting.
    queued: Instant,
    /// When the slot was reserved.
    at: Instant,
}

struct State<T> {
    free: usize,
    /// The waiting objects (at most one entry each).
    waiting: HashMap<T, Waiter>,
    /// Tickets in the order they were issued, per lane. A ticket whose waiter was promoted to
    /// the urgent lane is stale and skipped: a child change costs O(1), not a scan of the queue.
    urgent: VecDeque<(u64, T)>,
    normal: VecDeque<(u64, T)>,
    next_ticket: u64,
    /// Objects whose child changed while they did not wait: the next wait is urgent.
    marked: HashSet<T>,
    /// Slots kept for objects triggered again to take them.
    reserved: HashMap<T, Reservation>,
    /// Where objects with a reserved slot are sent to be reconciled.
    trigger: mpsc::UnboundedSender<T>,
    /// `framework_reconciles_queued`: the length of `waiting`.
    queued: IntGauge,
}

impl<T> Drop for State<T> {
    fn drop(&mut self) {
        // The term ended: its waiting objects are gone (guarantee 5).
        self.queued
            .sub(i64::try_from(self.waiting.len()).unwrap_or(i64::MAX));
    }
}

impl<T: Hash + Eq + Clone> State<T> {
    /// Puts `key` at the back of `lane` under a new ticket, waiting since `since`.
    fn enqueue(&mut self, key: &T, lane: Lane, since: Instant) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let queue = match lane {
            Lane::Urgent => &mut self.urgent,
            Lane::Normal => &mut self.normal,
        };
        queue.push_back((ticket, key.clone()));
        self.waiting.insert(
            key.clone(),
            Waiter {
                ticket,
                lane,
                since,
            },
        );
    }

    /// Takes the first live waiter out of the queue, urgent lane first.
    fn next_waiter(&mut self) -> Option<(T, Waiter)> {
        for lane in [Lane::Urgent, Lane::Normal] {
            loop {
                let queue = match lane {
                    Lane::Urgent => &mut self.urgent,
                    Lane::Normal => &mut self.normal,
                };
                let Some((ticket, key)) = queue.pop_front() else {
                    break;
                };
                if self.waiting.get(&key).is_some_and(|w| w.ticket == ticket)
                    && let Some(waiter) = self.waiting.remove(&key)
                {
                    self.queued.dec();
                    self.shrink_when_drained();
                    return Some((key, waiter));
                }
            }
        }
        None
    }

    /// Gives back what the queue took in a burst once it has drained ([`drained_room`]): a
    /// restart queues every cached object at once (10 000 objects take 3 MiB here).
    fn shrink_when_drained(&mut self) {
        if let Some(room) = drained_room(self.waiting.len(), self.waiting.capacity()) {
            self.waiting.shrink_to(room);
        }
        for queue in [&mut self.urgent, &mut self.normal] {
            if let Some(room) = drained_room(queue.len(), queue.capacity()) {
                queue.shrink_to(room);
            }
        }
    }

    /// A slot was freed: reserve it for the next waiting object and trigger that object, or
    /// keep it free.
    fn hand_on(&mut self) {
        if let Some((key, waiter)) = self.next_waiter() {
            let reservation = Reservation {
                queued: waiter.since,
                at: Instant::now(),
            };
            if self.trigger.send(key.clone()).is_ok() {
                self.reserved.insert(key, reservation);
                return;
            }
            // The term is over (nobody takes triggers): the waiters go with it.
        }
        self.free = self.free.saturating_add(1);
    }
}

/// A held slot, given back when dropped.
pub(crate) struct Slot<T: Hash + Eq + Clone> {
    inner: Arc<Mutex<State<T>>>,
}

impl<T: Hash + Eq + Clone> Drop for Slot<T> {
    fn drop(&mut self) {
        lock(&self.inner).hand_on();
    }
}

impl<T: Hash + Eq + Clone> Slots<T> {
    /// `concurrency` slots (0: no limit); objects a slot is reserved for are sent to
    /// `trigger`, waiting objects are counted in `queued`.
    pub(crate) fn new(
        concurrency: u16,
        trigger: mpsc::UnboundedSender<T>,
        queued: IntGauge,
    ) -> Self {
        let free = match concurrency {
            0 => usize::MAX,
            n => usize::from(n),
        };
        Slots {
            inner: Arc::new(Mutex::new(State {
                free,
                waiting: HashMap::new(),
                urgent: VecDeque::new(),
                normal: VecDeque::new(),
                next_ticket: 0,
                marked: HashSet::new(),
                reserved: HashMap::new(),
                trigger,
                queued,
            })),
        }
    }

    /// A child of `key` changed: its waiting reconcile moves to the back of the urgent lane,
    /// or, if it does not wait, its next wait is urgent.
    pub(crate) fn child_changed(&self, key: &T) {
        let mut state = lock(&self.inner);
        match state
            .waiting
            .get(key)
            .map(|waiter| (waiter.lane, waiter.since))
        {
            Some((Lane::Urgent, _)) => {}
            Some((Lane::Normal, since)) => state.enqueue(key, Lane::Urgent, since),
            None => {
                if state.marked.len() >= MAX_MARKED {
                    state.marked.clear();
                }
                state.marked.insert(key.clone());
            }
        }
    }

    /// A reconcile of `key` asks for a slot: the one reserved for it, a free one when nobody
    /// waits, or its place in the queue.
    pub(crate) fn take(&self, key: &T) -> Turn<T> {
        let mut state = lock(&self.inner);
        let urgent = state.marked.remove(key);
        if let Some(reservation) = state.reserved.remove(key) {
            return Turn::Run(self.slot(), reservation.queued.elapsed());
        }
        match state
            .waiting
            .get(key)
            .map(|waiter| (waiter.lane, waiter.since))
        {
            Some((Lane::Normal, since)) if urgent => state.enqueue(key, Lane::Urgent, since),
            Some(_) => {}
            None if state.free > 0 => {
                state.free -= 1;
                return Turn::Run(self.slot(), Duration::ZERO);
            }
            None => {
                let lane = if urgent { Lane::Urgent } else { Lane::Normal };
                state.enqueue(key, lane, Instant::now());
                state.queued.inc();
            }
        }
        Turn::Wait
    }

    /// Slots reserved longer than `after` ago and not taken go to the next waiting objects.
    pub(crate) fn expire(&self, after: Duration) {
        let mut state = lock(&self.inner);
        let before = state.reserved.len();
        state
            .reserved
            .retain(|_, reservation| reservation.at.elapsed() < after);
        for _ in state.reserved.len()..before {
            state.hand_on();
        }
    }

    fn slot(&self) -> Slot<T> {
        Slot {
            inner: self.inner.clone(),
        }
    }
}

/// The room to shrink a collection (a hash map, a deque: they keep their largest size until
/// told otherwise) holding `held` entries in `room` to, once it drained to an eighth of it;
/// `None` to keep it. Halving at an eighth keeps the cost of shrinking proportional to the
/// entries taken, and a small collection is left alone.
pub(crate) fn drained_room(held: usize, room: usize) -> Option<usize> {
    const SMALL: usize = 1024;
    (room > SMALL && held * 8 < room).then_some(held * 2)
}

fn lock<T>(inner: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Triggers<T = &'static str> = mpsc::UnboundedReceiver<T>;

    fn slots<T: Hash + Eq + Clone>(concurrency: u16) -> (Slots<T>, Triggers<T>, IntGauge) {
        let (trigger, triggers) = mpsc::unbounded_channel();
        let queued = IntGauge::new("queued", "test").unwrap();
        (
            Slots::new(concurrency, trigger, queued.clone()),
            triggers,
            queued,
        )
    }

    fn run(turn: Turn<&'static str>) -> Slot<&'static str> {
        match turn {
            Turn::Run(slot, _) => slot,
            Turn::Wait => panic!("expected a slot"),
        }
    }

    fn waits(turn: Turn<&'static str>) -> bool {
        matches!(turn, Turn::Wait)
    }

    /// One slot, held; then `a`, `b`, `c`, `d` ask in that order, `c` marked before it asks
    /// and `b` promoted while it waits: slots are reserved for `c`, `b` (urgent, in order),
    /// then `a`, `d`, each triggered again and taking its reserved slot.
    #[test]
    fn one_slot_serves_changed_children_first_and_each_lane_in_order() {
        let (slots, mut triggers, queued) = slots(1);
        let mut held = run(slots.take(&"holder"));
        for name in ["a", "b", "c", "d"] {
            if name == "c" {
                slots.child_changed(&"c");
            }
            assert!(waits(slots.take(&name)), "{name} waits");
        }
        slots.child_changed(&"b");
        assert_eq!(queued.get(), 4);
        let mut order = Vec::new();
        for turn in 0..5 {
            drop(held);
            let next = triggers
                .try_recv()
                .expect("a slot reserved and its object triggered");
            assert!(triggers.try_recv().is_err(), "one slot, one trigger");
            if turn == 0 {
                assert!(
                    waits(slots.take(&"late")),
                    "a reserved slot is not taken by another object"
                );
            }
            held = run(slots.take(&next));
            order.push(next);
        }
        assert_eq!(order, ["c", "b", "a", "d", "late"]);
        drop(held);
        assert_eq!(queued.get(), 0);
    }

    /// A restart queues thousands at once; once they were served, the queue's memory is given
    /// back.
    #[test]
    fn a_queue_drained_after_a_burst_gives_its_memory_back() {
        let (slots, mut triggers, queued) = slots::<usize>(1);
        let Turn::Run(mut held, _) = slots.take(&usize::MAX) else {
            panic!("a free slot")
        };
        for key in 0..10_000 {
            assert!(matches!(slots.take(&key), Turn::Wait));
        }
        let capacity = |slots: &Slots<usize>| {
            let state = lock(&slots.inner);
            (state.waiting.capacity(), state.normal.capacity())
        };
        let (waiting, queue) = capacity(&slots);
        assert!(waiting >= 10_000 && queue >= 10_000, "{waiting} {queue}");
        for _ in 0..10_000 {
            drop(held);
            let next = triggers.try_recv().expect("the next one triggered");
            let Turn::Run(slot, _) = slots.take(&next) else {
                panic!("{next}: its reserved slot")
            };
            held = slot;
        }
        assert_eq!(queued.get(), 0);
        let (waiting, queue) = capacity(&slots);
        assert!(waiting <= 2048 && queue <= 2048, "{waiting} {queue}");
        drop(held);
    }

    #[test]
    fn an_object_that_asks_again_while_it_waits_keeps_its_place() {
        let (slots, mut triggers, queued) = slots(1);
        let held = run(slots.take(&"holder"));
        assert!(waits(slots.take(&"a")));
        assert!(waits(slots.take(&"b")));
        assert!(waits(slots.take(&"a")), "a again");
        assert_eq!(queued.get(), 2, "a counted once");
        drop(held);
        assert_eq!(triggers.try_recv().unwrap(), "a");
        let a = run(slots.take(&"a"));
        drop(a);
        assert_eq!(triggers.try_recv().unwrap(), "b");
        assert!(triggers.try_recv().is_err(), "a is not triggered twice");
    }

    /// One slot, held while `first` and then `next` ask; then freed: reserved for `first`.
    fn reserved_for(first: &'static str) -> (Slots<&'static str>, Triggers) {
        let (slots, mut triggers, _) = slots(1);
        let held = run(slots.take(&"holder"));
        assert!(waits(slots.take(&first)));
        assert!(waits(slots.take(&"next")));
        drop(held);
        assert_eq!(triggers.try_recv().unwrap(), first);
        (slots, triggers)
    }

    #[test]
    fn a_slot_reserved_for_an_object_that_left_the_cache_goes_to_the_next() {
        let (slots, mut triggers) = reserved_for("gone");
        // The term takes the reserved slot, finds the object gone and drops the slot unused.
        let unused = run(slots.take(&"gone"));
        assert!(triggers.try_recv().is_err(), "held until dropped");
        drop(unused);
        assert_eq!(triggers.try_recv().unwrap(), "next");
        drop(run(slots.take(&"next")));
        // The slot is free again: a new object gets it at once.
        drop(run(slots.take(&"new")));
    }

    #[test]
    fn a_reservation_not_taken_in_time_goes_to_the_next() {
        let (slots, mut triggers) = reserved_for("slow");
        slots.expire(Duration::from_secs(60));
        assert!(triggers.try_recv().is_err(), "not expired yet");
        slots.expire(Duration::ZERO);
        assert_eq!(triggers.try_recv().unwrap(), "next");
        // "slow" comes after all: no reservation left for it, so it queues behind "next".
        assert!(waits(slots.take(&"slow")));
    }

    #[test]
    fn objects_still_waiting_when_the_term_ends_leave_the_gauge() {
        let (slots, triggers, queued) = slots(1);
        let held = run(slots.take(&"holder"));
        assert!(waits(slots.take(&"a")));
        assert!(waits(slots.take(&"b")));
        assert_eq!(queued.get(), 2);
        drop(triggers);
        // The term is over: the freed slot is not reserved for anybody.
        drop(held);
        drop(slots);
        assert_eq!(queued.get(), 0);
    }

    #[test]
    fn no_limit_for_zero_and_a_mark_counts_once() {
        let (slots, _triggers, _) = slots(0);
        let names: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let held: Vec<Slot<String>> = names
            .iter()
            .map(|name| match slots.take(name) {
                Turn::Run(slot, _) => slot,
                Turn::Wait => panic!("no limit"),
            })
            .collect();
        assert_eq!(held.len(), 100);
        slots.child_changed(&"x".to_string());
        slots.child_changed(&"x".to_string());
        assert!(lock(&slots.inner).marked.contains("x"));
        drop(slots.take(&"x".to_string()));
        assert!(
            lock(&slots.inner).marked.is_empty(),
            "taken by the first ask"
        );
    }

    #[test]
    fn marks_of_parents_that_never_reconcile_again_stay_bounded() {
        let (slots, _triggers, _) = slots(1);
        for i in 0..3 * MAX_MARKED {
            slots.child_changed(&i);
        }
        assert!(lock(&slots.inner).marked.len() <= MAX_MARKED);
        assert!(
            lock(&slots.inner).marked.contains(&(3 * MAX_MARKED - 1)),
            "the newest is kept"
        );
    }
}
