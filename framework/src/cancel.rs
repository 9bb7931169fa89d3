//! Cancelling a running child when its parent is deleted, as data: a *cancel file* next to the
//! child template says which merge patch cancels a child, how to tell a child that is cancelled
//! already, how long deletion waits for a cancelled child to finish, and how the child is then
//! deleted.
//!
//! ```yaml
//! child: {apiVersion: tekton.dev/v1, kind: PipelineRun}
//! patch:                         # JSON merge patch (RFC 7396) that cancels a running child
//!   spec:
//!     status: CancelledRunFinally
//! alreadyCancelled:              # a child matching this is not patched again
//!   path: "$.spec.status"
//!   values: [Cancelled, CancelledRunFinally]
//! finishGracePeriod: 5m          # how long deletion waits for the cancelled child to finish
//! deletePropagation: Background  # optional: Foreground | Background (default) | Orphan
//! ```
//!
//! Whether a child has *finished* is not in this file: it is the status mapping's phase
//! ([`crate::status`]).
//!
//! # Guarantees
//! 1. Everything is checked when the file is loaded ([`CancelSpec::load`]), at start-up, and every
//!    error names the file and the key (`` `patch.metadata` ``, `` `alreadyCancelled.path` ``):
//!    unknown keys, a `child` other than the operator's, a patch that is not a non-empty mapping,
//!    that sets `metadata`, `apiVersion`, `kind` or `status` (identity is the framework's, the
//!    resourceVersion precondition the operator's, and `status` is a subresource a patch of the
//!    object cannot change) or that deletes a field (`null`), an invalid JSONPath, an empty
//!    `values` list, an invalid duration, a `deletePropagation` other than `Foreground`,
//!    `Background` or `Orphan`.
//! 2. The patch is consistent with `alreadyCancelled`: a child the patch was applied to matches
//!    it (checked at load), so the operator never patches the same child twice.
//! 3. [`CancelSpec::patch`] is the configured patch plus, when given, a
//!    `metadata.resourceVersion` precondition: a child replaced or changed since it was read is
//!    not patched blindly.
//! 4. [`CancelSpec::delete_propagation`] is `Background` unless the file says otherwise, so the
//!    garbage collector removes the child's dependents (a `batch/v1` Job's Pods, a PipelineRun's
//!    TaskRuns) after the child is deleted.
//!
//! # Caveats
//! 1. The file is read once at start-up; an edit takes effect at the next restart.
//! 2. A child deleted before its controller reacts to the patch never finishes its cancellation
//!    (a PipelineRun's `finally` tasks, say): deletion waits up to `finishGracePeriod` for the
//!    child to finish, then deletes it anyway (a child controller that is down must not keep
//!    parents from being deleted).
//! 3. `Orphan` leaves the child's dependents behind; use it only when something else removes
//!    them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use jsonpath_rust::parser::model::JpQuery;
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PropagationPolicy},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::template::ChildKind;

/// Top-level keys a cancel patch may not set, and why.
const FORBIDDEN_PATCH_KEYS: [(&str, &str); 4] = [
    (
        "metadata",
        "the operator owns the run's identity and adds the resourceVersion precondition itself",
    ),
    ("apiVersion", "a patch cannot change the run's type"),
    ("kind", "a patch cannot change the run's type"),
    (
        "status",
        "status is a subresource: a patch of the run cannot change it",
    ),
];

/// The `deletePropagation` values, as the API server spells them.
const PROPAGATION_POLICIES: [(&str, PropagationPolicy); 3] = [
    ("Foreground", PropagationPolicy::Foreground),
    ("Background", PropagationPolicy::Background),
    ("Orphan", PropagationPolicy::Orphan),
];

/// Where the cancellation of an unfinished child stands ([`CancelSpec::cancel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelling {
    /// This call sent the cancel patch (the child was not cancelled yet).
    pub patched: bool,
    /// How much longer deletion waits for the child to finish; `None` once the grace period is
    /// over and the child is deleted unfinished.
    pub wait: Option<Duration>,
}

