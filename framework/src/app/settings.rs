//! The configuration sections every operator process has: `controller.*` (listeners, leader
//! election, concurrency) and `templates.*` (the template directory and its poll interval), and
//! what the process reads from its environment (`POD_NAMESPACE`, `WATCH_NAMESPACE`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Validate};
use crate::names::DnsSubdomain;
use crate::runtime::{LeaderElectionSettings, ParentWatch, RuntimeSettings, default_identity};

/// The namespace the leader Lease lives in when `POD_NAMESPACE` is unset or empty.
pub const DEFAULT_LEASE_NAMESPACE: &str = "kubernaut-system";

/// `controller.*`: the controller process.
///
/// Validated under the key prefix `controller.` (the section's name in every operator's
/// configuration).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerSettings {
    /// Address of the Prometheus `/metrics` endpoint.
    pub metrics_addr: SocketAddr,
    /// Address of `/healthz` and `/readyz`.
    pub health_addr: SocketAddr,
    /// Whether to run only while holding the leader Lease.
    pub leader_election: bool,
    /// The Lease's name.
    pub lease_name: String,
    /// Parents reconciled at once at most.
    pub concurrency: u16,
    /// Objects per page when a cache lists its kind
    /// ([`RuntimeSettings::list_page_size`](crate::runtime::RuntimeSettings::list_page_size)).
    pub list_page_size: u32,
}

impl ControllerSettings {
    /// The defaults with the operator's Lease name: metrics on `0.0.0.0:9090`, health on
    /// `0.0.0.0:8081`, leader election on, concurrency 8, lists in pages of
    /// [`LIST_PAGE_SIZE`](crate::runtime::LIST_PAGE_SIZE).
    pub fn new(lease_name: impl Into<String>) -> Self {
        ControllerSettings {
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            health_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            leader_election: true,
            lease_name: lease_name.into(),
            concurrency: 8,
            list_page_size: crate::runtime::LIST_PAGE_SIZE,
        }
    }

    /// The runtime settings of a controller named `controller_name` (Events' reporting
    /// controller) under these settings and `templates`' poll interval. With leader election the
    /// Lease lives in `$POD_NAMESPACE`, or [`DEFAULT_LEASE_NAMESPACE`] when that is unset or empty.
    pub fn runtime_settings(
        &self,
        controller_name: &str,
        templates: &TemplateSettings,
    ) -> RuntimeSettings {
        let mut settings = RuntimeSettings::new(controller_name);
        settings.metrics_addr = self.metrics_addr;
        settings.health_addr = self.health_addr;
        settings.concurrency = self.concurrency;
        settings.list_page_size = self.list_page_size;
        settings.template_poll = templates.poll_interval;
        if self.leader_election {
            let namespace = non_empty_env("POD_NAMESPACE")
                .unwrap_or_else(|| DEFAULT_LEASE_NAMESPACE.to_owned());
            settings.leader_election = Some(LeaderElectionSettings::new(
                self.lease_name.clone(),
                namespace,
                default_identity(),
            ));
        }
        settings
    }
}

impl Validate for ControllerSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        DnsSubdomain::check(&self.lease_name)
            .map_err(|e| ConfigError::invalid("controller.leaseName", e.to_string()))?;
        if self.concurrency == 0 {
            return Err(ConfigError::invalid(
                "controller.concurrency",
                "must be at least 1",
            ));
        }
        if self.list_page_size == 0 {
            return Err(ConfigError::invalid(
                "controller.listPageSize",
                "must be at least 1 (0 would list everything in one response)",
            ));
        }
        if listeners_collide(self.metrics_addr, self.health_addr) {
            return Err(ConfigError::invalid(
                "controller.healthAddr",
                format!(
                    "{} binds the same port as controller.metricsAddr ({}): use another port",
                    self.health_addr, self.metrics_addr
                ),
            ));
        }
        Ok(())
    }
}

/// `templates.*`: the template directory and how often it is checked for edits.
///
/// Validated under the key prefix `templates.`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateSettings {
    /// The directory holding the operator's templates, status mapping and other template files.
    pub dir: PathBuf,
    /// How often the templates are re-read (hot reload); an edit is used by the children created
    /// after the next check.
    #[serde(with = "crate::config::duration")]
    pub poll_interval: Duration,
}

impl TemplateSettings {
    /// `dir`, checked every 5 seconds.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TemplateSettings {
            dir: dir.into(),
            poll_interval: Duration::from_secs(5),
        }
    }
}

impl Validate for TemplateSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("templates.dir", "must not be empty"));
        }
        check_positive("templates.pollInterval", self.poll_interval)
    }
}

