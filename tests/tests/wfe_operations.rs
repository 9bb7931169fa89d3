//! Operating the WorkflowExecution operator against the real control plane and the Tekton
//! simulator: deletion, restarts, audit over HTTP and HTTPS, metrics, and template hot reload.

mod support;

use std::{collections::BTreeMap, path::Path, time::Duration};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams},
};
use kubernaut_test_harness::simulator::Scenario;
use serde_json::{Value, json};
use support::{
    Env,
    audit_receiver::{AuditReceiver, send_audit_to, unreachable_url},
    eventually, status_of, wfe,
};
use workflowexecution_operator::{
    config::AuditSink,
    metrics::DURATION_BUCKETS,
    pipelinerun::{ANNOTATION_TEMPLATE_REVISION, LABEL_WORKFLOW_EXECUTION, pipeline_run_name},
    testing,
    types::{ExecutionConfig, FailureReason, Phase, SkipReason, WorkflowExecution},
};

/// A WFE that passes admission but fails runtime validation (service account not allowed).
fn disallowed_service_account(name: &str, workflow_id: &str, target: &str) -> WorkflowExecution {
    let mut object = wfe(name, workflow_id, target, Scenario::Success, json!({}));
    object.spec.execution_config = Some(Box::new(ExecutionConfig {
        timeout: None,
        service_account_name: Some("cluster-admin".into()),
    }));
    object
}

/// Finish the PipelineRun `name` the way Tekton reports a success.
async fn finish_run(env: &Env, name: &str) -> anyhow::Result<()> {
    let now = Timestamp::now().to_string();
    env.runs()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "completionTime": now,
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded",
                                "message": "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0",
                                "lastTransitionTime": now}],
            }})),
        )
        .await?;
    Ok(())
}

/// The PipelineRuns in the execution namespace: name → uid.
async fn run_uids(env: &Env) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(env
        .runs()
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|r| (r.name_any(), r.uid().unwrap_or_default()))
        .collect())
}

#[tokio::test]
async fn deleting_a_running_wfe_cancels_then_deletes_its_run() -> anyhow::Result<()> {
    let env = Env::new("wfe-delete", |_| {}).await?;
    env.create("doomed", "drain-node", "node/worker-node-1", Scenario::Hang)
        .await?;
    let running = env.wait_phase("doomed", Phase::Running).await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    assert_eq!(run, "wfe-ac45b7d6911e97a5");

    // Watch the run from now on, then delete the WFE.
    let version = env
        .runs()
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watch = env
        .runs()
        .watch(&WatchParams::default(), &version)
        .await?
        .boxed();
    env.wfes()
        .delete("doomed", &DeleteParams::default())
        .await?;

    // The value the shipped cancel file (tekton/cancel.yaml) sets.
    let cancel_value =
        testing::load_cancel_spec(&support::templates_dir())?.patch(None)["spec"]["status"].clone();
    let mut cancelled_first = false;
    let seen = tokio::time::timeout(support::WAIT, async {
        while let Some(event) = watch.try_next().await? {
            match event {
                WatchEvent::Modified(r) if r.name_any() == run => {
                    cancelled_first |= r.data["spec"]["status"] == cancel_value;
                }
                WatchEvent::Deleted(r) if r.name_any() == run => {
                    return anyhow::Ok(r);
                }
                WatchEvent::Error(e) => anyhow::bail!("watch error: {e:?}"),
                _ => {}
            }
        }
        anyhow::bail!("the watch ended before the run was deleted")
    })
    .await??;
    assert!(
        cancelled_first,
        "the run was set to spec.status: {cancel_value} before it was deleted"
    );
    assert_eq!(seen.data["spec"]["status"], cancel_value);
    // Deleted only once Tekton (here the simulator) had finished it.
    assert_eq!(
        seen.data["status"]["conditions"][0]["status"], "False",
        "{}",
        seen.data["status"]
    );
    env.wait_gone("doomed").await?;
    assert!(env.runs().get_opt(&run).await?.is_none());
    env.wait_event("doomed", "WorkflowExecutionDeleted").await?;
    Ok(())
}

