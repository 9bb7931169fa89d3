//! Controller terms: the leader-only part of the runtime.
//!
//! Each time this replica becomes leader, a new term starts over the already-synced caches and
//! runs until leadership is lost or shutdown begins. A term is the runtime's own controller loop:
//! the watch triggers of the parents and their children, the requeue timers the reconciles ask
//! for ([`schedule`]) and the reconcile slots ([`slots`]) decide which parent is reconciled
//! when; one reconcile per parent runs at a time, and a parent triggered while its reconcile runs
//! is reconciled again once it finished. The reconcile function is wrapped with the framework's
//! bookkeeping: duration and result metrics, the error kind label, panic isolation and the
//! per-object error backoff.
//!
//! Why not kube's `Controller`: it needs its objects to carry a whole `ObjectMeta` and keys
//! every cached object, every trigger and every timer by an `ObjectRef` of its own (together
//! about 1 KiB per parent at 10 000 parents, kept after a restart's reconcile of all of them);
//! a term keys them by the cached parent's shared name and namespace ([`ParentKey`]).
//!
//! # Guarantees
//! 1. A term starts only after every cache (parents, each child and grandchild kind) synced, and first reconciles every cached parent
//!    (requeues of an earlier term are not carried over).
//! 2. A term ends gracefully: no new reconcile starts, in-flight ones finish, then `run` returns.
//! 3. A panicking reconcile is a failed reconcile (error kind `panic`), not a dead controller.
//! 4. After every reconcile the error backoff is updated: reset on success, one more attempt
//!    (and a requeue after its delay) on failure.
//! 5. A reconcile of an object in error backoff that the controller starts before the next
//!    attempt is due runs only if the object changed in something but status and bookkeeping, or
//!    a child of it changed, since the failed attempt started ([`ErrorBackoff::hold_at`]);
//!    otherwise the reconcile function is not called, nothing is written, and the object is
//!    requeued for when the attempt is due. The object's own status writes (the failure report
//!    among them) therefore never cut a backoff short, whatever order their watch events arrive in.
//! 6. Reconciles wait for a slot first come, first served, those of a parent whose child
//!    changed ahead of the others ([`slots`]): at most `concurrency` run at once, and a
//!    reconcile that waited runs on the object as cached when it gets its slot, not as it was
//!    when triggered. A waiting object is not a running reconcile: it waits in the slots' queue
//!    and is triggered again when a slot is reserved for it.
//! 7. A reconcile handed a cached copy that this process's own write replaced (the
//!    [`OwnWrites`](crate::own_writes::OwnWrites) given to `Operator::own_writes`) waits in its
//!    slot for the watch event of that write and reconciles the newer version ([`catch_up`]):
//!    it is never left to a later trigger queued behind other objects. The wait is bounded;
//!    after it the outdated copy is reconciled (and stands aside) as before.
//!
//! 8. A term that ends (leadership lost, shutdown) starts none of the objects still waiting
//!    for a slot; the next term reconciles every cached object anyway (guarantee 1).
//!
//! 9. An object has at most one requeue timer (the earlier time wins); a watch trigger drops it,
//!    and the reconcile it starts sets the next from its [`Action`].
//!
//! [`catch_up`]: super::catch_up
//! [`slots`]: super::slots
//! [`schedule`]: super::schedule
//! [`ErrorBackoff::hold_at`]: crate::backoff::ErrorBackoff::hold_at

use std::{
    collections::HashMap, fmt::Debug, future::Future, marker::PhantomData, panic::AssertUnwindSafe,
    sync::Arc, time::Duration,
};

use futures::{
    FutureExt, StreamExt,
    future::BoxFuture,
    stream::{self, BoxStream, FuturesUnordered},
};
use kube::{Resource, api::DynamicObject, runtime::reflector::ObjectRef};
use thiserror::Error;
use tokio::{
    sync::{broadcast, mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::{
    ChildWatch, Context, MetricLabel, ParentResource,
    catch_up::{CatchUp, Latest},
    frozen::{Frozen, ParentKey},
    metrics, reflect,
    schedule::{Action, Timers},
    slots::{Slots, Turn, drained_room},
    stores::ChildStore,
    surface,
};
use crate::backoff::{self, AttemptBasis, Hold};

/// A failed reconcile as the controller sees it: the operator's error or a caught panic.
#[derive(Debug, Error)]
enum ReconcileFailure<E> {
    #[error(transparent)]
    Reconciler(E),
    #[error("reconcile panicked: {0}")]
    Panicked(String),
}

impl<E: MetricLabel> ReconcileFailure<E> {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Reconciler(error) => error.metric_label(),
            Self::Panicked(_) => metrics::KIND_PANIC,
        }
    }
}

