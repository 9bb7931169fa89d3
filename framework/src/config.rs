//! Layered operator configuration: compiled defaults, a YAML file, the environment.
//!
//! [`load`] builds a typed configuration from three layers, later layers winning key by key:
//!
//! 1. the compiled defaults (the value passed in, serialized);
//! 2. a YAML file, usually the mounted ConfigMap (`/etc/kubernaut/<operator>/config.yaml`);
//! 3. environment variables `PREFIX_KEY__SUBKEY=value`, `__` separating nesting levels
//!    (`WFE_COOLDOWN__PERIOD=2m` sets `cooldown.period`).
//!
//! The merged result is deserialized into `T` and then checked by `T`'s [`Validate`]
//! implementation. [`ConfigStore`] holds the live value and swaps it on reload only when the new
//! one loads and validates.
//!
//! # Guarantees
//!
//! 1. Every error names the offending key path in the configuration's own spelling
//!    (`` `cooldown.period`: invalid duration "5 parsecs" … ``) and the layer its value came from
//!    (the file, the environment variable's name, or the compiled defaults) — parse errors and
//!    [`Validate`] errors alike.
//! 2. Environment names match configuration keys case-insensitively and ignoring `_` inside a
//!    segment, so `WFE_EXECUTION__SERVICEACCOUNTNAME` and `WFE_EXECUTION__SERVICE_ACCOUNT_NAME`
//!    both set `execution.serviceAccountName`.
//! 3. A value that fails to load or validate is never returned; [`ConfigStore::reload`] keeps the
//!    last good value on any error.
//! 4. Durations are human strings (`"90s"`, `"5m"`, `"1h30m"`) in both directions
//!    ([`duration`], [`option_duration`]).
//!
//! # Assumptions
//!
//! 1. `T` serializes every key it can deserialize (no `skip_serializing_if` on fields that an
//!    environment variable should reach): the env mapping learns the real key spelling from the
//!    serialized defaults.
//! 2. The YAML file holds one mapping at its root; an empty file counts as "no settings".
//!
//! # Caveats
//!
//! 1. An environment segment that matches no key in the defaults (for example a key below an
//!    empty map) is used lowercased, as figment does. With `#[serde(deny_unknown_fields)]` on `T`,
//!    a misspelt variable is then an error naming it; without, it is ignored.
//! 2. Environment values are parsed like figment parses them: `5` is a number, `true` a bool,
//!    `[a, b]` a list, anything else a string; but where the key wants a string, the value is
//!    taken as written (`WFE_EXECUTION__NAMESPACE=1234` sets the string `"1234"`).
//! 3. A missing file is an error only if a path was given and does not exist.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use figment::providers::{Format, Serialized, Yaml};
use figment::value::{Dict, Map, Value as FigmentValue};
use figment::{Figment, Metadata, Profile, Provider};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A configuration type's own semantic checks, run after deserialization.
pub trait Validate {
    /// Checks cross-field rules and value ranges. Errors should be built with
    /// [`ConfigError::invalid`] so they name the key path.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Why a configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file was named explicitly but does not exist.
    #[error("configuration file {} does not exist", path.display())]
    FileNotFound {
        /// The path that was given.
        path: PathBuf,
    },
    /// A key has a value that cannot be used.
    #[error("`{key}`: {message}{}", origin.as_ref().map(|o| format!(" (from {o})")).unwrap_or_default())]
    Invalid {
        /// The key path in configuration spelling, e.g. `cooldown.period`.
        key: String,
        /// What is wrong with the value.
        message: String,
        /// The layer that supplied the value, when known (a file, an environment variable).
        origin: Option<String>,
    },
    /// A layer could not be read or parsed at all (for example a YAML syntax error).
    #[error("{origin}: {message}")]
    Source {
        /// The layer, e.g. the YAML file.
        origin: String,
        /// The reader's or parser's message.
        message: String,
    },
}

