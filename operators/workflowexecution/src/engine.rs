//! Execution engines as directories: each configured engine (`execution.engines`) is a directory
//! under `templates.dir` holding
//! 1. one child template, `*.yaml.j2`: what a WorkflowExecution runs as (a Tekton PipelineRun, a
//!    Kubernetes Job, ...);
//! 2. `status.yaml`: the status mapping, which names the child's kind (`child`), the objects
//!    that carry its failure facts (`grandchildren`) and how both read;
//! 3. `cancel.yaml`: how a running child is cancelled when its WorkflowExecution is deleted.
//!
//! Nothing about an engine is compiled in: an engine added to the directory and to the
//! configuration runs after a restart.
//!
//! Guarantees:
//! 1. [`Engines::load`] loads every configured engine or fails naming the engine and the file;
//!    the template is checked with a sample render against the kind its mapping names.
//! 2. [`Engines::of`] is stable for a started execution: the engine recorded in its status wins
//!    over the spec and the configured default.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::api::ApiResource;
use kubernaut_framework::status::StatusMapping;
use kubernaut_framework::template::{ChildKind, TemplateDecl};

use crate::config::OperatorConfig;
use crate::templates::{mapping_rules, template_decl};
use crate::types::WorkflowExecution;
use kubernaut_framework::app::resource_of;
use kubernaut_framework::cancel::CancelSpec;

/// The status mapping of an engine, in its directory.
pub const STATUS_FILE: &str = "status.yaml";
/// The cancel file of an engine, in its directory.
pub const CANCEL_FILE: &str = "cancel.yaml";
/// The suffix of an engine's child template.
pub const TEMPLATE_SUFFIX: &str = ".yaml.j2";

/// Why an engine could not be loaded; each names the engine and, where there is one, the file.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's directory is missing, unreadable, or does not hold exactly one template.
    #[error("engine {engine:?}: {message}")]
    Directory {
        /// The engine.
        engine: String,
        /// What is wrong.
        message: String,
    },
    /// The status mapping failed to load.
    #[error("loading the status mapping: {message}")]
    StatusMapping {
        /// The engine.
        engine: String,
        /// The mapping file.
        path: PathBuf,
        /// The error (it names the file).
        message: String,
    },
    /// The cancel file failed to load.
    #[error("loading the cancel file: {message}")]
    Cancel {
        /// The engine.
        engine: String,
        /// The cancel file.
        path: PathBuf,
        /// The error (it names the file).
        message: String,
    },
}

/// One loaded engine.
#[derive(Debug)]
pub struct Engine {
    /// Its name (its directory under `templates.dir`).
    pub name: String,
    /// Its child template, relative to `templates.dir` (`tekton/pipelinerun.yaml.j2`).
    pub template: String,
    /// How its child's status reads.
    pub mapping: Arc<StatusMapping>,
    /// How its running child is cancelled.
    pub cancel: Arc<CancelSpec>,
    /// The API resource of its child kind.
    pub child_resource: ApiResource,
    /// The API resource of the kind that carries its failure facts, when the mapping names one.
    pub grandchild_resource: Option<ApiResource>,
}

impl Engine {
    /// Loads engine `name` from `dir/name`.
    ///
    /// # Errors
    /// [`EngineError`] naming the engine and the file at fault.
    pub fn load(dir: &Path, name: &str) -> Result<Engine, EngineError> {
        let template = template_file(dir, name)?;
        let status = dir.join(name).join(STATUS_FILE);
        let mapping = StatusMapping::load(&status, &mapping_rules()).map_err(|e| {
            EngineError::StatusMapping {
                engine: name.to_owned(),
                path: status.clone(),
                message: e.to_string(),
            }
        })?;
        let cancel_file = dir.join(name).join(CANCEL_FILE);
        let cancel =
            CancelSpec::load(&cancel_file, mapping.child()).map_err(|e| EngineError::Cancel {
                engine: name.to_owned(),
                path: cancel_file.clone(),
                message: e.to_string(),
            })?;
        Ok(Engine {
            name: name.to_owned(),
            template,
            child_resource: resource_of(mapping.child()),
            grandchild_resource: mapping.grandchild_kind().map(resource_of),
            mapping: Arc::new(mapping),
            cancel: Arc::new(cancel),
        })
    }

    /// The kind the engine creates (its mapping's `child`).
    pub fn child(&self) -> &ChildKind {
        self.mapping.child()
    }

    /// The template declaration of the engine: its file, the kind it must render, the sample
    /// context of the load-time render.
    pub fn template_decl(&self) -> TemplateDecl {
        template_decl(&self.template, self.child().clone())
    }
}

