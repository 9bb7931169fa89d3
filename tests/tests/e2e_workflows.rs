//! End-to-end workflow scenarios: the operator against real Tekton Pipelines.
//!
//! One operator process serves every test of this binary (operators watch WorkflowExecutions in
//! every namespace, so two would race for the same objects); it runs the workflows in one
//! execution namespace. Each test creates its WorkflowExecutions in a namespace of its own, on
//! targets of its own, and waits for the outcome. The workflows are the bundles of
//! `tests/e2e/bundles/`, whose task labels tell kwok how their pods end (`tests/e2e/kwok.yaml`).
//!
//! With `KUBERNAUT_E2E_RECORD=<dir>` set, each scenario writes what Tekton wrote — the final
//! PipelineRun and its TaskRuns — to `<dir>/<scenario>.yaml` (`tests/e2e/recorded/` holds the
//! committed recordings).
//!
//! Needs `make e2e-deps` and the operator's build (`make e2e` builds both); without
//! them the tests fail naming the command.

use std::{collections::BTreeSet, path::PathBuf, sync::Mutex};

use anyhow::anyhow;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
        WatchEvent, WatchParams,
    },
};
use kubernaut_test_harness::e2e::{
    E2eCluster,
    workflows::{
        ENDED, OperatorEnv, assert_failure, child_name, eventually, execution, failure, phase,
        wait_phase,
    },
};
use serde_json::Value;
use tokio::sync::OnceCell;
use workflowexecution_operator::types::{
    ExecutionConfig, FailureReason, Phase, SkipReason, WorkflowExecution,
};

/// The service account the workflows' tasks run as (the operator's `execution.serviceAccountName`).
const RUNNER: &str = "kubernaut-workflow-runner";

/// A service account the operator allows but that does not exist in the execution namespace.
const MISSING_RUNNER: &str = "kubernaut-missing-runner";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tekton_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("tekton.dev", "v1", kind))
}

/// The shared cluster with one operator process (started on first use).
async fn env() -> anyhow::Result<&'static OperatorEnv> {
    static ENV: OnceCell<OperatorEnv> = OnceCell::const_new();
    ENV.get_or_try_init(|| async {
        let extra = format!("  allowedServiceAccounts: [{RUNNER}, {MISSING_RUNNER}]\n");
        OperatorEnv::start("operator-workflows", "e2e-runs", RUNNER, &extra).await
    })
    .await
}

fn workflow_execution(
    ns: &str,
    name: &str,
    bundle: String,
    target: &str,
    timeout: Option<&str>,
) -> WorkflowExecution {
    execution(ns, name, bundle, target, timeout, None)
}

/// Creates `wfe` and waits for it to end (Completed, Failed or Skipped).
async fn run_to_end(client: &Client, wfe: &WorkflowExecution) -> anyhow::Result<WorkflowExecution> {
    let ns = wfe.namespace().unwrap_or_default();
    let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), &ns);
    wfes.create(&PostParams::default(), wfe).await?;
    wait_phase(&wfes, &wfe.name_any(), ENDED).await
}

fn condition(object: &Value) -> (String, String) {
    let succeeded = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Succeeded"));
    let field = |name: &str| {
        succeeded
            .and_then(|c| c[name].as_str())
            .unwrap_or_default()
            .to_string()
    };
    (field("status"), field("reason"))
}

fn run_selector(run: &str) -> ListParams {
    ListParams::default().labels(&format!("tekton.dev/pipelineRun={run}"))
}

/// The PipelineRun `run` in `ns` and its TaskRuns (sorted by name), as they are now.
async fn run_objects(client: &Client, ns: &str, run: &str) -> anyhow::Result<Vec<DynamicObject>> {
    let runs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &tekton_resource("PipelineRun"));
    let taskruns: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &tekton_resource("TaskRun"));
    let mut objects = vec![runs.get(run).await?];
    let mut trs = taskruns.list(&run_selector(run)).await?.items;
    trs.sort_by_key(|t| t.name_any());
    objects.extend(trs);
    Ok(objects)
}

