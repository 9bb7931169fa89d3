//! Whether a Pending WorkflowExecution may run now: the lock and cooldown/backoff steps (2 and 3)
//! of the contract's Pending decision chain, the per-target pre-execution failure counter, and
//! the index by target that lets both read only the WorkflowExecutions on one target.
//!
//! [`decide`] looks at the other WorkflowExecutions on the same target, in this order, first
//! decision wins:
//! 1. another one (other uid) is `Running` → `Skipped` [`SkipReason::ResourceBusy`], naming it in
//!    `conflictingWorkflow`;
//! 2. a. *any* of them failed with `wasExecutionFailure: true` and its block was not cleared
//!    ([`holds_block`]) → [`SkipReason::PreviousExecutionFailed`] (no time limit, and nothing that
//!    finished on the target later lifts it: manual intervention required);
//!    then against the most recent `Completed`/`Failed` one by `completionTime`:
//!    b. its failure streak ([`streak`]: `consecutiveFailures`, 0 once cleared) ≥
//!    `backoff.maxConsecutiveFailures` → [`SkipReason::ExhaustedRetries`];
//!    c. now is before its `nextAllowedExecution` (and its streak was not cleared) →
//!    [`SkipReason::RecentlyRemediated`] (backoff) with `cooldownRemaining`;
//!    d. same `workflowId` and it finished less than `cooldown.period` ago →
//!    [`SkipReason::RecentlyRemediated`] with `cooldownRemaining`; a different workflow is
//!    allowed by this rule.
//!
//! Guarantees:
//! 1. Pure: the decision depends only on the arguments, so it is reconstructible from cluster
//!    state after a restart (the operator's status is the only memory).
//! 2. The WorkflowExecution being decided never blocks itself (compared by uid, else by
//!    namespace/name), and WorkflowExecutions on other targets are ignored even if passed in.
//! 3. Durations in messages and `cooldownRemaining` are Go-style, rounded to seconds (`2m30s`).
//! 4. The caller passes only the WorkflowExecutions on the target: the operator reads them from
//!    the framework's `ParentIndex` (keyed by target), never by scanning the whole cache.
//!
//! Caveats:
//! 1. The lock decision here is advisory (it reads a cache that may lag); the PipelineRun name is
//!    the real lock, and a create that hits `AlreadyExists` is decided again from the existing
//!    run's labels.
//! 2. `Skipped` WorkflowExecutions are not "previous executions": they neither block nor reset
//!    the failure counter.
//! 3. A block whose failed WorkflowExecution was deleted is not visible here: it lives on as the
//!    failed run kept as the lock (see the reconciler), and is found when the create of the run
//!    hits it.
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::config::OperatorConfig;
use crate::types::{
    ConflictingWorkflow, Phase, RecentRemediation, SkipDetails, SkipReason, WorkflowExecution,
};
use kubernaut_framework::duration::{add_saturating, duration_between, format_go_duration};
use kubernaut_framework::names::namespaced_name;

/// The annotation that clears the block a failed execution causes.
pub const CLEAR_BLOCK_ANNOTATION: &str = "kubernaut.ai/clear-execution-block";

/// The outcome of the lock and cooldown/backoff checks.
// One value per reconcile, moved straight into the status: boxing the details would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing prevents running now.
    Proceed,
    /// Skip, for these reasons.
    Skip(SkipDetails),
}

/// The per-target pre-execution failure counter after one more failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureCount {
    /// `status.consecutiveFailures` of the failing WorkflowExecution.
    pub consecutive_failures: u32,
    /// `status.nextAllowedExecution`: now + the backoff delay for that count.
    pub next_allowed_execution: Timestamp,
}