impl ConfigError {
    /// An error for `key` (a dotted path such as `backoff.max`), for use in [`Validate`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
            origin: None,
        }
    }

    /// A function turning an error into a [`ConfigError::Invalid`] for `key`, its message the
    /// error's (`DnsLabel::check(&namespace).map_err(ConfigError::at("execution.namespace"))`).
    pub fn at<E: std::fmt::Display>(key: impl Into<String>) -> impl FnOnce(E) -> ConfigError {
        let key = key.into();
        move |e| ConfigError::invalid(key, e.to_string())
    }

    /// The key path this error is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    fn from_figment(err: figment::Error) -> Self {
        let mut path = err.path.clone();
        let message = match &err.kind {
            figment::error::Kind::UnknownField(field, expected) => {
                format!(
                    "unknown key `{field}`, expected one of: {}",
                    expected.join(", ")
                )
            }
            other => other.to_string(),
        };
        // Missing (and, depending on the layer, unknown) fields are reported at their parent;
        // name the field itself.
        let field = match &err.kind {
            figment::error::Kind::MissingField(field) => Some(field.to_string()),
            figment::error::Kind::UnknownField(field, _) => Some(field.clone()),
            _ => None,
        };
        if let Some(field) = field
            && path.last() != Some(&field)
        {
            path.push(field);
        }
        let origin = err.metadata.as_ref().map(|md| {
            let profile = err.profile.clone().unwrap_or_default();
            layer_name(md, &profile, &err.path)
        });
        if path.is_empty() {
            ConfigError::Source {
                origin: origin.unwrap_or_else(|| "configuration".to_owned()),
                message,
            }
        } else {
            ConfigError::Invalid {
                key: path.join("."),
                message,
                origin,
            }
        }
    }
}

/// How an error names the layer a value came from: `YAML file /etc/…/config.yaml`,
/// `environment variable WFE_COOLDOWN__PERIOD`, `the compiled defaults`.
fn layer_name(md: &Metadata, profile: &Profile, path: &[String]) -> String {
    if md.name == DEFAULTS_LAYER_NAME {
        return format!("the {DEFAULTS_LAYER_NAME}");
    }
    match &md.source {
        Some(figment::Source::File(file)) => format!("{} {}", md.name, file.display()),
        Some(source) => format!("{} {source}", md.name),
        None if !path.is_empty() && md.name.starts_with(ENV_LAYER_NAME) => {
            format!("environment variable {}", md.interpolate(profile, path))
        }
        None => md.name.to_string(),
    }
}

/// The name the compiled defaults' layer is given (the errors call it "the compiled defaults").
const DEFAULTS_LAYER_NAME: &str = "compiled defaults";

/// Loads `T` from `defaults`, then `file` (if given), then the process environment under
/// `env_prefix` (e.g. `"WFE_"`), and validates it. See the module docs for the rules.
pub fn load<T>(defaults: &T, file: Option<&Path>, env_prefix: &str) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Validate,
{
    let vars = std::env::vars_os().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    load_with_env(defaults, file, env_prefix, vars)
}

/// [`load`] with an explicit environment instead of the process environment (for tests, and for
/// callers that read the environment once at start-up).
pub fn load_with_env<T, I, K, V>(
    defaults: &T,
    file: Option<&Path>,
    env_prefix: &str,
    env: I,
) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Validate,
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let defaults_layer = Serialized::defaults(defaults);
    let known = Figment::from(&defaults_layer)
        .data()
        .map_err(ConfigError::from_figment)?
        .remove(&Profile::Default)
        .unwrap_or_default();
    let mut figment = Figment::from(NamedDefaults(defaults_layer));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::FileNotFound {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Source {
            origin: format!("configuration file {}", path.display()),
            message: e.to_string(),
        })?;
        // An empty ConfigMap key is "no settings", not a type error about a null root.
        if !yaml_is_empty(&text) {
            figment = figment.merge(Yaml::file_exact(path));
        }
    }
    let mut env = EnvLayer::new(env_prefix, env, &known);
    let value: T = loop {
        match figment.clone().merge(&env).extract() {
            Ok(value) => break value,
            // A variable's value is parsed (`1234` is a number), but a string key wants the text:
            // take it as written and try again (once per variable at most).
            Err(e) if env.keep_as_text(&e) => continue,
            Err(e) => return Err(ConfigError::from_figment(e)),
        }
    };
    let figment = figment.merge(&env);
    value.validate().map_err(|e| with_layer(e, &figment))?;
    Ok(value)
}

/// `err` naming the layer its key's value came from, if it does not already.
fn with_layer(err: ConfigError, figment: &Figment) -> ConfigError {
    match err {
        ConfigError::Invalid {
            key,
            message,
            origin: None,
        } => {
            // `execution.allowedBundles[1]` was set as the list `execution.allowedBundles`.
            let setting = key.split('[').next().unwrap_or(&key);
            let path: Vec<String> = setting.split('.').map(str::to_owned).collect();
            let origin = figment
                .find_metadata(setting)
                .map(|md| layer_name(md, &Profile::Default, &path));
            ConfigError::Invalid {
                key,
                message,
                origin,
            }
        }
        other => other,
    }
}

