//! The block-clearing annotation (`kubernaut.ai/clear-execution-block`): lift an execution
//! block or a failure streak, once, and say so — or refuse a clearance that changes nothing.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, runtime::events::EventType};
use kubernaut_framework::names::namespaced_name;
use kubernaut_framework::{condition, lifecycle, runtime::Action};

use super::{
    CLEAR_BLOCK_ANNOTATION, Effect, Error, ExecutionCondition, MetricUpdate, Outcome, Pass,
    conditions,
};
use crate::{
    audit::AuditAction,
    decide, pipelinerun,
    types::{BlockClearance, Phase, WorkflowExecution, WorkflowExecutionStatus},
};

/// What a clearance lifted.
pub(super) enum Cleared {
    /// Nothing: the clearance is refused.
    Nothing,
    /// The block or streak of the annotated WFE itself.
    Own,
    /// Something of the target recorded elsewhere (named).
    Other(&'static str),
}

impl Pass<'_> {
    /// Honour `kubernaut.ai/clear-execution-block` (once): on a `Failed` WFE that blocks its
    /// target or carries a failure streak, and on a WFE `Skipped` for `PreviousExecutionFailed`
    /// or `ExhaustedRetries` (the way to clear a block whose failed WFE was deleted). A clearance
    /// that changes nothing is refused with a Warning Event and a condition, never audited.
    pub(super) async fn clear_block_if_asked(
        &self,
        wfe: Arc<WorkflowExecution>,
    ) -> Result<Arc<WorkflowExecution>, Error> {
        let Some(reason) = wfe.annotations().get(CLEAR_BLOCK_ANNOTATION).cloned() else {
            return Ok(wfe);
        };
        let Some(status) = wfe.status.as_ref() else {
            return Ok(wfe);
        };
        if status.block_clearance.is_some() || refused_already(status, &reason) {
            return Ok(wfe);
        }
        let peers = self.ctx.peers(&wfe);
        let others: Vec<&WorkflowExecution> = peers.iter().map(Arc::as_ref).collect();
        let cleared = match status.phase {
            Some(Phase::Failed) => clear_own(&wfe, &others),
            Some(Phase::Skipped) => self.clear_for_skipped(&wfe, &others, &reason).await?,
            _ => Cleared::Nothing,
        };
        let Outcome {
            status: Some(status),
            effects,
            ..
        } = clearance(&wfe, &cleared, &reason, self.now)
        else {
            return Ok(wfe);
        };
        let written = lifecycle::write(self, &wfe, status, effects).await?;
        Ok(written.map_or(wfe, Arc::new))
    }

    /// A `Skipped` WFE asks to clear what skipped it: the block (a blocking WFE, or a block run
    /// whose WFE is gone) or the failure streak of the target.
    async fn clear_for_skipped(
        &self,
        wfe: &WorkflowExecution,
        others: &[&WorkflowExecution],
        reason: &str,
    ) -> Result<Cleared, Error> {
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
        // The failed WFE may be gone: its run still holds the block, in the kind of whichever
        // engine it ran on.
        let name = pipelinerun::pipeline_run_name(&wfe.spec.target_resource);
        let (client, namespace) = (&self.ctx.client, &self.config.execution.namespace);
        let kinds = self.state().engines.lock_kinds();
        let orphaned = pipelinerun::BLOCK.break_orphaned(client, namespace, &name, &kinds, self);
        if orphaned.await?.is_some() {
            return Ok(Cleared::Other(
                "Execution block of a deleted WorkflowExecution",
            ));
        }
        if let Some(carrier) = decide::most_recent_finished(others)
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
        status.block_clearance = Some(Box::new(block_clearance(reason, self.now)));
        let audited = vec![Effect::Audit(AuditAction::BlockCleared)];
        lifecycle::write(self, other, status, audited).await?;
        Ok(())
    }
}

/// The status of `wfe` after a clearance that lifted `cleared`, with its Event, log line, audit
/// record and metric — or, when it lifted nothing, the refusal (a condition and a warning,
/// never audited).
pub(super) fn clearance(
    wfe: &WorkflowExecution,
    cleared: &Cleared,
    reason: &str,
    now: Timestamp,
) -> Outcome {
    let mut status = wfe.status.clone().unwrap_or_default();
    let action = Action::await_change();
    let message = match cleared {
        Cleared::Nothing => {
            let message = format!(
                "nothing to clear: {} holds no execution block and no failure streak ({CLEAR_BLOCK_ANNOTATION}={reason})",
                namespaced_name(wfe)
            );
            conditions(wfe, &mut status, now).set_false(
                ExecutionCondition::BlockCleared,
                "NothingToClear",
                &message,
            );
            return Outcome::write(status, action).warn(message.clone()).event(
                EventType::Warning,
                "BlockClearanceRefused",
                message,
            );
        }
        Cleared::Own => format!(
            "Execution block on {} cleared: {reason}",
            wfe.spec.target_resource
        ),
        Cleared::Other(what) => format!(
            "{what} on {} cleared through {}: {reason}",
            wfe.spec.target_resource,
            namespaced_name(wfe)
        ),
    };
    status.block_clearance = Some(Box::new(block_clearance(reason, now)));
    conditions(wfe, &mut status, now).set_true(
        ExecutionCondition::BlockCleared,
        "Cleared",
        &message,
    );
    Outcome::write(status, action)
        .log(message.clone())
        .event(EventType::Normal, "BlockCleared", message)
        .audit(AuditAction::BlockCleared)
        // A cleared streak starts again from zero.
        .metric(MetricUpdate::ConsecutiveFailures(0))
}

/// A `Failed` WFE cleared on itself: it must hold a block, or carry the target's failure streak
/// (it is the most recent finished WFE of the target, of it and its `others`).
fn clear_own(wfe: &WorkflowExecution, others: &[&WorkflowExecution]) -> Cleared {
    let newer = decide::most_recent_finished(others)
        .is_some_and(|p| p.completion_time() > wfe.completion_time());
    if decide::holds_block(wfe) || (decide::streak(wfe) > 0 && !newer) {
        Cleared::Own
    } else {
        Cleared::Nothing
    }
}

/// The record of a clearance for `reason` at `now`.
fn block_clearance(reason: &str, now: Timestamp) -> BlockClearance {
    BlockClearance {
        cleared_at: Time(now),
        clear_reason: reason.to_owned(),
    }
}

/// Whether the refusal of this very clearance reason is already recorded (no second Event).
fn refused_already(status: &WorkflowExecutionStatus, reason: &str) -> bool {
    condition::find(&status.conditions, ExecutionCondition::BlockCleared).is_some_and(|c| {
        c.reason == "NothingToClear" && c.message.ends_with(&format!("={reason})"))
    })
}