/// With `KUBERNAUT_E2E_RECORD` set, writes `objects` (a PipelineRun and its TaskRuns as Tekton
/// wrote them) to `<dir>/<scenario>.yaml`, headed by the Tekton version.
fn record(
    cluster: &E2eCluster,
    objects: &[DynamicObject],
    scenario: &str,
    note: &str,
) -> anyhow::Result<()> {
    let Some(dir) = std::env::var_os("KUBERNAUT_E2E_RECORD") else {
        return Ok(());
    };
    let versions = cluster.components().versions()?;
    let tekton = versions
        .lines()
        .find(|l| l.starts_with("tekton-pipelines "))
        .unwrap_or("tekton-pipelines unknown");
    let mut text = format!(
        "# Recorded from {tekton} by tests/tests/e2e_workflows.rs (KUBERNAUT_E2E_RECORD).\n\
         # Scenario: {note}\n\
         # The PipelineRun, then its TaskRuns; managedFields removed.\n"
    );
    for object in objects {
        let mut object = object.clone();
        object.metadata.managed_fields = None;
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(&object)?);
    }
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(format!("{scenario}.yaml")), text)?;
    Ok(())
}

/// A scenario: one WorkflowExecution running `bundle` in a namespace of its own; returns the ended
/// execution after recording its run.
async fn scenario(
    env: &OperatorEnv,
    client: &Client,
    name: &str,
    bundle: &str,
    timeout: Option<&str>,
    note: &str,
) -> anyhow::Result<WorkflowExecution> {
    let ns = env
        .cluster
        .control_plane()
        .create_namespace(&format!("e2e-{name}"))
        .await?;
    let bundle = if bundle.contains('/') {
        bundle.to_string()
    } else {
        env.cluster.bundle(bundle)?
    };
    let done = run_to_end(
        client,
        &workflow_execution(&ns, name, bundle, name, timeout),
    )
    .await?;
    if let Ok(run) = child_name(&done) {
        // A run the operator never created (pre-execution failures) has nothing to record.
        let runs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &env.exec_ns,
            &tekton_resource("PipelineRun"),
        );
        if runs.get_opt(&run).await?.is_some() {
            let objects = run_objects(client, &env.exec_ns, &run).await?;
            record(env.cluster, &objects, name, note)?;
        }
    }
    Ok(done)
}

// ------------------------------------------------------------------------------------- success

#[tokio::test]
async fn a_successful_workflow_runs_its_tasks_as_the_runner_with_the_target_as_parameter()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let done = scenario(
            env,
            &client,
            "succeed",
            "succeed",
            None,
            "both tasks succeed",
        )
        .await?;
        assert_eq!(
            phase(&done),
            Some(Phase::Completed),
            "status: {:?}",
            done.status
        );
        let run = child_name(&done)?;
        let selector = run_selector(&run);
        let taskruns: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &env.exec_ns, &tekton_resource("TaskRun"));
        let taskruns = taskruns.list(&selector).await?.items;
        assert_eq!(taskruns.len(), 2, "the workflow's two tasks ran");
        for tr in &taskruns {
            assert_eq!(condition(&tr.data).0, "True", "TaskRun {}", tr.name_any());
            let params = tr.data["spec"]["params"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                params.iter().any(|p| p["name"] == "TARGET_RESOURCE"
                    && p["value"].as_str() == Some(done.spec.target_resource.as_str())),
                "TaskRun {} has the target as its parameter: {params:?}",
                tr.name_any()
            );
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &env.exec_ns);
        let pods = pods.list(&selector).await?.items;
        assert_eq!(pods.len(), 2, "one pod per task");
        for pod in &pods {
            let spec = pod
                .spec
                .as_ref()
                .ok_or_else(|| anyhow!("a pod without spec"))?;
            assert_eq!(spec.service_account_name.as_deref(), Some(RUNNER));
        }
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------ failures

#[tokio::test]
async fn a_step_exiting_1_fails_the_execution_as_task_failed_naming_task_step_and_exit_code()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let done = scenario(
            env,
            &client,
            "step-fails",
            "step-fails",
            None,
            "the first step of the first task exits 1",
        )
        .await?;
        let details = assert_failure(&done, FailureReason::TaskFailed, true)?;
        assert!(
            details
                .failed_task_name
                .as_deref()
                .is_some_and(|n| n.ends_with("-remediate")),
            "{details:?}"
        );
        assert_eq!(details.failed_task_index, Some(0), "{details:?}");
        assert_eq!(details.failed_step_name.as_deref(), Some("scale"));
        assert_eq!(details.exit_code, Some(1), "{details:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_oom_killed_step_fails_the_execution_as_oom_killed_with_exit_code_137()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let done = scenario(
            env,
            &client,
            "oom",
            "oom",
            None,
            "the first step of the first task is OOMKilled (137)",
        )
        .await?;
        let details = assert_failure(&done, FailureReason::OomKilled, true)?;
        assert_eq!(details.exit_code, Some(137), "{details:?}");
        Ok(())
    })
    .await
}

