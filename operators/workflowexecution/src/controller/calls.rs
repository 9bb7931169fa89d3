//! Call-sequence tests of `reconcile`: the API requests it makes, in order, against a scripted
//! mock API server — the lock's acquisition (Pending), its release (terminal, after the
//! cooldown) and the cancellation of a running run on deletion.

use std::{path::Path, sync::Arc};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Client, ResourceExt, api::DynamicObject, runtime::watcher};
use kubernaut_framework::{
    config::ConfigStore,
    lock::Locks,
    own_writes::OwnWrites,
    pace::Pace,
    runtime::{Action, Context, KindStores, prometheus::Registry},
    testing::{Exchange, Scenario, Served, status_body},
};
use serde_json::{Value, json};

use super::{Ctx, FINALIZER, State, reconcile};
use crate::{
    audit,
    config::OperatorConfig,
    engine::Engines,
    metrics::Metrics,
    pipelinerun::{self, LABEL_WORKFLOW_EXECUTION_UID},
    templates::sample_workflow_execution,
    types::{Phase, PipelineRunRef, WorkflowExecution, WorkflowExecutionStatus},
};

const RUNS: &str = "/apis/tekton.dev/v1/namespaces/kubernaut-workflows/pipelineruns";
const WFES: &str = "/apis/kubernaut.ai/v1alpha1/namespaces/kubernaut-system/workflowexecutions";

fn template_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/workflowexecution")
}

/// The operator's state as `operator::start` builds it, with the shipped templates and the
/// default configuration (cooldown 5m, runs in `kubernaut-workflows`).
fn state() -> State {
    let mut config = OperatorConfig::default();
    config.templates.dir = template_dir();
    let engines = Engines::load(&config).unwrap();
    let registry = Registry::new();
    State {
        engines,
        auditor: audit::start(&config.audit, &registry).unwrap(),
        metrics: Metrics::register(&registry).unwrap(),
        config: Arc::new(ConfigStore::new(config)),
        own_writes: OwnWrites::new(),
        locks: Locks::default(),
        pace: Pace::new(),
    }
}

/// A reconcile context over `client`, with the templates and `cached_runs` in the child cache.
fn context(client: Client, cached_runs: &[DynamicObject]) -> Arc<Ctx> {
    let mut ctx = Context::for_tests(client, state()).unwrap();
    ctx.templates = Some(Arc::new(
        crate::testing::load_template_store(&template_dir()).unwrap(),
    ));
    let runs = ctx
        .data
        .engines
        .default_engine()
        .unwrap()
        .child_resource
        .clone();
    let mut writer = kubernaut_framework::runtime::ChildWriter::new(runs.clone());
    for run in cached_runs {
        writer.apply_watcher_event(&watcher::Event::Apply(run.clone()));
    }
    ctx.children = KindStores::new([(runs, writer.as_reader())]);
    Arc::new(ctx)
}

/// Runs one reconcile of `wfe` against `script`; returns its result and what was served.
async fn run(
    wfe: WorkflowExecution,
    cached_runs: &[DynamicObject],
    script: Vec<Exchange>,
) -> (Result<Action, super::Error>, Served) {
    let (client, scenario) = Scenario::start(script);
    let ctx = context(client, cached_runs);
    let result = reconcile(Arc::new(wfe), ctx).await;
    (result, scenario.finish().await)
}

fn ago(minutes: i64) -> Time {
    Time(Timestamp::now() - SignedDuration::from_mins(minutes))
}

/// The sample WFE (`kubernaut-system/restart-nginx-7f9c`) with the finalizer, at resourceVersion
/// 10, in `phase`.
fn wfe(phase: Phase) -> WorkflowExecution {
    let mut wfe = sample_workflow_execution();
    wfe.metadata.resource_version = Some("10".into());
    wfe.metadata.finalizers = Some(vec![FINALIZER.into()]);
    wfe.status = Some(WorkflowExecutionStatus {
        phase: Some(phase),
        ..Default::default()
    });
    wfe
}