/// One watched child (or grandchild) kind as a term follows it: how its objects map to parents,
/// the events its reflector passes on, and its store (re-read when the term falls behind).
pub(crate) struct KindTrigger {
    pub(crate) watch: ChildWatch,
    pub(crate) sender: broadcast::Sender<Arc<DynamicObject>>,
    pub(crate) store: ChildStore,
}

/// The leader-only part: one controller loop per leadership term.
pub(crate) struct ControllerTerms<K, D, E, F>
where
    K: Resource<DynamicType = ()> + 'static,
{
    pub(crate) context: Arc<Context<K, D>>,
    pub(crate) reconcile: Arc<F>,
    pub(crate) leading: watch::Receiver<bool>,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled once every cache completed their first list.
    pub(crate) synced: CancellationToken,
    pub(crate) parent_tx: broadcast::Sender<Arc<Frozen<K>>>,
    /// Every watched child and grandchild kind.
    pub(crate) kinds: Vec<KindTrigger>,
    pub(crate) concurrency: u16,
    /// Waits for the parent cache to catch up with this process's own writes.
    pub(crate) catch_up: Arc<CatchUp<K>>,
    pub(crate) _error: PhantomData<fn() -> E>,
}

impl<K, D, E, F, Fut> ControllerTerms<K, D, E, F>
where
    K: ParentResource,
    D: Send + Sync + 'static,
    E: std::error::Error + MetricLabel + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context<K, D>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    /// Runs terms until shutdown; returns after the last term's reconciles finished.
    pub(crate) async fn run(self) {
        tokio::select! {
            () = self.shutdown.cancelled() => return,
            () = self.synced.cancelled() => {}
        }
        loop {
            let mut leading = self.leading.clone();
            let became_leader = async move { leading.wait_for(|l| *l).await.is_ok() };
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                ok = became_leader => if !ok { return },
            }
            let term = self.shutdown.child_token();
            let mut leading = self.leading.clone();
            let term_guard = term.clone();
            let lost = AbortOnDrop(tokio::spawn(async move {
                let _ = leading.wait_for(|l| !*l).await;
                term_guard.cancel();
            }));
            tracing::info!("leading: starting to reconcile");
            self.run_term(term).await;
            drop(lost);
            if self.shutdown.is_cancelled() {
                return;
            }
            tracing::info!("leadership lost: stopped reconciling, caches stay warm");
        }
    }

    async fn run_term(&self, term: CancellationToken) {
        let context = &self.context;
        let (trigger, mut reserved) = mpsc::unbounded_channel();
        let slots = Slots::new(
            self.concurrency,
            trigger,
            context.metrics.reconciles_queued.clone(),
        );
        let _expiry = AbortOnDrop(tokio::spawn(expire_reservations(slots.clone())));
        let mut triggers = stream::select_all(self.trigger_streams(&slots));
        let mut state = TermState {
            slots,
            timers: Timers::default(),
            running: HashMap::new(),
            inflight: FuturesUnordered::new(),
        };
        // Everything cached is reconciled once per term: requeues of the previous term are gone.
        for frozen in context.parents.frozen_state() {
            self.trigger(&mut state, frozen.key().clone());
        }
        loop {
            let first = state.timers.first();
            tokio::select! {
                biased;
                () = term.cancelled() => break,
                Some((key, action)) = state.inflight.next(), if !state.inflight.is_empty() => {
                    self.finished(&mut state, key, action);
                }
                // An object a slot was reserved for is reconciled at once.
                Some(key) = reserved.recv() => self.trigger(&mut state, key),
                Some(key) = triggers.next() => self.trigger(&mut state, key),
                () = sleep_until(first), if first.is_some() => {
                    while let Some(key) = state.timers.pop_due(Instant::now()) {
                        self.trigger(&mut state, key);
                    }
                }
            }
        }
        // The term ends gracefully: nothing new starts, the running reconciles finish.
        while state.inflight.next().await.is_some() {}
    }

    /// The watch triggers of a term, each the key of the parent to reconcile: the parents' own
    /// events and each child and grandchild kind's, mapped to their parents.
    fn trigger_streams(&self, slots: &Slots<ParentKey>) -> Vec<BoxStream<'static, ParentKey>> {
        let parents = self.context.parents.clone();
        let mut streams = vec![
            reflect::trigger_stream(
                self.parent_tx.subscribe(),
                move || parents.frozen_state(),
                Some,
            )
            .map(|frozen| frozen.key().clone())
            .boxed(),
        ];
        for KindTrigger {
            watch,
            sender,
            store,
        } in &self.kinds
        {
            let (mapper, context, slots) = (watch.clone(), self.context.clone(), slots.clone());
            let store = store.clone();
            streams.push(
                reflect::trigger_stream(
                    sender.subscribe(),
                    move || store.frozen_state(),
                    |frozen| frozen.thaw().map(Arc::new),
                )
                .filter_map(move |child: Arc<DynamicObject>| {
                    let key = mapper.parent_of::<K>(&child).and_then(|parent| {
                        // A child changed (its status, its existence): a real change for a
                        // parent in error backoff, which is then reconciled at once.
                        context.error_backoff.note_change(&parent);
                        // A parent gone from the cache is never reconciled.
                        let frozen = context
                            .parents
                            .frozen_named(&parent.name, parent.namespace.as_deref())?;
                        // And what the parent's status must reflect: its reconcile goes first.
                        slots.child_changed(frozen.key());
                        Some(frozen.key().clone())
                    });
                    std::future::ready(key)
                })
                .boxed(),
            );
        }
        streams
    }

    /// `key` is to be reconciled now: a later requeue of it is dropped (its reconcile's action
    /// sets the next); it runs when it gets a slot, after its running reconcile if it has one.
    fn trigger(&self, state: &mut TermState, key: ParentKey) {
        state.timers.cancel(&key);
        if let Some(again) = state.running.get_mut(&key) {
            *again = true;
            return;
        }
        let (slot, waited) = match state.slots.take(&key) {
            Turn::Run(slot, waited) => (slot, waited),
            // Triggered again when a slot is reserved for it.
            Turn::Wait => return,
        };
        // A slot dropped unused goes to the next waiting object.
        let Some(frozen) = self.context.parents.frozen(&key) else {
            tracing::debug!(object = %key, "object left the cache before its reconcile");
            return;
        };
        // Frozen text always thaws (see `frozen`); a parent that did not would be logged there
        // and left alone.
        let Some(object) = self.context.parents.thaw(&frozen) else {
            return;
        };
        self.context
            .metrics
            .reconcile_queue_wait
            .observe(waited.as_secs_f64());
        state.running.insert(key.clone(), false);
        let context = self.context.clone();
        let reconcile = wrap_reconcile(
            self.reconcile.clone(),
            self.catch_up.clone(),
            object,
            context.clone(),
        );
        state.inflight.push(
            async move {
                let result = reconcile.await;
                drop(slot);
                let action = match result {
                    Ok(action) => action,
                    Err(error) => error_policy(&key.reference(), &error, &context),
                };
                (key, action)
            }
            .boxed(),
        );
    }

    /// `key`'s reconcile finished asking for `action`.
    fn finished(&self, state: &mut TermState, key: ParentKey, action: Action) {
        if state.running.remove(&key).unwrap_or(false) {
            self.trigger(state, key);
        } else if let Some(after) = action.requeue_after() {
            state.timers.at(key, Instant::now() + after);
        }
        if let Some(room) = drained_room(state.running.len(), state.running.capacity()) {
            state.running.shrink_to(room);
        }
    }
}