/// Real Tekton (v1.12) fails the TaskRun `TaskRunImagePullFailed` and rewrites the steps that never
/// started into `terminated: {exitCode: 1, reason: TaskRunImagePullFailed}`, with the TaskRun's
/// creation time as `startedAt` (no waiting state is left): that exit code is Tekton's, not a
/// step's, and no step ran.
#[tokio::test]
async fn an_unpullable_first_image_fails_before_execution_without_an_exit_code()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let done = scenario(
            env,
            &client,
            "image-pull-first",
            "image-pull-first",
            None,
            "the first task's steps wait in ImagePullBackOff",
        )
        .await?;
        let details = assert_failure(&done, FailureReason::ImagePullBackOff, false)?;
        assert_eq!(details.failed_step_name.as_deref(), Some("scale"));
        assert_eq!(details.exit_code, None, "{details:?}");
        Ok(())
    })
    .await
}

/// The first task ran (and succeeded) before the second task's image could not be pulled: the
/// target may have been changed, whatever the failure's reason.
#[tokio::test]
async fn an_unpullable_second_image_is_an_execution_failure_because_the_first_task_ran()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let done = scenario(
            env,
            &client,
            "image-pull-second",
            "image-pull-second",
            None,
            "the first task succeeds, the second task's steps wait in ImagePullBackOff",
        )
        .await?;
        let details = assert_failure(&done, FailureReason::ImagePullBackOff, true)?;
        assert!(
            details
                .failed_task_name
                .as_deref()
                .is_some_and(|n| n.ends_with("-verify")),
            "{details:?}"
        );
        assert_eq!(details.failed_task_index, Some(1), "{details:?}");
        assert_eq!(details.exit_code, None, "{details:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_run_exceeding_the_execution_timeout_fails_as_deadline_exceeded() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let done = scenario(
            env,
            &client,
            "timeout",
            "long-running",
            Some("20s"),
            "the first task runs for an hour; executionConfig.timeout 20s",
        )
        .await?;
        let details = failure(&done)?;
        assert_eq!(
            details.reason,
            FailureReason::DeadlineExceeded,
            "{details:?}"
        );
        assert!(details.was_execution_failure, "{details:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_bundle_fails_before_execution_as_configuration_error() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let bundle = format!(
            "{}/kubernaut/workflows/no-such-workflow:v1",
            env.cluster.registry().address
        );
        let done = scenario(
            env,
            &client,
            "missing-bundle",
            &bundle,
            None,
            "the bundle does not exist in the registry",
        )
        .await?;
        let details = failure(&done)?;
        assert_eq!(
            details.reason,
            FailureReason::ConfigurationError,
            "{details:?}"
        );
        assert!(!details.was_execution_failure, "{details:?}");
        assert_eq!(details.exit_code, None, "{details:?}");
        Ok(())
    })
    .await
}

// -------------------------------------------------------------------------------- cancellation

/// Every distinct `spec.status` the PipelineRun `run` showed, the names of every TaskRun it had,
/// and the last state of each object, collected by watches until aborted.
#[derive(Default, Debug)]
struct Seen {
    run_statuses: BTreeSet<String>,
    taskruns: BTreeSet<String>,
    last_run: Option<DynamicObject>,
    last_taskruns: std::collections::BTreeMap<String, DynamicObject>,
}