/// The compiled defaults as a layer with a name errors can use.
struct NamedDefaults<T>(Serialized<T>);

impl<T: Serialize> Provider for NamedDefaults<T> {
    fn metadata(&self) -> Metadata {
        let mut md = self.0.metadata();
        md.name = DEFAULTS_LAYER_NAME.into();
        md
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.0.data()
    }
}

/// True when a YAML text holds no content (only blank lines, comments or a document marker).
fn yaml_is_empty(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// The metadata name of the environment layer (its variables are named in errors).
const ENV_LAYER_NAME: &str = "environment variables";

/// A figment provider over an explicit list of environment variables, mapping each name onto the
/// real (camelCase) key path found in the serialized defaults.
struct EnvLayer {
    prefix: String,
    dict: Dict,
    /// Key path (dotted, real spelling) → the variable that set it, for error messages.
    names: BTreeMap<String, String>,
    /// Key path → the variable's value as written, for keys whose parsed value was not a string.
    texts: BTreeMap<String, (Vec<String>, String)>,
}

impl EnvLayer {
    fn new<I, K, V>(prefix: &str, env: I, known: &Dict) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut dict = Dict::new();
        let mut names = BTreeMap::new();
        let mut texts = BTreeMap::new();
        for (name, value) in env {
            let name = name.as_ref().trim();
            let Some(rest) = strip_prefix_ignore_case(name, prefix) else {
                continue;
            };
            let segments: Vec<&str> = rest.split("__").collect();
            if segments.iter().any(|s| s.is_empty()) {
                continue;
            }
            let path = real_key_path(&segments, known);
            let text = value.as_ref().to_owned();
            let parsed: FigmentValue = text
                .parse()
                .unwrap_or_else(|_| FigmentValue::from(text.clone()));
            if parsed.as_str().is_none() {
                texts.insert(path.join("."), (path.clone(), text));
            }
            insert_path(&mut dict, &path, parsed);
            names.insert(path.join("."), name.to_owned());
        }
        EnvLayer {
            prefix: prefix.to_owned(),
            dict,
            names,
            texts,
        }
    }

    /// If `err` is a type error about a key this layer set to a parsed non-string value while a
    /// string was expected (`WFE_EXECUTION__NAMESPACE=1234`), sets the key to the variable's text
    /// instead and returns true (false for any other error, and for a key already retried).
    fn keep_as_text(&mut self, err: &figment::Error) -> bool {
        let figment::error::Kind::InvalidType(_, expected) = &err.kind else {
            return false;
        };
        if !expected.contains("string") {
            return false;
        }
        // The key itself, or the list it is an item of (`execution.allowedServiceAccounts.0`).
        let Some(key) = (1..=err.path.len())
            .rev()
            .map(|n| err.path[..n].join("."))
            .find(|key| self.texts.contains_key(key))
        else {
            return false;
        };
        let Some((path, text)) = self.texts.remove(&key) else {
            return false;
        };
        let value = if key.len() < err.path.join(".").len() {
            // A list of strings: `[1234, abc]` is the items as written, quotes removed.
            let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
            let items: Vec<String> = inner
                .split(',')
                .map(|item| item.trim().trim_matches(['"', '\'']).to_owned())
                .filter(|item| !item.is_empty())
                .collect();
            FigmentValue::from(items)
        } else {
            FigmentValue::from(text)
        };
        insert_path(&mut self.dict, &path, value);
        true
    }
}

