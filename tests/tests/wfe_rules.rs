//! WorkflowExecution decision rules against the real control plane and the Tekton simulator:
//! cooldown, pre-execution failure backoff and its reset, the block-clearing annotation, and the
//! environment layer of the configuration.

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kubernaut_framework::config::load_with_env;
use kubernaut_framework::duration::parse_go_duration;
use kubernaut_test_harness::simulator::Scenario;
use serde_json::json;
use support::{
    Env,
    audit_receiver::{AuditReceiver, send_audit_to},
    status_of, wfe,
};
use workflowexecution_operator::{
    config::{ENV_PREFIX, OperatorConfig},
    types::{ExecutionConfig, FailureReason, Phase, SkipReason, WorkflowExecution},
};

/// A WFE that passes admission but fails the operator's runtime validation: its service account
/// is not in `execution.allowedServiceAccounts`.
fn disallowed_service_account(name: &str, workflow_id: &str, target: &str) -> WorkflowExecution {
    let mut object = wfe(name, workflow_id, target, Scenario::Success, json!({}));
    object.spec.execution_config = Some(Box::new(ExecutionConfig {
        timeout: None,
        service_account_name: Some("cluster-admin".into()),
    }));
    object
}

fn cooldown_remaining(wfe: &WorkflowExecution) -> Duration {
    let skip = status_of(wfe).skip_details.expect("skipDetails");
    let remaining = skip
        .recent_remediation
        .expect("recentRemediation")
        .cooldown_remaining
        .expect("cooldownRemaining");
    parse_go_duration(&remaining).expect("cooldownRemaining is a Go duration")
}

#[tokio::test]
async fn cooldown_skips_the_same_workflow_and_the_lock_holds_off_any_other() -> anyhow::Result<()> {
    let period = Duration::from_secs(10);
    let env = Env::new("wfe-cooldown", |c| c.cooldown.period = period).await?;
    let target = "default/deployment/cooled";
    env.create("first", "restart-pods", target, Scenario::Success)
        .await?;
    let first = env.wait_phase("first", Phase::Completed).await?;
    let run = status_of(&first)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;

    // The same workflow within the period: RecentlyRemediated, naming the previous execution.
    env.create("same-workflow", "restart-pods", target, Scenario::Success)
        .await?;
    let same = env.wait_phase("same-workflow", Phase::Skipped).await?;
    let skip = status_of(&same).skip_details.expect("skipDetails");
    assert_eq!(
        skip.reason,
        SkipReason::RecentlyRemediated,
        "{}",
        skip.message
    );
    let recent = skip.recent_remediation.clone().expect("recentRemediation");
    assert_eq!(recent.name, "first");
    assert_eq!(recent.workflow_id, "restart-pods");
    assert_eq!(recent.outcome, "Completed");
    assert_eq!(recent.target_resource, target);
    assert_eq!(
        recent.completed_at.map(|t| t.0),
        first.completion_time(),
        "completedAt is the previous execution's completionTime"
    );
    let remaining = cooldown_remaining(&same);
    assert!(
        !remaining.is_zero() && remaining <= period,
        "cooldownRemaining {remaining:?} within (0, {period:?}]"
    );

    // Another workflow is allowed by the cooldown, but the finished run still holds the lock.
    env.create("other-workflow", "scale-up", target, Scenario::Success)
        .await?;
    let other = env.wait_phase("other-workflow", Phase::Skipped).await?;
    let skip = status_of(&other).skip_details.expect("skipDetails");
    assert_eq!(skip.reason, SkipReason::ResourceBusy, "{}", skip.message);
    let conflict = skip.conflicting_workflow.expect("conflictingWorkflow");
    assert_eq!(conflict.name, "first");
    assert_eq!(conflict.workflow_id, "restart-pods");
    assert_eq!(conflict.target_resource, target);
    assert!(skip.message.contains(&run), "{}", skip.message);

    // After the period the lock is released once, and the same workflow runs again.
    env.wait_run_gone(&run).await?;
    let released = env.wait_event("first", "LockReleased").await?;
    assert!(
        released.message.as_deref().unwrap_or("").contains(&run),
        "{released:?}"
    );
    env.create("after-cooldown", "restart-pods", target, Scenario::Success)
        .await?;
    let after = env.wait_phase("after-cooldown", Phase::Completed).await?;
    assert_eq!(
        status_of(&after).pipeline_run_ref.map(|r| r.name),
        Some(run),
        "the target's lock name is stable"
    );
    let releases: Vec<_> = env
        .events_for("first")
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("LockReleased"))
        .collect();
    assert_eq!(releases.len(), 1, "{releases:?}");
    assert_eq!(releases[0].count.unwrap_or(1), 1, "{releases:?}");
    Ok(())
}

