//! The `audit` section of an operator's configuration, and its one validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The configuration section every operator puts [`AuditSettings`] under; error messages name
/// keys below it (`audit.url`).
pub const SECTION: &str = "audit";

/// Where audit records go: the `audit.sink` key.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// JSON lines on the operator's log, target [`LOG_TARGET`](super::LOG_TARGET).
    #[default]
    Log,
    /// Kubernaut Data Storage's batch API at `audit.url`.
    Http,
}

/// `audit.*`: where audit records go, how they are batched and how the `http` sink
/// authenticates. An operator embeds it as the `audit` field of its configuration struct and
/// calls [`AuditSettings::validate`] from its own validation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditSettings {
    /// `log` or `http`.
    pub sink: AuditSink,
    /// Data Storage's base URL (`http` sink); records are posted to
    /// `<url>/api/v1/audit/events/batch`.
    pub url: String,
    /// Records held in memory at most; when full, the newest record is dropped.
    pub buffer_size: usize,
    /// Records per request at most.
    pub batch_size: usize,
    /// A partial batch is sent after this long.
    #[serde(with = "crate::config::duration")]
    pub flush_interval: Duration,
    /// A PEM file of CA certificates that an `https` URL's server certificate must chain to;
    /// when set, only these CAs are trusted. Unset: the built-in public roots. Read at start-up.
    // Serialized as null when unset, so the compiled defaults name the key and the environment
    // layer can reach it (`WFE_AUDIT__CAFILE`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A file holding a bearer token sent as `Authorization: Bearer …` with every batch, for
    /// example a projected ServiceAccount token with Data Storage's audience. Re-read whenever
    /// the file changes (the kubelet rotates projected tokens); never logged.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            sink: AuditSink::Log,
            url: String::new(),
            buffer_size: 10_000,
            batch_size: 1_000,
            flush_interval: Duration::from_secs(1),
            ca_file: None,
            token_file: None,
        }
    }
}

impl AuditSettings {
    /// Checks every value the sinks rely on; the error names the key (`audit.batchSize`). The
    /// URL and the files matter only to the `http` sink and are checked only for it; the files'
    /// contents are read when the sink starts, not here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(invalid("batchSize", "must be at least 1"));
        }
        if self.buffer_size < self.batch_size {
            return Err(invalid(
                "bufferSize",
                format!(
                    "{} is smaller than {SECTION}.batchSize ({})",
                    self.buffer_size, self.batch_size
                ),
            ));
        }
        if self.flush_interval.is_zero() {
            return Err(invalid("flushInterval", "must be longer than 0s"));
        }
        if self.sink == AuditSink::Http {
            let endpoint = self.batch_endpoint()?;
            for (key, path) in [("caFile", &self.ca_file), ("tokenFile", &self.token_file)] {
                if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                    return Err(invalid(key, "must not be empty (leave it unset instead)"));
                }
            }
            if self.ca_file.is_some() && endpoint.scheme() != "https" {
                return Err(invalid(
                    "caFile",
                    format!(
                        "is only used with an https:// {SECTION}.url, not {:?}",
                        self.url
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `<url>/api/v1/audit/events/batch`, keeping any path prefix of `url`.
    pub(crate) fn batch_endpoint(&self) -> Result<reqwest::Url, ConfigError> {
        let url = self.url.trim();
        if url.is_empty() {
            return Err(invalid(
                "url",
                format!("must be set when {SECTION}.sink is http"),
            ));
        }
        let wrong = |reason: String| {
            invalid(
                "url",
                format!("{url:?} is not an http:// or https:// base URL: {reason}"),
            )
        };
        let mut endpoint = reqwest::Url::parse(url).map_err(|e| wrong(e.to_string()))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(wrong(format!(
                "the scheme is {:?}, not http or https",
                endpoint.scheme()
            )));
        }
        if endpoint.host_str().is_none_or(str::is_empty) {
            return Err(wrong("it has no host".to_owned()));
        }
        // Credentials in the URL would show up wherever the endpoint is logged.
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(invalid(
                "url",
                format!("must not carry credentials; use {SECTION}.tokenFile"),
            ));
        }
        let path = format!(
            "{}/{}",
            endpoint.path().trim_end_matches('/'),
            super::BATCH_PATH
        );
        endpoint.set_path(&path);
        Ok(endpoint)
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::invalid(format!("{SECTION}.{key}"), message)
}
