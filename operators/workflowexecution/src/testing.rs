//! The Tekton engine's files, kinds and defaults as the tests, benchmarks and the test harness
//! use them; compiled for the operator's own tests and with the `test-support` feature only. The
//! operator itself knows its engines from their directories ([`crate::engine`]).
use std::path::Path;

use kube::api::ApiResource;
use kubernaut_framework::cancel::{CancelSpec, CancelSpecError};
use kubernaut_framework::status::{MappingError, StatusMapping};
use kubernaut_framework::template::{
    ChildKind, TemplateDecl, TemplateError, TemplateSet, TemplateStore,
};
use serde_json::Value;

use crate::config::OperatorConfig;
use crate::pipelinerun::render_child;
use crate::templates::{mapping_rules, sample_context};
use crate::types::WorkflowExecution;

/// The PipelineRun template, relative to the template directory.
pub const PIPELINERUN_TEMPLATE: &str = "tekton/pipelinerun.yaml.j2";
/// The PipelineRun status mapping, relative to the template directory.
pub const STATUS_MAPPING: &str = "tekton/status.yaml";
/// How a running PipelineRun is cancelled, relative to the template directory.
pub const CANCEL_SPEC: &str = "tekton/cancel.yaml";
/// The child kind the template renders: `tekton.dev/v1` `PipelineRun`.
pub fn pipeline_run_kind() -> ChildKind {
    ChildKind {
        api_version: "tekton.dev/v1".to_owned(),
        kind: "PipelineRun".to_owned(),
    }
}

/// The declaration of a child template `file` (relative to the template directory) rendering a
/// `child`, checked at load with the sample context every engine's template gets
/// ([`sample_context`]).
pub fn template_decl(file: &str, child: ChildKind) -> TemplateDecl {
    TemplateDecl {
        file: file.to_owned(),
        child,
        sample: sample_context(),
    }
}

/// The templates the operator loads, each with the sample context its load-time render uses.
pub fn template_decls() -> Vec<TemplateDecl> {
    vec![template_decl(PIPELINERUN_TEMPLATE, pipeline_run_kind())]
}

/// Loads the template set from `dir` (the `templates.dir` setting), checking every declared
/// template with its sample.
pub fn load_templates(dir: &Path) -> Result<TemplateSet, TemplateError> {
    TemplateSet::load(dir, &template_decls())
}

/// Loads the hot-reloadable template store from `dir`.
pub fn load_template_store(dir: &Path) -> Result<TemplateStore, TemplateError> {
    TemplateStore::load(dir, &template_decls())
}

/// Loads the PipelineRun status mapping from `dir` (the `templates.dir` setting).
pub fn load_status_mapping(dir: &Path) -> Result<StatusMapping, MappingError> {
    StatusMapping::load(&dir.join(STATUS_MAPPING), &mapping_rules())
}

/// Loads the cancel file from `dir` (the `templates.dir` setting).
pub fn load_cancel_spec(dir: &Path) -> Result<CancelSpec, CancelSpecError> {
    CancelSpec::load(&dir.join(CANCEL_SPEC), &pipeline_run_kind())
}

/// Renders the PipelineRun for `wfe` with the Tekton engine's template ([`render_child`]).
pub fn render_pipeline_run(
    wfe: &WorkflowExecution,
    config: &OperatorConfig,
    templates: &TemplateSet,
) -> Result<Value, TemplateError> {
    render_child(wfe, config, templates, PIPELINERUN_TEMPLATE)
}

/// The API resource of Tekton's PipelineRuns (`tekton.dev/v1`).
pub fn pipelinerun_resource() -> ApiResource {
    kubernaut_framework::app::resource_of(&pipeline_run_kind())
}

/// The API resource of Tekton's TaskRuns (`tekton.dev/v1`).
pub fn taskrun_resource() -> ApiResource {
    kubernaut_framework::app::resource_of(&ChildKind {
        api_version: "tekton.dev/v1".to_owned(),
        kind: "TaskRun".to_owned(),
    })
}
