//! Pluggable child kinds as directories ("engines"): an operator whose parent can run as one of
//! several kinds of child (a Tekton PipelineRun, a Kubernetes Job, …) keeps each kind's files in
//! a directory under its template directory:
//! 1. one child template, `*.yaml.j2` ([`TEMPLATE_SUFFIX`]): what the parent runs as;
//! 2. [`STATUS_FILE`]: the status mapping ([`StatusMapping`]), which names the child's kind
//!    (`child`), the objects that carry its failure facts (`grandchildren`) and how both read;
//! 3. [`CANCEL_FILE`]: how a running child is cancelled when its parent is deleted
//!    ([`CancelSpec`]).
//!
//! Nothing about an engine is compiled in: an engine added to the directory and to the
//! operator's configuration runs after a restart.
//!
//! Guarantees:
//! 1. [`Engines::load`] loads every named engine or fails naming the engine and the file; the
//!    operator's [`MappingRules`] are checked on every mapping.
//! 2. [`Engines::template_decls`] declares each engine's template with the kind its mapping
//!    names, so loading the template set test-renders each against that kind.
//! 3. [`Engines::resolve`] keeps a started parent on the engine its status records, over what
//!    its spec asks for and the configured default.
//! 4. [`check_engine_names`] refuses an empty list, a name that is not a DNS label, a name
//!    listed twice and a default that is not listed, naming the configuration key.
//!
//! Caveats:
//! 1. Engines share one template directory and one template set: the template revision covers
//!    every engine's template.
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::Client;
use kube::api::ApiResource;
use serde_json::Value as Json;

use crate::app::{NotServed, check_served, resource_of};
use crate::cancel::CancelSpec;
use crate::config::ConfigError;
use crate::lock::LockKind;
use crate::names::DnsLabel;
use crate::status::{MappingRules, Projection, StatusMapping};
use crate::template::{ChildKind, TemplateDecl, TemplateError, TemplateSet};

/// The status mapping of an engine, in its directory.
pub const STATUS_FILE: &str = "status.yaml";
/// The cancel file of an engine, in its directory.
pub const CANCEL_FILE: &str = "cancel.yaml";
/// The suffix of an engine's child template.
pub const TEMPLATE_SUFFIX: &str = ".yaml.j2";

/// Why an engine could not be loaded; each names the engine and, where there is one, the file.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's directory is missing, unreadable, or does not hold exactly one template.
    #[error("engine {engine:?}: {message}")]
    Directory {
        /// The engine.
        engine: String,
        /// What is wrong.
        message: String,
    },
    /// The status mapping failed to load.
    #[error("loading the status mapping: {message}")]
    StatusMapping {
        /// The engine.
        engine: String,
        /// The mapping file.
        path: PathBuf,
        /// The error (it names the file).
        message: String,
    },
    /// The cancel file failed to load.
    #[error("loading the cancel file: {message}")]
    Cancel {
        /// The engine.
        engine: String,
        /// The cancel file.
        path: PathBuf,
        /// The error (it names the file).
        message: String,
    },
}

/// One loaded engine.
#[derive(Debug)]
pub struct Engine {
    /// Its name (its directory under the template directory).
    pub name: String,
    /// Its child template, relative to the template directory (`tekton/pipelinerun.yaml.j2`).
    pub template: String,
    /// How its child's status reads.
    pub mapping: Arc<StatusMapping>,
    /// How its running child is cancelled.
    pub cancel: Arc<CancelSpec>,
    /// The API resource of its child kind.
    pub child_resource: ApiResource,
    /// The API resource of the kind that carries its failure facts, when the mapping names one.
    pub grandchild_resource: Option<ApiResource>,
}

impl Engine {
    /// Loads engine `name` from `dir/name`, its mapping checked against `rules`.
    ///
    /// # Errors
    /// [`EngineError`] naming the engine and the file at fault.
    pub fn load(dir: &Path, name: &str, rules: &MappingRules) -> Result<Engine, EngineError> {
        let template = template_file(dir, name)?;
        let status = dir.join(name).join(STATUS_FILE);
        let mapping =
            StatusMapping::load(&status, rules).map_err(|e| EngineError::StatusMapping {
                engine: name.to_owned(),
                path: status.clone(),
                message: e.to_string(),
            })?;
        let cancel_file = dir.join(name).join(CANCEL_FILE);
        let cancel =
            CancelSpec::load(&cancel_file, mapping.child()).map_err(|e| EngineError::Cancel {
                engine: name.to_owned(),
                path: cancel_file.clone(),
                message: e.to_string(),
            })?;
        Ok(Engine {
            name: name.to_owned(),
            template,
            child_resource: resource_of(mapping.child()),
            grandchild_resource: mapping.grandchild_kind().map(resource_of),
            mapping: Arc::new(mapping),
            cancel: Arc::new(cancel),
        })
    }

