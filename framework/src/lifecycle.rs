//! Lifecycle: what a phase handler decides ([`Outcome`]), the one status write that commits it
//! ([`write_status`], [`commit`]), the effects that follow only that write ([`Effects`]), and the
//! whole reconcile of a phased object around them ([`reconcile`]).
//!
//! A phase handler is a pure decision: from the object, what was observed and the time, it
//! returns the status to write, the effects of reaching it (Events, audit records, metric
//! updates, log lines: whatever the operator's effect type `E` says; [`crate::effect`] has the
//! framework's vocabulary and its [`Reporter`](crate::effect::Reporter)) and when to look again. This
//! module writes the status and applies the effects, so an operator declares only its handlers,
//! its initial status and how to apply one effect.
//!
//! The operator implements [`PhasedStatus`] on its status type (its parent type is then a
//! [`PhasedObject`]),
//! [`phase::PhaseHandlers`] with [`Outcome`] as output, [`Effects`] and [`Lifecycle`] on its
//! reconcile pass, and its reconcile function becomes one call of [`reconcile`].
//!
//! # Flow of [`reconcile`]
//!
//! 1. A copy the cache handed over that this process already replaced by its own write
//!    ([`OwnWrites::is_outdated`]) is left alone: the watch event of the newer version follows.
//! 2. [`finalizer::event`]: the finalizer is added on first sight (the patch is recorded as an own
//!    write), a deleting object goes to [`Lifecycle::cleanup`] and loses the finalizer once that
//!    says [`Cleanup::Done`], a finished deletion ends here.
//! 3. An object without a phase is handled as if it had [`Lifecycle::initial_status`]: the
//!    initial phase's handler decides on that copy. When the operator says the outcome may replace
//!    the initial status ([`Lifecycle::skips_initial_write`], e.g. a start that needs no waiting),
//!    the outcome is the one status write; otherwise the initial status is written first and the
//!    outcome committed after it.
//! 4. [`phase::dispatch`] runs the handler of the object's phase and checks the phase it chose.
//!    The handler decides on the object as last decided: with the status a previous pass held
//!    back, if any ([`crate::pace::Pace::held`]).
//! 5. [`commit`] writes the handler's status and applies its effects; an outcome declared as mere
//!    progress ([`Outcome::progress`]) is held back while the object was written less than the
//!    operator's progress interval ago ([`Lifecycle::pace`], [`crate::pace`]): its status is kept
//!    in memory for the next pass to decide from, and the object is reconciled again when the
//!    interval ends. Whether a status changed is always judged against the stored status.
//!
//! # Guarantees
//!
//! 1. Status is written only when it differs from the object's, with the resourceVersion read
//!    (`PUT .../status`): a concurrent change makes the write fail with `409 Conflict`, returned
//!    as an error, never clobbered. The whole-object PUT is kept over a JSON merge patch of what
//!    changed because it costs the API server less CPU per write (`make bench`, "Status writes":
//!    about 10 % less, although the patch body is a sixth of the size).
//! 2. A phase change is checked with [`phase::transition`] before it is written: an illegal one is
//!    an error and nothing is sent.
//! 3. The object is written without `managedFields` (they are the API server's bookkeeping).
//! 4. Every successful write is recorded in the [`OwnWrites`] given, so the next reconcile of a
//!    lagging cache copy stands aside.
//! 5. Effects are applied, in order, only after a write that happened: an unchanged status, a
//!    refused transition or a failed write applies none.
//! 6. An object seen without a phase is written once or twice before its first handler's outcome
//!    is visible, never more; the initial status is written first unless the operator lets the
//!    outcome replace it, and then the outcome's phase is still checked as a transition from the
//!    initial phase. A first handler that fails leaves the object in its initial phase.
//! 7. Only an outcome declared as progress, with no effects and the object's phase, is ever held
//!    back, and at most for the progress interval since this process's last status write of the
//!    object; a held outcome replaces its action by a reconcile at the end of the interval.
//! 8. A held status is never lost while the process lives: every later pass decides from it
//!    (a handler that returns it unchanged keeps it held), and the next write of the object —
//!    at the end of the interval, or earlier for a phase change or an effect — carries what was
//!    decided from it. It is dropped only when the stored status changes under it (someone
//!    else's write wins) or the object's cleanup is done.
//!
//! # Assumptions
//!
//! 1. The parent is namespaced (as the runtime assumes) and its status is written through the
//!    `status` subresource.
//! 2. Applying an effect does not fail the reconcile: it is best-effort or infallible (an Event is
//!    published beside the reconcile, see `Context::publish_detached` in [`crate::runtime`]).
//!
//! # Caveats
//!
//! 1. Effects follow the write, so a process that stops between the write and the effects loses
//!    them (the status, which is what the next pass decides from, is never lost).
//! 2. The status is replaced whole: a field of the status this operator does not model is dropped
//!    by the write.
//! 3. When the outcome replaces the initial status, the handler acts (creates a child, say)
//!    before the object's first status write: a write that fails then is followed by a pass that
//!    again sees no phase, so that handler must find and adopt what the earlier pass created.
//! 4. A held status lives in this process's memory only: a process that stops within the
//!    interval loses it, and its successor decides again from the cluster. A fact that only the
//!    held status carried is lost only if what showed it is gone by then too (see
//!    [`crate::pace`], caveat 1).

use std::{fmt::Debug, future::Future, sync::Arc, time::Duration};

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource, ResourceExt, api::PostParams, core::object::HasStatus};
use serde::{Serialize, de::DeserializeOwned};
use tracing::debug;

