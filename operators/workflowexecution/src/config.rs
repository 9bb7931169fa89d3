//! The operator's configuration: every key of the contract's Configuration section.
//!
//! Loaded by [`AppConfig::load`] through the framework's layering: compiled defaults
//! ([`OperatorConfig::default`]) → the YAML file (the mounted ConfigMap, by default
//! [`DEFAULT_CONFIG_FILE`]) → environment variables `WFE_…` with `__` nesting
//! (`WFE_COOLDOWN__PERIOD=2m` sets `cooldown.period`).
//!
//! Guarantees:
//! 1. Keys are camelCase in YAML; an unknown key is an error naming it (`deny_unknown_fields`).
//! 2. [`Validate`] checks every value the operator relies on and names the offending key path
//!    (`` `backoff.max`: must not be shorter than backoff.base (1m) ``); an invalid config is never
//!    returned by [`AppConfig::load`].
//! 3. `config/workflowexecution.yaml` in the repository (the ConfigMap `deploy/` installs) is the
//!    compiled defaults except `execution.allowedBundles`, which it restricts to an example
//!    registry prefix where the compiled default allows every bundle (a test parses it and
//!    compares).
//! 4. [`OperatorConfig::warnings`] names what is valid but unsafe (every bundle allowed); the
//!    operator logs it at start-up.
//!
//! Assumptions:
//! 1. Durations are human strings (`"90s"`, `"5m"`, `"1h30m"`), read and written by the
//!    framework's `config::duration` helpers.
//!
//! Caveats:
//! 1. `audit.url` is a plain string, empty by default, and `audit.caFile` / `audit.tokenFile`
//!    are null by default, so the environment layer can reach them (`WFE_AUDIT__URL`,
//!    `WFE_AUDIT__TOKENFILE`); they matter only when `audit.sink` is `http`. The `audit` section
//!    is the framework's [`AuditSettings`], validated by its own [`AuditSettings::validate`].
use std::time::Duration;

use kubernaut_framework::app::{AppConfig, check_at_least, check_each, check_positive};
use kubernaut_framework::backoff::Backoff;
use kubernaut_framework::config::{ConfigError, Validate};
use kubernaut_framework::engine::check_engine_names;
use kubernaut_framework::glob::{Case, Glob};
use kubernaut_framework::names::{DnsLabel, DnsSubdomain};
use serde::{Deserialize, Serialize};

pub use kubernaut_framework::app::{ControllerSettings, TemplateSettings};
pub use kubernaut_framework::audit::{AuditSettings, AuditSink};

/// Where the operator reads its configuration file when none is named on the command line.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/kubernaut/workflowexecution/config.yaml";
/// The environment prefix of configuration overrides (`WFE_COOLDOWN__PERIOD=2m`).
pub const ENV_PREFIX: &str = "WFE_";

/// The whole operator configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OperatorConfig {
    /// Where and how PipelineRuns run.
    pub execution: ExecutionSettings,
    /// How long a target rests after a remediation.
    pub cooldown: CooldownSettings,
    /// Backoff after pre-execution failures on a target.
    pub backoff: BackoffSettings,
    /// How the WFE's status mirrors its run.
    pub status: StatusSettings,
    /// The template directory, holding `tekton/pipelinerun.yaml.j2`, `tekton/status.yaml` and
    /// `tekton/cancel.yaml` (the framework's `templates.*` section).
    pub templates: TemplateSettings,
    /// Where audit records go: the framework's audit sink settings (`audit.*`).
    pub audit: AuditSettings,
    /// The controller process (the framework's `controller.*` section).
    pub controller: ControllerSettings,
}