    /// The kind the engine creates (its mapping's `child`).
    pub fn child(&self) -> &ChildKind {
        self.mapping.child()
    }

    /// Its child kind as a lock kind ([`crate::lock::Locks::claim`]): a stale child is deleted
    /// with the cancel file's propagation policy.
    pub fn lock_kind(&self) -> LockKind {
        LockKind {
            resource: self.child_resource.clone(),
            propagation: self.cancel.delete_propagation(),
        }
    }

    /// The template declaration of the engine: its file, the kind it must render, and `sample`
    /// as the context of the load-time render.
    pub fn template_decl(&self, sample: &Json) -> TemplateDecl {
        TemplateDecl {
            file: self.template.clone(),
            child: self.child().clone(),
            sample: sample.clone(),
        }
    }
}

/// The child template of engine `name`: the one `*.yaml.j2` file in `dir/name`, relative to
/// `dir`.
///
/// # Errors
/// [`EngineError::Directory`] when the directory cannot be read or holds no or several
/// templates.
pub fn template_file(dir: &Path, name: &str) -> Result<String, EngineError> {
    let engine_dir = dir.join(name);
    let problem = |message: String| EngineError::Directory {
        engine: name.to_owned(),
        message,
    };
    let entries = std::fs::read_dir(&engine_dir)
        .map_err(|e| problem(format!("reading {}: {e}", engine_dir.display())))?;
    let mut templates: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|file| file.ends_with(TEMPLATE_SUFFIX))
        .collect();
    templates.sort();
    match templates.as_slice() {
        [one] => Ok(format!("{name}/{one}")),
        [] => Err(problem(format!(
            "{} holds no child template (*{TEMPLATE_SUFFIX})",
            engine_dir.display()
        ))),
        many => Err(problem(format!(
            "{} holds {} child templates ({}); an engine has one",
            engine_dir.display(),
            many.len(),
            many.join(", ")
        ))),
    }
}

/// Why [`Engines::for_parent`] has no engine for a parent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoEngine {
    /// The parent started on this engine, which is no longer configured.
    #[error("runs on engine {0:?}, which is no longer configured: configure it again to go on")]
    Dropped(String),
    /// No engine is configured.
    #[error("no execution engine is configured")]
    NoneConfigured,
}

/// Every configured engine, loaded, and the default one.
#[derive(Debug, Clone)]
pub struct Engines {
    by_name: BTreeMap<String, Arc<Engine>>,
    default: String,
}

impl Engines {
    /// Loads the engines `names` from `dir`, `default` the one a parent asking for none runs on.
    ///
    /// # Errors
    /// The first engine that fails to load, named.
    pub fn load(
        dir: &Path,
        names: &[String],
        default: &str,
        rules: &MappingRules,
    ) -> Result<Engines, EngineError> {
        let mut by_name = BTreeMap::new();
        for name in names {
            by_name.insert(name.clone(), Arc::new(Engine::load(dir, name, rules)?));
        }
        Ok(Engines {
            by_name,
            default: default.to_owned(),
        })
    }

    /// The engine called `name`, when configured.
    pub fn get(&self, name: &str) -> Option<&Arc<Engine>> {
        self.by_name.get(name)
    }

    /// The default engine.
    pub fn default_engine(&self) -> Option<&Arc<Engine>> {
        self.get(&self.default)
    }

