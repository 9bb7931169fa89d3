//! Error backoff of the WorkflowExecution operator against the real control plane: a PipelineRun
//! that cannot be created (its execution namespace does not exist) is retried on the runtime's
//! per-object schedule with a handful of API writes — the failure reports on the WFE do not
//! trigger retries of their own — and the WFE runs at the next scheduled attempt once the
//! namespace exists. The operator runs with the runtime's default error backoff (2s doubling,
//! up to 5m): the test shortens nothing.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use kubernaut_test_harness::{
    ControlPlane,
    requests::{ApiRequest, RequestLog},
    simulator::Scenario,
};
use serde_json::json;
use support::{Env, OperatorSetup, eventually};
use workflowexecution_operator::types::{Phase, WorkflowExecution};

/// How long the execution namespace is missing.
const OUTAGE: Duration = Duration::from_secs(60);
/// The most API writes the operator may make for the one WFE during the outage: adding the
/// finalizer, `Pending`, one PipelineRun create per scheduled attempt (about six in a minute on the
/// default schedule), one condition and one Event.
const MAX_WRITES_IN_THE_OUTAGE: usize = 10;

fn backoff_condition(wfe: &WorkflowExecution) -> Option<(String, String)> {
    wfe.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ReconcileBackoff")
        .map(|c| (c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_wfe_whose_run_cannot_be_created_backs_off_and_runs_once_the_cause_is_fixed()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    // The operator's every API request is recorded.
    let log = RequestLog::new();
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(cp.kubeconfig_path())?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let missing = format!("wfe-outage-{:08x}", rand::random::<u32>());
    let env = Env::with_operator(
        "wfe-outage",
        OperatorSetup {
            client: log.client(config)?,
            exec_ns: Some(missing.clone()),
            parents: None,
        },
        |_| {},
    )
    .await?;
    let before = log.requests().len();
    let outage_start = tokio::time::Instant::now();
    env.create(
        "fix-me",
        "restart",
        "default/deployment/outage",
        Scenario::Success,
    )
    .await?;

    // The failure is reported on the WFE, which stays Pending.
    let failing = env
        .wait_for("fix-me", "ReconcileBackoff=True", |w| {
            backoff_condition(w).is_some_and(|(status, _)| status == "True")
        })
        .await?;
    let (_, message) = backoff_condition(&failing).unwrap_or_default();
    assert!(message.contains(&missing), "{message}");
    assert_eq!(failing.phase(), Some(Phase::Pending));

    // The outage lasts a minute; count what the operator wrote meanwhile.
    tokio::time::sleep_until(outage_start + OUTAGE).await;
    let during: Vec<ApiRequest> = log.requests()[before..].to_vec();
    let writes: Vec<String> = during
        .iter()
        .filter(|r| r.is_write())
        .map(ApiRequest::describe)
        .collect();
    let creates = during
        .iter()
        .filter(|r| r.verb == "create" && r.resource.as_deref() == Some("pipelineruns"))
        .count();
    assert!(
        writes.len() <= MAX_WRITES_IN_THE_OUTAGE,
        "{} writes in {OUTAGE:?}: {writes:#?}",
        writes.len()
    );
    assert!(
        creates >= 3,
        "the run's creation is retried on the schedule, not given up: {writes:#?}"
    );
    let reports = env
        .events_for("fix-me")
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReconcileError"))
        .count();
    assert_eq!(
        reports, 1,
        "one Event for the one error of the streak, not one per attempt"
    );

    // Fix the cause: the next scheduled attempt (at most 64 s away on the default schedule)
    // creates the run, and the WFE runs to completion.
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": missing}}))?,
        )
        .await?;
    eventually(
        "fix-me Running or beyond",
        Duration::from_secs(180),
        || async {
            let wfe = env.wfes().get("fix-me").await?;
            Ok(matches!(wfe.phase(), Some(Phase::Running | Phase::Completed)).then_some(()))
        },
    )
    .await?;
    let done = env.wait_phase("fix-me", Phase::Completed).await?;
    let resolved = env
        .wait_for("fix-me", "ReconcileBackoff=False", |w| {
            backoff_condition(w).is_some_and(|(status, _)| status == "False")
        })
        .await?;
    assert_eq!(
        done.status
            .as_ref()
            .and_then(|s| s.pipeline_run_ref.clone())
            .map(|r| r.namespace),
        Some(missing)
    );
    assert_eq!(resolved.phase(), Some(Phase::Completed));
    Ok(())
}