impl Default for OperatorConfig {
    /// The compiled defaults: templates in `/etc/kubernaut/workflowexecution/templates`, the
    /// Lease `workflowexecution-operator`.
    fn default() -> Self {
        OperatorConfig {
            execution: ExecutionSettings::default(),
            cooldown: CooldownSettings::default(),
            backoff: BackoffSettings::default(),
            status: StatusSettings::default(),
            templates: TemplateSettings::new("/etc/kubernaut/workflowexecution/templates"),
            audit: AuditSettings::default(),
            controller: ControllerSettings::new("workflowexecution-operator"),
        }
    }
}

impl AppConfig for OperatorConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    const DEFAULT_FILE: &'static str = DEFAULT_CONFIG_FILE;
    /// The watches (execution namespace, engines), listeners, Lease, audit sink and template
    /// directory are set up once at start-up; the default engine must stay one of the engines
    /// watched.
    const RESTART_ONLY: &'static [&'static str] = &[
        "execution.namespace",
        "execution.engines",
        "execution.defaultEngine",
        "templates",
        "audit",
        "controller",
    ];

    fn templates_mut(&mut self) -> &mut TemplateSettings {
        &mut self.templates
    }
}

/// `execution.*`: where and how PipelineRuns run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionSettings {
    /// The namespace every PipelineRun is created in (never the WFE's namespace).
    pub namespace: String,
    /// The service account the workflows' tasks run as.
    pub service_account_name: String,
    /// Service accounts a WFE may choose in `executionConfig.serviceAccountName`; empty = none.
    pub allowed_service_accounts: Vec<String>,
    /// Glob patterns (`*` = any run of characters, case-sensitive) over
    /// `workflowRef.containerImage`: a WFE whose bundle matches none fails with
    /// `ConfigurationError` before anything runs. Anyone who may create a WFE runs the bundle's
    /// code with the runner's permissions; this list says *what* may run. The default, `["*"]`,
    /// allows every bundle and is warned about at start-up.
    pub allowed_bundles: Vec<String>,
    /// The PipelineRun timeout when a WFE sets none.
    #[serde(with = "kubernaut_framework::config::duration")]
    pub default_timeout: Duration,
    /// The longest `executionConfig.timeout` a WFE may ask for; a longer one fails with
    /// `ConfigurationError`. At least `defaultTimeout`.
    #[serde(with = "kubernaut_framework::config::duration")]
    pub max_timeout: Duration,
    /// The service account Tekton's bundles resolver pulls the bundle with (its `serviceAccount`
    /// resolver param), for bundles in a private registry: the resolver does not use
    /// `serviceAccountName`, only this or its own configured default. Unset (the default): the
    /// param is left out and the resolver's default applies.
    // Serialized as null when unset, so the compiled defaults name the key and the environment
    // layer can reach it (`WFE_EXECUTION__BUNDLESERVICEACCOUNT`).
    #[serde(default)]
    pub bundle_service_account: Option<String>,
    /// The execution engines a WorkflowExecution may run on: directory names under
    /// `templates.dir`, each holding one child template (`*.yaml.j2`), its `status.yaml` and its
    /// `cancel.yaml`. The operator watches the child kinds of these engines, so a change needs a
    /// restart.
    pub engines: Vec<String>,
    /// The engine of a WorkflowExecution that sets no `spec.executionEngine`; one of `engines`.
    pub default_engine: String,
}

/// The engine of the compiled defaults: Tekton Pipelines (`templates.dir/tekton/`).
pub const DEFAULT_ENGINE: &str = "tekton";

/// The `execution.allowedBundles` entry that allows every bundle.
pub const ALLOW_ALL_BUNDLES: &str = "*";

impl ExecutionSettings {
    /// Whether `bundle` (a `workflowRef.containerImage`) matches one of `allowedBundles` (every
    /// entry compiles in a validated config; one that does not is skipped, so it can only ever
    /// allow less).
    pub fn allows_bundle(&self, bundle: &str) -> bool {
        let mut patterns = self.allowed_bundles.iter();
        patterns.any(|p| Glob::new(p, Case::Sensitive).is_ok_and(|p| p.matches(bundle)))
    }