/// Decides whether `wfe` may run now, given the WorkflowExecutions on its target (it may be
/// among them), the time, and the configuration.
pub fn decide(
    wfe: &WorkflowExecution,
    on_target: &[Arc<WorkflowExecution>],
    now: Timestamp,
    config: &OperatorConfig,
) -> Decision {
    let others = others_on_target(wfe, on_target);
    let judge = Judge {
        wfe,
        target: &wfe.spec.target_resource,
        others,
        now,
        config,
    };
    // 1. busy, 2a. blocked; then against the most recent finished one: 2b, 2c, 2d.
    let skip = judge.busy().or_else(|| judge.blocked()).or_else(|| {
        let previous = most_recent_finished(&judge.others)?;
        judge
            .exhausted(previous)
            .or_else(|| judge.backing_off(previous))
            .or_else(|| judge.cooling_down(previous))
    });
    skip.map_or(Decision::Proceed, Decision::Skip)
}

/// What [`decide`] judges: the WorkflowExecution, the others on its target, the time, the
/// configuration. Each check gives the skip it decides, or `None`.
struct Judge<'a> {
    wfe: &'a WorkflowExecution,
    target: &'a String,
    others: Vec<&'a WorkflowExecution>,
    now: Timestamp,
    config: &'a OperatorConfig,
}

