//! How WorkflowExecutions fail, against the real control plane and the Tekton simulator: every
//! reason of the failure classification table, whether a failure is an execution failure (a step
//! ran) or a pre-execution one, a PipelineRun deleted behind the operator's back, parameter
//! values from the whole Unicode range, and specs that are invalid at admission or at runtime.

mod support;

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
};
use kubernaut_test_harness::simulator::Scenario;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;
use support::{Env, WAIT, eventually, status_of, wfe};
use workflowexecution_operator::{
    pipelinerun::pipeline_run_name,
    types::{
        ExecutionConfig, FailureReason, Phase, PipelineRunStatusSummary, SkipReason,
        WorkflowExecution,
    },
};

/// One row of the classification table, as the simulator plays it.
struct Case {
    scenario: Scenario,
    reason: FailureReason,
    /// The failed TaskRun's pipeline task and index in `childReferences`.
    task: Option<(&'static str, u32)>,
    step: Option<&'static str>,
    exit_code: Option<i32>,
    execution_failure: bool,
    /// A word the summary's recommendation must contain.
    recommends: &'static str,
}

#[tokio::test]
async fn every_failure_reason_of_the_classification_table() -> anyhow::Result<()> {
    let env = Env::new("wfe-classify", |_| {}).await?;
    let cases = [
        Case {
            scenario: Scenario::OomKilled,
            reason: FailureReason::OomKilled,
            task: Some(("remediate", 0)),
            step: Some("scale"),
            exit_code: Some(137),
            execution_failure: true,
            recommends: "memory",
        },
        Case {
            scenario: Scenario::Timeout,
            reason: FailureReason::DeadlineExceeded,
            task: Some(("remediate", 0)),
            step: Some("scale"),
            // Tekton stopped the step: its exit code 1 is Tekton's, not the step's.
            exit_code: None,
            execution_failure: true,
            recommends: "timeout",
        },
        Case {
            scenario: Scenario::ImagePull,
            reason: FailureReason::ImagePullBackOff,
            task: Some(("remediate", 0)),
            step: Some("scale"),
            exit_code: None,
            execution_failure: false,
            recommends: "image",
        },
        Case {
            scenario: Scenario::Forbidden,
            reason: FailureReason::Forbidden,
            task: Some(("remediate", 0)),
            step: None,
            exit_code: None,
            // The first task's pod could not be created: no step ran.
            execution_failure: false,
            recommends: "RBAC",
        },
        Case {
            scenario: Scenario::CouldntGetPipeline,
            reason: FailureReason::ConfigurationError,
            task: None,
            step: None,
            exit_code: None,
            execution_failure: false,
            recommends: "bundle",
        },
        Case {
            scenario: Scenario::TaskFailure,
            reason: FailureReason::TaskFailed,
            task: Some(("remediate", 0)),
            step: Some("scale"),
            exit_code: Some(1),
            execution_failure: true,
            recommends: "logs",
        },
    ];
    let name_of = |case: &Case| format!("case-{}", case.reason.as_str().to_lowercase());
    let target_of = |case: &Case| format!("default/deployment/{}", name_of(case));
    for case in &cases {
        env.create(&name_of(case), "diagnose", &target_of(case), case.scenario)
            .await?;
    }
    for case in &cases {
        let name = name_of(case);
        let failed = env.wait_phase(&name, Phase::Failed).await?;
        let status = status_of(&failed);
        let details = status.failure_details.clone().expect("failureDetails");
        let run = pipeline_run_name(&target_of(case));
        let context = format!("{name}: {details:#?}");
        assert_eq!(details.reason, case.reason, "{context}");
        assert_eq!(
            details.failed_task_name,
            case.task.map(|(task, _)| format!("{run}-{task}")),
            "{context}"
        );
        assert_eq!(
            details.failed_task_index,
            case.task.map(|(_, index)| index),
            "{context}"
        );
        assert_eq!(details.failed_step_name.as_deref(), case.step, "{context}");
        assert_eq!(details.exit_code, case.exit_code, "{context}");
        assert_eq!(
            details.was_execution_failure, case.execution_failure,
            "{context}"
        );
        assert!(!details.message.is_empty(), "{context}");
        assert!(details.failed_at.is_some(), "{context}");
        let summary = &details.natural_language_summary;
        assert!(summary.lines().count() >= 4, "{context}");
        assert!(summary.contains(case.reason.as_str()), "{context}");
        assert!(summary.contains("diagnose"), "{context}");
        assert!(summary.contains(&target_of(case)), "{context}");
        let recommendation = summary
            .lines()
            .find(|l| l.starts_with("Recommendation:"))
            .unwrap_or_default();
        assert!(recommendation.contains(case.recommends), "{context}");
        // Only pre-execution failures count towards the target's backoff.
        if case.execution_failure {
            assert_eq!(status.consecutive_failures, None, "{context}");
            assert_eq!(status.next_allowed_execution, None, "{context}");
        } else {
            assert_eq!(status.consecutive_failures, Some(1), "{context}");
            assert!(status.next_allowed_execution.is_some(), "{context}");
        }
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", case.reason.as_str()),
            "{context}"
        );
        let event = env.wait_event(&name, "WorkflowFailed").await?;
        assert_eq!(event.type_.as_deref(), Some("Warning"), "{event:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_pipelinerun_deleted_externally_fails_its_wfe() -> anyhow::Result<()> {
    let env = Env::new("wfe-vanish", |_| {}).await?;
    let target = "default/deployment/vanishing";
    env.create("vanishing", "restart-pods", target, Scenario::Hang)
        .await?;
    // Running, and the operator has seen the run start.
    let running = env
        .wait_for("vanishing", "Running with the run started", |w| {
            w.phase() == Some(Phase::Running)
                && status_of(w)
                    .pipeline_run_status
                    .is_some_and(|s| s.reason.as_deref() == Some("Running"))
        })
        .await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    env.runs().delete(&run, &DeleteParams::default()).await?;

    let failed = env.wait_phase("vanishing", Phase::Failed).await?;
    let details = status_of(&failed).failure_details.expect("failureDetails");
    assert_eq!(details.reason, FailureReason::Unknown);
    assert!(
        details.message.contains(&format!("{}/{run}", env.exec_ns)),
        "{}",
        details.message
    );
    assert!(
        details.message.contains("deleted externally"),
        "{}",
        details.message
    );
    assert!(
        details.was_execution_failure,
        "the run had been seen running"
    );
    assert!(
        details
            .natural_language_summary
            .contains("deleted externally")
    );
    Ok(())
}

/// `target` is blocked: a next workflow on it, `name`, is `Skipped` `PreviousExecutionFailed`.
async fn assert_blocked(env: &Env, name: &str, target: &str) -> anyhow::Result<()> {
    env.create(name, "restart-pods", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase(name, Phase::Skipped).await?;
    assert_eq!(
        status_of(&skipped).skip_details.map(|d| d.reason),
        Some(SkipReason::PreviousExecutionFailed),
        "{name} on {target}"
    );
    Ok(())
}

/// The run of a `Running` WFE, once `pred` holds for its `pipelineRunStatus`.
async fn run_of_running(
    env: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&PipelineRunStatusSummary) -> bool,
) -> anyhow::Result<String> {
    let running = env
        .wait_for(name, what, |w| {
            w.phase() == Some(Phase::Running)
                && status_of(w).pipeline_run_status.as_ref().is_some_and(&pred)
        })
        .await?;
    Ok(status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name)
}

/// Real Tekton keeps a quota-refused TaskRun `Unknown`/`ExceededResourceQuota` and ends the run
/// `PipelineRunTimeout` at its timeout, the TaskRun still waiting (`tests/e2e/recorded/quota-*.yaml`,
/// replayed by the simulator): the execution says `ResourceExhausted` while it waits, and fails
/// `ResourceExhausted` — not `DeadlineExceeded` — at the timeout. No step ran.
#[tokio::test]
async fn a_run_held_by_quota_is_resource_exhausted_while_running_and_at_its_timeout()
-> anyhow::Result<()> {
    let env = Env::new("wfe-quota", |_| {}).await?;
    let target = "default/deployment/over-quota";
    let mut held = wfe("held", "diagnose", target, Scenario::Quota, json!({}));
    held.spec.execution_config = Some(Box::new(ExecutionConfig {
        timeout: Some("6s".to_string()),
        service_account_name: None,
    }));
    env.wfes()
        .create(&kube::api::PostParams::default(), &held)
        .await?;
    let running = env
        .wait_for("held", "Running and reporting the quota", |w| {
            w.phase() == Some(Phase::Running)
                && w.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.reason == FailureReason::ResourceExhausted.as_str())
                })
        })
        .await?;
    assert_eq!(running.phase(), Some(Phase::Running));

    let failed = env.wait_phase("held", Phase::Failed).await?;
    let status = status_of(&failed);
    let details = status.failure_details.clone().expect("failureDetails");
    let context = format!("{details:#?}");
    assert_eq!(
        details.reason,
        FailureReason::ResourceExhausted,
        "{context}"
    );
    assert!(
        !details.was_execution_failure,
        "no pod was created: {context}"
    );
    assert_eq!(details.exit_code, None, "{context}");
    assert_eq!(status.consecutive_failures, Some(1), "{context}");
    Ok(())
}

