//! The operator *process*: the command line, configuration loading and live reload, logging,
//! signals and the start-up checks every operator binary has, around what only the operator
//! knows (its CRD, its `render` and `check-config`, how its controller starts).
//!
//! An operator implements [`App`] once (and [`AppConfig`] for its configuration) and its `main`
//! is one call:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     kubernaut_framework::app::main::<my_operator::MyApp>()
//! }
//! ```
//!
//! `framework/examples/mirror.rs` is a complete example.
//!
//! # Guarantees
//!
//! 1. The command line is the same for every operator (see [`cli`]): `run`, `render --INPUT FILE`
//!    (with `--CHOICE NAME` when the operator declares [`App::RENDER_CHOICE`]), `crd`,
//!    `check-config`, `version`; exit code 0 on success, 1 with `error: <causes>` on one
//!    stderr line when the command fails, 2 on bad usage.
//! 2. Configuration is loaded in layers (compiled defaults, the file named by `--config` — which
//!    must then exist — or else [`AppConfig::DEFAULT_FILE`] if present, the environment under
//!    [`AppConfig::ENV_PREFIX`]) and validated before anything runs; `--templates` overrides
//!    `templates.dir`.
//! 3. `run` re-reads the configuration file every [`CONFIG_RELOAD_INTERVAL`]: a valid file's live
//!    keys apply, its [restart-only keys](AppConfig::RESTART_ONLY) keep their running values and are
//!    named in a warning, an invalid file is refused and the last good configuration kept; each
//!    distinct file content is reported once, not at every reload.
//! 4. `run` logs JSON lines filtered by `RUST_LOG` (default `info`), watches the parents of
//!    `$WATCH_NAMESPACE` only when it is set, and on SIGTERM/SIGINT stops the operator gracefully
//!    and returns once [`Started::stopped`] completes.
//! 5. `controller.*` and `templates.*` ([`ControllerSettings`], [`TemplateSettings`]) are
//!    validated here, with their keys named, once for every operator.
//!
//! # Assumptions
//!
//! 1. The configuration has the sections `controller` and `templates` (the validation errors name
//!    keys under those prefixes).
//!
//! # Caveats
//!
//! 1. A reload never changes the running process's restart-only keys: a changed Lease name,
//!    listener or template directory takes effect at the next start.

pub mod cli;
mod errors;
mod reload;
mod served;
mod settings;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use kube::Client;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError, ConfigStore, Validate};
use crate::runtime::{ParentWatch, Running, RuntimeError};

pub use cli::{
    CheckReport, CommandError, OutputFormat, RenderChoice, check_config, error_chain, error_report,
    format_object, init_tracing, load_config, main, version,
};
pub use errors::{OfflineError, StartError};
pub use reload::{
    CONFIG_RELOAD_INTERVAL, ReloadReport, Reloader, changed_keys, keep_keys, load_file,
    restart_only_changes,
};
pub use served::{NotServed, check_served, resource_of};
pub use settings::{
    ControllerSettings, DEFAULT_LEASE_NAMESPACE, TemplateSettings, check_at_least, check_each,
    check_positive, listeners_collide, parent_watch_from_env,
};

/// An operator's configuration, as the process layer loads, overrides and reloads it.
pub trait AppConfig:
    Validate + Serialize + DeserializeOwned + Default + Clone + PartialEq + Send + Sync + 'static
{
    /// The environment prefix of overrides (`WFE_` reads `WFE_COOLDOWN__PERIOD`).
    const ENV_PREFIX: &'static str;
    /// The file read when `--config` is not given, if it exists (the mounted ConfigMap).
    const DEFAULT_FILE: &'static str;
    /// The keys a running operator cannot change (a key covers every key below it): the watches,
    /// listeners, Lease, template directory… set up once at start-up.
    const RESTART_ONLY: &'static [&'static str];

    /// The `templates` section, for the `--templates` override.
    fn templates_mut(&mut self) -> &mut TemplateSettings;
    /// Sets every [restart-only key](Self::RESTART_ONLY) to `running`'s value. The default
    /// copies them through the serialized form ([`keep_keys`]).
    fn keep_restart_only(&mut self, running: &Self) {
        *self = keep_keys(self, running, Self::RESTART_ONLY);
    }

    /// The compiled defaults, then `file` (if given; it must exist), then the environment,
    /// validated.
    fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        config::load(&Self::default(), file, Self::ENV_PREFIX)
    }

    /// The file to read when none is named: [`DEFAULT_FILE`](Self::DEFAULT_FILE) if it exists,
    /// else none.
    fn default_file() -> Option<PathBuf> {
        let path = PathBuf::from(Self::DEFAULT_FILE);
        path.exists().then_some(path)
    }

    /// `self` as a live reload may apply it on top of `running`: the [restart-only
    /// keys](Self::RESTART_ONLY) keep `running`'s values. Returns the config to apply and the
    /// keys whose new values were held back (to be reported: they need a restart), each named
    /// down to the changed setting (`controller.concurrency`, not `controller`).
    fn for_live_reload(mut self, running: &Self) -> (Self, Vec<String>) {
        let held_back = restart_only_changes(&self, running, Self::RESTART_ONLY);
        self.keep_restart_only(running);
        (self, held_back)
    }
}