impl Judge<'_> {
    fn skip(&self, reason: SkipReason, message: String) -> SkipDetails {
        SkipDetails {
            reason,
            message,
            skipped_at: Time(self.now),
            conflicting_workflow: None,
            recent_remediation: None,
        }
    }

    /// A skip caused by `previous`, which `recentRemediation` names (with the time left until
    /// the target may run again, when time-bound).
    fn skip_for(
        &self,
        reason: SkipReason,
        message: String,
        previous: &WorkflowExecution,
        remaining: Option<Duration>,
    ) -> Option<SkipDetails> {
        Some(SkipDetails {
            recent_remediation: Some(RecentRemediation {
                name: previous.name_any(),
                workflow_id: previous.spec.workflow_ref.workflow_id.clone(),
                completed_at: previous.completion_time().map(Time),
                outcome: previous.phase().map(|p| p.to_string()).unwrap_or_default(),
                target_resource: self.target.clone(),
                cooldown_remaining: remaining.map(format_go_duration),
            }),
            ..self.skip(reason, message)
        })
    }

    /// 1. Another one is running: the target is busy.
    fn busy(&self) -> Option<SkipDetails> {
        let target = self.target;
        let holder = self
            .others
            .iter()
            .copied()
            .filter(|o| o.phase() == Some(Phase::Running))
            .min_by_key(|o| (start_time(o), o.name_any()))?;
        let started_at = start_time(holder);
        let message = format!(
            "target {target} is being remediated by WorkflowExecution {} (workflow {}){}",
            namespaced_name(holder),
            holder.spec.workflow_ref.workflow_id,
            started_at
                .map(|t| format!(", running since {t}"))
                .unwrap_or_default()
        );
        Some(SkipDetails {
            conflicting_workflow: Some(ConflictingWorkflow {
                name: holder.name_any(),
                workflow_id: holder.spec.workflow_ref.workflow_id.clone(),
                started_at: started_at.map(Time),
                target_resource: target.clone(),
            }),
            ..self.skip(SkipReason::ResourceBusy, message)
        })
    }

    /// 2a. An execution failure blocks the target until someone clears it, whatever finished on
    /// the target after it (nothing can run while blocked, but validation failures can end).
    fn blocked(&self) -> Option<SkipDetails> {
        let target = self.target;
        let blockers: Vec<&WorkflowExecution> = self
            .others
            .iter()
            .copied()
            .filter(|o| holds_block(o))
            .collect();
        let blocker = most_recent_finished(&blockers)?;
        let reason = failure_reason_of(blocker);
        self.skip_for(
            SkipReason::PreviousExecutionFailed,
            format!(
                "an earlier execution on target {target}, WorkflowExecution {} (workflow {}), failed during execution ({reason}); \
                 Manual intervention required: check the target, then annotate {} (or any WorkflowExecution of this target skipped with PreviousExecutionFailed) with {CLEAR_BLOCK_ANNOTATION}=<reason> to allow new executions",
                namespaced_name(blocker),
                blocker.spec.workflow_ref.workflow_id,
                namespaced_name(blocker),
            ),
            blocker,
            None,
        )
    }

    /// 2b. Too many consecutive pre-execution failures (a clearance on the WorkflowExecution that
    /// carries the streak resets it, and with it the backoff of 2c).
    fn exhausted(&self, previous: &WorkflowExecution) -> Option<SkipDetails> {
        let target = self.target;
        let failures = streak(previous);
        let limit = self.config.backoff.max_consecutive_failures;
        if failures < limit {
            return None;
        }
        self.skip_for(
            SkipReason::ExhaustedRetries,
            format!(
                "{failures} consecutive pre-execution failures on target {target} (limit {limit}), the last in WorkflowExecution {} ({}); \
                 Manual intervention required: fix the cause, then annotate {} (or any WorkflowExecution of this target skipped with ExhaustedRetries) with {CLEAR_BLOCK_ANNOTATION}=<reason> to reset the streak",
                namespaced_name(previous),
                failure_reason_of(previous),
                namespaced_name(previous),
            ),
            previous,
            None,
        )
    }

    /// 2c. Backoff after pre-execution failures.
    fn backing_off(&self, previous: &WorkflowExecution) -> Option<SkipDetails> {
        let target = self.target;
        let status = previous.status.as_ref()?;
        let next = status.next_allowed_execution.as_ref()?.0;
        if status.block_clearance.is_some() || self.now >= next {
            return None;
        }
        let remaining = duration_between(self.now, next);
        self.skip_for(
            SkipReason::RecentlyRemediated,
            format!(
                "target {target} is backing off after {} consecutive pre-execution failure(s), the last in WorkflowExecution {} ({}); \
                 next execution allowed at {next} (in {})",
                streak(previous),
                namespaced_name(previous),
                failure_reason_of(previous),
                format_go_duration(remaining),
            ),
            previous,
            Some(remaining),
        )
    }

    /// 2d. Cooldown for the same workflow.
    fn cooling_down(&self, previous: &WorkflowExecution) -> Option<SkipDetails> {
        let target = self.target;
        let workflow = &self.wfe.spec.workflow_ref.workflow_id;
        if previous.spec.workflow_ref.workflow_id != *workflow {
            return None;
        }
        let completed = previous.completion_time()?;
        let period = self.config.cooldown.period;
        let until = add_saturating(completed, period);
        if self.now >= until {
            return None;
        }
        let remaining = duration_between(self.now, until);
        self.skip_for(
            SkipReason::RecentlyRemediated,
            format!(
                "workflow {workflow} finished on target {target} at {completed} (WorkflowExecution {}, {}); \
                 cooldown of {} ends at {until} (in {})",
                namespaced_name(previous),
                previous.phase().map(|p| p.to_string()).unwrap_or_default(),
                format_go_duration(period),
                format_go_duration(remaining),
            ),
            previous,
            Some(remaining),
        )
    }
}

/// The counter after `wfe` failed before execution: the previous finished execution's
/// `consecutiveFailures` on the target (0 if it completed, or if there is none) + 1, and the next
/// allowed execution `now + backoff.delay(n)`.
pub fn count_pre_execution_failure(
    wfe: &WorkflowExecution,
    on_target: &[Arc<WorkflowExecution>],
    now: Timestamp,
    config: &OperatorConfig,
) -> FailureCount {
    let others = others_on_target(wfe, on_target);
    let previous = most_recent_finished(&others).map_or(0, streak);
    let consecutive_failures = previous.saturating_add(1);
    let delay = config.backoff.schedule().delay(consecutive_failures);
    FailureCount {
        consecutive_failures,
        next_allowed_execution: add_saturating(now, delay),
    }
}

