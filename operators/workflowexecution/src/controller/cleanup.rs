//! Deletion: cancel a running run of ours and delete it once it has finished (or keep a failed
//! one as the target's block); then `Cleanup::Done` has the framework drop the finalizer.

use std::{sync::Arc, time::Duration};

use jiff::Timestamp;
use kube::{Api, ResourceExt, api::DynamicObject, runtime::events::EventType};
use kubernaut_framework::{
    lifecycle::{Cleanup, Effects},
    names::namespaced_name,
    runtime::Action,
};
use tracing::{debug, info, warn};

use super::{Effect, Error, Pass};
use crate::{
    decide, pipelinerun, run_status,
    types::{PipelineRunRef, WorkflowExecution},
};
use kubernaut_framework::duration::format_go_duration;

/// How often a deleted WFE looks again at its cancelled run while waiting for it to finish.
const FINISH_POLL: Duration = Duration::from_secs(5);

impl Pass<'_> {
    pub(super) async fn cleanup(&self, wfe: Arc<WorkflowExecution>) -> Result<Cleanup, Error> {
        let run_ref = self.run_ref(&wfe);
        let runs = self.runs_in(&run_ref.namespace);
        let name = run_ref.name.clone();
        let owner = pipelinerun::owner(&wfe);
        let mut note =
            "WorkflowExecution deleted; its PipelineRun (if any) was cancelled and removed"
                .to_string();
        let read = runs.get_opt(&name).await;
        if let Some(run) = read.map_err(Error::api(format!("reading PipelineRun {name}")))?
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
                    return Ok(Cleanup::Again(Action::requeue(wait)));
                }
                self.release(&runs, &wfe, &name).await?;
            }
        }
        self.refresh_failure_gauge(&wfe, &self.ctx.peers(&wfe));
        let deleted = Effect::event(EventType::Normal, "WorkflowExecutionDeleted", note);
        self.apply(&wfe, deleted);
        Ok(Cleanup::Done)
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
        let (name, kind) = (&run_ref.name, &self.engine.child().kind);
        let finished = run_status::observe_run(&self.engine.mapping, &run.data, None)
            .phase
            .is_finished();
        if finished {
            return Ok(None);
        }
        let cancel = &self.engine.cancel;
        let deleted_at = wfe.metadata.deletion_timestamp.as_ref();
        let deleted_at = deleted_at.map_or_else(Timestamp::now, |t| t.0);
        let cancelling = cancel
            .cancel(runs, run, deleted_at, Timestamp::now())
            .await
            .map_err(Error::api(format!("cancelling {kind} {name}")))?;
        if cancelling.patched {
            info!(wfe = %namespaced_name(wfe), pipelinerun = %name, "PipelineRun cancelled");
            let note = format!(
                "{kind} {}/{name} cancelled; it is deleted once it has finished, at the latest after {}",
                run_ref.namespace,
                format_go_duration(cancel.finish_grace_period())
            );
            self.apply(
                wfe,
                Effect::event(EventType::Normal, "PipelineRunCancelled", note),
            );
        }
        if let Some(wait) = cancelling.wait {
            // The run's status events reconcile this WFE as soon as it finishes, but only while
            // the run is in the watched namespace: a run recorded in an earlier
            // `execution.namespace` sends none. So look again every few seconds, for this
            // bounded wait only.
            debug!(wfe = %namespaced_name(wfe), pipelinerun = %name, ?wait, "waiting for the cancelled PipelineRun to finish");
            return Ok(Some(wait.min(FINISH_POLL)));
        }
        warn!(wfe = %namespaced_name(wfe), pipelinerun = %name, "the cancelled PipelineRun did not finish within the cancel file's finishGracePeriod; deleting it");
        Ok(None)
    }
}
