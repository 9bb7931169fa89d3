//! What a phase handler decides: the status to write, the effects of reaching it, and when to
//! look again. Built by pure functions; the framework's `lifecycle::commit` writes the status
//! and applies the effects through `Pass`.

use std::time::Duration;

use kube::runtime::events::EventType;
use kubernaut_framework::lifecycle;

use crate::{
    audit::AuditAction,
    types::{Phase, SkipReason, WorkflowExecutionStatus},
};

/// A handler's decision for one WorkflowExecution: the framework's outcome with this operator's
/// status and effects.
pub type Outcome = lifecycle::Outcome<WorkflowExecutionStatus, Effect>;

/// Something that follows a status change: reported once, by the pass that wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A Kubernetes Event about the WorkflowExecution.
    Event {
        /// `Normal` or `Warning`.
        type_: EventType,
        /// The Event's reason (also its action).
        reason: &'static str,
        /// The Event's note.
        note: String,
    },
    /// An audit record of the WorkflowExecution in its new status.
    Audit(AuditAction),
    /// A metric update.
    Metric(MetricUpdate),
    /// A log line about the WorkflowExecution.
    Log {
        /// Logged as a warning rather than as information.
        warning: bool,
        /// The line.
        message: String,
    },
}

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

/// The operator's effects added to an [`Outcome`] by name.
pub trait OutcomeExt: Sized {
    /// Adds an Event.
    #[must_use]
    fn event(self, type_: EventType, reason: &'static str, note: String) -> Self;

    /// Adds an information log line.
    #[must_use]
    fn log(self, message: String) -> Self;

    /// Adds a warning log line.
    #[must_use]
    fn warn(self, message: String) -> Self;

    /// Adds an audit record.
    #[must_use]
    fn audit(self, action: AuditAction) -> Self;

    /// Adds a metric update.
    #[must_use]
    fn metric(self, update: MetricUpdate) -> Self;

    /// The Events this outcome publishes, by reason (for tests and logs).
    fn event_reasons(&self) -> Vec<&'static str>;
}

impl OutcomeExt for Outcome {
    fn event(self, type_: EventType, reason: &'static str, note: String) -> Self {
        self.with(Effect::Event {
            type_,
            reason,
            note,
        })
    }

    fn log(self, message: String) -> Self {
        self.with(Effect::Log {
            warning: false,
            message,
        })
    }

    fn warn(self, message: String) -> Self {
        self.with(Effect::Log {
            warning: true,
            message,
        })
    }

    fn audit(self, action: AuditAction) -> Self {
        self.with(Effect::Audit(action))
    }

    fn metric(self, update: MetricUpdate) -> Self {
        self.with(Effect::Metric(update))
    }

    fn event_reasons(&self) -> Vec<&'static str> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}