#[tokio::test]
async fn a_run_whose_second_task_cannot_pull_its_image_is_an_execution_failure()
-> anyhow::Result<()> {
    let env = Env::new("wfe-pull2", |_| {}).await?;
    let target = "default/deployment/scaled-to-zero";
    env.create(
        "pull-second",
        "scale-down",
        target,
        Scenario::SecondTaskImagePull,
    )
    .await?;
    let failed = env.wait_phase("pull-second", Phase::Failed).await?;
    let status = status_of(&failed);
    let details = status.failure_details.clone().expect("failureDetails");
    let context = format!("{details:#?}");
    assert_eq!(details.reason, FailureReason::ImagePullBackOff, "{context}");
    assert!(
        details.was_execution_failure,
        "the first task ran: {context}"
    );
    let run = pipeline_run_name(target);
    assert_eq!(
        details.failed_task_name,
        Some(format!("{run}-verify")),
        "{context}"
    );
    assert_eq!(details.failed_task_index, Some(1), "{context}");
    assert_eq!(details.failed_step_name.as_deref(), Some("check"));
    assert_eq!(
        details.exit_code, None,
        "Tekton's rewritten exit code 1 is not the step's"
    );
    let summary = &details.natural_language_summary;
    assert!(summary.contains("may have been changed"), "{summary}");
    assert!(!summary.contains("did not change"), "{summary}");
    // Execution failures do not count towards the pre-execution backoff.
    assert_eq!(status.consecutive_failures, None);
    assert_eq!(status.next_allowed_execution, None);

    // The target is blocked: a next workflow on it is not run.
    assert_blocked(&env, "after-pull-second", target).await?;
    Ok(())
}