use crate::{
    finalizer::{self, FinalizerError},
    lock::LockError,
    names::namespaced_name,
    own_writes::OwnWrites,
    pace::{Pace, PaceDecision},
    phase::{self, IllegalTransition, Phase, PhaseHandlers},
    runtime::{Action, MetricLabel},
};

/// What a phase handler decided for one object: the status to write, the effects of reaching
/// it, and when to reconcile again.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<S, E> {
    /// The status to write; `None` leaves the status as it is.
    pub status: Option<S>,
    /// Applied, in order, only when the status write changed the object.
    pub effects: Vec<E>,
    /// When to reconcile again.
    pub action: Action,
    /// The status differs from the object's only in progress: its write may be held back for
    /// the operator's progress interval ([`Lifecycle::pace`]). Ignored when there are effects.
    pub progress: bool,
}

impl<S, E> Outcome<S, E> {
    /// Write `status`, then look again as `action` says.
    pub fn write(status: S, action: Action) -> Self {
        Self {
            status: Some(status),
            effects: Vec::new(),
            action,
            progress: false,
        }
    }

    /// Write `status`, which differs from the object's only in progress (a child's intermediate
    /// state mirrored into it): at most once per progress interval, the latest one at its end.
    /// Then look again as `action` says.
    pub fn progress(status: S, action: Action) -> Self {
        Self {
            progress: true,
            ..Self::write(status, action)
        }
    }

    /// Leave the status as it is.
    pub fn unchanged(action: Action) -> Self {
        Self {
            status: None,
            effects: Vec::new(),
            action,
            progress: false,
        }
    }

    /// Adds an effect.
    #[must_use]
    pub fn with(mut self, effect: E) -> Self {
        self.effects.push(effect);
        self
    }
}

impl<S: PhasedStatus, E> phase::Outcome<S::Phase> for Outcome<S, E> {
    fn next_phase(&self) -> Option<S::Phase> {
        self.status.as_ref().and_then(PhasedStatus::phase)
    }
}

/// A status that carries a lifecycle phase.
pub trait PhasedStatus {
    /// The lifecycle.
    type Phase: Phase;

    /// The phase recorded in this status (`None`: not set yet).
    fn phase(&self) -> Option<Self::Phase>;
}

/// A parent kind whose status the framework writes: a namespaced object with a
/// [`kube::core::object::HasStatus`] status (which `#[derive(CustomResource)]` implements for a
/// `status = "..."` type) that carries a phase. Implemented for every such type.
pub trait PhasedObject:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasStatus<Status: PhasedStatus + PartialEq + Clone + Serialize + Send + Sync>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The phase of the object's status (`None`: no status or no phase yet).
    fn current_phase(&self) -> Option<PhaseOf<Self>> {
        self.status().and_then(PhasedStatus::phase)
    }
}

impl<K> PhasedObject for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + HasStatus<Status: PhasedStatus + PartialEq + Clone + Serialize + Send + Sync>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// The lifecycle phase of `K`'s status.
pub type PhaseOf<K> = <<K as HasStatus>::Status as PhasedStatus>::Phase;

/// How an operator applies one effect about an object, once its status is written.
pub trait Effects<K, E> {
    /// Applies `effect` about `written` (the object as the status write returned it).
    fn apply(&self, written: &K, effect: E);
}

/// Why a status write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StatusError<P: Phase> {
    /// The new status moves to a phase the lifecycle does not allow from the current one.
    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition<P>),
    /// The object has no namespace or no name, so it cannot be addressed.
    #[error("{object} has no namespace or name")]
    Unaddressable {
        /// The object, as far as it is named.
        object: String,
    },
    /// The API call failed (a `409 Conflict` when the object changed since it was read).
    #[error("writing the status of {object}: {source}")]
    Write {
        /// `namespace/name` of the object.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

/// What can fail the reconcile of a phased object with phases `P`, for an operator whose
/// reconcile fails only in the framework's ways; every such failure is retried with per-object
/// backoff. Its [`MetricLabel`]s are `kube`, `finalizer`, `lock`, `illegal_transition` and
/// `invalid`.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError<P: Phase> {
    /// An API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Adding or removing the finalizer failed.
    #[error(transparent)]
    Finalizer(#[from] FinalizerError),
    /// Acquiring or releasing a lock failed transiently.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A status write did not happen: a phase change the lifecycle does not allow, or the API
    /// call failed.
    #[error(transparent)]
    Status(#[from] StatusError<P>),
    /// The object is missing data the API server always sets, or asks for what is not
    /// configured.
    #[error("{0}")]
    Invalid(String),
}

impl<P: Phase> ReconcileError<P> {
    /// For `map_err`: an API error met while doing `action` (`reading PipelineRun x`).
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| ReconcileError::Kube { action, source }
    }
}

impl<P: Phase> From<IllegalTransition<P>> for ReconcileError<P> {
    fn from(e: IllegalTransition<P>) -> Self {
        ReconcileError::Status(e.into())
    }
}

impl<P: Phase> MetricLabel for ReconcileError<P> {
    fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Kube { .. } => "kube",
            ReconcileError::Finalizer(_) => "finalizer",
            ReconcileError::Lock(_) => "lock",
            ReconcileError::Status(e) => e.metric_label(),
            ReconcileError::Invalid(_) => "invalid",
        }
    }
}

