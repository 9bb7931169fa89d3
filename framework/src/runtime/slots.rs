//! Reconcile slots: at most `concurrency` reconciles run at once; the others wait in two
//! first-come-first-served lanes, a parent whose child changed ahead of the rest.
//!
//! Why not kube's own limit: while all its slots are busy, kube's controller parks every due
//! trigger in an unordered set and later picks from it in hash order, so in a burst some objects
//! waited a minute behind objects triggered after them. Why two lanes: with one, a run's
//! completion waits behind every object triggered before it — in a burst of new objects, the
//! whole backlog. A child's change (a run that finished) is what the parent's status must
//! reflect and what frees its lock; new work can wait for it.
//!
//! # Guarantees
//! 1. At most `concurrency` slots are held at once (no limit for 0).
//! 2. Within a lane, slots are handed out in the order they were asked for; the urgent lane is
//!    served first. A child change moves its parent's waiting reconcile to the back of the
//!    urgent lane, or, when none waits, sends the parent's next reconcile there.
//! 3. The marks of parents whose next reconcile goes urgent are bounded ([`MAX_MARKED`]): a
//!    child of a parent that never reconciles again (deleted meanwhile) cannot grow them for the
//!    length of a term; past the bound they are dropped, which costs priority, never a reconcile.
//! 4. A slot is given back when its [`Slot`] is dropped; a wait that ends with the term (or is
//!    dropped) never keeps one.
//!
//! # Caveats
//! 1. Urgent work can hold back the other lane for as long as children keep changing faster than
//!    the slots reconcile them.
//! 2. A waiting reconcile is a running future to kube's controller (its limit is off), and kube's
//!    runner polls every running future each time it wakes: with thousands waiting (a burst, a
//!    restart over 10 000 objects) that costs CPU in proportion to the queue. Measured on 2
//!    cores against the earlier runtime: 1.38× the operator's CPU per object in a burst of
//!    1 000 (still 0.18 of a core, while the API server's CPU fell to 0.71×) and 1.3× the time
//!    to reconcile 10 000 objects after a restart. Keeping waiting reconciles out of kube's
//!    runner (a queue in front of it) removes that cost.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// How many parents may be marked at once (guarantee 3).
pub(crate) const MAX_MARKED: usize = 4096;

/// The slots of one controller term for objects keyed by `T` (see the module docs). Clones
/// share them.
pub(crate) struct Slots<T> {
    inner: Arc<Mutex<State<T>>>,
    term: CancellationToken,
}

impl<T> Clone for Slots<T> {
    fn clone(&self) -> Self {
        Slots {
            inner: self.inner.clone(),
            term: self.term.clone(),
        }
    }
}

/// Which lane a waiter is in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lane {
    Urgent,
    Normal,
}

/// One waiting reconcile: its place in its lane (a ticket) and where to hand its slot.
struct Waiter {
    ticket: u64,
    lane: Lane,
    hand: oneshot::Sender<()>,
}

struct State<T> {
    free: usize,
    /// The waiting reconciles by object (the runtime never runs two for one object at once).
    waiting: HashMap<T, Waiter>,
    /// Tickets in the order they were issued, per lane. A ticket whose waiter was promoted to
    /// the urgent lane (or replaced) is stale and skipped: a child change costs O(1), not a
    /// scan of the queue.
    urgent: VecDeque<(u64, T)>,
    normal: VecDeque<(u64, T)>,
    next_ticket: u64,
    /// Objects whose child changed while none of their reconciles waited: the next one is urgent.
    marked: HashSet<T>,
}

impl<T: Hash + Eq + Clone> State<T> {
    /// Puts `key`'s waiter at the back of `lane` under a new ticket.
    fn enqueue(&mut self, key: &T, lane: Lane, hand: oneshot::Sender<()>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let queue = match lane {
            Lane::Urgent => &mut self.urgent,
            Lane::Normal => &mut self.normal,
        };
        queue.push_back((ticket, key.clone()));
        self.waiting
            .insert(key.clone(), Waiter { ticket, lane, hand });
    }

    /// The first live waiter's hand, urgent lane first.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<()>> {
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
                    return Some(waiter.hand);
                }
            }
        }
        None
    }
}

/// A held slot, given back when dropped.
pub(crate) struct Slot<T: Hash + Eq + Clone> {
    inner: Arc<Mutex<State<T>>>,
}

impl<T: Hash + Eq + Clone> Drop for Slot<T> {
    fn drop(&mut self) {
        release(&self.inner);
    }
}

