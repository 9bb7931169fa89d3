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

use std::{collections::BTreeMap, sync::Arc, time::Duration};

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
    condition::{DesiredCondition, set_condition},
    config::ConfigStore,
    finalizer::{self, FinalizerError},
    lock::{self, Acquisition, LockError, Release},
    own_writes::OwnWrites,
    phase,
    runtime::{Action, Context, MetricLabel},
    status::StatusMapping,
    template::TemplateError,
};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::{
    audit::{AuditAction, AuditData, AuditEvent, Auditor},
    config::OperatorConfig,
    decide::{self, Decision},
    duration::{duration_between, format_go_duration},
    failure,
    metrics::Metrics,
    pipelinerun::{self, LABEL_WORKFLOW_EXECUTION, LABEL_WORKFLOW_ID},
    run_status::{self, RunPhase},
    types::{
        BlockClearance, ConflictingWorkflow, FailureDetails, FailureReason, Phase, PipelineRunRef,
        SkipDetails, SkipReason, WorkflowExecution, WorkflowExecutionStatus,
    },
    validate,
};

/// The finalizer that links a WFE to its PipelineRun in another namespace.
pub const FINALIZER: &str = "kubernaut.ai/workflowexecution-cleanup";
pub use crate::decide::CLEAR_BLOCK_ANNOTATION;
/// How often a Running WFE is re-checked when no watch event arrives (a safety net, not a poll).
pub const SAFETY_RESYNC: Duration = Duration::from_secs(600);

/// Condition types.
const READY: &str = "Ready";
const EXECUTION_CREATED: &str = "ExecutionCreated";
const EXECUTION_RUNNING: &str = "ExecutionRunning";
const EXECUTION_COMPLETE: &str = "ExecutionComplete";