async fn watch_run(
    client: Client,
    ns: String,
    run: String,
    seen: std::sync::Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let runs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &tekton_resource("PipelineRun"));
    let taskruns: Api<DynamicObject> =
        Api::namespaced_with(client, &ns, &tekton_resource("TaskRun"));
    let run_params = WatchParams::default().fields(&format!("metadata.name={run}"));
    let tr_params = WatchParams::default().labels(&format!("tekton.dev/pipelineRun={run}"));
    let mut run_events = runs.watch(&run_params, "0").await?.boxed();
    let mut tr_events = taskruns.watch(&tr_params, "0").await?.boxed();
    loop {
        tokio::select! {
            event = run_events.try_next() => match event? {
                Some(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
                    if let Ok(mut seen) = seen.lock() {
                        if let Some(status) = o.data["spec"]["status"].as_str() {
                            seen.run_statuses.insert(status.to_string());
                        }
                        seen.last_run = Some(o);
                    }
                }
                Some(_) => {}
                None => return Ok(()),
            },
            event = tr_events.try_next() => match event? {
                Some(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
                    if let Ok(mut seen) = seen.lock() {
                        seen.taskruns.insert(o.name_any());
                        seen.last_taskruns.insert(o.name_any(), o);
                    }
                }
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
}

/// Deleting the execution patches the run's `spec.status` to `CancelledRunFinally`
/// (`templates/workflowexecution/tekton/cancel.yaml`): Tekton cancels the running task, runs the
/// workflow's `finally` task, and ends the run `Cancelled`; only then does the operator delete the
/// run, and garbage collection its TaskRuns and pods.
#[tokio::test]
async fn deleting_a_running_execution_cancels_its_run_runs_finally_and_garbage_collects_taskruns_and_pods()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let ns = env
            .cluster
            .control_plane()
            .create_namespace("e2e-delete")
            .await?;
        let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), &ns);
        let wfe = workflow_execution(
            &ns,
            "delete-running",
            env.cluster.bundle("long-running")?,
            "delete-running",
            None,
        );
        wfes.create(&PostParams::default(), &wfe).await?;
        let running = wait_phase(&wfes, "delete-running", &[Phase::Running]).await?;
        let run = child_name(&running)?;

        // The first task's pod runs (for an hour) before the execution is deleted.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &env.exec_ns);
        eventually("the first task's pod is running", || async {
            let list = pods.list(&run_selector(&run)).await?.items;
            Ok(list
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .then_some(()))
        })
        .await?;
        let seen = std::sync::Arc::new(Mutex::new(Seen::default()));
        let watcher = tokio::spawn(watch_run(
            client.clone(),
            env.exec_ns.clone(),
            run.clone(),
            seen.clone(),
        ));
        // The watches start from "0": their first events list what exists.
        eventually("the watches saw the run's TaskRun", || async {
            Ok(seen
                .lock()
                .map_err(|_| anyhow!("poisoned"))?
                .taskruns
                .iter()
                .any(|t| t.ends_with("-remediate"))
                .then_some(()))
        })
        .await?;
        // The run and its TaskRun while the step runs: what the simulator replays for a run in
        // progress.
        let running = eventually("the TaskRun reports its step running", || async {
            let objects = run_objects(&client, &env.exec_ns, &run).await?;
            let step_running = objects.iter().skip(1).any(|tr| {
                tr.data["status"]["steps"]
                    .as_array()
                    .is_some_and(|steps| steps.iter().any(|s| s.get("running").is_some()))
            });
            Ok(step_running.then_some(objects))
        })
        .await?;
        record(
            env.cluster,
            &running,
            "running",
            "the first task's first step runs (for an hour): the run and its TaskRun in progress",
        )?;

        wfes.delete("delete-running", &DeleteParams::default())
            .await?;
        eventually("the WorkflowExecution is gone", || async {
            Ok(wfes
                .get_opt("delete-running")
                .await?
                .is_none()
                .then_some(()))
        })
        .await?;
        let runs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &env.exec_ns,
            &tekton_resource("PipelineRun"),
        );
        let taskruns: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &env.exec_ns, &tekton_resource("TaskRun"));
        eventually("the run, its TaskRuns and its pods are gone", || async {
            let run_gone = runs.get_opt(&run).await?.is_none();
            let trs = taskruns.list(&run_selector(&run)).await?.items.len();
            let pod_count = pods.list(&run_selector(&run)).await?.items.len();
            Ok((run_gone && trs == 0 && pod_count == 0).then_some(()))
        })
        .await?;
        watcher.abort();

        let seen = seen.lock().map_err(|_| anyhow!("poisoned"))?;
        let objects: Vec<DynamicObject> = seen
            .last_run
            .iter()
            .chain(seen.last_taskruns.values())
            .cloned()
            .collect();
        record(
            env.cluster,
            &objects,
            "delete-running",
            "the execution is deleted while its first task runs (an hour): the run is cancelled \
             with CancelledRunFinally; the last state the watches saw of the run and its TaskRuns \
             before they were deleted",
        )?;
        assert!(
            seen.run_statuses.contains("CancelledRunFinally"),
            "the operator cancelled the run so that `finally` runs: {seen:?}"
        );
        let last_run = seen
            .last_run
            .as_ref()
            .ok_or_else(|| anyhow!("the watch saw no PipelineRun"))?;
        assert_eq!(
            condition(&last_run.data),
            ("False".to_string(), "Cancelled".to_string()),
            "the run ended cancelled before it was deleted: {}",
            last_run.data["status"]
        );
        let undo = seen
            .last_taskruns
            .iter()
            .find(|(name, _)| name.ends_with("-undo"))
            .map(|(_, tr)| tr)
            .ok_or_else(|| anyhow!("the finally task never ran: {seen:?}"))?;
        assert_eq!(
            condition(&undo.data).0,
            "True",
            "the finally task succeeded: {}",
            undo.data["status"]
        );
        let remediate = seen
            .last_taskruns
            .iter()
            .find(|(name, _)| name.ends_with("-remediate"))
            .map(|(_, tr)| tr)
            .ok_or_else(|| anyhow!("no remediate TaskRun seen: {seen:?}"))?;
        assert_eq!(
            condition(&remediate.data),
            ("False".to_string(), "TaskRunCancelled".to_string()),
            "{}",
            remediate.data["status"]
        );
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------ capacity

