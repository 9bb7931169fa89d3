//! End to end on real Tekton Pipelines (the cluster of `kubernaut_test_harness::e2e`): what the
//! operator renders is what real Tekton runs, and the operator binary drives a
//! WorkflowExecution through it.
//!
//! 1. `a_rendered_pipeline_run_succeeds_on_real_tekton`: the PipelineRun our template renders,
//!    created as is, is resolved from a real bundle and runs to `Succeeded` — as the configured
//!    runner service account, with the WorkflowExecution's parameters reaching the tasks.
//! 2. `a_missing_bundle_fails_the_run_instead_of_leaving_it_waiting`: a bundle the registry does
//!    not hold fails the run with Tekton's resolution error (this needs the ResolutionRequest CRD's
//!    nullable status fields, see the harness's caveats).
//! 3. `the_operator_binary_completes_a_workflow_execution_on_real_tekton`: the
//!    operator process runs a WorkflowExecution to `Completed`.
//!
//! Needs `make e2e-deps` (the cluster's binaries) and, for 3, the operator's build
//! (`make e2e` makes both); without them the tests fail naming the command.

use std::{path::PathBuf, process::Child, time::Duration};

use anyhow::{Context as _, anyhow};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams},
};
use kubernaut_test_harness::e2e::{E2eCluster, spawn_operator, workflows::execution};
use serde_json::Value;
use workflowexecution_operator::{
    config::OperatorConfig,
    testing::{load_templates, render_pipeline_run},
    types::{self, Phase, WorkflowExecution},
};

/// The service account the workflows' tasks run as (the operator's `execution.serviceAccountName`).
const RUNNER: &str = "kubernaut-workflow-runner";

/// Generous: a run has several seconds of kwok stage delays and Tekton requeues on a shared,
/// busy machine.
const WAIT: Duration = Duration::from_secs(180);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tekton_resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("tekton.dev", "v1", kind))
}

fn operator_config(exec_ns: &str) -> OperatorConfig {
    let mut config = OperatorConfig::default();
    config.execution.namespace = exec_ns.to_string();
    config.execution.service_account_name = RUNNER.to_string();
    config.templates.dir = repo().join("templates/workflowexecution");
    config
}

fn workflow_execution(ns: &str, name: &str, bundle: String) -> WorkflowExecution {
    execution(ns, name, bundle, name, None, None)
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    kubernaut_test_harness::e2e::eventually(what, WAIT, check).await
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

/// Waits until the PipelineRun `ns/name` is done and returns it.
async fn finished_run(client: &Client, ns: &str, name: &str) -> anyhow::Result<DynamicObject> {
    let runs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &tekton_resource("PipelineRun"));
    let result = eventually(&format!("PipelineRun {ns}/{name} finished"), || async {
        let run = runs.get(name).await?;
        let (status, _) = condition(&run.data);
        Ok((status == "True" || status == "False").then_some(run))
    })
    .await;
    if result.is_err() {
        // What the run looked like when the wait ended says why.
        if let Ok(run) = runs.get(name).await {
            eprintln!("PipelineRun {ns}/{name}: {}", run.data["status"]);
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        for pod in pods.list(&ListParams::default()).await?.items {
            eprintln!(
                "pod {}: {}",
                pod.name_any(),
                serde_json::to_string(&pod.status).unwrap_or_default()
            );
        }
    }
    result
}

/// Runs a test body; when it fails, prints the cluster's logs before returning the error.
async fn logged<F>(cluster: &E2eCluster, body: F) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>>,
{
    let result = body.await;
    if result.is_err() {
        cluster.print_logs();
    }
    result
}

/// What the TaskRuns and pods of a finished run show: the tasks ran as `RUNNER` and got the
/// target as their parameter.
async fn assert_tasks_ran_as_runner(
    client: &Client,
    ns: &str,
    run: &str,
    target: &str,
) -> anyhow::Result<()> {
    let selector = ListParams::default().labels(&format!("tekton.dev/pipelineRun={run}"));
    let taskruns: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &tekton_resource("TaskRun"));
    let taskruns = taskruns.list(&selector).await?.items;
    assert_eq!(taskruns.len(), 2, "the workflow's two tasks ran");
    for tr in &taskruns {
        assert_eq!(condition(&tr.data).0, "True", "TaskRun {}", tr.name_any());
        assert_eq!(tr.data["spec"]["serviceAccountName"], RUNNER);
        let params = tr.data["spec"]["params"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "TARGET_RESOURCE" && p["value"] == target),
            "TaskRun {} has the target as its parameter: {params:?}",
            tr.name_any()
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods = pods.list(&selector).await?.items;
    assert_eq!(pods.len(), 2, "one pod per task");
    for pod in &pods {
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| anyhow!("a pod without spec"))?;
        assert_eq!(spec.service_account_name.as_deref(), Some(RUNNER));
        assert!(
            spec.node_name
                .as_deref()
                .is_some_and(|n| n.starts_with("kwok-node-")),
            "the scheduler placed pod {} on a kwok node",
            pod.name_any()
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_rendered_pipeline_run_succeeds_on_real_tekton() -> anyhow::Result<()> {
    let cluster = E2eCluster::shared().await?;
    let _logs = cluster.logs_on_failure();
    logged(cluster, rendered_run_succeeds(cluster)).await
}

/// Renders the PipelineRun of `wfe` with the shipped template and creates it in `ns`; returns
/// its name.
async fn create_rendered_run(
    client: &Client,
    ns: &str,
    wfe: &WorkflowExecution,
) -> anyhow::Result<String> {
    let config = operator_config(ns);
    let templates =
        load_templates(&config.templates.dir).map_err(|e| anyhow!("loading the templates: {e}"))?;
    let rendered =
        render_pipeline_run(wfe, &config, &templates).map_err(|e| anyhow!("rendering: {e}"))?;

    let mut run: DynamicObject = serde_json::from_value(rendered)?;
    let name = run
        .metadata
        .name
        .clone()
        .ok_or_else(|| anyhow!("the rendered PipelineRun has no name"))?;
    // The owner is the WorkflowExecution, which does not exist here; garbage collection would
    // delete a run whose owner is missing.
    run.metadata.owner_references = None;
    let runs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &tekton_resource("PipelineRun"));
    runs.create(&PostParams::default(), &run)
        .await
        .context("creating the rendered PipelineRun")?;
    Ok(name)
}

async fn rendered_run_succeeds(cluster: &E2eCluster) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let ns = cluster.create_run_namespace("e2e-render", RUNNER).await?;
    let wfe = workflow_execution(&ns, "render", cluster.bundle("succeed")?);
    let name = create_rendered_run(&client, &ns, &wfe).await?;

    let done = finished_run(&client, &ns, &name).await?;
    assert_eq!(
        condition(&done.data),
        ("True".to_string(), "Succeeded".to_string()),
        "status: {}",
        done.data["status"]
    );
    assert_tasks_ran_as_runner(&client, &ns, &name, &wfe.spec.target_resource).await
}

#[tokio::test]
async fn a_missing_bundle_fails_the_run_instead_of_leaving_it_waiting() -> anyhow::Result<()> {
    let cluster = E2eCluster::shared().await?;
    let _logs = cluster.logs_on_failure();
    logged(cluster, missing_bundle_fails(cluster)).await
}

async fn missing_bundle_fails(cluster: &E2eCluster) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    let ns = cluster.create_run_namespace("e2e-missing", RUNNER).await?;
    let bundle = format!(
        "{}/kubernaut/workflows/no-such-workflow:v1",
        cluster.registry().address
    );
    let wfe = workflow_execution(&ns, "missing", bundle);
    let name = create_rendered_run(&client, &ns, &wfe).await?;

    let done = finished_run(&client, &ns, &name).await?;
    let (status, reason) = condition(&done.data);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "CouldntGetPipeline"),
        "status: {}",
        done.data["status"]
    );
    Ok(())
}

