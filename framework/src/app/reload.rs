//! Live configuration reload: the running process re-reads its configuration file, applies what
//! may change while running, holds back (and names) what needs a restart, and keeps the last good
//! configuration when the file is invalid.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::AppConfig;
use crate::config::{ConfigError, ConfigStore};

/// How often a running process re-reads its configuration file (a mounted ConfigMap changes in
/// place).
pub const CONFIG_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Calls `found` with the dotted path of every leaf where `new` and `old` differ (a list counts
/// as one leaf), in key order.
pub fn changed_keys(new: &Value, old: &Value, prefix: &str, found: &mut dyn FnMut(&str)) {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => {
            let keys: std::collections::BTreeSet<&String> = n.keys().chain(o.keys()).collect();
            for key in keys {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                changed_keys(
                    n.get(key).unwrap_or(&Value::Null),
                    o.get(key).unwrap_or(&Value::Null),
                    &path,
                    found,
                );
            }
        }
        (n, o) if n != o => found(prefix),
        _ => {}
    }
}

/// The keys under `restart_only` (a key or any key below it) where `new` differs from `running`,
/// each named down to the changed setting (`controller.concurrency`, not `controller`).
pub fn restart_only_changes<C: serde::Serialize>(
    new: &C,
    running: &C,
    restart_only: &[&str],
) -> Vec<String> {
    let mut held_back = Vec::new();
    changed_keys(
        &serde_json::to_value(new).unwrap_or_default(),
        &serde_json::to_value(running).unwrap_or_default(),
        "",
        &mut |key| {
            let under = |r: &&str| {
                key == *r
                    || key
                        .strip_prefix(*r)
                        .is_some_and(|rest| rest.starts_with('.'))
            };
            if restart_only.iter().any(under) {
                held_back.push(key.to_owned());
            }
        },
    );
    held_back
}

/// `new` with `running`'s value at each of `keys` (dotted paths, `execution.namespace`); a key
/// `running` does not set is left out. Should the result not read back as a `C` (it always does
/// when both are), `running` is returned whole: holding back too much is safe, applying a
/// restart-only key live is not.
pub fn keep_keys<C: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    new: &C,
    running: &C,
    keys: &[&str],
) -> C {
    let (Ok(mut merged), Ok(old)) = (serde_json::to_value(new), serde_json::to_value(running))
    else {
        return running.clone();
    };
    for key in keys {
        let (parent, leaf) = match key.rsplit_once('.') {
            Some((parent, leaf)) => (format!("/{}", parent.replace('.', "/")), leaf),
            None => (String::new(), *key),
        };
        let Some(Value::Object(target)) = merged.pointer_mut(&parent) else {
            continue;
        };
        match old.pointer(&parent).and_then(|section| section.get(leaf)) {
            Some(value) => target.insert(leaf.to_owned(), value.clone()),
            None => target.remove(leaf),
        };
    }
    serde_json::from_value(merged).unwrap_or_else(|_| running.clone())
}

/// Loads the configuration as a running process re-reads it: `file` (no fallback to the default
/// file: the file was chosen at start-up), the environment, then the `templates` override.
pub fn load_file<C: AppConfig>(
    file: Option<&Path>,
    templates: Option<&Path>,
) -> Result<C, ConfigError> {
    let mut config = C::load(file)?;
    if let Some(dir) = templates {
        config.templates_mut().dir = dir.to_path_buf();
    }
    Ok(config)
}

/// What one reload did, for the log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadReport {
    /// A new configuration is in force.
    pub applied: bool,
    /// Restart-only keys whose new values were not applied; reported once per distinct file
    /// content (empty when unchanged since the last report).
    pub held_back: Vec<String>,
    /// The file was refused and the previous configuration kept; reported once per distinct
    /// error.
    pub rejected: Option<ConfigError>,
}

/// Re-reads the configuration and feeds a [`ConfigStore`], remembering what it last reported so
/// that a file waiting for a restart (or an invalid file left in place) is logged once, not at
/// every reload.
#[derive(Debug)]
pub struct Reloader<C> {
    store: Arc<ConfigStore<C>>,
    file: Option<PathBuf>,
    templates: Option<PathBuf>,
    reported: String,
}

impl<C: AppConfig> Reloader<C> {
    /// A reloader of `file` (with the `templates` override applied on every load, as at
    /// start-up) into `store`.
    pub fn new(
        store: Arc<ConfigStore<C>>,
        file: Option<PathBuf>,
        templates: Option<PathBuf>,
    ) -> Self {
        Reloader {
            store,
            file,
            templates,
            reported: String::new(),
        }
    }

