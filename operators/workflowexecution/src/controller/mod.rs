//! The WorkflowExecution reconciler: one module per phase on top of the framework runtime.
//!
//! Flow of one object (see the behaviour contract for every rule):
//! 1. [`kubernaut_framework::finalizer::event`] adds `kubernaut.ai/workflowexecution-cleanup` on
//!    first sight, together with `phase: Pending`, or hands a deleting object to `cleanup`.
//! 2. `Pending` (`pending`): validate → lock/cooldown decision from the in-memory store → render
//!    → create the PipelineRun (the lock) → `Running`.
//! 3. `Running` (`running`): driven by PipelineRun watch events; the run's status is read
//!    through the status mapping file → `Completed` / `Failed`, or a refreshed
//!    `pipelineRunStatus`.
//! 4. `Completed`/`Failed` (`terminal`): hold the lock for the cooldown period, then release it
//!    (delete the run only if its labels name this WFE); honour the block-clearing annotation
//!    (`clearance`).
//! 5. Deletion (`cleanup`): cancel a running run of ours, delete it, drop the finalizer.
//!
//! A phase handler returns an [`Outcome`]: the new status, the effects of reaching it (Events,
//! audit records, metric updates, log lines) and when to look again. The status and the effects
//! are built by pure functions of the object, what was observed and the time; the framework's
//! [`lifecycle::reconcile`] writes the status and applies the effects (through `Pass`'s
//! [`Effects`]) only when the write happened. Every failure goes through one path,
//! `failed::failed`.
//!
//! Guarantees:
//! 1. Status is written only when it changed, with the resourceVersion read (a conflict is an
//!    error and the object is reconciled again from fresh state — never clobbered).
//! 2. A phase change is checked against the declared transitions before it is written
//!    ([`phase::dispatch`] for the handler's outcome, [`phase::transition`] on every write).
//! 3. A WFE never deletes or cancels a PipelineRun whose ownership labels name another WFE.
//! 4. Every decision is reconstructible from cluster state: a restarted operator adopts the run a
//!    `Pending` WFE already created, and continues `Running` ones from the run's status.
//! 5. Effects (Events, audit records, metrics, logs) of a status follow its write: a pass whose
//!    write changed nothing, or failed, emits none.

#[cfg(test)]
mod calls;
mod cleanup;
mod clearance;
mod failed;
mod outcome;
mod pending;
mod running;
mod target_lock;
mod terminal;
#[cfg(test)]
mod tests;

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::DynamicObject,
    runtime::{
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use kubernaut_framework::{
    condition::{self, ConditionStatus, ConditionType, Conditions},
    config::ConfigStore,
    finalizer::FinalizerError,
    lifecycle::{self, Effects, Lifecycle, PhasedStatus, StatusError},
    lock::{LockError, Locks},
    own_writes::OwnWrites,
    phase::{self, PhaseHandlers},
    runtime::{Action, Context, MetricLabel},
    status::Held,
};
use tracing::{info, warn};

pub use self::outcome::{Effect, MetricUpdate, Outcome, OutcomeExt};
use crate::{
    audit::{AuditAction, AuditData, AuditEvent, Auditor},
    config::OperatorConfig,
    decide,
    engine::{Engine, Engines},
    metrics::Metrics,
    types::{
        FailureReason, Phase, PipelineRunRef, SkipReason, WorkflowExecution,
        WorkflowExecutionStatus,
    },
};

/// The finalizer that links a WFE to its PipelineRun in another namespace.
pub const FINALIZER: &str = "kubernaut.ai/workflowexecution-cleanup";
pub use crate::decide::CLEAR_BLOCK_ANNOTATION;
/// How often a Running WFE is re-checked when no watch event arrives (a safety net, not a poll).
pub const SAFETY_RESYNC: Duration = Duration::from_secs(600);

/// The condition types of a WorkflowExecution's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionCondition {
    /// The execution's outcome: `Unknown` while pending or running, `True` completed, `False`
    /// failed or skipped (the reason says why).
    Ready,
    /// The PipelineRun exists (`False` while waiting for a previous run to be deleted).
    ExecutionCreated,
    /// The PipelineRun runs (`False` with a failure reason while a TaskRun is held back).
    ExecutionRunning,
    /// The PipelineRun has finished.
    ExecutionComplete,
    /// The clearance annotation was acted on: `True` cleared, `False` refused.
    BlockCleared,
}