    /// The name of the engine a parent runs on: the one its status `recorded` once started, else
    /// the one its spec `requested`, else the default.
    pub fn resolve<'a>(&'a self, recorded: Option<&'a str>, requested: Option<&'a str>) -> &'a str {
        recorded.or(requested).unwrap_or(&self.default)
    }

    /// The engine a reconcile of a parent uses: [`Engines::resolve`]'s when it is configured;
    /// the default one for a parent whose spec asks for an engine that is not configured (its
    /// validation then fails it).
    ///
    /// # Errors
    ///
    /// [`NoEngine::Dropped`] for a parent that started on an engine no longer configured (nothing
    /// can read, cancel or release its child: retry until it is configured again), and
    /// [`NoEngine::NoneConfigured`] when no engine is.
    pub fn for_parent(
        &self,
        recorded: Option<&str>,
        requested: Option<&str>,
    ) -> Result<&Arc<Engine>, NoEngine> {
        if let Some(engine) = self.get(self.resolve(recorded, requested)) {
            return Ok(engine);
        }
        match recorded {
            Some(name) => Err(NoEngine::Dropped(name.to_owned())),
            None => self.default_engine().ok_or(NoEngine::NoneConfigured),
        }
    }

    /// Every engine, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Engine>> {
        self.by_name.values()
    }

    /// Every engine's [`Engine::lock_kind`]: the kinds a lock name is checked in before a child
    /// holding it is created.
    pub fn lock_kinds(&self) -> Vec<LockKind> {
        self.iter().map(|engine| engine.lock_kind()).collect()
    }

    /// The template declarations of every engine (one template set serves them all), each
    /// test-rendered with `sample` at load.
    pub fn template_decls(&self, sample: &Json) -> Vec<TemplateDecl> {
        self.iter()
            .map(|engine| engine.template_decl(sample))
            .collect()
    }

    /// The distinct kinds the engines create (their mappings' `child`).
    pub fn child_kinds(&self) -> Vec<ChildKind> {
        distinct(self.iter().map(|e| e.child().clone()))
    }

    /// The distinct kinds that carry the engines' failure facts (`grandchildren.child`).
    pub fn grandchild_kinds(&self) -> Vec<ChildKind> {
        distinct(
            self.iter()
                .filter_map(|e| e.mapping.grandchild_kind().cloned()),
        )
    }

    /// What of a child of `kind` the engines creating that kind read: the union of their
    /// mappings' [`StatusMapping::child_projection`]s.
    pub fn child_projection(&self, kind: &ChildKind) -> Projection {
        let mut projection = Projection::default();
        for engine in self.iter().filter(|e| e.child() == kind) {
            projection.merge(&engine.mapping.child_projection());
        }
        projection
    }

    /// What of a grandchild of `kind` the engines reading that kind read: the union of their
    /// mappings' [`StatusMapping::grandchild_projection`]s.
    pub fn grandchild_projection(&self, kind: &ChildKind) -> Projection {
        let mut projection = Projection::default();
        for engine in self.iter() {
            if engine.mapping.grandchild_kind() == Some(kind)
                && let Some(read) = engine.mapping.grandchild_projection()
            {
                projection.merge(&read);
            }
        }
        projection
    }

    /// Fails unless the cluster serves every kind the engines create or read.
    ///
    /// # Errors
    /// [`NotServed`] for the first kind that is not served.
    pub async fn check_served(&self, client: &Client) -> Result<(), NotServed> {
        for kind in self.child_kinds().iter().chain(&self.grandchild_kinds()) {
            check_served(client, kind).await?;
        }
        Ok(())
    }

    /// Loads (and test-renders with `sample`) every engine's template from `dir`, as the
    /// operator does at start-up, and reports what was loaded (`check-config`).
    ///
    /// # Errors
    /// The [`TemplateError`] of the template set.
    pub fn check(&self, dir: &Path, sample: &Json) -> Result<EnginesReport, TemplateError> {
        let set = TemplateSet::load(dir, &self.template_decls(sample))?;
        Ok(EnginesReport {
            templates_dir: dir.to_path_buf(),
            template_revision: set.revision().to_owned(),
            engines: self
                .iter()
                .map(|engine| EngineReport {
                    name: engine.name.clone(),
                    child: engine.child().to_string(),
                    template: engine.template.clone(),
                })
                .collect(),
        })
    }
}

fn distinct(kinds: impl Iterator<Item = ChildKind>) -> Vec<ChildKind> {
    let mut out: Vec<ChildKind> = Vec::new();
    for kind in kinds {
        if !out.contains(&kind) {
            out.push(kind);
        }
    }
    out
}

/// What [`Engines::check`] loaded: the template directory and revision, and every engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnginesReport {
    /// The template directory.
    pub templates_dir: PathBuf,
    /// The revision of the loaded template set.
    pub template_revision: String,
    /// Each engine: its name, its child kind and its files.
    pub engines: Vec<EngineReport>,
}

/// One engine as [`Engines::check`] loaded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineReport {
    /// The engine's name.
    pub name: String,
    /// The kind it creates, as `apiVersion, Kind=…`.
    pub child: String,
    /// Its child template, relative to the template directory.
    pub template: String,
}