/// `wfe` finished `minutes` ago with its run recorded.
fn finished(phase: Phase, minutes: i64) -> WorkflowExecution {
    let mut wfe = wfe(phase);
    let status = wfe.status.get_or_insert_default();
    status.start_time = Some(ago(minutes + 1));
    status.completion_time = Some(ago(minutes));
    status.pipeline_run_ref = Some(run_ref(&wfe_run_name()));
    wfe
}

fn wfe_run_name() -> String {
    pipelinerun::pipeline_run_name("default/deployment/nginx")
}

fn run_ref(name: &str) -> PipelineRunRef {
    PipelineRunRef {
        name: name.to_owned(),
        namespace: "kubernaut-workflows".to_owned(),
    }
}

fn path_of(name: &str) -> String {
    format!("{RUNS}/{name}")
}

fn wfe_path() -> String {
    format!("{WFES}/restart-nginx-7f9c")
}

/// The lock run as the API server returns it, labelled for `owner` (name and uid).
fn lock_run(owner: &str, owner_uid: &str, spec_status: Option<&str>) -> Value {
    let mut spec = json!({"pipelineRef": {"name": "x"}});
    if let Some(status) = spec_status {
        spec["status"] = json!(status);
    }
    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {
            "name": wfe_run_name(),
            "namespace": "kubernaut-workflows",
            "uid": "run-uid",
            "resourceVersion": "77",
            "labels": {
                "kubernaut.ai/workflow-execution": owner,
                "kubernaut.ai/source-namespace": "kubernaut-system",
                LABEL_WORKFLOW_EXECUTION_UID: owner_uid,
            },
            "annotations": {"kubernaut.ai/workflow-execution": owner},
        },
        "spec": spec,
    })
}