impl<P: Phase> MetricLabel for StatusError<P> {
    /// `illegal_transition`, `invalid` (unaddressable) or `kube` (the write failed).
    fn metric_label(&self) -> &'static str {
        match self {
            StatusError::IllegalTransition(_) => "illegal_transition",
            StatusError::Unaddressable { .. } => "invalid",
            StatusError::Write { .. } => "kube",
        }
    }
}

/// Writes `status` to `object` if it differs from the object's own, after checking the phase
/// transition, with the resourceVersion of `object` and without `managedFields`; records the
/// write in `own_writes`. Returns the written object, or `None` when the status was unchanged
/// (and nothing was sent).
///
/// # Errors
///
/// [`StatusError::IllegalTransition`] (nothing sent), [`StatusError::Unaddressable`], or
/// [`StatusError::Write`] when the API call fails.
pub async fn write_status<K: PhasedObject>(
    client: &Client,
    own_writes: &OwnWrites<K>,
    object: &K,
    status: K::Status,
) -> Result<Option<K>, StatusError<PhaseOf<K>>> {
    write_status_from(client, own_writes, object, object.current_phase(), status).await
}

/// [`write_status`], the phase change checked from `from` rather than from the object's phase
/// (an object without a phase handled as if it had its initial one).
async fn write_status_from<K: PhasedObject>(
    client: &Client,
    own_writes: &OwnWrites<K>,
    object: &K,
    from: Option<PhaseOf<K>>,
    status: K::Status,
) -> Result<Option<K>, StatusError<PhaseOf<K>>> {
    if object.status() == Some(&status) {
        return Ok(None);
    }
    if let Some(to) = status.phase()
        && from != Some(to)
    {
        phase::transition(from, to)?;
    }
    let (Some(namespace), Some(name)) = (object.namespace(), object.meta().name.clone()) else {
        return Err(StatusError::Unaddressable {
            object: namespaced_name(object),
        });
    };
    let mut updated = object.clone();
    *updated.status_mut() = Some(status);
    updated.meta_mut().managed_fields = None;
    // The object's own namespace: a pass may write another object than the one it reconciles.
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    let written = api
        .replace_status(&name, &PostParams::default(), &updated)
        .await
        .map_err(|source| StatusError::Write {
            object: namespaced_name(object),
            source,
        })?;
    own_writes.record(object, &written);
    Ok(Some(written))
}

/// [`write_status`] with `lifecycle`'s client and own writes, then applies `effects` in order
/// through `lifecycle` — only when the write happened. For a write besides a handler's outcome
/// too, such as one to another object than the one reconciled.
///
/// # Errors
///
/// As [`write_status`]; no effect is applied then.
pub async fn write<K, E, L>(
    lifecycle: &L,
    object: &K,
    status: K::Status,
    effects: Vec<E>,
) -> Result<Option<K>, StatusError<PhaseOf<K>>>
where
    K: PhasedObject,
    L: Lifecycle<K, E>,
{
    write_from(lifecycle, object, object.current_phase(), status, effects).await
}

/// [`write`](fn@write), the phase change checked from `from`; a write that happened starts a new
/// progress interval.
async fn write_from<K, E, L>(
    lifecycle: &L,
    object: &K,
    from: Option<PhaseOf<K>>,
    status: K::Status,
    effects: Vec<E>,
) -> Result<Option<K>, StatusError<PhaseOf<K>>>
where
    K: PhasedObject,
    L: Lifecycle<K, E>,
{
    let (client, own_writes) = (lifecycle.client(), lifecycle.own_writes());
    let written = write_status_from(client, own_writes, object, from, status).await?;
    if let Some(written) = &written {
        if let Some((pace, _)) = lifecycle.pace() {
            pace.record(written);
        }
        for effect in effects {
            lifecycle.apply(written, effect);
        }
    }
    Ok(written)
}

/// Commits a handler's `outcome` for `object`: [`write`](fn@write)s its status (if any) with
/// its effects; returns its action. A progress outcome without effects whose status changed
/// (and keeps the phase) is held back while `object` was written less than the progress interval
/// ago: nothing is sent, the status is kept in the pace records ([`Pace::hold`]) for the next
/// pass to start from, and the action is a reconcile at the end of the interval. A status equal
/// to the stored one ends such a hold.
///
/// # Errors
///
/// As [`write_status`]; no effect is applied then.
pub async fn commit<K, E, L>(
    lifecycle: &L,
    object: &K,
    outcome: Outcome<K::Status, E>,
) -> Result<Action, StatusError<PhaseOf<K>>>
where
    K: PhasedObject,
    L: Lifecycle<K, E>,
{
    if let Some((rest, pace)) = held_back(lifecycle, object, &outcome) {
        debug!(object = %namespaced_name(object), ?rest, "progress held back until the interval ends");
        if let Some(status) = outcome.status {
            pace.hold(object, object.status().cloned(), status);
        }
        return Ok(Action::requeue(rest));
    }
    let Outcome {
        status,
        effects,
        action,
        ..
    } = outcome;
    if let Some(status) = status {
        let written = write(lifecycle, object, status, effects).await?;
        if let (None, Some((pace, _))) = (written, lifecycle.pace()) {
            // Decided back to what is stored: nothing is left to write.
            pace.release(object);
        }
    }
    Ok(action)
}

