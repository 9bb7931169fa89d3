//! The offline commands of the `workflowexecution-operator` binary, as library functions:
//! `render` (the PipelineRun a WorkflowExecution would create), `crd` and `check-config`.
//!
//! Guarantees:
//! 1. No cluster is contacted: everything is computed from files and the compiled defaults.
//! 2. [`render`] validates the WorkflowExecution exactly as the operator's Pending step 1 does
//!    and prints the object the operator would create, framework-owned identity included.
//! 3. Errors say which file and, where known, which field or key is wrong; the binary turns any
//!    error into exit code 1.
//!
//! Assumptions:
//! 1. A WorkflowExecution file holds one YAML (or JSON) document of kind
//!    `kubernaut.ai/v1alpha1` `WorkflowExecution`; without `metadata.namespace` it is rendered as
//!    if created in `default`, as `kubectl apply` would.
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::OperatorConfig;
use crate::pipelinerun::render_pipeline_run;
use crate::templates::{
    CANCEL_SPEC, STATUS_MAPPING, load_cancel_spec, load_status_mapping, load_templates,
};
use crate::types::{GROUP, VERSION, WorkflowExecution};
use crate::validate::{ValidationErrors, validate_spec};

/// How `render` prints the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// YAML (the default).
    #[default]
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

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
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] kubernaut_framework::config::ConfigError),
    /// The templates failed to load or render.
    #[error("templates in {}: {message}", dir.display())]
    Templates {
        /// The template directory.
        dir: PathBuf,
        /// The error.
        message: String,
    },
    /// The status mapping failed to load.
    #[error("status mapping {}: {message}", path.display())]
    StatusMapping {
        /// The mapping file.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// The cancel file failed to load.
    #[error("{message}")]
    Cancel {
        /// The cancel file.
        path: PathBuf,
        /// The error (it names the file).
        message: String,
    },
    /// The output could not be serialised.
    #[error("writing the output: {0}")]
    Output(String),
}

/// Loads the configuration: `file` if given (it must exist), else [`OperatorConfig::default_file`]
/// if it exists, else the compiled defaults; then the `WFE_…` environment. `templates` overrides
/// `templates.dir`.
pub fn load_config(
    file: Option<&Path>,
    templates: Option<&Path>,
) -> Result<OperatorConfig, CliError> {
    let default_file = OperatorConfig::default_file();
    let file = file.or(default_file.as_deref());
    let mut config = OperatorConfig::load(file)?;
    if let Some(dir) = templates {
        config.templates.dir = dir.to_path_buf();
    }
    Ok(config)
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
    let raw: Value = serde_yaml::from_str(&text).map_err(|e| not_wfe(e.to_string()))?;
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

/// Validates the WorkflowExecution in `wfe_file` and renders the PipelineRun the operator would
/// create for it under `config` (templates from `config.templates.dir`).
pub fn render(wfe_file: &Path, config: &OperatorConfig) -> Result<Value, CliError> {
    let wfe = read_workflow_execution(wfe_file)?;
    validate_spec(&wfe.spec, &config.execution).map_err(|errors| CliError::Invalid {
        path: wfe_file.to_path_buf(),
        name: kubernaut_framework::names::namespaced_name(&wfe),
        errors,
    })?;
    let dir = &config.templates.dir;
    let templates = load_templates(dir).map_err(|e| CliError::Templates {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    render_pipeline_run(&wfe, config, &templates).map_err(|e| CliError::Templates {
        dir: dir.clone(),
        message: e.to_string(),
    })
}

/// Prints an object as YAML or pretty JSON (with a final newline).
pub fn format_object(object: &Value, format: OutputFormat) -> Result<String, CliError> {
    match format {
        OutputFormat::Yaml => {
            serde_yaml::to_string(object).map_err(|e| CliError::Output(e.to_string()))
        }
        OutputFormat::Json => serde_json::to_string_pretty(object)
            .map(|s| s + "\n")
            .map_err(|e| CliError::Output(e.to_string())),
    }
}

/// What `check-config` verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The configuration file read, if any.
    pub config_file: Option<PathBuf>,
    /// The template directory.
    pub templates_dir: PathBuf,
    /// The revision of the loaded template set.
    pub template_revision: String,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.config_file {
            Some(file) => writeln!(f, "configuration: ok ({})", file.display())?,
            None => writeln!(f, "configuration: ok (compiled defaults and environment)")?,
        }
        writeln!(
            f,
            "templates: ok ({}, revision {})",
            self.templates_dir.display(),
            self.template_revision
        )?;
        writeln!(
            f,
            "status mapping: ok ({})",
            self.templates_dir.join(STATUS_MAPPING).display()
        )?;
        writeln!(
            f,
            "cancel file: ok ({})",
            self.templates_dir.join(CANCEL_SPEC).display()
        )
    }
}

/// Validates the configuration, loads (and test-renders) the templates and loads the status
/// mapping and the cancel file, as the operator does at start-up.
pub fn check_config(
    file: Option<&Path>,
    templates: Option<&Path>,
) -> Result<CheckReport, CliError> {
    let config_file = file
        .map(Path::to_path_buf)
        .or_else(OperatorConfig::default_file);
    let config = load_config(config_file.as_deref(), templates)?;
    let dir = config.templates.dir.clone();
    let set = load_templates(&dir).map_err(|e| CliError::Templates {
        dir: dir.clone(),
        message: e.to_string(),
    })?;
    load_status_mapping(&dir).map_err(|e| CliError::StatusMapping {
        path: dir.join(STATUS_MAPPING),
        message: e.to_string(),
    })?;
    load_cancel_spec(&dir).map_err(|e| CliError::Cancel {
        path: dir.join(CANCEL_SPEC),
        message: e.to_string(),
    })?;
    Ok(CheckReport {
        config_file,
        templates_dir: dir,
        template_revision: set.revision().to_owned(),
    })
}

/// The program name and version, as `version` prints them.
pub fn version() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}
