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

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
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
    #[error("{message}")]
    StatusMapping {
        /// The mapping file.
        path: PathBuf,
        /// The error (it names the file).
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
    check_schema_types(&raw, &crd_schema()).map_err(not_wfe)?;
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

/// The OpenAPI schema of the served version of the WorkflowExecution CRD.
fn crd_schema() -> JSONSchemaProps {
    crate::types::crd()
        .spec
        .versions
        .into_iter()
        .find_map(|v| v.schema.and_then(|s| s.open_api_v3_schema))
        .unwrap_or_default()
}

/// Checks the type of every value in `value` against `schema` as the API server does at
/// admission (`type`, `nullable`, `x-kubernetes-int-or-string`; nulls of non-nullable fields are
/// dropped by the API server, so they pass). The error names the first offending field.
pub fn check_schema_types(value: &Value, schema: &JSONSchemaProps) -> Result<(), String> {
    check_types_at(value, schema, "")
}

fn check_types_at(value: &Value, schema: &JSONSchemaProps, path: &str) -> Result<(), String> {
    let field = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    let type_ok = match (schema.type_.as_deref(), value) {
        (_, Value::Null) => true,
        _ if schema.x_kubernetes_int_or_string == Some(true) => {
            value.is_string() || value.is_i64() || value.is_u64()
        }
        (None, _) => true,
        (Some("string"), v) => v.is_string(),
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        (Some("boolean"), v) => v.is_boolean(),
        (Some("object"), v) => v.is_object(),
        (Some("array"), v) => v.is_array(),
        (Some(_), _) => true,
    };
    if !type_ok {
        let found = match value {
            Value::Bool(b) => format!("boolean {b}"),
            Value::Number(n) => format!("number {n}"),
            Value::String(s) => format!("string {s:?}"),
            Value::Array(_) => "a list".to_owned(),
            Value::Object(_) => "a map".to_owned(),
            Value::Null => "null".to_owned(),
        };
        let expected = schema.type_.as_deref().unwrap_or("?");
        return Err(format!(
            "`{path}` must be of type {expected}, not {found} (the API server refuses it; quote a value meant as a string)"
        ));
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let sub = schema.properties.as_ref().and_then(|p| p.get(key)).or(
                    match &schema.additional_properties {
                        Some(JSONSchemaPropsOrBool::Schema(s)) => Some(&**s),
                        _ => None,
                    },
                );
                if let Some(sub) = sub {
                    check_types_at(item, sub, &field(key))?;
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(sub)) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    check_types_at(item, sub, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
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
        // Quoted for YAML 1.1 readers too: `kubectl create -f` must read what JSON says.
        OutputFormat::Yaml => Ok(kubernaut_framework::yaml::to_string(object)),
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
    /// One `item: ok (…)` line per file, a YAML mapping that YAML 1.1 and 1.2 readers read alike
    /// (a path that needs it is quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let configuration = match &self.config_file {
            Some(file) => format!("ok ({})", file.display()),
            None => "ok (compiled defaults and environment)".to_owned(),
        };
        let lines = [
            ("configuration", configuration),
            (
                "templates",
                format!(
                    "ok ({}, revision {})",
                    self.templates_dir.display(),
                    self.template_revision
                ),
            ),
            (
                "status mapping",
                format!("ok ({})", self.templates_dir.join(STATUS_MAPPING).display()),
            ),
            (
                "cancel file",
                format!("ok ({})", self.templates_dir.join(CANCEL_SPEC).display()),
            ),
        ];
        for (item, result) in lines {
            let line = serde_json::json!({ item: result });
            f.write_str(&kubernaut_framework::yaml::to_string(&line))?;
        }
        Ok(())
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

/// One line for an error and its causes (`chain` as `anyhow::Error::chain` gives them): each
/// cause is appended after `: ` unless the text so far already says it, so an error that prints
/// its source itself (`configuration: <error>`, `reading <file>: <io error>`) is not followed by
/// the same words again.
pub fn error_report<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut report = String::new();
    for cause in chain {
        let text = cause.to_string();
        if text.is_empty() || report.contains(&text) {
            continue;
        }
        if !report.is_empty() {
            report.push_str(": ");
        }
        report.push_str(&text);
    }
    report
}

/// The program name and version, as `version` prints them.
pub fn version() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}