/// How long `outcome`'s write waits for the progress interval of `object` to end, and the
/// records that hold it; `None` when it is written now (not progress, has effects, changes
/// nothing, changes the phase, or the interval is over).
fn held_back<'l, K, E, L>(
    lifecycle: &'l L,
    object: &K,
    outcome: &Outcome<K::Status, E>,
) -> Option<(Duration, &'l Pace<K, K::Status>)>
where
    K: PhasedObject,
    L: Lifecycle<K, E>,
{
    let status = outcome.status.as_ref()?;
    if !outcome.progress
        || !outcome.effects.is_empty()
        || object.status() == Some(status)
        || status.phase() != object.current_phase()
    {
        return None;
    }
    let (pace, interval) = lifecycle.pace()?;
    match pace.progress(object, interval) {
        PaceDecision::Write => None,
        PaceDecision::Hold(rest) => Some((rest, pace)),
    }
}

/// The object a handler decides on: `object` itself, or `object` with the status held back for
/// it by the last pass ([`Pace::held`]), so that what was decided then is not decided away. The
/// held status, if any, comes with it.
fn as_decided<K, E, L>(lifecycle: &L, object: &Arc<K>) -> (Arc<K>, Option<K::Status>)
where
    K: PhasedObject,
    L: Lifecycle<K, E>,
{
    let held = lifecycle
        .pace()
        .and_then(|(pace, _)| pace.held(&**object, object.status()));
    let Some(status) = &held else {
        return (Arc::clone(object), None);
    };
    let mut seen = (**object).clone();
    *seen.status_mut() = Some(status.clone());
    (Arc::new(seen), held)
}

/// One reconcile pass of a phased object with a finalizer: the handlers of its phases, what it
/// writes first, how it cleans up, and how it applies effects. See the module's flow.
pub trait Lifecycle<K, E>:
    PhaseHandlers<PhaseOf<K>, Object = K, Output = Outcome<K::Status, E>> + Effects<K, E>
where
    K: PhasedObject,
{
    /// The API client the pass writes with.
    fn client(&self) -> &Client;

    /// The versions this process replaced by its own writes.
    fn own_writes(&self) -> &OwnWrites<K>;

    /// The finalizer that keeps a deleted object until [`Lifecycle::cleanup`] succeeded.
    fn finalizer(&self) -> &str;

    /// The status written to an object that has no phase yet; its phase must be an initial one
    /// ([`Phase::is_initial`]). A status without a phase is written, and nothing is dispatched.
    fn initial_status(&self, object: &K) -> K::Status;

    /// Whether `outcome`, decided by the initial phase's handler for an object seen without a
    /// phase, is written instead of the initial status (one write) rather than after it. The
    /// default, `false`, always writes the initial status first.
    fn skips_initial_write(&self, outcome: &Outcome<K::Status, E>) -> bool {
        let _ = outcome;
        false
    }

    /// The records and the interval that pace progress writes ([`Outcome::progress`]) and keep
    /// the statuses held back; `None`, the default, writes every outcome at once.
    fn pace(&self) -> Option<(&Pace<K, K::Status>, Duration)> {
        None
    }

    /// Cleans up after a deleted object: [`Cleanup::Done`] has the framework remove the
    /// finalizer, [`Cleanup::Again`] keeps it and looks again.
    fn cleanup(&self, object: Arc<K>) -> impl Future<Output = Result<Cleanup, Self::Error>> + Send;
}

/// What [`Lifecycle::cleanup`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Cleanup {
    /// Done: the framework removes the finalizer, and Kubernetes completes the deletion.
    Done,
    /// Not yet: the finalizer stays, and the object is reconciled again as the action says.
    Again(Action),
}

/// Reconciles `object`: own-write check, finalizer event, initial status, phase dispatch,
/// commit (see the module's flow).
///
/// # Errors
///
/// A finalizer or status write failure, or the handler's or the cleanup's error.
pub async fn reconcile<K, E, L>(lifecycle: &L, object: Arc<K>) -> Result<Action, L::Error>
where
    K: PhasedObject,
    E: Send,
    L: Lifecycle<K, E>,
    L::Error: From<FinalizerError> + From<StatusError<PhaseOf<K>>>,
{
    let own_writes = lifecycle.own_writes();
    if own_writes.is_outdated(&object) {
        // The runtime waits for the newer copy before handing one over (`Operator::own_writes`);
        // past its bound, the watch event of our own newer write reconciles that version.
        debug!(object = %namespaced_name(&*object), "cached copy predates our own write; waiting for the newer one");
        return Ok(Action::await_change());
    }
    let Some(namespace) = object.namespace() else {
        return Err(StatusError::Unaddressable {
            object: namespaced_name(&*object),
        }
        .into());
    };
    let api: Api<K> = Api::namespaced(lifecycle.client().clone(), &namespace);
    let event = finalizer::event(&api, object.clone(), lifecycle.finalizer()).await?;
    match event {
        finalizer::Event::Added(patched) => {
            own_writes.record(&object, &patched);
            apply(lifecycle, patched).await
        }
        finalizer::Event::Apply(object) => apply(lifecycle, object).await,
        finalizer::Event::Cleanup(object) => match lifecycle.cleanup(object.clone()).await? {
            Cleanup::Done => {
                finalizer::remove_finalizer(&api, &*object, lifecycle.finalizer()).await?;
                if let Some((pace, _)) = lifecycle.pace() {
                    pace.forget(&*object);
                }
                Ok(Action::await_change())
            }
            Cleanup::Again(action) => Ok(action),
        },
        finalizer::Event::Done => Ok(Action::await_change()),
    }
}

