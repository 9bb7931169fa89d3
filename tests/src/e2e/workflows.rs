//! What the end-to-end tests of WorkflowExecutions share: one operator process per test binary
//! ([`OperatorEnv`]), the WorkflowExecution they create ([`execution`]) and the ways they wait for
//! and read its outcome.

use std::{future::Future, path::PathBuf, process::Child, sync::Mutex, time::Duration};

use anyhow::{anyhow, bail, ensure};
use kube::{Api, Client, ResourceExt, api::PostParams};
use workflowexecution_operator::types::{
    self, ExecutionConfig, FailureDetails, FailureReason, Phase, WorkflowExecution,
    WorkflowExecutionSpec, WorkflowRef,
};

use super::{E2eCluster, spawn_operator};

/// How long a test waits for an outcome. Generous: a run has several seconds of kwok stage delays
/// and controller requeues on a shared, busy machine.
pub const WAIT: Duration = Duration::from_secs(240);

/// The phases an execution ends in.
pub const ENDED: &[Phase] = &[Phase::Completed, Phase::Failed, Phase::Skipped];

/// The cluster, the operator serving it, and the namespace the workflows run in.
pub struct OperatorEnv {
    /// The shared end-to-end cluster.
    pub cluster: &'static E2eCluster,
    /// The execution namespace the operator runs the workflows in.
    pub exec_ns: String,
    /// The operator's name: its config and log are `<cluster dir>/<name>.{yaml,log}`.
    name: String,
    /// Kept so that the process is not reaped behind the exit hook's back.
    _operator: Mutex<Child>,
}

impl OperatorEnv {
    /// Installs the WorkflowExecution CRD on the shared cluster, creates an execution namespace
    /// (`ns_prefix`, with the service account `runner`) and starts the operator `name` on it. Its
    /// config is the execution namespace and runner, `execution_extra` (further lines of the
    /// `execution` section, each indented by two spaces), a 5 s cooldown (no scenario waits for one),
    /// the repository's templates, the log audit sink and no leader election.
    ///
    /// # Errors
    ///
    /// When the cluster, the namespace or the operator cannot be started.
    pub async fn start(
        name: &str,
        ns_prefix: &str,
        runner: &str,
        execution_extra: &str,
    ) -> anyhow::Result<OperatorEnv> {
        let cluster = E2eCluster::shared().await?;
        cluster
            .control_plane()
            .install_crds(&[types::crd()])
            .await?;
        let exec_ns = cluster.create_run_namespace(ns_prefix, runner).await?;
        let templates =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates/workflowexecution");
        let operator = spawn_operator(
            cluster,
            name,
            &format!(
                "execution:\n  namespace: {exec_ns}\n  serviceAccountName: {runner}\n{execution_extra}\
                 cooldown:\n  period: 5s\n\
                 templates:\n  dir: {}\naudit:\n  sink: log\n\
                 controller:\n  leaderElection: false\n  metricsAddr: 127.0.0.1:0\n  healthAddr: 127.0.0.1:0\n",
                templates.display()
            ),
        )?;
        Ok(OperatorEnv {
            cluster,
            exec_ns,
            name: name.to_string(),
            _operator: Mutex::new(operator),
        })
    }