impl ConditionType for ExecutionCondition {
    fn as_str(self) -> &'static str {
        match self {
            ExecutionCondition::Ready => "Ready",
            ExecutionCondition::ExecutionCreated => "ExecutionCreated",
            ExecutionCondition::ExecutionRunning => "ExecutionRunning",
            ExecutionCondition::ExecutionComplete => "ExecutionComplete",
            ExecutionCondition::BlockCleared => "BlockCleared",
        }
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
    /// The target locks this process takes (one guard per lock name while it is checked across
    /// engine kinds and taken, so that two executions on one target never create children of
    /// two kinds at once).
    pub locks: Locks,
}

/// The reconcile context.
pub type Ctx = Context<WorkflowExecution, State>;

/// What can fail a reconcile; every such failure is retried with per-object backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// Acquiring or releasing the lock failed transiently.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A handler chose a phase change the lifecycle does not allow.
    #[error("illegal phase transition {from} -> {to}")]
    IllegalTransition {
        /// From.
        from: String,
        /// To.
        to: String,
    },
    /// The object is missing data the API server always sets.
    #[error("{0}")]
    Invalid(String),
}

impl MetricLabel for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Lock(_) => "lock",
            Error::IllegalTransition { .. } => "illegal_transition",
            Error::Invalid(_) => "invalid",
        }
    }
}

impl<P: phase::Phase> From<phase::IllegalTransition<P>> for Error {
    fn from(e: phase::IllegalTransition<P>) -> Self {
        Error::IllegalTransition {
            from: e
                .from
                .map(|p| p.to_string())
                .unwrap_or_else(|| "none".into()),
            to: e.to.to_string(),
        }
    }
}

impl phase::Phase for Phase {
    fn allowed_transitions(self) -> &'static [Self] {
        Phase::allowed_transitions(self)
    }

    fn is_terminal(self) -> bool {
        Phase::is_terminal(self)
    }

    fn is_initial(self) -> bool {
        self == Phase::Pending
    }
}

impl PhasedStatus for WorkflowExecutionStatus {
    type Phase = Phase;

    fn phase(&self) -> Option<Phase> {
        self.phase
    }
}

impl<P: phase::Phase> From<StatusError<P>> for Error {
    fn from(e: StatusError<P>) -> Self {
        match e {
            StatusError::IllegalTransition(e) => e.into(),
            StatusError::Unaddressable { object } => Error::Invalid(format!(
                "WorkflowExecution {object} has no namespace or name"
            )),
            StatusError::Write { object, source } => Error::Kube {
                action: format!("writing the status of {object}"),
                source,
            },
        }
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Reconcile one WorkflowExecution.
///
/// # Errors
/// Transient API failures; the runtime retries them with per-object backoff.
pub async fn reconcile(wfe: Arc<WorkflowExecution>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = wfe.namespace().ok_or_else(|| {
        Error::Invalid(format!(
            "WorkflowExecution {} has no namespace",
            wfe.name_any()
        ))
    })?;
    let engines = &ctx.data.engines;
    let recorded = wfe
        .status
        .as_ref()
        .and_then(|s| s.execution_engine.as_deref());
    if let Some(recorded) = recorded
        && engines.get(recorded).is_none()
    {
        // Its child is of that engine's kind: nothing here can read, cancel or release it.
        // Retried (with backoff) until the engine is configured again; nothing is lost.
        return Err(Error::Invalid(format!(
            "WorkflowExecution {} runs on engine {recorded:?}, which execution.engines no longer lists: configure it again to go on",
            describe(&wfe)
        )));
    }
    let engine = engines
        .of(&wfe)
        .or_else(|| engines.default_engine())
        .cloned()
        .ok_or_else(|| Error::Invalid("no execution engine is configured".to_owned()))?;
    let pass = Pass {
        api: Api::namespaced(ctx.client.clone(), &ns),
        engine,
        config: ctx.data.config.current(),
        ctx: &ctx,
        now: Timestamp::now(),
    };
    lifecycle::reconcile(&pass, wfe).await
}

/// One reconcile pass: the context, the WFE's API, the configuration snapshot the whole pass
/// decides with, and the time the pass started.
struct Pass<'a> {
    ctx: &'a Arc<Ctx>,
    /// The engine of the reconciled WFE ([`Engines::of`]; the default one for a WFE asking for
    /// an engine that is not configured, which its validation then fails).
    engine: Arc<Engine>,
    api: Api<WorkflowExecution>,
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
        conditions(wfe, &mut status, self.now).set(
            ExecutionCondition::Ready,
            ConditionStatus::Unknown,
            "Pending",
            "Waiting to start the workflow",
        );
        status
    }