/// One term's reconciles: which objects run, which are due again when, and the running
/// reconciles themselves (polled by the term's task, as kube's runner polls them).
struct TermState {
    slots: Slots<ParentKey>,
    timers: Timers<ParentKey>,
    /// The objects whose reconcile runs; `true` when triggered again meanwhile (it then runs
    /// again once the running one finished: one reconcile per object at a time).
    running: HashMap<ParentKey, bool>,
    inflight: FuturesUnordered<BoxFuture<'static, (ParentKey, Action)>>,
}

/// Sleeps until `at`; never wakes without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// How long a reserved slot waits for its object's reconcile before it goes to the next one
/// (kube starts a triggered reconcile at once: this only guards against a lost trigger).
const RESERVATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Hands on reserved slots whose reconcile never came ([`Slots::expire`]), for as long as the
/// term runs.
async fn expire_reservations(slots: Slots<ParentKey>) {
    let mut tick = tokio::time::interval(RESERVATION_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        slots.expire(RESERVATION_TIMEOUT);
    }
}

/// Aborts a spawned helper when its owner goes away (also when the owner is itself aborted).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn wrap_reconcile<K, D, E, F, Fut>(
    reconcile: Arc<F>,
    catch_up: Arc<CatchUp<K>>,
    object: Arc<K>,
    context: Arc<Context<K, D>>,
) -> BoxFuture<'static, Result<Action, ReconcileFailure<E>>>
where
    K: ParentResource,
    D: Send + Sync + 'static,
    E: std::error::Error + MetricLabel + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context<K, D>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    async move {
        let object = latest(&catch_up, &context.metrics, object).await;
        let key = ObjectRef::from_obj(&*object);
        let basis = match context.error_backoff.hold_at(
            &key,
            || backoff::fingerprint(&*object),
            jiff::Timestamp::now(),
        ) {
            Hold::Run(basis) => basis,
            Hold::Wait(remaining) => {
                context.metrics.reconciles_held.inc();
                tracing::debug!(object = %key, retry_in = ?remaining, "in error backoff and unchanged; reconcile held back");
                return Ok(Action::requeue(remaining));
            }
        };
        let started = Instant::now();
        let call_context = context.clone();
        let handed = object.clone();
        let outcome = AssertUnwindSafe(async move { reconcile(object, call_context).await })
            .catch_unwind()
            .await;
        let result = match outcome {
            Ok(Ok(action)) => Ok(action),
            Ok(Err(error)) => Err(ReconcileFailure::Reconciler(error)),
            Err(panic) => Err(ReconcileFailure::Panicked(panic_message(panic.as_ref()))),
        };
        context.metrics.observe_reconcile(
            started.elapsed(),
            result.as_ref().err().map(ReconcileFailure::metric_label),
        );
        match &result {
            Ok(_) => {
                context.error_backoff.reset(&key);
                surface::resolve(&context, &key).await;
            }
            Err(error) => {
                let basis = AttemptBasis {
                    fingerprint: backoff::fingerprint(&*handed),
                    ..basis
                };
                let attempt = context.error_backoff.record_failure_at(
                    &key,
                    &error.to_string(),
                    basis,
                    jiff::Timestamp::now(),
                );
                surface::report(&context, &key, &attempt, error.metric_label()).await;
            }
        }
        result
    }
    .boxed()
}

