//! `Pending`: validate, decide from the store whether the target is free, render and create the
//! PipelineRun (the lock) — or adopt it, wait for a previous one, skip, or fail before execution.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Resource, ResourceExt,
    api::DynamicObject,
    runtime::{events::EventType, reflector::ObjectRef},
};
use kubernaut_framework::{
    condition::ConditionStatus,
    lock::{self, Acquisition, LockError},
    runtime::Action,
    status::StatusMapping,
};
use tracing::info;

use super::{
    CLEAR_BLOCK_ANNOTATION, Error, ExecutionCondition, Outcome, Pass, SAFETY_RESYNC, conditions,
    describe, running,
};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    decide::{self, Decision},
    engine::Engine,
    pipelinerun::{self, LABEL_WORKFLOW_ID},
    run_status::{self, RunPhase},
    types::{
        ConflictingWorkflow, FailureReason, Phase, PipelineRunRef, RecentRemediation, SkipDetails,
        SkipReason, WorkflowExecution,
    },
    validate,
};
use kubernaut_framework::duration::duration_between;

/// How often a WFE waiting for a previous run to be deleted looks again.
const PREVIOUS_RUN_POLL: Duration = Duration::from_secs(2);

/// What [`Pass::acquire_run`] found.
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

impl Pass<'_> {
    pub(super) async fn pending(&self, wfe: Arc<WorkflowExecution>) -> Result<Outcome, Error> {
        let config = &self.config;
        let fail = |reason, message| self.fail_before_execution(&wfe, reason, message);
        // 1. Validate (runtime copy of the admission rules + the service-account allowlist).
        if let Err(errors) = validate::validate_spec(&wfe.spec, &config.execution) {
            let message = format!("invalid WorkflowExecution spec: {errors}");
            return Ok(fail(FailureReason::ConfigurationError, message));
        }
        // 2–3. Lock and cooldown decisions from the in-memory store.
        let peers = self.ctx.peers(&wfe);
        if let Decision::Skip(details) = decide::decide(&wfe, &peers, self.now, config) {
            return Ok(skipped(&wfe, details, self.now));
        }
        // 4. Render and create the PipelineRun (the lock).
        let Some(templates) = self.ctx.templates.as_ref().map(|t| t.current()) else {
            return Err(Error::Invalid(
                "the runtime was started without templates".into(),
            ));
        };
        let engine = &self.engine;
        let rendered = match pipelinerun::render_child(&wfe, config, &templates, &engine.template) {
            Ok(run) => run,
            Err(e) => {
                let message = format!("rendering the {} template failed: {e}", engine.child().kind);
                return Ok(fail(FailureReason::ConfigurationError, message));
            }
        };
        let run: DynamicObject = match serde_json::from_value(rendered) {
            Ok(run) => run,
            Err(e) => {
                let message = format!(
                    "the rendered {} is not a Kubernetes object: {e}",
                    engine.child().kind
                );
                return Ok(fail(FailureReason::ConfigurationError, message));
            }
        };
        let revision = templates.revision();
        let mapping = &self.engine.mapping;
        match self.acquire_run(&wfe, run).await {
            Ok(Acquired::Created(run)) => {
                self.state().metrics.pipelinerun_creation.inc();
                let outcome = started(&wfe, &run, revision, true, mapping, config, self.now);
                Ok(on_engine(outcome, &engine.name))
            }
            Ok(Acquired::Adopted(run)) => {
                let outcome = started(&wfe, &run, revision, false, mapping, config, self.now);
                Ok(on_engine(outcome, &engine.name))
            }
            Ok(Acquired::Waiting(message)) => Ok(waiting(&wfe, &message, self.now)),
            Ok(Acquired::Skip(details)) => Ok(skipped(&wfe, details, self.now)),
            Err(LockError::Create {
                source: kube::Error::Api(status),
                object,
            }) => match refused_create(status.code, &status.message) {
                Some(reason) => {
                    let message = format!(
                        "creating PipelineRun {object} was refused: {}",
                        status.message
                    );
                    Ok(fail(reason, message))
                }
                None => Err(Error::Lock(LockError::Create {
                    source: kube::Error::Api(status),
                    object,
                })),
            },
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
    ) -> Result<Acquired, LockError> {
        let runs = self.runs();
        let owner = pipelinerun::owner(wfe);
        // While the previous run is still being deleted, the cache says so without an API call
        // (this is re-checked every few seconds for as long as a foreign finalizer holds it).
        let lock = PipelineRunRef {
            name: run.name_any(),
            namespace: self.config.execution.namespace.clone(),
        };
        if let Some(cached) = self.cached_run(&lock)
            && cached.meta().deletion_timestamp.is_some()
            && !owner.owns(cached.labels())
        {
            let holder = pipelinerun::run_owner(&cached);
            return Ok(Acquired::Waiting(waiting_message(&cached, &holder)));
        }
        // With several engines the lock name is shared by several kinds: it is checked in the
        // other kinds and taken under this process's guard of the name, so two executions on
        // one target never hold children of two kinds.
        let several_kinds = self.state().engines.child_kinds().len() > 1;
        let _guard = match several_kinds {
            true => Some(self.state().lock_guards.hold(&lock.name).await),
            false => None,
        };
        if several_kinds && let Some((engine, existing)) = self.held_in_another_kind(&lock).await? {
            if let Some(decided) = self.held_lock(wfe, &existing).await? {
                return Ok(decided);
            }
            let other_runs = Api::namespaced_with(
                self.ctx.client.clone(),
                &lock.namespace,
                &engine.child_resource,
            );
            lock::break_stale_with_policy(
                &other_runs,
                &existing,
                engine.cancel.delete_propagation(),
            )
            .await?;
            return Ok(Acquired::Waiting(format!(
                "the lock {} {} of a finished execution was released; deciding again shortly",
                engine.child().kind,
                lock.name
            )));
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
            if let Some(decided) = self.held_lock(wfe, &existing).await? {
                return Ok(decided);
            }
            lock::break_stale_with_policy(
                &runs,
                &existing,
                self.engine.cancel.delete_propagation(),
            )
            .await?;
        }
        Ok(Acquired::Waiting(
            "the lock PipelineRun keeps changing; deciding again shortly".to_owned(),
        ))
    }

    /// The child named `lock` of another engine's kind, read from the API server (the cache may
    /// not hold one created a moment ago), with its engine.
    async fn held_in_another_kind(
        &self,
        lock: &PipelineRunRef,
    ) -> Result<Option<(Arc<Engine>, DynamicObject)>, LockError> {
        let mine = &self.engine.child_resource;
        let mut seen = vec![mine.clone()];
        for engine in self.state().engines.iter() {
            if seen.contains(&engine.child_resource) {
                continue;
            }
            seen.push(engine.child_resource.clone());
            let api = Api::<DynamicObject>::namespaced_with(
                self.ctx.client.clone(),
                &lock.namespace,
                &engine.child_resource,
            );
            let found = api
                .get_opt(&lock.name)
                .await
                .map_err(|source| LockError::Read {
                    object: format!("{} {}/{}", engine.child().kind, lock.namespace, lock.name),
                    source,
                })?;
            if let Some(existing) = found {
                return Ok(Some((engine.clone(), existing)));
            }
        }
        Ok(None)
    }

    /// What a lock run held by someone else means for `wfe`; `None` when it is stale and may be
    /// broken (its owner is gone, or done with it past the cooldown without a block).
    async fn held_lock(
        &self,
        wfe: &WorkflowExecution,
        existing: &DynamicObject,
    ) -> Result<Option<Acquired>, LockError> {
        let holder = pipelinerun::run_owner(existing);
        if existing.meta().deletion_timestamp.is_some() {
            return Ok(Some(Acquired::Waiting(waiting_message(existing, &holder))));
        }
        let holder_wfe = self.current_owner(&holder).await?;
        let blocking = holder_wfe.as_deref().map_or_else(
            || pipelinerun::ExecutionBlock::of(existing).is_some(),
            decide::holds_block,
        );
        if blocking {
            let details = blocked_by_run(wfe, existing, holder_wfe.as_deref(), self.now);
            return Ok(Some(Acquired::Skip(details)));
        }
        let stale = match holder_wfe.as_deref() {
            None => true,
            Some(holder) => past_cooldown(holder, &self.config, self.now),
        };
        if !stale {
            let details = busy_details(wfe, existing, &holder, holder_wfe.as_deref(), self.now);
            return Ok(Some(Acquired::Skip(details)));
        }
        info!(
            wfe = %describe(wfe),
            pipelinerun = %existing.name_any(),
            holder = %format!("{}/{}", holder.namespace, holder.name),
            "releasing a stale lock: its owner is gone or done with it"
        );
        Ok(None)
    }

    /// The WorkflowExecution a run names, if it still exists *as that instance* (same uid). The
    /// store answers; a miss is confirmed with the API server, since the store can lag.
    pub(super) async fn current_owner(
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
}

/// The failure reason of a create the API server refused for good (a quota, RBAC, an invalid or
/// too large object); `None` when retrying may help.
pub(super) fn refused_create(code: u16, message: &str) -> Option<FailureReason> {
    let quota = message.to_lowercase().contains("exceeded quota");
    // An object too large to store is refused with 500, although retrying cannot help: etcd's
    // "request is too large" above its request limit (1.5 MiB by default), or the API server's
    // own etcd client's "trying to send message larger than max" above 2 MiB.
    let too_large = ["request is too large", "message larger than max"]
        .iter()
        .any(|m| message.contains(m));
    match code {
        403 | 422 if quota => Some(FailureReason::ResourceExhausted),
        403 => Some(FailureReason::Forbidden),
        400 | 413 | 422 => Some(FailureReason::ConfigurationError),
        _ if too_large => Some(FailureReason::ConfigurationError),
        _ => None,
    }
}

/// Whether a holder is done with its lock: terminal, and its cooldown is over (a Skipped
/// WorkflowExecution never held a lock, so any run naming it is stale).
fn past_cooldown(holder: &WorkflowExecution, config: &OperatorConfig, now: Timestamp) -> bool {
    match holder.phase() {
        Some(Phase::Skipped) => true,
        Some(Phase::Completed | Phase::Failed) => holder
            .completion_time()
            .is_none_or(|done| duration_between(done, now) >= config.cooldown.period),
        _ => false,
    }
}

/// `Skipped` `PreviousExecutionFailed` because the lock run carries an execution block.
fn blocked_by_run(
    wfe: &WorkflowExecution,
    run: &DynamicObject,
    holder: Option<&WorkflowExecution>,
    now: Timestamp,
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
        skipped_at: Time(now),
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

/// `Skipped` `ResourceBusy`: another WorkflowExecution's run holds the target's lock.
fn busy_details(
    wfe: &WorkflowExecution,
    run: &DynamicObject,
    holder: &pipelinerun::RunOwner,
    holder_wfe: Option<&WorkflowExecution>,
    now: Timestamp,
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
        skipped_at: Time(now),
        conflicting_workflow: Some(ConflictingWorkflow {
            name: holder.name.clone(),
            workflow_id,
            started_at,
            target_resource: target,
        }),
        recent_remediation: None,
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

/// Stay `Pending` until the previous run is gone: a condition says why, written once.
pub(super) fn waiting(wfe: &WorkflowExecution, message: &str, now: Timestamp) -> Outcome {
    let mut status = wfe.status.clone().unwrap_or_default();
    conditions(wfe, &mut status, now).set(
        ExecutionCondition::ExecutionCreated,
        ConditionStatus::False,
        "WaitingForPreviousRun",
        message,
    );
    // The old run's deletion event maps to *its* owner, not necessarily to this WFE: look
    // again shortly.
    Outcome::write(status, Action::requeue(PREVIOUS_RUN_POLL)).log(format!("waiting: {message}"))
}

/// `Running` with the run created (or adopted): its reference, the template revision, and what
/// the run's own watch event would otherwise write right after (one write, not two).
/// `outcome` with the engine the execution runs on recorded in its status.
fn on_engine(mut outcome: Outcome, engine: &str) -> Outcome {
    if let Some(status) = outcome.status.as_mut() {
        status.execution_engine = Some(engine.to_owned());
    }
    outcome
}

pub(super) fn started(
    wfe: &WorkflowExecution,
    run: &DynamicObject,
    revision: &str,
    created: bool,
    mapping: &StatusMapping,
    config: &OperatorConfig,
    now: Timestamp,
) -> Outcome {
    let namespace = run
        .namespace()
        .unwrap_or_else(|| config.execution.namespace.clone());
    let mut status = wfe.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Running);
    status.start_time = Some(Time(now));
    status.pipeline_run_ref = Some(PipelineRunRef {
        name: run.name_any(),
        namespace: namespace.clone(),
    });
    status.template_revision = run
        .annotations()
        .get(pipelinerun::ANNOTATION_TEMPLATE_REVISION)
        .cloned()
        .or_else(|| Some(revision.to_string()));
    let message = format!("{} {} created", mapping.child().kind, run.name_any());
    let mut set = conditions(wfe, &mut status, now);
    set.set(
        ExecutionCondition::ExecutionCreated,
        ConditionStatus::True,
        "PipelineRunCreated",
        &message,
    );
    set.set(
        ExecutionCondition::Ready,
        ConditionStatus::Unknown,
        "Running",
        "The workflow is running",
    );
    let observation = run_status::observe_run(mapping, &run.data, None);
    if matches!(observation.phase, RunPhase::Pending | RunPhase::Running) {
        running::observe_unfinished(wfe, &mut status, &observation, None, now);
    }
    let log = if created {
        format!("{} {} created", mapping.child().kind, run.name_any())
    } else {
        format!(
            "adopted the existing {} {}",
            mapping.child().kind,
            run.name_any()
        )
    };
    Outcome::write(status, Action::requeue(SAFETY_RESYNC))
        .log(log)
        .event(
            EventType::Normal,
            "PipelineRunCreated",
            format!("{message} in {namespace}"),
        )
        .audit(AuditAction::Started)
}

/// `Skipped` with `details`.
pub(super) fn skipped(wfe: &WorkflowExecution, details: SkipDetails, now: Timestamp) -> Outcome {
    let reason = details.reason;
    let mut status = wfe.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Skipped);
    status.completion_time = Some(Time(now));
    conditions(wfe, &mut status, now).set(
        ExecutionCondition::Ready,
        ConditionStatus::False,
        reason.as_str(),
        &details.message,
    );
    let note = details.message.clone();
    status.skip_details = Some(details);
    Outcome::write(status, Action::await_change())
        .metric(super::MetricUpdate::Skipped(reason))
        .log(format!("skipped ({}): {note}", reason.as_str()))
        .event(EventType::Normal, "Skipped", note)
        .audit(AuditAction::Skipped)
}