/// Whether `wfe` blocks its target: it failed with `wasExecutionFailure: true` and nobody has
/// cleared the block (`status.blockClearance`).
pub fn holds_block(wfe: &WorkflowExecution) -> bool {
    let Some(status) = wfe.status.as_ref() else {
        return false;
    };
    status.phase == Some(Phase::Failed)
        && status.block_clearance.is_none()
        && status
            .failure_details
            .as_ref()
            .is_some_and(|d| d.was_execution_failure)
}

/// The pre-execution failure streak `wfe` carries: its `consecutiveFailures` if it failed and
/// the streak was not cleared, else 0.
pub fn streak(wfe: &WorkflowExecution) -> u32 {
    match wfe.status.as_ref() {
        Some(status) if status.phase == Some(Phase::Failed) && status.block_clearance.is_none() => {
            status.consecutive_failures.unwrap_or(0)
        }
        _ => 0,
    }
}

fn failure_reason_of(wfe: &WorkflowExecution) -> String {
    let details = wfe.status.as_ref().and_then(|s| s.failure_details.as_ref());
    details.map_or_else(|| "unknown".to_owned(), |d| d.reason.to_string())
}

/// The most recent `Completed`/`Failed` execution by `completionTime` (one without a completion
/// time counts as oldest; ties go to the later name, for determinism).
pub fn most_recent_finished<'a>(
    candidates: &[&'a WorkflowExecution],
) -> Option<&'a WorkflowExecution> {
    candidates
        .iter()
        .copied()
        .filter(|o| matches!(o.phase(), Some(Phase::Completed | Phase::Failed)))
        .max_by_key(|o| (o.completion_time(), o.name_any()))
}

/// The WorkflowExecutions of `on_target` that are on `wfe`'s target (by [`target_key`]) and are
/// not `wfe` itself.
///
/// [`target_key`]: crate::types::target_key
fn others_on_target<'a>(
    wfe: &WorkflowExecution,
    on_target: &'a [Arc<WorkflowExecution>],
) -> Vec<&'a WorkflowExecution> {
    let key = crate::types::target_key(&wfe.spec.target_resource);
    on_target
        .iter()
        .map(Arc::as_ref)
        .filter(|other| crate::types::target_key(&other.spec.target_resource) == key)
        .filter(|other| !same_object(wfe, other))
        .collect()
}

fn same_object(a: &WorkflowExecution, b: &WorkflowExecution) -> bool {
    match (a.uid(), b.uid()) {
        (Some(x), Some(y)) => x == y,
        _ => a.name_any() == b.name_any() && a.namespace() == b.namespace(),
    }
}

