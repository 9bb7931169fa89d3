//! The WorkflowExecution reconciler: one module per phase on top of the framework runtime.
//!
//! Flow of one object (see the behaviour contract for every rule):
//! 1. [`kubernaut_framework::finalizer::event`] adds `kubernaut.ai/workflowexecution-cleanup` on
//!    first sight, or hands a deleting object to `cleanup`. A WFE without a phase is decided as
//!    `Pending` in the same pass: when it can start at once, `Running` is its first status write
//!    (no separate `Pending` write); when it waits, is skipped or fails, `Pending` is written
//!    first and the decision after it.
//! 2. `Pending` (`pending`): validate → lock/cooldown decision from the in-memory store → render
//!    → create the PipelineRun (the lock) → `Running`.
//! 3. `Running` (`running`): driven by PipelineRun watch events; the run's status is read
//!    through the status mapping file → `Completed` / `Failed`, or a refreshed
//!    `pipelineRunStatus`, which is mere progress (`progress`) and written at most once per
//!    `status.progressInterval` unless it carries a fact a later decision depends on.
//! 4. `Completed`/`Failed` (`terminal`): hold the lock for the cooldown period, then release it
//!    (delete the run only if its labels name this WFE); honour the block-clearing annotation
//!    (`clearance`).
//! 5. Deletion (`cleanup`): cancel a running run of ours, delete it; then the framework drops
//!    the finalizer.
//!
//! A phase handler returns an [`Outcome`]: the new status, the effects of reaching it (Events,
//! audit records, metric updates, log lines) and when to look again. The status and the effects
//! are built by pure functions of the object, what was observed and the time; the framework's
//! [`lifecycle::reconcile`] writes the status and applies the effects (through the framework's
//! [`Reporter`]) only when the write happened. The operator declares only its own effects
//! (`outcome`: its metric updates and audit records). Every failure goes through one path,
//! `failed::failed`.
//!
//! Guarantees:
//! 1. Status is written only when it changed, with the resourceVersion read (a conflict is an
//!    error and the object is reconciled again from fresh state — never clobbered).
//! 2. A phase change is checked against the declared transitions before it is written
//!    ([`phase::dispatch`](kubernaut_framework::phase::dispatch) for the handler's outcome,
//!    [`phase::transition`](kubernaut_framework::phase::transition) on every write).
//! 3. A WFE never deletes or cancels a PipelineRun whose ownership labels name another WFE.
//! 4. Every decision is reconstructible from cluster state: a restarted operator adopts the run a
//!    `Pending` WFE already created, and continues `Running` ones from the run's status.
//! 5. Effects (Events, audit records, metric updates, logs) of a status follow its write: a pass
//!    whose write changed nothing, or failed, emits none.
//! 6. A WFE's progress write is held back at most `status.progressInterval`, and the latest
//!    progress is written when it ends; a phase change, the "a step ran" marker and a held-back
//!    step are never held back (`progress::is_progress`).

#[cfg(test)]
mod calls;
mod cleanup;
mod clearance;
mod failed;
mod outcome;
mod pending;
mod progress;
mod running;
mod target_lock;
mod terminal;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{Api, Client, Resource, ResourceExt, api::DynamicObject};
use kubernaut_framework::{
    condition::{self, ConditionStatus, Conditions},
    config::ConfigStore,
    effect::Reporter,
    lifecycle::{self, Cleanup, Effects, Lifecycle, PhasedStatus, ReconcileError},
    lock::Locks,
    names::namespaced_name,
    own_writes::OwnWrites,
    pace::Pace,
    phase::PhaseHandlers,
    runtime::{Action, Context},
    status::Held,
};

pub use self::outcome::{Effect, MetricUpdate, Outcome};
use crate::{
    audit::Auditor,
    config::OperatorConfig,
    decide,
    engine::{Engine, Engines},
    failure::FailureContext,
    metrics::Metrics,
    pipelinerun,
    types::{FailureReason, Phase, PipelineRunRef, WorkflowExecution, WorkflowExecutionStatus},
};

/// The finalizer that links a WFE to its PipelineRun in another namespace.
pub const FINALIZER: &str = "kubernaut.ai/workflowexecution-cleanup";
pub use crate::decide::CLEAR_BLOCK_ANNOTATION;
/// How often a Running WFE is re-checked when no watch event arrives (a safety net, not a poll).
pub const SAFETY_RESYNC: Duration = Duration::from_secs(600);

