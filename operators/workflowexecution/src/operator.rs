//! Starting the WorkflowExecution operator: configuration, Tekton presence check, templates,
//! status mapping, metrics, audit and the framework runtime.
//!
//! [`start`] is what `workflowexecution-operator run` calls and what the integration tests call
//! in-process; [`run`] adds signal handling and config hot reload.

use std::{path::PathBuf, sync::Arc, time::Duration};

use kube::{Client, api::ApiResource, core::GroupVersionKind};
use kubernaut_framework::{
    config::ConfigStore,
    own_writes::OwnWrites,
    runtime::{
        ChildWatch, LeaderElectionSettings, Operator, ParentWatch, Running, RuntimeError,
        RuntimeSettings, default_identity,
    },
    template::ChildKind,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    audit::{self, AuditError},
    config::OperatorConfig,
    controller::{self, State},
    metrics::Metrics,
    pipelinerun::{
        self, ANNOTATION_WORKFLOW_EXECUTION, LABEL_SOURCE_NAMESPACE, LABEL_WORKFLOW_EXECUTION,
    },
    templates,
    types::WorkflowExecution,
};

/// The controller's name: Events' reporting controller and the audit actor.
pub const CONTROLLER_NAME: &str = "workflowexecution-controller";

/// Why the operator could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// A kind the templates create or read (the status mapping's `child` and
    /// `grandchildren.child`) is not served by the cluster.
    #[error(
        "the {kind} API is not served by this cluster: install what serves it (the shipped templates need Tekton Pipelines) ({message})"
    )]
    KindNotServed {
        /// The kind, as `apiVersion, Kind=…`.
        kind: String,
        /// What the API server said instead.
        message: String,
    },
    /// The templates failed to load.
    #[error("loading the PipelineRun template from {dir}: {message}")]
    Templates {
        /// The template directory.
        dir: PathBuf,
        /// The error.
        message: String,
    },
    /// The status mapping failed to load.
    #[error("loading the status mapping: {message}")]
    StatusMapping {
        /// The template directory.
        dir: PathBuf,
        /// The error (it names the file).
        message: String,
    },
    /// The cancel file failed to load.
    #[error("loading the cancel file from {dir}: {message}")]
    Cancel {
        /// The template directory.
        dir: PathBuf,
        /// The error.
        message: String,
    },
    /// Metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(#[from] kubernaut_framework::metrics::MetricError),
    /// The audit sink could not be set up.
    #[error("setting up the audit sink: {0}")]
    Audit(#[from] AuditError),
    /// The runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// `tekton.dev/v1` PipelineRun.
pub fn pipelinerun_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun"),
        "pipelineruns",
    )
}

/// `tekton.dev/v1` TaskRun.
pub fn taskrun_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tekton.dev", "v1", "TaskRun"),
        "taskruns",
    )
}

/// The API resource of a kind named in a template or mapping file (plural guessed the way
/// kube does: `TaskRun` → `taskruns`).
pub fn resource_of(kind: &ChildKind) -> ApiResource {
    let (group, version) = kind
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", kind.api_version.as_str()));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind.kind))
}

/// Fail unless the cluster serves `kind` (the API group version lists its plural). A kind of the
/// core group (`apiVersion: v1`: a ConfigMap, a Pod) is looked up under `/api/v1`, every other
/// under `/apis/<group>/<version>`.
///
/// # Errors
/// [`StartError::KindNotServed`] naming what was found instead.
pub async fn check_served(client: &Client, kind: &ChildKind) -> Result<(), StartError> {
    let resource = resource_of(kind);
    let missing = |message: String| StartError::KindNotServed {
        kind: kind.to_string(),
        message,
    };
    let listed = if resource.group.is_empty() {
        client.list_core_api_resources(&resource.version).await
    } else {
        client.list_api_group_resources(&kind.api_version).await
    };
    match listed {
        Ok(list) if list.resources.iter().any(|r| r.name == resource.plural) => Ok(()),
        Ok(_) => Err(missing(format!(
            "{} has no {} resource",
            kind.api_version, resource.plural
        ))),
        Err(e) => Err(missing(e.to_string())),
    }
}

/// Runtime settings derived from the operator config.
pub fn runtime_settings(config: &OperatorConfig) -> RuntimeSettings {
    let mut settings = RuntimeSettings::new(CONTROLLER_NAME);
    settings.metrics_addr = config.controller.metrics_addr;
    settings.health_addr = config.controller.health_addr;
    settings.concurrency = config.controller.concurrency;
    settings.template_poll = config.templates.poll_interval;
    if config.controller.leader_election {
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|ns| !ns.is_empty())
            .unwrap_or_else(|| "kubernaut-system".to_string());
        settings.leader_election = Some(LeaderElectionSettings::new(
            config.controller.lease_name.clone(),
            namespace,
            default_identity(),
        ));
    }
    settings
}