#[tokio::test]
async fn a_first_task_image_pull_failure_is_pre_execution_without_an_exit_code()
-> anyhow::Result<()> {
    let env = Env::new("wfe-pull1", |_| {}).await?;
    let target = "default/deployment/never-pulled";
    env.create("pull-first", "scale-down", target, Scenario::ImagePull)
        .await?;
    let failed = env.wait_phase("pull-first", Phase::Failed).await?;
    let status = status_of(&failed);
    let details = status.failure_details.clone().expect("failureDetails");
    let context = format!("{details:#?}");
    assert_eq!(details.reason, FailureReason::ImagePullBackOff, "{context}");
    assert!(!details.was_execution_failure, "no step ran: {context}");
    assert_eq!(details.failed_task_index, Some(0), "{context}");
    assert_eq!(details.failed_step_name.as_deref(), Some("scale"));
    assert_eq!(
        details.exit_code, None,
        "Tekton's rewritten exit code 1 is not the step's"
    );
    assert!(
        details
            .natural_language_summary
            .contains("did not change the target"),
        "{}",
        details.natural_language_summary
    );
    // A pre-execution failure counts towards the target's backoff instead of blocking it.
    assert_eq!(status.consecutive_failures, Some(1));
    assert!(status.next_allowed_execution.is_some());
    assert_eq!(
        status.pipeline_run_status.and_then(|s| s.execution_started),
        None,
        "no step was ever seen running"
    );
    Ok(())
}

