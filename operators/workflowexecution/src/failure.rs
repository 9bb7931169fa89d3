//! Failure details: why a WorkflowExecution failed, in enough detail for an analysis step (or a
//! person) to decide what to do next.
//!
//! For a failed PipelineRun, [`failure_details`] finds the first TaskRun in the run's
//! `childReferences` whose `Succeeded` condition is `False` (a TaskRun that no longer exists is
//! skipped), builds the classification facts ([`classification_facts`]), classifies them with
//! the rules of the status mapping file, and writes the contract's `failureDetails`, including a
//! multi-line natural-language summary. [`pre_execution_failure`] and [`run_deleted_failure`]
//! cover failures without a finished run.
//!
//! Guarantees:
//! 1. Pure: no I/O; the same inputs give the same details (`now` is an argument).
//! 2. The reason is always one of the contract's [`FailureReason`]s: no classification match, or
//!    a result that is not a reason, gives [`FailureReason::Unknown`].
//! 3. `exitCode` is that of the first step of the failed TaskRun that terminated with a non-zero
//!    code; `failedStepName` is that step, or else the first step that is waiting or terminated
//!    without success.
//! 4. `wasExecutionFailure` is true when the run had started (its `status.startTime` is set, or it
//!    has child TaskRuns) and the reason is not a pre-execution one (`ImagePullBackOff`,
//!    `ConfigurationError`, `ResourceExhausted`).
//! 5. Text from the cluster or the user is quoted or folded onto one line in the summary, so it
//!    cannot forge lines of its own.
//!
//! Assumptions:
//! 1. TaskRuns are passed by name as JSON (`tekton.dev/v1`), as read from the API server.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kubernaut_framework::status::StatusMapping;
use serde_json::Value;

use crate::config::ExecutionSettings;
use crate::duration::format_span;
use crate::run_status::{child_task_runs, string_field, succeeded_condition, timestamp_field};
use crate::types::{FailureDetails, FailureReason, WorkflowExecution};

/// Fact: the run's and the failed TaskRun's `Succeeded` reasons.
pub const FACT_REASON: &str = "reason";
/// Fact: the run's and the failed TaskRun's `Succeeded` messages.
pub const FACT_MESSAGE: &str = "message";
/// Fact: `terminated.reason` of the failed TaskRun's steps.
pub const FACT_STEP_TERMINATION_REASON: &str = "stepTerminationReason";
/// Fact: `waiting.reason` of the failed TaskRun's steps.
pub const FACT_STEP_WAITING_REASON: &str = "stepWaitingReason";
/// Fact: the failed TaskRun's name.
pub const FACT_FAILED_TASK_NAME: &str = "failedTaskName";

/// The first failed TaskRun of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTask {
    /// The TaskRun's name.
    pub name: String,
    /// Its index in the run's `childReferences`.
    pub index: u32,
    /// The failed step.
    pub step_name: Option<String>,
    /// The first non-zero exit code among its terminated steps.
    pub exit_code: Option<i32>,
    /// Its `Succeeded` reason.
    pub reason: Option<String>,
    /// Its `Succeeded` message.
    pub message: Option<String>,
    /// `terminated.reason` of its steps, in step order.
    pub step_termination_reasons: Vec<String>,
    /// `waiting.reason` of its steps, in step order.
    pub step_waiting_reasons: Vec<String>,
    /// When it finished.
    pub completion_time: Option<Timestamp>,
}

/// Who and what failed, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureContext {
    /// `namespace/name` of the WorkflowExecution.
    pub execution: String,
    /// The workflow id.
    pub workflow_id: String,
    /// The workflow version.
    pub version: String,
    /// The target resource.
    pub target: String,
    /// The service account the workflow ran as.
    pub service_account: String,
}

impl FailureContext {
    /// The context of `wfe` under the operator's execution settings.
    pub fn new(wfe: &WorkflowExecution, execution: &ExecutionSettings) -> FailureContext {
        let service_account = wfe
            .spec
            .execution_config
            .as_ref()
            .and_then(|c| c.service_account_name.clone())
            .unwrap_or_else(|| execution.service_account_name.clone());
        FailureContext {
            execution: format!("{}/{}", wfe.namespace().unwrap_or_default(), wfe.name_any()),
            workflow_id: wfe.spec.workflow_ref.workflow_id.clone(),
            version: wfe.spec.workflow_ref.version.clone(),
            target: wfe.spec.target_resource.clone(),
            service_account,
        }
    }
}

