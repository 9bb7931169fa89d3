//! Shared fixture of the WorkflowExecution integration tests: a real control plane, the CRDs, the
//! Tekton simulator and the operator running in-process against a namespace of its own.
#![allow(dead_code)]

pub mod audit_receiver;
pub mod metrics;

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, PostParams},
};
use kubernaut_framework::{
    config::ConfigStore,
    runtime::{ParentWatch, Running},
};
use kubernaut_test_harness::{
    ControlPlane,
    controlplane::LogsOnFailure,
    simulator::{Scenario, Simulator, SimulatorConfig},
    tekton,
};
use serde_json::json;
use workflowexecution_operator::{
    audit::Auditor,
    config::OperatorConfig,
    controller::State,
    operator::{self, runtime_settings},
    types::{self, Phase, WorkflowExecution},
};

/// The repository's template directory.
pub fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates/workflowexecution")
}

/// A test environment: WFE namespace, execution namespace, simulator and operator.
pub struct Env {
    pub cp: &'static ControlPlane,
    pub client: Client,
    pub ns: String,
    pub exec_ns: String,
    pub config: OperatorConfig,
    pub operator: Option<(Running<WorkflowExecution, State>, Auditor)>,
    pub simulator: Simulator,
    /// The operator's client when not an admin one (see [`OperatorSetup`]).
    operator_client: Option<Client>,
    /// The operator's parent watch when not the test namespace (see [`OperatorSetup`]).
    parents: Option<ParentWatch>,
    _logs: LogsOnFailure,
}

/// How [`Env::with_operator`] runs the operator instead of [`Env::new`]'s defaults.
pub struct OperatorSetup {
    /// The client the operator uses (for example a ServiceAccount's) instead of an admin client.
    pub client: Client,
    /// An existing execution namespace instead of a fresh one.
    pub exec_ns: Option<String>,
    /// Which WorkflowExecutions the operator watches instead of the test namespace's.
    pub parents: Option<ParentWatch>,
}

/// The config every test starts from: fast cooldown and backoff, local ports, no leader election.
pub fn test_config(exec_ns: &str) -> OperatorConfig {
    let mut config = OperatorConfig::default();
    config.execution.namespace = exec_ns.to_string();
    config.templates.dir = templates_dir();
    config.cooldown.period = Duration::from_secs(2);
    config.backoff.base = Duration::from_millis(500);
    config.backoff.max = Duration::from_secs(4);
    config.controller.metrics_addr = "127.0.0.1:0".parse().unwrap();
    config.controller.health_addr = "127.0.0.1:0".parse().unwrap();
    config.controller.leader_election = false;
    config
}

impl Env {
    /// Set up everything, with `tune` adjusting the config before the operator starts.
    pub async fn new(prefix: &str, tune: impl FnOnce(&mut OperatorConfig)) -> anyhow::Result<Env> {
        Env::build(prefix, None, tune).await
    }

    /// Like [`Env::new`], with the operator running as `setup` says.
    pub async fn with_operator(
        prefix: &str,
        setup: OperatorSetup,
        tune: impl FnOnce(&mut OperatorConfig),
    ) -> anyhow::Result<Env> {
        Env::build(prefix, Some(setup), tune).await
    }

    async fn build(
        prefix: &str,
        setup: Option<OperatorSetup>,
        tune: impl FnOnce(&mut OperatorConfig),
    ) -> anyhow::Result<Env> {
        init_tracing();
        let cp = ControlPlane::shared().await?;
        let mut crds = tekton::crds();
        crds.push(types::crd());
        cp.install_crds(&crds).await?;
        let ns = cp.create_namespace(prefix).await?;
        let exec_ns = match setup.as_ref().and_then(|s| s.exec_ns.clone()) {
            Some(exec_ns) => exec_ns,
            None => cp.create_namespace(&format!("{prefix}-exec")).await?,
        };
        let client = cp.client().await?;
        let simulator = Simulator::start(
            client.clone(),
            SimulatorConfig {
                namespace: Some(exec_ns.clone()),
                ..Default::default()
            },
        );
        let mut config = test_config(&exec_ns);
        tune(&mut config);
        let mut env = Env {
            cp,
            client,
            ns,
            exec_ns,
            config,
            operator: None,
            simulator,
            operator_client: setup.as_ref().map(|s| s.client.clone()),
            parents: setup.and_then(|s| s.parents),
            _logs: cp.logs_on_failure(),
        };
        env.start_operator().await?;
        Ok(env)
    }

    /// Start (or restart) the operator in-process.
    pub async fn start_operator(&mut self) -> anyhow::Result<()> {
        let settings = runtime_settings(&self.config);
        let store = Arc::new(ConfigStore::new(self.config.clone()));
        let parents = self.parents.clone().unwrap_or_else(|| ParentWatch {
            namespace: Some(self.ns.clone()),
            selector: None,
        });
        let client = match &self.operator_client {
            Some(client) => client.clone(),
            None => self.cp.client().await?,
        };
        let started = operator::start(client, store, settings, parents).await?;
        self.operator = Some(started);
        Ok(())
    }