#[tokio::test]
async fn a_run_deleted_during_bundle_resolution_is_not_an_execution_failure() -> anyhow::Result<()>
{
    let env = Env::new("wfe-resolve", |_| {}).await?;
    let target = "default/deployment/unresolved";
    env.create("resolving", "restart-pods", target, Scenario::Resolving)
        .await?;
    // Running: Tekton has started the run (startTime) and is still resolving the bundle.
    let run = run_of_running(&env, "resolving", "Running while resolving", |s| {
        s.reason.as_deref() == Some("ResolvingPipelineRef")
    })
    .await?;
    env.runs().delete(&run, &DeleteParams::default()).await?;

    let failed = env.wait_phase("resolving", Phase::Failed).await?;
    let status = status_of(&failed);
    let details = status.failure_details.clone().expect("failureDetails");
    assert_eq!(details.reason, FailureReason::Unknown);
    assert!(
        details.message.contains("deleted externally"),
        "{}",
        details.message
    );
    assert!(
        !details.was_execution_failure,
        "nothing of the run ran: {details:#?}"
    );
    assert!(
        details
            .natural_language_summary
            .contains("did not change the target"),
        "{}",
        details.natural_language_summary
    );
    assert_eq!(status.consecutive_failures, Some(1));
    let next_allowed = status
        .next_allowed_execution
        .expect("a pre-execution failure sets nextAllowedExecution")
        .0;

    // The target is not blocked: once the backoff has passed, a workflow runs on it.
    let wait = next_allowed.duration_since(jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait)? + Duration::from_millis(200)).await;
    }
    // (Another workflow: the same one would still be within its cooldown.)
    env.create("after-resolving", "scale-down", target, Scenario::Success)
        .await?;
    let done = env
        .wait_for("after-resolving", "terminal", |w| {
            matches!(
                w.phase(),
                Some(Phase::Completed | Phase::Failed | Phase::Skipped)
            )
        })
        .await?;
    assert_eq!(
        done.phase(),
        Some(Phase::Completed),
        "{:#?}",
        status_of(&done).skip_details
    );
    Ok(())
}

#[tokio::test]
async fn a_run_deleted_after_a_step_ran_is_an_execution_failure_even_when_its_taskruns_are_gone()
-> anyhow::Result<()> {
    let env = Env::new("wfe-ranthen", |_| {}).await?;
    let target = "default/deployment/half-done";
    env.create(
        "ran-then-deleted",
        "scale-down",
        target,
        Scenario::SecondTaskPullBackOff,
    )
    .await?;
    // The first task succeeded and the second waits for its image; the WFE has recorded that a
    // step ran.
    let run = run_of_running(&env, "ran-then-deleted", "Running with a step seen", |s| {
        s.execution_started == Some(true)
    })
    .await?;
    // The second task's TaskRun exists once the first finished (it waits for its image).
    let second = format!("{run}-verify");
    eventually("the second TaskRun exists", WAIT, || async {
        Ok(env.taskruns().get_opt(&second).await?.map(|_| ()))
    })
    .await?;
    // Garbage collection takes the TaskRuns with the run: remove them first, so only what the
    // WFE remembered can tell.
    for task in ["remediate", "verify"] {
        env.taskruns()
            .delete(&format!("{run}-{task}"), &DeleteParams::default())
            .await?;
    }
    env.runs().delete(&run, &DeleteParams::default()).await?;

    let failed = env.wait_phase("ran-then-deleted", Phase::Failed).await?;
    let details = status_of(&failed).failure_details.expect("failureDetails");
    assert_eq!(details.reason, FailureReason::Unknown);
    assert!(
        details.was_execution_failure,
        "a step had been seen running: {details:#?}"
    );
    assert!(
        details
            .natural_language_summary
            .contains("may have been changed"),
        "{}",
        details.natural_language_summary
    );
    assert_blocked(&env, "after-ran-then-deleted", target).await?;
    Ok(())
}