#[tokio::test]
async fn twenty_executions_on_distinct_targets_all_complete() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let ns = env
            .cluster
            .control_plane()
            .create_namespace("e2e-twenty")
            .await?;
        let bundle = env.cluster.bundle("succeed")?;
        let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), &ns);
        for i in 0..20 {
            let name = format!("distinct-{i}");
            wfes.create(
                &PostParams::default(),
                &workflow_execution(&ns, &name, bundle.clone(), &name, None),
            )
            .await?;
        }
        let ended: Vec<WorkflowExecution> = futures::stream::iter(0..20)
            .then(|i| {
                let wfes = wfes.clone();
                async move {
                    wait_phase(
                        &wfes,
                        &format!("distinct-{i}"),
                        &[Phase::Completed, Phase::Failed, Phase::Skipped],
                    )
                    .await
                }
            })
            .try_collect()
            .await?;
        for wfe in &ended {
            assert_eq!(
                phase(wfe),
                Some(Phase::Completed),
                "{}: {:?}",
                wfe.name_any(),
                wfe.status
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn five_executions_on_one_target_run_once_and_the_others_are_skipped_as_busy()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let ns = env
            .cluster
            .control_plane()
            .create_namespace("e2e-five")
            .await?;
        // Long-running, so that the execution holding the target is still running when the
        // others are decided.
        let bundle = env.cluster.bundle("long-running")?;
        let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), &ns);
        for i in 0..5 {
            wfes.create(
                &PostParams::default(),
                &workflow_execution(&ns, &format!("same-{i}"), bundle.clone(), "shared", None),
            )
            .await?;
        }
        let mut decided = Vec::new();
        for i in 0..5 {
            decided.push(
                wait_phase(
                    &wfes,
                    &format!("same-{i}"),
                    &[
                        Phase::Running,
                        Phase::Completed,
                        Phase::Failed,
                        Phase::Skipped,
                    ],
                )
                .await?,
            );
        }
        let running: Vec<&WorkflowExecution> = decided
            .iter()
            .filter(|w| phase(w) == Some(Phase::Running))
            .collect();
        assert_eq!(running.len(), 1, "exactly one runs: {decided:?}");
        let runner = running[0].name_any();
        for wfe in decided.iter().filter(|w| w.name_any() != runner) {
            let skip = wfe
                .status
                .as_ref()
                .and_then(|s| s.skip_details.as_ref())
                .ok_or_else(|| anyhow!("{} not skipped: {:?}", wfe.name_any(), wfe.status))?;
            assert_eq!(skip.reason, SkipReason::ResourceBusy, "{skip:?}");
            assert_eq!(
                skip.conflicting_workflow.as_ref().map(|c| c.name.as_str()),
                Some(runner.as_str()),
                "{skip:?}"
            );
        }
        // Only one PipelineRun exists for the target.
        let runs: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &env.exec_ns,
            &tekton_resource("PipelineRun"),
        );
        let run = child_name(running[0])?;
        assert!(runs.get_opt(&run).await?.is_some());
        // Ends the hour-long run.
        wfes.delete(&runner, &DeleteParams::default()).await?;
        Ok(())
    })
    .await
}

