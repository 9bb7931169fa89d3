//! The failures every operator built on the framework shares, as error types an [`App`](super::App)
//! can name: [`StartError`] for `run`'s start-up (a kind the cluster does not serve, templates or
//! engines that do not load, metrics that cannot be registered, an audit sink that cannot be set
//! up, the runtime itself) and [`OfflineError`] for the commands that need no cluster (`render`,
//! `check-config`, `crd`).
//!
//! Guarantees:
//! 1. Each variant's message names what failed and where (the kind, the file, the template
//!    directory, the engine, the field, the metric); [`StartError::KindNotServed`] adds the
//!    operator's hint on what serves the kind.
//!
//! Caveats:
//! 1. An operator with failures of its own wraps these types or declares its own.
use std::path::{Path, PathBuf};

use super::NotServed;
use crate::audit::AuditError;
use crate::crd::{CrdYamlError, ReadObjectError};
use crate::engine::EngineError;
use crate::metrics::MetricError;
use crate::runtime::RuntimeError;
use crate::template::TemplateError;
use crate::validate::FieldErrors;

/// Why an operator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A kind the templates create or read (a status mapping's `child` and `grandchildren.child`)
    /// is not served by the cluster.
    #[error(
        "the {} API is not served by this cluster: install what serves it{} ({})",
        .served.kind,
        .hint,
        .served.message
    )]
    KindNotServed {
        /// What the check found.
        served: NotServed,
        /// What serves the kind, as ` (…)` after "install what serves it"; empty for none.
        hint: &'static str,
    },
    /// The templates failed to load.
    #[error("loading the {what} from {dir}: {message}")]
    Templates {
        /// What was loaded (`PipelineRun template`).
        what: &'static str,
        /// The template directory.
        dir: PathBuf,
        /// The error.
        message: String,
    },
    /// An engine (its status mapping or cancel file) failed to load.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Metrics could not be registered.
    #[error("registering metrics: {0}")]
    Metrics(#[from] MetricError),
    /// The audit sink could not be set up.
    #[error("setting up the audit sink: {0}")]
    Audit(#[from] AuditError),
    /// The runtime failed to start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Why an offline command (`render`, `check-config`, `crd`) failed.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The input object could not be read.
    #[error(transparent)]
    Read(#[from] ReadObjectError),
    /// The input object is invalid.
    #[error("{}: invalid {kind} {name}: {errors}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The object's kind (`WorkflowExecution`).
        kind: &'static str,
        /// The object, `namespace/name`.
        name: String,
        /// What is wrong, by field.
        errors: FieldErrors,
    },
    /// The templates could not be loaded or rendered.
    #[error("templates in {}: {message}", dir.display())]
    Templates {
        /// The template directory.
        dir: PathBuf,
        /// The error.
        message: String,
    },
    /// The CRD could not be printed.
    #[error(transparent)]
    Crd(#[from] CrdYamlError),
    /// An engine failed to load.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The engine asked for is not configured.
    #[error(
        "engine {name:?} is not configured: {key} lists {configured} (add it there to render with it)"
    )]
    EngineNotConfigured {
        /// The engine asked for.
        name: String,
        /// The configuration key listing the engines (`execution.engines`).
        key: &'static str,
        /// The configured engines, comma-separated.
        configured: String,
    },
}

impl OfflineError {
    /// [`OfflineError::Templates`] in `dir`, from a template error.
    pub fn templates(dir: &Path) -> impl Fn(TemplateError) -> OfflineError + '_ {
        move |e| OfflineError::Templates {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        }
    }
}
