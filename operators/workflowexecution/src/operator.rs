//! Starting the WorkflowExecution operator: configuration, Tekton presence check, templates,
//! status mapping, metrics, audit and the framework runtime.
//!
//! [`start`] is what `workflowexecution-operator run` calls (through the framework's process
//! layer, which adds signal handling and config hot reload) and what the integration tests call
//! in-process.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use kube::{Client, api::ApiResource, core::GroupVersionKind};
use kubernaut_framework::{
    app::{NotServed, check_served, resource_of},
    cancel::CancelSpec,
    config::ConfigStore,
    own_writes::OwnWrites,
    runtime::{ChildWatch, Operator, ParentWatch, Running, RuntimeError, RuntimeSettings},
    status::StatusMapping,
    template::TemplateStore,
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

impl From<NotServed> for StartError {
    fn from(e: NotServed) -> Self {
        StartError::KindNotServed {
            kind: e.kind,
            message: e.message,
        }
    }
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

/// Runtime settings derived from the operator config (the framework's
/// [`ControllerSettings::runtime_settings`](kubernaut_framework::app::ControllerSettings::runtime_settings)
/// under [`CONTROLLER_NAME`]).
pub fn runtime_settings(config: &OperatorConfig) -> RuntimeSettings {
    config
        .controller
        .runtime_settings(CONTROLLER_NAME, &config.templates)
}

/// What the operator loads from its template directory at start-up.
struct TemplateFiles {
    store: TemplateStore,
    mapping: StatusMapping,
    cancel: CancelSpec,
}

/// Loads the PipelineRun template, the status mapping and the cancel file from `dir`.
fn load_template_files(dir: &Path) -> Result<TemplateFiles, StartError> {
    let store = templates::load_template_store(dir).map_err(|e| StartError::Templates {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mapping = templates::load_status_mapping(dir).map_err(|e| StartError::StatusMapping {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let cancel = templates::load_cancel_spec(dir).map_err(|e| StartError::Cancel {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(TemplateFiles {
        store,
        mapping,
        cancel,
    })
}

/// The run and failure-fact kinds of the mapping (`child` and `grandchildren.child`), checked
/// to be served by the cluster.
async fn served_kinds(
    client: &Client,
    mapping: &StatusMapping,
) -> Result<(ApiResource, ApiResource), StartError> {
    check_served(client, mapping.child()).await?;
    if let Some(kind) = mapping.grandchild_kind() {
        check_served(client, kind).await?;
    }
    let taskrun = mapping
        .grandchild_kind()
        .map_or_else(taskrun_resource, resource_of);
    Ok((resource_of(mapping.child()), taskrun))
}

/// The runtime for WorkflowExecutions: their runs in `namespace` and the runs' TaskRuns, both
/// mapped to their WorkflowExecution by its labels.
fn runtime(
    client: Client,
    settings: RuntimeSettings,
    parents: ParentWatch,
    namespace: &str,
    (pipelinerun, taskrun): (ApiResource, ApiResource),
    store: TemplateStore,
) -> Operator<WorkflowExecution> {
    let watch_of = |resource: ApiResource| ChildWatch {
        resource,
        namespace: Some(namespace.to_owned()),
        selector: LABEL_WORKFLOW_EXECUTION.to_string(),
        parent_labels: (
            LABEL_WORKFLOW_EXECUTION.to_string(),
            LABEL_SOURCE_NAMESPACE.to_string(),
        ),
        // Names may be 253 characters long; the label carries a shortened form.
        parent_name_annotation: Some(ANNOTATION_WORKFLOW_EXECUTION.to_string()),
    };
    Operator::<WorkflowExecution>::new(client, settings)
        .parents(parents)
        // Lock and cooldown decisions read the WFEs on one target, never the whole cache.
        .index_parents(|wfe: &WorkflowExecution| {
            Some(crate::types::target_key(&wfe.spec.target_resource))
        })
        .children(watch_of(pipelinerun))
        // The reconciler reads only identity, labels and status from cached runs.
        .prune_children(pipelinerun::prune_cached_run)
        // Tekton copies the run's labels and annotations onto its TaskRuns, so they map to the
        // same WorkflowExecution.
        .grandchildren(watch_of(taskrun), crate::task_runs::prune_cached_task_run)
        .templates(Arc::new(store), None)
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
    let dir = &current.templates.dir;
    let files = load_template_files(dir)?;
    // The kinds are data: the run (the mapping's `child`) and the objects that carry its failure
    // facts (`grandchildren.child`).
    let (pipelinerun, taskrun) = served_kinds(&client, &files.mapping).await?;
    let namespace = &current.execution.namespace;
    let kinds = (pipelinerun.clone(), taskrun.clone());
    let operator = runtime(client, settings, parents, namespace, kinds, files.store);
    let registry = operator.registry().clone();
    let metrics = Metrics::register(&registry)?;
    let auditor = audit::start(&current.audit, &registry)?;
    let state = State {
        config: config.clone(),
        mapping: Arc::new(files.mapping),
        cancel: Arc::new(files.cancel),
        auditor: auditor.clone(),
        metrics,
        pipelinerun,
        taskrun,
        own_writes: OwnWrites::new(),
    };
    info!(
        namespace = %namespace,
        templates = %dir.display(),
        "starting the WorkflowExecution operator"
    );
    for warning in current.warnings() {
        warn!("{warning}");
    }
    let running = operator.start(controller::reconcile, state).await?;
    Ok((running, auditor))
}
