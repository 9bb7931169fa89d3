//! WorkflowExecution lifecycle against the real control plane and the Tekton simulator.

mod support;

use kube::{ResourceExt, api::PostParams};
use kubernaut_test_harness::simulator::Scenario;
use serde_json::json;
use support::{Env, wfe};
use workflowexecution_operator::types::{FailureReason, Phase, SkipReason};

#[tokio::test]
async fn one_wfe_runs_to_completion_through_its_pipelinerun() -> anyhow::Result<()> {
    let env = Env::new("wfe-happy", |_| {}).await?;
    let params = json!({"REPLICAS": "3", "NOTE": "restart: \"now\"\n  injected: true"});
    let object = wfe(
        "restart-nginx",
        "restart-deployment",
        "default/deployment/nginx",
        Scenario::Success,
        params,
    );
    env.wfes().create(&PostParams::default(), &object).await?;

    let running = env.wait_phase("restart-nginx", Phase::Running).await?;
    let status = running.status.clone().unwrap_or_default();
    let run_ref = status.pipeline_run_ref.clone().expect("pipelineRunRef");
    assert_eq!(run_ref.name, "wfe-f3457dcc8fbcb6d9");
    assert_eq!(run_ref.namespace, env.exec_ns);
    assert!(
        running
            .finalizers()
            .iter()
            .any(|f| f == "kubernaut.ai/workflowexecution-cleanup")
    );
    assert!(status.start_time.is_some());
    assert!(
        status
            .template_revision
            .as_deref()
            .is_some_and(|r| !r.is_empty())
    );

    let run = env.runs().get("wfe-f3457dcc8fbcb6d9").await?;
    let labels = run.labels();
    assert_eq!(labels["kubernaut.ai/workflow-execution"], "restart-nginx");
    assert_eq!(labels["kubernaut.ai/source-namespace"], env.ns);
    assert_eq!(labels["kubernaut.ai/workflow-id"], "restart-deployment");
    assert_eq!(
        labels["kubernaut.ai/target-resource"],
        "default__deployment__nginx"
    );
    assert_eq!(
        run.annotations()["kubernaut.ai/target-resource"],
        "default/deployment/nginx"
    );
    assert_eq!(
        run.annotations()["kubernaut.ai/template-revision"],
        status.template_revision.clone().unwrap_or_default()
    );
    assert!(
        run.metadata.owner_references.is_none(),
        "no ownerReferences across namespaces"
    );
    let spec = &run.data["spec"];
    assert_eq!(spec["pipelineRef"]["resolver"], "bundles");
    assert_eq!(
        spec["pipelineRef"]["params"],
        json!([
            {"name": "bundle", "value": Scenario::Success.bundle()},
            {"name": "name", "value": "workflow"},
            {"name": "kind", "value": "pipeline"}
        ])
    );
    assert_eq!(
        spec["params"],
        json!([
            {"name": "NOTE", "value": "restart: \"now\"\n  injected: true"},
            {"name": "REPLICAS", "value": "3"},
            {"name": "TARGET_RESOURCE", "value": "default/deployment/nginx"}
        ])
    );
    assert_eq!(
        spec["taskRunTemplate"]["serviceAccountName"],
        "kubernaut-workflow-runner"
    );
    assert_eq!(spec["timeouts"]["pipeline"], "1h0m0s");

    let done = env.wait_phase("restart-nginx", Phase::Completed).await?;
    let status = done.status.unwrap_or_default();
    assert!(status.completion_time.is_some());
    assert!(
        status.duration.as_deref().is_some_and(|d| d.ends_with('s')),
        "{:?}",
        status.duration
    );
    assert_eq!(status.consecutive_failures, Some(0));
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Completed")
    );
    let summary = status.pipeline_run_status.expect("pipelineRunStatus");
    assert_eq!(summary.status.as_deref(), Some("True"));
    assert_eq!(summary.reason.as_deref(), Some("Succeeded"));
    Ok(())
}

