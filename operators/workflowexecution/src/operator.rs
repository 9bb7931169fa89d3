//! Starting the WorkflowExecution operator: configuration, Tekton presence check, templates,
//! status mapping, metrics, audit and the framework runtime.
//!
//! [`start`] is what `workflowexecution-operator run` calls (through the framework's process
//! layer, which adds signal handling and config hot reload) and what the integration tests call
//! in-process.

use std::sync::Arc;

use kube::Client;
use kubernaut_framework::{
    app::resource_of,
    config::ConfigStore,
    lock::Locks,
    own_writes::OwnWrites,
    pace::Pace,
    runtime::{Operator, ParentWatch, Running, RuntimeSettings},
    template::{ChildKind, TemplateStore},
};
use tracing::{info, warn};

use crate::{
    audit,
    config::OperatorConfig,
    controller::{self, State},
    engine::Engines,
    metrics::Metrics,
    pipelinerun,
    types::WorkflowExecution,
};

/// The controller's name: Events' reporting controller and the audit actor.
pub const CONTROLLER_NAME: &str = "workflowexecution-controller";

/// Why the operator could not start (the framework's start-up failures).
pub use kubernaut_framework::app::StartError;

/// What serves the kinds the shipped templates create, as a missing kind's error says it.
const KINDS_HINT: &str = " (the shipped templates need Tekton Pipelines)";

/// Runtime settings derived from the operator config (the framework's
/// [`ControllerSettings::runtime_settings`](kubernaut_framework::app::ControllerSettings::runtime_settings)
/// under [`CONTROLLER_NAME`]).
pub fn runtime_settings(config: &OperatorConfig) -> RuntimeSettings {
    config
        .controller
        .runtime_settings(CONTROLLER_NAME, &config.templates)
}

/// Every configured engine's files, and the one template store serving all their templates.
fn load_engines(config: &OperatorConfig) -> Result<(Engines, TemplateStore), StartError> {
    let engines = Engines::load(config)?;
    let dir = &config.templates.dir;
    let store =
        TemplateStore::load(dir, &engines.template_decls()).map_err(|e| StartError::Templates {
            what: "PipelineRun template",
            dir: dir.clone(),
            message: e.to_string(),
        })?;
    Ok((engines, store))
}

/// The framework runtime: WorkflowExecutions indexed by target, and a watch on every kind the
/// engines create (their children) or read (what carries the failure facts) in `namespace`.
fn runtime(
    client: Client,
    settings: RuntimeSettings,
    parents: ParentWatch,
    namespace: &str,
    engines: &Engines,
    store: TemplateStore,
) -> Operator<WorkflowExecution> {
    let watch_of = |kind: &ChildKind| {
        pipelinerun::OWNER_KEYS.child_watch(resource_of(kind), Some(namespace.to_owned()))
    };
    Operator::<WorkflowExecution>::new(client, settings)
        .parents(parents)
        .index_parents(|wfe: &WorkflowExecution| {
            Some(crate::types::target_key(&wfe.spec.target_resource))
        })
        .templates(Arc::new(store), None)
        .engine_kinds(engines, watch_of, pipelinerun::project_cached)
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
    let (engines, store) = load_engines(&current)?;
    // The kinds are data: each engine's child (its mapping's `child`) and the objects that carry
    // its failure facts (`grandchildren.child`).
    let served = engines.check_served(&client).await;
    served.map_err(|served| StartError::KindNotServed {
        served,
        hint: KINDS_HINT,
    })?;
    let namespace = &current.execution.namespace;
    // The reconciler records its writes here; the runtime waits for their watch events.
    let own_writes = OwnWrites::new();
    let operator = runtime(client, settings, parents, namespace, &engines, store)
        .own_writes(own_writes.clone());
    let registry = operator.registry().clone();
    let metrics = Metrics::register(&registry)?;
    let auditor = audit::start(&current.audit, &registry)?;
    let state = State {
        config: config.clone(),
        engines,
        auditor: auditor.clone(),
        metrics,
        own_writes,
        locks: Locks::default(),
        pace: Pace::new(),
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
