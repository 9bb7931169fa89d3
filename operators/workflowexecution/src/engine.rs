//! The WorkflowExecution operator's execution engines: the framework's engine directories
//! ([`kubernaut_framework::engine`]) under `templates.dir`, loaded with the operator's mapping
//! rules and sample WorkflowExecution, one per entry of `execution.engines`.
//!
//! Each engine is a directory holding one child template (`*.yaml.j2`: what a WorkflowExecution
//! runs as, a Tekton PipelineRun, a Kubernetes Job, ...), its `status.yaml` and its
//! `cancel.yaml`. Nothing about an engine is compiled in: an engine added to the directory and
//! to the configuration runs after a restart.
//!
//! Guarantees:
//! 1. [`Engines::load`] loads every configured engine or fails naming the engine and the file;
//!    the template is checked with a sample render against the kind its mapping names.
//! 2. [`Engines::of`] is stable for a started execution: the engine
//!    recorded in its status wins over the spec and the configured default.
use std::ops::Deref;
use std::sync::Arc;

use kubernaut_framework::engine;
use kubernaut_framework::template::TemplateDecl;

use crate::config::OperatorConfig;
use crate::templates::{mapping_rules, sample_context};
use crate::types::WorkflowExecution;

pub use kubernaut_framework::engine::{
    CANCEL_FILE, Engine, EngineError, EnginesReport, NoEngine, STATUS_FILE, TEMPLATE_SUFFIX,
};

/// Every configured engine, loaded, and the default one (the framework's
/// [`Engines`](engine::Engines), which it dereferences to).
#[derive(Debug, Clone)]
pub struct Engines(engine::Engines);

impl Deref for Engines {
    type Target = engine::Engines;

    fn deref(&self) -> &engine::Engines {
        &self.0
    }
}

impl Engines {
    /// Loads `execution.engines` from `templates.dir`.
    ///
    /// # Errors
    /// The first engine that fails to load, named.
    pub fn load(config: &OperatorConfig) -> Result<Engines, EngineError> {
        let execution = &config.execution;
        engine::Engines::load(
            &config.templates.dir,
            &execution.engines,
            &execution.default_engine,
            &mapping_rules(),
        )
        .map(Engines)
    }

    /// The engine a reconcile of `wfe` uses ([`engine::Engines::for_parent`]): the one its
    /// status records once started, else the one its spec asks for when it is configured, else
    /// the default one — never another than the one a started `wfe` records.
    ///
    /// # Errors
    /// [`NoEngine`] when `wfe` started on an engine no longer configured, or none is.
    pub fn of(&self, wfe: &WorkflowExecution) -> Result<&Arc<Engine>, NoEngine> {
        let status = wfe.status.as_ref();
        let recorded = status.and_then(|s| s.execution_engine.as_deref());
        self.for_parent(recorded, wfe.spec.execution_engine.as_deref())
    }

    /// The template declarations of every engine, test-rendered with [`sample_context`].
    pub fn template_decls(&self) -> Vec<TemplateDecl> {
        self.0.template_decls(&sample_context())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/workflowexecution")
    }

    #[test]
    fn the_shipped_tekton_engine_is_found_by_its_directory() {
        let engine = Engine::load(&shipped(), "tekton", &mapping_rules()).unwrap();
        assert_eq!(engine.template, "tekton/pipelinerun.yaml.j2");
        assert_eq!(engine.child().kind, "PipelineRun");
    }

    #[test]
    fn a_started_execution_keeps_the_engine_its_status_records() {
        let mut config = OperatorConfig::default();
        config.templates.dir = shipped();
        config.execution.engines = vec!["tekton".to_owned(), "job".to_owned()];
        let engines = Engines::load(&config).unwrap();
        let name = |wfe: &WorkflowExecution| engines.of(wfe).map(|e| e.name.clone());
        let mut wfe = crate::templates::sample_workflow_execution();
        assert_eq!(name(&wfe), Ok("tekton".to_owned()), "the default");
        wfe.spec.execution_engine = Some("job".to_owned());
        assert_eq!(
            name(&wfe),
            Ok("job".to_owned()),
            "the one the spec asks for"
        );
        wfe.status = Some(crate::types::WorkflowExecutionStatus {
            execution_engine: Some("tekton".to_owned()),
            ..Default::default()
        });
        assert_eq!(
            name(&wfe),
            Ok("tekton".to_owned()),
            "the one the status records"
        );
        config.execution.engines = vec!["job".to_owned()];
        config.execution.default_engine = "job".to_owned();
        let without = Engines::load(&config).unwrap();
        assert_eq!(
            without.of(&wfe).map(|e| e.name.clone()),
            Err(NoEngine::Dropped("tekton".to_owned())),
            "never another engine than the one it started on"
        );
    }
}
