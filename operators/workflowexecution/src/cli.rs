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
use std::fmt;
use std::path::{Path, PathBuf};

use kubernaut_framework::crd::{check_schema_types, openapi_schema};
use serde_json::Value;

use crate::config::OperatorConfig;
use crate::engine::{CANCEL_FILE, EngineError, Engines, STATUS_FILE};
use crate::pipelinerun::render_child;
use crate::types::{GROUP, VERSION, WorkflowExecution};
use crate::validate::{ValidationErrors, validate_spec};
use kubernaut_framework::template::TemplateSet;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A WorkflowExecution file is not a WorkflowExecution.
    #[error("{}: not a WorkflowExecution: {message}", path.display())]
    NotAWorkflowExecution {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The WorkflowExecution's spec fails validation.
    #[error("{}: invalid WorkflowExecution {name}: {errors}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// `namespace/name` of the WorkflowExecution.
        name: String,
        /// The problems, each naming its field.
        errors: ValidationErrors,
    },
    /// The templates failed to load or render.
    #[error("templates in {}: {message}", dir.display())]
    Templates {
        /// The template directory.
        dir: PathBuf,
        /// The error.
        message: String,
    },
    /// The CRD could not be printed.
    #[error(transparent)]
    Crd(#[from] crate::types::CrdError),
    /// An execution engine (its directory, status mapping or cancel file) failed to load.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `render --engine` names an engine the configuration does not list.
    #[error(
        "engine {name:?} is not configured: execution.engines lists {configured} (add it there to render with it)"
    )]
    EngineNotConfigured {
        /// The engine asked for.
        name: String,
        /// The configured engines, comma-separated.
        configured: String,
    },
}

/// Reads a WorkflowExecution from a YAML or JSON file.
pub fn read_workflow_execution(path: &Path) -> Result<WorkflowExecution, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let not_wfe = |message: String| CliError::NotAWorkflowExecution {
        path: path.to_path_buf(),
        message,
    };
    // JSON is read as JSON: a YAML reader takes characters such as NEL (U+0085) in a string
    // for line breaks and folds them.
    let raw: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| not_wfe(e.to_string()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| not_wfe(e.to_string()))?
    };
    let api_version = raw.get("apiVersion").and_then(Value::as_str);
    let kind = raw.get("kind").and_then(Value::as_str);
    let want = format!("{GROUP}/{VERSION}");
    if api_version != Some(want.as_str()) || kind != Some("WorkflowExecution") {
        return Err(not_wfe(format!(
            "apiVersion/kind is {}/{}, expected {want}/WorkflowExecution",
            api_version.unwrap_or("<none>"),
            kind.unwrap_or("<none>")
        )));
    }
    // The API server checks every value's type against the CRD's schema before anything else;
    // do the same, so that a type error names its field (`spec.parameters.REPLICAS`) instead of
    // surfacing as a bare deserialization message.
    check_schema_types(&raw, &openapi_schema(crate::types::crd())).map_err(not_wfe)?;
    let mut wfe: WorkflowExecution =
        serde_json::from_value(raw).map_err(|e| not_wfe(e.to_string()))?;
    if wfe.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err(not_wfe("metadata.name is missing".to_owned()));
    }
    if wfe.metadata.namespace.is_none() {
        wfe.metadata.namespace = Some("default".to_owned());
    }
    Ok(wfe)
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
                configured: config.execution.engines.join(", "),
            })?,
        None => engines
            .of(&wfe)
            .or_else(|| engines.default_engine())
            .ok_or_else(|| CliError::Templates {
                dir: dir.clone(),
                message: "no execution engine is configured".to_owned(),
            })?,
    };
    let templates =
        TemplateSet::load(dir, &engines.template_decls()).map_err(|e| CliError::Templates {
            dir: dir.clone(),
            message: e.to_string(),
        })?;
    render_child(&wfe, config, &templates, &engine.template).map_err(|e| CliError::Templates {
        dir: dir.clone(),
        message: e.to_string(),
    })
}

/// What `check-config` verified besides the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The template directory.
    pub templates_dir: PathBuf,
    /// The revision of the loaded template set.
    pub template_revision: String,
    /// Each configured engine: its name, its child kind and its files.
    pub engines: Vec<EngineReport>,
}

/// One engine as `check-config` loaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// The engine's name.
    pub name: String,
    /// The kind it creates, as `apiVersion, Kind=…`.
    pub child: String,
    /// Its child template, relative to the template directory.
    pub template: String,
}

impl fmt::Display for CheckReport {
    /// One `item: ok (…)` line per item, a YAML mapping that YAML 1.1 and 1.2 readers read alike
    /// (a path that needs it is quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = vec![(
            "templates".to_owned(),
            format!(
                "ok ({}, revision {})",
                self.templates_dir.display(),
                self.template_revision
            ),
        )];
        for engine in &self.engines {
            lines.push((
                format!("engine {}", engine.name),
                format!(
                    "ok ({}: {}, {name}/{STATUS_FILE}, {name}/{CANCEL_FILE})",
                    engine.child,
                    engine.template,
                    name = engine.name
                ),
            ));
        }
        for (item, result) in lines {
            let line = serde_json::json!({ item: result });
            f.write_str(&kubernaut_framework::yaml::to_string(&line))?;
        }
        Ok(())
    }
}

/// Loads every configured engine (its status mapping and cancel file) and loads (and
/// test-renders) their templates, as the operator does at start-up.
pub fn check(config: &OperatorConfig) -> Result<CheckReport, CliError> {
    let dir = config.templates.dir.clone();
    let engines = Engines::load(config)?;
    let set =
        TemplateSet::load(&dir, &engines.template_decls()).map_err(|e| CliError::Templates {
            dir: dir.clone(),
            message: e.to_string(),
        })?;
    let engines = engines
        .iter()
        .map(|engine| EngineReport {
            name: engine.name.clone(),
            child: engine.child().to_string(),
            template: engine.template.clone(),
        })
        .collect();
    Ok(CheckReport {
        templates_dir: dir,
        template_revision: set.revision().to_owned(),
        engines,
    })
}