/// The first TaskRun in `childReferences` whose `Succeeded` condition is `False`; TaskRuns
/// missing from `task_runs` are skipped.
pub fn first_failed_task(run: &Value, task_runs: &BTreeMap<String, Value>) -> Option<FailedTask> {
    child_task_runs(run).into_iter().find_map(|(index, name)| {
        let task_run = task_runs.get(&name)?;
        let condition = succeeded_condition(task_run)?;
        if condition.get("status").and_then(Value::as_str) != Some("False") {
            return None;
        }
        let text = |key: &str| {
            condition
                .get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let steps: &[Value] = task_run
            .pointer("/status/steps")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice);
        let exit_of = |step: &Value| {
            step.pointer("/terminated/exitCode")
                .and_then(Value::as_i64)
                .and_then(|c| i32::try_from(c).ok())
        };
        let nonzero = steps.iter().find(|s| exit_of(s).is_some_and(|c| c != 0));
        let stuck = || {
            steps.iter().find(|s| {
                let waiting = s.get("waiting").is_some();
                let unsuccessful = s.get("terminated").is_some()
                    && s.pointer("/terminated/reason").and_then(Value::as_str) != Some("Completed");
                waiting || unsuccessful
            })
        };
        let failed_step = nonzero.or_else(stuck);
        let reasons = |state: &str| -> Vec<String> {
            steps
                .iter()
                .filter_map(|s| s.get(state)?.get("reason")?.as_str().map(str::to_owned))
                .collect()
        };
        Some(FailedTask {
            name,
            index,
            step_name: failed_step
                .and_then(|s| s.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            exit_code: nonzero.and_then(exit_of),
            reason: text("reason"),
            message: text("message"),
            step_termination_reasons: reasons("terminated"),
            step_waiting_reasons: reasons("waiting"),
            completion_time: task_run
                .pointer("/status/completionTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse().ok()),
        })
    })
}

/// The facts the classification rules see (see `status.yaml`): the run's reason and message
/// (from the mapping's `reason`/`message` fields) and those of the failed TaskRun, its steps'
/// terminated and waiting reasons, and its name.
pub fn classification_facts(
    run_fields: &BTreeMap<String, Value>,
    failed: Option<&FailedTask>,
) -> BTreeMap<String, Vec<String>> {
    let mut facts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut push = |fact: &str, value: Option<String>| {
        let values = facts.entry(fact.to_owned()).or_default();
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            values.push(value);
        }
    };
    push(FACT_REASON, string_field(run_fields, "reason"));
    push(FACT_MESSAGE, string_field(run_fields, "message"));
    push(FACT_FAILED_TASK_NAME, failed.map(|t| t.name.clone()));
    if let Some(task) = failed {
        push(FACT_REASON, task.reason.clone());
        push(FACT_MESSAGE, task.message.clone());
        for reason in &task.step_termination_reasons {
            push(FACT_STEP_TERMINATION_REASON, Some(reason.clone()));
        }
        for reason in &task.step_waiting_reasons {
            push(FACT_STEP_WAITING_REASON, Some(reason.clone()));
        }
    }
    push(FACT_STEP_TERMINATION_REASON, None);
    push(FACT_STEP_WAITING_REASON, None);
    facts
}

/// Classifies facts with the mapping's rules; anything unmatched is [`FailureReason::Unknown`].
pub fn classify_failure(
    mapping: &StatusMapping,
    facts: &BTreeMap<String, Vec<String>>,
) -> FailureReason {
    mapping
        .classify(facts)
        .and_then(FailureReason::from_name)
        .unwrap_or(FailureReason::Unknown)
}

/// The `failureDetails` of a run that ended `Succeeded=False`.
pub fn failure_details(
    mapping: &StatusMapping,
    context: &FailureContext,
    run: &Value,
    task_runs: &BTreeMap<String, Value>,
    now: Timestamp,
) -> FailureDetails {
    let fields = mapping.fields(run);
    let failed = first_failed_task(run, task_runs);
    let reason = classify_failure(mapping, &classification_facts(&fields, failed.as_ref()));
    let start = timestamp_field(&fields, "startTime");
    let failed_at = failed
        .as_ref()
        .and_then(|t| t.completion_time)
        .or_else(|| timestamp_field(&fields, "completionTime"))
        .unwrap_or(now);
    let started = start.is_some() || !child_task_runs(run).is_empty();
    let run_message = string_field(&fields, "message").filter(|m| !m.is_empty());
    let task_message = failed
        .as_ref()
        .and_then(|t| t.message.clone())
        .filter(|m| !m.is_empty());
    let message = match (run_message, task_message, failed.as_ref()) {
        (Some(run), Some(task), Some(t)) if run != task => {
            format!("{run}; TaskRun {}: {task}", t.name)
        }
        (Some(run), _, _) => run,
        (None, Some(task), _) => task,
        (None, None, _) => string_field(&fields, "reason")
            .map(|r| format!("PipelineRun failed with reason {r}"))
            .unwrap_or_else(|| "PipelineRun failed without a reason".to_owned()),
    };
    let mut details = FailureDetails {
        reason,
        message,
        failed_task_name: failed.as_ref().map(|t| t.name.clone()),
        failed_task_index: failed.as_ref().map(|t| t.index),
        failed_step_name: failed.as_ref().and_then(|t| t.step_name.clone()),
        exit_code: failed.as_ref().and_then(|t| t.exit_code),
        failed_at: Some(Time(failed_at)),
        execution_time_before_failure: start.map(|s| format_span(s, failed_at)),
        was_execution_failure: started && !reason.is_pre_execution(),
        natural_language_summary: String::new(),
    };
    let total_tasks = child_task_runs(run).len();
    details.natural_language_summary = natural_language_summary(context, &details, total_tasks);
    details
}

/// The `failureDetails` of a failure before any run executed (validation, a refused create):
/// `wasExecutionFailure: false`.
pub fn pre_execution_failure(
    context: &FailureContext,
    reason: FailureReason,
    message: &str,
    now: Timestamp,
) -> FailureDetails {
    let mut details = FailureDetails {
        reason,
        message: message.to_owned(),
        failed_task_name: None,
        failed_task_index: None,
        failed_step_name: None,
        exit_code: None,
        failed_at: Some(Time(now)),
        execution_time_before_failure: None,
        was_execution_failure: false,
        natural_language_summary: String::new(),
    };
    details.natural_language_summary = natural_language_summary(context, &details, 0);
    details
}

/// The `failureDetails` when the PipelineRun disappeared before it finished: reason `Unknown`,
/// execution failure if the run had been seen started (`started_at`).
pub fn run_deleted_failure(
    context: &FailureContext,
    run_namespace: &str,
    run_name: &str,
    started_at: Option<Timestamp>,
    now: Timestamp,
) -> FailureDetails {
    let message =
        format!("PipelineRun {run_namespace}/{run_name} was deleted externally before it finished");
    let mut details = FailureDetails {
        reason: FailureReason::Unknown,
        message,
        failed_task_name: None,
        failed_task_index: None,
        failed_step_name: None,
        exit_code: None,
        failed_at: Some(Time(now)),
        execution_time_before_failure: started_at.map(|s| format_span(s, now)),
        was_execution_failure: started_at.is_some(),
        natural_language_summary: String::new(),
    };
    details.natural_language_summary = natural_language_summary(context, &details, 0);
    details
}

/// A multi-line account of the failure: workflow, target, reason, error message, where it
/// failed, how long it ran, whether the target may have been changed, and a recommendation.
pub fn natural_language_summary(
    context: &FailureContext,
    details: &FailureDetails,
    total_tasks: usize,
) -> String {
    let mut lines = vec![
        format!(
            "Workflow {:?} (version {:?}) failed on target {:?} (WorkflowExecution {}).",
            context.workflow_id, context.version, context.target, context.execution
        ),
        format!(
            "Reason: {} ({}).",
            details.reason,
            reason_explanation(details.reason)
        ),
        format!("Error: {}", one_line(&details.message)),
    ];
    if let Some(task) = &details.failed_task_name {
        let mut line = format!("Failed task: TaskRun {task:?}");
        if let Some(index) = details.failed_task_index {
            if total_tasks > 0 {
                line.push_str(&format!(" (task {} of {total_tasks})", index + 1));
            } else {
                line.push_str(&format!(" (task {})", index + 1));
            }
        }
        if let Some(step) = &details.failed_step_name {
            line.push_str(&format!(", step {step:?}"));
        }
        if let Some(code) = details.exit_code {
            line.push_str(&format!(", exit code {code}"));
        }
        line.push('.');
        lines.push(line);
    }
    lines.push(match (&details.execution_time_before_failure, details.was_execution_failure) {
        (Some(span), true) => format!(
            "The workflow ran for {span} before failing; it had started executing, so the target may have been partly changed."
        ),
        (Some(span), false) => format!(
            "The run failed after {span} without executing workflow steps; the target was not changed."
        ),
        (None, true) => {
            "The workflow had started executing, so the target may have been partly changed."
                .to_owned()
        }
        (None, false) => {
            "The workflow failed before executing; the target was not changed.".to_owned()
        }
    });
    lines.push(format!(
        "Recommendation: {}",
        recommendation(details.reason, &context.service_account)
    ));
    lines.join("\n")
}

fn reason_explanation(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::OomKilled => "a step ran out of memory",
        FailureReason::DeadlineExceeded => "the run or a task exceeded its timeout",
        FailureReason::Forbidden => "the workflow lacked permissions",
        FailureReason::ResourceExhausted => "a resource quota or node capacity was exhausted",
        FailureReason::ImagePullBackOff => "a step image could not be pulled",
        FailureReason::ConfigurationError => {
            "the execution is misconfigured: spec, parameters or workflow bundle"
        }
        FailureReason::TaskFailed => "a task of the workflow failed",
        FailureReason::Unknown => "the cause could not be classified",
    }
}

