//! Table tests of the pure phase functions: what each decides (status, effects, requeue) from
//! the object, what was observed and the time. The API sequences around them are covered by
//! `calls` (a scripted mock API server) and the integration tests (a real API server).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::EventType;
use kubernaut_framework::{
    condition::{self, ConditionStatus},
    runtime::Action,
    status::Held,
};

use super::{
    Effect, ExecutionCondition, MetricUpdate, Outcome, SAFETY_RESYNC,
    clearance::{Cleared, clearance},
    failed::failed,
    pending::{refused_create, skipped, waiting},
    running::{completed, unfinished},
    terminal::hold_lock,
};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    failure::{FailureContext, pre_execution_failure},
    run_status::{RunObservation, RunPhase},
    templates::sample_workflow_execution,
    types::{
        FailureReason, Phase, PipelineRunRef, PipelineRunStatusSummary, SkipDetails, SkipReason,
        WorkflowExecution, WorkflowExecutionStatus,
    },
};

fn now() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

fn at(offset_secs: i64) -> Timestamp {
    now()
        .checked_add(jiff::SignedDuration::from_secs(offset_secs))
        .unwrap()
}

/// The sample WFE in `phase`, started a minute ago; with a run when `with_run`.
fn wfe(phase: Phase, with_run: bool) -> WorkflowExecution {
    let mut wfe = sample_workflow_execution();
    wfe.metadata.generation = Some(3);
    wfe.status = Some(WorkflowExecutionStatus {
        phase: Some(phase),
        start_time: Some(Time(at(-60))),
        pipeline_run_ref: with_run.then(|| PipelineRunRef {
            name: "wfe-1".to_owned(),
            namespace: "kubernaut-workflows".to_owned(),
        }),
        ..Default::default()
    });
    wfe
}

fn status(outcome: &Outcome) -> &WorkflowExecutionStatus {
    outcome
        .status
        .as_ref()
        .expect("the outcome writes a status")
}