/// The child template of engine `name`: the one `*.yaml.j2` file in `dir/name`, relative to
/// `dir`.
///
/// # Errors
/// [`EngineError::Directory`] when the directory cannot be read or holds no or several
/// templates.
pub fn template_file(dir: &Path, name: &str) -> Result<String, EngineError> {
    let engine_dir = dir.join(name);
    let problem = |message: String| EngineError::Directory {
        engine: name.to_owned(),
        message,
    };
    let entries = std::fs::read_dir(&engine_dir)
        .map_err(|e| problem(format!("reading {}: {e}", engine_dir.display())))?;
    let mut templates: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|file| file.ends_with(TEMPLATE_SUFFIX))
        .collect();
    templates.sort();
    match templates.as_slice() {
        [one] => Ok(format!("{name}/{one}")),
        [] => Err(problem(format!(
            "{} holds no child template (*{TEMPLATE_SUFFIX})",
            engine_dir.display()
        ))),
        many => Err(problem(format!(
            "{} holds {} child templates ({}); an engine has one",
            engine_dir.display(),
            many.len(),
            many.join(", ")
        ))),
    }
}

/// Every configured engine, loaded, and the default one.
#[derive(Debug, Clone)]
pub struct Engines {
    by_name: BTreeMap<String, Arc<Engine>>,
    default: String,
}

impl Engines {
    /// Loads `execution.engines` from `templates.dir`.
    ///
    /// # Errors
    /// The first engine that fails to load, named.
    pub fn load(config: &OperatorConfig) -> Result<Engines, EngineError> {
        let dir = &config.templates.dir;
        let mut by_name = BTreeMap::new();
        for name in &config.execution.engines {
            by_name.insert(name.clone(), Arc::new(Engine::load(dir, name)?));
        }
        Ok(Engines {
            by_name,
            default: config.execution.default_engine.clone(),
        })
    }

    /// The engine called `name`, when configured.
    pub fn get(&self, name: &str) -> Option<&Arc<Engine>> {
        self.by_name.get(name)
    }

    /// The default engine (`execution.defaultEngine`).
    pub fn default_engine(&self) -> Option<&Arc<Engine>> {
        self.get(&self.default)
    }

    /// The name of the engine `wfe` runs on: the one its status records once started, else the
    /// one its spec asks for, else the default.
    pub fn name_of<'w>(&'w self, wfe: &'w WorkflowExecution) -> &'w str {
        wfe.status
            .as_ref()
            .and_then(|s| s.execution_engine.as_deref())
            .or(wfe.spec.execution_engine.as_deref())
            .unwrap_or(&self.default)
    }

    /// The engine `wfe` runs on ([`Self::name_of`]), when it is configured.
    pub fn of(&self, wfe: &WorkflowExecution) -> Option<&Arc<Engine>> {
        self.get(self.name_of(wfe))
    }

    /// Every engine, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Engine>> {
        self.by_name.values()
    }

    /// The template declarations of every engine (one template store serves them all).
    pub fn template_decls(&self) -> Vec<TemplateDecl> {
        self.iter().map(|engine| engine.template_decl()).collect()
    }

    /// The distinct kinds the engines create (their mappings' `child`).
    pub fn child_kinds(&self) -> Vec<ChildKind> {
        distinct(self.iter().map(|e| e.child().clone()))
    }

    /// The distinct kinds that carry the engines' failure facts (`grandchildren.child`).
    pub fn grandchild_kinds(&self) -> Vec<ChildKind> {
        distinct(
            self.iter()
                .filter_map(|e| e.mapping.grandchild_kind().cloned()),
        )
    }
}

fn distinct(kinds: impl Iterator<Item = ChildKind>) -> Vec<ChildKind> {
    let mut out: Vec<ChildKind> = Vec::new();
    for kind in kinds {
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/workflowexecution")
    }

    #[test]
    fn the_shipped_tekton_engine_is_found_by_its_directory() {
        let engine = Engine::load(&shipped(), "tekton").unwrap();
        assert_eq!(engine.template, "tekton/pipelinerun.yaml.j2");
        assert_eq!(engine.child().kind, "PipelineRun");
    }

    #[test]
    fn an_engine_directory_needs_exactly_one_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let error = template_file(dir.path(), "empty").unwrap_err().to_string();
        assert!(error.contains("holds no child template"), "{error}");
        std::fs::create_dir(dir.path().join("two")).unwrap();
        for file in ["a.yaml.j2", "b.yaml.j2"] {
            std::fs::write(dir.path().join("two").join(file), "").unwrap();
        }
        let error = template_file(dir.path(), "two").unwrap_err().to_string();
        assert!(
            error.contains("holds 2 child templates (a.yaml.j2, b.yaml.j2)"),
            "{error}"
        );
        let error = template_file(dir.path(), "missing")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("engine \"missing\": reading "), "{error}");
    }

    #[test]
    fn a_started_execution_keeps_the_engine_its_status_records() {
        let mut config = OperatorConfig::default();
        config.templates.dir = shipped();
        let engines = Engines::load(&config).unwrap();
        let mut wfe = crate::templates::sample_workflow_execution();
        assert_eq!(engines.name_of(&wfe), "tekton");
        wfe.spec.execution_engine = Some("job".to_owned());
        assert_eq!(engines.name_of(&wfe), "job");
        assert!(engines.of(&wfe).is_none(), "job is not configured");
        wfe.status = Some(crate::types::WorkflowExecutionStatus {
            execution_engine: Some("tekton".to_owned()),
            ..Default::default()
        });
        assert_eq!(engines.name_of(&wfe), "tekton");
    }
}