/// Sets `value` at `path` inside `dict`, creating (or replacing non-dictionary) parents.
fn insert_path(dict: &mut Dict, path: &[String], value: FigmentValue) {
    let Some((leaf, parents)) = path.split_last() else {
        return;
    };
    let mut level = dict;
    for parent in parents {
        let slot = level
            .entry(parent.clone())
            .or_insert_with(|| FigmentValue::from(Dict::new()));
        if slot.as_dict().is_none() {
            *slot = FigmentValue::from(Dict::new());
        }
        let FigmentValue::Dict(_, next) = slot else {
            return;
        };
        level = next;
    }
    level.insert(leaf.clone(), value);
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        let names = self.names.clone();
        Metadata::named(format!("{ENV_LAYER_NAME} `{}`", self.prefix)).interpolater(
            move |_: &Profile, keys: &[&str]| {
                // An item of a list names the variable that set the list.
                (1..=keys.len())
                    .rev()
                    .find_map(|n| names.get(&keys[..n].join(".")).cloned())
                    .unwrap_or_else(|| keys.join("."))
            },
        )
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// Lowercase without `_` and `-`: how an environment segment and a key are compared.
fn normalize(segment: &str) -> String {
    segment
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Maps env segments onto the key spelling of the defaults, level by level; a segment with no
/// match (and everything below it) is lowercased.
fn real_key_path(segments: &[&str], known: &Dict) -> Vec<String> {
    let mut path = Vec::with_capacity(segments.len());
    let mut level = Some(known);
    for segment in segments {
        let wanted = normalize(segment);
        let found = level.and_then(|dict| dict.iter().find(|(key, _)| normalize(key) == wanted));
        match found {
            Some((key, value)) => {
                path.push(key.clone());
                level = value.as_dict();
            }
            None => {
                path.push(segment.to_ascii_lowercase());
                level = None;
            }
        }
    }
    path
}

/// Reloadable configuration with a last-known-good rule.
///
/// Readers take a cheap [`Arc`] snapshot with [`current`](Self::current); [`reload`](Self::reload)
/// swaps in a new value only when it loaded and validated.
#[derive(Debug)]
pub struct ConfigStore<T> {
    current: RwLock<Arc<T>>,
}

impl<T> ConfigStore<T> {
    /// A store serving `initial`.
    pub fn new(initial: T) -> Self {
        ConfigStore {
            current: RwLock::new(Arc::new(initial)),
        }
    }

    /// The value in force.
    pub fn current(&self) -> Arc<T> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer panicked between two whole-value swaps: the value is still consistent.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Runs `load`; on success swaps the value in and reports whether it differs from the old
    /// one, on error keeps the old value and returns the error.
    pub fn reload(&self, load: impl FnOnce() -> Result<T, ConfigError>) -> Result<bool, ConfigError>
    where
        T: PartialEq,
    {
        let next = load()?;
        let mut guard = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if **guard == next {
            return Ok(false);
        }
        *guard = Arc::new(next);
        Ok(true)
    }
}

/// Serde helpers for [`std::time::Duration`] as a human string (`"90s"`, `"5m"`, `"1h30m"`), the
/// notation of [`crate::duration::parse_humane`] and [`crate::duration::format_humane`].
///
/// Use with `#[serde(with = "kubernaut_framework::config::duration")]`. Serializes in the same
/// compact form (`"1h30m"`, `"1m30s"`, `"0s"`), so a serialized default reads back unchanged.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub use crate::duration::{format_humane as format, parse_humane as parse};

    /// Serializes as [`format()`] does.
    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*d))
    }

    /// Deserializes a string through [`parse`]; numbers are refused (no implied unit).
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        deserializer.deserialize_any(super::DurationVisitor)
    }
}