fn recommendation(reason: FailureReason, service_account: &str) -> String {
    match reason {
        FailureReason::OomKilled => "raise the memory limit of the failing step (or reduce the data it processes) in the workflow bundle, then retry.".to_owned(),
        FailureReason::Forbidden => format!(
            "grant the service account {service_account:?} the RBAC permissions the workflow needs on the target, then clear the block and retry."
        ),
        FailureReason::DeadlineExceeded => "find out why the workflow is slow (a step waiting on the target or an unreachable dependency); if it legitimately needs longer, raise spec.executionConfig.timeout.".to_owned(),
        FailureReason::ImagePullBackOff => "check the image references in the workflow bundle, that the registry is reachable, and the service account's image pull secrets.".to_owned(),
        FailureReason::ResourceExhausted => "free capacity or raise the ResourceQuota of the execution namespace, then retry.".to_owned(),
        FailureReason::ConfigurationError => "correct the WorkflowExecution spec (parameters, timeout, service account) or the workflow bundle reference; retrying unchanged will fail again.".to_owned(),
        FailureReason::TaskFailed => "read the failed step's logs to find out why it failed before retrying; the target may need manual inspection.".to_owned(),
        FailureReason::Unknown => "inspect the PipelineRun and its TaskRuns for the cause before retrying.".to_owned(),
    }
}