// ----------------------------------------------------------------------------- configuration

/// Tekton reads the runner service account to build the pod, so a missing one fails the TaskRun
/// `PodCreationFailed` (`serviceaccounts "…" not found. Maybe invalid TaskSpec`) even without the
/// ServiceAccount admission plugin, which this cluster leaves off; the mapping has no rule for that
/// reason and classifies the message (`*invalid*`).
#[tokio::test]
async fn a_runner_service_account_that_does_not_exist_fails_as_configuration_error()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let client = env.cluster.client().await?;
        let ns = env
            .cluster
            .control_plane()
            .create_namespace("e2e-missing-sa")
            .await?;
        let mut wfe = workflow_execution(
            &ns,
            "missing-sa",
            env.cluster.bundle("succeed")?,
            "missing-sa",
            None,
        );
        wfe.spec.execution_config = Some(Box::new(ExecutionConfig {
            timeout: None,
            service_account_name: Some(MISSING_RUNNER.to_string()),
        }));
        let done = run_to_end(&client, &wfe).await?;
        if let Ok(run) = child_name(&done) {
            let runs: Api<DynamicObject> = Api::namespaced_with(
                client.clone(),
                &env.exec_ns,
                &tekton_resource("PipelineRun"),
            );
            if runs.get_opt(&run).await?.is_some() {
                let objects = run_objects(&client, &env.exec_ns, &run).await?;
                record(
                    env.cluster,
                    &objects,
                    "missing-sa",
                    "the runner service account does not exist (no ServiceAccount admission)",
                )?;
            }
        }
        let details = failure(&done)?;
        assert_eq!(
            details.reason,
            FailureReason::ConfigurationError,
            "{details:?}"
        );
        assert!(!details.was_execution_failure, "{details:?}");
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------- quota

/// What real Tekton does when a ResourceQuota refuses a TaskRun's pod — keep the TaskRun
/// `Unknown`/`ExceededResourceQuota`, retry every minute, say only "Running" on the run, end it
/// `PipelineRunTimeout` with the quota text gone — and what the operator makes of it: the hold is
/// reported while the WFE runs (condition and Event), and the timeout fails it as
/// `ResourceExhausted`. The quota constrains only pods requesting an extended resource that only
/// the `quota` bundle requests, so the other tests sharing the execution namespace are unaffected.
#[tokio::test]
async fn an_exhausted_quota_is_reported_while_running_and_fails_the_execution_as_resource_exhausted()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(quota_scenario(env)).await
}

async fn quota_scenario(env: &OperatorEnv) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Event, ResourceQuota};

    let client = env.cluster.client().await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), &env.exec_ns);
    let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "no-widgets"},
        "spec": {"hard": {"requests.kubernaut.ai/widget": "0"}},
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    // Admission enforces a quota once the resourcequota controller has written its status.
    eventually("the quota's status is computed", || async {
        let q = quotas.get("no-widgets").await?;
        Ok(q.status.and_then(|s| s.hard).is_some().then_some(()))
    })
    .await?;

    let ns = env
        .cluster
        .control_plane()
        .create_namespace("e2e-quota")
        .await?;
    let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), &ns);
    let wfe = workflow_execution(
        &ns,
        "quota",
        env.cluster.bundle("quota")?,
        "quota",
        Some("30s"),
    );
    wfes.create(&PostParams::default(), &wfe).await?;

    // While the quota refuses the pod: Running, with the hold on ExecutionRunning.
    let held = eventually("the WFE reports the quota while running", || async {
        let current = wfes.get("quota").await?;
        let reported = current.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "ExecutionRunning"
                    && c.status == "False"
                    && c.reason == "ResourceExhausted"
                    && c.message.contains("exceeded quota")
            })
        });
        Ok(reported.then_some(current))
    })
    .await?;
    assert_eq!(phase(&held), Some(Phase::Running));
    let run = child_name(&held)?;
    let running = run_objects(&client, &env.exec_ns, &run).await?;
    record(
        env.cluster,
        &running,
        "quota-running",
        "a ResourceQuota allows no pod of the task; the run while the TaskRun waits on the quota",
    )?;
    assert!(
        running.iter().skip(1).any(|tr| condition(&tr.data)
            == ("Unknown".to_string(), "ExceededResourceQuota".to_string())),
        "the TaskRun waits on the quota"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let held_events = eventually("the ExecutionHeld Event", || async {
        let list = events
            .list(&ListParams::default().fields("involvedObject.name=quota"))
            .await?;
        let held: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("ExecutionHeld"))
            .collect();
        Ok((!held.is_empty()).then_some(held))
    })
    .await?;
    assert_eq!(held_events[0].type_.as_deref(), Some("Warning"));

    let done = wait_phase(&wfes, "quota", &[Phase::Completed, Phase::Failed]).await?;
    let finished = run_objects(&client, &env.exec_ns, &run).await?;
    record(
        env.cluster,
        &finished,
        "quota-final",
        "a ResourceQuota allows no pod of the task; executionConfig.timeout 30s; the run after its timeout",
    )?;
    assert_eq!(
        condition(&finished[0].data),
        ("False".to_string(), "PipelineRunTimeout".to_string()),
        "{}",
        finished[0].data["status"]
    );
    let details = assert_failure(&done, FailureReason::ResourceExhausted, false)?;
    assert!(details.message.contains("exceeded quota"), "{details:?}");
    // No pod was ever created, so no step ran.
    quotas
        .delete("no-widgets", &DeleteParams::default())
        .await?;
    Ok(())
}