/// The operator binary as a process of its own, logging to the cluster's directory.
struct OperatorProcess(Child);

impl OperatorProcess {
    fn spawn(cluster: &E2eCluster, config: &OperatorConfig) -> anyhow::Result<Self> {
        let child = spawn_operator(
            cluster,
            "operator",
            &format!(
                "execution:\n  namespace: {}\n  serviceAccountName: {}\ncooldown:\n  period: 5s\n\
                 templates:\n  dir: {}\naudit:\n  sink: log\n\
                 controller:\n  leaderElection: false\n  metricsAddr: 127.0.0.1:0\n  healthAddr: 127.0.0.1:0\n",
                config.execution.namespace,
                config.execution.service_account_name,
                config.templates.dir.display()
            ),
        )?;
        Ok(Self(child))
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_operator_binary_completes_a_workflow_execution_on_real_tekton() -> anyhow::Result<()> {
    let cluster = E2eCluster::shared().await?;
    let _logs = cluster.logs_on_failure();
    logged(cluster, operator_completes(cluster)).await
}

async fn operator_completes(cluster: &E2eCluster) -> anyhow::Result<()> {
    let client = cluster.client().await?;
    cluster
        .control_plane()
        .install_crds(&[types::crd()])
        .await?;
    let exec_ns = cluster.create_run_namespace("e2e-exec", RUNNER).await?;
    let ns = cluster.control_plane().create_namespace("e2e-wfe").await?;
    let config = operator_config(&exec_ns);
    let _operator = OperatorProcess::spawn(cluster, &config)?;

    let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), &ns);
    let wfe = workflow_execution(&ns, "scale-checkout", cluster.bundle("succeed")?);
    wfes.create(&PostParams::default(), &wfe).await?;

    let done = eventually("the WorkflowExecution finished", || async {
        let current = wfes.get("scale-checkout").await?;
        let phase = current.status.as_ref().and_then(|s| s.phase);
        Ok(matches!(phase, Some(Phase::Completed | Phase::Failed)).then_some(current))
    })
    .await?;
    let status = done.status.unwrap_or_default();
    assert_eq!(
        status.phase,
        Some(Phase::Completed),
        "status: {}",
        serde_json::to_string(&status)?
    );
    let run = status
        .pipeline_run_ref
        .ok_or_else(|| anyhow!("a Completed execution names its PipelineRun"))?;
    assert_tasks_ran_as_runner(&client, &exec_ns, &run.name, &wfe.spec.target_resource).await
}
