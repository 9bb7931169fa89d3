//! The operator's own effects: its metric updates and audit actions. The framework's
//! [`effect`] module carries the rest (Events, log lines, the builder on [`Outcome`]) and applies
//! them after the status write that reached them.

use std::time::Duration;

use kube::ResourceExt;
use kubernaut_framework::{
    effect::{self, AuditRecord, MetricUpdates},
    lifecycle,
};

use crate::{
    audit::{AuditAction, AuditData, AuditEvent},
    metrics::Metrics,
    types::{Phase, SkipReason, WorkflowExecution, WorkflowExecutionStatus},
};

/// Something that follows a status change of a WorkflowExecution.
pub type Effect = effect::Effect<MetricUpdate, AuditAction>;

/// A handler's decision for one WorkflowExecution: the framework's outcome with this operator's
/// status and effects.
pub type Outcome = lifecycle::Outcome<WorkflowExecutionStatus, Effect>;

/// A metric update that follows a status change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricUpdate {
    /// A WorkflowExecution reached `phase` (`Completed` or `Failed`), after `duration` when it
    /// had started.
    Finished {
        /// The terminal phase.
        phase: Phase,
        /// From start to completion.
        duration: Option<Duration>,
    },
    /// A WorkflowExecution was skipped.
    Skipped(SkipReason),
    /// The target's consecutive-failure streak is now this.
    ConsecutiveFailures(u32),
}

impl MetricUpdates<WorkflowExecution> for Metrics {
    type Update = MetricUpdate;

    fn update(&self, wfe: &WorkflowExecution, update: MetricUpdate) {
        match update {
            MetricUpdate::Finished { phase, duration } => {
                self.total.with_label_values(&[phase.as_str()]).inc();
                if let Some(duration) = duration {
                    let seconds = duration.as_secs_f64();
                    self.duration_of(phase.as_str()).observe(seconds);
                }
            }
            MetricUpdate::Skipped(reason) => {
                self.total.with_label_values(&["Skipped"]).inc();
                self.skip.with_label_values(&[reason.as_str()]).inc();
                if matches!(
                    reason,
                    SkipReason::ExhaustedRetries | SkipReason::PreviousExecutionFailed
                ) {
                    self.backoff_skip
                        .with_label_values(&[reason.as_str()])
                        .inc();
                }
            }
            MetricUpdate::ConsecutiveFailures(count) => {
                self.set_consecutive_failures(&wfe.spec.target_resource, count);
            }
        }
    }
}

impl AuditRecord<WorkflowExecution> for AuditEvent {
    type Action = AuditAction;

    /// The record of `wfe` in its status for `action`.
    fn record(wfe: &WorkflowExecution, action: AuditAction) -> AuditEvent {
        let status = wfe.status.clone().unwrap_or_default();
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
        let remediation_request = wfe.spec.remediation_request_ref.as_ref();
        AuditEvent::new(
            action,
            wfe.namespace().unwrap_or_default(),
            wfe.name_any(),
            remediation_request.and_then(|r| r.name.as_deref()),
            data,
        )
    }
}
