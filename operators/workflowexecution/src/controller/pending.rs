//! `Pending`: validate, decide from the store whether the target is free, render and create the
//! PipelineRun (the lock) — or adopt it, wait for a previous one, skip, or fail before execution.
//! The lock itself is the framework's (`Locks::claim`); the WorkflowExecution's side of it is
//! `target_lock`'s.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, api::DynamicObject, runtime::events::EventType};
use kubernaut_framework::{lock::Claim, runtime::Action, status::StatusMapping};

use super::{
    Error, ExecutionCondition, Outcome, Pass, SAFETY_RESYNC, conditions, running, target_lock,
};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    decide::{self, Decision},
    pipelinerun,
    run_status::{self, RunPhase},
    types::{FailureReason, Phase, PipelineRunRef, SkipDetails, WorkflowExecution},
    validate,
};

/// How often a WFE waiting for a previous run to be deleted looks again.
const PREVIOUS_RUN_POLL: Duration = Duration::from_secs(2);

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
        let (run, revision) = match self.render(&wfe)? {
            Ok(rendered) => rendered,
            Err(message) => return Ok(fail(FailureReason::ConfigurationError, message)),
        };
        let name = run.name_any();
        let (mapping, now) = (&self.engine.mapping, self.now);
        let start = |run: &DynamicObject, created| {
            let outcome = started(&wfe, run, &revision, created, mapping, config, now);
            on_engine(outcome, &self.engine.name)
        };
        Ok(match self.claim_run(&wfe, run).await? {
            Claim::Created(run) => {
                self.state().metrics.pipelinerun_creation.inc();
                start(&run, true)
            }
            Claim::Adopted(run) => start(&run, false),
            Claim::Releasing(run) => waiting(&wfe, &target_lock::waiting_message(&run), now),
            Claim::Blocked { child, holder } => {
                let details = target_lock::blocked_by_run(&wfe, &child, holder.as_deref(), now);
                skipped(&wfe, details, now)
            }
            Claim::Busy { child, holder } => skipped(
                &wfe,
                target_lock::busy_details(&wfe, &child, &holder, now),
                now,
            ),
            Claim::BrokeStale { kind, .. } => {
                let message = format!(
                    "the lock {} {name} of a finished execution was released; deciding again shortly",
                    kind.kind
                );
                waiting(&wfe, &message, now)
            }
            Claim::Contended => {
                let message = "the lock PipelineRun keeps changing; deciding again shortly";
                waiting(&wfe, message, now)
            }
            Claim::Refused {
                object,
                refusal,
                message,
                ..
            } => {
                let message = format!("creating PipelineRun {object} was refused: {message}");
                fail(target_lock::failure_reason(refusal), message)
            }
        })
    }

    /// The run rendered for `wfe` from the current templates, and their revision; `Err` with the
    /// message of a configuration error when it cannot be rendered.
    fn render(
        &self,
        wfe: &WorkflowExecution,
    ) -> Result<Result<(DynamicObject, String), String>, Error> {
        let Some(templates) = self.ctx.templates.as_ref().map(|t| t.current()) else {
            return Err(Error::Invalid(
                "the runtime was started without templates".into(),
            ));
        };
        let kind = &self.engine.child().kind;
        let template = &self.engine.template;
        let rendered = pipelinerun::render_child(wfe, &self.config, &templates, template)
            .map_err(|e| format!("rendering the {kind} template failed: {e}"))
            .and_then(|rendered| {
                serde_json::from_value(rendered)
                    .map_err(|e| format!("the rendered {kind} is not a Kubernetes object: {e}"))
            });
        Ok(rendered.map(|run| (run, templates.revision().to_owned())))
    }
}

/// The failure reason of a create the API server refused for good (a quota, RBAC, an invalid or
/// too large object); `None` when retrying may help.
#[cfg(test)]
pub(super) fn refused_create(code: u16, message: &str) -> Option<FailureReason> {
    kubernaut_framework::lock::Refusal::of(code, message).map(target_lock::failure_reason)
}

/// Stay `Pending` until the previous run is gone: a condition says why, written once.
pub(super) fn waiting(wfe: &WorkflowExecution, message: &str, now: Timestamp) -> Outcome {
    let mut status = wfe.status.clone().unwrap_or_default();
    conditions(wfe, &mut status, now).set_false(
        ExecutionCondition::ExecutionCreated,
        "WaitingForPreviousRun",
        message,
    );
    // The old run's deletion event maps to *its* owner, not necessarily to this WFE: look
    // again shortly.
    Outcome::write(status, Action::requeue(PREVIOUS_RUN_POLL)).log(format!("waiting: {message}"))
}

/// `outcome` with the engine the execution runs on recorded in its status.
fn on_engine(mut outcome: Outcome, engine: &str) -> Outcome {
    if let Some(status) = outcome.status.as_mut() {
        status.execution_engine = Some(engine.to_owned());
    }
    outcome
}

/// `Running` with the run created (or adopted): its reference, the template revision, and what
/// the run's own watch event would otherwise write right after (one write, not two).
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
    let (kind, name) = (&mapping.child().kind, run.name_any());
    let message = format!("{kind} {name} created");
    let mut set = conditions(wfe, &mut status, now);
    set.set_true(
        ExecutionCondition::ExecutionCreated,
        "PipelineRunCreated",
        &message,
    );
    set.set_unknown(
        ExecutionCondition::Ready,
        "Running",
        "The workflow is running",
    );
    let observation = run_status::observe_run(mapping, &run.data, None);
    if matches!(observation.phase, RunPhase::Pending | RunPhase::Running) {
        running::observe_unfinished(wfe, &mut status, &observation, None, now);
    }
    let log = match created {
        true => message.clone(),
        false => format!("adopted the existing {kind} {name}"),
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
    conditions(wfe, &mut status, now).set_false(
        ExecutionCondition::Ready,
        reason.as_str(),
        &details.message,
    );
    let note = details.message.clone();
    status.skip_details = Some(Box::new(details));
    Outcome::write(status, Action::await_change())
        .metric(super::MetricUpdate::Skipped(reason))
        .log(format!("skipped ({}): {note}", reason.as_str()))
        .event(EventType::Normal, "Skipped", note)
        .audit(AuditAction::Skipped)
}
