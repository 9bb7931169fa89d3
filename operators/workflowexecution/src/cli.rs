//! What the offline commands of the `workflowexecution-operator` binary do that is the
//! operator's own, as library functions: `render` (the PipelineRun a WorkflowExecution would
//! create) and the template checks of `check-config`.
//!
//! Guarantees:
//! 1. No cluster is contacted: everything is computed from files and the compiled defaults.
//! 2. [`render`] validates the WorkflowExecution exactly as the operator's Pending step 1 does
//!    and prints the object the operator would create, framework-owned identity included.
//! 3. Errors say which file and, where known, which field or key is wrong; the binary (the
//!    framework's `app` layer) turns any error into exit code 1.
//!
//! Assumptions:
//! 1. A WorkflowExecution file holds one YAML (or JSON) document of kind
//!    `kubernaut.ai/v1alpha1` `WorkflowExecution`; without `metadata.namespace` it is rendered as
//!    if created in `default`, as `kubectl apply` would.
use std::path::Path;

use kubernaut_framework::crd::read_object;
use kubernaut_framework::template::TemplateSet;
use serde_json::Value;

use crate::config::OperatorConfig;
use crate::engine::{Engines, EnginesReport};
use crate::pipelinerun::render_child;
use crate::templates::sample_context;
use crate::types::WorkflowExecution;
use crate::validate::validate_spec;

/// Why a command failed (the framework's offline-command failures).
pub use kubernaut_framework::app::OfflineError as CliError;

/// Reads a WorkflowExecution from a YAML or JSON file
/// ([`read_object`]: its kind and value types checked, `default` its namespace when unset).
pub fn read_workflow_execution(path: &Path) -> Result<WorkflowExecution, CliError> {
    Ok(read_object(path)?)
}

/// Validates the WorkflowExecution in `wfe_file` and renders the child the operator would create
/// for it under `config` (templates from `config.templates.dir`): on `engine` when given (one of
/// `execution.engines`: `render --engine NAME`), else on the engine the WorkflowExecution asks
/// for (`spec.executionEngine`), else on the default engine. Every configured engine is loaded, as
/// the operator loads them, so the template revision is the operator's.
pub fn render(
    wfe_file: &Path,
    config: &OperatorConfig,
    engine: Option<&str>,
) -> Result<Value, CliError> {
    let wfe = read_workflow_execution(wfe_file)?;
    validate_spec(&wfe.spec, &config.execution).map_err(|errors| CliError::Invalid {
        path: wfe_file.to_path_buf(),
        kind: "WorkflowExecution",
        name: kubernaut_framework::names::namespaced_name(&wfe),
        errors,
    })?;
    let dir = &config.templates.dir;
    let engines = Engines::load(config)?;
    let engine = match engine {
        Some(name) => engines
            .get(name)
            .ok_or_else(|| CliError::EngineNotConfigured {
                name: name.to_owned(),
                key: "execution.engines",
                configured: config.execution.engines.join(", "),
            })?,
        None => engines
            .of(&wfe)
            .ok()
            .or_else(|| engines.default_engine())
            .ok_or_else(|| CliError::Templates {
                dir: dir.clone(),
                message: "no execution engine is configured".to_owned(),
            })?,
    };
    let templates =
        TemplateSet::load(dir, &engines.template_decls()).map_err(CliError::templates(dir))?;
    render_child(&wfe, config, &templates, &engine.template).map_err(CliError::templates(dir))
}

/// Loads every configured engine (its status mapping and cancel file) and loads (and
/// test-renders) their templates, as the operator does at start-up.
pub fn check(config: &OperatorConfig) -> Result<EnginesReport, CliError> {
    let dir = &config.templates.dir;
    let engines = Engines::load(config)?;
    engines
        .check(dir, &sample_context())
        .map_err(CliError::templates(dir))
}