/// Start the operator in the background with `config`; returns once its endpoints listen.
///
/// # Errors
/// [`StartError`] when a kind of the status mapping (Tekton's, with the shipped templates) is not
/// served, or templates, mapping, metrics, audit or the runtime cannot be set up.
pub async fn start(
    client: Client,
    config: Arc<ConfigStore<OperatorConfig>>,
    settings: RuntimeSettings,
    parents: ParentWatch,
) -> Result<(Running<WorkflowExecution, State>, audit::Auditor), StartError> {
    let current = config.current();
    let dir = current.templates.dir.clone();
    let store = templates::load_template_store(&dir).map_err(|e| StartError::Templates {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    let mapping = templates::load_status_mapping(&dir).map_err(|e| StartError::StatusMapping {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    let cancel = templates::load_cancel_spec(&dir).map_err(|e| StartError::Cancel {
        dir: dir.clone(),
        message: e.to_string(),
    })?;

    // The kinds are data: the run (the mapping's `child`) and the objects that carry its failure
    // facts (`grandchildren.child`).
    check_served(&client, mapping.child()).await?;
    if let Some(kind) = mapping.grandchild_kind() {
        check_served(&client, kind).await?;
    }
    let pipelinerun = resource_of(mapping.child());
    let taskrun = mapping
        .grandchild_kind()
        .map_or_else(taskrun_resource, resource_of);
    let watch_of = |resource: ApiResource| ChildWatch {
        resource,
        namespace: Some(current.execution.namespace.clone()),
        selector: LABEL_WORKFLOW_EXECUTION.to_string(),
        parent_labels: (
            LABEL_WORKFLOW_EXECUTION.to_string(),
            LABEL_SOURCE_NAMESPACE.to_string(),
        ),
        // Names may be 253 characters long; the label carries a shortened form.
        parent_name_annotation: Some(ANNOTATION_WORKFLOW_EXECUTION.to_string()),
    };
    let operator = Operator::<WorkflowExecution>::new(client, settings)
        .parents(parents)
        // Lock and cooldown decisions read the WFEs on one target, never the whole cache.
        .index_parents(|wfe: &WorkflowExecution| {
            Some(crate::types::target_key(&wfe.spec.target_resource))
        })
        .children(watch_of(pipelinerun.clone()))
        // The reconciler reads only identity, labels and status from cached runs.
        .prune_children(pipelinerun::prune_cached_run)
        // Tekton copies the run's labels and annotations onto its TaskRuns, so they map to the
        // same WorkflowExecution.
        .grandchildren(
            watch_of(taskrun.clone()),
            crate::task_runs::prune_cached_task_run,
        )
        .templates(Arc::new(store), None);
    let registry = operator.registry().clone();
    let metrics = Metrics::register(&registry)?;
    let auditor = audit::start(&current.audit, &registry)?;
    let state = State {
        config,
        mapping: Arc::new(mapping),
        cancel: Arc::new(cancel),
        auditor: auditor.clone(),
        metrics,
        pipelinerun,
        taskrun,
        own_writes: OwnWrites::new(),
    };
    info!(
        namespace = %current.execution.namespace,
        templates = %dir.display(),
        "starting the WorkflowExecution operator"
    );
    for warning in current.warnings() {
        warn!("{warning}");
    }
    let running = operator.start(controller::reconcile, state).await?;
    Ok((running, auditor))
}

/// Run the operator until SIGTERM/SIGINT: [`start`], reload the config file every `reload_every`
/// (keeping the last good config; `templates`, when given, overrides `templates.dir` on every
/// load as it did at start-up), then shut down gracefully and flush the audit buffer.
///
/// A reload that holds back restart-only changes, or that fails, is logged once per distinct
/// file content, not at every reload.
///
/// # Errors
/// [`StartError`] from [`start`].
pub async fn run(
    client: Client,
    config: OperatorConfig,
    file: Option<PathBuf>,
    templates: Option<PathBuf>,
    reload_every: Duration,
) -> Result<(), StartError> {
    let settings = runtime_settings(&config);
    let store = Arc::new(ConfigStore::new(config));
    // WATCH_NAMESPACE restricts the operator to one namespace's WorkflowExecutions.
    let parents = ParentWatch {
        namespace: std::env::var("WATCH_NAMESPACE")
            .ok()
            .filter(|ns| !ns.is_empty()),
        selector: None,
    };
    let (running, auditor) = start(client, store.clone(), settings, parents).await?;
    let shutdown = running.shutdown_token();

    let reloader = {
        let store = store.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(reload_every);
            tick.tick().await;
            // What was last reported, so that a file waiting for a restart (or an invalid file
            // left in place) is logged once, not at every tick.
            let mut reported = String::new();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let running = store.current();
                let loaded = load_config(file.as_deref(), templates.as_deref());
                let report = match &loaded {
                    Ok(loaded) => serde_json::to_string(loaded).unwrap_or_default(),
                    Err(e) => e.to_string(),
                };
                let first_report = report != reported;
                reported = report;
                let loaded = loaded.map(|loaded| {
                    let (applied, held_back) = loaded.for_live_reload(&running);
                    if !held_back.is_empty() && first_report {
                        warn!(
                            keys = %held_back.join(", "),
                            "configuration changes that need a restart were not applied: {}",
                            held_back.join(", ")
                        );
                    }
                    applied
                });
                match store.reload(|| loaded) {
                    Ok(true) => info!("configuration reloaded"),
                    Ok(false) => {}
                    Err(e) if first_report => {
                        warn!("configuration rejected, keeping the previous one: {e}")
                    }
                    Err(_) => {}
                }
            }
        })
    };

    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            info!("shutdown requested");
            shutdown.cancel();
        }
    });
    let result = running.wait().await;
    reloader.abort();
    auditor.shutdown().await;
    result.map_err(StartError::from)
}

/// Loads the configuration as `run` does: `file`, the environment, then the `templates` override.
fn load_config(
    file: Option<&std::path::Path>,
    templates: Option<&std::path::Path>,
) -> Result<OperatorConfig, kubernaut_framework::config::ConfigError> {
    let mut config = OperatorConfig::load(file)?;
    if let Some(dir) = templates {
        config.templates.dir = dir.to_path_buf();
    }
    Ok(config)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