/// Runs the handler of the object's phase on the object as last decided ([`as_decided`]) and
/// commits its outcome against the object as stored; an object without a phase goes to
/// [`first_pass`]. A handler that leaves the status as it saw it keeps a held status held.
async fn apply<K, E, L>(lifecycle: &L, object: Arc<K>) -> Result<Action, L::Error>
where
    K: PhasedObject,
    E: Send,
    L: Lifecycle<K, E>,
    L::Error: From<StatusError<PhaseOf<K>>>,
{
    let Some(current) = object.current_phase() else {
        return first_pass(lifecycle, object).await;
    };
    let (seen, held) = as_decided(lifecycle, &object);
    let mut outcome = phase::dispatch(lifecycle, current, seen).await?;
    if outcome.status.is_none()
        && let Some(held) = held
    {
        outcome.status = Some(held);
        outcome.progress = true;
    }
    Ok(commit(lifecycle, &*object, outcome).await?)
}

/// The pass over an object without a phase: its initial phase's handler decides on a copy with
/// the initial status; the outcome is written instead of the initial status when the operator
/// allows it, else after it. A handler that fails has the initial status written before its
/// error is returned (the object waits for the retry in its initial phase).
async fn first_pass<K, E, L>(lifecycle: &L, object: Arc<K>) -> Result<Action, L::Error>
where
    K: PhasedObject,
    E: Send,
    L: Lifecycle<K, E>,
    L::Error: From<StatusError<PhaseOf<K>>>,
{
    let initial = lifecycle.initial_status(&object);
    let Some(first) = initial.phase() else {
        // Nothing to dispatch: the status is written as it is.
        write(lifecycle, &*object, initial, Vec::new()).await?;
        return Ok(Action::await_change());
    };
    phase::transition(None, first).map_err(StatusError::from)?;
    let mut staged = (*object).clone();
    *staged.status_mut() = Some(initial.clone());
    let outcome = match phase::dispatch(lifecycle, first, Arc::new(staged)).await {
        Ok(outcome) => outcome,
        Err(error) => {
            // The object waits for the retry: it shows the initial phase meanwhile.
            write(lifecycle, &*object, initial, Vec::new()).await?;
            return Err(error);
        }
    };
    if outcome.status.is_some() && lifecycle.skips_initial_write(&outcome) {
        let Outcome {
            status,
            effects,
            action,
            ..
        } = outcome;
        let status = status.unwrap_or(initial);
        // `dispatch` checked the move from the initial phase.
        write_from(lifecycle, &*object, Some(first), status, effects).await?;
        return Ok(action);
    }
    let Some(written) = write(lifecycle, &*object, initial, Vec::new()).await? else {
        return Ok(Action::await_change());
    };
    Ok(commit(lifecycle, &written, outcome).await?)
}

#[cfg(test)]
mod tests {
    use std::{fmt, sync::Mutex};

    use kube::CustomResource;
    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::{Exchange, Scenario, status_body};