    /// Whether `allowedBundles` lets every bundle run (it lists `*`).
    pub fn allows_every_bundle(&self) -> bool {
        self.allowed_bundles.iter().any(|p| p == ALLOW_ALL_BUNDLES)
    }
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        ExecutionSettings {
            namespace: "kubernaut-workflows".to_owned(),
            service_account_name: "kubernaut-workflow-runner".to_owned(),
            allowed_service_accounts: Vec::new(),
            allowed_bundles: vec![ALLOW_ALL_BUNDLES.to_owned()],
            default_timeout: Duration::from_secs(3600),
            max_timeout: Duration::from_secs(24 * 3600),
            bundle_service_account: None,
            engines: vec![DEFAULT_ENGINE.to_owned()],
            default_engine: DEFAULT_ENGINE.to_owned(),
        }
    }
}

/// `cooldown.*`: how long a target rests after a remediation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CooldownSettings {
    /// After a WFE finished, the same workflow is not run on the same target for this long, and
    /// the finished WFE keeps its PipelineRun (the lock) for this long.
    #[serde(with = "kubernaut_framework::config::duration")]
    pub period: Duration,
}

impl Default for CooldownSettings {
    fn default() -> Self {
        CooldownSettings {
            period: Duration::from_secs(300),
        }
    }
}

/// `status.*`: how a WFE's status mirrors its run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusSettings {
    /// The run's intermediate progress (`status.pipelineRunStatus` while it runs) is written at
    /// most once per WFE per this interval, the latest at its end; phase changes, the
    /// "a step ran" marker and a held-back step are written at once.
    #[serde(with = "kubernaut_framework::config::duration")]
    pub progress_interval: Duration,
}

impl Default for StatusSettings {
    fn default() -> Self {
        StatusSettings {
            progress_interval: Duration::from_secs(5),
        }
    }
}

impl Validate for StatusSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_positive("status.progressInterval", self.progress_interval)
    }
}

/// `backoff.*`: the delay schedule after pre-execution failures on a target.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackoffSettings {
    /// The delay after the first failure.
    #[serde(with = "kubernaut_framework::config::duration")]
    pub base: Duration,
    /// The longest delay.
    #[serde(with = "kubernaut_framework::config::duration")]
    pub max: Duration,
    /// The largest power of two applied to `base`.
    pub max_exponent: u32,
    /// After this many consecutive pre-execution failures, the target is skipped with
    /// `ExhaustedRetries`.
    pub max_consecutive_failures: u32,
}

impl Default for BackoffSettings {
    fn default() -> Self {
        BackoffSettings {
            base: Duration::from_secs(60),
            max: Duration::from_secs(600),
            max_exponent: 4,
            max_consecutive_failures: 5,
        }
    }
}

impl BackoffSettings {
    /// The delay schedule: `min(base·2^min(n−1, maxExponent), max)`.
    pub fn schedule(&self) -> Backoff {
        Backoff {
            base: self.base,
            max: self.max,
            max_exponent: self.max_exponent,
        }
    }
}

impl OperatorConfig {
    /// What is valid but unsafe in this configuration, one sentence per finding, for the operator
    /// to log as warnings at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.execution.allows_every_bundle() {
            warnings.push(
                "execution.allowedBundles contains \"*\": every Tekton bundle is allowed, so anyone who may create a WorkflowExecution can run any code with the workflow runner's permissions; list your trusted registries instead"
                    .to_owned(),
            );
        }
        warnings
    }
}

impl Validate for OperatorConfig {
    /// Every section in file order; the first problem found is reported.
    fn validate(&self) -> Result<(), ConfigError> {
        self.execution.validate()?;
        self.backoff.validate()?;
        self.status.validate()?;
        self.templates.validate()?;
        self.audit.validate()?;
        self.controller.validate()
    }
}