/// An error for `key` unless `value` is at least `min`, the value of `min_key`
/// (`` `backoff.max`: must not be shorter than backoff.base (1m) ``).
pub fn check_at_least(
    key: &str,
    value: Duration,
    min_key: &str,
    min: Duration,
) -> Result<(), ConfigError> {
    if value < min {
        return Err(ConfigError::invalid(
            key,
            format!(
                "must not be shorter than {min_key} ({})",
                crate::config::duration::format(min)
            ),
        ));
    }
    Ok(())
}

/// Checks every entry of the list at `key` with `check`; the first error names its entry
/// (`execution.allowedBundles[2]`).
pub fn check_each<T, E: std::fmt::Display>(
    key: &str,
    items: &[T],
    check: impl Fn(&T) -> Result<(), E>,
) -> Result<(), ConfigError> {
    for (i, item) in items.iter().enumerate() {
        check(item).map_err(ConfigError::at(format!("{key}[{i}]")))?;
    }
    Ok(())
}

/// An error for `key` unless `value` is longer than zero.
pub fn check_positive(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::invalid(key, "must be longer than 0s"))
    } else {
        Ok(())
    }
}

/// Whether two listeners cannot both bind: the same port, and the same address or one of them
/// the unspecified address (`0.0.0.0:9090` takes port 9090 on every address, `127.0.0.1:9090`
/// included; `[::]` usually covers IPv4 too). Port 0 asks for a free port per listener, so two
/// `:0` addresses never collide.
pub fn listeners_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The parents a process watches: every namespace, or only `$WATCH_NAMESPACE` when it is set and
/// not empty.
pub fn parent_watch_from_env() -> ParentWatch {
    ParentWatch {
        namespace: non_empty_env("WATCH_NAMESPACE"),
        selector: None,
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listeners_collide_on_a_shared_port_unless_addresses_differ_or_the_port_is_free() {
        let cases = [
            ("0.0.0.0:9090", "0.0.0.0:9090", true),
            ("0.0.0.0:9090", "127.0.0.1:9090", true),
            ("127.0.0.1:9090", "[::]:9090", true),
            ("127.0.0.1:9090", "127.0.0.2:9090", false),
            ("127.0.0.1:0", "127.0.0.1:0", false),
            ("0.0.0.0:9090", "0.0.0.0:8081", false),
        ];
        for (a, b, collide) in cases {
            assert_eq!(listeners_collide(addr(a), addr(b)), collide, "{a} {b}");
        }
    }

    #[test]
    fn invalid_controller_and_template_settings_name_their_key() {
        let valid = ControllerSettings::new("my-operator");
        assert_eq!(valid.validate(), Ok(()));
        let cases = [
            (
                ControllerSettings {
                    lease_name: "Bad Lease".into(),
                    ..valid.clone()
                },
                "controller.leaseName",
            ),
            (
                ControllerSettings {
                    concurrency: 0,
                    ..valid.clone()
                },
                "controller.concurrency",
            ),
            (
                ControllerSettings {
                    list_page_size: 0,
                    ..valid.clone()
                },
                "controller.listPageSize",
            ),
            (
                ControllerSettings {
                    health_addr: addr("127.0.0.1:9090"),
                    ..valid.clone()
                },
                "controller.healthAddr",
            ),
        ];
        for (settings, key) in cases {
            assert_eq!(settings.validate().unwrap_err().key(), Some(key));
        }
        let templates = TemplateSettings::new("/templates");
        assert_eq!(templates.validate(), Ok(()));
        let empty = TemplateSettings::new("");
        assert_eq!(empty.validate().unwrap_err().key(), Some("templates.dir"));
        let never = TemplateSettings {
            poll_interval: Duration::ZERO,
            ..templates
        };
        assert_eq!(
            never.validate().unwrap_err().key(),
            Some("templates.pollInterval")
        );
    }

    #[test]
    fn runtime_settings_carry_listeners_concurrency_page_size_poll_and_lease() {
        let mut controller = ControllerSettings::new("my-lease");
        controller.concurrency = 3;
        controller.list_page_size = 20;
        let mut templates = TemplateSettings::new("/t");
        templates.poll_interval = Duration::from_secs(7);
        let settings = controller.runtime_settings("my-controller", &templates);
        assert_eq!(settings.controller_name, "my-controller");
        assert_eq!(settings.metrics_addr, controller.metrics_addr);
        assert_eq!(settings.health_addr, controller.health_addr);
        assert_eq!(settings.concurrency, 3);
        assert_eq!(settings.list_page_size, 20);
        assert_eq!(settings.template_poll, Duration::from_secs(7));
        assert!(settings.leader_election.is_some());
        controller.leader_election = false;
        let settings = controller.runtime_settings("my-controller", &templates);
        assert!(settings.leader_election.is_none());
    }
}