#[tokio::test]
async fn wfes_that_never_ran_never_touch_the_runners_pipelinerun() -> anyhow::Result<()> {
    let period = Duration::from_secs(2);
    let env = Env::new("wfe-notmine", |c| c.cooldown.period = period).await?;
    let target = "default/deployment/shared";
    env.create("runner", "restart-pods", target, Scenario::Hang)
        .await?;
    let runner = env.wait_phase("runner", Phase::Running).await?;
    let run = status_of(&runner)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    let uid = env.runs().get(&run).await?.uid();

    env.create("bystander", "restart-pods", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("bystander", Phase::Skipped).await?;
    assert_eq!(
        status_of(&skipped).skip_details.map(|s| s.reason),
        Some(SkipReason::ResourceBusy)
    );
    env.create_wfe(&disallowed_service_account(
        "invalid",
        "restart-pods",
        target,
    ))
    .await?;
    let invalid = env.wait_phase("invalid", Phase::Failed).await?;
    assert_eq!(
        status_of(&invalid).failure_details.map(|d| d.reason),
        Some(FailureReason::ConfigurationError)
    );

    // Both are terminal: their cooldown ends after `period`, when a WFE releases its lock. Nothing
    // observable happens if they correctly leave the run alone, so wait out the period.
    tokio::time::sleep(period + Duration::from_secs(2)).await;
    let untouched = |stage: &str, current: Option<kube::api::DynamicObject>| {
        let current = current.unwrap_or_else(|| panic!("{stage}: the runner's run was deleted"));
        assert_eq!(current.uid(), uid, "{stage}: the run was replaced");
        assert!(
            current.data["spec"]["status"].is_null(),
            "{stage}: the run was cancelled"
        );
        assert_eq!(current.labels()[LABEL_WORKFLOW_EXECUTION], "runner");
    };
    untouched("after the cooldown", env.runs().get_opt(&run).await?);

    for name in ["bystander", "invalid"] {
        env.wfes().delete(name, &DeleteParams::default()).await?;
        env.wait_gone(name).await?;
    }
    untouched("after deleting both", env.runs().get_opt(&run).await?);
    assert_eq!(
        env.wfes().get("runner").await?.phase(),
        Some(Phase::Running)
    );

    // The owner's deletion does remove it.
    env.wfes()
        .delete("runner", &DeleteParams::default())
        .await?;
    env.wait_run_gone(&run).await?;
    env.wait_gone("runner").await?;
    Ok(())
}

#[tokio::test]
async fn a_restarted_operator_picks_up_every_phase_without_duplicate_runs() -> anyhow::Result<()> {
    // A long cooldown keeps every run (lock) in place, so duplicates would be visible.
    let mut env = Env::new("wfe-restart", |c| {
        c.cooldown.period = Duration::from_secs(120)
    })
    .await?;
    let t = |name: &str| format!("default/deployment/{name}");
    env.create("done", "restart-pods", &t("done"), Scenario::Success)
        .await?;
    env.create(
        "failed",
        "restart-pods",
        &t("failed"),
        Scenario::TaskFailure,
    )
    .await?;
    env.create("offline", "restart-pods", &t("offline"), Scenario::Hang)
        .await?;
    env.create("running", "restart-pods", &t("running"), Scenario::Hang)
        .await?;
    let done = env.wait_phase("done", Phase::Completed).await?;
    let failed = env.wait_phase("failed", Phase::Failed).await?;
    env.wait_phase("offline", Phase::Running).await?;
    env.wait_phase("running", Phase::Running).await?;
    env.create("skipped", "restart-pods", &t("running"), Scenario::Success)
        .await?;
    let skipped = env.wait_phase("skipped", Phase::Skipped).await?;
    let runs_before = run_uids(&env).await?;
    assert_eq!(runs_before.len(), 4, "{runs_before:?}");

    env.stop_operator().await?;
    // While the operator is down: Tekton finishes one run, and two WFEs arrive.
    finish_run(&env, &pipeline_run_name(&t("offline"))).await?;
    env.create("pending-new", "restart-pods", &t("new"), Scenario::Success)
        .await?;
    env.create("pending-busy", "scale-up", &t("running"), Scenario::Success)
        .await?;
    assert_eq!(env.wfes().get("pending-new").await?.phase(), None);

    env.start_operator().await?;
    env.wait_phase("offline", Phase::Completed).await?;
    env.wait_phase("pending-new", Phase::Completed).await?;
    let busy = env.wait_phase("pending-busy", Phase::Skipped).await?;
    let skip = status_of(&busy).skip_details.expect("skipDetails");
    assert_eq!(skip.reason, SkipReason::ResourceBusy);
    assert_eq!(
        skip.conflicting_workflow.map(|c| c.name),
        Some("running".into())
    );

    // Finished WFEs are left as they were; the running one keeps its run.
    for before in [&done, &failed, &skipped] {
        let after = env.wfes().get(&before.name_any()).await?;
        assert_eq!(after.phase(), before.phase(), "{}", before.name_any());
        assert_eq!(
            after.completion_time(),
            before.completion_time(),
            "{}",
            before.name_any()
        );
        assert_eq!(
            status_of(&after).failure_details,
            status_of(before).failure_details
        );
        assert_eq!(
            status_of(&after).skip_details,
            status_of(before).skip_details
        );
    }
    assert_eq!(
        env.wfes().get("running").await?.phase(),
        Some(Phase::Running)
    );
    let runs_after = run_uids(&env).await?;
    for (name, uid) in &runs_before {
        assert_eq!(
            runs_after.get(name),
            Some(uid),
            "{name} kept, not re-created"
        );
    }
    assert_eq!(runs_after.len(), 5, "one new run only: {runs_after:?}");
    assert!(runs_after.contains_key(&pipeline_run_name(&t("new"))));
    let scrape = env.scrape().await?;
    assert_eq!(
        scrape.value("workflowexecution_pipelinerun_creation_total", &[]),
        Some(1.0),
        "the restarted operator created exactly one PipelineRun"
    );

    // The run that is still going finishes after the restart.
    finish_run(&env, &pipeline_run_name(&t("running"))).await?;
    env.wait_phase("running", Phase::Completed).await?;
    Ok(())
}

/// Check the envelope fields every audit event carries.
fn assert_envelope(event: &Value, ns: &str, name: &str, action: &str, outcome: &str) {
    let object = event.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "actor_id",
            "actor_type",
            "correlation_id",
            "event_action",
            "event_category",
            "event_data",
            "event_timestamp",
            "event_type",
            "namespace",
            "outcome",
            "resource_id",
            "resource_type",
        ],
        "{event}"
    );
    assert_eq!(
        event["event_type"],
        format!("workflowexecution.workflow.{action}"),
        "{event}"
    );
    assert_eq!(event["event_action"], action, "{event}");
    assert_eq!(event["outcome"], outcome, "{event}");
    assert_eq!(event["event_category"], "workflow", "{event}");
    assert_eq!(event["actor_type"], "service", "{event}");
    assert_eq!(event["actor_id"], "workflowexecution-controller", "{event}");
    assert_eq!(event["resource_type"], "WorkflowExecution", "{event}");
    assert_eq!(event["resource_id"], name, "{event}");
    assert_eq!(event["namespace"], ns, "{event}");
    // RFC 3339, UTC, milliseconds: 2025-03-01T12:00:00.250Z
    let timestamp = event["event_timestamp"].as_str().expect("event_timestamp");
    assert!(
        timestamp.len() == 24
            && timestamp.ends_with('Z')
            && timestamp.as_bytes()[19] == b'.'
            && timestamp.parse::<Timestamp>().is_ok(),
        "{timestamp}"
    );
    let data = &event["event_data"];
    assert_eq!(data["execution_name"], name, "{event}");
    for field in ["workflow_id", "target_resource", "phase", "container_image"] {
        assert!(data[field].is_string(), "event_data.{field}: {event}");
    }
}