    /// Stop the operator gracefully.
    pub async fn stop_operator(&mut self) -> anyhow::Result<()> {
        if let Some((running, auditor)) = self.operator.take() {
            running.shutdown().await?;
            auditor.shutdown().await;
        }
        Ok(())
    }

    pub fn wfes(&self) -> Api<WorkflowExecution> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn runs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.exec_ns,
            &tekton::pipelinerun_resource(),
        )
    }

    pub fn taskruns(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.exec_ns,
            &tekton::taskrun_resource(),
        )
    }

    /// Create a WFE running `scenario` on `target`.
    pub async fn create(
        &self,
        name: &str,
        workflow_id: &str,
        target: &str,
        scenario: Scenario,
    ) -> anyhow::Result<WorkflowExecution> {
        let wfe = wfe(name, workflow_id, target, scenario, json!({}));
        Ok(self.wfes().create(&PostParams::default(), &wfe).await?)
    }

    /// Wait until `name` satisfies `pred`, returning it.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&WorkflowExecution) -> bool,
    ) -> anyhow::Result<WorkflowExecution> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let current = self.wfes().get_opt(name).await?;
            if let Some(wfe) = &current
                && pred(wfe)
            {
                return Ok(wfe.clone());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{name} never became {what}; last seen: {}",
                    serde_json::to_string_pretty(&current.map(|w| w.status)).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until `name` reaches `phase`.
    pub async fn wait_phase(&self, name: &str, phase: Phase) -> anyhow::Result<WorkflowExecution> {
        self.wait_for(name, phase.as_str(), |w| w.phase() == Some(phase))
            .await
    }

    /// Wait until `name` is gone.
    pub async fn wait_gone(&self, name: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.wfes().get_opt(name).await?.is_some() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{name} was never deleted"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The PipelineRuns in the execution namespace.
    pub async fn run_names(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .runs()
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|r| r.name_any())
            .collect())
    }

    /// Create `wfe` in the WFE namespace.
    pub async fn create_wfe(&self, wfe: &WorkflowExecution) -> anyhow::Result<WorkflowExecution> {
        Ok(self.wfes().create(&PostParams::default(), wfe).await?)
    }

    /// The running operator.
    pub fn running(&self) -> &Running<WorkflowExecution, State> {
        &self.operator.as_ref().expect("the operator is running").0
    }

    /// The operator's `/metrics` page, fetched over HTTP.
    pub async fn scrape(&self) -> anyhow::Result<metrics::Scrape> {
        metrics::Scrape::fetch(self.running().metrics_addr()).await
    }

    /// Wait until the PipelineRun `name` no longer exists.
    pub async fn wait_run_gone(&self, name: &str) -> anyhow::Result<()> {
        eventually(&format!("PipelineRun {name} deleted"), WAIT, || async {
            Ok(self.runs().get_opt(name).await?.is_none().then_some(()))
        })
        .await
    }

    /// The Events about the WFE `name`, oldest first.
    pub async fn events_for(&self, name: &str) -> anyhow::Result<Vec<Event>> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        let selector = format!("involvedObject.name={name},involvedObject.kind=WorkflowExecution");
        let mut events = api
            .list(&ListParams::default().fields(&selector))
            .await?
            .items;
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        Ok(events)
    }

    /// Annotate the WFE `name` with the block-clearing annotation and `reason`.
    pub async fn clear_block(&self, name: &str, reason: &str) -> anyhow::Result<()> {
        let annotation = workflowexecution_operator::controller::CLEAR_BLOCK_ANNOTATION;
        self.wfes()
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"metadata": {"annotations": {annotation: reason}}}),
                ),
            )
            .await?;
        Ok(())
    }

    /// Wait until an Event with `reason` about the WFE `name` exists, returning it.
    pub async fn wait_event(&self, name: &str, reason: &str) -> anyhow::Result<Event> {
        eventually(&format!("Event {reason} about {name}"), WAIT, || async {
            Ok(self
                .events_for(name)
                .await?
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason)))
        })
        .await
    }
}

/// The default deadline of every wait: generous, because the tests share two cores.
pub const WAIT: Duration = Duration::from_secs(60);

/// Poll `check` every 50ms until it yields a value; fail naming `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Send the operator's logs to the test output (shown for failing tests); `RUST_LOG` filters,
/// default `info` for the operator and framework crates.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "warn,workflowexecution_operator=info,kubernaut_framework=info",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A `WorkflowExecution`'s status, or the default when it has none yet.
pub fn status_of(wfe: &WorkflowExecution) -> types::WorkflowExecutionStatus {
    wfe.status.clone().unwrap_or_default()
}

/// A WorkflowExecution object.
pub fn wfe(
    name: &str,
    workflow_id: &str,
    target: &str,
    scenario: Scenario,
    parameters: serde_json::Value,
) -> WorkflowExecution {
    serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": name},
        "spec": {
            "workflowRef": {"workflowId": workflow_id, "version": "v1", "containerImage": scenario.bundle()},
            "targetResource": target,
            "parameters": parameters,
        }
    }))
    .expect("a valid WorkflowExecution")
}