    async fn cleanup(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        Pass::cleanup(self, wfe).await
    }
}

impl Effects<WorkflowExecution, Effect> for Pass<'_> {
    /// Applies one effect about `wfe` (as written).
    fn apply(&self, wfe: &WorkflowExecution, effect: Effect) {
        match effect {
            Effect::Event {
                type_,
                reason,
                note,
            } => self.publish(wfe, type_, reason, note),
            Effect::Audit(action) => {
                let status = wfe.status.clone().unwrap_or_default();
                self.state()
                    .auditor
                    .record(audit_event(wfe, action, &status));
            }
            Effect::Metric(update) => self.update_metric(wfe, update),
            Effect::Log { warning, message } => {
                if warning {
                    warn!(wfe = %describe(wfe), "{message}");
                } else {
                    info!(wfe = %describe(wfe), "{message}");
                }
            }
        }
    }
}

impl Pass<'_> {
    fn state(&self) -> &State {
        &self.ctx.data
    }

    /// PipelineRuns in `namespace`: a run is always addressed in the namespace recorded in
    /// `status.pipelineRunRef`, which outlives a change of `execution.namespace`.
    fn runs_in(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            namespace,
            &self.engine.child_resource,
        )
    }

    /// The children of `engine`'s kind in the configured `execution.namespace`.
    fn runs_of(&self, engine: &Engine) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            &self.config.execution.namespace,
            &engine.child_resource,
        )
    }

    fn cached_run(&self, run_ref: &PipelineRunRef) -> Option<Arc<DynamicObject>> {
        self.ctx.children.get(
            &ObjectRef::new_with(&run_ref.name, self.engine.child_resource.clone())
                .within(&run_ref.namespace),
        )
    }

    /// Writes `status` to `wfe` (see `lifecycle::write_status`) and applies `effects` about it
    /// when the write happened. Returns the written object, or `None` when nothing changed.
    async fn write(
        &self,
        wfe: &WorkflowExecution,
        status: WorkflowExecutionStatus,
        effects: Vec<Effect>,
    ) -> Result<Option<WorkflowExecution>, Error> {
        let (client, own_writes) = (&self.ctx.client, &self.state().own_writes);
        Ok(lifecycle::write_with_effects(client, own_writes, self, wfe, status, effects).await?)
    }

    fn update_metric(&self, wfe: &WorkflowExecution, update: MetricUpdate) {
        let metrics = &self.state().metrics;
        match update {
            MetricUpdate::Finished { phase, duration } => {
                metrics.total.with_label_values(&[phase.as_str()]).inc();
                if let Some(duration) = duration {
                    metrics
                        .duration_of(phase.as_str())
                        .observe(duration.as_secs_f64());
                }
            }
            MetricUpdate::Skipped(reason) => {
                metrics.total.with_label_values(&["Skipped"]).inc();
                metrics.skip.with_label_values(&[reason.as_str()]).inc();
                if matches!(
                    reason,
                    SkipReason::ExhaustedRetries | SkipReason::PreviousExecutionFailed
                ) {
                    metrics
                        .backoff_skip
                        .with_label_values(&[reason.as_str()])
                        .inc();
                }
            }
            MetricUpdate::ConsecutiveFailures(count) => {
                metrics.set_consecutive_failures(&wfe.spec.target_resource, count);
            }
        }
    }

    /// Publishes an Event about `wfe` beside the reconcile (best-effort, not awaited).
    fn publish(&self, wfe: &WorkflowExecution, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        self.ctx.publish_detached(wfe, event);
    }

    /// Every other WFE on the same target, from the reflector store's target index.
    fn peers_on_target(&self, wfe: &WorkflowExecution) -> Vec<Arc<WorkflowExecution>> {
        let target = crate::types::target_key(&wfe.spec.target_resource);
        let uid = wfe.uid();
        self.ctx
            .parent_index
            .get(&target, &self.ctx.parents)
            .into_iter()
            .filter(|other| {
                crate::types::target_key(&other.spec.target_resource) == target
                    && other.uid() != uid
            })
            .collect()
    }

    /// Sets `workflowexecution_consecutive_failures` of `target` from the store: the streak the
    /// most recent finished WFE on it carries (`excluding` one being deleted); no series when
    /// none carries failures.
    fn refresh_failure_gauge(&self, target: &str, excluding: Option<&str>) {
        let key = crate::types::target_key(target);
        let on_target = self.ctx.parent_index.get(&key, &self.ctx.parents);
        let finished: Vec<&WorkflowExecution> = on_target
            .iter()
            .map(Arc::as_ref)
            .filter(|w| crate::types::target_key(&w.spec.target_resource) == key)
            .filter(|w| excluding.is_none_or(|uid| w.uid().as_deref() != Some(uid)))
            .collect();
        let streak = decide::most_recent_finished(&finished).map_or(0, decide::streak);
        self.state()
            .metrics
            .set_consecutive_failures(target, streak);
    }
}