    /// Loads once: applies the live keys of a valid configuration, keeps the running values of
    /// [`AppConfig::RESTART_ONLY`] keys and keeps the last good configuration on an error.
    pub fn reload(&mut self) -> ReloadReport {
        let running = self.store.current();
        let loaded = load_file::<C>(self.file.as_deref(), self.templates.as_deref());
        let report = match &loaded {
            Ok(loaded) => serde_json::to_string(loaded).unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        let first_report = report != self.reported;
        self.reported = report;
        let mut held_back = Vec::new();
        let loaded = loaded.map(|loaded| {
            let (applied, held) = loaded.for_live_reload(&running);
            if first_report {
                held_back = held;
            }
            applied
        });
        match self.store.reload(|| loaded) {
            Ok(applied) => ReloadReport {
                applied,
                held_back,
                rejected: None,
            },
            Err(e) => ReloadReport {
                rejected: first_report.then_some(e),
                ..ReloadReport::default()
            },
        }
    }

    /// Reloads every `every` (the first time one period from now) until `shutdown`, logging
    /// what each reload reports.
    pub fn spawn(mut self, every: Duration, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                log(&self.reload());
            }
        })
    }
}

fn log(report: &ReloadReport) {
    if !report.held_back.is_empty() {
        let keys = report.held_back.join(", ");
        warn!(
            keys = %keys,
            "configuration changes that need a restart were not applied: {keys}"
        );
    }
    if report.applied {
        info!("configuration reloaded");
    }
    if let Some(e) = &report.rejected {
        warn!("configuration rejected, keeping the previous one: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TestConfig;
    use super::*;

    #[test]
    fn changed_keys_name_each_differing_leaf_in_key_order() {
        let new = serde_json::json!({"a": {"x": 1, "y": [1, 2]}, "b": 2, "c": 3});
        let old = serde_json::json!({"a": {"x": 1, "y": [1]}, "b": 3, "d": 4});
        let mut found = Vec::new();
        changed_keys(&new, &old, "", &mut |key| found.push(key.to_owned()));
        assert_eq!(found, ["a.y", "b", "c", "d"]);
    }

    #[test]
    fn kept_keys_take_the_running_values_and_nothing_else() {
        let mut new = TestConfig {
            greeting: "hello".to_owned(),
            ..TestConfig::default()
        };
        new.controller.concurrency = 2;
        new.templates.poll_interval = Duration::from_secs(1);
        let running = TestConfig::default();
        let kept = keep_keys(&new, &running, &["controller", "templates.pollInterval"]);
        assert_eq!(kept.greeting, "hello");
        assert_eq!(kept.controller, running.controller);
        assert_eq!(kept.templates, running.templates);
        assert_eq!(keep_keys(&new, &running, &["nowhere.at.all"]), new);
    }

    #[test]
    fn restart_only_changes_match_whole_segments() {
        let new = serde_json::json!({"controller": {"concurrency": 2}, "controllers": 1});
        let old = serde_json::json!({"controller": {"concurrency": 8}, "controllers": 0});
        assert_eq!(
            restart_only_changes(&new, &old, &["controller"]),
            ["controller.concurrency"]
        );
    }

    #[test]
    fn a_reload_applies_live_keys_holds_back_restart_only_ones_and_reports_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "greeting: hello\n").unwrap();
        let store = Arc::new(ConfigStore::new(TestConfig::default()));
        let mut reloader = Reloader::new(store.clone(), Some(file.clone()), None);
        let report = reloader.reload();
        assert!(report.applied);
        assert!(report.held_back.is_empty());
        assert_eq!(store.current().greeting, "hello");

        std::fs::write(&file, "greeting: hi\ncontroller:\n  concurrency: 2\n").unwrap();
        let report = reloader.reload();
        assert!(report.applied, "the live key applies");
        assert_eq!(report.held_back, ["controller.concurrency"]);
        assert_eq!(store.current().greeting, "hi");
        assert_eq!(store.current().controller.concurrency, 8);
        assert_eq!(
            reloader.reload(),
            ReloadReport::default(),
            "the same file is reported once"
        );

        std::fs::write(&file, "greeting: \"\"\n").unwrap();
        let report = reloader.reload();
        assert_eq!(
            report.rejected.as_ref().and_then(ConfigError::key),
            Some("greeting")
        );
        assert_eq!(store.current().greeting, "hi", "the last good one stays");
        assert_eq!(reloader.reload(), ReloadReport::default());
    }
}
