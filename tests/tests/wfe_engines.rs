//! An execution engine is data, not code: a third engine — its child a ConfigMap, its status
//! mapping reading the ConfigMap's `data.result` — is written as files into a copy of the shipped
//! template directory, listed in the configuration, and runs WorkflowExecutions through the
//! operator binary of this build, which was built before the files existed. The test plays the
//! engine's controller: it writes `data.result` into the ConfigMap the operator created.
//!
//! The operator runs as a process (`workflowexecution-operator run`) with an admin kubeconfig,
//! restricted to the test's namespace (`WATCH_NAMESPACE`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
};
use kubernaut_framework::{app::check_served, template::ChildKind};
use kubernaut_test_harness::{
    ControlPlane,
    checkout::{OperatorProcess, operator_binary},
    controlplane::LogsOnFailure,
    tekton,
};
use serde_json::{Value, json};
use support::WAIT;
use workflowexecution_operator::types::{
    self, FailureDetails, FailureReason, Phase, WorkflowExecution,
};

/// The third engine's directory, beside the shipped `tekton/` and `job/`.
const ENGINE: &str = "configmap";

/// The third engine's files, as `operators/workflowexecution/tests/fixtures/engines/configmap/`
/// holds them (the operator's unit tests load them too): a ConfigMap in the execution namespace
/// as the child, its `data.result` as the phase, no grandchildren (so a failed ConfigMap is an
/// execution failure), and a cancel file that marks the ConfigMap cancelled.
const ENGINE_FILES: [(&str, &str); 3] = [
    (
        "configmap.yaml.j2",
        include_str!(
            "../../operators/workflowexecution/tests/fixtures/engines/configmap/configmap.yaml.j2"
        ),
    ),
    (
        "status.yaml",
        include_str!(
            "../../operators/workflowexecution/tests/fixtures/engines/configmap/status.yaml"
        ),
    ),
    (
        "cancel.yaml",
        include_str!(
            "../../operators/workflowexecution/tests/fixtures/engines/configmap/cancel.yaml"
        ),
    ),
];

/// The shipped template directory.
fn shipped_templates() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates/workflowexecution")
}

/// Copies the directory `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The shipped templates plus the third engine, written into `dir`; returns the engine files'
/// time of writing.
fn write_templates(dir: &Path) -> anyhow::Result<SystemTime> {
    copy_dir(&shipped_templates(), dir)?;
    let engine = dir.join(ENGINE);
    std::fs::create_dir(&engine)?;
    for (file, content) in ENGINE_FILES {
        std::fs::write(engine.join(file), content)?;
    }
    Ok(std::fs::metadata(&engine)?.modified()?)
}

/// A WorkflowExecution namespace, an execution namespace, and the operator binary running on a
/// template directory holding the third engine, configured with `engines: [tekton, configmap]`.
struct Env {
    client: Client,
    ns: String,
    exec_ns: String,
    operator: OperatorProcess,
    _templates: tempfile::TempDir,
    _logs: LogsOnFailure,
}

impl Env {
    async fn start(prefix: &str) -> anyhow::Result<Env> {
        let cp = ControlPlane::shared().await?;
        let mut crds = tekton::crds();
        crds.push(types::crd());
        cp.install_crds(&crds).await?;
        let ns = cp.create_namespace(prefix).await?;
        let exec_ns = cp.create_namespace(&format!("{prefix}-exec")).await?;

        let binary = operator_binary()?;
        let templates = tempfile::tempdir()?;
        let dir = templates.path().join("workflowexecution");
        let written = write_templates(&dir)?;
        // The point of the test: the binary existed before the engine did.
        anyhow::ensure!(
            std::fs::metadata(&binary)?.modified()? <= written,
            "{} is newer than the engine files it is to run",
            binary.display()
        );
        let config = json!({
            "execution": {
                "namespace": exec_ns,
                "engines": ["tekton", ENGINE],
                "defaultEngine": "tekton",
            },
            "templates": {"dir": dir},
            "controller": {
                "metricsAddr": "127.0.0.1:0",
                "healthAddr": "127.0.0.1:0",
                "leaderElection": false,
            },
        });
        let config_file = templates.path().join("config.yaml");
        std::fs::write(&config_file, serde_yaml::to_string(&config)?)?;

        let mut command = Command::new(binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&config_file)
            .env_clear()
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("WATCH_NAMESPACE", &ns)
            .env("RUST_LOG", "info");
        let operator = OperatorProcess::spawn(command, &templates.path().join("operator.log"))?;
        Ok(Env {
            client: cp.client().await?,
            ns,
            exec_ns,
            operator,
            _templates: templates,
            _logs: cp.logs_on_failure(),
        })
    }