fn ours() -> Value {
    let wfe = sample_workflow_execution();
    lock_run(&wfe.name_any(), &wfe.uid().unwrap_or_default(), None)
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

fn to_value(wfe: &WorkflowExecution) -> Value {
    serde_json::to_value(wfe).unwrap()
}

/// The object a status write returns: `sent` at the next resourceVersion.
fn written(sent: &WorkflowExecution, phase: Phase) -> Value {
    let mut wfe = sent.clone();
    wfe.metadata.resource_version = Some("11".into());
    wfe.status.get_or_insert_default().phase = Some(phase);
    serde_json::to_value(wfe).unwrap()
}

/// The status write of `sent`, answered as written in `phase`.
fn status_write(sent: &WorkflowExecution, phase: Phase) -> Exchange {
    let path = format!("{}/status", wfe_path());
    Exchange::new("PUT", path, 200, written(sent, phase))
}

/// The create of the lock run refused with `AlreadyExists`, then the read of `existing`.
fn create_conflict(existing: Value) -> [Exchange; 2] {
    [
        Exchange::new("POST", RUNS, 409, status_body(409, "AlreadyExists")),
        read_run(existing),
    ]
}

/// The read of the lock run, answered with `run`.
fn read_run(run: Value) -> Exchange {
    Exchange::new("GET", path_of(&wfe_run_name()), 200, run)
}

/// The delete of the lock run, answered with success.
fn delete_run() -> Exchange {
    let success = status_body(200, "Success");
    Exchange::new("DELETE", path_of(&wfe_run_name()), 200, success)
}

/// The cancel patch of our lock run, answered with the run cancelled.
fn cancel_run() -> Exchange {
    let cancelled = lock_run("restart-nginx-7f9c", "", Some("CancelledRunFinally"));
    Exchange::new("PATCH", path_of(&wfe_run_name()), 200, cancelled)
}

/// A script of `parts`, in order.
fn script<const N: usize>(parts: [Vec<Exchange>; N]) -> Vec<Exchange> {
    parts.into_iter().flatten().collect()
}

/// One reconcile of the sample WFE in `Pending` with `cached_runs` in the cache: `steps`, then
/// its status write, answered as written in `phase`.
async fn pending_pass(
    cached_runs: &[DynamicObject],
    steps: Vec<Exchange>,
    phase: Phase,
) -> (Result<Action, super::Error>, Served) {
    let pending = wfe(Phase::Pending);
    let write = status_write(&pending, phase);
    run(pending, cached_runs, script([steps, vec![write]])).await
}

#[tokio::test]
async fn acquire_creates_the_pipelinerun_labelled_for_this_execution_then_writes_running() {
    let created = vec![Exchange::new("POST", RUNS, 201, ours())];
    let (result, served) = pending_pass(&[], created, Phase::Running).await;
    assert_eq!(result.unwrap(), Action::requeue(super::SAFETY_RESYNC));
    let created = &served.bodies[0];
    assert_eq!(created["metadata"]["name"], wfe_run_name().as_str());
    let labels = &created["metadata"]["labels"];
    assert_eq!(
        labels["kubernaut.ai/workflow-execution"],
        "restart-nginx-7f9c"
    );
    assert_eq!(labels["kubernaut.ai/source-namespace"], "kubernaut-system");
    assert_eq!(
        labels[LABEL_WORKFLOW_EXECUTION_UID],
        wfe(Phase::Pending).uid().unwrap().as_str()
    );
    let status = &served.bodies[1];
    assert_eq!(status["metadata"]["resourceVersion"], "10");
    assert_eq!(status["status"]["phase"], "Running");
    assert_eq!(
        status["status"]["pipelineRunRef"]["name"],
        wfe_run_name().as_str()
    );
    assert_eq!(served.event_reasons(), ["PipelineRunCreated"]);
}

#[tokio::test]
async fn acquire_adopts_an_existing_run_labelled_for_this_execution() {
    let (result, served) = pending_pass(&[], create_conflict(ours()).into(), Phase::Running).await;
    result.unwrap();
    assert_eq!(served.bodies[2]["status"]["phase"], "Running");
    assert_eq!(
        served.bodies[2]["status"]["pipelineRunRef"]["name"],
        wfe_run_name().as_str()
    );
}

#[tokio::test]
async fn acquire_reports_a_running_run_of_another_execution_as_busy() {
    let mut holder = wfe(Phase::Running);
    holder.metadata.name = Some("other".into());
    holder.metadata.uid = Some("other-uid".into());
    let steps = script([
        create_conflict(lock_run("other", "other-uid", None)).into(),
        // The holder is not in the cache: its existence is confirmed with the API server.
        vec![Exchange::new(
            "GET",
            format!("{WFES}/other"),
            200,
            to_value(&holder),
        )],
    ]);
    let (result, served) = pending_pass(&[], steps, Phase::Skipped).await;
    result.unwrap();
    let status = &served.bodies[3]["status"];
    assert_eq!(status["phase"], "Skipped");
    assert_eq!(status["skipDetails"]["reason"], "ResourceBusy");
    assert_eq!(served.event_reasons(), ["Skipped"]);
}

#[tokio::test]
async fn release_deletes_only_a_run_labelled_for_this_execution() {
    let done = finished(Phase::Completed, 10);
    let (result, served) = run(
        done,
        &[dynamic(ours())],
        vec![read_run(ours()), delete_run()],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        served.bodies[1]["preconditions"]["uid"], "run-uid",
        "only the very run read is deleted"
    );
    assert_eq!(served.event_reasons(), ["LockReleased"]);

    // A run labelled for another execution is left alone: no request at all.
    let other = dynamic(lock_run("other", "other-uid", None));
    let (result, served) = run(finished(Phase::Completed, 10), &[other], Vec::new()).await;
    result.unwrap();
    assert!(served.events.is_empty());

    // The cache says ours, the API server says the name now belongs to another: no delete.
    let (result, served) = run(
        finished(Phase::Completed, 10),
        &[dynamic(ours())],
        vec![read_run(lock_run("other", "other-uid", None))],
    )
    .await;
    result.unwrap();
    assert!(served.events.is_empty());
}

#[tokio::test]
async fn release_waits_for_the_cooldown() {
    let (result, served) = run(
        finished(Phase::Completed, 1),
        &[dynamic(ours())],
        Vec::new(),
    )
    .await;
    assert_ne!(
        result.unwrap(),
        Action::await_change(),
        "looks again at its end"
    );
    assert!(served.events.is_empty());
}

/// `wfe` in `phase` with its run, deleted `minutes` ago.
fn deleted(minutes: i64) -> WorkflowExecution {
    let mut wfe = finished(Phase::Running, 0);
    let status = wfe.status.get_or_insert_default();
    status.completion_time = None;
    wfe.metadata.deletion_timestamp = Some(ago(minutes));
    wfe
}

#[tokio::test]
async fn cancel_patches_a_running_run_with_its_resource_version_and_waits_for_it() {
    let (result, served) = run(deleted(0), &[], vec![read_run(ours()), cancel_run()]).await;
    let action = result.unwrap();
    assert_ne!(action, Action::await_change(), "looks again while waiting");
    assert_eq!(
        served.bodies[1],
        json!({"metadata": {"resourceVersion": "77"}, "spec": {"status": "CancelledRunFinally"}}),
        "a merge patch with the resourceVersion read as precondition"
    );
    assert_eq!(served.event_reasons(), ["PipelineRunCancelled"]);
}

#[tokio::test]
async fn cancel_deletes_the_run_after_the_grace_period_then_drops_the_finalizer() {
    let (result, served) = run(
        deleted(10),
        &[],
        vec![
            read_run(ours()),
            cancel_run(),
            read_run(ours()),
            delete_run(),
            Exchange::new("PATCH", wfe_path(), 200, to_value(&deleted(10))),
        ],
    )
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(served.bodies[1]["metadata"]["resourceVersion"], "77");
    assert_eq!(served.bodies[3]["preconditions"]["uid"], "run-uid");
    let removal = served.bodies[4].to_string();
    assert!(
        removal.contains("\"remove\"") && removal.contains("/metadata/finalizers"),
        "{removal}"
    );
    let mut reasons = served.event_reasons();
    reasons.sort();
    assert_eq!(
        reasons,
        ["PipelineRunCancelled", "WorkflowExecutionDeleted"]
    );
}

#[tokio::test]
async fn acquire_breaks_the_stale_lock_of_a_deleted_execution_then_creates_its_own() {
    let gone = status_body(404, "NotFound");
    let steps = script([
        create_conflict(lock_run("gone", "gone-uid", None)).into(),
        vec![
            // Not in the cache, and not on the API server either: the holder is gone.
            Exchange::new("GET", format!("{WFES}/gone"), 404, gone),
            delete_run(),
            Exchange::new("POST", RUNS, 201, ours()),
        ],
    ]);
    let (result, served) = pending_pass(&[], steps, Phase::Running).await;
    result.unwrap();
    assert_eq!(
        served.bodies[3]["preconditions"]["uid"], "run-uid",
        "exactly the stale run read is deleted"
    );
    assert_eq!(served.bodies[5]["status"]["phase"], "Running");
}

#[tokio::test]
async fn acquire_waits_without_a_request_while_another_executions_run_is_being_deleted() {
    let mut going = lock_run("other", "other-uid", None);
    going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let (result, served) = pending_pass(&[dynamic(going)], Vec::new(), Phase::Pending).await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(std::time::Duration::from_secs(2))
    );
    let created = &served.bodies[0]["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ExecutionCreated")
        .cloned()
        .unwrap();
    assert_eq!(created["reason"], "WaitingForPreviousRun");
    assert!(served.events.is_empty());
}

#[tokio::test]
async fn acquire_fails_before_execution_when_the_create_is_forbidden() {
    let refused = vec![Exchange::new(
        "POST",
        RUNS,
        403,
        status_body(403, "forbidden"),
    )];
    let (result, served) = pending_pass(&[], refused, Phase::Failed).await;
    result.unwrap();
    let status = &served.bodies[1]["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["failureDetails"]["reason"], "Forbidden");
    assert_eq!(status["failureDetails"]["wasExecutionFailure"], false);
}
