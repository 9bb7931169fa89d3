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
//! 3. A slot is given back when its [`Slot`] is dropped; a wait that ends with the term (or is
//!    dropped) never keeps one.
//!
//! # Caveats
//! 1. Urgent work can hold back the other lane for as long as children keep changing faster than
//!    the slots reconcile them.

use std::{
    collections::{HashSet, VecDeque},
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

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

struct State<T> {
    free: usize,
    /// Waiters whose object's child changed, in the order they asked (or were promoted).
    urgent: VecDeque<(T, oneshot::Sender<()>)>,
    /// The other waiters, in the order they asked.
    normal: VecDeque<(T, oneshot::Sender<()>)>,
    /// Objects whose child changed while none of their reconciles waited: the next one is urgent.
    marked: HashSet<T>,
}

/// A held slot, given back when dropped.
pub(crate) struct Slot<T> {
    inner: Arc<Mutex<State<T>>>,
}

impl<T> Drop for Slot<T> {
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
                urgent: VecDeque::new(),
                normal: VecDeque::new(),
                marked: HashSet::new(),
            })),
            term,
        }
    }

    /// A child of `key` changed: its waiting reconcile moves to the urgent lane, or, if none
    /// waits, its next one waits there.
    pub(crate) fn child_changed(&self, key: &T) {
        let mut state = lock(&self.inner);
        match state.normal.iter().position(|(waiting, _)| waiting == key) {
            Some(at) => {
                if let Some(waiter) = state.normal.remove(at) {
                    state.urgent.push_back(waiter);
                }
            }
            None => {
                if !state.urgent.iter().any(|(waiting, _)| waiting == key) {
                    state.marked.insert(key.clone());
                }
            }
        }
    }

    /// Waits for a slot for a reconcile of `key`; `None` when the term ended first.
    pub(crate) async fn wait(&self, key: &T) -> Option<Slot<T>> {
        let mut handed = {
            let mut state = lock(&self.inner);
            let urgent = state.marked.remove(key);
            if state.free > 0 && state.urgent.is_empty() && state.normal.is_empty() {
                state.free -= 1;
                return Some(self.slot());
            }
            let (sender, receiver) = oneshot::channel();
            let lane = if urgent {
                &mut state.urgent
            } else {
                &mut state.normal
            };
            lane.push_back((key.clone(), sender));
            receiver
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
fn release<T>(inner: &Mutex<State<T>>) {
    let mut state = lock(inner);
    let State {
        free,
        urgent,
        normal,
        ..
    } = &mut *state;
    for lane in [urgent, normal] {
        while let Some((_, waiter)) = lane.pop_front() {
            if waiter.send(()).is_ok() {
                return;
            }
        }
    }
    *free = free.saturating_add(1);
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
}