    /// Runs a test body; when it fails, prints the cluster's logs and the last 60 lines of the
    /// operator's before returning the error.
    ///
    /// # Errors
    ///
    /// The body's error.
    pub async fn logged<F>(&self, body: F) -> anyhow::Result<()>
    where
        F: Future<Output = anyhow::Result<()>>,
    {
        let result = body.await;
        if result.is_err() {
            self.cluster.print_logs();
            let file = format!("{}.log", self.name);
            if let Ok(log) = std::fs::read_to_string(self.cluster.dir().join(&file)) {
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("----- {file} (last 60 lines) -----");
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
        result
    }
}

/// One scenario's share of the cluster: a namespace of its own and its WorkflowExecutions.
pub struct Scenario {
    /// A client of the cluster.
    pub client: Client,
    /// The scenario's namespace.
    pub ns: String,
    /// The WorkflowExecutions of [`Scenario::ns`].
    pub wfes: Api<WorkflowExecution>,
}

impl OperatorEnv {
    /// A scenario in a new namespace `ns_prefix-…`.
    ///
    /// # Errors
    ///
    /// When the client or the namespace cannot be made.
    pub async fn scenario(&self, ns_prefix: &str) -> anyhow::Result<Scenario> {
        let client = self.cluster.client().await?;
        let ns = self
            .cluster
            .control_plane()
            .create_namespace(ns_prefix)
            .await?;
        let wfes = Api::namespaced(client.clone(), &ns);
        Ok(Scenario { client, ns, wfes })
    }
}

impl Scenario {
    /// Creates `wfe` in the scenario's namespace.
    ///
    /// # Errors
    ///
    /// When the API server refuses it.
    pub async fn create(&self, wfe: &WorkflowExecution) -> anyhow::Result<()> {
        self.wfes.create(&PostParams::default(), wfe).await?;
        Ok(())
    }

    /// Creates `wfe` and waits until it has ended ([`ENDED`]); returns it as it ended.
    ///
    /// # Errors
    ///
    /// When it cannot be created or does not end within [`WAIT`].
    pub async fn run_to_end(&self, wfe: &WorkflowExecution) -> anyhow::Result<WorkflowExecution> {
        self.create(wfe).await?;
        wait_phase(&self.wfes, &wfe.name_any(), ENDED).await
    }
}

/// A WorkflowExecution `ns/name` of the workflow `scale-deployment` (parameter `REPLICAS=3`)
/// packaged as `image`, against the deployment `target` of `ns`, with an optional timeout and
/// execution engine.
pub fn execution(
    ns: &str,
    name: &str,
    image: String,
    target: &str,
    timeout: Option<&str>,
    engine: Option<&str>,
) -> WorkflowExecution {
    let mut wfe = WorkflowExecution::new(
        name,
        WorkflowExecutionSpec {
            workflow_ref: WorkflowRef {
                workflow_id: "scale-deployment".into(),
                version: "1.0.0".into(),
                container_image: image,
                container_digest: None,
            },
            target_resource: format!("{ns}/deployment/{target}"),
            parameters: [("REPLICAS".to_string(), "3".to_string())].into(),
            confidence: Some(0.9),
            rationale: Some("end-to-end test".into()),
            remediation_request_ref: None,
            execution_config: timeout.map(|t| {
                Box::new(ExecutionConfig {
                    timeout: Some(t.to_string()),
                    service_account_name: None,
                })
            }),
            execution_engine: engine.map(str::to_string),
        },
    );
    wfe.metadata.namespace = Some(ns.to_string());
    wfe
}

/// [`super::eventually`] within [`WAIT`].
///
/// # Errors
///
/// `what` did not happen within [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    super::eventually(what, WAIT, check).await
}

/// The phase `wfe` reports, if any.
pub fn phase(wfe: &WorkflowExecution) -> Option<Phase> {
    wfe.status.as_ref().and_then(|s| s.phase)
}

/// Waits until the WorkflowExecution `name` reaches one of `phases`, and returns it.
///
/// # Errors
///
/// It did not within [`WAIT`].
pub async fn wait_phase(
    wfes: &Api<WorkflowExecution>,
    name: &str,
    phases: &[Phase],
) -> anyhow::Result<WorkflowExecution> {
    eventually(
        &format!("WorkflowExecution {name} in one of {phases:?}"),
        || async {
            let current = wfes.get(name).await?;
            Ok(phase(&current)
                .is_some_and(|p| phases.contains(&p))
                .then_some(current))
        },
    )
    .await
}

/// The failure details of a Failed `wfe`.
///
/// # Errors
///
/// `wfe` is not Failed or has no failure details.
pub fn failure(wfe: &WorkflowExecution) -> anyhow::Result<FailureDetails> {
    let status = wfe
        .status
        .as_ref()
        .ok_or_else(|| anyhow!("{} has no status", wfe.name_any()))?;
    if status.phase != Some(Phase::Failed) {
        bail!(
            "{} is not Failed: {}",
            wfe.name_any(),
            serde_json::to_string(status)?
        );
    }
    status
        .failure_details
        .as_deref()
        .cloned()
        .ok_or_else(|| anyhow!("a Failed execution without failureDetails"))
}

/// The failure details of `wfe`, checked: it is Failed for `reason`, and a step of its workflow
/// ran (`wasExecutionFailure`) exactly when `during_execution`.
///
/// # Errors
///
/// `wfe` is not Failed, or failed otherwise.
pub fn assert_failure(
    wfe: &WorkflowExecution,
    reason: FailureReason,
    during_execution: bool,
) -> anyhow::Result<FailureDetails> {
    let details = failure(wfe)?;
    ensure!(details.reason == reason, "not {reason}: {details:?}");
    ensure!(
        details.was_execution_failure == during_execution,
        "wasExecutionFailure is not {during_execution}: {details:?}"
    );
    Ok(details)
}

/// The name of the child (PipelineRun, Job) the operator recorded for `wfe`.
///
/// # Errors
///
/// `wfe` names no child.
pub fn child_name(wfe: &WorkflowExecution) -> anyhow::Result<String> {
    wfe.status
        .as_ref()
        .and_then(|s| s.pipeline_run_ref.as_ref())
        .map(|r| r.name.clone())
        .ok_or_else(|| anyhow!("{} names no child", wfe.name_any()))
}
