//! The target's lock, the WorkflowExecution's side of it: how a Pending WorkflowExecution claims
//! it with the framework's `Locks::claim` (its run, in its engine's kind, checked in every
//! engine's kind), what the holder of a run means ([`Tenancy`]: who holds it, whether it blocks
//! the target, when its holder is done with it), and the skip details, waiting message and
//! failure reason a claim gives.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{ResourceExt, api::DynamicObject};
use kubernaut_framework::lock::{
    Claim, ClaimRequest, LockError, Refusal, Tenancy, hold_over, live_holder,
};
use kubernaut_framework::names::namespaced_name;

use super::{CLEAR_BLOCK_ANNOTATION, Pass};
use crate::{
    config::OperatorConfig,
    decide,
    pipelinerun::{self, ExecutionBlock},
    types::{
        ConflictingWorkflow, FailureReason, Phase, RecentRemediation, SkipDetails, SkipReason,
        WorkflowExecution,
    },
};

impl Tenancy for Pass<'_> {
    type Holder = Arc<WorkflowExecution>;

    async fn holder(
        &self,
        run: &DynamicObject,
    ) -> Result<Option<Arc<WorkflowExecution>>, LockError> {
        self.current_owner(run).await
    }

    /// A run blocks its target while the execution failure of its holder is not cleared, or,
    /// once the holder is gone, while it carries the block annotation.
    fn blocks(&self, run: &DynamicObject, holder: Option<&Arc<WorkflowExecution>>) -> bool {
        holder.map_or_else(
            || pipelinerun::BLOCK.is_marked(run),
            |h| decide::holds_block(h),
        )
    }

    fn done_with(&self, holder: &Arc<WorkflowExecution>) -> bool {
        past_cooldown(holder, &self.config, self.now)
    }
}

impl Pass<'_> {
    /// Claims the target's lock for `wfe` with `run`: created in this engine's kind, checked in
    /// every engine's kind (they share the lock name), a holder judged by this pass's
    /// [`Tenancy`].
    pub(super) async fn claim_run(
        &self,
        wfe: &WorkflowExecution,
        run: DynamicObject,
    ) -> Result<Claim<Arc<WorkflowExecution>>, LockError> {
        let namespace = &self.config.execution.namespace;
        // While the previous run is still being deleted, the cache says so without an API call
        // (this is re-checked every few seconds for as long as a foreign finalizer holds it).
        let resource = &self.engine.child_resource;
        let cached = self.ctx.cached_child(resource, namespace, &run.name_any());
        let request = ClaimRequest {
            client: &self.ctx.client,
            namespace,
            kind: self.engine.lock_kind(),
            others: self.state().engines.lock_kinds(),
            child: run,
            owner: &pipelinerun::owner(wfe),
            cached: cached.as_deref(),
        };
        self.state().locks.claim(request, self).await
    }

    /// The WorkflowExecution `run` names, if it still exists *as that instance* (same uid).
    pub(super) async fn current_owner(
        &self,
        run: &DynamicObject,
    ) -> Result<Option<Arc<WorkflowExecution>>, LockError> {
        let holder = pipelinerun::OWNER_KEYS.holder(run);
        live_holder(&self.ctx.parents, &self.ctx.client, &holder).await
    }
}

/// The failure reason of a create refused for good.
pub(super) fn failure_reason(refusal: Refusal) -> FailureReason {
    match refusal {
        Refusal::Quota => FailureReason::ResourceExhausted,
        Refusal::Forbidden => FailureReason::Forbidden,
        Refusal::Invalid => FailureReason::ConfigurationError,
    }
}

/// Whether a holder is done with its lock: terminal, and its cooldown is over (a Skipped
/// WorkflowExecution never held a lock, so any run naming it is stale).
fn past_cooldown(holder: &WorkflowExecution, config: &OperatorConfig, now: Timestamp) -> bool {
    match holder.phase() {
        Some(Phase::Skipped) => true,
        Some(Phase::Completed | Phase::Failed) => {
            hold_over(holder.completion_time(), config.cooldown.period, now)
        }
        _ => false,
    }
}