/// Characters that are awkward somewhere between JSON, YAML and the API server.
const AWKWARD: &[char] = &[
    '\u{0}',
    '\u{1}',
    '\u{8}',
    '\t',
    '\n',
    '\u{b}',
    '\u{c}',
    '\r',
    '\u{1b}',
    '\u{7f}',
    '\u{80}',
    '\u{85}',
    '\u{9f}',
    '\u{a0}',
    '\u{ad}',
    '\u{2028}',
    '\u{2029}',
    '\u{200b}',
    '\u{d7ff}',
    '\u{e000}',
    '\u{feff}',
    '\u{fffd}',
    '\u{fffe}',
    '\u{ffff}',
    '\u{10000}',
    '\u{1f600}',
    '\u{10ffff}',
    '"',
    '\'',
    '\\',
    ':',
    '#',
    '-',
    '?',
    '&',
    '*',
    '!',
    '|',
    '>',
    '%',
    '@',
    '`',
    '{',
    '}',
    '[',
    ']',
    ',',
    ' ',
];

/// Values that mean something to YAML, Jinja, Tekton or a shell if not quoted.
const AWKWARD_VALUES: &[&str] = &[
    "",
    " ",
    "~",
    "null",
    "Null",
    "true",
    "no",
    "yes",
    "on",
    "0x1F",
    "0o17",
    "1e3",
    ".inf",
    "-.nan",
    "2001-12-14",
    "---",
    "...",
    "%YAML 1.2",
    "- item",
    "key: value",
    "&anchor",
    "*alias",
    "!!binary",
    "|\n  block",
    "{{ config }}",
    "{% raw %}",
    "{# comment #}",
    "$(params.TARGET_RESOURCE)",
    "${HOME}",
    "\"quoted\"",
    "'single'",
    "trailing\\",
    "\u{0}",
    "\u{0}\u{0}",
    "a\u{0}b",
    "\r\n",
    "\u{85}",
    "\u{2028}",
    "\u{feff}leading bom",
    "\u{10ffff}",
];

fn random_value(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..24);
    (0..len)
        .map(|_| match rng.random_range(0..4) {
            // Any Unicode scalar value, uniformly (mostly the supplementary planes).
            0 | 1 => rng.random::<char>(),
            // ASCII, controls included.
            2 => char::from(rng.random_range(0u8..0x80)),
            _ => AWKWARD[rng.random_range(0..AWKWARD.len())],
        })
        .collect()
}

