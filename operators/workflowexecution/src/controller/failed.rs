//! The one failure path: whatever failed (the spec, the render, the create, the run, or the run
//! vanished), the WorkflowExecution ends `Failed` through [`failed`].

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kubernaut_framework::condition::ConditionStatus;

use super::{
    ExecutionCondition, MetricUpdate, Outcome, OutcomeExt as _, Pass, conditions, terminal,
};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    decide,
    failure::{self, FailureContext},
    types::{FailureDetails, FailureReason, Phase, PipelineRunStatusSummary, WorkflowExecution},
};
use kubernaut_framework::duration::{duration_between, format_go_duration};

/// Why a WorkflowExecution fails.
// One value per failure, consumed at once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum FailureCause {
    /// Before anything executed (the spec, the render, the create): counts against the target's
    /// backoff.
    PreExecution(FailureReason, String),
    /// The run failed or vanished, as `details` describe.
    Run {
        /// The failure, as classified.
        details: FailureDetails,
        /// When the run finished (the pass's time when unknown).
        completed_at: Option<Timestamp>,
        /// The run's last summary, when it was read.
        summary: Option<PipelineRunStatusSummary>,
    },
}

impl Pass<'_> {
    /// The `Failed` outcome for `cause`.
    pub(super) fn fail(&self, wfe: &WorkflowExecution, cause: FailureCause) -> Outcome {
        let (details, completed_at, summary) = match cause {
            FailureCause::PreExecution(reason, message) => {
                let context =
                    FailureContext::new(wfe, &self.config.execution).reading(&self.engine.mapping);
                let details = failure::pre_execution_failure(&context, reason, &message, self.now);
                (details, None, None)
            }
            FailureCause::Run {
                details,
                completed_at,
                summary,
            } => (details, completed_at, summary),
        };
        let peers = self.peers_on_target(wfe);
        let failure = Failure {
            details,
            completed_at: completed_at.unwrap_or(self.now),
            summary,
        };
        failed(wfe, failure, &peers, &self.config, self.now)
    }
}

/// A failure to record.
pub(super) struct Failure {
    /// The failure, as classified.
    pub details: FailureDetails,
    /// When the execution ended.
    pub completed_at: Timestamp,
    /// The run's last summary, when it was read.
    pub summary: Option<PipelineRunStatusSummary>,
}

/// The terminal `Failed` status of `wfe` (the counters are derived here from its `peers` on the
/// target), with the warning, Event, audit record and metrics of a failure.
pub(super) fn failed(
    wfe: &WorkflowExecution,
    failure: Failure,
    peers: &[Arc<WorkflowExecution>],
    config: &OperatorConfig,
    now: Timestamp,
) -> Outcome {
    let Failure {
        details,
        completed_at,
        summary,
    } = failure;
    let mut status = wfe.status.clone().unwrap_or_default();
    if let Some(summary) = summary {
        status.pipeline_run_status = Some(summary);
    }
    status.phase = Some(Phase::Failed);
    status.completion_time = Some(Time(completed_at));
    let ran_for = status
        .start_time
        .as_ref()
        .map(|start| duration_between(start.0, completed_at));
    if let Some(ran_for) = ran_for {
        status.duration = Some(format_go_duration(ran_for));
    }
    if !details.was_execution_failure {
        let count = decide::count_pre_execution_failure(wfe, peers, now, config);
        status.consecutive_failures = Some(count.consecutive_failures);
        status.next_allowed_execution = Some(Time(count.next_allowed_execution));
    }
    let has_run = status.pipeline_run_ref.is_some();
    let mut set = conditions(wfe, &mut status, now);
    set.set(
        ExecutionCondition::Ready,
        ConditionStatus::False,
        details.reason.as_str(),
        &details.message,
    );
    if has_run {
        set.set(
            ExecutionCondition::ExecutionRunning,
            ConditionStatus::False,
            "Failed",
            "The PipelineRun has finished",
        );
        set.set(
            ExecutionCondition::ExecutionComplete,
            ConditionStatus::True,
            "Failed",
            &details.message,
        );
    }
    let summary = details.natural_language_summary.clone();
    let reason = details.reason;
    status.failure_details = Some(details);
    let streak = status.consecutive_failures;
    let action = terminal::hold_lock(&status, config, now);
    let mut outcome = Outcome::write(status, action).metric(MetricUpdate::Finished {
        phase: Phase::Failed,
        duration: ran_for,
    });
    if let Some(count) = streak {
        outcome = outcome.metric(MetricUpdate::ConsecutiveFailures(count));
    }
    outcome
        .warn(format!("workflow failed: {}", reason.as_str()))
        .event(EventType::Warning, "WorkflowFailed", summary)
        .audit(AuditAction::Failed)
}