/// Serde helpers for `Option<std::time::Duration>` as a human string or null.
pub mod option_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` as [`super::duration::format`] does and `None` as null.
    pub fn serialize<S: Serializer>(
        d: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serializer.serialize_some(&super::duration::format(*d)),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes null as `None`, anything else as [`super::duration::deserialize`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        /// `Some` wrapper so `Option` can reuse the plain duration visitor.
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::duration")] Duration);
        Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|w| w.0))
    }
}

/// Accepts a duration string; refuses numbers and other types with a message naming the value
/// (a bare number has no unit).
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = std::time::Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration string like \"90s\", \"5m\" or \"1h30m\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        duration::parse(v).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Err(E::custom(unitless(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Err(E::custom(unitless(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(unitless(v)))
    }
}

fn unitless(n: impl fmt::Display) -> String {
    format!("invalid duration {n}: a duration needs a unit, like \"{n}s\" or \"{n}m\"")
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct TestConfig {
        execution: Execution,
        cooldown: Cooldown,
        #[serde(with = "option_duration")]
        default_timeout: Option<Duration>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Execution {
        namespace: String,
        service_account_name: String,
        allowed_service_accounts: Vec<String>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Cooldown {
        #[serde(with = "duration")]
        period: Duration,
    }

    impl Default for TestConfig {
        fn default() -> Self {
            TestConfig {
                execution: Execution {
                    namespace: "kubernaut-workflows".into(),
                    service_account_name: "kubernaut-workflow-runner".into(),
                    allowed_service_accounts: vec![],
                },
                cooldown: Cooldown {
                    period: Duration::from_secs(300),
                },
                default_timeout: None,
            }
        }
    }

    impl Validate for TestConfig {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.cooldown.period < Duration::from_secs(1) {
                return Err(ConfigError::invalid(
                    "cooldown.period",
                    "must be at least 1s",
                ));
            }
            Ok(())
        }
    }

    fn yaml_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content.as_bytes()).unwrap();
        file
    }

    fn load_test(file: Option<&Path>, env: &[(&str, &str)]) -> Result<TestConfig, ConfigError> {
        load_with_env(
            &TestConfig::default(),
            file,
            "WFE_",
            env.iter().map(|(k, v)| (*k, *v)),
        )
    }

    #[test]
    fn precedence_is_default_then_file_then_env() {
        let file = yaml_file("cooldown:\n  period: 2m\nexecution:\n  namespace: from-file\n");
        // (file?, env value?, expected period, expected namespace)
        let cases: [(bool, Option<&str>, u64, &str); 4] = [
            (false, None, 300, "kubernaut-workflows"),
            (true, None, 120, "from-file"),
            (false, Some("45s"), 45, "kubernaut-workflows"),
            (true, Some("45s"), 45, "from-file"),
        ];
        for (with_file, env_period, period, namespace) in cases {
            let env: Vec<(&str, &str)> = env_period
                .map(|p| vec![("WFE_COOLDOWN__PERIOD", p)])
                .unwrap_or_default();
            let cfg = load_test(with_file.then_some(file.path()), &env).unwrap();
            let case = format!("file={with_file} env={env_period:?}");
            assert_eq!(cfg.cooldown.period, Duration::from_secs(period), "{case}");
            assert_eq!(cfg.execution.namespace, namespace, "{case}");
            // Untouched keys keep their compiled defaults in every case.
            assert_eq!(
                cfg.execution.service_account_name, "kubernaut-workflow-runner",
                "{case}"
            );
        }
    }

    #[test]
    fn env_names_match_camel_case_keys() {
        let names = [
            "WFE_EXECUTION__SERVICEACCOUNTNAME",
            "WFE_EXECUTION__SERVICE_ACCOUNT_NAME",
            "wfe_execution__service_account_name",
            "Wfe_Execution__ServiceAccountName",
        ];
        for name in names {
            let cfg = load_test(None, &[(name, "runner-2")]).unwrap();
            assert_eq!(cfg.execution.service_account_name, "runner-2", "{name}");
        }
    }

    #[test]
    fn env_values_parse_lists_and_ignore_other_prefixes() {
        let cfg = load_test(
            None,
            &[
                ("WFE_EXECUTION__ALLOWED_SERVICE_ACCOUNTS", "[a, b]"),
                ("OTHER_COOLDOWN__PERIOD", "1s"),
                ("WFE_", "x"),
                ("PATH", "/usr/bin"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.execution.allowed_service_accounts, vec!["a", "b"]);
        assert_eq!(cfg.cooldown.period, Duration::from_secs(300));
    }

    #[test]
    fn bad_duration_in_file_names_key_and_file() {
        let file = yaml_file("cooldown:\n  period: 5 parsecs\n");
        let err = load_test(Some(file.path()), &[]).unwrap_err();
        assert_eq!(err.key(), Some("cooldown.period"));
        let text = err.to_string();
        assert!(
            text.starts_with("`cooldown.period`: invalid duration \"5 parsecs\""),
            "{text}"
        );
        assert!(
            text.contains(&file.path().display().to_string())
                || text.contains(
                    &file
                        .path()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .to_string()
                ),
            "{text}"
        );
    }

    #[test]
    fn bad_duration_in_env_names_key_and_variable() {
        let err = load_test(None, &[("WFE_COOLDOWN__PERIOD", "soon")]).unwrap_err();
        assert_eq!(err.key(), Some("cooldown.period"));
        let text = err.to_string();
        assert!(text.contains("invalid duration \"soon\""), "{text}");
        assert!(text.contains("WFE_COOLDOWN__PERIOD"), "{text}");
    }

    #[test]
    fn unitless_number_is_refused_with_its_path() {
        let err = load_test(None, &[("WFE_COOLDOWN__PERIOD", "300")]).unwrap_err();
        assert_eq!(err.key(), Some("cooldown.period"));
        assert!(err.to_string().contains("needs a unit"), "{err}");
    }

    #[test]
    fn unknown_and_mistyped_keys_name_their_path() {
        let file = yaml_file("cooldown:\n  periodd: 2m\n");
        let err = load_test(Some(file.path()), &[]).unwrap_err();
        assert_eq!(err.key(), Some("cooldown.periodd"), "{err}");

        let err = load_test(None, &[("WFE_COOLDOWN__PERIODD", "2m")]).unwrap_err();
        assert_eq!(err.key(), Some("cooldown.periodd"), "{err}");
        assert!(err.to_string().contains("WFE_COOLDOWN__PERIODD"), "{err}");

        let file = yaml_file("execution:\n  allowedServiceAccounts: nope\n");
        let err = load_test(Some(file.path()), &[]).unwrap_err();
        assert_eq!(err.key(), Some("execution.allowedServiceAccounts"), "{err}");
    }

    #[test]
    fn validation_errors_name_the_layer_of_the_value() {
        let err = load_test(None, &[("WFE_COOLDOWN__PERIOD", "10ms")]).unwrap_err();
        assert_eq!(err.key(), Some("cooldown.period"));
        assert_eq!(
            err.to_string(),
            "`cooldown.period`: must be at least 1s (from environment variable WFE_COOLDOWN__PERIOD)"
        );
        let file = yaml_file("cooldown:\n  period: 10ms\n");
        let err = load_test(Some(file.path()), &[]).unwrap_err().to_string();
        assert!(
            err.starts_with("`cooldown.period`: must be at least 1s (from YAML file ")
                && err.contains(&file.path().display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn all_digit_environment_values_of_string_keys_are_strings() {
        let cfg = load_test(
            None,
            &[
                ("WFE_EXECUTION__NAMESPACE", "1234"),
                ("WFE_EXECUTION__SERVICEACCOUNTNAME", "true"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.execution.namespace, "1234");
        assert_eq!(cfg.execution.service_account_name, "true");
        let cfg = load_test(
            None,
            &[(
                "WFE_EXECUTION__ALLOWEDSERVICEACCOUNTS",
                "[1234, \"abc\", 007]",
            )],
        )
        .unwrap();
        assert_eq!(
            cfg.execution.allowed_service_accounts,
            ["1234", "abc", "007"]
        );
        // A key that is not a string still gets the parsed value (and its own error).
        let err = load_test(None, &[("WFE_COOLDOWN__PERIOD", "300")]).unwrap_err();
        assert!(err.to_string().contains("needs a unit"), "{err}");
    }

    #[test]
    fn file_presence_rules() {
        let missing = Path::new("/nonexistent/kubernaut/config.yaml");
        assert_eq!(
            load_test(Some(missing), &[]).unwrap_err(),
            ConfigError::FileNotFound {
                path: missing.to_owned()
            }
        );
        for empty in ["", "\n", "# nothing set\n", "---\n"] {
            let file = yaml_file(empty);
            assert_eq!(
                load_test(Some(file.path()), &[]).unwrap(),
                TestConfig::default(),
                "{empty:?}"
            );
        }
        let broken = yaml_file("cooldown: [unclosed\n");
        let err = load_test(Some(broken.path()), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Source { .. } | ConfigError::Invalid { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("YAML"), "{err}");
    }

    #[test]
    fn option_duration_accepts_null_and_strings() {
        let cfg = load_test(None, &[("WFE_DEFAULT_TIMEOUT", "1h")]).unwrap();
        assert_eq!(cfg.default_timeout, Some(Duration::from_secs(3600)));
        let file = yaml_file("defaultTimeout: null\n");
        let cfg = load_test(Some(file.path()), &[]).unwrap();
        assert_eq!(cfg.default_timeout, None);
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["defaultTimeout"], serde_json::Value::Null);
        assert_eq!(json["cooldown"]["period"], "5m");
    }

    #[test]
    fn store_keeps_last_good_value() {
        let store = ConfigStore::new(TestConfig::default());
        let before = store.current();

        let err = store
            .reload(|| load_test(None, &[("WFE_COOLDOWN__PERIOD", "5 parsecs")]))
            .unwrap_err();
        assert_eq!(err.key(), Some("cooldown.period"));
        assert!(Arc::ptr_eq(&before, &store.current()), "old value kept");

        assert_eq!(store.reload(|| load_test(None, &[])), Ok(false));
        assert!(
            Arc::ptr_eq(&before, &store.current()),
            "unchanged value kept"
        );

        assert_eq!(
            store.reload(|| load_test(None, &[("WFE_COOLDOWN__PERIOD", "2m")])),
            Ok(true)
        );
        assert_eq!(store.current().cooldown.period, Duration::from_secs(120));
        // The snapshot taken before stays valid and unchanged for its holder.
        assert_eq!(before.cooldown.period, Duration::from_secs(300));
    }
}