#[tokio::test]
async fn parameter_values_from_the_whole_unicode_range_survive_byte_for_byte() -> anyhow::Result<()>
{
    let env = Env::new("wfe-unicode", |_| {}).await?;
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut values: Vec<String> = AWKWARD_VALUES.iter().map(|v| v.to_string()).collect();
    values.extend(AWKWARD.iter().map(|c| c.to_string()));
    while values.len() < 400 {
        values.push(random_value(&mut rng));
    }
    // Four WFEs of 100 parameters each, on four targets.
    let mut expected = BTreeMap::new();
    for (chunk, values) in values.chunks(100).enumerate() {
        let name = format!("unicode-{chunk}");
        let parameters: BTreeMap<String, String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("P_{chunk}_{i:03}"), v.clone()))
            .collect();
        let target = format!("default/deployment/unicode-{chunk}");
        let object = wfe(
            &name,
            "echo",
            &target,
            Scenario::Hang,
            serde_json::to_value(&parameters)?,
        );
        let created = env.create_wfe(&object).await?;
        assert_eq!(
            created.spec.parameters, parameters,
            "the API server stored the WFE's values unchanged (seed {seed})"
        );
        expected.insert(name, (target, parameters));
    }
    for (name, (target, parameters)) in &expected {
        let running = env.wait_phase(name, Phase::Running).await?;
        let run_name = status_of(&running)
            .pipeline_run_ref
            .expect("pipelineRunRef")
            .name;
        let run = env.runs().get(&run_name).await?;
        let params: BTreeMap<String, String> = run.data["spec"]["params"]
            .as_array()
            .expect("spec.params")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_string(),
                    p["value"].as_str().expect("a string value").to_string(),
                )
            })
            .collect();
        let mut want = parameters.clone();
        want.insert("TARGET_RESOURCE".into(), target.clone());
        assert_eq!(params.len(), want.len(), "seed {seed}");
        for (key, value) in &want {
            let got = params.get(key).map(String::as_bytes);
            assert_eq!(
                got,
                Some(value.as_bytes()),
                "{name} parameter {key}: {value:?} arrived as {:?} (seed {seed})",
                params.get(key)
            );
        }
    }
    Ok(())
}

/// Create `object` (JSON), returning the API server's refusal if any.
async fn try_create(
    env: &Env,
    object: serde_json::Value,
) -> Result<WorkflowExecution, kube::Error> {
    let object: WorkflowExecution = serde_json::from_value(object).expect("a WorkflowExecution");
    env.wfes().create(&Default::default(), &object).await
}

fn spec_with(name: &str, spec_patch: serde_json::Value) -> serde_json::Value {
    let mut object = serde_json::to_value(wfe(
        name,
        "restart-pods",
        &format!("default/deployment/{name}"),
        Scenario::Success,
        json!({"REPLICAS": "2"}),
    ))
    .expect("json");
    json_patch_merge(&mut object["spec"], &spec_patch);
    object
}