/// `(status, reason)` of the condition `type_`.
fn condition_of(outcome: &Outcome, type_: ExecutionCondition) -> Option<(String, String)> {
    condition::find(&status(outcome).conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn pair(status: ConditionStatus, reason: &str) -> Option<(String, String)> {
    Some((status.as_str().to_owned(), reason.to_owned()))
}

#[test]
fn a_refused_create_fails_only_when_retrying_cannot_help() {
    // (code, API server message, failure reason; None = retried)
    let cases = [
        (
            403,
            "pipelineruns is forbidden: User cannot create",
            Some(FailureReason::Forbidden),
        ),
        (
            403,
            "exceeded quota: runs, requested: count/pipelineruns=1",
            Some(FailureReason::ResourceExhausted),
        ),
        (
            422,
            "Exceeded Quota: q",
            Some(FailureReason::ResourceExhausted),
        ),
        (
            422,
            "spec.params: Invalid value",
            Some(FailureReason::ConfigurationError),
        ),
        (400, "bad request", Some(FailureReason::ConfigurationError)),
        (413, "too large", Some(FailureReason::ConfigurationError)),
        (
            500,
            "etcdserver: request is too large",
            Some(FailureReason::ConfigurationError),
        ),
        (
            500,
            "trying to send message larger than max (2100000 vs. 2097152)",
            Some(FailureReason::ConfigurationError),
        ),
        (500, "internal error", None),
        (409, "already exists", None),
        (429, "too many requests", None),
    ];
    for (code, message, expected) in cases {
        assert_eq!(refused_create(code, message), expected, "{code} {message}");
    }
}

#[test]
fn a_skip_records_its_reason_and_reports_once() {
    for reason in [
        SkipReason::ResourceBusy,
        SkipReason::RecentlyRemediated,
        SkipReason::ExhaustedRetries,
        SkipReason::PreviousExecutionFailed,
    ] {
        let details = SkipDetails {
            reason,
            message: format!("skipped for {reason}"),
            skipped_at: Time(now()),
            conflicting_workflow: None,
            recent_remediation: None,
        };
        let outcome = skipped(&wfe(Phase::Pending, false), details, now());
        let written = status(&outcome);
        assert_eq!(written.phase, Some(Phase::Skipped), "{reason}");
        assert_eq!(written.completion_time, Some(Time(now())), "{reason}");
        assert_eq!(
            condition_of(&outcome, ExecutionCondition::Ready),
            pair(ConditionStatus::False, reason.as_str()),
            "{reason}"
        );
        assert_eq!(
            outcome.metric_updates(),
            [&MetricUpdate::Skipped(reason)],
            "{reason}"
        );
        assert_eq!(outcome.audits(), [&AuditAction::Skipped], "{reason}");
        assert_eq!(outcome.event_reasons(), ["Skipped"], "{reason}");
        assert_eq!(outcome.action, Action::await_change(), "{reason}");
    }
}

#[test]
fn waiting_for_a_previous_run_stays_pending_and_looks_again_shortly() {
    let outcome = waiting(
        &wfe(Phase::Pending, false),
        "PipelineRun x is being deleted",
        now(),
    );
    assert_eq!(status(&outcome).phase, Some(Phase::Pending));
    assert_eq!(
        condition_of(&outcome, ExecutionCondition::ExecutionCreated),
        pair(ConditionStatus::False, "WaitingForPreviousRun")
    );
    assert!(outcome.event_reasons().is_empty());
    assert!(outcome.audits().is_empty());
    assert_eq!(outcome.action, Action::requeue(Duration::from_secs(2)));
}

/// Every failure goes through one path: pre-execution failures count against the target's
/// backoff, execution failures do not; the run's conditions are set only when there is a run.
#[test]
fn every_failure_ends_failed_through_one_path() {
    let config = OperatorConfig::default();
    // (what, phase before, has a run, a step ran, completion offset)
    let cases = [
        ("invalid spec", Phase::Pending, false, false, None),
        ("create refused", Phase::Pending, false, false, None),
        (
            "run failed before a step ran",
            Phase::Running,
            true,
            false,
            Some(-10),
        ),
        (
            "run failed after a step ran",
            Phase::Running,
            true,
            true,
            Some(-10),
        ),
        ("run deleted", Phase::Running, true, true, None),
    ];
    for (what, phase, with_run, ran, completed_offset) in cases {
        let wfe = wfe(phase, with_run);
        let context = FailureContext::new(&wfe, &config.execution);
        let mut details =
            pre_execution_failure(&context, FailureReason::TaskFailed, "it broke", now());
        details.was_execution_failure = ran;
        let completed_at = completed_offset.map_or(now(), at);
        let summary = with_run.then(|| PipelineRunStatusSummary {
            reason: Some("Failed".to_owned()),
            ..Default::default()
        });
        let outcome = failed(
            &wfe,
            details,
            completed_at,
            summary.clone(),
            &[],
            &config,
            now(),
        );
        let written = status(&outcome);
        assert_eq!(written.phase, Some(Phase::Failed), "{what}");
        assert_eq!(written.completion_time, Some(Time(completed_at)), "{what}");
        assert!(written.duration.is_some(), "{what}");
        assert_eq!(written.pipeline_run_status, summary, "{what}");
        assert_eq!(
            written.consecutive_failures.is_some(),
            !ran,
            "{what}: only a pre-execution failure counts"
        );
        assert_eq!(
            condition_of(&outcome, ExecutionCondition::Ready),
            pair(ConditionStatus::False, "TaskFailed"),
            "{what}"
        );
        let run_done = with_run.then(|| ("True".to_owned(), "Failed".to_owned()));
        assert_eq!(
            condition_of(&outcome, ExecutionCondition::ExecutionComplete),
            run_done,
            "{what}"
        );
        assert_eq!(outcome.event_reasons(), ["WorkflowFailed"], "{what}");
        assert_eq!(outcome.audits(), [&AuditAction::Failed], "{what}");
        assert!(
            outcome.metric_updates().contains(&&MetricUpdate::Finished {
                phase: Phase::Failed,
                duration: Some(
                    jiff::SignedDuration::from_secs(60 + completed_offset.unwrap_or(0))
                        .unsigned_abs()
                ),
            }),
            "{what}: {:?}",
            outcome.metric_updates()
        );
        let expected_action = if with_run {
            let held = Duration::from_secs(completed_offset.unwrap_or(0).unsigned_abs());
            Action::requeue(config.cooldown.period - held)
        } else {
            Action::await_change()
        };
        assert_eq!(outcome.action, expected_action, "{what}");
    }
}

#[test]
fn a_completed_run_resets_the_streak_and_holds_the_lock() {
    let config = OperatorConfig::default();
    let observation = RunObservation {
        phase: RunPhase::Completed,
        summary: PipelineRunStatusSummary {
            message: Some("Tasks Completed: 2".to_owned()),
            ..Default::default()
        },
        start_time: Some(at(-59)),
        completion_time: Some(at(-30)),
        kind: "PipelineRun".to_owned(),
        part: "TaskRun".to_owned(),
    };
    let outcome = completed(&wfe(Phase::Running, true), &observation, &config, now());
    let written = status(&outcome);
    assert_eq!(written.phase, Some(Phase::Completed));
    assert_eq!(written.duration.as_deref(), Some("30s"));
    assert_eq!(written.consecutive_failures, Some(0));
    assert_eq!(
        condition_of(&outcome, ExecutionCondition::Ready),
        pair(ConditionStatus::True, "Completed")
    );
    assert_eq!(
        condition_of(&outcome, ExecutionCondition::ExecutionComplete),
        pair(ConditionStatus::True, "Succeeded")
    );
    assert!(
        outcome
            .metric_updates()
            .contains(&&MetricUpdate::ConsecutiveFailures(0))
    );
    assert_eq!(outcome.audits(), [&AuditAction::Completed]);
    assert_eq!(outcome.event_reasons(), ["WorkflowCompleted"]);
    assert_eq!(
        outcome.action,
        Action::requeue(config.cooldown.period - Duration::from_secs(30))
    );
}

/// A TaskRun held back is reported once: the Event follows the first pass that sees it, not
/// every pass while it stays held.
#[test]
fn a_held_task_run_is_reported_once() {
    let running = RunObservation {
        phase: RunPhase::Running,
        summary: PipelineRunStatusSummary::default(),
        start_time: Some(at(-60)),
        completion_time: None,
        kind: "PipelineRun".to_owned(),
        part: "TaskRun".to_owned(),
    };
    let quota = Held {
        result: "ResourceExhausted".to_owned(),
        message: Some("TaskRun wfe-1-a: exceeded quota".to_owned()),
    };
    let before = wfe(Phase::Running, true);
    // (what, held now, events)
    let first = unfinished(&before, &running, Some(quota.clone()), now());
    assert_eq!(first.event_reasons(), ["ExecutionHeld"]);
    assert_eq!(
        condition_of(&first, ExecutionCondition::ExecutionRunning),
        pair(ConditionStatus::False, "ResourceExhausted")
    );
    let mut still = before.clone();
    still.status = first.status.clone();
    let second = unfinished(&still, &running, Some(quota), at(5));
    assert!(second.event_reasons().is_empty());
    let released = unfinished(&still, &running, None, at(10));
    assert!(released.event_reasons().is_empty());
    assert_eq!(
        condition_of(&released, ExecutionCondition::ExecutionRunning),
        pair(ConditionStatus::True, "Running")
    );
    assert_eq!(released.action, Action::requeue(SAFETY_RESYNC));
}

#[test]
fn a_clearance_is_audited_only_when_it_clears_something() {
    let failed_wfe = wfe(Phase::Failed, true);
    // (what, cleared, condition, audited, Event)
    let cases = [
        (
            "nothing",
            Cleared::Nothing,
            pair(ConditionStatus::False, "NothingToClear"),
            false,
            "BlockClearanceRefused",
        ),
        (
            "own block",
            Cleared::Own,
            pair(ConditionStatus::True, "Cleared"),
            true,
            "BlockCleared",
        ),
        (
            "a streak elsewhere",
            Cleared::Other("Failure streak"),
            pair(ConditionStatus::True, "Cleared"),
            true,
            "BlockCleared",
        ),
    ];
    for (what, cleared, expected, audited, event) in cases {
        let outcome = clearance(&failed_wfe, &cleared, "checked by hand", now());
        assert_eq!(
            condition_of(&outcome, ExecutionCondition::BlockCleared),
            expected,
            "{what}"
        );
        assert_eq!(
            status(&outcome).block_clearance.is_some(),
            audited,
            "{what}"
        );
        assert_eq!(!outcome.audits().is_empty(), audited, "{what}");
        assert_eq!(outcome.event_reasons(), [event], "{what}");
        let warned = outcome
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Log { warning: true, .. }));
        assert_eq!(warned, !audited, "{what}");
        let type_ = outcome.effects.iter().find_map(|e| match e {
            Effect::Event { type_, .. } => Some(*type_),
            _ => None,
        });
        let expected_type = if audited {
            EventType::Normal
        } else {
            EventType::Warning
        };
        assert_eq!(type_, Some(expected_type), "{what}");
    }
}

#[test]
fn the_lock_is_held_until_the_cooldown_ends() {
    let config = OperatorConfig::default();
    let period = config.cooldown.period;
    let terminal = |with_run: bool, completed: i64| {
        let mut status = wfe(Phase::Completed, with_run).status.unwrap_or_default();
        status.completion_time = Some(Time(at(completed)));
        status
    };
    // (what, status, action)
    let cases = [
        (
            "no run, no lock",
            terminal(false, -10),
            Action::await_change(),
        ),
        ("just finished", terminal(true, 0), Action::requeue(period)),
        (
            "halfway",
            terminal(true, -150),
            Action::requeue(period - Duration::from_secs(150)),
        ),
        (
            "over: look again at once",
            terminal(true, -400),
            Action::requeue(Duration::from_millis(100)),
        ),
    ];
    for (what, status, expected) in cases {
        assert_eq!(hold_lock(&status, &config, now()), expected, "{what}");
    }
}
