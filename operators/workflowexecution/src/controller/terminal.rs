//! `Completed` / `Failed`: hold the target's lock for the cooldown, then release it; a failed
//! execution's run stays, marked, as the target's block until it is cleared.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, ResourceExt, api::DynamicObject, runtime::events::EventType};
use kubernaut_framework::{
    condition::Conditions,
    lifecycle::Effects,
    lock::{self, Release},
    names::namespaced_name,
    runtime::Action,
};
use tracing::{debug, info};

use super::{Effect, Error, ExecutionCondition, MetricUpdate, Outcome, Pass};
use crate::{
    config::OperatorConfig,
    decide, pipelinerun,
    types::{Phase, WorkflowExecution, WorkflowExecutionStatus},
};
use kubernaut_framework::duration::{duration_between, format_go_duration};

impl Pass<'_> {
    pub(super) async fn terminal(&self, wfe: Arc<WorkflowExecution>) -> Result<Outcome, Error> {
        let done = Outcome::unchanged(Action::await_change());
        let wfe = self.clear_block_if_asked(wfe).await?;
        // Every term reconciles every WFE once, so this rebuilds the gauge from the store after a
        // restart or a leader change.
        self.refresh_failure_gauge(&wfe, &self.ctx.same_key(&wfe));
        let status = wfe.status.clone().unwrap_or_default();
        let Some(run_ref) = status.pipeline_run_ref.clone() else {
            // This WFE never created a run: there is no lock of its own to release.
            return Ok(done);
        };
        // The cache (the watched namespace) is synced before any reconcile and keeps our
        // annotations: a run that is not there (or not ours) needs no API call, which keeps
        // restarts over many finished WFEs free of requests. A run recorded in another namespace
        // (`execution.namespace` changed since) is read from the API server.
        let watched = run_ref.namespace == self.config.execution.namespace;
        let Some(run) = self.our_run(&wfe, &run_ref, watched).await? else {
            return Ok(done);
        };
        let runs = self.runs_in(&run_ref.namespace);
        if decide::holds_block(&wfe) {
            // The run stays as the target's lock until the block is cleared: mark it, so the
            // block outlives this WFE (and keeps the TaskRuns and logs for the investigation).
            self.mark_block(&runs, &wfe, &run).await?;
            return Ok(done);
        }
        // Cleared (or never blocked): the run is an ordinary lock.
        let lifted = pipelinerun::BLOCK.lift(&runs, &run).await;
        lifted.map_err(self.annotating(&run))?;
        let completed = status.completion_time.as_ref().map_or(self.now, |t| t.0);
        if duration_between(completed, self.now) < self.config.cooldown.period {
            debug!(wfe = %namespaced_name(&*wfe), "holding the lock for the cooldown");
            let action = hold_lock(&status, &self.config, self.now);
            return Ok(Outcome::unchanged(action));
        }
        if self.release(&runs, &wfe, &run_ref.name).await? == Release::Released {
            info!(wfe = %namespaced_name(&*wfe), pipelinerun = %run_ref.name, "lock released");
            let note = format!(
                "Cooldown over: {} {}/{} deleted, target {} is free",
                self.engine.child().kind,
                run_ref.namespace,
                run_ref.name,
                wfe.spec.target_resource
            );
            self.apply(&wfe, Effect::event(EventType::Normal, "LockReleased", note));
        }
        Ok(done)
    }

    /// Deletes the lock run `name` of `wfe` (only if its labels name `wfe`), with the propagation
    /// policy of the engine's cancel file.
    pub(super) async fn release(
        &self,
        runs: &Api<DynamicObject>,
        wfe: &WorkflowExecution,
        name: &str,
    ) -> Result<Release, Error> {
        let (owner, propagation) = (pipelinerun::owner(wfe), self.engine.lock_kind().propagation);
        Ok(lock::release_with_policy(runs, name, &owner, propagation).await?)
    }

    /// Records on `run` that it holds the block of `wfe`'s execution failure (once).
    pub(super) async fn mark_block(
        &self,
        runs: &Api<DynamicObject>,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
    ) -> Result<(), Error> {
        let status = wfe.status.as_ref();
        let failure = status.and_then(|s| s.failure_details.as_ref());
        let failed_at = status.and_then(|s| s.completion_time.as_ref());
        let block = pipelinerun::ExecutionBlock {
            workflow_execution: namespaced_name(wfe),
            workflow_id: wfe.spec.workflow_ref.workflow_id.clone(),
            reason: failure.map(|d| d.reason.to_string()).unwrap_or_default(),
            failed_at: failed_at.map(|t| t.0.to_string()).unwrap_or_default(),
        };
        let marked = pipelinerun::BLOCK.mark(runs, run, &block).await;
        if marked.map_err(self.annotating(run))? {
            info!(wfe = %namespaced_name(wfe), pipelinerun = %run.name_any(), "the failed run is kept as the target's block");
        }
        Ok(())
    }

    /// The error of annotating `run`.
    fn annotating(&self, run: &DynamicObject) -> impl FnOnce(kube::Error) -> Error {
        Error::api(format!(
            "annotating {} {}",
            self.engine.child().kind,
            run.name_any()
        ))
    }
}