fn describe(wfe: &WorkflowExecution) -> String {
    kubernaut_framework::names::namespaced_name(wfe)
}

/// The audit record of `wfe` in `status` for `action`.
pub fn audit_event(
    wfe: &WorkflowExecution,
    action: AuditAction,
    status: &WorkflowExecutionStatus,
) -> AuditEvent {
    let failure = status.failure_details.as_ref();
    let skip = status.skip_details.as_ref();
    let data = AuditData {
        workflow_id: Some(wfe.spec.workflow_ref.workflow_id.clone()),
        target_resource: Some(wfe.spec.target_resource.clone()),
        phase: status.phase.map(|p| p.as_str().to_string()),
        container_image: Some(wfe.spec.workflow_ref.container_image.clone()),
        execution_name: Some(wfe.name_any()),
        pipelinerun_name: status.pipeline_run_ref.as_ref().map(|r| r.name.clone()),
        started_at: status.start_time.as_ref().map(|t| t.0.to_string()),
        completed_at: status.completion_time.as_ref().map(|t| t.0.to_string()),
        duration: status.duration.clone(),
        failure_reason: failure.map(|f| f.reason.as_str().to_string()),
        failure_message: failure.map(|f| f.message.clone()),
        failed_task_name: failure.and_then(|f| f.failed_task_name.clone()),
        skip_reason: skip.map(|s| s.reason.as_str().to_string()),
        skip_message: skip.map(|s| s.message.clone()),
    };
    let remediation_request = wfe
        .spec
        .remediation_request_ref
        .as_ref()
        .and_then(|r| r.name.clone());
    AuditEvent::new(
        action,
        wfe.namespace().unwrap_or_default(),
        wfe.name_any(),
        remediation_request.as_deref(),
        data,
    )
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
fn seen_started(wfe: &WorkflowExecution) -> bool {
    wfe.status
        .as_ref()
        .and_then(|s| s.pipeline_run_status.as_ref())
        .and_then(|s| s.execution_started)
        == Some(true)
}