/// How a pre-execution failure's `nextAllowedExecution` is checked.
enum Expect {
    /// A validation failure: `completionTime` and `nextAllowedExecution` come from the same
    /// instant, so they are exactly `delay` apart.
    Exact,
    /// A run that failed before starting: `nextAllowedExecution` is `delay` after the moment the
    /// operator saw the failure, which lies between `created` and `observed`.
    Between {
        created: Timestamp,
        observed: Timestamp,
    },
}

fn assert_backoff(wfe: &WorkflowExecution, count: u32, delay: u64, expect: Expect) {
    let status = status_of(wfe);
    let details = status.failure_details.clone().expect("failureDetails");
    assert!(!details.was_execution_failure, "{details:?}");
    assert_eq!(status.consecutive_failures, Some(count), "{status:?}");
    let next = status
        .next_allowed_execution
        .as_ref()
        .expect("nextAllowedExecution")
        .0;
    let delay = SignedDuration::from_secs(delay as i64);
    match expect {
        Expect::Exact => {
            let completed = wfe.completion_time().expect("completionTime");
            assert_eq!(next.duration_since(completed), delay, "{status:?}");
        }
        Expect::Between { created, observed } => {
            // Status times are whole seconds (truncated).
            let earliest = (created + delay)
                .round(
                    jiff::TimestampRound::new()
                        .smallest(jiff::Unit::Second)
                        .mode(jiff::RoundMode::Trunc),
                )
                .expect("rounding");
            assert!(
                earliest <= next && next <= observed + delay,
                "nextAllowedExecution {next} not within [{earliest}, {}]",
                observed + delay
            );
        }
    }
}

/// Wait until `nextAllowedExecution` of `wfe` has passed and the target's lock is free.
async fn wait_until_allowed(env: &Env, wfe: &WorkflowExecution) -> anyhow::Result<()> {
    let next = status_of(wfe)
        .next_allowed_execution
        .expect("nextAllowedExecution")
        .0;
    support::eventually("nextAllowedExecution to pass", support::WAIT, || async {
        Ok((Timestamp::now() > next).then_some(()))
    })
    .await?;
    support::eventually("the target's lock to be free", support::WAIT, || async {
        Ok(env.run_names().await?.is_empty().then_some(()))
    })
    .await
}

#[tokio::test]
async fn pre_execution_failures_back_off_exponentially_then_exhaust_retries() -> anyhow::Result<()>
{
    // Scaled-down schedule: 1s, 2s, 4s, 8s, then capped at 10s; ExhaustedRetries after 5.
    let env = Env::new("wfe-backoff", |c| {
        c.backoff.base = Duration::from_secs(1);
        c.backoff.max = Duration::from_secs(10);
        c.backoff.max_exponent = 4;
        c.backoff.max_consecutive_failures = 5;
        // A short cooldown: failed runs release the target's lock quickly.
        c.cooldown.period = Duration::from_millis(200);
    })
    .await?;
    let target = "default/deployment/flaky";
    let workflow = "patch-config";

    // 1: the bundle cannot be resolved (the run fails before it starts).
    let created = Timestamp::now();
    env.create("fail-1", workflow, target, Scenario::CouldntGetPipeline)
        .await?;
    let fail1 = env.wait_phase("fail-1", Phase::Failed).await?;
    let details = status_of(&fail1).failure_details.expect("failureDetails");
    assert_eq!(details.reason, FailureReason::ConfigurationError);
    assert_backoff(
        &fail1,
        1,
        1,
        Expect::Between {
            created,
            observed: Timestamp::now(),
        },
    );
    wait_until_allowed(&env, &fail1).await?;

    // 2: the spec fails runtime validation.
    env.create_wfe(&disallowed_service_account("fail-2", workflow, target))
        .await?;
    let fail2 = env.wait_phase("fail-2", Phase::Failed).await?;
    let details = status_of(&fail2).failure_details.expect("failureDetails");
    assert_eq!(details.reason, FailureReason::ConfigurationError);
    assert!(
        details
            .message
            .contains("spec.executionConfig.serviceAccountName"),
        "{}",
        details.message
    );
    assert_backoff(&fail2, 2, 2, Expect::Exact);
    wait_until_allowed(&env, &fail2).await?;

    // 3
    let created = Timestamp::now();
    env.create("fail-3", workflow, target, Scenario::CouldntGetPipeline)
        .await?;
    let fail3 = env.wait_phase("fail-3", Phase::Failed).await?;
    assert_backoff(
        &fail3,
        3,
        4,
        Expect::Between {
            created,
            observed: Timestamp::now(),
        },
    );
    wait_until_allowed(&env, &fail3).await?;

    // 4, and a WFE created before nextAllowedExecution is skipped.
    env.create_wfe(&disallowed_service_account("fail-4", workflow, target))
        .await?;
    let fail4 = env.wait_phase("fail-4", Phase::Failed).await?;
    assert_backoff(&fail4, 4, 8, Expect::Exact);
    env.create("too-early", workflow, target, Scenario::Success)
        .await?;
    let early = env.wait_phase("too-early", Phase::Skipped).await?;
    let skip = status_of(&early).skip_details.expect("skipDetails");
    assert_eq!(
        skip.reason,
        SkipReason::RecentlyRemediated,
        "{}",
        skip.message
    );
    assert_eq!(
        skip.recent_remediation.as_ref().map(|r| r.name.as_str()),
        Some("fail-4")
    );
    let remaining = cooldown_remaining(&early);
    assert!(
        !remaining.is_zero() && remaining <= Duration::from_secs(8),
        "cooldownRemaining {remaining:?}"
    );
    assert!(
        env.run_names().await?.is_empty(),
        "a skipped WFE creates no PipelineRun"
    );
    wait_until_allowed(&env, &fail4).await?;

    // 5: the delay is capped at backoff.max (1s·2^4 = 16s > 10s).
    env.create_wfe(&disallowed_service_account("fail-5", workflow, target))
        .await?;
    let fail5 = env.wait_phase("fail-5", Phase::Failed).await?;
    assert_backoff(&fail5, 5, 10, Expect::Exact);

    // After 5 consecutive failures the target is skipped without waiting for the backoff.
    env.create("exhausted", workflow, target, Scenario::Success)
        .await?;
    let exhausted = env.wait_phase("exhausted", Phase::Skipped).await?;
    let skip = status_of(&exhausted).skip_details.expect("skipDetails");
    assert_eq!(
        skip.reason,
        SkipReason::ExhaustedRetries,
        "{}",
        skip.message
    );
    assert_eq!(
        skip.recent_remediation.as_ref().map(|r| r.name.as_str()),
        Some("fail-5")
    );
    assert!(skip.message.contains('5'), "{}", skip.message);
    Ok(())
}