/// `Skipped` `PreviousExecutionFailed` because the lock run carries an execution block.
pub(super) fn blocked_by_run(
    wfe: &WorkflowExecution,
    run: &DynamicObject,
    holder: Option<&WorkflowExecution>,
    now: Timestamp,
) -> SkipDetails {
    let block = ExecutionBlock::of(run);
    let target = &wfe.spec.target_resource;
    let failed = holder.map(namespaced_name).or_else(|| {
        block
            .as_ref()
            .map(|b| b.workflow_execution.clone())
            .filter(|w| !w.is_empty())
    });
    let failed = failed.unwrap_or_else(|| "(deleted)".to_owned());
    let workflow_id = holder
        .map(|h| h.spec.workflow_ref.workflow_id.clone())
        .or_else(|| block.as_ref().map(|b| b.workflow_id.clone()))
        .unwrap_or_default();
    let reason = block.as_ref().map_or("unknown", |b| b.reason.as_str());
    let clear_on = if holder.is_some() {
        format!("{failed} (or this WorkflowExecution)")
    } else {
        "this WorkflowExecution".to_owned()
    };
    SkipDetails {
        reason: SkipReason::PreviousExecutionFailed,
        message: format!(
            "an earlier execution on target {target}, WorkflowExecution {failed} (workflow {workflow_id}), failed during execution ({reason}) and its PipelineRun {}/{} is kept as the block; \
             Manual intervention required: check the target, then annotate {clear_on} with {CLEAR_BLOCK_ANNOTATION}=<reason> to allow new executions",
            run.namespace().unwrap_or_default(),
            run.name_any(),
        ),
        skipped_at: Time(now),
        conflicting_workflow: None,
        recent_remediation: Some(RecentRemediation {
            name: holder.map_or_else(
                || failed.rsplit('/').next().unwrap_or_default().to_owned(),
                |h| h.name_any(),
            ),
            workflow_id,
            completed_at: holder
                .and_then(WorkflowExecution::completion_time)
                .or_else(|| block.as_ref().and_then(|b| b.failed_at.parse().ok()))
                .map(Time),
            outcome: Phase::Failed.to_string(),
            target_resource: target.clone(),
            cooldown_remaining: None,
        }),
    }
}

/// `Skipped` `ResourceBusy`: `holder`'s run holds the target's lock.
pub(super) fn busy_details(
    wfe: &WorkflowExecution,
    run: &DynamicObject,
    holder: &WorkflowExecution,
    now: Timestamp,
) -> SkipDetails {
    let target = run
        .annotations()
        .get(pipelinerun::TARGET_RESOURCE_KEY)
        .cloned()
        .unwrap_or_else(|| wfe.spec.target_resource.clone());
    SkipDetails {
        reason: SkipReason::ResourceBusy,
        message: format!(
            "target {target} is busy: PipelineRun {} of WorkflowExecution {} holds its lock",
            run.name_any(),
            namespaced_name(holder),
        ),
        skipped_at: Time(now),
        conflicting_workflow: Some(ConflictingWorkflow {
            name: holder.name_any(),
            workflow_id: holder.spec.workflow_ref.workflow_id.clone(),
            started_at: holder.status.as_ref().and_then(|s| s.start_time.clone()),
            target_resource: target,
        }),
        recent_remediation: None,
    }
}

/// Why a WFE waits: `run`, of the WorkflowExecution it names, is being deleted.
pub(super) fn waiting_message(run: &DynamicObject) -> String {
    let holder = pipelinerun::OWNER_KEYS.holder(run);
    format!(
        "PipelineRun {}/{} of WorkflowExecution {}/{} is being deleted; the workflow starts once it is gone",
        run.namespace().unwrap_or_default(),
        run.name_any(),
        holder.namespace,
        holder.name,
    )
}
