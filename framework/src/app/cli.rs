//! The command line every operator binary shares:
//!
//! ```text
//! NAME run [--config FILE] [--templates DIR]
//! NAME render --INPUT FILE [--CHOICE NAME] [--config FILE] [--templates DIR] [-o yaml|json]
//! NAME crd
//! NAME check-config [--config FILE] [--templates DIR]
//! NAME version
//! ```
//!
//! Exit codes: 0 success, 1 the command failed (`error: <cause>: <cause>…` on stderr, one line),
//! 2 bad usage (clap's message).

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Arg, ArgMatches, Command, value_parser};
use serde_json::Value;

use super::reload::{CONFIG_RELOAD_INTERVAL, Reloader};
use super::{App, AppConfig, parent_watch_from_env};
use crate::config::{ConfigError, ConfigStore};

/// How `render` prints the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// YAML (the default).
    #[default]
    Yaml,
    /// Pretty-printed JSON.
    Json,
}

/// An optional `render` flag choosing which of the operator's kinds of object to render for the
/// input (the WorkflowExecution operator's `--engine NAME`): [`App::RENDER_CHOICE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderChoice {
    /// The flag's long name (`engine` for `--engine NAME`).
    pub long: &'static str,
    /// The name of its value in the help (`NAME`).
    pub value_name: &'static str,
    /// Its help: what it chooses, and what is chosen without it.
    pub help: &'static str,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The output could not be serialised.
    #[error("writing the output: {0}")]
    Output(String),
    /// The operator's own step failed (`render`, `check-config`, starting or running).
    #[error(transparent)]
    App(Box<dyn StdError + Send + Sync>),
    /// The async runtime could not be created.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// No client for the cluster.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl CommandError {
    /// The operator's error `e`.
    pub fn app(e: impl StdError + Send + Sync + 'static) -> Self {
        CommandError::App(Box::new(e))
    }
}

/// What `check-config` verified: the configuration (from `config_file`, or the compiled defaults
/// and the environment), then what the operator checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport<R> {
    /// The configuration file read, if any.
    pub config_file: Option<PathBuf>,
    /// The operator's findings.
    pub checked: R,
}

impl<R: fmt::Display> fmt::Display for CheckReport<R> {
    /// A `configuration: ok (…)` line, then the operator's report.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let configuration = match &self.config_file {
            Some(file) => format!("ok ({})", file.display()),
            None => "ok (compiled defaults and environment)".to_owned(),
        };
        let line = serde_json::json!({ "configuration": configuration });
        f.write_str(&crate::yaml::to_string(&line))?;
        self.checked.fmt(f)
    }
}

/// Loads the configuration: `file` if given (it must exist), else the [default
/// file](AppConfig::default_file) if it exists, else the compiled defaults; then the environment.
/// `templates` overrides `templates.dir`.
pub fn load_config<C: AppConfig>(
    file: Option<&Path>,
    templates: Option<&Path>,
) -> Result<C, ConfigError> {
    let default_file = C::default_file();
    super::reload::load_file(file.or(default_file.as_deref()), templates)
}

/// `check-config`: loads the configuration as [`load_config`] does, then runs [`App::check`].
pub fn check_config<A: App>(
    file: Option<&Path>,
    templates: Option<&Path>,
) -> Result<CheckReport<A::Report>, CommandError> {
    let config_file = file.map(Path::to_path_buf).or_else(A::Config::default_file);
    let config = load_config::<A::Config>(config_file.as_deref(), templates)?;
    let checked = A::check(&config).map_err(CommandError::app)?;
    Ok(CheckReport {
        config_file,
        checked,
    })
}

/// Prints an object as YAML or pretty JSON (with a final newline).
pub fn format_object(object: &Value, format: OutputFormat) -> Result<String, CommandError> {
    match format {
        // Quoted for YAML 1.1 readers too: `kubectl create -f` must read what JSON says.
        OutputFormat::Yaml => Ok(crate::yaml::to_string(object)),
        OutputFormat::Json => serde_json::to_string_pretty(object)
            .map(|s| s + "\n")
            .map_err(|e| CommandError::Output(e.to_string())),
    }
}

