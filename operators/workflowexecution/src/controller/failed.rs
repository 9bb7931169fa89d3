//! The one failure path: whatever failed (the spec, the render, the create, the run, or the run
//! vanished), the WorkflowExecution ends `Failed` through [`failed`].

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;

use super::{ExecutionCondition, Outcome, Pass, conditions, terminal};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    decide, failure,
    types::{FailureDetails, FailureReason, Phase, PipelineRunStatusSummary, WorkflowExecution},
};

impl Pass<'_> {
    /// `Failed` before anything executed (the spec, the render, the create): counts against the
    /// target's backoff.
    pub(super) fn fail_before_execution(
        &self,
        wfe: &WorkflowExecution,
        reason: FailureReason,
        message: String,
    ) -> Outcome {
        let context = self.failure_context(wfe);
        let details = failure::pre_execution_failure(&context, reason, &message, self.now);
        self.fail(wfe, details, self.now, None)
    }

    /// `Failed` as `details` describe, the execution ended at `completed_at`, the run's last
    /// `summary` when it was read.
    pub(super) fn fail(
        &self,
        wfe: &WorkflowExecution,
        details: FailureDetails,
        completed_at: Timestamp,
        summary: Option<PipelineRunStatusSummary>,
    ) -> Outcome {
        let (peers, config) = (self.ctx.peers(wfe), &self.config);
        failed(
            wfe,
            details,
            completed_at,
            summary,
            &peers,
            config,
            self.now,
        )
    }
}

/// The terminal `Failed` status of `wfe` as `details` describe, ended at `completed_at`, with the
/// run's last `summary` when it was read (the counters are derived here from its `peers` on the
/// target), and the warning, Event, audit record and metrics of a failure.
pub(super) fn failed(
    wfe: &WorkflowExecution,
    details: FailureDetails,
    completed_at: Timestamp,
    summary: Option<PipelineRunStatusSummary>,
    peers: &[Arc<WorkflowExecution>],
    config: &OperatorConfig,
    now: Timestamp,
) -> Outcome {
    let (mut status, ran_for) = terminal::finish(wfe, Phase::Failed, completed_at, None);
    if let Some(summary) = summary {
        status.pipeline_run_status = Some(summary);
    }
    if !details.was_execution_failure {
        let count = decide::count_pre_execution_failure(wfe, peers, now, config);
        status.consecutive_failures = Some(count.consecutive_failures);
        status.next_allowed_execution = Some(Time(count.next_allowed_execution));
    }
    let has_run = status.pipeline_run_ref.is_some();
    let mut set = conditions(wfe, &mut status, now);
    let reason = details.reason;
    set.set_false(ExecutionCondition::Ready, reason.as_str(), &details.message);
    if has_run {
        terminal::run_finished(&mut set, "Failed", "Failed", &details.message);
    }
    let summary = details.natural_language_summary.clone();
    status.failure_details = Some(Box::new(details));
    terminal::finished(status, Phase::Failed, ran_for, config, now)
        .warn(format!("workflow failed: {}", reason.as_str()))
        .event(EventType::Warning, "WorkflowFailed", summary)
        .audit(AuditAction::Failed)
}