impl Validate for ExecutionSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        // Namespaces are DNS labels, ServiceAccounts DNS subdomains.
        DnsLabel::check(&self.namespace).map_err(ConfigError::at("execution.namespace"))?;
        DnsSubdomain::check(&self.service_account_name)
            .map_err(ConfigError::at("execution.serviceAccountName"))?;
        check_each(
            "execution.allowedServiceAccounts",
            &self.allowed_service_accounts,
            |account| DnsSubdomain::check(account),
        )?;
        if let Some(account) = &self.bundle_service_account {
            DnsSubdomain::check(account)
                .map_err(ConfigError::at("execution.bundleServiceAccount"))?;
        }
        if self.allowed_bundles.is_empty() {
            return Err(ConfigError::invalid(
                "execution.allowedBundles",
                "must list at least one pattern (\"*\" allows every bundle)",
            ));
        }
        check_each(
            "execution.allowedBundles",
            &self.allowed_bundles,
            |pattern| Glob::new(pattern, Case::Sensitive).map(drop),
        )?;
        check_engine_names(
            "execution.engines",
            &self.engines,
            "execution.defaultEngine",
            &self.default_engine,
        )?;
        check_positive("execution.defaultTimeout", self.default_timeout)?;
        check_at_least(
            "execution.maxTimeout",
            self.max_timeout,
            "execution.defaultTimeout",
            self.default_timeout,
        )
    }
}