/// Wait until `workflowexecution_consecutive_failures{target_resource=target}` is `want`
/// (`None`: no such series).
async fn gauge_value(env: &Env, target: &str, want: Option<f64>) -> anyhow::Result<()> {
    let gauge = "workflowexecution_consecutive_failures";
    let what = format!("{gauge}{{target_resource={target:?}}} to be {want:?}");
    support::eventually(&what, support::WAIT, || async {
        let scrape = env.scrape().await?;
        Ok((scrape.value(gauge, &[("target_resource", target)]) == want).then_some(()))
    })
    .await
}

#[tokio::test]
async fn a_success_resets_the_failure_counter() -> anyhow::Result<()> {
    let env = Env::new("wfe-reset", |c| {
        c.backoff.base = Duration::from_secs(1);
        c.backoff.max = Duration::from_secs(10);
        c.cooldown.period = Duration::from_millis(200);
    })
    .await?;
    let target = "default/deployment/recovering";
    let workflow = "rollback";

    env.create_wfe(&disallowed_service_account("bad-1", workflow, target))
        .await?;
    let bad1 = env.wait_phase("bad-1", Phase::Failed).await?;
    assert_backoff(&bad1, 1, 1, Expect::Exact);
    wait_until_allowed(&env, &bad1).await?;
    env.create_wfe(&disallowed_service_account("bad-2", workflow, target))
        .await?;
    let bad2 = env.wait_phase("bad-2", Phase::Failed).await?;
    assert_backoff(&bad2, 2, 2, Expect::Exact);
    // The gauge follows the status write the test just observed.
    gauge_value(&env, target, Some(2.0)).await?;
    wait_until_allowed(&env, &bad2).await?;

    env.create("good", workflow, target, Scenario::Success)
        .await?;
    let good = env.wait_phase("good", Phase::Completed).await?;
    let status = status_of(&good);
    assert_eq!(status.consecutive_failures, Some(0));
    assert_eq!(status.next_allowed_execution, None);
    // The series is removed when the count returns to 0.
    gauge_value(&env, target, None).await?;
    let run = status.pipeline_run_ref.expect("pipelineRunRef").name;
    env.wait_run_gone(&run).await?;

    // Counting starts again from the success.
    env.create_wfe(&disallowed_service_account("bad-3", workflow, target))
        .await?;
    let bad3 = env.wait_phase("bad-3", Phase::Failed).await?;
    assert_backoff(&bad3, 1, 1, Expect::Exact);
    Ok(())
}