/// A running operator as `run` drives it: cancel [`shutdown`](Self::shutdown) to stop it
/// gracefully, await [`stopped`](Self::stopped) for the end.
pub struct Started<E> {
    /// Cancelling it begins the graceful shutdown.
    pub shutdown: CancellationToken,
    /// Completes when the operator has stopped (its buffers flushed).
    pub stopped: Pin<Box<dyn Future<Output = Result<(), E>> + Send>>,
}

impl<E: From<RuntimeError> + 'static> Started<E> {
    /// A started runtime, stopped when its [shutdown token](Running::shutdown_token) is cancelled.
    pub fn runtime<K, D>(running: Running<K, D>) -> Self
    where
        K: kube::Resource<DynamicType = ()> + Send + Sync + 'static,
        D: Send + Sync + 'static,
    {
        Started {
            shutdown: running.shutdown_token(),
            stopped: Box::pin(async move { running.wait().await.map_err(E::from) }),
        }
    }
}

impl<E: Send + 'static> Started<E> {
    /// The same operator, `after` run once it has stopped and before [`stopped`](Self::stopped)
    /// completes (flushing a buffer such as the audit sink's).
    pub fn then(self, after: impl Future<Output = ()> + Send + 'static) -> Self {
        let stopped = self.stopped;
        Started {
            shutdown: self.shutdown,
            stopped: Box::pin(async move {
                let result = stopped.await;
                after.await;
                result
            }),
        }
    }
}

/// What an operator binary supplies to the process layer: names and help texts, its CRD, what
/// `render` and `check-config` do, and how `run` starts it.
pub trait App {
    /// The configuration.
    type Config: AppConfig;
    /// What `check-config` prints after the configuration line.
    type Report: std::fmt::Display;
    /// Why `render` or `check-config` failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Why the operator could not start, or stopped with an error.
    type StartError: std::error::Error + Send + Sync + 'static;

    /// The program name, as `version` and `--help` print it.
    const NAME: &'static str;
    /// The program version.
    const VERSION: &'static str;
    /// One line on what the operator does, for `--help`.
    const ABOUT: &'static str;
    /// `crd`'s help: what the command prints.
    const CRD_ABOUT: &'static str = "Print the CustomResourceDefinition (YAML)";
    /// `check-config`'s help: what it validates.
    const CHECK_ABOUT: &'static str = "Validate the configuration and the files the operator loads at start-up as it does then (no cluster needed)";
    /// `render`'s help: what it prints for which input.
    const RENDER_ABOUT: &'static str;
    /// The name of `render`'s input flag (`wfe` for `--wfe FILE`).
    const RENDER_INPUT: &'static str;
    /// The help of `render`'s input flag.
    const RENDER_INPUT_HELP: &'static str;
    /// The template directory in a source checkout, for `run --templates`'s help.
    const TEMPLATES_IN_CHECKOUT: Option<&'static str> = None;
    /// A `render` flag choosing which of the operator's kinds of object to render (the
    /// WorkflowExecution operator's `--engine NAME`); its value reaches
    /// [`render_choosing`](Self::render_choosing). `None`: `render` has no such flag.
    const RENDER_CHOICE: Option<RenderChoice> = None;

