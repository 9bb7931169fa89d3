//! `workflowexecution-operator` command line.
//!
//! ```text
//! workflowexecution-operator run [--config FILE] [--templates DIR]
//! workflowexecution-operator render --wfe FILE [--config FILE] [--templates DIR] [-o yaml|json]
//! workflowexecution-operator crd
//! workflowexecution-operator check-config [--config FILE] [--templates DIR]
//! workflowexecution-operator version
//! ```
//!
//! Exit codes: 0 success, 1 the command failed (the message on stderr says why), 2 bad usage.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use workflowexecution_operator::cli::{self, OutputFormat};
use workflowexecution_operator::types::crd_yaml;

/// How often `run` re-reads the configuration file (a mounted ConfigMap changes in place).
const CONFIG_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(
    name = "workflowexecution-operator",
    version,
    about = "Runs Kubernaut remediation workflows (WorkflowExecutions) as Tekton PipelineRuns"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig or service account.
    Run {
        /// Configuration file (default: /etc/kubernaut/workflowexecution/config.yaml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Template directory (overrides templates.dir), e.g. templates/workflowexecution in a
        /// checkout.
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// Print the PipelineRun the operator would create for a WorkflowExecution (no cluster needed).
    Render {
        /// The WorkflowExecution (YAML or JSON).
        #[arg(long, value_name = "FILE")]
        wfe: PathBuf,
        /// Configuration file (default: /etc/kubernaut/workflowexecution/config.yaml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Template directory (overrides templates.dir).
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Format::Yaml)]
        output: Format,
    },
    /// Print the WorkflowExecution CustomResourceDefinition (YAML).
    Crd,
    /// Validate the configuration, the templates, the status mapping and the cancel file as the
    /// operator does at start-up (no cluster needed); exit code 0 if the operator would accept
    /// them, 1 (with the reason on stderr) if not.
    CheckConfig {
        /// Configuration file (default: /etc/kubernaut/workflowexecution/config.yaml if present).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Template directory (overrides templates.dir).
        #[arg(long, value_name = "DIR")]
        templates: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Yaml,
    Json,
}

impl From<Format> for OutputFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Yaml => OutputFormat::Yaml,
            Format::Json => OutputFormat::Json,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, templates } => run_operator(config, templates),
        Command::Render {
            wfe,
            config,
            templates,
            output,
        } => cli::load_config(config.as_deref(), templates.as_deref())
            .and_then(|config| cli::render(&wfe, &config))
            .and_then(|run| cli::format_object(&run, output.into()))
            .map(|text| print!("{text}"))
            .map_err(anyhow::Error::from),
        Command::Crd => crd_yaml()
            .map(|text| print!("{text}"))
            .map_err(anyhow::Error::from),
        Command::CheckConfig { config, templates } => {
            cli::check_config(config.as_deref(), templates.as_deref())
                .map(|report| print!("{report}"))
                .map_err(anyhow::Error::from)
        }
        Command::Version => {
            println!("{}", cli::version());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", cli::error_report(error.chain()));
            ExitCode::FAILURE
        }
    }
}

/// `run`: load and validate the configuration, connect to the cluster and run the operator until
/// SIGTERM/SIGINT, re-reading the configuration file periodically.
fn run_operator(config_file: Option<PathBuf>, templates: Option<PathBuf>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let file =
        config_file.or_else(workflowexecution_operator::config::OperatorConfig::default_file);
    let config = cli::load_config(file.as_deref(), templates.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        workflowexecution_operator::operator::run(
            client,
            config,
            file,
            templates,
            CONFIG_RELOAD_INTERVAL,
        )
        .await?;
        Ok(())
    })
}