impl<T: Hash + Eq + Clone> Slots<T> {
    /// `concurrency` slots (0: no limit) for a term that ends with `term`.
    pub(crate) fn new(concurrency: u16, term: CancellationToken) -> Self {
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
            })),
            term,
        }
    }

    /// A child of `key` changed: its waiting reconcile moves to the back of the urgent lane,
    /// or, if none waits, its next one waits there.
    pub(crate) fn child_changed(&self, key: &T) {
        let mut state = lock(&self.inner);
        match state.waiting.get(key).map(|waiter| waiter.lane) {
            Some(Lane::Urgent) => {}
            Some(Lane::Normal) => {
                if let Some(waiter) = state.waiting.remove(key) {
                    state.enqueue(key, Lane::Urgent, waiter.hand);
                }
            }
            None => {
                if state.marked.len() >= MAX_MARKED {
                    state.marked.clear();
                }
                state.marked.insert(key.clone());
            }
        }
    }

    /// Waits for a slot for a reconcile of `key`; `None` when the term ended first.
    pub(crate) async fn wait(&self, key: &T) -> Option<Slot<T>> {
        let mut handed = {
            let mut state = lock(&self.inner);
            let lane = if state.marked.remove(key) {
                Lane::Urgent
            } else {
                Lane::Normal
            };
            if state.free > 0 && state.waiting.is_empty() {
                state.free -= 1;
                return Some(self.slot());
            }
            let (hand, handed) = oneshot::channel();
            state.enqueue(key, lane, hand);
            handed
        };
        tokio::select! {
            handed_over = &mut handed => handed_over.ok().map(|()| self.slot()),
            () = self.term.cancelled() => {
                // A slot handed over in the meantime goes back.
                handed.close();
                if handed.try_recv().is_ok() {
                    release(&self.inner);
                }
                None
            }
        }
    }

    fn slot(&self) -> Slot<T> {
        Slot {
            inner: self.inner.clone(),
        }
    }
}

/// Hands a freed slot to the first live waiter, urgent lane first, else keeps it free.
fn release<T: Hash + Eq + Clone>(inner: &Mutex<State<T>>) {
    let mut state = lock(inner);
    while let Some(hand) = state.next_waiter() {
        if hand.send(()).is_ok() {
            return;
        }
    }
    state.free = state.free.saturating_add(1);
}

fn lock<T>(inner: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type Order = Arc<Mutex<Vec<&'static str>>>;

    /// Starts a reconcile of `name` that records it in `order` once it holds a slot, then
    /// holds the slot until the returned sender fires.
    fn waiter(
        slots: &Slots<&'static str>,
        name: &'static str,
        order: &Order,
    ) -> (tokio::task::JoinHandle<bool>, oneshot::Sender<()>) {
        let (release, released) = oneshot::channel::<()>();
        let (slots, order) = (slots.clone(), order.clone());
        let task = tokio::spawn(async move {
            let Some(slot) = slots.wait(&name).await else {
                return false;
            };
            order.lock().unwrap().push(name);
            let _ = released.await;
            drop(slot);
            true
        });
        (task, release)
    }

    /// Lets every spawned task run until it blocks.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// One slot, held; then `a`, `b`, `c`, `d` ask in that order, `c` marked before it asks
    /// and `b` promoted while it waits: `c`, `b` (urgent, in order), then `a`, `d`.
    #[tokio::test]
    async fn one_slot_serves_changed_children_first_and_each_lane_in_order() {
        let slots = Slots::new(1, CancellationToken::new());
        let order = Order::default();
        let (holder, free_holder) = waiter(&slots, "holder", &order);
        settle().await;
        let (mut tasks, mut releases) = (vec![holder], Vec::new());
        for name in ["a", "b", "c", "d"] {
            if name == "c" {
                slots.child_changed(&"c");
            }
            let (task, release) = waiter(&slots, name, &order);
            settle().await;
            tasks.push(task);
            releases.push(release);
        }
        slots.child_changed(&"b");
        assert_eq!(*order.lock().unwrap(), ["holder"], "one slot, held");
        free_holder.send(()).unwrap();
        for release in releases {
            settle().await;
            release.send(()).unwrap();
        }
        for task in tasks {
            assert!(task.await.unwrap());
        }
        assert_eq!(*order.lock().unwrap(), ["holder", "c", "b", "a", "d"]);
    }

    #[tokio::test]
    async fn a_wait_that_ends_with_the_term_holds_no_slot() {
        let term = CancellationToken::new();
        let slots = Slots::new(1, term.clone());
        let held = slots.wait(&"held").await.expect("a free slot");
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.wait(&"waiting").await.is_some() }
        });
        settle().await;
        term.cancel();
        assert!(!waiting.await.unwrap(), "the term ended first");
        drop(held);
        // The slot is free again: a new wait gets it at once.
        let again = tokio::time::timeout(Duration::from_secs(5), slots.wait(&"again")).await;
        assert!(again.unwrap().is_some());
    }

    #[tokio::test]
    async fn no_limit_for_zero_and_a_mark_counts_once() {
        let slots = Slots::new(0, CancellationToken::new());
        let names: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let held: Vec<Slot<String>> =
            futures::future::join_all(names.iter().map(|n| slots.wait(n)))
                .await
                .into_iter()
                .map(Option::unwrap)
                .collect();
        assert_eq!(held.len(), 100);
        slots.child_changed(&"x".to_string());
        slots.child_changed(&"x".to_string());
        assert!(lock(&slots.inner).marked.contains("x"));
        drop(slots.wait(&"x".to_string()).await);
        assert!(
            lock(&slots.inner).marked.is_empty(),
            "taken by the first wait"
        );
    }

    #[tokio::test]
    async fn marks_of_parents_that_never_reconcile_again_stay_bounded() {
        let slots = Slots::new(1, CancellationToken::new());
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