impl Validate for BackoffSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        check_positive("backoff.base", self.base)?;
        check_at_least("backoff.max", self.max, "backoff.base", self.base)?;
        if self.max_exponent > 31 {
            return Err(ConfigError::invalid(
                "backoff.maxExponent",
                format!("{} is too large (at most 31)", self.max_exponent),
            ));
        }
        if self.max_consecutive_failures == 0 {
            return Err(ConfigError::invalid(
                "backoff.maxConsecutiveFailures",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubernaut_framework::config::load_with_env;
    use std::path::{Path, PathBuf};

    fn shipped_file() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/workflowexecution.yaml")
    }

    fn load_env(vars: &[(&str, &str)]) -> Result<OperatorConfig, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        load_with_env(&OperatorConfig::default(), None, ENV_PREFIX, vars)
    }

    #[test]
    fn defaults_are_the_contracts() {
        let c = OperatorConfig::default();
        assert_eq!(c.execution.namespace, "kubernaut-workflows");
        assert_eq!(
            c.execution.service_account_name,
            "kubernaut-workflow-runner"
        );
        assert!(c.execution.allowed_service_accounts.is_empty());
        assert_eq!(c.execution.allowed_bundles, ["*"]);
        assert_eq!(c.execution.default_timeout, Duration::from_secs(3600));
        assert_eq!(c.execution.max_timeout, Duration::from_secs(24 * 3600));
        assert_eq!(c.execution.bundle_service_account, None);
        assert_eq!(c.cooldown.period, Duration::from_secs(300));
        assert_eq!(c.backoff.base, Duration::from_secs(60));
        assert_eq!(c.backoff.max, Duration::from_secs(600));
        assert_eq!(c.backoff.max_exponent, 4);
        assert_eq!(c.backoff.max_consecutive_failures, 5);
        assert_eq!(c.status.progress_interval, Duration::from_secs(5));
        assert_eq!(
            c.templates.dir,
            PathBuf::from("/etc/kubernaut/workflowexecution/templates")
        );
        assert_eq!(c.audit.sink, AuditSink::Log);
        assert_eq!(c.audit.url, "");
        assert_eq!(c.audit.buffer_size, 10_000);
        assert_eq!(c.audit.batch_size, 1_000);
        assert_eq!(c.audit.flush_interval, Duration::from_secs(1));
        assert_eq!(c.audit.ca_file, None);
        assert_eq!(c.audit.token_file, None);
        assert_eq!(c.controller.metrics_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(c.controller.health_addr.to_string(), "0.0.0.0:8081");
        assert!(c.controller.leader_election);
        assert_eq!(c.controller.lease_name, "workflowexecution-operator");
        assert_eq!(c.controller.concurrency, 8);
        assert_eq!(c.validate(), Ok(()));
        let delays: Vec<u64> = (1..=6)
            .map(|n| c.backoff.schedule().delay(n).as_secs())
            .collect();
        assert_eq!(delays, [60, 120, 240, 480, 600, 600]);
    }

    /// The compiled defaults with the one deliberate difference of the shipped (deployed) file:
    /// bundles restricted to an example registry prefix instead of `*`.
    fn shipped_values() -> OperatorConfig {
        let mut config = OperatorConfig::default();
        config.execution.allowed_bundles =
            vec!["registry.example.com/kubernaut-workflows/*".into()];
        config
    }

    #[test]
    fn shipped_file_is_the_compiled_defaults_with_bundles_restricted() {
        let text = std::fs::read_to_string(shipped_file()).unwrap();
        let parsed: OperatorConfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(parsed, shipped_values());
        let loaded = load_with_env(
            &OperatorConfig::default(),
            Some(&shipped_file()),
            ENV_PREFIX,
            Vec::<(String, String)>::new(),
        )
        .unwrap();
        assert_eq!(loaded, shipped_values());
        assert!(loaded.warnings().is_empty(), "{:?}", loaded.warnings());
    }

    #[test]
    fn allowing_every_bundle_is_warned_about() {
        let warnings = OperatorConfig::default().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("every Tekton bundle is allowed"));
    }

    #[test]
    fn allowed_bundles_match_as_globs() {
        let execution = ExecutionSettings {
            allowed_bundles: vec![
                "registry.example.com/kubernaut-workflows/*".into(),
                "other.example.com/exact:v1".into(),
            ],
            ..ExecutionSettings::default()
        };
        let cases = [
            ("registry.example.com/kubernaut-workflows/restart:v1", true),
            (
                "registry.example.com/kubernaut-workflows/a/b@sha256:00",
                true,
            ),
            ("registry.example.com/kubernaut-workflows", false),
            ("registry.example.com/kubernaut-workflows-evil/x:v1", false),
            (
                "evil.example.com/registry.example.com/kubernaut-workflows/x",
                false,
            ),
            ("Registry.example.com/kubernaut-workflows/x", false),
            ("other.example.com/exact:v1", true),
            ("other.example.com/exact:v2", false),
            ("", false),
        ];
        for (bundle, allowed) in cases {
            assert_eq!(execution.allows_bundle(bundle), allowed, "{bundle:?}");
        }
        assert!(!execution.allows_every_bundle());
        assert!(ExecutionSettings::default().allows_bundle("anything/at:all"));
    }

    #[test]
    fn shipped_file_comments_every_key() {
        let text = std::fs::read_to_string(shipped_file()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let previous = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            assert!(
                previous.is_some_and(|p| p.trim_start().starts_with('#')),
                "config/workflowexecution.yaml line {}: {line:?} has no comment above it",
                i + 1
            );
        }
    }

    #[test]
    fn environment_overrides_name_real_keys() {
        let c = load_env(&[
            ("WFE_COOLDOWN__PERIOD", "2m"),
            ("WFE_STATUS__PROGRESSINTERVAL", "1500ms"),
            ("WFE_EXECUTION__SERVICE_ACCOUNT_NAME", "runner-b"),
            ("WFE_BACKOFF__MAXCONSECUTIVEFAILURES", "3"),
            ("WFE_AUDIT__SINK", "http"),
            ("WFE_AUDIT__URL", "https://data-storage:8443"),
            ("WFE_EXECUTION__ALLOWEDBUNDLES", "[\"r.example.com/wf/*\"]"),
            ("WFE_EXECUTION__MAXTIMEOUT", "1h"),
            ("WFE_EXECUTION__BUNDLESERVICEACCOUNT", "registry-puller"),
            ("WFE_AUDIT__CAFILE", "/etc/data-storage/ca.crt"),
            (
                "WFE_AUDIT__TOKENFILE",
                "/var/run/secrets/data-storage/token",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.audit.token_file.as_deref(),
            Some(Path::new("/var/run/secrets/data-storage/token"))
        );
        assert_eq!(
            c.audit.ca_file.as_deref(),
            Some(Path::new("/etc/data-storage/ca.crt"))
        );
        assert_eq!(
            c.execution.bundle_service_account.as_deref(),
            Some("registry-puller")
        );
        assert_eq!(c.execution.allowed_bundles, ["r.example.com/wf/*"]);
        assert_eq!(c.execution.max_timeout, Duration::from_secs(3600));
        assert_eq!(c.cooldown.period, Duration::from_secs(120));
        assert_eq!(c.status.progress_interval, Duration::from_millis(1500));
        assert_eq!(c.execution.service_account_name, "runner-b");
        assert_eq!(c.backoff.max_consecutive_failures, 3);
        assert_eq!(c.audit.sink, AuditSink::Http);
        assert_eq!(c.audit.url, "https://data-storage:8443");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("WFE_COOLDOWN__PERIOD", "5 parsecs")], "cooldown.period"),
            (
                &[("WFE_EXECUTION__NAMESPACE", "Not_A_Namespace")],
                "execution.namespace",
            ),
            (
                &[("WFE_EXECUTION__SERVICEACCOUNTNAME", "")],
                "execution.serviceAccountName",
            ),
            (
                &[(
                    "WFE_EXECUTION__ALLOWEDSERVICEACCOUNTS",
                    "[ok, \"bad name\"]",
                )],
                "execution.allowedServiceAccounts[1]",
            ),
            (
                &[("WFE_EXECUTION__BUNDLESERVICEACCOUNT", "Registry Puller")],
                "execution.bundleServiceAccount",
            ),
            (
                &[("WFE_EXECUTION__DEFAULTTIMEOUT", "0s")],
                "execution.defaultTimeout",
            ),
            (
                &[("WFE_EXECUTION__ALLOWEDBUNDLES", "[]")],
                "execution.allowedBundles",
            ),
            (&[("WFE_EXECUTION__ENGINES", "[]")], "execution.engines"),
            (
                &[("WFE_EXECUTION__ENGINES", "[tekton, Tekton_2]")],
                "execution.engines[1]",
            ),
            (
                &[("WFE_EXECUTION__ENGINES", "[tekton, tekton]")],
                "execution.engines[1]",
            ),
            (
                &[("WFE_EXECUTION__DEFAULTENGINE", "job")],
                "execution.defaultEngine",
            ),
            (
                &[("WFE_EXECUTION__ALLOWEDBUNDLES", "[\"a/*\", \"\"]")],
                "execution.allowedBundles[1]",
            ),
            (
                &[("WFE_EXECUTION__MAXTIMEOUT", "30m")],
                "execution.maxTimeout",
            ),
            (
                &[
                    ("WFE_EXECUTION__DEFAULTTIMEOUT", "2d"),
                    ("WFE_EXECUTION__MAXTIMEOUT", "1d"),
                ],
                "execution.maxTimeout",
            ),
            (
                &[("WFE_EXECUTION__MAXTIMEOUT", "forever")],
                "execution.maxTimeout",
            ),
            (&[("WFE_BACKOFF__BASE", "0s")], "backoff.base"),
            (&[("WFE_BACKOFF__MAX", "30s")], "backoff.max"),
            (&[("WFE_BACKOFF__MAXEXPONENT", "40")], "backoff.maxExponent"),
            (
                &[("WFE_BACKOFF__MAXCONSECUTIVEFAILURES", "0")],
                "backoff.maxConsecutiveFailures",
            ),
            (&[("WFE_TEMPLATES__DIR", "")], "templates.dir"),
            (
                &[("WFE_TEMPLATES__POLLINTERVAL", "0s")],
                "templates.pollInterval",
            ),
            (&[("WFE_AUDIT__SINK", "http")], "audit.url"),
            (
                &[("WFE_AUDIT__SINK", "http"), ("WFE_AUDIT__URL", "ftp://x")],
                "audit.url",
            ),
            (&[("WFE_AUDIT__SINK", "kafka")], "audit.sink"),
            (&[("WFE_AUDIT__BATCHSIZE", "0")], "audit.batchSize"),
            (&[("WFE_AUDIT__BUFFERSIZE", "10")], "audit.bufferSize"),
            (&[("WFE_AUDIT__FLUSHINTERVAL", "0s")], "audit.flushInterval"),
            (
                &[
                    ("WFE_AUDIT__SINK", "http"),
                    ("WFE_AUDIT__URL", "http://data-storage:8080"),
                    ("WFE_AUDIT__CAFILE", "/etc/data-storage/ca.crt"),
                ],
                "audit.caFile",
            ),
            (
                &[
                    ("WFE_AUDIT__SINK", "http"),
                    ("WFE_AUDIT__URL", "https://user:pw@data-storage"),
                ],
                "audit.url",
            ),
            (
                &[("WFE_CONTROLLER__METRICSADDR", "not-an-address")],
                "controller.metricsAddr",
            ),
            (
                &[("WFE_CONTROLLER__HEALTHADDR", "0.0.0.0:9090")],
                "controller.healthAddr",
            ),
            (
                &[("WFE_CONTROLLER__HEALTHADDR", "127.0.0.1:9090")],
                "controller.healthAddr",
            ),
            (
                &[
                    ("WFE_CONTROLLER__METRICSADDR", "127.0.0.1:9090"),
                    ("WFE_CONTROLLER__HEALTHADDR", "[::]:9090"),
                ],
                "controller.healthAddr",
            ),
            (
                &[("WFE_CONTROLLER__LEASENAME", "Bad Lease")],
                "controller.leaseName",
            ),
            (
                &[("WFE_CONTROLLER__CONCURRENCY", "0")],
                "controller.concurrency",
            ),
            (
                &[("WFE_CONTROLLER__LISTPAGESIZE", "0")],
                "controller.listPageSize",
            ),
            (
                &[("WFE_STATUS__PROGRESSINTERVAL", "0s")],
                "status.progressInterval",
            ),
            (
                &[("WFE_STATUS__PROGRESSINTERVAL", "soon")],
                "status.progressInterval",
            ),
        ];
        for (vars, key) in cases {
            let err = load_env(vars).expect_err(key);
            assert_eq!(err.key(), Some(*key), "{vars:?} gave {err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "cooldown:\n  periodd: 5m\n").unwrap();
        let err = load_with_env(
            &OperatorConfig::default(),
            Some(&path),
            ENV_PREFIX,
            Vec::<(String, String)>::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("periodd"), "{err}");
    }

    #[test]
    fn a_live_reload_keeps_restart_only_keys_and_names_them() {
        let running = OperatorConfig::default();
        let mut edited = OperatorConfig::default();
        edited.cooldown.period = Duration::from_secs(60);
        edited.execution.namespace = "elsewhere".into();
        edited.controller.concurrency = 2;
        let (applied, held_back) = edited.for_live_reload(&running);
        assert_eq!(
            applied.cooldown.period,
            Duration::from_secs(60),
            "live keys apply"
        );
        assert_eq!(applied.execution.namespace, running.execution.namespace);
        assert_eq!(applied.controller, running.controller);
        assert_eq!(
            held_back,
            ["controller.concurrency", "execution.namespace"],
            "named down to the setting"
        );
        let (_, none) = OperatorConfig::default().for_live_reload(&running);
        assert!(none.is_empty());
    }
}