fn start_time(wfe: &WorkflowExecution) -> Option<Timestamp> {
    Some(wfe.status.as_ref()?.start_time.as_ref()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{
        BlockClearance, FailureDetails, FailureReason, WorkflowExecutionSpec,
        WorkflowExecutionStatus, WorkflowRef,
    };

    const TARGET: &str = "default/deployment/nginx";

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn now() -> Timestamp {
        ts("2025-06-01T12:00:00Z")
    }

    fn wfe(name: &str, workflow: &str) -> WorkflowExecution {
        let mut w = WorkflowExecution::new(
            name,
            WorkflowExecutionSpec {
                workflow_ref: WorkflowRef {
                    workflow_id: workflow.to_owned(),
                    version: "1".to_owned(),
                    container_image: "registry.example/wf:v1".to_owned(),
                    container_digest: None,
                },
                target_resource: TARGET.to_owned(),
                parameters: Default::default(),
                confidence: None,
                rationale: None,
                remediation_request_ref: None,
                execution_config: None,
                execution_engine: None,
            },
        );
        w.metadata.namespace = Some("kubernaut-system".to_owned());
        w.metadata.uid = Some(format!("uid-{name}"));
        w
    }

    fn with_status(mut w: WorkflowExecution, status: WorkflowExecutionStatus) -> WorkflowExecution {
        w.status = Some(status);
        w
    }

    fn running(name: &str, workflow: &str, started: &str) -> WorkflowExecution {
        with_status(
            wfe(name, workflow),
            WorkflowExecutionStatus {
                phase: Some(Phase::Running),
                start_time: Some(Time(ts(started))),
                ..Default::default()
            },
        )
    }

    fn completed(name: &str, workflow: &str, at: &str) -> WorkflowExecution {
        with_status(
            wfe(name, workflow),
            WorkflowExecutionStatus {
                phase: Some(Phase::Completed),
                completion_time: Some(Time(ts(at))),
                consecutive_failures: Some(0),
                ..Default::default()
            },
        )
    }

    fn failed(
        name: &str,
        workflow: &str,
        at: &str,
        execution: bool,
        consecutive: Option<u32>,
        next_allowed: Option<&str>,
    ) -> WorkflowExecution {
        with_status(
            wfe(name, workflow),
            WorkflowExecutionStatus {
                phase: Some(Phase::Failed),
                completion_time: Some(Time(ts(at))),
                consecutive_failures: consecutive,
                next_allowed_execution: next_allowed.map(|t| Time(ts(t))),
                failure_details: Some(Box::new(FailureDetails {
                    reason: if execution {
                        FailureReason::TaskFailed
                    } else {
                        FailureReason::ImagePullBackOff
                    },
                    message: "m".to_owned(),
                    failed_task_name: None,
                    failed_task_index: None,
                    failed_step_name: None,
                    exit_code: None,
                    failed_at: Some(Time(ts(at))),
                    execution_time_before_failure: None,
                    was_execution_failure: execution,
                    natural_language_summary: "s".to_owned(),
                })),
                ..Default::default()
            },
        )
    }

    fn cleared(mut w: WorkflowExecution) -> WorkflowExecution {
        if let Some(s) = w.status.as_mut() {
            s.block_clearance = Some(Box::new(BlockClearance {
                cleared_at: Time(now()),
                clear_reason: "fixed by hand".to_owned(),
            }));
        }
        w
    }

    fn skipped(name: &str, workflow: &str) -> WorkflowExecution {
        with_status(
            wfe(name, workflow),
            WorkflowExecutionStatus {
                phase: Some(Phase::Skipped),
                completion_time: Some(Time(ts("2025-06-01T11:59:59Z"))),
                ..Default::default()
            },
        )
    }

    fn on(target: &str, mut w: WorkflowExecution) -> WorkflowExecution {
        w.spec.target_resource = target.to_owned();
        w
    }

    fn arcs(ws: Vec<WorkflowExecution>) -> Vec<Arc<WorkflowExecution>> {
        ws.into_iter().map(Arc::new).collect()
    }

    /// Expected decision: `None` = proceed; `Some((reason, name in details, cooldownRemaining))`.
    type Want = Option<(SkipReason, &'static str, Option<&'static str>)>;

    #[test]
    fn decision_rules() {
        let me = || wfe("new", "restart-pod");
        let cases: Vec<(&str, Vec<WorkflowExecution>, Want)> = vec![
            ("nothing on the target", vec![], None),
            ("itself listed", vec![me()], None),
            (
                "itself running (same uid) does not block",
                vec![with_status(
                    me(),
                    running("x", "restart-pod", "2025-06-01T11:00:00Z")
                        .status
                        .unwrap(),
                )],
                None,
            ),
            (
                "another running → ResourceBusy",
                vec![running("holder", "scale-up", "2025-06-01T11:58:00Z")],
                Some((SkipReason::ResourceBusy, "holder", None)),
            ),
            (
                "the earliest runner is named",
                vec![
                    running("later", "a", "2025-06-01T11:59:00Z"),
                    running("earlier", "b", "2025-06-01T11:50:00Z"),
                ],
                Some((SkipReason::ResourceBusy, "earlier", None)),
            ),
            (
                "running on the same target with the kind in CamelCase → ResourceBusy",
                vec![on(
                    "default/Deployment/nginx",
                    running("holder", "scale-up", "2025-06-01T11:58:00Z"),
                )],
                Some((SkipReason::ResourceBusy, "holder", None)),
            ),
            (
                "running on another target is ignored",
                vec![on(
                    "other/deployment/x",
                    running("elsewhere", "restart-pod", "2025-06-01T11:58:00Z"),
                )],
                None,
            ),
            (
                "lock wins over cooldown",
                vec![
                    running("holder", "scale-up", "2025-06-01T11:58:00Z"),
                    failed(
                        "bad",
                        "restart-pod",
                        "2025-06-01T11:00:00Z",
                        true,
                        None,
                        None,
                    ),
                ],
                Some((SkipReason::ResourceBusy, "holder", None)),
            ),
            (
                "execution failure → PreviousExecutionFailed, no time limit",
                vec![failed(
                    "bad",
                    "other-workflow",
                    "2025-05-01T00:00:00Z",
                    true,
                    None,
                    None,
                )],
                Some((SkipReason::PreviousExecutionFailed, "bad", None)),
            ),
            (
                "cleared execution failure, other workflow → proceed",
                vec![cleared(failed(
                    "bad",
                    "other-workflow",
                    "2025-05-01T00:00:00Z",
                    true,
                    None,
                    None,
                ))],
                None,
            ),
            (
                "cleared execution failure, same workflow, within cooldown → RecentlyRemediated",
                vec![cleared(failed(
                    "bad",
                    "restart-pod",
                    "2025-06-01T11:58:00Z",
                    true,
                    None,
                    None,
                ))],
                Some((SkipReason::RecentlyRemediated, "bad", Some("3m0s"))),
            ),
            (
                "a later outcome of any kind does not lift an uncleared block",
                vec![
                    failed(
                        "old-bad",
                        "restart-pod",
                        "2025-06-01T10:00:00Z",
                        true,
                        None,
                        None,
                    ),
                    completed("good", "scale-up", "2025-06-01T11:00:00Z"),
                ],
                Some((SkipReason::PreviousExecutionFailed, "old-bad", None)),
            ),
            (
                "a later validation failure does not lift the block",
                vec![
                    failed(
                        "bad",
                        "restart-pod",
                        "2025-06-01T10:00:00Z",
                        true,
                        None,
                        None,
                    ),
                    failed(
                        "invalid",
                        "scale-up",
                        "2025-06-01T11:00:00Z",
                        false,
                        Some(1),
                        Some("2025-06-01T11:01:00Z"),
                    ),
                ],
                Some((SkipReason::PreviousExecutionFailed, "bad", None)),
            ),
            (
                "a cleared old block with a later completion → proceed",
                vec![
                    cleared(failed(
                        "old-bad",
                        "restart-pod",
                        "2025-06-01T10:00:00Z",
                        true,
                        None,
                        None,
                    )),
                    completed("good", "scale-up", "2025-06-01T11:00:00Z"),
                ],
                None,
            ),
            (
                "a cleared streak lifts ExhaustedRetries and its backoff",
                vec![cleared(failed(
                    "pre5",
                    "scale-up",
                    "2025-06-01T11:59:00Z",
                    false,
                    Some(5),
                    Some("2025-06-01T12:09:00Z"),
                ))],
                None,
            ),
            (
                "skipped executions are not previous executions",
                vec![
                    failed(
                        "bad",
                        "restart-pod",
                        "2025-06-01T10:00:00Z",
                        true,
                        None,
                        None,
                    ),
                    skipped("skip", "restart-pod"),
                ],
                Some((SkipReason::PreviousExecutionFailed, "bad", None)),
            ),
            (
                "at the failure limit → ExhaustedRetries",
                vec![failed(
                    "pre5",
                    "restart-pod",
                    "2025-06-01T11:00:00Z",
                    false,
                    Some(5),
                    Some("2025-06-01T11:10:00Z"),
                )],
                Some((SkipReason::ExhaustedRetries, "pre5", None)),
            ),
            (
                "below the limit, inside backoff → RecentlyRemediated with remaining",
                vec![failed(
                    "pre2",
                    "other-workflow",
                    "2025-06-01T11:59:00Z",
                    false,
                    Some(2),
                    Some("2025-06-01T12:01:30Z"),
                )],
                Some((SkipReason::RecentlyRemediated, "pre2", Some("1m30s"))),
            ),
            (
                "backoff applies to a different workflow too",
                vec![failed(
                    "pre1",
                    "scale-up",
                    "2025-06-01T11:59:30Z",
                    false,
                    Some(1),
                    Some("2025-06-01T12:00:30Z"),
                )],
                Some((SkipReason::RecentlyRemediated, "pre1", Some("30s"))),
            ),
            (
                "backoff over, other workflow → proceed",
                vec![failed(
                    "pre2",
                    "scale-up",
                    "2025-06-01T11:50:00Z",
                    false,
                    Some(2),
                    Some("2025-06-01T11:52:00Z"),
                )],
                None,
            ),
            (
                "same workflow completed 2m ago → RecentlyRemediated, 3m left",
                vec![completed("done", "restart-pod", "2025-06-01T11:58:00Z")],
                Some((SkipReason::RecentlyRemediated, "done", Some("3m0s"))),
            ),
            (
                "same workflow completed exactly a period ago → proceed",
                vec![completed("done", "restart-pod", "2025-06-01T11:55:00Z")],
                None,
            ),
            (
                "different workflow completed 2m ago → proceed",
                vec![completed("done", "scale-up", "2025-06-01T11:58:00Z")],
                None,
            ),
            (
                "same workflow pre-execution failure, backoff over, within cooldown",
                vec![failed(
                    "pre1",
                    "restart-pod",
                    "2025-06-01T11:59:00Z",
                    false,
                    Some(1),
                    Some("2025-06-01T11:59:30Z"),
                )],
                Some((SkipReason::RecentlyRemediated, "pre1", Some("4m0s"))),
            ),
        ];
        let config = OperatorConfig::default();
        for (name, others, want) in cases {
            let got = decide(&me(), &arcs(others), now(), &config);
            match (got, want) {
                (Decision::Proceed, None) => {}
                (Decision::Skip(details), Some((reason, other, remaining))) => {
                    assert_eq!(details.reason, reason, "{name}");
                    assert_eq!(details.skipped_at, Time(now()), "{name}");
                    if reason == SkipReason::ResourceBusy {
                        let conflict = details.conflicting_workflow.as_ref().expect(name);
                        assert_eq!(conflict.name, other, "{name}");
                        assert_eq!(conflict.target_resource, TARGET, "{name}");
                        assert!(conflict.started_at.is_some(), "{name}");
                        assert!(details.recent_remediation.is_none(), "{name}");
                    } else {
                        let recent = details.recent_remediation.as_ref().expect(name);
                        assert_eq!(recent.name, other, "{name}");
                        assert_eq!(recent.cooldown_remaining.as_deref(), remaining, "{name}");
                        assert_eq!(recent.target_resource, TARGET, "{name}");
                        assert!(details.conflicting_workflow.is_none(), "{name}");
                    }
                    assert!(
                        details.message.contains(other),
                        "{name}: {}",
                        details.message
                    );
                    if reason == SkipReason::PreviousExecutionFailed {
                        assert!(
                            details.message.contains("Manual intervention required"),
                            "{name}"
                        );
                        assert!(details.message.contains(CLEAR_BLOCK_ANNOTATION), "{name}");
                    }
                }
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn recent_remediation_names_the_outcome() {
        let others = arcs(vec![completed(
            "done",
            "restart-pod",
            "2025-06-01T11:58:00Z",
        )]);
        let Decision::Skip(details) = decide(
            &wfe("new", "restart-pod"),
            &others,
            now(),
            &OperatorConfig::default(),
        ) else {
            panic!("expected a skip");
        };
        let recent = details.recent_remediation.unwrap();
        assert_eq!(recent.outcome, "Completed");
        assert_eq!(recent.workflow_id, "restart-pod");
        assert_eq!(recent.completed_at, Some(Time(ts("2025-06-01T11:58:00Z"))));
    }

    #[test]
    fn failure_counter_follows_the_previous_execution() {
        let config = OperatorConfig::default();
        let cases: Vec<(&str, Vec<WorkflowExecution>, u32, &str)> = vec![
            ("first failure", vec![], 1, "2025-06-01T12:01:00Z"),
            (
                "after a completion",
                vec![completed("ok", "w", "2025-06-01T11:00:00Z")],
                1,
                "2025-06-01T12:01:00Z",
            ),
            (
                "after one failure",
                vec![failed(
                    "f1",
                    "w",
                    "2025-06-01T11:00:00Z",
                    false,
                    Some(1),
                    None,
                )],
                2,
                "2025-06-01T12:02:00Z",
            ),
            (
                "after three",
                vec![failed(
                    "f3",
                    "w",
                    "2025-06-01T11:00:00Z",
                    false,
                    Some(3),
                    None,
                )],
                4,
                "2025-06-01T12:08:00Z",
            ),
            (
                "capped at max",
                vec![failed(
                    "f4",
                    "w",
                    "2025-06-01T11:00:00Z",
                    false,
                    Some(4),
                    None,
                )],
                5,
                "2025-06-01T12:10:00Z",
            ),
            (
                "most recent wins",
                vec![
                    failed("f3", "w", "2025-06-01T10:00:00Z", false, Some(3), None),
                    completed("ok", "w", "2025-06-01T11:00:00Z"),
                ],
                1,
                "2025-06-01T12:01:00Z",
            ),
            (
                "execution failure carries no count",
                vec![failed(
                    "exec",
                    "w",
                    "2025-06-01T11:00:00Z",
                    true,
                    None,
                    None,
                )],
                1,
                "2025-06-01T12:01:00Z",
            ),
            (
                "other targets are ignored",
                vec![on(
                    "x/y/z",
                    failed("f3", "w", "2025-06-01T11:00:00Z", false, Some(3), None),
                )],
                1,
                "2025-06-01T12:01:00Z",
            ),
        ];
        for (name, others, count, next) in cases {
            let got = count_pre_execution_failure(&wfe("new", "w"), &arcs(others), now(), &config);
            assert_eq!(got.consecutive_failures, count, "{name}");
            assert_eq!(got.next_allowed_execution, ts(next), "{name}");
        }
    }

    #[test]
    fn backoff_sequence_reaches_exhausted_retries() {
        // Five pre-execution failures in a row, each decided after the previous backoff expired:
        // delays 1m, 2m, 4m, 8m, 10m, then ExhaustedRetries.
        let config = OperatorConfig::default();
        let mut history: Vec<WorkflowExecution> = Vec::new();
        let mut clock = now();
        let mut delays = Vec::new();
        for i in 1..=5 {
            let me = wfe(&format!("try-{i}"), &format!("w{i}"));
            assert_eq!(
                decide(&me, &arcs(history.clone()), clock, &config),
                Decision::Proceed,
                "try {i}"
            );
            let count = count_pre_execution_failure(&me, &arcs(history.clone()), clock, &config);
            assert_eq!(count.consecutive_failures, i);
            delays.push(duration_between(clock, count.next_allowed_execution).as_secs());
            history.push(with_status(
                me,
                WorkflowExecutionStatus {
                    phase: Some(Phase::Failed),
                    completion_time: Some(Time(clock)),
                    consecutive_failures: Some(count.consecutive_failures),
                    next_allowed_execution: Some(Time(count.next_allowed_execution)),
                    ..Default::default()
                },
            ));
            clock = count.next_allowed_execution;
        }
        assert_eq!(delays, [60, 120, 240, 480, 600]);
        let Decision::Skip(details) = decide(&wfe("try-6", "w6"), &arcs(history), clock, &config)
        else {
            panic!("expected ExhaustedRetries");
        };
        assert_eq!(details.reason, SkipReason::ExhaustedRetries);
    }
}
