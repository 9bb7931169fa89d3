//! `Completed` / `Failed`: hold the target's lock for the cooldown, then release it; a failed
//! execution's run stays, marked, as the target's block until it is cleared.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::events::EventType,
};
use kubernaut_framework::{
    lock::{self, Release},
    runtime::Action,
};
use serde_json::json;
use tracing::{debug, info};

use super::{Error, Outcome, Pass, describe, kube_err};
use crate::{
    config::OperatorConfig,
    decide, pipelinerun,
    types::{WorkflowExecution, WorkflowExecutionStatus},
};
use kubernaut_framework::duration::duration_between;

impl Pass<'_> {
    pub(super) async fn terminal(&self, wfe: Arc<WorkflowExecution>) -> Result<Outcome, Error> {
        let done = Outcome::unchanged(Action::await_change());
        let wfe = self.clear_block_if_asked(wfe).await?;
        // Every term reconciles every WFE once, so this rebuilds the gauge from the store after a
        // restart or a leader change.
        self.refresh_failure_gauge(&wfe.spec.target_resource, None);
        let Some(status) = wfe.status.clone() else {
            return Ok(done);
        };
        let Some(run_ref) = status.pipeline_run_ref.clone() else {
            // This WFE never created a run: there is no lock of its own to release.
            return Ok(done);
        };
        let runs = self.runs_in(&run_ref.namespace);
        let owner = pipelinerun::owner(&wfe);
        // The cache (the watched namespace) is synced before any reconcile and keeps our
        // annotations: a run that is not there (or not ours) needs no API call, which keeps
        // restarts over many finished WFEs free of requests. A run recorded in another namespace
        // (`execution.namespace` changed since) is read from the API server.
        let run = if run_ref.namespace == self.config.execution.namespace {
            self.cached_run(&run_ref)
        } else {
            runs.get_opt(&run_ref.name)
                .await
                .map_err(kube_err(format!("reading PipelineRun {}", run_ref.name)))?
                .map(Arc::new)
        };
        let Some(run) = run.filter(|run| owner.owns(run.labels())) else {
            return Ok(done);
        };
        if decide::holds_block(&wfe) {
            // The run stays as the target's lock until the block is cleared: mark it, so the
            // block outlives this WFE (and keeps the TaskRuns and logs for the investigation).
            self.mark_block(&runs, &wfe, &run).await?;
            return Ok(done);
        }
        if pipelinerun::ExecutionBlock::of(&run).is_some() {
            // Cleared: the run is an ordinary lock again.
            self.annotate_run(&runs, &run, None).await?;
        }
        let completed = status.completion_time.as_ref().map_or(self.now, |t| t.0);
        if duration_between(completed, self.now) < self.config.cooldown.period {
            debug!(wfe = %describe(&wfe), "holding the lock for the cooldown");
            return Ok(Outcome::unchanged(hold_lock(
                &status,
                &self.config,
                self.now,
            )));
        }
        let propagation = self.engine.cancel.delete_propagation();
        if lock::release_with_policy(&runs, &run_ref.name, &owner, propagation).await?
            == Release::Released
        {
            info!(wfe = %describe(&wfe), pipelinerun = %run_ref.name, "lock released");
            self.publish(
                &wfe,
                EventType::Normal,
                "LockReleased",
                format!(
                    "Cooldown over: PipelineRun {}/{} deleted, target {} is free",
                    run_ref.namespace, run_ref.name, wfe.spec.target_resource
                ),
            );
        }
        Ok(done)
    }

    /// Records on `run` that it holds the block of `wfe`'s execution failure (once).
    pub(super) async fn mark_block(
        &self,
        runs: &Api<DynamicObject>,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
    ) -> Result<(), Error> {
        if pipelinerun::ExecutionBlock::of(run).is_some() {
            return Ok(());
        }
        let status = wfe.status.clone().unwrap_or_default();
        let block = pipelinerun::ExecutionBlock {
            workflow_execution: describe(wfe),
            workflow_id: wfe.spec.workflow_ref.workflow_id.clone(),
            reason: status
                .failure_details
                .as_ref()
                .map(|d| d.reason.to_string())
                .unwrap_or_default(),
            failed_at: status
                .completion_time
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        };
        self.annotate_run(runs, run, Some(block.to_annotation()))
            .await?;
        info!(wfe = %describe(wfe), pipelinerun = %run.name_any(), "the failed run is kept as the target's block");
        Ok(())
    }

    /// Sets (or with `None` removes) the block annotation of `run`, only on that very object
    /// (uid in the patch: a replacement of the same name is refused).
    async fn annotate_run(
        &self,
        runs: &Api<DynamicObject>,
        run: &DynamicObject,
        block: Option<String>,
    ) -> Result<(), Error> {
        let patch = json!({"metadata": {
            "uid": run.uid(),
            "annotations": {pipelinerun::ANNOTATION_EXECUTION_BLOCK: block},
        }});
        match runs
            .patch(
                &run.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or replaced by another object: nothing of ours to mark any more.
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::Kube {
                action: format!("annotating PipelineRun {}", run.name_any()),
                source,
            }),
        }
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