/// Why the cancel file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CancelSpecError {
    /// The file could not be read.
    #[error("cancel spec {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML is malformed or does not have the file's shape (unknown or missing keys).
    #[error("cancel spec {origin}: {message}")]
    Syntax {
        /// The file, or `(inline)`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One key holds an invalid value.
    #[error("cancel spec {origin}: `{key}`: {message}")]
    Invalid {
        /// The file, or `(inline)`.
        origin: String,
        /// The key, e.g. `patch.metadata` or `alreadyCancelled.path`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl CancelSpecError {
    /// The key the error is about, when it is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            CancelSpecError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

/// A key of the file and what is wrong with its value.
type KeyError = (String, String);

/// A [`KeyError`] at `key`.
fn at(key: &str) -> impl FnOnce(String) -> KeyError + '_ {
    move |message| (key.to_owned(), message)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawCancelSpec {
    child: ChildKind,
    patch: Value,
    already_cancelled: RawAlreadyCancelled,
    finish_grace_period: String,
    delete_propagation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlreadyCancelled {
    path: String,
    values: Vec<String>,
}

/// The loaded, validated cancel file. Immutable; cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct CancelSpec {
    patch: Map<String, Value>,
    path: JpQuery,
    values: Vec<String>,
    finish_grace_period: Duration,
    delete_propagation: PropagationPolicy,
}

impl CancelSpec {
    /// Reads and validates the cancel file at `path` for children of kind `child`.
    ///
    /// # Errors
    /// [`CancelSpecError`] naming the file (and the key, when one is wrong).
    pub fn load(path: &Path, child: &ChildKind) -> Result<CancelSpec, CancelSpecError> {
        let src = std::fs::read_to_string(path).map_err(|source| CancelSpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        CancelSpec::parse(&src, child, &path.display().to_string())
    }

    /// Validates a cancel file given as YAML text (errors say `(inline)` instead of a file).
    ///
    /// # Errors
    /// [`CancelSpecError`] naming the key that is wrong.
    pub fn from_yaml(src: &str, child: &ChildKind) -> Result<CancelSpec, CancelSpecError> {
        CancelSpec::parse(src, child, "(inline)")
    }

    fn parse(src: &str, child: &ChildKind, origin: &str) -> Result<CancelSpec, CancelSpecError> {
        let raw: RawCancelSpec =
            serde_yaml::from_str(src).map_err(|e| CancelSpecError::Syntax {
                origin: origin.to_owned(),
                message: e.to_string(),
            })?;
        raw.validate(child)
            .map_err(|(key, message)| CancelSpecError::Invalid {
                origin: origin.to_owned(),
                key,
                message,
            })
    }

    /// Whether `run` is cancelled already: `alreadyCancelled.path` selects a scalar equal to one
    /// of `alreadyCancelled.values` (a string as it is, a boolean or number as its JSON text, so
    /// `values: ["true"]` matches `suspend: true`).
    pub fn is_cancelled(&self, run: &Value) -> bool {
        jsonpath_rust::query::js_path_process(&self.path, run)
            .map(|nodes| {
                nodes.into_iter().any(|node| {
                    let text = match node.val() {
                        Value::String(s) => Some(s.clone()),
                        Value::Bool(b) => Some(b.to_string()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    };
                    text.is_some_and(|s| self.values.contains(&s))
                })
            })
            .unwrap_or(false)
    }

    /// The merge patch that cancels a child, with a `metadata.resourceVersion` precondition when
    /// `resource_version` is given.
    pub fn patch(&self, resource_version: Option<&str>) -> Value {
        let mut patch = Value::Object(self.patch.clone());
        if let Some(rv) = resource_version {
            patch["metadata"] = json!({"resourceVersion": rv});
        }
        patch
    }

    /// How long deletion waits for a cancelled child to finish before deleting it anyway.
    pub fn finish_grace_period(&self) -> Duration {
        self.finish_grace_period
    }

    /// How much longer deletion waits for a cancelled child when its parent was deleted at
    /// `since` and it is `now`; `None` once [`Self::finish_grace_period`] has passed.
    pub fn remaining_wait(&self, since: Timestamp, now: Timestamp) -> Option<Duration> {
        let elapsed = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
        self.finish_grace_period
            .checked_sub(elapsed)
            .filter(|left| !left.is_zero())
    }

    /// Cancels the unfinished `child` through `api` unless it is cancelled already (one merge
    /// patch, with the resourceVersion read as precondition), and says how much longer its
    /// deletion waits for it to finish, its parent deleted at `deleted_at`.
    ///
    /// # Errors
    ///
    /// The API error of the patch (a `409 Conflict` when the child changed since it was read).
    pub async fn cancel(
        &self,
        api: &Api<DynamicObject>,
        child: &DynamicObject,
        deleted_at: Timestamp,
        now: Timestamp,
    ) -> kube::Result<Cancelling> {
        let patched = !self.is_cancelled(&child.data);
        if patched {
            let patch = self.patch(child.resource_version().as_deref());
            let params = PatchParams::default();
            api.patch(&child.name_any(), &params, &Patch::Merge(&patch))
                .await?;
        }
        let wait = self.remaining_wait(deleted_at, now);
        Ok(Cancelling { patched, wait })
    }

    /// How a child is deleted (`deletePropagation`, `Background` by default): the
    /// `propagationPolicy` of every delete of a child, so its dependents are removed with it.
    pub fn delete_propagation(&self) -> PropagationPolicy {
        self.delete_propagation.clone()
    }

    /// Refuses a spec whose patch does not make a child match `alreadyCancelled`.
    fn check_patch_matches(&self) -> Result<(), KeyError> {
        let mut patched = json!({});
        merge_patch(&mut patched, &Value::Object(self.patch.clone()));
        if self.is_cancelled(&patched) {
            return Ok(());
        }
        Err(at("alreadyCancelled")(format!(
            "does not match a run the patch was applied to ({}): the run would be patched again and again",
            Value::Object(self.patch.clone())
        )))
    }
}

impl RawCancelSpec {
    /// Checks every key in the order of the file, then that the patch and `alreadyCancelled`
    /// agree.
    fn validate(self, child: &ChildKind) -> Result<CancelSpec, KeyError> {
        if &self.child != child {
            return Err(at("child")(format!(
                "{}/{} is not what the operator creates ({}/{})",
                self.child.api_version, self.child.kind, child.api_version, child.kind
            )));
        }
        let patch = validate_patch(self.patch)?;
        let path =
            compile_path(&self.already_cancelled.path).map_err(at("alreadyCancelled.path"))?;
        if self.already_cancelled.values.is_empty() {
            return Err(at("alreadyCancelled.values")(
                "must list at least one value".to_owned(),
            ));
        }
        let finish_grace_period = crate::duration::parse_humane(&self.finish_grace_period)
            .map_err(at("finishGracePeriod"))?;
        let spec = CancelSpec {
            patch,
            path,
            values: self.already_cancelled.values,
            finish_grace_period,
            delete_propagation: parse_propagation(self.delete_propagation.as_deref())?,
        };
        spec.check_patch_matches()?;
        Ok(spec)
    }
}

/// The patch as a non-empty mapping that sets no forbidden key and deletes nothing.
fn validate_patch(patch: Value) -> Result<Map<String, Value>, KeyError> {
    let patch = match patch {
        Value::Object(map) if !map.is_empty() => map,
        other => {
            return Err(at("patch")(format!(
                "must be a non-empty mapping (a JSON merge patch), found {other}"
            )));
        }
    };
    if let Some((key, why)) = FORBIDDEN_PATCH_KEYS
        .iter()
        .find(|(key, _)| patch.contains_key(*key))
    {
        return Err((format!("patch.{key}"), format!("not allowed: {why}")));
    }
    if let Some(key) = null_key("patch", &Value::Object(patch.clone())) {
        return Err((
            key,
            "null deletes a field in a merge patch; a cancel patch only sets values".to_owned(),
        ));
    }
    Ok(patch)
}

/// The `deletePropagation` value; `Background` when absent.
fn parse_propagation(raw: Option<&str>) -> Result<PropagationPolicy, KeyError> {
    let Some(raw) = raw else {
        return Ok(PropagationPolicy::Background);
    };
    PROPAGATION_POLICIES
        .iter()
        .find(|(name, _)| *name == raw)
        .map(|(_, policy)| policy.clone())
        .ok_or_else(|| {
            at("deletePropagation")(format!(
                "{raw:?} is not a propagation policy (one of Foreground, Background, Orphan)"
            ))
        })
}

/// The dotted key of the first `null` in `value` (which is at `key`), if any.
fn null_key(key: &str, value: &Value) -> Option<String> {
    match value {
        Value::Null => Some(key.to_owned()),
        Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| null_key(&format!("{key}.{k}"), v)),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| null_key(&format!("{key}[{i}]"), v)),
        _ => None,
    }
}

fn compile_path(raw: &str) -> Result<JpQuery, String> {
    let text = raw.trim();
    if !text.starts_with('$') {
        return Err(format!(
            "{raw:?} is not a JSONPath (RFC 9535 paths start with `$`, e.g. \"$.spec.status\")"
        ));
    }
    jsonpath_rust::parser::parse_json_path(text).map_err(|e| {
        format!(
            "invalid JSONPath {raw:?}: {}",
            e.to_string().replace('\n', " ")
        )
    })
}

/// Applies an RFC 7396 JSON merge patch to `target`, as the API server does.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(fields) = target {
        for (key, value) in patch {
            if value.is_null() {
                fields.remove(key);
            } else {
                merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<CancelSpec, CancelSpecError> {
        let child = ChildKind {
            api_version: "tekton.dev/v1".to_owned(),
            kind: "PipelineRun".to_owned(),
        };
        CancelSpec::from_yaml(src, &child)
    }

    const VALID: &str = r#"
child: {apiVersion: tekton.dev/v1, kind: PipelineRun}
patch: {spec: {status: CancelledRunFinally}}
alreadyCancelled: {path: "$.spec.status", values: [Cancelled, CancelledRunFinally]}
finishGracePeriod: 5m
"#;

    #[tokio::test]
    async fn cancel_patches_only_a_child_not_cancelled_yet_and_counts_the_grace_period_down() {
        use crate::testing::{Exchange, Scenario};
        let spec = parse(VALID).unwrap();
        let resource = kube::api::ApiResource {
            group: "tekton.dev".into(),
            version: "v1".into(),
            api_version: "tekton.dev/v1".into(),
            kind: "PipelineRun".into(),
            plural: "pipelineruns".into(),
        };
        let mut running = DynamicObject::new("run", &resource).within("ns");
        running.metadata.resource_version = Some("7".into());
        let mut cancelled = running.clone();
        cancelled.data = json!({"spec": {"status": "Cancelled"}});
        let path = "/apis/tekton.dev/v1/namespaces/ns/pipelineruns/run";
        let (client, scenario) = Scenario::start(vec![Exchange::new(
            "PATCH",
            path,
            200,
            serde_json::to_value(&cancelled).unwrap(),
        )]);
        let api = Api::namespaced_with(client, "ns", &resource);
        let deleted_at: Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
        let minute_later = deleted_at + jiff::SignedDuration::from_mins(1);
        let first = spec.cancel(&api, &running, deleted_at, minute_later);
        let first = first.await.unwrap();
        let again = spec.cancel(&api, &cancelled, deleted_at, minute_later);
        let again = again.await.unwrap();
        let late = deleted_at + jiff::SignedDuration::from_mins(5);
        let over = spec
            .cancel(&api, &cancelled, deleted_at, late)
            .await
            .unwrap();
        drop(api);
        let served = scenario.finish().await;
        assert_eq!(
            served.bodies,
            [
                json!({"spec": {"status": "CancelledRunFinally"}, "metadata": {"resourceVersion": "7"}})
            ],
            "one patch, with the version read"
        );
        let four_minutes = Some(Duration::from_secs(240));
        assert_eq!(
            first,
            Cancelling {
                patched: true,
                wait: four_minutes
            }
        );
        assert_eq!(
            again,
            Cancelling {
                patched: false,
                wait: four_minutes
            }
        );
        assert_eq!(
            over,
            Cancelling {
                patched: false,
                wait: None
            }
        );
    }

    #[test]
    fn the_patch_carries_a_resource_version_precondition_when_given() {
        let spec = parse(VALID).unwrap();
        assert_eq!(
            spec.patch(Some("4711")),
            json!({"spec": {"status": "CancelledRunFinally"}, "metadata": {"resourceVersion": "4711"}})
        );
        assert_eq!(
            spec.patch(None),
            json!({"spec": {"status": "CancelledRunFinally"}})
        );
        assert_eq!(spec.finish_grace_period(), Duration::from_secs(300));
    }

    #[test]
    fn a_run_is_cancelled_when_its_value_is_listed() {
        let spec = parse(VALID).unwrap();
        let cases = [
            (json!({"spec": {"status": "Cancelled"}}), true),
            (json!({"spec": {"status": "CancelledRunFinally"}}), true),
            (json!({"spec": {"status": "StoppedRunFinally"}}), false),
            (json!({"spec": {"status": "PipelineRunPending"}}), false),
            (json!({"spec": {"status": "cancelled"}}), false),
            (json!({"spec": {}}), false),
            (json!({"spec": {"status": ["Cancelled"]}}), false),
            (json!({"status": {"status": "Cancelled"}}), false),
            (json!({}), false),
            (json!("Cancelled"), false),
        ];
        for (run, cancelled) in cases {
            assert_eq!(spec.is_cancelled(&run), cancelled, "{run}");
        }
    }

    /// A boolean or number is compared as its JSON text: the Job engine's cancel file patches
    /// `spec.suspend: true` and lists `"true"`.
    #[test]
    fn a_boolean_or_number_is_cancelled_when_its_text_is_listed() {
        let job = ChildKind {
            api_version: "batch/v1".to_owned(),
            kind: "Job".to_owned(),
        };
        let spec = CancelSpec::from_yaml(
            "child: {apiVersion: batch/v1, kind: Job}\npatch: {spec: {suspend: true}}\n\
             alreadyCancelled: {path: '$.spec.suspend', values: ['true', '0']}\n\
             finishGracePeriod: 1m\n",
            &job,
        )
        .unwrap();
        let cases = [
            (json!({"spec": {"suspend": true}}), true),
            (json!({"spec": {"suspend": "true"}}), true),
            (json!({"spec": {"suspend": 0}}), true),
            (json!({"spec": {"suspend": false}}), false),
            (json!({"spec": {"suspend": null}}), false),
            (json!({"spec": {"suspend": {"x": true}}}), false),
            (json!({"spec": {}}), false),
        ];
        for (run, cancelled) in cases {
            assert_eq!(spec.is_cancelled(&run), cancelled, "{run}");
        }
    }

    #[test]
    fn the_remaining_wait_counts_down_from_the_deletion() {
        let spec = parse(VALID).unwrap();
        let deleted: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            spec.remaining_wait(deleted, at("2026-01-01T00:01:00Z")),
            Some(Duration::from_secs(240))
        );
        assert_eq!(
            spec.remaining_wait(deleted, at("2025-12-31T23:59:00Z")),
            Some(Duration::from_secs(300)),
            "a clock behind the deletion waits the whole period, no longer"
        );
        assert_eq!(
            spec.remaining_wait(deleted, at("2026-01-01T00:05:00Z")),
            None
        );
        assert_eq!(
            spec.remaining_wait(deleted, at("2026-01-01T01:00:00Z")),
            None
        );
        let immediate = parse(&VALID.replace("5m", "0s")).unwrap();
        assert_eq!(immediate.remaining_wait(deleted, deleted), None);
    }

    #[test]
    fn invalid_files_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("kind: PipelineRun}", "kind: TaskRun}", "child"),
            ("{spec: {status: CancelledRunFinally}}", "{}", "patch"),
            (
                "{spec: {status: CancelledRunFinally}}",
                "Cancelled",
                "patch",
            ),
            (
                "{spec: {status: CancelledRunFinally}}",
                "{spec: {status: CancelledRunFinally}, metadata: {labels: {a: b}}}",
                "patch.metadata",
            ),
            (
                "{spec: {status: CancelledRunFinally}}",
                "{spec: {status: CancelledRunFinally}, status: {x: y}}",
                "patch.status",
            ),
            (
                "{spec: {status: CancelledRunFinally}}",
                "{spec: {status: CancelledRunFinally, timeouts: null}}",
                "patch.spec.timeouts",
            ),
            (
                "\"$.spec.status\"",
                "\"spec.status\"",
                "alreadyCancelled.path",
            ),
            (
                "\"$.spec.status\"",
                "\"$.spec[?@.status ==\"",
                "alreadyCancelled.path",
            ),
            (
                "values: [Cancelled, CancelledRunFinally]",
                "values: []",
                "alreadyCancelled.values",
            ),
            ("5m", "five minutes", "finishGracePeriod"),
            (
                "values: [Cancelled, CancelledRunFinally]",
                "values: [Cancelled]",
                "alreadyCancelled",
            ),
        ];
        for (from, to, key) in cases {
            let src = VALID.replacen(from, to, 1);
            assert_ne!(src, VALID, "{from} not in the valid file");
            let err = parse(&src).expect_err(key);
            assert_eq!(err.key(), Some(*key), "{src}: {err}");
            assert!(err.to_string().contains("(inline)"), "{err}");
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn unknown_or_missing_keys_are_refused() {
        for src in [
            format!("{VALID}extra: 1\n"),
            VALID.replace("finishGracePeriod: 5m\n", ""),
            VALID.replace("values:", "valuez:"),
        ] {
            let err = parse(&src).expect_err(&src);
            assert!(matches!(err, CancelSpecError::Syntax { .. }), "{err}");
        }
    }

    #[test]
    fn delete_propagation_is_background_unless_the_file_says_otherwise() {
        let cases = [
            (None, PropagationPolicy::Background),
            (Some("Foreground"), PropagationPolicy::Foreground),
            (Some("Background"), PropagationPolicy::Background),
            (Some("Orphan"), PropagationPolicy::Orphan),
        ];
        for (value, policy) in cases {
            let src = match value {
                Some(value) => format!("{VALID}deletePropagation: {value}\n"),
                None => VALID.to_owned(),
            };
            assert_eq!(
                parse(&src).unwrap().delete_propagation(),
                policy,
                "{value:?}"
            );
        }
    }

    #[test]
    fn an_unknown_delete_propagation_is_refused_naming_the_key_and_file() {
        for value in ["background", "Cascade", "\"\"", "Orphan,"] {
            let src = format!("{VALID}deletePropagation: {value}\n");
            let err = parse(&src).expect_err(value);
            assert_eq!(err.key(), Some("deletePropagation"), "{value}: {err}");
            assert!(err.to_string().contains("(inline)"), "{err}");
            assert!(err.to_string().contains("`deletePropagation`"), "{err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cancel.yaml");
        std::fs::write(&path, format!("{VALID}deletePropagation: Cascade\n")).unwrap();
        let child = ChildKind {
            api_version: "tekton.dev/v1".to_owned(),
            kind: "PipelineRun".to_owned(),
        };
        let err = CancelSpec::load(&path, &child).unwrap_err();
        assert_eq!(err.key(), Some("deletePropagation"), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("\"Cascade\""), "{err}");
    }

    #[test]
    fn merge_patches_apply_as_rfc_7396_says() {
        let mut target = json!({"spec": {"status": "x", "keep": 1}, "drop": true});
        merge_patch(
            &mut target,
            &json!({"spec": {"status": "Cancelled"}, "drop": null, "new": [1]}),
        );
        assert_eq!(
            target,
            json!({"spec": {"status": "Cancelled", "keep": 1}, "new": [1]})
        );
    }
}