kubernaut_framework::string_enum! {
    condition;
    /// The condition types of a WorkflowExecution's status.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum ExecutionCondition {
        /// The execution's outcome: `Unknown` while pending or running, `True` completed,
        /// `False` failed or skipped (the reason says why).
        Ready = "Ready",
        /// The PipelineRun exists (`False` while waiting for a previous run to be deleted).
        ExecutionCreated = "ExecutionCreated",
        /// The PipelineRun runs (`False` with a failure reason while a TaskRun is held back).
        ExecutionRunning = "ExecutionRunning",
        /// The PipelineRun has finished.
        ExecutionComplete = "ExecutionComplete",
        /// The clearance annotation was acted on: `True` cleared, `False` refused.
        BlockCleared = "BlockCleared",
    }
}

/// The conditions of `status`, set for `wfe`'s generation at `now`.
fn conditions<'s>(
    wfe: &WorkflowExecution,
    status: &'s mut WorkflowExecutionStatus,
    now: Timestamp,
) -> Conditions<'s, ExecutionCondition> {
    Conditions::new(&mut status.conditions, wfe.meta().generation, now)
}

/// The operator's state shared by every reconcile.
pub struct State {
    /// The live configuration (reloadable, last known good).
    pub config: Arc<ConfigStore<OperatorConfig>>,
    /// The configured execution engines: what each creates, how its status reads, how it is
    /// cancelled.
    pub engines: Engines,
    /// Where audit events go.
    pub auditor: Auditor,
    /// The contract's metrics.
    pub metrics: Metrics,
    /// The WFE versions this operator replaced by its own writes: a reconcile handed one of them
    /// by a lagging cache stands aside instead of repeating a decision and hitting a conflict.
    pub own_writes: OwnWrites<WorkflowExecution>,
    /// When this process last wrote each WFE's status, and the progress it holds back: progress
    /// is written at most once per `status.progressInterval`, and the next pass decides from the
    /// held status.
    pub pace: Pace<WorkflowExecution, WorkflowExecutionStatus>,
    /// The target locks this process takes (one guard per lock name while it is checked across
    /// engine kinds and taken, so that two executions on one target never create children of
    /// two kinds at once).
    pub locks: Locks,
}

/// The reconcile context.
pub type Ctx = Context<WorkflowExecution, State>;

/// What can fail a reconcile; every such failure is retried with per-object backoff.
pub type Error = ReconcileError<Phase>;

impl PhasedStatus for WorkflowExecutionStatus {
    type Phase = Phase;

    fn phase(&self) -> Option<Phase> {
        self.phase
    }
}

/// Reconcile one WorkflowExecution.
///
/// # Errors
/// Transient API failures; the runtime retries them with per-object backoff.
pub async fn reconcile(wfe: Arc<WorkflowExecution>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    // A started WFE's child is of its engine's kind: without that engine nothing here can read,
    // cancel or release it, and it is retried (with backoff) until the engine is configured again.
    let engine = ctx.data.engines.of(&wfe);
    let engine = engine
        .map_err(|e| Error::Invalid(format!("WorkflowExecution {}: {e}", namespaced_name(&*wfe))))?
        .clone();
    let pass = Pass {
        engine,
        config: ctx.data.config.current(),
        ctx: &ctx,
        now: Timestamp::now(),
    };
    lifecycle::reconcile(&pass, wfe).await
}

/// One reconcile pass: the context, the engine, the configuration snapshot the whole pass
/// decides with, and the time the pass started.
struct Pass<'a> {
    ctx: &'a Arc<Ctx>,
    /// The engine of the reconciled WFE ([`Engines::of`]; the default one for a WFE asking for
    /// an engine that is not configured, which its validation then fails).
    engine: Arc<Engine>,
    config: Arc<OperatorConfig>,
    now: Timestamp,
}

impl PhaseHandlers<Phase> for Pass<'_> {
    type Object = WorkflowExecution;
    type Output = Outcome;
    type Error = Error;

    async fn handle(&self, phase: Phase, wfe: Arc<WorkflowExecution>) -> Result<Outcome, Error> {
        match phase {
            Phase::Pending => self.pending(wfe).await,
            Phase::Running => self.running(wfe).await,
            Phase::Completed | Phase::Failed => self.terminal(wfe).await,
            Phase::Skipped => {
                // A Skipped WFE is where a block whose failed WFE is gone gets cleared.
                self.clear_block_if_asked(wfe).await?;
                Ok(Outcome::unchanged(Action::await_change()))
            }
        }
    }
}