/// RFC 7386 merge of `patch` into `target`.
fn json_patch_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    json_patch_merge(target.entry(key.clone()).or_insert(json!(null)), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

#[tokio::test]
async fn invalid_specs_are_refused_at_admission_or_fail_naming_the_field() -> anyhow::Result<()> {
    // A long cooldown keeps finished runs (the locks) in place while the test looks at them.
    let env = Env::new("wfe-invalid", |c| {
        c.cooldown.period = std::time::Duration::from_secs(60)
    })
    .await?;

    // Admission (CEL and schema): refused with 422, naming the field.
    let refused = [
        (
            "bad-target-1",
            json!({"targetResource": "nginx"}),
            "spec.targetResource",
        ),
        (
            "bad-target-2",
            json!({"targetResource": "a/b/c/d"}),
            "spec.targetResource",
        ),
        (
            "bad-target-3",
            json!({"targetResource": "default//nginx"}),
            "spec.targetResource",
        ),
        (
            "bad-target-4",
            json!({"targetResource": "/deployment/nginx"}),
            "spec.targetResource",
        ),
        (
            "bad-param-1",
            json!({"parameters": {"1REPLICAS": "2"}}),
            "spec.parameters",
        ),
        (
            "bad-param-2",
            json!({"parameters": {"has space": "2"}}),
            "spec.parameters",
        ),
        (
            "bad-param-3",
            json!({"parameters": {"ünïcode": "2"}}),
            "spec.parameters",
        ),
        (
            "bad-param-4",
            json!({"parameters": {"TARGET_RESOURCE": "x/y"}}),
            "spec.parameters",
        ),
        (
            "bad-workflow",
            json!({"workflowRef": {"workflowId": ""}}),
            "spec.workflowRef.workflowId",
        ),
        (
            "bad-confidence",
            json!({"confidence": 1.5}),
            "spec.confidence",
        ),
    ];
    for (name, patch, field) in refused {
        match try_create(&env, spec_with(name, patch.clone())).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name} {patch}: {status:?}");
                assert!(
                    status.message.contains(field),
                    "{name} {patch}: the refusal names {field}: {}",
                    status.message
                );
            }
            other => panic!("{name} {patch} was not refused: {other:?}"),
        }
    }

    // The spec is immutable once created.
    try_create(&env, spec_with("immutable", json!({}))).await?;
    let change = env
        .wfes()
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"parameters": {"REPLICAS": "20"}}})),
        )
        .await;
    match change {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec is immutable"),
                "{}",
                status.message
            );
        }
        other => panic!("a spec update was accepted: {other:?}"),
    }
    assert_eq!(
        env.wfes().get("immutable").await?.spec.parameters["REPLICAS"],
        "2"
    );
    // Metadata stays editable.
    env.wfes()
        .patch(
            "immutable",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "sre"}}})),
        )
        .await?;

    // Admitted, but invalid at runtime: Failed with ConfigurationError naming the field.
    let failing = [
        (
            "runtime-sa",
            json!({"executionConfig": {"serviceAccountName": "cluster-admin"}}),
            "spec.executionConfig.serviceAccountName",
        ),
        (
            "runtime-timeout",
            json!({"executionConfig": {"timeout": "soon"}}),
            "spec.executionConfig.timeout",
        ),
        (
            "runtime-zero-timeout",
            json!({"executionConfig": {"timeout": "0s"}}),
            "spec.executionConfig.timeout",
        ),
        (
            "runtime-image",
            json!({"workflowRef": {"containerImage": ""}}),
            "spec.workflowRef.containerImage",
        ),
    ];
    for (name, patch, _) in &failing {
        try_create(&env, spec_with(name, patch.clone())).await?;
    }
    for (name, patch, field) in &failing {
        let failed = env.wait_phase(name, Phase::Failed).await?;
        let status = status_of(&failed);
        let details = status.failure_details.expect("failureDetails");
        assert_eq!(
            details.reason,
            FailureReason::ConfigurationError,
            "{name} {patch}"
        );
        assert!(
            details.message.contains(field),
            "{name} {patch}: the message names {field}: {}",
            details.message
        );
        assert!(!details.was_execution_failure);
        assert_eq!(status.pipeline_run_ref, None, "{name}: no PipelineRun");
    }
    // None of them created a PipelineRun. (The valid WFE's run may already be gone: it completes
    // quickly and the test's cooldown is short, so the set of runs is not asserted whole.)
    let runs = env.run_names().await?;
    for (name, _, _) in &failing {
        let run = pipeline_run_name(&format!("default/deployment/{name}"));
        assert!(!runs.contains(&run), "{name} created PipelineRun {run}");
    }

    // The operator is unharmed: healthy, and a valid WFE still completes.
    env.wait_phase("immutable", Phase::Completed).await?;
    let health = reqwest::get(format!("http://{}/healthz", env.running().health_addr())).await?;
    assert!(health.status().is_success(), "{health:?}");
    let mut referenced = wfe(
        "still-fine",
        "restart-pods",
        "default/deployment/still-fine",
        Scenario::Success,
        json!({}),
    );
    referenced.spec.remediation_request_ref = Some(Box::new(ObjectReference {
        name: Some("rr-1".into()),
        ..Default::default()
    }));
    referenced.spec.execution_config = Some(Box::new(ExecutionConfig {
        timeout: Some("90s".into()),
        service_account_name: Some("kubernaut-workflow-runner".into()),
    }));
    env.create_wfe(&referenced).await?;
    let done = env.wait_phase("still-fine", Phase::Completed).await?;
    let run = env
        .runs()
        .get(
            &status_of(&done)
                .pipeline_run_ref
                .expect("pipelineRunRef")
                .name,
        )
        .await?;
    assert_eq!(run.data["spec"]["timeouts"]["pipeline"], "90s");
    assert_eq!(
        run.name_any(),
        pipeline_run_name("default/deployment/still-fine")
    );
    Ok(())
}