#[tokio::test]
async fn audit_events_reach_data_storage_over_http() -> anyhow::Result<()> {
    let receiver = AuditReceiver::start().await?;
    let env = Env::new("wfe-audit", |c| send_audit_to(c, &receiver)).await?;
    let mut ok = wfe(
        "audited-ok",
        "restart-pods",
        "default/deployment/audited",
        Scenario::Success,
        json!({}),
    );
    ok.spec.remediation_request_ref = Some(Box::new(ObjectReference {
        name: Some("rr-2024-001".into()),
        ..Default::default()
    }));
    env.create_wfe(&ok).await?;
    env.create(
        "audited-fail",
        "scale-up",
        "default/deployment/audited-fail",
        Scenario::TaskFailure,
    )
    .await?;
    let completed = env.wait_phase("audited-ok", Phase::Completed).await?;
    let failed = env.wait_phase("audited-fail", Phase::Failed).await?;
    env.create(
        "audited-skip",
        "scale-up",
        "default/deployment/audited-fail",
        Scenario::Success,
    )
    .await?;
    let skipped = env.wait_phase("audited-skip", Phase::Skipped).await?;

    let ns = env.ns.as_str();
    let started = receiver
        .wait_event("audited-ok", "workflowexecution.workflow.started")
        .await?;
    assert_envelope(&started, ns, "audited-ok", "started", "pending");
    assert_eq!(started["correlation_id"], "rr-2024-001");
    let data = &started["event_data"];
    assert_eq!(data["phase"], "Running");
    assert_eq!(data["workflow_id"], "restart-pods");
    assert_eq!(data["target_resource"], "default/deployment/audited");
    assert_eq!(data["container_image"], Scenario::Success.bundle());
    assert_eq!(
        data["pipelinerun_name"],
        pipeline_run_name("default/deployment/audited")
    );
    assert!(data["started_at"].is_string(), "{started}");

    let done = receiver
        .wait_event("audited-ok", "workflowexecution.workflow.completed")
        .await?;
    assert_envelope(&done, ns, "audited-ok", "completed", "success");
    assert_eq!(done["correlation_id"], "rr-2024-001");
    let status = status_of(&completed);
    let data = &done["event_data"];
    assert_eq!(data["phase"], "Completed");
    assert_eq!(
        data["duration"],
        status.duration.clone().unwrap_or_default()
    );
    // The status keeps whole seconds; the audit record may carry the run's fractions.
    let audited_completion = data["completed_at"]
        .as_str()
        .and_then(|t| t.parse::<Timestamp>().ok())
        .map(|t| t.as_second());
    assert_eq!(
        audited_completion,
        completed.completion_time().map(|t| t.as_second())
    );
    assert!(data["started_at"].is_string() && data["pipelinerun_name"].is_string());

    let fail = receiver
        .wait_event("audited-fail", "workflowexecution.workflow.failed")
        .await?;
    assert_envelope(&fail, ns, "audited-fail", "failed", "failure");
    assert_eq!(
        fail["correlation_id"], "audited-fail",
        "defaults to the name"
    );
    let details = status_of(&failed).failure_details.expect("failureDetails");
    let data = &fail["event_data"];
    assert_eq!(data["phase"], "Failed");
    assert_eq!(data["failure_reason"], "TaskFailed");
    assert_eq!(data["failure_message"], details.message.as_str());
    assert_eq!(
        data["failed_task_name"],
        details.failed_task_name.clone().unwrap_or_default()
    );
    for field in ["started_at", "completed_at", "duration", "pipelinerun_name"] {
        assert!(data[field].is_string(), "event_data.{field}: {fail}");
    }
    receiver
        .wait_event("audited-fail", "workflowexecution.workflow.started")
        .await?;

    let skip = receiver
        .wait_event("audited-skip", "workflowexecution.workflow.skipped")
        .await?;
    assert_envelope(&skip, ns, "audited-skip", "skipped", "skipped");
    let details = status_of(&skipped).skip_details.expect("skipDetails");
    assert_eq!(skip["event_data"]["phase"], "Skipped");
    assert_eq!(skip["event_data"]["skip_reason"], "PreviousExecutionFailed");
    assert_eq!(skip["event_data"]["skip_message"], details.message.as_str());

    assert!(
        receiver.bad_requests().is_empty(),
        "{:?}",
        receiver.bad_requests()
    );
    // What Data Storage accepted is counted as written (the count follows the answer).
    let received = receiver.events().len() as f64;
    eventually(
        "accepted audit events to be counted",
        support::WAIT,
        || async {
            let scrape = env.scrape().await?;
            let written = scrape.count("workflowexecution_audit_events_written_total", &[]);
            Ok((written >= received).then_some(()))
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn audit_reaches_data_storage_over_https_with_the_current_projected_token()
-> anyhow::Result<()> {
    const STARTED: &str = "workflowexecution.workflow.started";
    let dir = tempfile::tempdir()?;
    let receiver = AuditReceiver::start_https(dir.path()).await?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-before-rotation\n")?;
    let env = Env::new("wfe-audittls", |c| {
        send_audit_to(c, &receiver);
        c.audit.ca_file = receiver.ca_file();
        c.audit.token_file = Some(token_file.clone());
    })
    .await?;
    env.create(
        "tls-first",
        "restart-pods",
        "default/deployment/tls-first",
        Scenario::Success,
    )
    .await?;
    receiver.wait_event("tls-first", STARTED).await?;
    // The kubelet rotates the projected token: the new file replaces the old one atomically.
    let next = dir.path().join("token.next");
    std::fs::write(&next, "token-after-rotation\n")?;
    std::fs::rename(&next, &token_file)?;
    env.create(
        "tls-second",
        "restart-pods",
        "default/deployment/tls-second",
        Scenario::Success,
    )
    .await?;
    receiver.wait_event("tls-second", STARTED).await?;
    assert_eq!(
        receiver.authorization_of("tls-first", STARTED),
        Some(Some("Bearer token-before-rotation".to_owned()))
    );
    assert_eq!(
        receiver.authorization_of("tls-second", STARTED),
        Some(Some("Bearer token-after-rotation".to_owned()))
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_audit_receiver_does_not_hold_up_reconciling() -> anyhow::Result<()> {
    let url = unreachable_url().await?;
    let env = Env::new("wfe-auditdown", |c| {
        c.audit.sink = AuditSink::Http;
        c.audit.url = url;
        c.audit.flush_interval = Duration::from_millis(100);
    })
    .await?;
    env.create(
        "unaudited",
        "restart-pods",
        "default/deployment/quiet",
        Scenario::Success,
    )
    .await?;
    env.create(
        "unaudited-fail",
        "restart-pods",
        "default/deployment/quiet-fail",
        Scenario::TaskFailure,
    )
    .await?;
    env.wait_phase("unaudited", Phase::Completed).await?;
    env.wait_phase("unaudited-fail", Phase::Failed).await?;

    let scrape = eventually(
        "failed audit batches to be counted",
        support::WAIT,
        || async {
            let scrape = env.scrape().await?;
            let failed = scrape.count("workflowexecution_audit_batches_failed_total", &[]);
            let dropped = scrape.count(
                "workflowexecution_audit_events_dropped_total",
                &[("reason", "undeliverable")],
            );
            Ok((failed >= 1.0 && dropped >= 1.0).then_some(scrape))
        },
    )
    .await?;
    assert_eq!(
        scrape.count("workflowexecution_audit_events_written_total", &[]),
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn metrics_count_a_scripted_scenario() -> anyhow::Result<()> {
    let env = Env::new("wfe-metrics", |c| {
        c.cooldown.period = Duration::from_secs(60);
        c.backoff.max_consecutive_failures = 1;
    })
    .await?;
    let t = |name: &str| format!("default/deployment/{name}");

    env.create("ok", "restart-pods", &t("a"), Scenario::Success)
        .await?;
    env.create("fails", "restart-pods", &t("b"), Scenario::TaskFailure)
        .await?;
    env.create("holds", "restart-pods", &t("c"), Scenario::Hang)
        .await?;
    env.create_wfe(&disallowed_service_account(
        "invalid",
        "restart-pods",
        &t("d"),
    ))
    .await?;
    env.wait_phase("ok", Phase::Completed).await?;
    env.wait_phase("fails", Phase::Failed).await?;
    env.wait_phase("holds", Phase::Running).await?;
    env.wait_phase("invalid", Phase::Failed).await?;

    let skips = [
        ("cooling", t("a"), SkipReason::RecentlyRemediated),
        ("blocked", t("b"), SkipReason::PreviousExecutionFailed),
        ("busy", t("c"), SkipReason::ResourceBusy),
        ("exhausted", t("d"), SkipReason::ExhaustedRetries),
    ];
    for (name, target, _) in &skips {
        env.create(name, "restart-pods", target, Scenario::Success)
            .await?;
    }
    for (name, _, reason) in &skips {
        let skipped = env.wait_phase(name, Phase::Skipped).await?;
        assert_eq!(
            status_of(&skipped).skip_details.map(|s| s.reason),
            Some(*reason),
            "{name}"
        );
    }

    // Counters move just after the status write the test observes, and audit records after the
    // Event is published: wait until the last of them arrived. Every audited step is written by
    // the log sink once: 3 started, 1 completed, 2 failed, 4 skipped.
    let m = eventually("the counters to settle", support::WAIT, || async {
        let m = env.scrape().await?;
        let settled = m.count("workflowexecution_total", &[("outcome", "Skipped")]) >= 4.0
            && m.count("workflowexecution_audit_events_written_total", &[]) >= 10.0;
        Ok(settled.then_some(m))
    })
    .await?;
    let outcome = |o: &str| m.count("workflowexecution_total", &[("outcome", o)]);
    assert_eq!(
        (outcome("Completed"), outcome("Failed"), outcome("Skipped")),
        (1.0, 2.0, 4.0),
        "{}",
        m.text
    );
    assert_eq!(
        m.value("workflowexecution_pipelinerun_creation_total", &[]),
        Some(3.0)
    );
    for (_, _, reason) in &skips {
        assert_eq!(
            m.value(
                "workflowexecution_skip_total",
                &[("reason", reason.as_str())]
            ),
            Some(1.0),
            "{reason:?}"
        );
    }
    assert_eq!(
        m.value(
            "workflowexecution_backoff_skip_total",
            &[("reason", "PreviousExecutionFailed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.value(
            "workflowexecution_backoff_skip_total",
            &[("reason", "ExhaustedRetries")]
        ),
        Some(1.0)
    );
    assert_eq!(m.series("workflowexecution_backoff_skip_total").len(), 2);
    let gauges = m.series("workflowexecution_consecutive_failures");
    assert_eq!(gauges.len(), 1, "{gauges:?}");
    assert_eq!(
        m.value(
            "workflowexecution_consecutive_failures",
            &[("target_resource", t("d").as_str())]
        ),
        Some(1.0)
    );
    // Durations: the completed run and the failed run (the invalid WFE never ran).
    for outcome in ["Completed", "Failed"] {
        assert_eq!(
            m.value(
                "workflowexecution_duration_seconds_count",
                &[("outcome", outcome)]
            ),
            Some(1.0),
            "{outcome}"
        );
        let bounds: Vec<String> = m
            .series("workflowexecution_duration_seconds_bucket")
            .iter()
            .filter(|s| s.labels["outcome"] == outcome)
            .map(|s| s.labels["le"].clone())
            .collect();
        let mut want: Vec<String> = DURATION_BUCKETS.iter().map(|b| b.to_string()).collect();
        want.push("+Inf".into());
        assert_eq!(bounds, want, "{outcome}");
        // The simulated runs take well under 5 seconds.
        assert_eq!(
            m.value(
                "workflowexecution_duration_seconds_bucket",
                &[("outcome", outcome), ("le", "5")]
            ),
            Some(1.0),
            "{outcome}"
        );
    }
    assert_eq!(
        m.value("workflowexecution_audit_events_written_total", &[]),
        Some(10.0)
    );
    // The framework's reconcile metrics are served alongside.
    assert!(m.count("framework_reconciles_total", &[("result", "success")]) >= 8.0);
    assert!(m.has_family("framework_reconcile_duration_seconds"));
    assert_eq!(m.value("framework_leader", &[]), Some(1.0));
    assert!(m.has_family("framework_template_reloads_total"));
    Ok(())
}

/// Copy the directory tree `from` into `to`.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Replace `file` with `content` atomically, so a poll never sees half a file.
fn write_atomically(scratch: &Path, file: &Path, content: &str) -> std::io::Result<()> {
    let staged = scratch.join("staged");
    std::fs::write(&staged, content)?;
    std::fs::rename(staged, file)
}

#[tokio::test]
async fn template_edits_apply_to_the_next_pipelinerun_and_broken_edits_are_ignored()
-> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("templates");
    copy_tree(&support::templates_dir(), &dir)?;
    let template = dir.join("tekton/pipelinerun.yaml.j2");
    let env = Env::new("wfe-reload", |c| {
        c.templates.dir = dir.clone();
        c.templates.poll_interval = Duration::from_millis(200);
    })
    .await?;
    let revision_of =
        |run: &kube::api::DynamicObject| run.annotations()[ANNOTATION_TEMPLATE_REVISION].clone();
    let label = "kubernaut.ai/reload-check";
    let reloads = |outcome: &'static str| {
        let env = &env;
        move || async move {
            let scrape = env.scrape().await?;
            Ok(
                (scrape.count("framework_template_reloads_total", &[("outcome", outcome)]) >= 1.0)
                    .then_some(()),
            )
        }
    };

    env.create(
        "before",
        "restart-pods",
        "default/deployment/r1",
        Scenario::Hang,
    )
    .await?;
    env.wait_phase("before", Phase::Running).await?;
    let first = env
        .runs()
        .get(&pipeline_run_name("default/deployment/r1"))
        .await?;
    let original = revision_of(&first);
    assert!(!first.labels().contains_key(label));

    // A good edit: the next PipelineRun carries it and a new revision.
    let source = std::fs::read_to_string(&template)?;
    let anchor = "    app.kubernetes.io/part-of: kubernaut\n";
    assert!(source.contains(anchor), "the template has changed shape");
    let edited = source.replace(anchor, &format!("{anchor}    {label}: edited\n"));
    write_atomically(scratch.path(), &template, &edited)?;
    eventually(
        "the edited template to load",
        support::WAIT,
        reloads("loaded"),
    )
    .await?;
    env.create(
        "after",
        "restart-pods",
        "default/deployment/r2",
        Scenario::Hang,
    )
    .await?;
    let after = env.wait_phase("after", Phase::Running).await?;
    let second = env
        .runs()
        .get(&pipeline_run_name("default/deployment/r2"))
        .await?;
    let edited_revision = revision_of(&second);
    assert_eq!(
        second.labels().get(label).map(String::as_str),
        Some("edited")
    );
    assert_ne!(edited_revision, original);
    assert_eq!(
        status_of(&after).template_revision.as_deref(),
        Some(edited_revision.as_str())
    );

    // A broken edit is rejected; the last good template keeps serving.
    write_atomically(
        scratch.path(),
        &template,
        &edited.replace(
            "{{ wfe.spec.targetResource }}",
            "{{ wfe.spec.targetResource",
        ),
    )?;
    eventually(
        "the broken template to be rejected",
        support::WAIT,
        reloads("rejected"),
    )
    .await?;
    env.create(
        "broken",
        "restart-pods",
        "default/deployment/r3",
        Scenario::Hang,
    )
    .await?;
    let broken = env.wait_phase("broken", Phase::Running).await?;
    let third = env
        .runs()
        .get(&pipeline_run_name("default/deployment/r3"))
        .await?;
    assert_eq!(revision_of(&third), edited_revision);
    assert_eq!(
        third.labels().get(label).map(String::as_str),
        Some("edited")
    );
    assert_eq!(
        status_of(&broken).template_revision.as_deref(),
        Some(edited_revision.as_str())
    );
    // The run created before the edit is left as it was.
    let first = env
        .runs()
        .get(&pipeline_run_name("default/deployment/r1"))
        .await?;
    assert_eq!(revision_of(&first), original);
    Ok(())
}