// ------------------------------------------------------------------------------------ pending

/// A run created with `spec.status: PipelineRunPending` (a cluster's admission or queueing can
/// hold runs that way): Tekton reports `Unknown`/`PipelineRunPending`, sets no `startTime` and
/// creates no TaskRun, and the operator's mapping reads it as `Pending`. Rendered by the
/// operator's template into a namespace of its own, like the quota scenario.
#[tokio::test]
async fn a_run_held_pending_is_not_started_and_maps_to_pending() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(pending_scenario(env)).await
}

async fn pending_scenario(env: &OperatorEnv) -> anyhow::Result<()> {
    use workflowexecution_operator::{
        config::OperatorConfig,
        testing::{load_status_mapping, load_templates, render_pipeline_run},
    };

    let client = env.cluster.client().await?;
    let ns = env
        .cluster
        .create_run_namespace("e2e-pending", RUNNER)
        .await?;
    let mut config = OperatorConfig::default();
    config.execution.namespace = ns.clone();
    config.execution.service_account_name = RUNNER.to_string();
    config.templates.dir = repo().join("templates/workflowexecution");
    let templates =
        load_templates(&config.templates.dir).map_err(|e| anyhow!("loading the templates: {e}"))?;
    let mapping = load_status_mapping(&config.templates.dir)
        .map_err(|e| anyhow!("loading the status mapping: {e}"))?;
    let wfe = workflow_execution(
        &ns,
        "pending",
        env.cluster.bundle("succeed")?,
        "pending",
        None,
    );
    let mut rendered =
        render_pipeline_run(&wfe, &config, &templates).map_err(|e| anyhow!("rendering: {e}"))?;
    rendered["spec"]["status"] = Value::from("PipelineRunPending");
    let mut run: DynamicObject = serde_json::from_value(rendered)?;
    let name = run
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow!("the rendered PipelineRun has no name"))?;
    // The owner is the WorkflowExecution, which does not exist here.
    run.metadata.owner_references = None;
    let runs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &tekton_resource("PipelineRun"));
    runs.create(&PostParams::default(), &run).await?;

    let pending = eventually("Tekton reports the run pending", || async {
        let objects = run_objects(&client, &ns, &name).await?;
        let held = condition(&objects[0].data).1 == "PipelineRunPending";
        Ok(held.then_some(objects))
    })
    .await?;
    record(
        env.cluster,
        &pending,
        "pending-held",
        "the run is created with spec.status PipelineRunPending",
    )?;
    assert_eq!(condition(&pending[0].data).0, "Unknown");
    assert!(
        pending[0].data["status"]["startTime"].is_null(),
        "{}",
        pending[0].data["status"]
    );
    assert_eq!(pending.len(), 1, "no TaskRun: {pending:?}");
    assert_eq!(
        mapping.phase(&pending[0].data),
        Some("Pending"),
        "{}",
        pending[0].data["status"]
    );
    runs.delete(&name, &DeleteParams::default()).await?;
    Ok(())
}