    #[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
    #[kube(
        group = "example.kubernaut.ai",
        version = "v1",
        kind = "Job",
        namespaced,
        status = "JobStatus"
    )]
    struct JobSpec {}

    #[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
    struct JobStatus {
        phase: Option<Stage>,
        message: String,
    }

    #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
    enum Stage {
        Pending,
        Running,
        Done,
    }

    impl fmt::Display for Stage {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(self, f)
        }
    }

    impl Phase for Stage {
        fn allowed_transitions(self) -> &'static [Self] {
            match self {
                Stage::Pending => &[Stage::Running],
                Stage::Running => &[Stage::Done],
                Stage::Done => &[],
            }
        }

        fn is_terminal(self) -> bool {
            self == Stage::Done
        }

        fn is_initial(self) -> bool {
            self == Stage::Pending
        }
    }

    impl PhasedStatus for JobStatus {
        type Phase = Stage;

        fn phase(&self) -> Option<Stage> {
            self.phase
        }
    }

    const FINALIZER: &str = "example.kubernaut.ai/cleanup";
    const ITEM: &str = "/apis/example.kubernaut.ai/v1/namespaces/ns/jobs/j";

    fn status_path() -> String {
        format!("{ITEM}/status")
    }

    fn status(phase: Stage, message: &str) -> JobStatus {
        JobStatus {
            phase: Some(phase),
            message: message.to_owned(),
        }
    }

    /// Job `ns/j` at resourceVersion `version`, with managedFields as the API server sends them.
    fn job(version: &str, status: Option<JobStatus>) -> Job {
        let mut job = Job::new("j", JobSpec {});
        job.metadata.namespace = Some("ns".into());
        job.metadata.resource_version = Some(version.into());
        job.metadata.managed_fields = Some(vec![Default::default()]);
        job.status = status;
        job
    }

    fn with_finalizer(mut job: Job) -> Job {
        job.metadata.finalizers = Some(vec![FINALIZER.into()]);
        job
    }

    fn to_json(job: &Job) -> Value {
        serde_json::to_value(job).unwrap()
    }

    /// Records the effects applied.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, &'static str)>>);

    impl Effects<Job, &'static str> for Recorded {
        fn apply(&self, written: &Job, effect: &'static str) {
            let version = written
                .metadata
                .resource_version
                .clone()
                .unwrap_or_default();
            self.0.lock().unwrap().push((version, effect));
        }
    }

    impl Recorded {
        fn applied(&self) -> Vec<(String, &'static str)> {
            self.0.lock().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn an_unchanged_status_sends_no_request_and_applies_no_effect() {
        let (client, scenario) = Scenario::start(Vec::new());
        let pass = pass(client);
        let current = job("7", Some(status(Stage::Running, "busy")));
        let outcome =
            Outcome::write(status(Stage::Running, "busy"), Action::await_change()).with("announce");
        let action = commit(&pass, &current, outcome).await.unwrap();
        let applied = pass.recorded.applied();
        drop(pass);
        assert_eq!(action, Action::await_change());
        assert!(scenario.finish().await.bodies.is_empty());
        assert!(applied.is_empty());
    }

    #[tokio::test]
    async fn a_changed_status_is_one_put_with_the_version_read_and_then_its_effects() {
        let current = job("7", Some(status(Stage::Pending, "")));
        let mut written = job("8", Some(status(Stage::Running, "started")));
        written.metadata.managed_fields = None;
        let (client, scenario) = Scenario::start(vec![Exchange::new(
            "PUT",
            status_path(),
            200,
            to_json(&written),
        )]);
        let pass = pass(client);
        let outcome = Outcome::write(status(Stage::Running, "started"), Action::await_change())
            .with("first")
            .with("second");
        commit(&pass, &current, outcome).await.unwrap();
        let (applied, recorded_as_replaced) = (
            pass.recorded.applied(),
            pass.own_writes.is_outdated(&current),
        );
        drop(pass);
        let served = scenario.finish().await;
        let sent = &served.bodies[0];
        assert_eq!(sent["metadata"]["resourceVersion"], "7");
        assert_eq!(
            sent["status"],
            json!({"phase": "Running", "message": "started"})
        );
        assert!(
            sent["metadata"].get("managedFields").is_none(),
            "managedFields are not sent back"
        );
        assert_eq!(
            applied,
            [("8".to_owned(), "first"), ("8".to_owned(), "second")],
            "effects follow the write, in order, about the object written"
        );
        assert!(
            recorded_as_replaced,
            "the version written from is recorded as replaced"
        );
    }

    #[tokio::test]
    async fn an_illegal_phase_change_is_refused_without_a_request() {
        let (client, scenario) = Scenario::start(Vec::new());
        let pass = pass(client);
        let current = job("7", Some(status(Stage::Done, "")));
        let outcome =
            Outcome::write(status(Stage::Running, ""), Action::await_change()).with("announce");
        let error = commit(&pass, &current, outcome).await.unwrap_err();
        let applied = pass.recorded.applied();
        drop(pass);
        assert!(
            matches!(
                error,
                StatusError::IllegalTransition(IllegalTransition {
                    from: Some(Stage::Done),
                    to: Stage::Running
                })
            ),
            "{error}"
        );
        assert!(scenario.finish().await.bodies.is_empty());
        assert!(applied.is_empty());
    }

    #[tokio::test]
    async fn a_conflicting_write_is_an_error_and_applies_no_effect() {
        let (client, scenario) = Scenario::start(vec![Exchange::new(
            "PUT",
            status_path(),
            409,
            status_body(409, "Conflict"),
        )]);
        let pass = pass(client);
        let current = job("7", Some(status(Stage::Pending, "")));
        let outcome =
            Outcome::write(status(Stage::Running, ""), Action::await_change()).with("announce");
        let error = commit(&pass, &current, outcome).await.unwrap_err();
        let (applied, recorded_as_replaced) = (
            pass.recorded.applied(),
            pass.own_writes.is_outdated(&current),
        );
        drop(pass);
        scenario.finish().await;
        assert!(
            matches!(&error, StatusError::Write { source: kube::Error::Api(s), .. } if s.code == 409),
            "{error}"
        );
        assert!(applied.is_empty());
        assert!(!recorded_as_replaced, "no write, no record");
    }

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error(transparent)]
        Phase(#[from] IllegalTransition<Stage>),
        #[error(transparent)]
        Finalizer(#[from] FinalizerError),
        #[error(transparent)]
        Status(#[from] StatusError<Stage>),
    }

    /// Pending → Running with an effect; Running → Done once the message says "step 2" (which
    /// only a held status may say); deletion cleans up by asking to look again.
    struct Pass {
        client: Client,
        own_writes: OwnWrites<Job>,
        recorded: Recorded,
        /// Whether the Running outcome replaces the initial status.
        skip_initial: bool,
        pace: Pace<Job, JobStatus>,
        /// The progress interval (`None`: no pacing).
        interval: Option<Duration>,
    }

    impl PhaseHandlers<Stage> for Pass {
        type Object = Job;
        type Output = Outcome<JobStatus, &'static str>;
        type Error = TestError;

        async fn handle(&self, phase: Stage, job: Arc<Job>) -> Result<Self::Output, TestError> {
            let message = job.status.as_ref().map(|s| s.message.as_str());
            Ok(match phase {
                Stage::Pending => {
                    Outcome::write(status(Stage::Running, "started"), Action::await_change())
                        .with("started")
                }
                Stage::Running if message == Some("step 2") => {
                    Outcome::write(status(Stage::Done, "after step 2"), Action::await_change())
                }
                Stage::Running | Stage::Done => Outcome::unchanged(Action::await_change()),
            })
        }
    }

    impl Effects<Job, &'static str> for Pass {
        fn apply(&self, written: &Job, effect: &'static str) {
            self.recorded.apply(written, effect);
        }
    }

    impl Lifecycle<Job, &'static str> for Pass {
        fn client(&self) -> &Client {
            &self.client
        }

        fn own_writes(&self) -> &OwnWrites<Job> {
            &self.own_writes
        }

        fn finalizer(&self) -> &str {
            FINALIZER
        }

        fn initial_status(&self, _job: &Job) -> JobStatus {
            status(Stage::Pending, "")
        }

        fn skips_initial_write(&self, outcome: &Outcome<JobStatus, &'static str>) -> bool {
            self.skip_initial
                && outcome.status.as_ref().and_then(|s| s.phase) == Some(Stage::Running)
        }

        fn pace(&self) -> Option<(&Pace<Job, JobStatus>, Duration)> {
            Some((&self.pace, self.interval?))
        }

        async fn cleanup(&self, job: Arc<Job>) -> Result<Cleanup, TestError> {
            // A job whose message says so is done; any other waits.
            Ok(
                match job.status.as_ref().is_some_and(|s| s.message == "done") {
                    true => Cleanup::Done,
                    false => Cleanup::Again(Action::requeue(std::time::Duration::from_secs(5))),
                },
            )
        }
    }

    fn pass(client: Client) -> Pass {
        Pass {
            client,
            own_writes: OwnWrites::new(),
            recorded: Recorded::default(),
            skip_initial: false,
            pace: Pace::new(),
            interval: None,
        }
    }

    #[tokio::test]
    async fn first_sight_writes_an_outcome_that_may_replace_the_initial_status_alone() {
        let patched = with_finalizer(job("2", None));
        let running = with_finalizer(job("3", Some(status(Stage::Running, "started"))));
        let (client, scenario) = Scenario::start(vec![
            Exchange::new("PATCH", ITEM, 200, to_json(&patched)),
            Exchange::new("PUT", status_path(), 200, to_json(&running)),
        ]);
        let pass = Pass {
            skip_initial: true,
            ..pass(client)
        };
        let first = job("1", None);
        reconcile(&pass, Arc::new(first.clone())).await.unwrap();
        let recorded = pass.recorded.applied();
        let own_writes_cover = [&first, &patched].map(|j| pass.own_writes.is_outdated(j));
        drop(pass);
        let served = scenario.finish().await;
        assert_eq!(
            served.bodies.len(),
            2,
            "the finalizer patch and one status write"
        );
        assert_eq!(served.bodies[1]["metadata"]["resourceVersion"], "2");
        assert_eq!(served.bodies[1]["status"]["phase"], "Running");
        assert_eq!(recorded, [("3".to_owned(), "started")]);
        assert_eq!(own_writes_cover, [true, true]);
    }

    /// A pass pacing progress at one hour, `job` written by it just now.
    fn paced(client: Client, job: &Job) -> Pass {
        let pass = Pass {
            interval: Some(Duration::from_secs(3600)),
            ..pass(client)
        };
        pass.pace.record(job);
        pass
    }

    #[tokio::test]
    async fn progress_written_within_the_interval_is_held_back_and_looked_at_again() {
        let (client, scenario) = Scenario::start(Vec::new());
        let current = job("7", Some(status(Stage::Running, "step 1")));
        let pass = paced(client, &current);
        let outcome = Outcome::progress(status(Stage::Running, "step 2"), Action::await_change());
        let action = commit(&pass, &current, outcome).await.unwrap();
        drop(pass);
        assert!(scenario.finish().await.bodies.is_empty(), "nothing sent");
        assert!(
            format!("{action:?}").contains("Some("),
            "a reconcile is asked for when the interval ends: {action:?}"
        );
    }

    /// A client served one status write, answered with `written`.
    fn serving_one_status_put(written: &Job) -> (Client, Scenario) {
        Scenario::start(vec![Exchange::new(
            "PUT",
            status_path(),
            200,
            to_json(written),
        )])
    }

    #[tokio::test]
    async fn a_held_status_is_what_the_next_passes_decide_from_until_it_is_written() {
        let current = with_finalizer(job("7", Some(status(Stage::Running, "step 1"))));
        let mut done = current.clone();
        done.metadata.resource_version = Some("8".into());
        done.status = Some(status(Stage::Done, "after step 2"));
        let (client, scenario) = serving_one_status_put(&done);
        let pass = paced(client, &current);
        let progress = Outcome::progress(status(Stage::Running, "step 2"), Action::await_change());
        commit(&pass, &current, progress).await.unwrap();
        let held = pass.pace.holding(&current);
        // The next pass decides Done from the held status, and writes it over the stored one.
        reconcile(&pass, Arc::new(current.clone())).await.unwrap();
        let after_write = pass.pace.holding(&current);
        drop(pass);
        let served = scenario.finish().await;
        assert_eq!(held, Some(status(Stage::Running, "step 2")));
        assert_eq!(
            served.bodies.len(),
            1,
            "one write, the decision of the second pass"
        );
        assert_eq!(served.bodies[0]["metadata"]["resourceVersion"], "7");
        assert_eq!(
            served.bodies[0]["status"],
            json!({"phase": "Done", "message": "after step 2"}),
            "decided from the held status"
        );
        assert_eq!(after_write, None, "the write replaced the held status");
    }

    #[tokio::test]
    async fn a_pass_that_leaves_the_status_as_it_saw_it_keeps_the_held_status_held() {
        let (client, scenario) = Scenario::start(Vec::new());
        let current = with_finalizer(job("7", Some(status(Stage::Running, "step 1"))));
        let pass = paced(client, &current);
        pass.pace.hold(
            &current,
            current.status.clone(),
            status(Stage::Running, "step 1b"),
        );
        let action = reconcile(&pass, Arc::new(current.clone())).await.unwrap();
        let held = pass.pace.holding(&current);
        drop(pass);
        assert!(scenario.finish().await.bodies.is_empty(), "nothing sent");
        assert_eq!(held, Some(status(Stage::Running, "step 1b")));
        assert_ne!(
            action,
            Action::await_change(),
            "looked at when the interval ends"
        );
    }

    #[tokio::test]
    async fn a_progress_outcome_that_changes_the_phase_is_not_held_back() {
        let current = job("7", Some(status(Stage::Running, "step 1")));
        let written = job("8", Some(status(Stage::Done, "")));
        let (client, scenario) = serving_one_status_put(&written);
        let pass = paced(client, &current);
        let outcome = Outcome::progress(status(Stage::Done, ""), Action::await_change());
        commit(&pass, &current, outcome).await.unwrap();
        drop(pass);
        assert_eq!(scenario.finish().await.bodies.len(), 1);
    }

    /// Each case: whether the outcome is progress, its effect (if any), whether the job was
    /// written within the interval, whether a status write is sent.
    #[tokio::test]
    async fn only_progress_without_effects_within_the_interval_is_held_back() {
        let cases: [(&str, bool, Option<&'static str>, bool, bool); 4] = [
            ("progress, written just now", true, None, true, false),
            ("progress, never written here", true, None, false, true),
            ("progress with an effect", true, Some("held"), true, true),
            ("not progress", false, None, true, true),
        ];
        for (name, progress, effect, recent, sent) in cases {
            let current = job("7", Some(status(Stage::Running, "step 1")));
            let written = job("8", Some(status(Stage::Running, "step 2")));
            let exchanges = match sent {
                true => vec![Exchange::new("PUT", status_path(), 200, to_json(&written))],
                false => Vec::new(),
            };
            let (client, scenario) = Scenario::start(exchanges);
            let pass = match recent {
                true => paced(client, &current),
                false => Pass {
                    interval: Some(Duration::from_secs(3600)),
                    ..pass(client)
                },
            };
            let next = status(Stage::Running, "step 2");
            let mut outcome = match progress {
                true => Outcome::progress(next, Action::await_change()),
                false => Outcome::write(next, Action::await_change()),
            };
            if let Some(effect) = effect {
                outcome = outcome.with(effect);
            }
            let action = commit(&pass, &current, outcome).await.unwrap();
            let restarted = pass.pace.progress(&current, Duration::from_secs(3600));
            drop(pass);
            let served = scenario.finish().await;
            assert_eq!(served.bodies.len(), usize::from(sent), "{name}");
            assert_eq!(action == Action::await_change(), sent, "{name}");
            assert!(
                matches!(restarted, PaceDecision::Hold(_)),
                "{name}: a write starts an interval, a hold keeps the last one"
            );
        }
    }

    #[tokio::test]
    async fn first_sight_adds_the_finalizer_writes_the_initial_status_then_commits_the_handler() {
        let patched = with_finalizer(job("2", None));
        let pending = with_finalizer(job("3", Some(status(Stage::Pending, ""))));
        let running = with_finalizer(job("4", Some(status(Stage::Running, "started"))));
        let (client, scenario) = Scenario::start(vec![
            Exchange::new("PATCH", ITEM, 200, to_json(&patched)),
            Exchange::new("PUT", status_path(), 200, to_json(&pending)),
            Exchange::new("PUT", status_path(), 200, to_json(&running)),
        ]);
        let pass = pass(client);
        let first = job("1", None);
        reconcile(&pass, Arc::new(first.clone())).await.unwrap();
        let recorded = pass.recorded.applied();
        let own_writes_cover = [&first, &patched, &pending].map(|j| pass.own_writes.is_outdated(j));
        drop(pass);
        let served = scenario.finish().await;
        assert_eq!(served.bodies[1]["metadata"]["resourceVersion"], "2");
        assert_eq!(served.bodies[1]["status"]["phase"], "Pending");
        assert_eq!(served.bodies[2]["metadata"]["resourceVersion"], "3");
        assert_eq!(served.bodies[2]["status"]["phase"], "Running");
        assert_eq!(recorded, [("4".to_owned(), "started")]);
        assert_eq!(own_writes_cover, [true, true, true]);
    }

    #[tokio::test]
    async fn a_copy_older_than_our_own_write_is_left_alone() {
        let (client, scenario) = Scenario::start(Vec::new());
        let pass = pass(client);
        let old = with_finalizer(job("3", Some(status(Stage::Pending, ""))));
        let new = with_finalizer(job("4", Some(status(Stage::Running, ""))));
        pass.own_writes.record(&old, &new);
        let action = reconcile(&pass, Arc::new(old)).await.unwrap();
        drop(pass);
        assert_eq!(action, Action::await_change());
        assert!(scenario.finish().await.bodies.is_empty());
    }

    #[tokio::test]
    async fn a_deleted_object_goes_to_cleanup_without_a_status_write() {
        let (client, scenario) = Scenario::start(Vec::new());
        let pass = pass(client);
        let mut deleting = with_finalizer(job("5", Some(status(Stage::Running, ""))));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let action = reconcile(&pass, Arc::new(deleting)).await.unwrap();
        drop(pass);
        assert_eq!(action, Action::requeue(std::time::Duration::from_secs(5)));
        assert!(scenario.finish().await.bodies.is_empty());
    }

    #[tokio::test]
    async fn a_finished_cleanup_has_the_finalizer_removed() {
        let mut deleting = with_finalizer(job("5", Some(status(Stage::Done, "done"))));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        let mut released = deleting.clone();
        released.metadata.finalizers = None;
        let (client, scenario) =
            Scenario::start(vec![Exchange::new("PATCH", ITEM, 200, to_json(&released))]);
        let pass = pass(client);
        let action = reconcile(&pass, Arc::new(deleting)).await.unwrap();
        drop(pass);
        assert_eq!(action, Action::await_change());
        let served = scenario.finish().await;
        assert_eq!(
            served.bodies[0],
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
    }
}
