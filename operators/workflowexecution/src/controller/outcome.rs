//! What a phase handler decides: the status to write, the effects of reaching it, and when to
//! look again. Built by pure functions; [`super::Pass::commit`] writes and applies it.

use std::time::Duration;

use kube::runtime::events::EventType;
use kubernaut_framework::{phase, runtime::Action};

use crate::{
    audit::AuditAction,
    types::{Phase, SkipReason, WorkflowExecutionStatus},
};

/// A handler's decision for one WorkflowExecution.
#[derive(Debug)]
pub struct Outcome {
    /// The status to write; `None` leaves the status as it is.
    pub status: Option<WorkflowExecutionStatus>,
    /// Applied, in order, only when the status write changed the object.
    pub effects: Vec<Effect>,
    /// When to reconcile again.
    pub action: Action,
}

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

impl Outcome {
    /// Write `status`, then look again as `action` says.
    pub fn write(status: WorkflowExecutionStatus, action: Action) -> Self {
        Self {
            status: Some(status),
            effects: Vec::new(),
            action,
        }
    }

    /// Leave the status as it is.
    pub fn unchanged(action: Action) -> Self {
        Self {
            status: None,
            effects: Vec::new(),
            action,
        }
    }

    /// Adds an effect.
    #[must_use]
    pub fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    /// Adds an Event.
    #[must_use]
    pub fn event(self, type_: EventType, reason: &'static str, note: String) -> Self {
        self.with(Effect::Event {
            type_,
            reason,
            note,
        })
    }

    /// Adds an information log line.
    #[must_use]
    pub fn log(self, message: String) -> Self {
        self.with(Effect::Log {
            warning: false,
            message,
        })
    }

    /// Adds a warning log line.
    #[must_use]
    pub fn warn(self, message: String) -> Self {
        self.with(Effect::Log {
            warning: true,
            message,
        })
    }

    /// Adds an audit record.
    #[must_use]
    pub fn audit(self, action: AuditAction) -> Self {
        self.with(Effect::Audit(action))
    }

    /// Adds a metric update.
    #[must_use]
    pub fn metric(self, update: MetricUpdate) -> Self {
        self.with(Effect::Metric(update))
    }

    /// The Events this outcome publishes, by reason (for tests and logs).
    pub fn event_reasons(&self) -> Vec<&'static str> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Event { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }
}

impl phase::Outcome<Phase> for Outcome {
    fn next_phase(&self) -> Option<Phase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}