impl fmt::Display for EnginesReport {
    /// One `item: ok (…)` line per item, a YAML mapping that YAML 1.1 and 1.2 readers read alike
    /// (a path that needs it is quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = vec![(
            "templates".to_owned(),
            format!(
                "ok ({}, revision {})",
                self.templates_dir.display(),
                self.template_revision
            ),
        )];
        for engine in &self.engines {
            lines.push((
                format!("engine {}", engine.name),
                format!(
                    "ok ({}: {}, {name}/{STATUS_FILE}, {name}/{CANCEL_FILE})",
                    engine.child,
                    engine.template,
                    name = engine.name
                ),
            ));
        }
        for (item, result) in lines {
            let line = serde_json::json!({ item: result });
            f.write_str(&crate::yaml::to_string(&line))?;
        }
        Ok(())
    }
}

/// Checks an operator's engine list (`engines_key`) and its default (`default_key`): at least
/// one engine, each a DNS label (a directory name a parent can ask for), none twice, and the
/// default among them.
///
/// # Errors
/// [`ConfigError::Invalid`] naming the key at fault.
pub fn check_engine_names(
    engines_key: &str,
    engines: &[String],
    default_key: &str,
    default: &str,
) -> Result<(), ConfigError> {
    if engines.is_empty() {
        return Err(ConfigError::invalid(
            engines_key,
            "must list at least one engine (a directory under templates.dir)",
        ));
    }
    for (i, engine) in engines.iter().enumerate() {
        let key = format!("{engines_key}[{i}]");
        DnsLabel::check(engine).map_err(|e| ConfigError::invalid(&key, e.to_string()))?;
        if engines[..i].contains(engine) {
            return Err(ConfigError::invalid(
                key,
                format!("{engine:?} is listed twice"),
            ));
        }
    }
    if !engines.iter().any(|e| e == default) {
        return Err(ConfigError::invalid(
            default_key,
            format!(
                "{default:?} is not one of {engines_key} ({})",
                engines.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_directory_needs_exactly_one_template() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("one")).unwrap();
        std::fs::write(dir.path().join("one").join("run.yaml.j2"), "").unwrap();
        std::fs::write(dir.path().join("one").join(STATUS_FILE), "").unwrap();
        assert_eq!(template_file(dir.path(), "one").unwrap(), "one/run.yaml.j2");
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        let error = template_file(dir.path(), "empty").unwrap_err().to_string();
        assert!(error.contains("holds no child template"), "{error}");
        std::fs::create_dir(dir.path().join("two")).unwrap();
        for file in ["a.yaml.j2", "b.yaml.j2"] {
            std::fs::write(dir.path().join("two").join(file), "").unwrap();
        }
        let error = template_file(dir.path(), "two").unwrap_err().to_string();
        assert!(
            error.contains("holds 2 child templates (a.yaml.j2, b.yaml.j2)"),
            "{error}"
        );
        let error = template_file(dir.path(), "missing")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("engine \"missing\": reading "), "{error}");
    }

    #[test]
    fn the_recorded_engine_wins_over_the_requested_and_the_default() {
        let engines = Engines {
            by_name: BTreeMap::new(),
            default: "tekton".to_owned(),
        };
        assert_eq!(engines.resolve(None, None), "tekton");
        assert_eq!(engines.resolve(None, Some("job")), "job");
        assert_eq!(engines.resolve(Some("tekton"), Some("job")), "tekton");
        // None of them is loaded here: a started parent's engine is gone, or there is none.
        let dropped = engines.for_parent(Some("tekton"), None).map(|_| ());
        assert_eq!(dropped, Err(NoEngine::Dropped("tekton".to_owned())));
        let none = engines.for_parent(None, Some("job")).map(|_| ());
        assert_eq!(none, Err(NoEngine::NoneConfigured));
    }

    #[test]
    fn engine_names_are_listed_once_as_dns_labels_with_the_default_among_them() {
        let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let check = |list: &[&str], default| {
            check_engine_names("x.engines", &names(list), "x.defaultEngine", default)
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(&["tekton", "job"], "job"), Ok(()));
        let cases: &[(&[&str], &str, &str)] = &[
            (&[], "tekton", "x.engines"),
            (&["tekton", "Job"], "tekton", "x.engines[1]"),
            (&["tekton", "tekton"], "tekton", "is listed twice"),
            (
                &["tekton"],
                "job",
                "\"job\" is not one of x.engines (tekton)",
            ),
        ];
        for (list, default, fragment) in cases {
            let error = check(list, default).unwrap_err();
            assert!(error.contains(fragment), "{error} lacks {fragment}");
        }
    }
}