    fn wfes(&self) -> Api<WorkflowExecution> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The WorkflowExecutions as the API server stores them, every field kept.
    fn raw_wfes(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.ns,
            &ApiResource::erase::<WorkflowExecution>(&()),
        )
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.exec_ns)
    }

    fn pipeline_runs(&self) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun");
        Api::namespaced_with(
            self.client.clone(),
            &self.exec_ns,
            &ApiResource::from_gvk(&gvk),
        )
    }

    /// Creates WorkflowExecution `name` on `target` asking for `engine`.
    async fn create(&self, name: &str, target: &str, engine: &str) -> anyhow::Result<()> {
        let wfe: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "WorkflowExecution",
            "metadata": {"name": name},
            "spec": {
                "workflowRef": {
                    "workflowId": "restart-deployment",
                    "version": "1.0.0",
                    "containerImage": "registry.example.com/workflows/restart:v1",
                },
                "targetResource": target,
                "parameters": {"REPLICAS": "3"},
                "executionEngine": engine,
            },
        }))?;
        self.raw_wfes().create(&PostParams::default(), &wfe).await?;
        Ok(())
    }

    /// Fails with the operator's log, should the operator have exited.
    fn operator_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.operator.exited()? {
            anyhow::bail!(
                "the operator exited ({status}); its log:\n{}",
                self.operator.log()
            );
        }
        Ok(())
    }

    /// Polls `check` until it yields a value, failing after [`WAIT`] with `what` and the
    /// operator's log, or as soon as the operator exits.
    async fn wait<T>(
        &mut self,
        what: &str,
        mut check: impl AsyncFnMut(&Env) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.operator_alive()?;
            if let Some(value) = check(self).await? {
                return Ok(value);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; the operator's log:\n{}",
                self.operator.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until WorkflowExecution `name` is `phase`.
    async fn wait_phase(&mut self, name: &str, phase: Phase) -> anyhow::Result<WorkflowExecution> {
        let reached = self
            .wait(&format!("{name} to be {phase}"), async |env: &Env| {
                let wfe = env.wfes().get(name).await?;
                Ok((wfe.phase() == Some(phase)).then_some(wfe))
            })
            .await;
        match reached {
            Ok(wfe) => Ok(wfe),
            Err(error) => {
                let last = self
                    .raw_wfes()
                    .get(name)
                    .await
                    .map(|w| w.data["status"].clone());
                Err(error.context(format!("{name} is not {phase}; its status: {last:?}")))
            }
        }
    }

    /// Waits until WorkflowExecution `name` is `Failed`, returning why.
    async fn wait_failed(&mut self, name: &str) -> anyhow::Result<FailureDetails> {
        let failed = self.wait_phase(name, Phase::Failed).await?;
        failed
            .status
            .and_then(|s| s.failure_details)
            .map(|details| *details)
            .ok_or_else(|| anyhow::anyhow!("{name} failed without failureDetails"))
    }

    /// Waits for the ConfigMap the operator creates for WorkflowExecution `name`.
    async fn wait_config_map(&mut self, name: &str) -> anyhow::Result<ConfigMap> {
        let selector = format!("kubernaut.ai/workflow-execution={name}");
        self.wait(&format!("the ConfigMap of {name}"), async |env: &Env| {
            let found = env
                .config_maps()
                .list(&ListParams::default().labels(&selector))
                .await?;
            Ok(found.items.into_iter().next())
        })
        .await
    }

    /// Writes `data` into ConfigMap `name`, as the engine's controller would.
    async fn answer(&self, name: &str, data: Value) -> anyhow::Result<()> {
        self.config_maps()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": data})),
            )
            .await?;
        Ok(())
    }

    /// `status.executionEngine` of WorkflowExecution `name`, read as stored.
    async fn recorded_engine(&self, name: &str) -> anyhow::Result<Option<String>> {
        let raw = self.raw_wfes().get(name).await?;
        Ok(raw.data["status"]["executionEngine"]
            .as_str()
            .map(str::to_owned))
    }
}