impl Lifecycle<WorkflowExecution, Effect> for Pass<'_> {
    fn client(&self) -> &Client {
        &self.ctx.client
    }

    fn own_writes(&self) -> &OwnWrites<WorkflowExecution> {
        &self.state().own_writes
    }

    fn finalizer(&self) -> &str {
        FINALIZER
    }

    /// `Pending`, waiting to start.
    fn initial_status(&self, wfe: &WorkflowExecution) -> WorkflowExecutionStatus {
        let mut status = wfe.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Pending);
        status.observed_generation = wfe.meta().generation;
        conditions(wfe, &mut status, self.now).set_unknown(
            ExecutionCondition::Ready,
            "Pending",
            "Waiting to start the workflow",
        );
        status
    }

    /// A WFE that starts at once (`Running`, its run created or adopted) gets no separate
    /// `Pending` write; one that waits, is skipped or fails shows `Pending` first.
    fn skips_initial_write(&self, outcome: &Outcome) -> bool {
        outcome.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    }

    fn pace(&self) -> Option<(&Pace<WorkflowExecution, WorkflowExecutionStatus>, Duration)> {
        Some((&self.state().pace, self.config.status.progress_interval))
    }

    async fn cleanup(&self, wfe: Arc<WorkflowExecution>) -> Result<Cleanup, Error> {
        Pass::cleanup(self, wfe).await
    }
}

impl Effects<WorkflowExecution, Effect> for Pass<'_> {
    /// Applies one effect about `wfe` (as written) through the framework's reporter.
    fn apply(&self, wfe: &WorkflowExecution, effect: Effect) {
        let state = self.state();
        Reporter::new(self.ctx, &state.auditor, &state.metrics).apply(wfe, effect);
    }
}

impl Pass<'_> {
    fn state(&self) -> &State {
        &self.ctx.data
    }

    /// The children of this engine's kind in `namespace`: a run is always addressed in the
    /// namespace recorded in `status.pipelineRunRef`, which outlives a change of
    /// `execution.namespace`.
    fn runs_in(&self, namespace: &str) -> Api<DynamicObject> {
        self.ctx.child_api(&self.engine.child_resource, namespace)
    }

    /// Where `wfe`'s run is: where it recorded it, or before that (a create whose status write
    /// was lost) at the lock name in the configured namespace.
    fn run_ref(&self, wfe: &WorkflowExecution) -> PipelineRunRef {
        let recorded = wfe.status.as_ref().and_then(|s| s.pipeline_run_ref.clone());
        recorded.unwrap_or_else(|| PipelineRunRef {
            name: pipelinerun::pipeline_run_name(&wfe.spec.target_resource),
            namespace: self.config.execution.namespace.clone(),
        })
    }

    /// The run `run_ref` names if it is `wfe`'s (its labels name it): from the cache, and on a
    /// miss from the API server — unless `cache_is_enough` ([`Context::owned_child`]).
    async fn our_run(
        &self,
        wfe: &WorkflowExecution,
        run_ref: &PipelineRunRef,
        cache_is_enough: bool,
    ) -> Result<Option<Arc<DynamicObject>>, Error> {
        let owner = pipelinerun::owner(wfe);
        let owns = |run: &DynamicObject| owner.owns(run.labels());
        let (namespace, name) = (&run_ref.namespace, &run_ref.name);
        let read = self
            .ctx
            .owned_child(&self.engine, namespace, name, owns, cache_is_enough);
        let kind = &self.engine.child().kind;
        read.await
            .map_err(Error::api(format!("reading {kind} {name}")))
    }

    /// What a failure of `wfe` is classified with: its execution settings, the engine's mapping.
    fn failure_context(&self, wfe: &WorkflowExecution) -> FailureContext {
        FailureContext::new(wfe, &self.config.execution).reading(&self.engine.mapping)
    }

    /// Sets `workflowexecution_consecutive_failures` of `wfe`'s target from `on_target` (the
    /// cached WFEs on it): the streak the most recent finished one carries; no series when none
    /// carries failures.
    fn refresh_failure_gauge(&self, wfe: &WorkflowExecution, on_target: &[Arc<WorkflowExecution>]) {
        let finished: Vec<&WorkflowExecution> = on_target.iter().map(Arc::as_ref).collect();
        let streak = decide::most_recent_finished(&finished).map_or(0, decide::streak);
        let metrics = &self.state().metrics;
        metrics.set_consecutive_failures(&wfe.spec.target_resource, streak);
    }
}

/// What the `ExecutionRunning` condition says held the run back, if it does: `False` with a
/// failure reason as its reason (see [`running::unfinished`]).
fn held_condition(status: &WorkflowExecutionStatus) -> Option<Held> {
    let condition = condition::find(&status.conditions, ExecutionCondition::ExecutionRunning)
        .filter(|c| c.status == ConditionStatus::False.as_str())?;
    FailureReason::from_name(&condition.reason)?;
    Some(Held {
        result: condition.reason.clone(),
        message: Some(condition.message.clone()).filter(|m| !m.is_empty()),
    })
}

/// Whether a step of the run was seen running in an earlier pass (`executionStarted`): the
/// TaskRuns that showed it may be gone later.
fn seen_started(status: Option<&WorkflowExecutionStatus>) -> bool {
    status
        .and_then(|s| s.pipeline_run_status.as_ref())
        .and_then(|s| s.execution_started)
        == Some(true)
}