/// The operator's state shared by every reconcile.
pub struct State {
    /// The live configuration (reloadable, last known good).
    pub config: Arc<ConfigStore<OperatorConfig>>,
    /// How PipelineRun status is read.
    pub mapping: Arc<StatusMapping>,
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
        Api::namespaced_with(
            self.ctx.client.clone(),
            &config.execution.namespace,
            &self.state().pipelinerun,
        )
    }

    async fn apply(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        match wfe.phase() {
            None => {
                let mut status = wfe.status.clone().unwrap_or_default();
                status.phase = Some(Phase::Pending);
                status.observed_generation = wfe.meta().generation;
                self.condition(
                    &mut status,
                    READY,
                    "Unknown",
                    "Pending",
                    "Waiting to start the workflow",
                    wfe.meta().generation,
                );
                let Some(updated) = self.write_status(&wfe, status).await? else {
                    return Ok(Action::await_change());
                };
                self.pending(Arc::new(updated)).await
            }
            Some(Phase::Pending) => self.pending(wfe).await,
            Some(Phase::Running) => self.running(wfe).await,
            Some(Phase::Completed | Phase::Failed) => self.terminal(wfe).await,
            Some(Phase::Skipped) => Ok(Action::await_change()),
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
        let written = self
            .api
            .replace_status(&wfe.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(kube_err(format!("writing the status of {}", describe(wfe))))?;
        self.state().own_writes.record(wfe, &written);
        Ok(Some(written))
    }

    /// Set one condition on `status` (transition time kept while its status is unchanged).
    fn condition(
        &self,
        status: &mut WorkflowExecutionStatus,
        type_: &str,
        value: &str,
        reason: &str,
        message: &str,
        generation: Option<i64>,
    ) {
        set_condition(
            &mut status.conditions,
            DesiredCondition {
                type_,
                status: value,
                reason,
                message,
            },
            generation,
            self.now,
        );
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
        let owner = pipelinerun::owner(&wfe);
        match lock::acquire(&self.runs(&config), run, &owner).await {
            Ok(Acquisition::Acquired(run)) => {
                self.state().metrics.pipelinerun_creation.inc();
                self.started(&wfe, &run, templates.revision(), true).await
            }
            Ok(Acquisition::Adopted(run)) => {
                self.started(&wfe, &run, templates.revision(), false).await
            }
            Ok(Acquisition::HeldBy {
                name,
                labels,
                annotations,
            }) => {
                let details = self.busy_details(&wfe, &name, &labels, &annotations);
                self.skip(&wfe, details).await
            }
            Err(LockError::Create {
                source: kube::Error::Api(status),
                object,
            }) => {
                let message = format!(
                    "creating PipelineRun {object} was refused: {}",
                    status.message
                );
                let quota = status.message.to_lowercase().contains("exceeded quota");
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
                    400 | 422 => {
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

    /// Every other WFE on the same target, from the reflector store's target index.
    fn peers_on_target(&self, wfe: &WorkflowExecution) -> Vec<Arc<WorkflowExecution>> {
        let target = &wfe.spec.target_resource;
        let uid = wfe.uid();
        self.ctx
            .parent_index
            .get(target, &self.ctx.parents)
            .into_iter()
            .filter(|other| other.spec.target_resource == *target && other.uid() != uid)
            .collect()
    }

    fn busy_details(
        &self,
        wfe: &WorkflowExecution,
        run_name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
    ) -> SkipDetails {
        let holder = labels
            .get(LABEL_WORKFLOW_EXECUTION)
            .cloned()
            .unwrap_or_default();
        let holder_ns = labels
            .get(pipelinerun::LABEL_SOURCE_NAMESPACE)
            .cloned()
            .unwrap_or_default();
        let holder_wfe = self
            .ctx
            .parents
            .get(&ObjectRef::new(&holder).within(&holder_ns));
        let workflow_id = holder_wfe
            .as_ref()
            .map(|w| w.spec.workflow_ref.workflow_id.clone())
            .or_else(|| labels.get(LABEL_WORKFLOW_ID).cloned())
            .unwrap_or_default();
        let started_at = holder_wfe
            .as_ref()
            .and_then(|w| w.status.as_ref()?.start_time.clone());
        let target = annotations
            .get(pipelinerun::TARGET_RESOURCE_KEY)
            .cloned()
            .unwrap_or_else(|| wfe.spec.target_resource.clone());
        SkipDetails {
            reason: SkipReason::ResourceBusy,
            message: format!(
                "target {target} is busy: PipelineRun {run_name} of WorkflowExecution {holder_ns}/{holder} holds its lock"
            ),
            skipped_at: Time(self.now),
            conflicting_workflow: Some(ConflictingWorkflow {
                name: holder,
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
        self.condition(
            &mut status,
            EXECUTION_CREATED,
            "True",
            "PipelineRunCreated",
            &message,
            generation,
        );
        self.condition(
            &mut status,
            READY,
            "Unknown",
            "Running",
            "The workflow is running",
            generation,
        );
        // What the run's own watch event would otherwise write right after: one write, not two.
        let observation = run_status::observe_run(&self.state().mapping, &run.data, None);
        if matches!(observation.phase, RunPhase::Pending | RunPhase::Running) {
            self.observe_unfinished(&mut status, &observation, generation);
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
                format!("{message} in {}", config.execution.namespace),
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
        self.condition(
            &mut status,
            READY,
            "False",
            reason.as_str(),
            &details.message,
            wfe.meta().generation,
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
        self.condition(
            &mut status,
            READY,
            "False",
            details.reason.as_str(),
            &details.message,
            generation,
        );
        if status.pipeline_run_ref.is_some() {
            self.condition(
                &mut status,
                EXECUTION_RUNNING,
                "False",
                "Failed",
                "The PipelineRun has finished",
                generation,
            );
            self.condition(
                &mut status,
                EXECUTION_COMPLETE,
                "True",
                "Failed",
                &details.message,
                generation,
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
        let config = self.config();
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
                .runs(&config)
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
                let api = Api::namespaced_with(
                    self.ctx.client.clone(),
                    &namespace,
                    &self.state().taskrun,
                );
                let learned = crate::task_runs::learn_step_ran(
                    &api,
                    &self.state().mapping,
                    &run.data,
                    status.pipeline_run_status.as_ref(),
                    &observation.summary,
                )
                .await
                .map_err(kube_err(format!(
                    "reading the TaskRuns of PipelineRun {}",
                    run_ref.name
                )))?;
                if learned {
                    observation.summary.execution_started = Some(true);
                }
                self.observe_unfinished(&mut status, &observation, wfe.meta().generation);
                self.write_status(&wfe, status).await?;
                Ok(Action::requeue(SAFETY_RESYNC))
            }
        }
    }

    /// The status of a WFE whose run has not finished: the run's summary, and `ExecutionRunning`
    /// once the run is running.
    fn observe_unfinished(
        &self,
        status: &mut WorkflowExecutionStatus,
        observation: &run_status::RunObservation,
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
        if observation.phase == RunPhase::Running {
            self.condition(
                status,
                EXECUTION_RUNNING,
                "True",
                "Running",
                "The PipelineRun is running",
                generation,
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
        self.condition(
            &mut status,
            READY,
            "True",
            "Completed",
            "The workflow completed successfully",
            generation,
        );
        self.condition(
            &mut status,
            EXECUTION_RUNNING,
            "False",
            "Completed",
            "The PipelineRun has finished",
            generation,
        );
        self.condition(
            &mut status,
            EXECUTION_COMPLETE,
            "True",
            "Succeeded",
            observation
                .summary
                .message
                .as_deref()
                .unwrap_or("The PipelineRun succeeded"),
            generation,
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
        let names = run_status::child_task_runs(&run.data)
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
        let details = failure::failure_details_remembered(
            &self.state().mapping,
            &context,
            &run.data,
            &task_runs,
            seen_started,
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
        let Some(status) = wfe.status.clone() else {
            return Ok(Action::await_change());
        };
        let Some(run_ref) = status.pipeline_run_ref.clone() else {
            // This WFE never created a run: there is no lock of its own to release.
            return Ok(Action::await_change());
        };
        let completed = status.completion_time.as_ref().map_or(self.now, |t| t.0);
        let held_for = duration_between(completed, self.now);
        if held_for < config.cooldown.period {
            return Ok(self.after_terminal(&wfe, &status, &config));
        }
        let api = Api::namespaced_with(
            self.ctx.client.clone(),
            &run_ref.namespace,
            &self.state().pipelinerun,
        );
        match lock::release(&api, &run_ref.name, &pipelinerun::owner(&wfe)).await? {
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

    /// Honour `kubernaut.ai/clear-execution-block` on a failed WFE (once).
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
        if status.phase != Some(Phase::Failed) || status.block_clearance.is_some() {
            return Ok(wfe);
        }
        let mut updated = status;
        updated.block_clearance = Some(BlockClearance {
            cleared_at: Time(self.now),
            clear_reason: reason.clone(),
        });
        match self.write_status(&wfe, updated.clone()).await? {
            Some(written) => {
                info!(wfe = %describe(&wfe), "execution block cleared: {reason}");
                self.publish(
                    &wfe,
                    EventType::Normal,
                    "BlockCleared",
                    format!(
                        "Execution block on {} cleared: {reason}",
                        wfe.spec.target_resource
                    ),
                )
                .await;
                self.audit(&wfe, AuditAction::BlockCleared, &updated);
                Ok(Arc::new(written))
            }
            None => Ok(wfe),
        }
    }

    // ---------------------------------------------------------------- deletion

    async fn cleanup(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        let config = self.config();
        let runs = self.runs(&config);
        let name = pipelinerun::pipeline_run_name(&wfe.spec.target_resource);
        let owner = pipelinerun::owner(&wfe);
        if let Some(run) = runs
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading PipelineRun {name}")))?
            && owner.owns(run.labels())
        {
            let finished = run_status::succeeded_status(&run.data)
                .is_some_and(|s| s == "True" || s == "False");
            let cancelled = run.data["spec"]["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("Cancelled"));
            if !finished && !cancelled {
                let mut patch = json!({"spec": {"status": "Cancelled"}});
                if let Some(rv) = run.resource_version() {
                    patch["metadata"] = json!({"resourceVersion": rv});
                }
                runs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(kube_err(format!("cancelling PipelineRun {name}")))?;
                info!(wfe = %describe(&wfe), pipelinerun = %name, "PipelineRun cancelled");
            }
            lock::release(&runs, &name, &owner).await?;
        }
        self.publish(
            &wfe,
            EventType::Normal,
            "WorkflowExecutionDeleted",
            "WorkflowExecution deleted; its PipelineRun (if any) was cancelled and removed"
                .to_string(),
        )
        .await;
        finalizer::remove_finalizer(&self.api, &*wfe, FINALIZER).await?;
        Ok(Action::await_change())
    }
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
