//! The WorkflowExecution operator as the framework's process layer runs it: its names and help
//! texts, its CRD, `render` and `check-config`, and how `run` starts it.

use std::path::Path;
use std::sync::Arc;

use kube::Client;
use kubernaut_framework::app::{App, RenderChoice, Started};
use kubernaut_framework::config::ConfigStore;
use kubernaut_framework::runtime::ParentWatch;
use serde_json::Value;

use crate::cli::{self, CliError};
use crate::config::OperatorConfig;
use crate::engine::EnginesReport;
use crate::operator::{self, StartError, runtime_settings};

/// The `workflowexecution-operator` binary.
#[derive(Debug, Clone, Copy)]
pub struct WorkflowExecutionApp;

impl App for WorkflowExecutionApp {
    type Config = OperatorConfig;
    type Report = EnginesReport;
    type Error = CliError;
    type StartError = StartError;

    const NAME: &'static str = env!("CARGO_PKG_NAME");
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str =
        "Runs Kubernaut remediation workflows (WorkflowExecutions) as Tekton PipelineRuns";
    const CRD_ABOUT: &'static str = "Print the WorkflowExecution CustomResourceDefinition (YAML)";
    const CHECK_ABOUT: &'static str = "Validate the configuration and every configured engine (its template, status mapping and cancel file) as the operator does at start-up (no cluster needed); exit code 0 if the operator would accept them, 1 (with the reason on stderr) if not";
    const RENDER_ABOUT: &'static str = "Print the child (a PipelineRun, a Job …) the operator would create for a WorkflowExecution on its engine or the one --engine names (no cluster needed)";
    const RENDER_INPUT: &'static str = "wfe";
    const RENDER_INPUT_HELP: &'static str = "The WorkflowExecution (YAML or JSON)";
    const TEMPLATES_IN_CHECKOUT: Option<&'static str> = Some("templates/workflowexecution");
    const RENDER_CHOICE: Option<RenderChoice> = Some(RenderChoice {
        long: "engine",
        value_name: "NAME",
        help: "The engine to render with, one of execution.engines (default: the WorkflowExecution's spec.executionEngine, else execution.defaultEngine)",
    });

    fn crd_yaml() -> Result<String, CliError> {
        Ok(crate::types::crd_yaml()?)
    }

    fn render(input: &Path, config: &OperatorConfig) -> Result<Value, CliError> {
        cli::render(input, config, None)
    }

    /// `render --engine NAME`.
    fn render_choosing(
        input: &Path,
        config: &OperatorConfig,
        engine: Option<&str>,
    ) -> Result<Value, CliError> {
        cli::render(input, config, engine)
    }

    fn check(config: &OperatorConfig) -> Result<EnginesReport, CliError> {
        cli::check(config)
    }

    /// [`operator::start`]; once stopped, the audit buffer is flushed.
    async fn start(
        client: Client,
        config: Arc<ConfigStore<OperatorConfig>>,
        parents: ParentWatch,
    ) -> Result<Started<StartError>, StartError> {
        let settings = runtime_settings(&config.current());
        let (running, auditor) = operator::start(client, config, settings, parents).await?;
        Ok(Started::runtime(running).then(async move { auditor.shutdown().await }))
    }
}