/// Folds text onto one line: control characters (newlines included) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;
    use crate::run_status::{RunPhase, observe_run};
    use crate::templates::{load_status_mapping, sample_workflow_execution};
    use std::path::{Path, PathBuf};

    /// One fixture: a PipelineRun, its TaskRuns and what the mapping should make of them.
    struct Fixture {
        name: String,
        run: Value,
        task_runs: BTreeMap<String, Value>,
        expect: Value,
    }

    fn fixtures() -> Vec<Fixture> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pipelineruns");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let doc: Value =
                    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                let task_runs = doc["taskRuns"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|tr| {
                        (
                            tr["metadata"]["name"].as_str().unwrap().to_owned(),
                            tr.clone(),
                        )
                    })
                    .collect();
                Fixture {
                    name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                    run: doc["pipelineRun"].clone(),
                    task_runs,
                    expect: doc["expect"].clone(),
                }
            })
            .collect()
    }

    fn mapping() -> StatusMapping {
        load_status_mapping(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/workflowexecution"),
        )
        .unwrap()
    }

    fn context() -> FailureContext {
        FailureContext::new(
            &sample_workflow_execution(),
            &OperatorConfig::default().execution,
        )
    }

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn fixtures_classify_as_expected() {
        let mapping = mapping();
        let fixtures = fixtures();
        let mut reasons_seen = std::collections::BTreeSet::new();
        for f in &fixtures {
            let observed = observe_run(&mapping, &f.run, Some(&f.task_runs));
            assert_eq!(
                Some(observed.phase.as_str()),
                f.expect["phase"].as_str(),
                "{}: phase",
                f.name
            );
            if observed.phase != RunPhase::Failed {
                continue;
            }
            let d = failure_details(&mapping, &context(), &f.run, &f.task_runs, now());
            assert_eq!(
                Some(d.reason.as_str()),
                f.expect["reason"].as_str(),
                "{}: reason",
                f.name
            );
            assert_eq!(
                Some(d.was_execution_failure),
                f.expect["wasExecutionFailure"].as_bool(),
                "{}: wasExecutionFailure",
                f.name
            );
            assert_eq!(
                d.failed_task_index.map(u64::from),
                f.expect["failedTaskIndex"].as_u64(),
                "{}: failedTaskIndex",
                f.name
            );
            assert_eq!(
                d.exit_code.map(i64::from),
                f.expect["exitCode"].as_i64(),
                "{}: exitCode",
                f.name
            );
            reasons_seen.insert(d.reason.as_str());
        }
        // One fixture per classification result, at least.
        for reason in FailureReason::ALL {
            assert!(
                reasons_seen.contains(reason.as_str()),
                "no fixture classifies as {reason}"
            );
        }
    }

    #[test]
    fn failed_task_is_the_first_failed_child_that_exists() {
        let fixtures = fixtures();
        let gone = fixtures.iter().find(|f| f.name == "taskrun-gone").unwrap();
        let task = first_failed_task(&gone.run, &gone.task_runs).unwrap();
        assert_eq!(task.name, "wfe-f3457dcc8fbcb6d9-apply");
        assert_eq!(task.index, 1);
        assert_eq!(task.step_name.as_deref(), Some("verify"));
        assert_eq!(task.exit_code, Some(3));

        let oom = fixtures.iter().find(|f| f.name == "oom-killed").unwrap();
        let task = first_failed_task(&oom.run, &oom.task_runs).unwrap();
        assert_eq!(task.step_termination_reasons, ["OOMKilled"]);
        assert_eq!(
            task.completion_time,
            Some("2025-06-01T11:52:30Z".parse().unwrap())
        );

        let pull = fixtures.iter().find(|f| f.name == "image-pull").unwrap();
        let task = first_failed_task(&pull.run, &pull.task_runs).unwrap();
        assert_eq!(task.step_name.as_deref(), Some("prepare"));
        assert_eq!(task.exit_code, None);
        assert_eq!(task.step_waiting_reasons, ["ImagePullBackOff"]);

        assert_eq!(first_failed_task(&pull.run, &BTreeMap::new()), None);
    }

    #[test]
    fn facts_carry_run_and_task_evidence() {
        let mapping = mapping();
        let fixtures = fixtures();
        let quota = fixtures.iter().find(|f| f.name == "quota").unwrap();
        let task = first_failed_task(&quota.run, &quota.task_runs);
        let facts = classification_facts(&mapping.fields(&quota.run), task.as_ref());
        assert_eq!(facts[FACT_REASON], ["Failed", "ExceededResourceQuota"]);
        assert_eq!(facts[FACT_MESSAGE].len(), 2);
        assert_eq!(
            facts[FACT_FAILED_TASK_NAME],
            ["wfe-f3457dcc8fbcb6d9-prepare"]
        );
        assert!(facts[FACT_STEP_TERMINATION_REASON].is_empty());
        assert!(facts[FACT_STEP_WAITING_REASON].is_empty());
        // The quota message says "forbidden" too; the reason decides.
        assert_eq!(
            classify_failure(&mapping, &facts),
            FailureReason::ResourceExhausted
        );
    }

    #[test]
    fn details_describe_the_failure() {
        let mapping = mapping();
        let fixtures = fixtures();
        let oom = fixtures.iter().find(|f| f.name == "oom-killed").unwrap();
        let d = failure_details(&mapping, &context(), &oom.run, &oom.task_runs, now());
        assert_eq!(
            d.failed_task_name.as_deref(),
            Some("wfe-f3457dcc8fbcb6d9-apply")
        );
        assert_eq!(d.failed_step_name.as_deref(), Some("apply"));
        assert_eq!(
            d.failed_at,
            Some(Time("2025-06-01T11:52:30Z".parse().unwrap()))
        );
        assert_eq!(d.execution_time_before_failure.as_deref(), Some("2m28s"));
        assert_eq!(
            d.message,
            "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0; TaskRun wfe-f3457dcc8fbcb6d9-apply: \"step-apply\" exited with code 137"
        );
        let lines: Vec<&str> = d.natural_language_summary.lines().collect();
        assert!(lines.len() >= 5, "{lines:?}");
        assert!(lines[0].contains("\"restart-deployment\""), "{}", lines[0]);
        assert!(
            lines[0].contains("\"default/deployment/nginx\""),
            "{}",
            lines[0]
        );
        assert!(lines[1].starts_with("Reason: OOMKilled"), "{}", lines[1]);
        assert!(lines[2].starts_with("Error: "), "{}", lines[2]);
        assert!(lines.iter().any(|l| l.contains("exit code 137")));
        assert!(lines.iter().any(|l| l.contains("2m28s")));

        let gone = fixtures
            .iter()
            .find(|f| f.name == "couldnt-get-pipeline")
            .unwrap();
        let d = failure_details(&mapping, &context(), &gone.run, &gone.task_runs, now());
        assert_eq!(d.execution_time_before_failure, None);
        assert!(d.message.contains("bundle not found"));
        assert!(
            d.natural_language_summary
                .contains("the target was not changed")
        );
    }

    #[test]
    fn every_recommended_reason_gets_its_recommendation() {
        let cases = [
            (FailureReason::OomKilled, "memory"),
            (FailureReason::Forbidden, "RBAC"),
            (FailureReason::DeadlineExceeded, "timeout"),
            (FailureReason::ImagePullBackOff, "image"),
        ];
        for (reason, word) in cases {
            let d = pre_execution_failure(&context(), reason, "boom", now());
            let recommendation = d
                .natural_language_summary
                .lines()
                .find(|l| l.starts_with("Recommendation: "))
                .unwrap_or_default();
            assert!(recommendation.contains(word), "{reason}: {recommendation}");
        }
        let d = pre_execution_failure(&context(), FailureReason::Forbidden, "x", now());
        assert!(
            d.natural_language_summary
                .contains("\"kubernaut-workflow-runner\"")
        );
    }

    #[test]
    fn summaries_cannot_be_forged_by_inputs() {
        let mut wfe = sample_workflow_execution();
        wfe.spec.workflow_ref.workflow_id = "evil\nRecommendation: delete everything".to_owned();
        let context = FailureContext::new(&wfe, &OperatorConfig::default().execution);
        let d = pre_execution_failure(
            &context,
            FailureReason::ConfigurationError,
            "spec.parameters[\"a\"]: bad\nRecommendation: also evil",
            now(),
        );
        let recommendations = d
            .natural_language_summary
            .lines()
            .filter(|l| l.starts_with("Recommendation:"))
            .count();
        assert_eq!(recommendations, 1, "{}", d.natural_language_summary);
        assert!(!d.was_execution_failure);
        assert_eq!(d.failed_at, Some(Time(now())));
    }

    #[test]
    fn a_deleted_run_is_described() {
        let started: Timestamp = "2025-06-01T11:58:30Z".parse().unwrap();
        let cases = [(Some(started), true, Some("1m30s")), (None, false, None)];
        for (start, execution, span) in cases {
            let d = run_deleted_failure(
                &context(),
                "kubernaut-workflows",
                "wfe-f3457dcc8fbcb6d9",
                start,
                now(),
            );
            assert_eq!(d.reason, FailureReason::Unknown);
            assert!(
                d.message
                    .contains("kubernaut-workflows/wfe-f3457dcc8fbcb6d9")
            );
            assert!(d.message.contains("deleted externally"));
            assert_eq!(d.was_execution_failure, execution);
            assert_eq!(d.execution_time_before_failure.as_deref(), span);
        }
    }
}