#[tokio::test]
async fn a_failing_task_ends_failed_with_its_details() -> anyhow::Result<()> {
    let env = Env::new("wfe-fail", |_| {}).await?;
    env.create(
        "scale-api",
        "scale-deployment",
        "payment/deployment/payment-api",
        Scenario::TaskFailure,
    )
    .await?;
    let failed = env.wait_phase("scale-api", Phase::Failed).await?;
    let details = failed
        .status
        .clone()
        .unwrap_or_default()
        .failure_details
        .expect("failureDetails");
    assert_eq!(details.reason, FailureReason::TaskFailed);
    assert_eq!(
        details.failed_task_name.as_deref(),
        Some("wfe-cf0cc089293b1165-remediate")
    );
    assert_eq!(details.failed_task_index, Some(0));
    assert_eq!(details.exit_code, Some(1));
    assert!(details.was_execution_failure);
    assert!(
        details
            .natural_language_summary
            .contains("scale-deployment")
    );
    assert!(
        details
            .natural_language_summary
            .contains("payment/deployment/payment-api")
    );
    // Execution failures leave the pre-execution counter untouched.
    assert_eq!(failed.status.unwrap_or_default().consecutive_failures, None);

    // The next WFE on that target is blocked until the block is cleared.
    env.create(
        "scale-api-2",
        "scale-deployment",
        "payment/deployment/payment-api",
        Scenario::Success,
    )
    .await?;
    let skipped = env.wait_phase("scale-api-2", Phase::Skipped).await?;
    let skip = skipped
        .status
        .unwrap_or_default()
        .skip_details
        .expect("skipDetails");
    assert_eq!(skip.reason, SkipReason::PreviousExecutionFailed);
    assert!(
        skip.message.contains("Manual intervention required"),
        "{}",
        skip.message
    );
    Ok(())
}

#[tokio::test]
async fn ten_wfes_on_one_target_run_once() -> anyhow::Result<()> {
    let env = Env::new("wfe-race", |c| {
        c.cooldown.period = std::time::Duration::from_secs(30)
    })
    .await?;
    let names: Vec<String> = (0..10).map(|i| format!("race-{i}")).collect();
    let creates = names
        .iter()
        .map(|name| env.create(name, "restart", "default/deployment/web", Scenario::Hang));
    futures::future::try_join_all(creates).await?;
    let mut running = Vec::new();
    let mut skipped = Vec::new();
    for i in 0..10 {
        let name = format!("race-{i}");
        let w = env
            .wait_for(&name, "Running or Skipped", |w| {
                matches!(w.phase(), Some(Phase::Running | Phase::Skipped))
            })
            .await?;
        if w.phase() == Some(Phase::Running) {
            running.push(w)
        } else {
            skipped.push(w)
        }
    }
    assert_eq!(running.len(), 1, "exactly one runner");
    assert_eq!(skipped.len(), 9);
    assert_eq!(
        env.run_names().await?,
        vec![
            "wfe-".to_string()
                + &kubernaut_framework::lock::lock_name("", "default/deployment/web")
        ]
    );
    let runner = running[0].name_any();
    for w in &skipped {
        let skip = w
            .status
            .clone()
            .unwrap_or_default()
            .skip_details
            .expect("skipDetails");
        assert_eq!(skip.reason, SkipReason::ResourceBusy);
        assert_eq!(
            skip.conflicting_workflow.expect("conflictingWorkflow").name,
            runner
        );
    }
    // Different targets run in parallel.
    env.create("other-a", "restart", "default/deployment/a", Scenario::Hang)
        .await?;
    env.create("other-b", "restart", "default/deployment/b", Scenario::Hang)
        .await?;
    env.wait_phase("other-a", Phase::Running).await?;
    env.wait_phase("other-b", Phase::Running).await?;
    Ok(())
}

#[tokio::test]
async fn a_failing_reconcile_is_reported_on_the_object_and_resolved_after() -> anyhow::Result<()> {
    // The execution namespace does not exist yet: creating the PipelineRun fails with 404, a
    // transient error the runtime retries with backoff and reports on the WFE.
    let missing = format!("wfe-missing-{:08x}", rand::random::<u32>());
    let env = Env::new("wfe-backoff", |c| c.execution.namespace = missing.clone()).await?;
    env.create(
        "retrying",
        "restart",
        "default/deployment/retry",
        Scenario::Success,
    )
    .await?;
    let failing = env
        .wait_for("retrying", "ReconcileBackoff=True", |w| {
            w.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "ReconcileBackoff" && c.status == "True")
            })
        })
        .await?;
    let condition = failing
        .status
        .clone()
        .unwrap_or_default()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ReconcileBackoff")
        .expect("condition");
    assert!(
        condition.message.contains("attempt"),
        "{}",
        condition.message
    );
    assert!(
        condition.message.contains(&missing),
        "names the missing namespace: {}",
        condition.message
    );
    assert_eq!(
        failing.phase(),
        Some(Phase::Pending),
        "a transient error keeps the WFE Pending"
    );
    let events = env.events_for("retrying").await?;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ReconcileError")),
        "a Warning Event reports the failed attempt: {events:?}"
    );

    // Create the namespace: the next attempt succeeds and the condition is resolved.
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(env.client.clone());
    ns.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": missing}}))?,
    )
    .await?;
    let recovered = env
        .wait_for("retrying", "ReconcileBackoff=False", |w| {
            w.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "ReconcileBackoff" && c.status == "False")
            })
        })
        .await?;
    assert!(matches!(
        recovered.phase(),
        Some(Phase::Running | Phase::Completed)
    ));
    Ok(())
}
