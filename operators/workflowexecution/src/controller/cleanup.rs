//! Deletion: cancel a running run of ours and delete it once it has finished (or keep a failed
//! one as the target's block), then drop the finalizer.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams},
    runtime::events::EventType,
};
use kubernaut_framework::{finalizer, lock, runtime::Action};
use tracing::{debug, info, warn};

use super::{Error, FINALIZER, Pass, describe, kube_err};
use crate::{
    decide, pipelinerun, run_status,
    types::{PipelineRunRef, WorkflowExecution},
};
use kubernaut_framework::duration::format_go_duration;

/// How often a deleted WFE looks again at its cancelled run while waiting for it to finish.
const FINISH_POLL: Duration = Duration::from_secs(5);

impl Pass<'_> {
    pub(super) async fn cleanup(&self, wfe: Arc<WorkflowExecution>) -> Result<Action, Error> {
        // The run is where this WFE recorded it; before that (a create whose status write was
        // lost) at the lock name in the configured namespace.
        let run_ref = wfe
            .status
            .as_ref()
            .and_then(|s| s.pipeline_run_ref.clone())
            .unwrap_or_else(|| PipelineRunRef {
                name: pipelinerun::pipeline_run_name(&wfe.spec.target_resource),
                namespace: self.config.execution.namespace.clone(),
            });
        let runs = self.runs_in(&run_ref.namespace);
        let name = run_ref.name.clone();
        let owner = pipelinerun::owner(&wfe);
        let mut note =
            "WorkflowExecution deleted; its PipelineRun (if any) was cancelled and removed"
                .to_string();
        if let Some(run) = runs
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading PipelineRun {name}")))?
            && owner.owns(run.labels())
        {
            if decide::holds_block(&wfe) {
                // The block must outlive this WFE: the run stays, marked, as the target's lock.
                self.mark_block(&runs, &wfe, &run).await?;
                note = format!(
                    "WorkflowExecution deleted; its failed PipelineRun {}/{name} stays as the block on {} until it is cleared",
                    run_ref.namespace, wfe.spec.target_resource
                );
            } else {
                if let Some(wait) = self.cancel(&wfe, &runs, &run, &run_ref).await? {
                    return Ok(Action::requeue(wait));
                }
                lock::release_with_policy(
                    &runs,
                    &name,
                    &owner,
                    self.engine.cancel.delete_propagation(),
                )
                .await?;
            }
        }
        let uid = wfe.uid();
        self.refresh_failure_gauge(&wfe.spec.target_resource, uid.as_deref());
        self.publish(&wfe, EventType::Normal, "WorkflowExecutionDeleted", note);
        finalizer::remove_finalizer(&self.api, &*wfe, FINALIZER).await?;
        Ok(Action::await_change())
    }

    /// Cancels `run` if it has not finished; returns how long to wait before looking again, or
    /// `None` when it may be deleted now.
    ///
    /// What cancels a run, and when it counts as finished, is data: the cancel file and the
    /// status mapping's phase. A run deleted before Tekton has run its `finally` tasks never
    /// runs them, so deletion waits for the run to finish — bounded by the cancel file's grace
    /// period, so a Tekton that is down cannot keep the WFE.
    async fn cancel(
        &self,
        wfe: &WorkflowExecution,
        runs: &Api<DynamicObject>,
        run: &DynamicObject,
        run_ref: &PipelineRunRef,
    ) -> Result<Option<Duration>, Error> {
        let name = &run_ref.name;
        let finished = run_status::observe_run(&self.engine.mapping, &run.data, None)
            .phase
            .is_finished();
        if finished {
            return Ok(None);
        }
        let cancel = &self.engine.cancel;
        if !cancel.is_cancelled(&run.data) {
            let patch = cancel.patch(run.resource_version().as_deref());
            runs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(kube_err(format!("cancelling PipelineRun {name}")))?;
            info!(wfe = %describe(wfe), pipelinerun = %name, "PipelineRun cancelled");
            self.publish(
                wfe,
                EventType::Normal,
                "PipelineRunCancelled",
                format!(
                    "PipelineRun {}/{name} cancelled; it is deleted once it has finished, at the latest after {}",
                    run_ref.namespace,
                    format_go_duration(cancel.finish_grace_period())
                ),
            );
        }
        let deleted_at = wfe
            .metadata
            .deletion_timestamp
            .as_ref()
            .map_or_else(Timestamp::now, |t| t.0);
        if let Some(wait) = cancel.remaining_wait(deleted_at, Timestamp::now()) {
            // The run's status events reconcile this WFE as soon as it finishes, but only while
            // the run is in the watched namespace: a run recorded in an earlier
            // `execution.namespace` sends none. So look again every few seconds, for this
            // bounded wait only.
            debug!(wfe = %describe(wfe), pipelinerun = %name, ?wait, "waiting for the cancelled PipelineRun to finish");
            return Ok(Some(wait.min(FINISH_POLL)));
        }
        warn!(wfe = %describe(wfe), pipelinerun = %name, "the cancelled PipelineRun did not finish within the cancel file's finishGracePeriod; deleting it");
        Ok(None)
    }
}