#[tokio::test]
async fn a_third_engine_written_as_files_runs_without_recompiling() -> anyhow::Result<()> {
    let mut env = Env::start("wfe-engines").await?;

    // Completed: the ConfigMap says it succeeded.
    env.create("restart-nginx", "default/deployment/nginx", ENGINE)
        .await?;
    let config_map = env.wait_config_map("restart-nginx").await?;
    // The same lock name as the Tekton engine's PipelineRun for this target.
    assert_eq!(config_map.name_any(), "wfe-f3457dcc8fbcb6d9");
    let data = config_map.data.clone().unwrap_or_default();
    assert_eq!(data["workflowId"], "restart-deployment");
    assert_eq!(data["image"], "registry.example.com/workflows/restart:v1");
    assert_eq!(data["targetResource"], "default/deployment/nginx");
    assert_eq!(data["param.REPLICAS"], "3");
    let labels = config_map.labels();
    assert_eq!(labels["kubernaut.ai/source-namespace"], env.ns);
    assert_eq!(
        labels["kubernaut.ai/target-resource"],
        "default__deployment__nginx"
    );
    env.wait_phase("restart-nginx", Phase::Running).await?;
    env.answer(&config_map.name_any(), json!({"result": "succeeded"}))
        .await?;
    let completed = env.wait_phase("restart-nginx", Phase::Completed).await?;
    assert!(completed.status.and_then(|s| s.failure_details).is_none());
    assert_eq!(
        env.recorded_engine("restart-nginx").await?.as_deref(),
        Some(ENGINE)
    );

    // Failed: the ConfigMap says it failed, and why; the mapping's classification names it.
    env.create("scale-api", "default/deployment/api", ENGINE)
        .await?;
    let config_map = env.wait_config_map("scale-api").await?;
    env.answer(
        &config_map.name_any(),
        json!({"result": "failed", "reason": "ScriptFailed", "message": "exit status 3"}),
    )
    .await?;
    let details = env.wait_failed("scale-api").await?;
    assert_eq!(details.reason, FailureReason::TaskFailed);
    assert_eq!(details.message, "exit status 3");
    // No grandchildren section: nothing says the work did not run, so the target is blocked.
    assert!(details.was_execution_failure);

    // Deleted before it finished: nothing says the work did not start either.
    env.create("drain-db", "default/statefulset/db", ENGINE)
        .await?;
    let config_map = env.wait_config_map("drain-db").await?;
    env.wait_phase("drain-db", Phase::Running).await?;
    env.config_maps()
        .delete(&config_map.name_any(), &Default::default())
        .await?;
    let details = env.wait_failed("drain-db").await?;
    assert_eq!(details.reason, FailureReason::Unknown);
    assert!(details.was_execution_failure);

    // None ran on the default engine.
    let runs = env.pipeline_runs().list(&ListParams::default()).await?;
    assert!(runs.items.is_empty(), "no PipelineRun: {:?}", runs.items);
    Ok(())
}

#[tokio::test]
async fn an_engine_that_is_not_configured_fails_naming_the_field() -> anyhow::Result<()> {
    let mut env = Env::start("wfe-engines-unknown").await?;
    env.create("restart-nginx", "default/deployment/nginx", "argo")
        .await?;
    let details = env.wait_failed("restart-nginx").await?;
    assert_eq!(details.reason, FailureReason::ConfigurationError);
    assert!(
        details.message.contains("spec.executionEngine"),
        "{}",
        details.message
    );
    assert!(!details.was_execution_failure);
    let config_maps = env
        .config_maps()
        .list(&ListParams::default().labels("kubernaut.ai/workflow-execution"))
        .await?;
    assert!(config_maps.items.is_empty());
    let runs = env.pipeline_runs().list(&ListParams::default()).await?;
    assert!(runs.items.is_empty());
    Ok(())
}

/// An engine's kinds may be core ones (a ConfigMap here, the Job engine's Pods): the operator
/// finds them served under `/api/v1`, and still names a core kind the cluster does not serve.
#[tokio::test]
async fn core_kinds_are_found_served() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    let client = cp.client().await?;
    let kind = |api_version: &str, kind: &str| ChildKind {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
    };
    check_served(&client, &kind("v1", "ConfigMap")).await?;
    check_served(&client, &kind("v1", "Pod")).await?;
    check_served(&client, &kind("batch/v1", "Job")).await?;
    let error = check_served(&client, &kind("v1", "ConfigMapz"))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a kind that does not exist was found served"))?;
    assert!(
        error.to_string().contains("v1 has no configmapz"),
        "{error}"
    );
    Ok(())
}