/// One line for an error and its causes (`chain` as [`error_chain`] gives them): each cause is
/// appended after `: ` unless the text so far already says it, so an error that prints its
/// source itself (`configuration: <error>`, `reading <file>: <io error>`) is not followed by the
/// same words again.
pub fn error_report<'a>(chain: impl IntoIterator<Item = &'a (dyn StdError + 'static)>) -> String {
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

/// `error` and its sources, outermost first.
pub fn error_chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// The program name and version, as `version` prints them.
pub fn version<A: App>() -> String {
    format!("{} {}", A::NAME, A::VERSION)
}

/// Logs as JSON lines, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// The command line of `A` (clap's builder: the operator's names and texts are values).
pub fn command<A: App>() -> Command {
    let config = Arg::new("config")
        .long("config")
        .value_name("FILE")
        .value_parser(value_parser!(PathBuf))
        .help(format!(
            "Configuration file (default: {} if present)",
            A::Config::DEFAULT_FILE
        ));
    let templates = Arg::new("templates")
        .long("templates")
        .value_name("DIR")
        .value_parser(value_parser!(PathBuf))
        .help("Template directory (overrides templates.dir)");
    let run_templates = match A::TEMPLATES_IN_CHECKOUT {
        Some(dir) => templates.clone().help(format!(
            "Template directory (overrides templates.dir), e.g. {dir} in a checkout"
        )),
        None => templates.clone(),
    };
    let mut render = Command::new("render").about(A::RENDER_ABOUT).arg(
        Arg::new("input")
            .long(A::RENDER_INPUT)
            .value_name("FILE")
            .value_parser(value_parser!(PathBuf))
            .required(true)
            .help(A::RENDER_INPUT_HELP),
    );
    if let Some(choice) = A::RENDER_CHOICE {
        render = render.arg(
            Arg::new("choice")
                .long(choice.long)
                .value_name(choice.value_name)
                .help(choice.help),
        );
    }
    let render = render.arg(config.clone()).arg(templates.clone()).arg(
        Arg::new("output")
            .short('o')
            .long("output")
            .value_name("OUTPUT")
            .value_parser(PossibleValuesParser::new(["yaml", "json"]).map(|format| {
                if format == "json" {
                    OutputFormat::Json
                } else {
                    OutputFormat::Yaml
                }
            }))
            .default_value("yaml")
            .help("Output format"),
    );
    Command::new(A::NAME)
        .version(A::VERSION)
        .about(A::ABOUT)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(
            Command::new("run")
                .about("Run the operator against the cluster of the current kubeconfig or service account")
                .arg(config.clone())
                .arg(run_templates),
        )
        .subcommand(render)
        .subcommand(Command::new("crd").about(A::CRD_ABOUT))
        .subcommand(
            Command::new("check-config")
                .about(A::CHECK_ABOUT)
                .arg(config)
                .arg(templates),
        )
        .subcommand(Command::new("version").about("Print the version"))
}

/// Parses the command line, runs the command and returns the exit code (see the [module
/// documentation](self)).
pub fn main<A: App>() -> ExitCode {
    let matches = command::<A>().get_matches();
    match execute::<A>(&matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_report(error_chain(&error)));
            ExitCode::FAILURE
        }
    }
}

/// Runs the command `matches` names.
fn execute<A: App>(matches: &ArgMatches) -> Result<(), CommandError> {
    let Some((name, args)) = matches.subcommand() else {
        return Ok(());
    };
    let path = |id: &str| args.try_get_one::<PathBuf>(id).ok().flatten().cloned();
    let (config, templates) = (path("config"), path("templates"));
    match name {
        "run" => run::<A>(config, templates),
        "render" => {
            let input = path("input").unwrap_or_default();
            let format = args
                .try_get_one::<OutputFormat>("output")
                .ok()
                .flatten()
                .copied()
                .unwrap_or_default();
            // Absent unless the operator declares the flag (`App::RENDER_CHOICE`).
            let choice = args.try_get_one::<String>("choice").ok().flatten();
            let config = load_config::<A::Config>(config.as_deref(), templates.as_deref())?;
            let object = A::render_choosing(&input, &config, choice.map(String::as_str))
                .map_err(CommandError::app)?;
            print!("{}", format_object(&object, format)?);
            Ok(())
        }
        "crd" => {
            print!("{}", A::crd_yaml().map_err(CommandError::app)?);
            Ok(())
        }
        "check-config" => {
            print!(
                "{}",
                check_config::<A>(config.as_deref(), templates.as_deref())?
            );
            Ok(())
        }
        _ => {
            println!("{}", version::<A>());
            Ok(())
        }
    }
}

/// `run`: load and validate the configuration, connect to the cluster and run the operator until
/// SIGTERM/SIGINT, re-reading the configuration file every [`CONFIG_RELOAD_INTERVAL`].
fn run<A: App>(file: Option<PathBuf>, templates: Option<PathBuf>) -> Result<(), CommandError> {
    init_tracing();
    let file = file.or_else(A::Config::default_file);
    let config = load_config::<A::Config>(file.as_deref(), templates.as_deref())?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let client = kube::Client::try_default().await?;
        let store = Arc::new(ConfigStore::new(config));
        let started = A::start(client, store.clone(), parent_watch_from_env())
            .await
            .map_err(CommandError::app)?;
        let reloader = Reloader::new(store, file, templates)
            .spawn(CONFIG_RELOAD_INTERVAL, started.shutdown.clone());
        let signals = tokio::spawn({
            let shutdown = started.shutdown.clone();
            async move {
                crate::runtime::shutdown_signal().await;
                tracing::info!("shutdown requested");
                shutdown.cancel();
            }
        });
        let result = started.stopped.await;
        reloader.abort();
        signals.abort();
        result.map_err(CommandError::app)
    })
}