/// When to look again after a terminal `status`: when the lock's cooldown ends (never, for a WFE
/// that created no run and so holds no lock).
pub(super) fn hold_lock(
    status: &WorkflowExecutionStatus,
    config: &OperatorConfig,
    now: Timestamp,
) -> Action {
    if status.pipeline_run_ref.is_none() {
        return Action::await_change();
    }
    let completed = status.completion_time.as_ref().map_or(now, |t| t.0);
    let remaining = config
        .cooldown
        .period
        .saturating_sub(duration_between(completed, now));
    Action::requeue(remaining.max(Duration::from_millis(100)))
}

/// `wfe`'s status in the terminal `phase`, finished at `completed_at`, with how long it ran: from
/// its recorded start, or else from `started_at` (`status.duration` only when either is known).
pub(super) fn finish(
    wfe: &WorkflowExecution,
    phase: Phase,
    completed_at: Timestamp,
    started_at: Option<Timestamp>,
) -> (WorkflowExecutionStatus, Option<Duration>) {
    let mut status = wfe.status.clone().unwrap_or_default();
    status.phase = Some(phase);
    status.completion_time = Some(Time(completed_at));
    let start = status.start_time.as_ref().map(|t| t.0).or(started_at);
    let ran_for = start.map(|start| duration_between(start, completed_at));
    if let Some(ran_for) = ran_for {
        status.duration = Some(format_go_duration(ran_for));
    }
    (status, ran_for)
}

/// The conditions of a run that has finished: no longer `ExecutionRunning` (`running`, a
/// terminal phase), `ExecutionComplete` as `complete` says, with `message`.
pub(super) fn run_finished(
    set: &mut Conditions<'_, ExecutionCondition>,
    running: &str,
    complete: &str,
    message: &str,
) {
    let finished = "The PipelineRun has finished";
    set.set_false(ExecutionCondition::ExecutionRunning, running, finished);
    set.set_true(ExecutionCondition::ExecutionComplete, complete, message);
}

/// The outcome of the terminal `status` in `phase` after `ran_for`: written, holding the lock
/// for the cooldown, counted, and the target's failure streak (when the status carries one)
/// published.
pub(super) fn finished(
    status: WorkflowExecutionStatus,
    phase: Phase,
    ran_for: Option<Duration>,
    config: &OperatorConfig,
    now: Timestamp,
) -> Outcome {
    let streak = status.consecutive_failures;
    let action = hold_lock(&status, config, now);
    let duration = ran_for;
    let outcome = Outcome::write(status, action).metric(MetricUpdate::Finished { phase, duration });
    match streak {
        Some(count) => outcome.metric(MetricUpdate::ConsecutiveFailures(count)),
        None => outcome,
    }
}
