//! The WorkflowExecution reconciler: one handler per phase on top of the framework runtime.
//!
//! Flow of one object (see the behaviour contract for every rule):
//! 1. [`finalizer::event`] adds `kubernaut.ai/workflowexecution-cleanup` on first sight, together
//!    with `phase: Pending`, or hands a deleting object to the cleanup handler.
//! 2. `Pending`: validate → lock/cooldown decision from the in-memory store → render → create the
//!    PipelineRun (the lock) → `Running`.
//! 3. `Running`: driven by PipelineRun watch events; the run's status is read through the status
//!    mapping file → `Completed` / `Failed`, or a refreshed `pipelineRunStatus`.
//! 4. `Completed`/`Failed`: hold the lock for the cooldown period, then release it (delete the run
//!    only if its labels name this WFE); honour the block-clearing annotation.
//! 5. Deletion: cancel a running run of ours, delete it, drop the finalizer.
//!
//! Guarantees:
//! 1. Status is written only when it changed, with the resourceVersion read (a conflict is an
//!    error and the object is reconciled again from fresh state — never clobbered).
//! 2. A phase change is checked against the declared transitions before it is written.
//! 3. A WFE never deletes or cancels a PipelineRun whose ownership labels name another WFE.
//! 4. Every decision is reconstructible from cluster state: a restarted operator adopts the run a
//!    `Pending` WFE already created, and continues `Running` ones from the run's status.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
    runtime::{
        events::{Event, EventType},
        reflector::ObjectRef,
    },
};
use kubernaut_framework::{
    condition::{self, ConditionStatus, ConditionType, Conditions},
    config::ConfigStore,
    finalizer::{self, FinalizerError},
    lock::{self, Acquisition, LockError, Release},
    own_writes::OwnWrites,
    phase,
    runtime::{Action, Context, MetricLabel},
    status::{Held, StatusMapping},
    template::TemplateError,
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    audit::{AuditAction, AuditData, AuditEvent, Auditor},
    cancel::CancelSpec,
    config::OperatorConfig,
    decide::{self, Decision},
    duration::{duration_between, format_go_duration},
    failure,
    metrics::Metrics,
    pipelinerun::{self, LABEL_WORKFLOW_ID},
    run_status::{self, RunPhase},
    types::{
        BlockClearance, ConflictingWorkflow, FailureDetails, FailureReason, Phase, PipelineRunRef,
        RecentRemediation, SkipDetails, SkipReason, WorkflowExecution, WorkflowExecutionStatus,
    },
    validate,
};

/// The finalizer that links a WFE to its PipelineRun in another namespace.
pub const FINALIZER: &str = "kubernaut.ai/workflowexecution-cleanup";
pub use crate::decide::CLEAR_BLOCK_ANNOTATION;
/// How often a Running WFE is re-checked when no watch event arrives (a safety net, not a poll).
pub const SAFETY_RESYNC: Duration = Duration::from_secs(600);

/// How often a WFE waiting for a previous run to be deleted looks again.
const PREVIOUS_RUN_POLL: Duration = Duration::from_secs(2);

/// What [`Handler::acquire_run`] found.
// One value per reconcile, consumed at once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Acquired {
    /// We created the run.
    Created(DynamicObject),
    /// The run already existed and names this WFE's uid.
    Adopted(DynamicObject),
    /// The lock run is being deleted; wait (the message says for what).
    Waiting(String),
    /// Skip: the target is busy or blocked.
    Skip(SkipDetails),
}

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

/// The operator's state shared by every reconcile.
pub struct State {
    /// The live configuration (reloadable, last known good).
    pub config: Arc<ConfigStore<OperatorConfig>>,
    /// How PipelineRun status is read.
    pub mapping: Arc<StatusMapping>,
    /// How a running PipelineRun is cancelled on deletion (`tekton/cancel.yaml`).
    pub cancel: Arc<CancelSpec>,
    /// Where audit events go.
    pub auditor: Auditor,
    /// The contract's metrics.
    pub metrics: Metrics,
    /// `tekton.dev/v1` PipelineRun.
    pub pipelinerun: ApiResource,
    /// `tekton.dev/v1` TaskRun.
    pub taskrun: ApiResource,
    /// The WFE versions this operator replaced by its own writes: a reconcile handed one of them
    /// by a lagging cache stands aside instead of repeating a decision and hitting a conflict.
    pub own_writes: OwnWrites<WorkflowExecution>,
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
    if ctx.data.own_writes.is_outdated(&wfe) {
        // The watch event of our own newer write is on its way and reconciles that version.
        debug!(wfe = %describe(&wfe), "cached copy predates our own write; waiting for the newer one");
        return Ok(Action::await_change());
    }
    let api: Api<WorkflowExecution> = Api::namespaced(ctx.client.clone(), &ns);
    let event = finalizer::event(&api, wfe.clone(), FINALIZER).await?;
    if let finalizer::Event::Added(patched) = &event {
        ctx.data.own_writes.record(&wfe, patched);
    }
    match event {
        finalizer::Event::Added(wfe) | finalizer::Event::Apply(wfe) => {
            Handler {
                ctx: &ctx,
                api,
                now: Timestamp::now(),
            }
            .apply(wfe)
            .await
        }
        finalizer::Event::Cleanup(wfe) => {
            Handler {
                ctx: &ctx,
                api,
                now: Timestamp::now(),
            }
            .cleanup(wfe)
            .await
        }
        finalizer::Event::Done => Ok(Action::await_change()),
    }
}

/// One reconcile pass: the context, the WFE's API and the time the pass started.
struct Handler<'a> {
    ctx: &'a Arc<Ctx>,
    api: Api<WorkflowExecution>,
    now: Timestamp,
}