#[tokio::test]
async fn the_clearing_annotation_lifts_previous_execution_failed() -> anyhow::Result<()> {
    let receiver = AuditReceiver::start().await?;
    let env = Env::new("wfe-clear", |c| send_audit_to(c, &receiver)).await?;
    let target = "payment/deployment/ledger";
    env.create("broke-it", "restart-pods", target, Scenario::TaskFailure)
        .await?;
    let failed = env.wait_phase("broke-it", Phase::Failed).await?;
    assert!(
        status_of(&failed)
            .failure_details
            .is_some_and(|d| d.was_execution_failure)
    );
    let run = status_of(&failed)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    env.create("blocked", "restart-pods", target, Scenario::Success)
        .await?;
    let blocked = env.wait_phase("blocked", Phase::Skipped).await?;
    assert_eq!(
        status_of(&blocked).skip_details.map(|s| s.reason),
        Some(SkipReason::PreviousExecutionFailed)
    );

    let reason = "node drained and the deployment repaired by hand";
    env.clear_block("broke-it", reason).await?;
    let cleared = env
        .wait_for("broke-it", "block cleared", |w| {
            status_of(w).block_clearance.is_some()
        })
        .await?;
    let status = status_of(&cleared);
    let clearance = status.block_clearance.clone().expect("blockClearance");
    assert_eq!(clearance.clear_reason, reason);
    assert!(Some(clearance.cleared_at.0) >= cleared.completion_time());
    assert_eq!(
        status.phase,
        Some(Phase::Failed),
        "the WFE itself stays Failed"
    );
    let event = env.wait_event("broke-it", "BlockCleared").await?;
    assert!(
        event.message.as_deref().unwrap_or("").contains(reason),
        "{event:?}"
    );
    let audit = receiver
        .wait_event("broke-it", "workflowexecution.block.cleared")
        .await?;
    assert_eq!(audit["namespace"], env.ns.as_str());
    assert_eq!(audit["event_data"]["target_resource"], target);

    // Once the cooldown has released the lock, the next WFE runs.
    env.wait_run_gone(&run).await?;
    env.create("after-repair", "restart-pods", target, Scenario::Success)
        .await?;
    env.wait_phase("after-repair", Phase::Completed).await?;
    Ok(())
}

#[tokio::test]
async fn wfe_cooldown_period_from_the_environment_takes_effect() -> anyhow::Result<()> {
    let file = tempfile::NamedTempFile::new()?;
    let env_vars = [
        ("WFE_COOLDOWN__PERIOD", "45s"),
        ("WFE_EXECUTION__DEFAULTTIMEOUT", "20m"),
        ("UNRELATED", "ignored"),
    ];
    let mut file_period = None;
    let env = Env::new("wfe-envcfg", |c| {
        // The file layer (the ConfigMap) carries the test's settings, cooldown 2s included; the
        // environment layer overrides the cooldown and the default timeout.
        file_period = Some(c.cooldown.period);
        std::fs::write(file.path(), serde_yaml::to_string(&*c).expect("yaml")).expect("write");
        *c = load_with_env(
            &OperatorConfig::default(),
            Some(file.path()),
            ENV_PREFIX,
            env_vars,
        )
        .expect("config loads");
    })
    .await?;
    assert_eq!(file_period, Some(Duration::from_secs(2)));
    assert_eq!(env.config.cooldown.period, Duration::from_secs(45));
    assert_eq!(
        env.config.execution.default_timeout,
        Duration::from_secs(1200)
    );
    assert_eq!(
        env.config.execution.namespace, env.exec_ns,
        "file layer kept"
    );

    let target = "default/statefulset/db";
    env.create("first", "compact", target, Scenario::Success)
        .await?;
    let first = env.wait_phase("first", Phase::Completed).await?;
    let run = env
        .runs()
        .get(
            &status_of(&first)
                .pipeline_run_ref
                .expect("pipelineRunRef")
                .name,
        )
        .await?;
    assert_eq!(run.data["spec"]["timeouts"]["pipeline"], "20m0s");

    env.create("second", "compact", target, Scenario::Success)
        .await?;
    let second = env.wait_phase("second", Phase::Skipped).await?;
    let skip = status_of(&second).skip_details.expect("skipDetails");
    assert_eq!(skip.reason, SkipReason::RecentlyRemediated);
    assert!(skip.message.contains("cooldown of 45s"), "{}", skip.message);
    let remaining = cooldown_remaining(&second);
    assert!(
        remaining > Duration::from_secs(30) && remaining <= Duration::from_secs(45),
        "cooldownRemaining {remaining:?} comes from the 45s period"
    );

    // An invalid value is refused, naming the key.
    let err = load_with_env(
        &OperatorConfig::default(),
        None,
        ENV_PREFIX,
        [("WFE_COOLDOWN__PERIOD", "soon")],
    )
    .expect_err("an invalid duration is refused");
    assert!(err.to_string().contains("cooldown.period"), "{err}");
    Ok(())
}
