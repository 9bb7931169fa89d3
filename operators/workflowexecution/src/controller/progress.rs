//! Which status changes of a running WFE are mere progress, written at most once per
//! `status.progressInterval` ([`kubernaut_framework::pace`]), and which are written at once.
//!
//! Progress is the run's intermediate state mirrored into the WFE: `pipelineRunStatus` (Tekton's
//! reason and message, completed and total tasks, and `executionStarted` turning `true` when a
//! step is first seen running) and `ExecutionRunning` turning `True` when the run starts.
//!
//! `executionStarted` is progress although a later decision depends on it (a failure of the
//! run, or its deletion with its TaskRuns, is an execution failure and blocks the target only if
//! a step had been seen running): a held status is kept by the lifecycle and every later pass
//! decides from it ([`kubernaut_framework::lifecycle`], guarantee 8), so the marker rides on the
//! next write — the end of the interval, or the `Completed`/`Failed` write of a run faster than
//! the interval — and is never lost while the process lives. Only a restart within the interval
//! can lose it, and then only if the run is also deleted with its TaskRuns before the new
//! process looks ([`kubernaut_framework::pace`], caveat 1).
//!
//! Written at once, never held back:
//! 1. a phase change (`Completed`, `Failed`: they do not come through here at all);
//! 2. `ExecutionRunning` turning to or from anything but `True` (a TaskRun held back by a quota
//!    or an image pull, or no longer: a later failure is classified from the remembered hold, and
//!    a new one comes with a Warning Event);
//! 3. any other field of the status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kubernaut_framework::condition::{self, ConditionStatus};

use super::ExecutionCondition;
use crate::types::WorkflowExecutionStatus;

/// Whether `new`, the status decided for a WFE whose status is `old`, differs from it only in
/// progress (see the module): such a write may be held back.
pub(super) fn is_progress(
    old: Option<&WorkflowExecutionStatus>,
    new: &WorkflowExecutionStatus,
) -> bool {
    let Some(old) = old else {
        return false;
    };
    let running = |s: &WorkflowExecutionStatus| {
        condition::find(&s.conditions, ExecutionCondition::ExecutionRunning).cloned()
    };
    let (was, is) = (running(old), running(new));
    let holds = |c: &Option<Condition>| {
        c.as_ref()
            .is_some_and(|c| c.status != ConditionStatus::True.as_str())
    };
    // A hold that starts or ends changes how a later failure is classified.
    if was != is && (holds(&was) || holds(&is)) {
        return false;
    }
    without_progress(old) == without_progress(new)
}

/// `status` without what counts as progress: the run summary and `ExecutionRunning`.
fn without_progress(status: &WorkflowExecutionStatus) -> WorkflowExecutionStatus {
    let mut rest = status.clone();
    rest.pipeline_run_status = None;
    let running = ExecutionCondition::ExecutionRunning.as_str();
    rest.conditions.retain(|c| c.type_ != running);
    rest
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::types::{Phase, PipelineRunStatusSummary};

    fn running_condition(status: &str, reason: &str) -> Condition {
        Condition {
            type_: "ExecutionRunning".into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: Some(1),
        }
    }

    /// A running WFE's status: `completed` tasks of 3 done, `started` as the marker, the
    /// `ExecutionRunning` condition (status, reason) if any.
    fn status(
        completed: u32,
        started: Option<bool>,
        running: Option<(&str, &str)>,
    ) -> WorkflowExecutionStatus {
        WorkflowExecutionStatus {
            phase: Some(Phase::Running),
            pipeline_run_status: Some(PipelineRunStatusSummary {
                status: Some("Unknown".into()),
                reason: Some("Running".into()),
                message: Some(format!("Tasks Completed: {completed}")),
                completed_tasks: Some(completed),
                total_tasks: Some(3),
                execution_started: started,
            }),
            conditions: running
                .map(|(s, r)| running_condition(s, r))
                .into_iter()
                .collect(),
            ..WorkflowExecutionStatus::default()
        }
    }

    #[test]
    fn only_the_runs_intermediate_state_is_progress() {
        let held = Some(("False", "ResourceExhausted"));
        let running = Some(("True", "Running"));
        let mut other_field = status(1, None, running);
        other_field.template_revision = Some("r2".into());
        let mut completed = status(3, Some(true), running);
        completed.phase = Some(Phase::Completed);
        let cases: Vec<(
            &str,
            Option<WorkflowExecutionStatus>,
            WorkflowExecutionStatus,
            bool,
        )> = vec![
            (
                "a task finished",
                Some(status(0, None, running)),
                status(1, None, running),
                true,
            ),
            (
                "the run started",
                Some(status(0, None, None)),
                status(0, None, running),
                true,
            ),
            (
                "a task finished, the step seen before",
                Some(status(0, Some(true), running)),
                status(1, Some(true), running),
                true,
            ),
            // Progress since the lifecycle keeps held statuses: the marker rides on the next
            // write instead of costing one of its own.
            (
                "a step is seen running",
                Some(status(0, None, running)),
                status(0, Some(true), running),
                true,
            ),
            (
                "a step is seen running (false before)",
                Some(status(0, Some(false), running)),
                status(1, Some(true), running),
                true,
            ),
            (
                "a task is held back",
                Some(status(0, None, running)),
                status(0, None, held),
                false,
            ),
            (
                "a hold ends",
                Some(status(0, None, held)),
                status(0, None, running),
                false,
            ),
            (
                "another field changes",
                Some(status(1, None, running)),
                other_field,
                false,
            ),
            (
                "the phase changes",
                Some(status(2, Some(true), running)),
                completed,
                false,
            ),
            ("no status before", None, status(0, None, None), false),
        ];
        for (name, old, new, progress) in cases {
            assert_eq!(is_progress(old.as_ref(), &new), progress, "{name}");
        }
    }
}