impl Handler<'_> {
    fn state(&self) -> &State {
        &self.ctx.data
    }

    fn config(&self) -> Arc<OperatorConfig> {
        self.state().config.current()
    }

    fn runs(&self, config: &OperatorConfig) -> Api<DynamicObject> {
        self.runs_in(&config.execution.namespace)
    }

    /// PipelineRuns in `namespace`: a run is always addressed in the namespace recorded in
    /// `status.pipelineRunRef`, which outlives a change of `execution.namespace`.
    fn runs_in(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.ctx.client.clone(),
            namespace,
            &self.state().pipelinerun,
        )
    }

    async fn apply(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        match wfe.phase() {
            None => {
                let mut status = wfe.status.clone().unwrap_or_default();
                status.phase = Some(Phase::Pending);
                status.observed_generation = wfe.meta().generation;
                self.conditions(&mut status, wfe.meta().generation).set(
                    ExecutionCondition::Ready,
                    ConditionStatus::Unknown,
                    "Pending",
                    "Waiting to start the workflow",
                );
                let Some(updated) = self.write_status(&wfe, status).await? else {
                    return Ok(Action::await_change());
                };
                self.pending(Arc::new(updated)).await
            }
            Some(Phase::Pending) => self.pending(wfe).await,
            Some(Phase::Running) => self.running(wfe).await,
            Some(Phase::Completed | Phase::Failed) => self.terminal(wfe).await,
            Some(Phase::Skipped) => {
                // A Skipped WFE is where a block whose failed WFE is gone gets cleared.
                self.clear_block_if_asked(wfe).await?;
                Ok(Action::await_change())
            }
        }
    }

    /// Write `status` if it differs from the object's, checking the phase transition and carrying
    /// the resourceVersion read. Returns the updated object, or `None` when nothing changed.
    async fn write_status(
        &self,
        wfe: &WorkflowExecution,
        status: WorkflowExecutionStatus,
    ) -> Result<Option<WorkflowExecution>, Error> {
        if wfe.status.as_ref() == Some(&status) {
            return Ok(None);
        }
        let from = wfe.phase();
        if let Some(to) = status.phase
            && from != Some(to)
        {
            phase::transition(from, to)?;
        }
        let mut updated = wfe.clone();
        updated.status = Some(status);
        updated.metadata.managed_fields = None;
        // Usually the reconciled WFE's own namespace; a clearance also writes another WFE of the
        // target, which may live elsewhere.
        let api = match wfe.namespace() {
            Some(ns) if Some(ns.as_str()) != self.api.namespace() => {
                Api::namespaced(self.ctx.client.clone(), &ns)
            }
            _ => self.api.clone(),
        };
        let written = api
            .replace_status(&wfe.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(kube_err(format!("writing the status of {}", describe(wfe))))?;
        self.state().own_writes.record(wfe, &written);
        Ok(Some(written))
    }

    /// The conditions of `status`, set for `generation` at this pass's time.
    fn conditions<'s>(
        &self,
        status: &'s mut WorkflowExecutionStatus,
        generation: Option<i64>,
    ) -> Conditions<'s, ExecutionCondition> {
        Conditions::new(&mut status.conditions, generation, self.now)
    }

    /// Publishes an Event about `wfe` without waiting for the API server (see the comment inside).
    async fn publish(&self, wfe: &WorkflowExecution, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        // Events are best-effort: publish them beside the reconcile instead of holding one of
        // the few reconcile slots for another API round trip.
        let (ctx, reference) = (self.ctx.clone(), wfe.object_ref(&()));
        tokio::spawn(async move { ctx.publish(&reference, event).await });
    }

    fn audit(
        &self,
        wfe: &WorkflowExecution,
        action: AuditAction,
        status: &WorkflowExecutionStatus,
    ) {
        self.state()
            .auditor
            .record(audit_event(wfe, action, status));
    }

    // ---------------------------------------------------------------- Pending

    async fn pending(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        let config = self.config();

        // 1. Validate (runtime copy of the admission rules + the service-account allowlist).
        if let Err(errors) = validate::validate_spec(&wfe.spec, &config.execution) {
            return self
                .fail_pre_execution(
                    &wfe,
                    FailureReason::ConfigurationError,
                    format!("invalid WorkflowExecution spec: {errors}"),
                )
                .await;
        }

        // 2–3. Lock and cooldown decisions from the in-memory store.
        let peers = self.peers_on_target(&wfe);
        match decide::decide(&wfe, &peers, self.now, &config) {
            Decision::Proceed => {}
            Decision::Skip(details) => return self.skip(&wfe, details).await,
        }

        // 4. Render and create the PipelineRun (the lock).
        let Some(templates) = self.ctx.templates.as_ref().map(|t| t.current()) else {
            return Err(Error::Invalid(
                "the runtime was started without templates".into(),
            ));
        };
        let rendered = match pipelinerun::render_pipeline_run(&wfe, &config, &templates) {
            Ok(run) => run,
            Err(e) => return self.fail_template(&wfe, &e).await,
        };
        let run: DynamicObject = match serde_json::from_value(rendered) {
            Ok(run) => run,
            Err(e) => {
                return self
                    .fail_pre_execution(
                        &wfe,
                        FailureReason::ConfigurationError,
                        format!("the rendered PipelineRun is not a Kubernetes object: {e}"),
                    )
                    .await;
            }
        };
        let revision = templates.revision().to_owned();
        match self.acquire_run(&wfe, run, &config).await {
            Ok(Acquired::Created(run)) => {
                self.state().metrics.pipelinerun_creation.inc();
                self.started(&wfe, &run, &revision, true).await
            }
            Ok(Acquired::Adopted(run)) => self.started(&wfe, &run, &revision, false).await,
            Ok(Acquired::Waiting(message)) => self.wait_for_previous_run(&wfe, &message).await,
            Ok(Acquired::Skip(details)) => self.skip(&wfe, details).await,
            Err(LockError::Create {
                source: kube::Error::Api(status),
                object,
            }) => {
                let message = format!(
                    "creating PipelineRun {object} was refused: {}",
                    status.message
                );
                let quota = status.message.to_lowercase().contains("exceeded quota");
                // An object too large to store is refused with 500, although retrying cannot help:
                // etcd's "request is too large" above its request limit (1.5 MiB by default), or
                // the API server's own etcd client's "trying to send message larger than max"
                // above 2 MiB.
                let too_large = ["request is too large", "message larger than max"]
                    .iter()
                    .any(|m| status.message.contains(m));
                match status.code {
                    403 if quota => {
                        self.fail_pre_execution(&wfe, FailureReason::ResourceExhausted, message)
                            .await
                    }
                    403 => {
                        self.fail_pre_execution(&wfe, FailureReason::Forbidden, message)
                            .await
                    }
                    422 if quota => {
                        self.fail_pre_execution(&wfe, FailureReason::ResourceExhausted, message)
                            .await
                    }
                    400 | 413 | 422 => {
                        self.fail_pre_execution(&wfe, FailureReason::ConfigurationError, message)
                            .await
                    }
                    _ if too_large => {
                        self.fail_pre_execution(&wfe, FailureReason::ConfigurationError, message)
                            .await
                    }
                    _ => Err(Error::Lock(LockError::Create {
                        source: kube::Error::Api(status),
                        object,
                    })),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the run (the lock) or decides what an existing one means for `wfe`: ours (same
    /// uid) → adopt; being deleted → wait; stale (its owner is gone, or finished past its
    /// cooldown without a block) → break it and try again; a block → skip; otherwise busy.
    async fn acquire_run(
        &self,
        wfe: &WorkflowExecution,
        run: DynamicObject,
        config: &OperatorConfig,
    ) -> Result<Acquired, LockError> {
        let runs = self.runs(config);
        let owner = pipelinerun::owner(wfe);
        // While the previous run is still being deleted, the cache says so without an API call
        // (this is re-checked every few seconds for as long as a foreign finalizer holds it).
        let lock = PipelineRunRef {
            name: run.name_any(),
            namespace: config.execution.namespace.clone(),
        };
        if let Some(cached) = self.cached_run(&lock)
            && cached.meta().deletion_timestamp.is_some()
            && !owner.owns(cached.labels())
        {
            let holder = pipelinerun::run_owner(&cached);
            return Ok(Acquired::Waiting(waiting_message(&cached, &holder)));
        }
        // One stale lock broken per pass is the normal case; a second means the name is
        // contended, and the next reconcile decides again.
        for _ in 0..2 {
            let existing = match lock::acquire(&runs, run.clone(), &owner).await? {
                Acquisition::Acquired(run) => return Ok(Acquired::Created(run)),
                Acquisition::Adopted(run) if run.meta().deletion_timestamp.is_none() => {
                    return Ok(Acquired::Adopted(run));
                }
                Acquisition::Adopted(run) | Acquisition::HeldBy(run) => run,
            };
            let holder = pipelinerun::run_owner(&existing);
            if existing.meta().deletion_timestamp.is_some() {
                return Ok(Acquired::Waiting(waiting_message(&existing, &holder)));
            }
            let holder_wfe = self.current_owner(&holder).await?;
            let blocking = holder_wfe.as_deref().map_or_else(
                || pipelinerun::ExecutionBlock::of(&existing).is_some(),
                decide::holds_block,
            );
            if blocking {
                return Ok(Acquired::Skip(self.blocked_by_run(
                    wfe,
                    &existing,
                    holder_wfe.as_deref(),
                )));
            }
            let stale = match holder_wfe.as_deref() {
                None => true,
                Some(holder) => self.past_cooldown(holder, config),
            };
            if !stale {
                return Ok(Acquired::Skip(self.busy_details(
                    wfe,
                    &existing,
                    &holder,
                    holder_wfe.as_deref(),
                )));
            }
            info!(
                wfe = %describe(wfe),
                pipelinerun = %existing.name_any(),
                holder = %format!("{}/{}", holder.namespace, holder.name),
                "releasing a stale lock: its owner is gone or done with it"
            );
            lock::break_stale(&runs, &existing).await?;
        }
        Ok(Acquired::Waiting(
            "the lock PipelineRun keeps changing; deciding again shortly".to_owned(),
        ))
    }

    /// The WorkflowExecution a run names, if it still exists *as that instance* (same uid). The
    /// store answers; a miss is confirmed with the API server, since the store can lag.
    async fn current_owner(
        &self,
        holder: &pipelinerun::RunOwner,
    ) -> Result<Option<Arc<WorkflowExecution>>, LockError> {
        if holder.name.is_empty() || holder.namespace.is_empty() {
            return Ok(None);
        }
        let same_instance = |w: &WorkflowExecution| w.uid().as_deref() == Some(holder.uid.as_str());
        let reference = ObjectRef::new(&holder.name).within(&holder.namespace);
        if let Some(cached) = self.ctx.parents.get(&reference)
            && same_instance(&cached)
        {
            return Ok(Some(cached));
        }
        let api: Api<WorkflowExecution> =
            Api::namespaced(self.ctx.client.clone(), &holder.namespace);
        let live = api
            .get_opt(&holder.name)
            .await
            .map_err(|source| LockError::Read {
                object: format!("WorkflowExecution {}/{}", holder.namespace, holder.name),
                source,
            })?;
        Ok(live.filter(|w| same_instance(w)).map(Arc::new))
    }

    /// Whether a holder is done with its lock: terminal, and its cooldown is over (a Skipped
    /// WorkflowExecution never held a lock, so any run naming it is stale).
    fn past_cooldown(&self, holder: &WorkflowExecution, config: &OperatorConfig) -> bool {
        match holder.phase() {
            Some(Phase::Skipped) => true,
            Some(Phase::Completed | Phase::Failed) => holder
                .completion_time()
                .is_none_or(|done| duration_between(done, self.now) >= config.cooldown.period),
            _ => false,
        }
    }

    /// `Skipped` `PreviousExecutionFailed` because the lock run carries an execution block.
    fn blocked_by_run(
        &self,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
        holder: Option<&WorkflowExecution>,
    ) -> SkipDetails {
        let block = pipelinerun::ExecutionBlock::of(run);
        let target = &wfe.spec.target_resource;
        let failed = holder.map(describe).or_else(|| {
            block
                .as_ref()
                .map(|b| b.workflow_execution.clone())
                .filter(|w| !w.is_empty())
        });
        let failed = failed.unwrap_or_else(|| "(deleted)".to_owned());
        let workflow_id = holder
            .map(|h| h.spec.workflow_ref.workflow_id.clone())
            .or_else(|| block.as_ref().map(|b| b.workflow_id.clone()))
            .unwrap_or_default();
        let reason = block.as_ref().map_or("unknown", |b| b.reason.as_str());
        let clear_on = if holder.is_some() {
            format!("{failed} (or this WorkflowExecution)")
        } else {
            "this WorkflowExecution".to_owned()
        };
        SkipDetails {
            reason: SkipReason::PreviousExecutionFailed,
            message: format!(
                "an earlier execution on target {target}, WorkflowExecution {failed} (workflow {workflow_id}), failed during execution ({reason}) and its PipelineRun {}/{} is kept as the block; \
                 Manual intervention required: check the target, then annotate {clear_on} with {CLEAR_BLOCK_ANNOTATION}=<reason> to allow new executions",
                run.namespace().unwrap_or_default(),
                run.name_any(),
            ),
            skipped_at: Time(self.now),
            conflicting_workflow: None,
            recent_remediation: Some(RecentRemediation {
                name: holder.map_or_else(
                    || failed.rsplit('/').next().unwrap_or_default().to_owned(),
                    |h| h.name_any(),
                ),
                workflow_id,
                completed_at: holder
                    .and_then(WorkflowExecution::completion_time)
                    .or_else(|| block.as_ref().and_then(|b| b.failed_at.parse().ok()))
                    .map(Time),
                outcome: Phase::Failed.to_string(),
                target_resource: target.clone(),
                cooldown_remaining: None,
            }),
        }
    }

    /// Stay `Pending` until the previous run is gone: a condition says why, written once.
    async fn wait_for_previous_run(
        &self,
        wfe: &WorkflowExecution,
        message: &str,
    ) -> Result<Action, Error> {
        let mut status = wfe.status.clone().unwrap_or_default();
        self.conditions(&mut status, wfe.meta().generation).set(
            ExecutionCondition::ExecutionCreated,
            ConditionStatus::False,
            "WaitingForPreviousRun",
            message,
        );
        if self.write_status(wfe, status).await?.is_some() {
            info!(wfe = %describe(wfe), "waiting: {message}");
        }
        // The old run's deletion event maps to *its* owner, not necessarily to this WFE: look
        // again shortly.
        Ok(Action::requeue(PREVIOUS_RUN_POLL))
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

    fn busy_details(
        &self,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
        holder: &pipelinerun::RunOwner,
        holder_wfe: Option<&WorkflowExecution>,
    ) -> SkipDetails {
        let workflow_id = holder_wfe
            .map(|w| w.spec.workflow_ref.workflow_id.clone())
            .or_else(|| run.labels().get(LABEL_WORKFLOW_ID).cloned())
            .unwrap_or_default();
        let started_at = holder_wfe.and_then(|w| w.status.as_ref()?.start_time.clone());
        let target = run
            .annotations()
            .get(pipelinerun::TARGET_RESOURCE_KEY)
            .cloned()
            .unwrap_or_else(|| wfe.spec.target_resource.clone());
        SkipDetails {
            reason: SkipReason::ResourceBusy,
            message: format!(
                "target {target} is busy: PipelineRun {} of WorkflowExecution {}/{} holds its lock",
                run.name_any(),
                holder.namespace,
                holder.name
            ),
            skipped_at: Time(self.now),
            conflicting_workflow: Some(ConflictingWorkflow {
                name: holder.name.clone(),
                workflow_id,
                started_at,
                target_resource: target,
            }),
            recent_remediation: None,
        }
    }

    async fn started(
        &self,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
        revision: &str,
        created: bool,
    ) -> Result<Action, Error> {
        let config = self.config();
        let mut status = wfe.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Running);
        status.start_time = Some(Time(self.now));
        status.pipeline_run_ref = Some(PipelineRunRef {
            name: run.name_any(),
            namespace: run
                .namespace()
                .unwrap_or_else(|| config.execution.namespace.clone()),
        });
        status.template_revision = run
            .annotations()
            .get(pipelinerun::ANNOTATION_TEMPLATE_REVISION)
            .cloned()
            .or_else(|| Some(revision.to_string()));
        let generation = wfe.meta().generation;
        let message = format!("PipelineRun {} created", run.name_any());
        self.conditions(&mut status, generation).set(
            ExecutionCondition::ExecutionCreated,
            ConditionStatus::True,
            "PipelineRunCreated",
            &message,
        );
        self.conditions(&mut status, generation).set(
            ExecutionCondition::Ready,
            ConditionStatus::Unknown,
            "Running",
            "The workflow is running",
        );
        // What the run's own watch event would otherwise write right after: one write, not two.
        let observation = run_status::observe_run(&self.state().mapping, &run.data, None);
        if matches!(observation.phase, RunPhase::Pending | RunPhase::Running) {
            self.observe_unfinished(&mut status, &observation, None, generation);
        }
        let written = self.write_status(wfe, status.clone()).await?;
        if written.is_some() {
            if created {
                info!(wfe = %describe(wfe), pipelinerun = %run.name_any(), "PipelineRun created");
            } else {
                info!(wfe = %describe(wfe), pipelinerun = %run.name_any(), "adopted the existing PipelineRun");
            }
            self.publish(
                wfe,
                EventType::Normal,
                "PipelineRunCreated",
                format!(
                    "{message} in {}",
                    run.namespace()
                        .unwrap_or_else(|| config.execution.namespace.clone())
                ),
            )
            .await;
            self.audit(wfe, AuditAction::Started, &status);
        }
        Ok(Action::requeue(SAFETY_RESYNC))
    }

    async fn skip(&self, wfe: &WorkflowExecution, details: SkipDetails) -> Result<Action, Error> {
        let reason = details.reason;
        let mut status = wfe.status.clone().unwrap_or_default();
        status.phase = Some(Phase::Skipped);
        status.completion_time = Some(Time(self.now));
        self.conditions(&mut status, wfe.meta().generation).set(
            ExecutionCondition::Ready,
            ConditionStatus::False,
            reason.as_str(),
            &details.message,
        );
        let note = details.message.clone();
        status.skip_details = Some(details);
        if self.write_status(wfe, status.clone()).await?.is_some() {
            let metrics = &self.state().metrics;
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
            info!(wfe = %describe(wfe), reason = reason.as_str(), "skipped: {note}");
            self.publish(wfe, EventType::Normal, "Skipped", note).await;
            self.audit(wfe, AuditAction::Skipped, &status);
        }
        Ok(Action::await_change())
    }

    async fn fail_template(
        &self,
        wfe: &WorkflowExecution,
        error: &TemplateError,
    ) -> Result<Action, Error> {
        self.fail_pre_execution(
            wfe,
            FailureReason::ConfigurationError,
            format!("rendering the PipelineRun template failed: {error}"),
        )
        .await
    }

    /// A failure before anything executed: counts against the target's backoff.
    async fn fail_pre_execution(
        &self,
        wfe: &WorkflowExecution,
        reason: FailureReason,
        message: String,
    ) -> Result<Action, Error> {
        let config = self.config();
        let context = failure::FailureContext::new(wfe, &config.execution);
        let details = failure::pre_execution_failure(&context, reason, &message, self.now);
        self.finish_failed(wfe, details, None).await
    }

    /// Write the terminal `Failed` status with `details` (the counters are derived here).
    async fn finish_failed(
        &self,
        wfe: &WorkflowExecution,
        details: FailureDetails,
        run_completion: Option<Timestamp>,
    ) -> Result<Action, Error> {
        let config = self.config();
        let mut status = wfe.status.clone().unwrap_or_default();
        let completed_at = run_completion.unwrap_or(self.now);
        status.phase = Some(Phase::Failed);
        status.completion_time = Some(Time(completed_at));
        if let Some(start) = status.start_time.as_ref() {
            status.duration = Some(format_go_duration(duration_between(start.0, completed_at)));
        }
        if !details.was_execution_failure {
            let peers = self.peers_on_target(wfe);
            let count = decide::count_pre_execution_failure(wfe, &peers, self.now, &config);
            status.consecutive_failures = Some(count.consecutive_failures);
            status.next_allowed_execution = Some(Time(count.next_allowed_execution));
        }
        let generation = wfe.meta().generation;
        self.conditions(&mut status, generation).set(
            ExecutionCondition::Ready,
            ConditionStatus::False,
            details.reason.as_str(),
            &details.message,
        );
        if status.pipeline_run_ref.is_some() {
            self.conditions(&mut status, generation).set(
                ExecutionCondition::ExecutionRunning,
                ConditionStatus::False,
                "Failed",
                "The PipelineRun has finished",
            );
            self.conditions(&mut status, generation).set(
                ExecutionCondition::ExecutionComplete,
                ConditionStatus::True,
                "Failed",
                &details.message,
            );
        }
        let summary = details.natural_language_summary.clone();
        let reason = details.reason;
        status.failure_details = Some(details);
        if self.write_status(wfe, status.clone()).await?.is_some() {
            let metrics = &self.state().metrics;
            metrics.total.with_label_values(&["Failed"]).inc();
            if let Some(start) = status.start_time.as_ref() {
                metrics
                    .duration_of("Failed")
                    .observe(duration_between(start.0, completed_at).as_secs_f64());
            }
            if let Some(count) = status.consecutive_failures {
                metrics.set_consecutive_failures(&wfe.spec.target_resource, count);
            }
            warn!(wfe = %describe(wfe), reason = reason.as_str(), "workflow failed");
            self.publish(wfe, EventType::Warning, "WorkflowFailed", summary)
                .await;
            self.audit(wfe, AuditAction::Failed, &status);
        }
        Ok(self.after_terminal(wfe, &status, &config))
    }

    // ---------------------------------------------------------------- Running

    async fn running(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        let Some(run_ref) = wfe.status.as_ref().and_then(|s| s.pipeline_run_ref.clone()) else {
            // Running without a run reference cannot come from this operator; treat it like a
            // vanished run.
            return self.run_vanished(&wfe, "(unknown)").await;
        };
        let owner = pipelinerun::owner(&wfe);
        let cached = self.ctx.children.get(
            &ObjectRef::new_with(&run_ref.name, self.state().pipelinerun.clone())
                .within(&run_ref.namespace),
        );
        let run = match cached {
            Some(run) if owner.owns(run.labels()) => (*run).clone(),
            // Not (yet) in the cache, or the cache holds an older object: ask the API server
            // before concluding anything.
            _ => match self
                .runs_in(&run_ref.namespace)
                .get_opt(&run_ref.name)
                .await
                .map_err(kube_err(format!("reading PipelineRun {}", run_ref.name)))?
            {
                Some(run) if owner.owns(run.labels()) => run,
                _ => return self.run_vanished(&wfe, &run_ref.name).await,
            },
        };

        let mut observation = run_status::observe_run(&self.state().mapping, &run.data, None);
        match observation.phase {
            RunPhase::Completed => self.complete(&wfe, &observation).await,
            RunPhase::Failed => self.fail_execution(&wfe, &run, &observation).await,
            RunPhase::Pending | RunPhase::Running => {
                let mut status = wfe.status.clone().unwrap_or_default();
                let namespace = run.namespace().unwrap_or(run_ref.namespace.clone());
                let mapping = &self.state().mapping;
                // The run's TaskRuns from the cache: their watch reconciles this WFE when one
                // changes, which is how a TaskRun held back by a quota is seen at all (the run
                // itself only says "Running" meanwhile).
                let task_runs = crate::task_runs::cached(
                    &self.ctx.grandchildren,
                    &self.state().taskrun,
                    &namespace,
                    mapping
                        .grandchild_names(&run.data)
                        .into_iter()
                        .map(|(_, n)| n),
                );
                if crate::task_runs::learn_step_ran(
                    mapping,
                    &task_runs,
                    status.pipeline_run_status.as_ref(),
                ) {
                    observation.summary.execution_started = Some(true);
                }
                let held = failure::held_back(mapping, &run.data, &task_runs);
                let newly_held = held
                    .as_ref()
                    .filter(|h| held_condition(&status).as_ref() != Some(*h))
                    .cloned();
                self.observe_unfinished(
                    &mut status,
                    &observation,
                    held.as_ref(),
                    wfe.meta().generation,
                );
                if self.write_status(&wfe, status).await?.is_some()
                    && let Some(held) = newly_held
                {
                    warn!(wfe = %describe(&wfe), reason = %held.result, "execution held back");
                    self.publish(
                        &wfe,
                        EventType::Warning,
                        "ExecutionHeld",
                        format!(
                            "{} ({}); the PipelineRun counts as running until it proceeds or times out",
                            held.message.as_deref().unwrap_or("a TaskRun is held back"),
                            held.result
                        ),
                    )
                    .await;
                }
                Ok(Action::requeue(SAFETY_RESYNC))
            }
        }
    }

    /// The status of a WFE whose run has not finished: the run's summary, and `ExecutionRunning`
    /// once the run is running — `False` with the held result as its reason while one of its
    /// TaskRuns is held back ([`failure::held_back`]).
    fn observe_unfinished(
        &self,
        status: &mut WorkflowExecutionStatus,
        observation: &run_status::RunObservation,
        held: Option<&Held>,
        generation: Option<i64>,
    ) {
        // A step once seen running stays seen: the TaskRuns that showed it may be gone later.
        let seen_started = status
            .pipeline_run_status
            .as_ref()
            .and_then(|s| s.execution_started)
            == Some(true);
        let mut summary = observation.summary.clone();
        if seen_started {
            summary.execution_started = Some(true);
        }
        status.pipeline_run_status = Some(summary);
        if let Some(held) = held {
            self.conditions(status, generation).set(
                ExecutionCondition::ExecutionRunning,
                ConditionStatus::False,
                &held.result,
                held.message.as_deref().unwrap_or("A TaskRun is held back"),
            );
        } else if observation.phase == RunPhase::Running {
            self.conditions(status, generation).set(
                ExecutionCondition::ExecutionRunning,
                ConditionStatus::True,
                "Running",
                "The PipelineRun is running",
            );
        }
    }

    async fn run_vanished(&self, wfe: &WorkflowExecution, run_name: &str) -> Result<Action, Error> {
        let config = self.config();
        let status = wfe.status.as_ref();
        let namespace = status
            .and_then(|s| s.pipeline_run_ref.as_ref())
            .map_or(config.execution.namespace.clone(), |r| r.namespace.clone());
        let seen_started = status
            .and_then(|s| s.pipeline_run_status.as_ref())
            .and_then(|s| s.execution_started)
            == Some(true);
        // The run's TaskRuns outlive it briefly (until garbage collection): a step that ran
        // since the last status change may still be visible in them.
        let step_ran = seen_started || {
            let api =
                Api::namespaced_with(self.ctx.client.clone(), &namespace, &self.state().taskrun);
            let task_runs = crate::task_runs::of_deleted_run(&api, &self.state().mapping, run_name)
                .await
                .map_err(kube_err(format!(
                    "listing the TaskRuns of deleted PipelineRun {run_name}"
                )))?;
            run_status::steps_ran(&self.state().mapping, &task_runs)
        };
        let started_at = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let context = failure::FailureContext::new(wfe, &config.execution);
        let details = failure::run_deleted_failure(
            &context,
            &namespace,
            run_name,
            started_at.filter(|_| step_ran),
            step_ran,
            self.now,
        );
        self.finish_failed(wfe, details, None).await
    }

    async fn complete(
        &self,
        wfe: &WorkflowExecution,
        observation: &run_status::RunObservation,
    ) -> Result<Action, Error> {
        let config = self.config();
        let mut status = wfe.status.clone().unwrap_or_default();
        let completed_at = observation.completion_time.unwrap_or(self.now);
        status.phase = Some(Phase::Completed);
        status.completion_time = Some(Time(completed_at));
        status.pipeline_run_status = Some(observation.summary.clone());
        let start = status
            .start_time
            .as_ref()
            .map(|t| t.0)
            .or(observation.start_time);
        if let Some(start) = start {
            status.duration = Some(format_go_duration(duration_between(start, completed_at)));
        }
        status.consecutive_failures = Some(0);
        status.next_allowed_execution = None;
        let generation = wfe.meta().generation;
        self.conditions(&mut status, generation).set(
            ExecutionCondition::Ready,
            ConditionStatus::True,
            "Completed",
            "The workflow completed successfully",
        );
        self.conditions(&mut status, generation).set(
            ExecutionCondition::ExecutionRunning,
            ConditionStatus::False,
            "Completed",
            "The PipelineRun has finished",
        );
        self.conditions(&mut status, generation).set(
            ExecutionCondition::ExecutionComplete,
            ConditionStatus::True,
            "Succeeded",
            observation
                .summary
                .message
                .as_deref()
                .unwrap_or("The PipelineRun succeeded"),
        );
        if self.write_status(wfe, status.clone()).await?.is_some() {
            let metrics = &self.state().metrics;
            metrics.total.with_label_values(&["Completed"]).inc();
            if let Some(start) = start {
                metrics
                    .duration_of("Completed")
                    .observe(duration_between(start, completed_at).as_secs_f64());
            }
            metrics.set_consecutive_failures(&wfe.spec.target_resource, 0);
            info!(wfe = %describe(wfe), duration = status.duration.as_deref().unwrap_or(""), "workflow completed");
            self.publish(
                wfe,
                EventType::Normal,
                "WorkflowCompleted",
                format!(
                    "Workflow {} completed on {} in {}",
                    wfe.spec.workflow_ref.workflow_id,
                    wfe.spec.target_resource,
                    status.duration.as_deref().unwrap_or("?")
                ),
            )
            .await;
            self.audit(wfe, AuditAction::Completed, &status);
        }
        Ok(self.after_terminal(wfe, &status, &config))
    }

    async fn fail_execution(
        &self,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
        observation: &run_status::RunObservation,
    ) -> Result<Action, Error> {
        let config = self.config();
        let namespace = run
            .namespace()
            .unwrap_or_else(|| config.execution.namespace.clone());
        let api = Api::namespaced_with(self.ctx.client.clone(), &namespace, &self.state().taskrun);
        let names = self
            .state()
            .mapping
            .grandchild_names(&run.data)
            .into_iter()
            .map(|(_, name)| name);
        let task_runs = crate::task_runs::read(&api, names)
            .await
            .map_err(kube_err(format!(
                "reading the TaskRuns of PipelineRun {}",
                run.name_any()
            )))?;
        let seen_started = wfe
            .status
            .as_ref()
            .and_then(|s| s.pipeline_run_status.as_ref())
            .and_then(|s| s.execution_started)
            == Some(true);
        let mut summary =
            run_status::observe_run(&self.state().mapping, &run.data, Some(&task_runs)).summary;
        if seen_started {
            summary.execution_started = Some(true);
        }
        let observation = run_status::RunObservation {
            summary,
            ..observation.clone()
        };
        let context = failure::FailureContext::new(wfe, &config.execution);
        let remembered = failure::Remembered {
            seen_started,
            held: wfe.status.as_ref().and_then(held_condition),
        };
        let details = failure::failure_details_remembered(
            &self.state().mapping,
            &context,
            &run.data,
            &task_runs,
            &remembered,
            self.now,
        );
        let mut with_summary = (*wfe).clone();
        if let Some(status) = with_summary.status.as_mut() {
            status.pipeline_run_status = Some(observation.summary.clone());
        }
        self.finish_failed(&with_summary, details, observation.completion_time)
            .await
    }

    // ---------------------------------------------------------------- terminal

    /// What to do after a terminal status: hold the lock until the cooldown ends.
    fn after_terminal(
        &self,
        wfe: &WorkflowExecution,
        status: &WorkflowExecutionStatus,
        config: &OperatorConfig,
    ) -> Action {
        if status.pipeline_run_ref.is_none() {
            return Action::await_change();
        }
        let completed = status.completion_time.as_ref().map_or(self.now, |t| t.0);
        let remaining = config
            .cooldown
            .period
            .saturating_sub(duration_between(completed, self.now));
        debug!(wfe = %describe(wfe), ?remaining, "holding the lock for the cooldown");
        Action::requeue(remaining.max(Duration::from_millis(100)))
    }

    async fn terminal(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        let config = self.config();
        let wfe = self.clear_block_if_asked(wfe).await?;
        // Every term reconciles every WFE once, so this rebuilds the gauge from the store after a
        // restart or a leader change.
        self.refresh_failure_gauge(&wfe.spec.target_resource, None);
        let Some(status) = wfe.status.clone() else {
            return Ok(Action::await_change());
        };
        let Some(run_ref) = status.pipeline_run_ref.clone() else {
            // This WFE never created a run: there is no lock of its own to release.
            return Ok(Action::await_change());
        };
        let runs = self.runs_in(&run_ref.namespace);
        let owner = pipelinerun::owner(&wfe);
        // The cache (the watched namespace) is synced before any reconcile and keeps our
        // annotations: a run that is not there (or not ours) needs no API call, which keeps
        // restarts over many finished WFEs free of requests. A run recorded in another namespace
        // (`execution.namespace` changed since) is read from the API server.
        let run = if run_ref.namespace == config.execution.namespace {
            self.cached_run(&run_ref)
        } else {
            runs.get_opt(&run_ref.name)
                .await
                .map_err(kube_err(format!("reading PipelineRun {}", run_ref.name)))?
                .map(Arc::new)
        };
        let Some(run) = run.filter(|run| owner.owns(run.labels())) else {
            return Ok(Action::await_change());
        };
        if decide::holds_block(&wfe) {
            // The run stays as the target's lock until the block is cleared: mark it, so the
            // block outlives this WFE (and keeps the TaskRuns and logs for the investigation).
            self.mark_block(&runs, &wfe, &run).await?;
            return Ok(Action::await_change());
        }
        if pipelinerun::ExecutionBlock::of(&run).is_some() {
            // Cleared: the run is an ordinary lock again.
            self.unmark_block(&runs, &run).await?;
        }
        let completed = status.completion_time.as_ref().map_or(self.now, |t| t.0);
        let held_for = duration_between(completed, self.now);
        if held_for < config.cooldown.period {
            return Ok(self.after_terminal(&wfe, &status, &config));
        }
        match lock::release(&runs, &run_ref.name, &owner).await? {
            Release::Released => {
                info!(wfe = %describe(&wfe), pipelinerun = %run_ref.name, "lock released");
                self.publish(
                    &wfe,
                    EventType::Normal,
                    "LockReleased",
                    format!(
                        "Cooldown over: PipelineRun {}/{} deleted, target {} is free",
                        run_ref.namespace, run_ref.name, wfe.spec.target_resource
                    ),
                )
                .await;
            }
            Release::NotOwned | Release::Gone => {}
        }
        Ok(Action::await_change())
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

    fn cached_run(&self, run_ref: &PipelineRunRef) -> Option<Arc<DynamicObject>> {
        self.ctx.children.get(
            &ObjectRef::new_with(&run_ref.name, self.state().pipelinerun.clone())
                .within(&run_ref.namespace),
        )
    }

    /// Records on `run` that it holds the block of `wfe`'s execution failure (once).
    async fn mark_block(
        &self,
        runs: &Api<DynamicObject>,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
    ) -> Result<(), Error> {
        if pipelinerun::ExecutionBlock::of(run).is_some() {
            return Ok(());
        }
        let status = wfe.status.clone().unwrap_or_default();
        let block = pipelinerun::ExecutionBlock {
            workflow_execution: describe(wfe),
            workflow_id: wfe.spec.workflow_ref.workflow_id.clone(),
            reason: status
                .failure_details
                .as_ref()
                .map(|d| d.reason.to_string())
                .unwrap_or_default(),
            failed_at: status
                .completion_time
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        };
        self.annotate_run(runs, run, Some(block.to_annotation()))
            .await?;
        info!(wfe = %describe(wfe), pipelinerun = %run.name_any(), "the failed run is kept as the target's block");
        Ok(())
    }

    async fn unmark_block(
        &self,
        runs: &Api<DynamicObject>,
        run: &DynamicObject,
    ) -> Result<(), Error> {
        self.annotate_run(runs, run, None).await
    }

    /// Sets (or with `None` removes) the block annotation of `run`, only on that very object
    /// (uid in the patch: a replacement of the same name is refused).
    async fn annotate_run(
        &self,
        runs: &Api<DynamicObject>,
        run: &DynamicObject,
        block: Option<String>,
    ) -> Result<(), Error> {
        let patch = json!({"metadata": {
            "uid": run.uid(),
            "annotations": {pipelinerun::ANNOTATION_EXECUTION_BLOCK: block},
        }});
        match runs
            .patch(
                &run.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or replaced by another object: nothing of ours to mark any more.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::Kube {
                action: format!("annotating PipelineRun {}", run.name_any()),
                source,
            }),
        }
    }

    /// Honour `kubernaut.ai/clear-execution-block` (once): on a `Failed` WFE that blocks its
    /// target or carries a failure streak, and on a WFE `Skipped` for `PreviousExecutionFailed`
    /// or `ExhaustedRetries` (the way to clear a block whose failed WFE was deleted). A clearance
    /// that changes nothing is refused with a Warning Event and a condition, never audited.
    async fn clear_block_if_asked(
        &self,
        wfe: Arc<WorkflowExecution>,
    ) -> Result<Arc<WorkflowExecution>, Error> {
        let Some(reason) = wfe.annotations().get(CLEAR_BLOCK_ANNOTATION).cloned() else {
            return Ok(wfe);
        };
        let Some(status) = wfe.status.clone() else {
            return Ok(wfe);
        };
        if status.block_clearance.is_some() || refused_already(&status, &reason) {
            return Ok(wfe);
        }
        let cleared = match status.phase {
            Some(Phase::Failed) => self.clear_own(&wfe).await?,
            Some(Phase::Skipped) => self.clear_for_skipped(&wfe, &reason).await?,
            _ => Cleared::Nothing,
        };
        let mut updated = status;
        let message = match &cleared {
            Cleared::Nothing => {
                let message = format!(
                    "nothing to clear: {} holds no execution block and no failure streak ({CLEAR_BLOCK_ANNOTATION}={reason})",
                    describe(&wfe)
                );
                self.conditions(&mut updated, wfe.meta().generation).set(
                    ExecutionCondition::BlockCleared,
                    ConditionStatus::False,
                    "NothingToClear",
                    &message,
                );
                if let Some(written) = self.write_status(&wfe, updated).await? {
                    warn!(wfe = %describe(&wfe), "{message}");
                    self.publish(&wfe, EventType::Warning, "BlockClearanceRefused", message)
                        .await;
                    return Ok(Arc::new(written));
                }
                return Ok(wfe);
            }
            Cleared::Own => format!(
                "Execution block on {} cleared: {reason}",
                wfe.spec.target_resource
            ),
            Cleared::Other(what) => format!(
                "{what} on {} cleared through {}: {reason}",
                wfe.spec.target_resource,
                describe(&wfe)
            ),
        };
        updated.block_clearance = Some(BlockClearance {
            cleared_at: Time(self.now),
            clear_reason: reason.clone(),
        });
        self.conditions(&mut updated, wfe.meta().generation).set(
            ExecutionCondition::BlockCleared,
            ConditionStatus::True,
            "Cleared",
            &message,
        );
        match self.write_status(&wfe, updated.clone()).await? {
            Some(written) => {
                info!(wfe = %describe(&wfe), "{message}");
                self.publish(&wfe, EventType::Normal, "BlockCleared", message)
                    .await;
                self.audit(&wfe, AuditAction::BlockCleared, &updated);
                // A cleared streak starts again from zero.
                self.state()
                    .metrics
                    .set_consecutive_failures(&wfe.spec.target_resource, 0);
                Ok(Arc::new(written))
            }
            None => Ok(wfe),
        }
    }

    /// A `Failed` WFE cleared on itself: it must hold a block, or carry the target's failure
    /// streak (it is the most recent finished WFE of the target).
    async fn clear_own(&self, wfe: &WorkflowExecution) -> Result<Cleared, Error> {
        if decide::holds_block(wfe) {
            return Ok(Cleared::Own);
        }
        let peers = self.peers_on_target(wfe);
        let others: Vec<&WorkflowExecution> = peers.iter().map(Arc::as_ref).collect();
        let newer = decide::most_recent_finished(&others)
            .is_some_and(|p| p.completion_time() > wfe.completion_time());
        Ok(if decide::streak(wfe) > 0 && !newer {
            Cleared::Own
        } else {
            Cleared::Nothing
        })
    }

    /// A `Skipped` WFE asks to clear what skipped it: the block (a blocking WFE, or a block run
    /// whose WFE is gone) or the failure streak of the target.
    async fn clear_for_skipped(
        &self,
        wfe: &WorkflowExecution,
        reason: &str,
    ) -> Result<Cleared, Error> {
        let peers = self.peers_on_target(wfe);
        let others: Vec<&WorkflowExecution> = peers.iter().map(Arc::as_ref).collect();
        let blockers: Vec<&WorkflowExecution> = others
            .iter()
            .copied()
            .filter(|o| decide::holds_block(o))
            .collect();
        if !blockers.is_empty() {
            for blocker in blockers {
                self.record_clearance_on(blocker, reason).await?;
            }
            return Ok(Cleared::Other("Execution block"));
        }
        // The failed WFE may be gone: its run still holds the block.
        let config = self.config();
        let runs = self.runs(&config);
        let name = pipelinerun::pipeline_run_name(&wfe.spec.target_resource);
        if let Some(run) = runs
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading PipelineRun {name}")))?
            && pipelinerun::ExecutionBlock::of(&run).is_some()
            && self
                .current_owner(&pipelinerun::run_owner(&run))
                .await?
                .is_none()
        {
            lock::break_stale(&runs, &run).await?;
            return Ok(Cleared::Other(
                "Execution block of a deleted WorkflowExecution",
            ));
        }
        if let Some(carrier) = decide::most_recent_finished(&others)
            && decide::streak(carrier) > 0
        {
            self.record_clearance_on(carrier, reason).await?;
            return Ok(Cleared::Other("Failure streak"));
        }
        Ok(Cleared::Nothing)
    }

    /// Writes `status.blockClearance` on another WFE of the target (it lifts its block or resets
    /// its streak) and audits it there.
    async fn record_clearance_on(
        &self,
        other: &WorkflowExecution,
        reason: &str,
    ) -> Result<(), Error> {
        let mut status = other.status.clone().unwrap_or_default();
        status.block_clearance = Some(BlockClearance {
            cleared_at: Time(self.now),
            clear_reason: reason.to_owned(),
        });
        if self.write_status(other, status.clone()).await?.is_none() {
            return Ok(());
        }
        self.audit(other, AuditAction::BlockCleared, &status);
        Ok(())
    }

    // ---------------------------------------------------------------- deletion

    async fn cleanup(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        let config = self.config();
        // The run is where this WFE recorded it; before that (a create whose status write was
        // lost) at the lock name in the configured namespace.
        let run_ref = wfe
            .status
            .as_ref()
            .and_then(|s| s.pipeline_run_ref.clone())
            .unwrap_or_else(|| PipelineRunRef {
                name: pipelinerun::pipeline_run_name(&wfe.spec.target_resource),
                namespace: config.execution.namespace.clone(),
            });
        let runs = self.runs_in(&run_ref.namespace);
        let name = run_ref.name.clone();
        let owner = pipelinerun::owner(&wfe);
        let mut note =
            "WorkflowExecution deleted; its PipelineRun (if any) was cancelled and removed"
                .to_string();
        if let Some(run) = runs
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading PipelineRun {name}")))?
            && owner.owns(run.labels())
        {
            if decide::holds_block(&wfe) {
                // The block must outlive this WFE: the run stays, marked, as the target's lock.
                self.mark_block(&runs, &wfe, &run).await?;
                note = format!(
                    "WorkflowExecution deleted; its failed PipelineRun {}/{name} stays as the block on {} until it is cleared",
                    run_ref.namespace, wfe.spec.target_resource
                );
            } else {
                // What cancels a run, and when it counts as finished, is data: the cancel file and
                // the status mapping's phase. A run deleted before Tekton has run its `finally`
                // tasks never runs them, so deletion waits for the run to finish — bounded by the
                // cancel file's grace period, so a Tekton that is down cannot keep the WFE.
                let state = self.state();
                let finished = run_status::observe_run(&state.mapping, &run.data, None)
                    .phase
                    .is_finished();
                if !finished {
                    let cancel = &state.cancel;
                    if !cancel.is_cancelled(&run.data) {
                        let patch = cancel.patch(run.resource_version().as_deref());
                        runs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map_err(kube_err(format!("cancelling PipelineRun {name}")))?;
                        info!(wfe = %describe(&wfe), pipelinerun = %name, "PipelineRun cancelled");
                        let grace = cancel.finish_grace_period();
                        self.publish(
                            &wfe,
                            EventType::Normal,
                            "PipelineRunCancelled",
                            format!(
                                "PipelineRun {}/{name} cancelled; it is deleted once it has finished, at the latest after {}",
                                run_ref.namespace,
                                format_go_duration(grace)
                            ),
                        )
                        .await;
                    }
                    let deleted_at = wfe
                        .metadata
                        .deletion_timestamp
                        .as_ref()
                        .map_or_else(Timestamp::now, |t| t.0);
                    if let Some(wait) = cancel.remaining_wait(deleted_at, Timestamp::now()) {
                        // The run's status events reconcile this WFE as soon as it finishes, but
                        // only while the run is in the watched namespace: a run recorded in an
                        // earlier `execution.namespace` sends none. So look again every few
                        // seconds, for this bounded wait only.
                        const FINISH_POLL: Duration = Duration::from_secs(5);
                        debug!(wfe = %describe(&wfe), pipelinerun = %name, ?wait, "waiting for the cancelled PipelineRun to finish");
                        return Ok(Action::requeue(wait.min(FINISH_POLL)));
                    }
                    warn!(wfe = %describe(&wfe), pipelinerun = %name, "the cancelled PipelineRun did not finish within the cancel file's finishGracePeriod; deleting it");
                }
                lock::release(&runs, &name, &owner).await?;
            }
        }
        let uid = wfe.uid();
        self.refresh_failure_gauge(&wfe.spec.target_resource, uid.as_deref());
        self.publish(&wfe, EventType::Normal, "WorkflowExecutionDeleted", note)
            .await;
        finalizer::remove_finalizer(&self.api, &*wfe, FINALIZER).await?;
        Ok(Action::await_change())
    }
}

fn waiting_message(run: &DynamicObject, holder: &pipelinerun::RunOwner) -> String {
    format!(
        "PipelineRun {}/{} of WorkflowExecution {}/{} is being deleted; the workflow starts once it is gone",
        run.namespace().unwrap_or_default(),
        run.name_any(),
        holder.namespace,
        holder.name,
    )
}

/// What a clearance lifted.
enum Cleared {
    /// Nothing: the clearance is refused.
    Nothing,
    /// The block or streak of the annotated WFE itself.
    Own,
    /// Something of the target recorded elsewhere (named).
    Other(&'static str),
}

/// Whether the refusal of this very clearance reason is already recorded (no second Event).
fn refused_already(status: &WorkflowExecutionStatus, reason: &str) -> bool {
    condition::find(&status.conditions, ExecutionCondition::BlockCleared).is_some_and(|c| {
        c.reason == "NothingToClear" && c.message.ends_with(&format!("={reason})"))
    })
}

fn describe(wfe: &WorkflowExecution) -> String {
    format!("{}/{}", wfe.namespace().unwrap_or_default(), wfe.name_any())
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
/// failure reason as its reason (see `observe_unfinished`).
fn held_condition(status: &WorkflowExecutionStatus) -> Option<Held> {
    let condition = condition::find(&status.conditions, ExecutionCondition::ExecutionRunning)
        .filter(|c| c.status == ConditionStatus::False.as_str())?;
    FailureReason::from_name(&condition.reason)?;
    Some(Held {
        result: condition.reason.clone(),
        message: Some(condition.message.clone()).filter(|m| !m.is_empty()),
    })
}