/// The copy to reconcile: a cached copy this process's own write replaced is exchanged for the
/// newer version once the watch event of that write stored it (guarantee 6), counted in the
/// metrics.
async fn latest<K: ParentResource>(
    catch_up: &CatchUp<K>,
    metrics: &metrics::FrameworkMetrics,
    object: Arc<K>,
) -> Arc<K> {
    let latest = catch_up.latest(object).await;
    match &latest {
        Latest::Current(_) => {}
        Latest::CaughtUp(object, waited) => {
            metrics
                .own_write_waits
                .with_label_values(&[metrics::OUTCOME_CAUGHT_UP])
                .inc();
            metrics.own_write_wait.observe(waited.as_secs_f64());
            tracing::debug!(object = %ObjectRef::from_obj(&**object), ?waited, "cached copy caught up with our own write");
        }
        Latest::Outdated(object) => {
            metrics
                .own_write_waits
                .with_label_values(&[metrics::OUTCOME_TIMED_OUT])
                .inc();
            tracing::debug!(object = %ObjectRef::from_obj(&**object), "cached copy still predates our own write");
        }
    }
    latest.object()
}

fn error_policy<K, D, E>(
    key: &ObjectRef<K>,
    error: &ReconcileFailure<E>,
    context: &Context<K, D>,
) -> Action
where
    K: Resource<DynamicType = ()> + 'static,
    E: std::error::Error + MetricLabel,
{
    let key = key.clone();
    // The attempt was recorded (and reported) by the reconcile wrapper, which can await.
    let attempt = context
        .error_backoff
        .get(&key)
        .unwrap_or_else(|| context.error_backoff.record_error(&key, &error.to_string()));
    tracing::warn!(
        object = %key,
        attempt = attempt.attempt,
        retry_in = ?attempt.delay,
        kind = error.metric_label(),
        %error,
        "reconcile failed"
    );
    Action::requeue(attempt.delay)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_payloads_become_messages() {
        let cases: [(&str, Box<dyn std::any::Any + Send>, &str); 3] = [
            ("str", Box::new("boom"), "boom"),
            ("string", Box::new(String::from("bang")), "bang"),
            ("other", Box::new(42_u8), "non-string panic payload"),
        ];
        for (name, payload, want) in cases {
            assert_eq!(panic_message(payload.as_ref()), want, "{name}");
        }
    }
}