    /// What `crd` prints: the CustomResourceDefinition as YAML (see [`crate::yaml::to_string`]).
    fn crd_yaml() -> Result<String, Self::Error>;

    /// `render`: the object the operator would create for the parent in `input`, under `config`.
    fn render(input: &Path, config: &Self::Config) -> Result<serde_json::Value, Self::Error>;

    /// `render` with the value of the [`RENDER_CHOICE`](Self::RENDER_CHOICE) flag, when given.
    /// The default ignores `choice` and calls [`render`](Self::render).
    fn render_choosing(
        input: &Path,
        config: &Self::Config,
        choice: Option<&str>,
    ) -> Result<serde_json::Value, Self::Error> {
        let _ = choice;
        Self::render(input, config)
    }

    /// `check-config`: what the operator loads at start-up besides the configuration (templates,
    /// mappings…), loaded and checked as at start-up.
    fn check(config: &Self::Config) -> Result<Self::Report, Self::Error>;

    /// `run`: starts the operator in the background on the validated `config` (reloaded
    /// into the store while running), watching `parents`.
    fn start(
        client: Client,
        config: Arc<ConfigStore<Self::Config>>,
        parents: ParentWatch,
    ) -> impl Future<Output = Result<Started<Self::StartError>, Self::StartError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A configuration with one live key and the two shared sections (restart-only).
    #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    pub(crate) struct TestConfig {
        pub greeting: String,
        pub controller: ControllerSettings,
        pub templates: TemplateSettings,
    }

    impl Default for TestConfig {
        fn default() -> Self {
            TestConfig {
                greeting: "hi".into(),
                controller: ControllerSettings::new("test-operator"),
                templates: TemplateSettings::new("/templates"),
            }
        }
    }

    impl Validate for TestConfig {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.greeting.is_empty() {
                return Err(ConfigError::invalid("greeting", "must not be empty"));
            }
            self.controller.validate()?;
            self.templates.validate()
        }
    }

    impl AppConfig for TestConfig {
        const ENV_PREFIX: &'static str = "APP_TEST_";
        const DEFAULT_FILE: &'static str = "/nonexistent/app-test/config.yaml";
        const RESTART_ONLY: &'static [&'static str] = &["controller", "templates"];
        fn templates_mut(&mut self) -> &mut TemplateSettings {
            &mut self.templates
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("test failure")]
    pub(crate) struct TestError;

    impl From<RuntimeError> for TestError {
        fn from(_: RuntimeError) -> Self {
            TestError
        }
    }

    pub(crate) struct TestApp;

    impl App for TestApp {
        type Config = TestConfig;
        type Report = String;
        type Error = TestError;
        type StartError = TestError;
        const NAME: &'static str = "test-operator";
        const VERSION: &'static str = "1.2.3";
        const ABOUT: &'static str = "Tests the process layer";
        const CRD_ABOUT: &'static str = "Print nothing useful";
        const CHECK_ABOUT: &'static str = "Check the greeting";
        const RENDER_ABOUT: &'static str = "Print the input";
        const RENDER_INPUT: &'static str = "thing";
        const RENDER_INPUT_HELP: &'static str = "The Thing (YAML or JSON)";
        const RENDER_CHOICE: Option<RenderChoice> = Some(RenderChoice {
            long: "flavour",
            value_name: "NAME",
            help: "The flavour of the Thing",
        });

        fn crd_yaml() -> Result<String, TestError> {
            Ok(String::new())
        }
        fn render(input: &Path, _: &TestConfig) -> Result<serde_json::Value, TestError> {
            Ok(serde_json::json!({ "input": input }))
        }
        fn render_choosing(
            input: &Path,
            config: &TestConfig,
            choice: Option<&str>,
        ) -> Result<serde_json::Value, TestError> {
            let mut object = Self::render(input, config)?;
            object["flavour"] = serde_json::json!(choice);
            Ok(object)
        }
        fn check(config: &TestConfig) -> Result<String, TestError> {
            Ok(format!("greeting: {}\n", config.greeting))
        }
        async fn start(
            _: Client,
            _: Arc<ConfigStore<TestConfig>>,
            _: ParentWatch,
        ) -> Result<Started<TestError>, TestError> {
            Err(TestError)
        }
    }

    #[test]
    fn render_requires_its_input_flag_under_the_operators_name() {
        let usage = cli::command::<TestApp>()
            .try_get_matches_from(["test-operator", "render"])
            .unwrap_err();
        assert_eq!(usage.exit_code(), 2);
        assert!(usage.to_string().contains("--thing <FILE>"), "{usage}");
        let matches = cli::command::<TestApp>()
            .try_get_matches_from(["test-operator", "render", "--thing", "x.yaml", "-o", "json"])
            .unwrap();
        let (name, args) = matches.subcommand().unwrap();
        assert_eq!(name, "render");
        assert_eq!(
            args.get_one::<PathBuf>("input"),
            Some(&PathBuf::from("x.yaml"))
        );
        assert_eq!(
            args.get_one::<OutputFormat>("output"),
            Some(&OutputFormat::Json)
        );
    }

    /// The operator's `render` flag is on `render` only, optional, and its value reaches
    /// `render_choosing`.
    #[test]
    fn render_takes_the_operators_choice_flag() {
        let usage = cli::command::<TestApp>()
            .try_get_matches_from(["test-operator", "render", "--thing", "x", "--flavour"])
            .unwrap_err();
        assert_eq!(usage.exit_code(), 2, "a value is required");
        let help = cli::command::<TestApp>()
            .find_subcommand_mut("render")
            .unwrap()
            .render_help()
            .to_string();
        assert!(help.contains("--flavour <NAME>"), "{help}");
        assert!(help.contains("The flavour of the Thing"), "{help}");
        let args = [
            "test-operator",
            "render",
            "--thing",
            "x",
            "--flavour",
            "mint",
        ];
        let matches = cli::command::<TestApp>()
            .try_get_matches_from(args)
            .unwrap();
        let (_, render) = matches.subcommand().unwrap();
        assert_eq!(
            render.get_one::<String>("choice").map(String::as_str),
            Some("mint")
        );
        let usage = cli::command::<TestApp>()
            .try_get_matches_from(["test-operator", "check-config", "--flavour", "mint"])
            .unwrap_err();
        assert_eq!(usage.exit_code(), 2, "render's flag only");
        let config = TestConfig::default();
        let object = TestApp::render_choosing(Path::new("x"), &config, Some("mint")).unwrap();
        assert_eq!(object, serde_json::json!({"input": "x", "flavour": "mint"}));
    }

    #[test]
    fn a_command_is_required_and_unknown_flags_are_usage_errors() {
        for args in [
            &["test-operator"][..],
            &["test-operator", "run", "--wfe", "x"],
        ] {
            let usage = cli::command::<TestApp>()
                .try_get_matches_from(args)
                .unwrap_err();
            assert_eq!(usage.exit_code(), 2, "{args:?}");
        }
        cli::command::<TestApp>().debug_assert();
    }

    #[test]
    fn check_config_reports_the_configuration_then_the_operators_findings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "greeting: hello\n").unwrap();
        let report = check_config::<TestApp>(Some(&file), Some(Path::new("/elsewhere"))).unwrap();
        assert_eq!(report.checked, "greeting: hello\n");
        assert_eq!(
            report.to_string(),
            format!("configuration: ok ({})\ngreeting: hello\n", file.display())
        );
        let missing = dir.path().join("missing.yaml");
        let err = check_config::<TestApp>(Some(&missing), None).unwrap_err();
        assert!(matches!(err, CommandError::Config(_)), "{err}");
    }

    #[test]
    fn templates_override_the_directory_of_every_load() {
        let config: TestConfig = load_config(None, Some(Path::new("/elsewhere"))).unwrap();
        assert_eq!(config.templates.dir, PathBuf::from("/elsewhere"));
        assert_eq!(config.greeting, "hi");
    }

    #[test]
    fn error_report_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading x: {0}")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(std::io::Error::other("denied"));
        assert_eq!(error_report(error_chain(&outer)), "reading x: denied");
        let wrapped = CommandError::app(outer);
        assert_eq!(error_report(error_chain(&wrapped)), "reading x: denied");
        assert_eq!(version::<TestApp>(), "test-operator 1.2.3");
    }
}
