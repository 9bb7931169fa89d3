//! Declarative status mapping: a child's status read back through JSONPath rules.
//!
//! A mapping file says, as data, how a child object (say a Tekton `PipelineRun`) translates into
//! the parent's status:
//!
//! ```yaml
//! child: {apiVersion: tekton.dev/v1, kind: PipelineRun}
//! phase:                                   # ordered, first match wins
//!   - when: "$.status.conditions[?@.type=='Succeeded' && @.status=='True']"
//!     then: Completed
//!   - then: Running                        # no `when`: always matches
//! fields:                                  # named extractions
//!   reason: "$.status.conditions[?@.type=='Succeeded'].reason"
//!   startTime: "{.status.startTime}"       # kubectl-style paths are accepted too
//!   totalTasks: {count: "$.status.childReferences[?@.kind=='TaskRun']"}
//! classify:                                # ordered, first match wins
//!   - {result: OOMKilled, any: {stepTerminationReason: [OOMKilled], message: ["*oom*"]}}
//!   - {result: TaskFailed, all: {reason: [Failed], failedTaskName: ["*"]}}
//!   - {result: Unknown}
//! grandchildren:                           # optional: the child's own children (TaskRuns)
//!   child: {apiVersion: tekton.dev/v1, kind: TaskRun}
//!   names: "$.status.childReferences[?@.kind=='TaskRun'].name"   # read on the child, in order
//!   ownerLabel: tekton.dev/pipelineRun     # finds them once the child is gone (and, without
//!                                          # `names`, always: a Job's pods are not listed on it)
//!   finished: "$.status.conditions[?@.type=='Succeeded' && @.status!='Unknown']"
//!   failed: "$.status.conditions[?@.type=='Succeeded' && @.status=='False']"
//!   fields:                                # like the child's fields, read on a grandchild
//!     reason: "$.status.conditions[?@.type=='Succeeded'].reason"
//!   ran:                                   # "work started in it": any path selects a node
//!     - "$.status.steps[?@.running]"
//!   held:                                  # unfinished, but held back by something that names
//!     - when: "$.status.conditions[?@.reason=='ExceededResourceQuota']"     # the outcome
//!       result: ResourceExhausted
//!       message: "$.status.conditions[?@.type=='Succeeded'].message"
//!   facts:                                 # every selected node, in order
//!     stepTerminationReason: "$.status.steps[*].terminated.reason"
//! ```
//!
//! * [`StatusMapping::phase`] returns the `then` of the first rule whose `when` selects at least
//!   one node (a rule without `when` always matches).
//! * [`StatusMapping::fields`] evaluates every field: a path selecting one node gives that value,
//!   several give the first, none leave the field out; `{count: path}` gives the number of nodes.
//! * [`StatusMapping::classify`] matches *facts* (named lists of strings the operator gathers,
//!   typically some of the fields plus details from grandchildren) against ordered rules. A
//!   pattern is case-insensitive; `*` is a wildcard (`"*oom*"` = contains `oom`, `"*"` = any
//!   non-empty value); a pattern without `*` must equal the whole value. `any`: some listed fact
//!   has a value matching one of its patterns; `all`: every listed fact does; both may be given
//!   and must both hold; a rule with neither always matches.
//! * [`StatusMapping::grandchild_ran`] says whether work actually started in one grandchild (an
//!   object the child created, say a `TaskRun`): true when any `ran` path selects a node in it.
//!   [`StatusMapping::grandchild_facts`] reads its named `facts` (every selected scalar, in order,
//!   numbers and booleans as text) for classification and failure details.
//!   [`StatusMapping::grandchild_owner_label`] names the label that links grandchildren to the
//!   child, so they can still be found after the child was deleted.
//! * [`StatusMapping::grandchild_kind`] and [`StatusMapping::grandchild_names`] say which objects
//!   the grandchildren are (the kind, and their names as the child lists them);
//!   [`StatusMapping::grandchild_lookup`] says how to find those of one child
//!   ([`GrandchildLookup`]: by the names the child lists, or — a section with `ownerLabel` and no
//!   `names` — by the label whose value is the child's name), and
//!   [`StatusMapping::grandchild_order`] puts the ones found in order (the child's list, or
//!   `metadata.creationTimestamp` then name);
//!   [`StatusMapping::grandchild_finished`], [`StatusMapping::grandchild_failed`] and
//!   [`StatusMapping::grandchild_fields`] read one of them the way `phase` and `fields` read the
//!   child; [`StatusMapping::grandchild_held`] says an unfinished grandchild is held back by
//!   something that already names the outcome (a quota that refuses its pod), so the operator can
//!   report it while the child still counts as running.
//!
//! Evaluated once per reconcile, the mapping gives a [`Reading`] ([`StatusMapping::read`],
//! [`StatusMapping::read_grandchildren`]: the phase, the fields, the first failed and the first
//! held grandchild, module [`reading`]); [`grandchildren`] finds the grandchildren to read, and
//! [`lenient`] deserializes fields into an operator's own types.
//!
//! JSONPath is RFC 9535 (jsonpath-rust); kubectl's `{.a.b}` form is rewritten to `$.a.b`.
//!
//! # Guarantees
//!
//! 1. Everything is validated when the mapping is loaded, not when first used: every path is
//!    compiled, every `then` must be one of the operator's phases and every `result` one of its
//!    classification results ([`MappingRules`]), unknown keys are refused, and a rule that can
//!    never be reached (it follows a catch-all rule) is an error. Errors name the file and the
//!    rule (`phase rule 2 (then: Failed)`, ``field `reason` ``, `classify rule 3 (result: …)`,
//!    `grandchildren.ran[2]`, ``grandchildren fact `exitCode` ``). An operator that depends on
//!    grandchildren says so ([`MappingRules::require_grandchildren`]) and a mapping without the
//!    section is refused; a section needs `names` or `ownerLabel` (or both: `names` then orders
//!    and finds them while the child exists). The fields the operator reads ([`MappingRules::required_fields`]) must
//!    be there: a missing or misspelt one is refused (naming the likely misspelling), not left to
//!    evaluate to nothing at run time.
//! 2. Evaluation is pure and total: no panics, no I/O; a path that does not apply to a given
//!    object simply selects nothing.
//!
//! # Caveats
//!
//! 1. Only RFC 9535 JSONPath (plus the single-expression kubectl form) is accepted; kubectl's
//!    `{range}`/`{end}` templates and multiple `{}` expressions are not.
//! 2. A selected value is returned as is (a string, number, object …); callers convert it.
//! 3. An empty fact value never matches, not even `"*"`.
//! 4. Grandchild facts drop selected objects, arrays and nulls: facts are text to match.

use std::collections::BTreeMap;
use std::path::Path;

use jsonpath_rust::parser::model::JpQuery;
use serde::Deserialize;
use serde_json::Value;

use crate::glob::{Case, Glob, GlobError};
use crate::template::ChildKind;

pub mod grandchildren;
pub mod lenient;
pub mod projection;
pub mod reading;

pub use projection::{Projection, Use};
pub use reading::{FailedGrandchild, GrandchildrenReading, Reading, fields_as};

/// The values a mapping may produce, supplied by the operator and checked at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingRules {
    /// Allowed `then` values of phase rules (the parent's phases).
    pub phases: Vec<String>,
    /// Allowed `result` values of classification rules.
    pub results: Vec<String>,
    /// The operator reads grandchildren: a mapping without a `grandchildren` section is refused.
    pub require_grandchildren: bool,
    /// The `fields` names the operator reads: a mapping that lacks one is refused. Other names
    /// are allowed (and ignored by the operator).
    pub required_fields: Vec<String>,
}

/// Why a status mapping was refused.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file could not be read.
    #[error("status mapping {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file holds no mapping at all.
    #[error("status mapping {origin}: the file is empty")]
    Empty {
        /// The file, or `(inline)`.
        origin: String,
    },
    /// The YAML is malformed or does not have the mapping's shape (unknown keys, wrong types).
    #[error("status mapping {origin}: {message}")]
    Syntax {
        /// The file, or `(inline)`.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// One rule or field is invalid.
    #[error("status mapping {origin}: {rule}: {message}")]
    Rule {
        /// The file, or `(inline)`.
        origin: String,
        /// The rule, e.g. `phase rule 2 (then: Failed)` or ``field `reason` ``.
        rule: String,
        /// What is wrong with it.
        message: String,
    },
}

/// A loaded, validated status mapping. Cheap to share (`Arc`), immutable.
#[derive(Debug, Clone)]
pub struct StatusMapping {
    child: ChildKind,
    phase: Vec<PhaseRule>,
    fields: BTreeMap<String, Field>,
    classify: Vec<ClassifyRule>,
    grandchildren: Option<Grandchildren>,
}

/// How one grandchild (an object the child created) is read.
#[derive(Debug, Clone)]
struct Grandchildren {
    child: ChildKind,
    names: Option<CompiledPath>,
    owner_label: Option<String>,
    finished: Option<CompiledPath>,
    failed: Option<CompiledPath>,
    fields: BTreeMap<String, Field>,
    ran: Vec<CompiledPath>,
    held: Vec<HeldRule>,
    facts: BTreeMap<String, CompiledPath>,
}

/// How the grandchildren of one child are found ([`StatusMapping::grandchild_lookup`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrandchildLookup {
    /// The child lists them (`grandchildren.names`): their names, in the child's order, with their
    /// position in that list.
    Named(Vec<(u32, String)>),
    /// They carry the label `label` with the child's name as its value (`grandchildren.ownerLabel`
    /// without `names`); they are ordered by `metadata.creationTimestamp`, then name.
    Labelled {
        /// The label key (`grandchildren.ownerLabel`).
        label: String,
        /// Its value: the child's `metadata.name`.
        value: String,
    },
}

impl GrandchildLookup {
    /// The label selector (`key=value`) that lists them, for a [`GrandchildLookup::Labelled`]
    /// lookup.
    pub fn label_selector(&self) -> Option<String> {
        match self {
            GrandchildLookup::Named(_) => None,
            GrandchildLookup::Labelled { label, value } => Some(format!("{label}={value}")),
        }
    }

    /// Whether `grandchild` (a whole object, `metadata` included) is one of them: its name is
    /// listed, or it carries the label with the child's name.
    pub fn selects(&self, grandchild: &Value) -> bool {
        match self {
            GrandchildLookup::Named(names) => {
                let name = object_name(grandchild);
                !name.is_empty() && names.iter().any(|(_, n)| n == name)
            }
            GrandchildLookup::Labelled { label, value } => grandchild
                .pointer("/metadata/labels")
                .and_then(|labels| labels.get(label))
                .and_then(Value::as_str)
                .is_some_and(|v| v == value),
        }
    }

    /// The grandchildren in order, with their positions: for [`GrandchildLookup::Named`] the
    /// child's list as it is (names missing from `found` included: the caller skips them); for
    /// [`GrandchildLookup::Labelled`] those of `found` (whole objects by name) it
    /// [selects](Self::selects), by `metadata.creationTimestamp`, then name, numbered from 0.
    pub fn order(&self, found: &BTreeMap<String, Value>) -> Vec<(u32, String)> {
        match self {
            GrandchildLookup::Named(names) => names.clone(),
            GrandchildLookup::Labelled { .. } => {
                let mut selected: Vec<(&str, &str)> = found
                    .iter()
                    .filter(|(_, object)| self.selects(object))
                    .map(|(name, object)| {
                        let created = object
                            .pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        (created, name.as_str())
                    })
                    .collect();
                // RFC 3339 times as the API server writes them (UTC, whole seconds) sort as text.
                selected.sort_unstable();
                selected
                    .into_iter()
                    .zip(0u32..)
                    .map(|((_, name), i)| (i, name.to_owned()))
                    .collect()
            }
        }
    }
}

/// `metadata.name` of an object, or "".
fn object_name(object: &Value) -> &str {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A `grandchildren.held` rule.
#[derive(Debug, Clone)]
struct HeldRule {
    when: CompiledPath,
    result: String,
    message: Option<CompiledPath>,
}

/// An unfinished grandchild held back by something that already names the outcome
/// ([`StatusMapping::grandchild_held`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The `result` of the matching `held` rule: one of the operator's classification results.
    pub result: String,
    /// What the rule's `message` path selects in the grandchild (its first scalar), if anything.
    pub message: Option<String>,
}

#[derive(Debug, Clone)]
struct PhaseRule {
    when: Option<CompiledPath>,
    then: String,
}

#[derive(Debug, Clone)]
enum Field {
    Value(CompiledPath),
    Count(CompiledPath),
}

#[derive(Debug, Clone)]
struct ClassifyRule {
    result: String,
    any: Vec<(String, Vec<Pattern>)>,
    all: Vec<(String, Vec<Pattern>)>,
}

/// A JSONPath compiled at load.
#[derive(Debug, Clone)]
struct CompiledPath {
    query: JpQuery,
}

/// A classification pattern: a case-insensitive [`Glob`].
#[derive(Debug, Clone)]
struct Pattern(Glob);

// ---- file format ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    child: ChildKind,
    #[serde(default)]
    phase: Vec<RawPhaseRule>,
    #[serde(default)]
    fields: BTreeMap<String, Value>,
    #[serde(default)]
    classify: Vec<RawClassifyRule>,
    #[serde(default)]
    grandchildren: Option<RawGrandchildren>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawGrandchildren {
    child: ChildKind,
    #[serde(default)]
    names: Option<String>,
    #[serde(default)]
    owner_label: Option<String>,
    #[serde(default)]
    finished: Option<String>,
    #[serde(default)]
    failed: Option<String>,
    #[serde(default)]
    fields: BTreeMap<String, Value>,
    #[serde(default)]
    ran: Vec<String>,
    #[serde(default)]
    held: Vec<RawHeldRule>,
    #[serde(default)]
    facts: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeldRule {
    when: String,
    result: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPhaseRule {
    #[serde(default)]
    when: Option<String>,
    then: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassifyRule {
    result: String,
    #[serde(default)]
    any: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    all: Option<BTreeMap<String, Vec<String>>>,
}

impl StatusMapping {
    /// Reads and validates the mapping file at `path`. Errors name the file.
    pub fn load(path: &Path, rules: &MappingRules) -> Result<Self, MappingError> {
        let src = std::fs::read_to_string(path).map_err(|source| MappingError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&src, rules, &path.display().to_string())
    }

    /// Validates a mapping given as YAML text (errors say `(inline)` instead of a file name).
    pub fn from_yaml(src: &str, rules: &MappingRules) -> Result<Self, MappingError> {
        Self::parse(src, rules, "(inline)")
    }

    fn parse(src: &str, rules: &MappingRules, origin: &str) -> Result<Self, MappingError> {
        let syntax = |e: serde_yaml::Error| MappingError::Syntax {
            origin: origin.to_owned(),
            message: e.to_string(),
        };
        let doc: Value = serde_yaml::from_str(src).map_err(syntax)?;
        if doc.is_null() {
            return Err(MappingError::Empty {
                origin: origin.to_owned(),
            });
        }
        // Parse again into the typed shape so messages carry YAML line numbers.
        let raw: RawMapping = serde_yaml::from_str(src).map_err(syntax)?;
        Self::compile(raw, rules).map_err(|(rule, message)| MappingError::Rule {
            origin: origin.to_owned(),
            rule,
            message,
        })
    }

    /// Compiles the parsed file; an error is `(rule, message)`.
    fn compile(raw: RawMapping, rules: &MappingRules) -> Result<Self, (String, String)> {
        let fields = compile_fields(&raw.fields, "field")?;
        check_required_fields(&fields, rules)?;
        let grandchildren = match raw.grandchildren {
            Some(raw) => Some(Grandchildren::compile(raw, rules)?),
            None if rules.require_grandchildren => {
                return Err((
                    "grandchildren".to_owned(),
                    "missing: the operator needs to know how to read the child's children \
                     (at least `ran`)"
                        .to_owned(),
                ));
            }
            None => None,
        };
        Ok(StatusMapping {
            child: raw.child,
            phase: compile_phase_rules(raw.phase, rules)?,
            fields,
            classify: compile_classify_rules(raw.classify, rules)?,
            grandchildren,
        })
    }

    /// The child kind this mapping reads.
    pub fn child(&self) -> &ChildKind {
        &self.child
    }

    /// What of a child this mapping reads ([`Projection`]): what its `phase` rules test, what its
    /// `fields` read or count, and the names `grandchildren.names` lists. Evaluated over the
    /// projected child, every one of them gives what it gives over the whole child.
    pub fn child_projection(&self) -> Projection {
        let mut projection = Projection::default();
        for rule in &self.phase {
            if let Some(when) = &rule.when {
                projection.add(&when.query, Use::Exists);
            }
        }
        add_fields(&mut projection, &self.fields);
        if let Some(names) = self.grandchildren.as_ref().and_then(|g| g.names.as_ref()) {
            projection.add(&names.query, Use::Value);
        }
        projection
    }

    /// What of a grandchild this mapping reads ([`Projection`]): what `finished`, `failed`,
    /// `ran` and the `held` rules test, what `fields`, `facts` and the `held` messages read, and
    /// the `ownerLabel`. `None` without a `grandchildren` section.
    pub fn grandchild_projection(&self) -> Option<Projection> {
        let g = self.grandchildren.as_ref()?;
        let mut projection = Projection::default();
        let tests = g.finished.iter().chain(&g.failed).chain(&g.ran);
        for path in tests.chain(g.held.iter().map(|rule| &rule.when)) {
            projection.add(&path.query, Use::Exists);
        }
        let reads = g
            .facts
            .values()
            .chain(g.held.iter().filter_map(|r| r.message.as_ref()));
        for path in reads {
            projection.add(&path.query, Use::Value);
        }
        add_fields(&mut projection, &g.fields);
        if let Some(label) = &g.owner_label {
            projection.add_member(&["metadata", "labels", label]);
        }
        Some(projection)
    }

    /// The phase of the first rule matching `child`, if any rule matches.
    pub fn phase(&self, child: &Value) -> Option<&str> {
        self.phase
            .iter()
            .find(|rule| match &rule.when {
                Some(path) => !path.select(child).is_empty(),
                None => true,
            })
            .map(|rule| rule.then.as_str())
    }

    /// Every field that selects something in `child` (counts are always present).
    pub fn fields(&self, child: &Value) -> BTreeMap<String, Value> {
        evaluate_fields(&self.fields, child)
    }

    /// The result of the first classification rule the facts satisfy, if any.
    pub fn classify(&self, facts: &BTreeMap<String, Vec<String>>) -> Option<&str> {
        self.classify
            .iter()
            .find(|rule| rule.matches(facts))
            .map(|rule| rule.result.as_str())
    }

    /// Whether the mapping has a `grandchildren` section.
    pub fn reads_grandchildren(&self) -> bool {
        self.grandchildren.is_some()
    }

    /// Whether work started in `grandchild`: some `ran` path selects a node in it. Always false
    /// without a `grandchildren` section.
    pub fn grandchild_ran(&self, grandchild: &Value) -> bool {
        self.grandchildren
            .as_ref()
            .is_some_and(|g| g.ran.iter().any(|path| !path.select(grandchild).is_empty()))
    }

    /// Every declared grandchild fact of `grandchild`: the scalars its path selects, in order
    /// (strings as they are, numbers and booleans as text). A fact that selects nothing is
    /// present with no values.
    pub fn grandchild_facts(&self, grandchild: &Value) -> BTreeMap<String, Vec<String>> {
        let Some(g) = &self.grandchildren else {
            return BTreeMap::new();
        };
        g.facts
            .iter()
            .map(|(name, path)| {
                let values = path
                    .select(grandchild)
                    .into_iter()
                    .filter_map(scalar_text)
                    .collect();
                (name.clone(), values)
            })
            .collect()
    }

    /// The label whose value on a grandchild is the child's name, when declared: it finds the
    /// grandchildren after the child itself is gone.
    pub fn grandchild_owner_label(&self) -> Option<&str> {
        self.grandchildren.as_ref()?.owner_label.as_deref()
    }

    /// The grandchild kind, when the mapping has a `grandchildren` section.
    pub fn grandchild_kind(&self) -> Option<&ChildKind> {
        Some(&self.grandchildren.as_ref()?.child)
    }

    /// The grandchildren `child` lists (the `names` path), in its order, with their position in
    /// that list; non-string and empty names are skipped (positions still count them). Empty
    /// without a `names` path: see [`Self::grandchild_lookup`].
    pub fn grandchild_names(&self, child: &Value) -> Vec<(u32, String)> {
        let Some(names) = self.grandchildren.as_ref().and_then(|g| g.names.as_ref()) else {
            return Vec::new();
        };
        names
            .select(child)
            .into_iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let name = name.as_str().filter(|n| !n.is_empty())?;
                Some((u32::try_from(i).ok()?, name.to_owned()))
            })
            .collect()
    }

    /// How to find the grandchildren of `child` (a whole object, `metadata` included): by the
    /// names it lists when the mapping has a `names` path, else by `ownerLabel` with the child's
    /// `metadata.name`. `None` without a `grandchildren` section; a child without a name has no
    /// grandchildren to find (an empty [`GrandchildLookup::Named`]).
    pub fn grandchild_lookup(&self, child: &Value) -> Option<GrandchildLookup> {
        let g = self.grandchildren.as_ref()?;
        if g.names.is_some() {
            return Some(GrandchildLookup::Named(self.grandchild_names(child)));
        }
        let name = object_name(child);
        match &g.owner_label {
            Some(label) if !name.is_empty() => Some(GrandchildLookup::Labelled {
                label: label.clone(),
                value: name.to_owned(),
            }),
            _ => Some(GrandchildLookup::Named(Vec::new())),
        }
    }

    /// The grandchildren of `child` in order, with their positions, given those `found` (whole
    /// objects by name, as [`Self::grandchild_lookup`] found them): see
    /// [`GrandchildLookup::order`]. Empty without a `grandchildren` section.
    pub fn grandchild_order(
        &self,
        child: &Value,
        found: &BTreeMap<String, Value>,
    ) -> Vec<(u32, String)> {
        self.grandchild_lookup(child)
            .map(|lookup| lookup.order(found))
            .unwrap_or_default()
    }

    /// Whether `grandchild` finished (its `finished` path selects a node; false when the mapping
    /// declares none).
    pub fn grandchild_finished(&self, grandchild: &Value) -> bool {
        self.grandchildren
            .as_ref()
            .and_then(|g| g.finished.as_ref())
            .is_some_and(|path| !path.select(grandchild).is_empty())
    }

    /// Whether `grandchild` failed (its `failed` path selects a node; false when the mapping
    /// declares none): its facts then explain the child's failure.
    pub fn grandchild_failed(&self, grandchild: &Value) -> bool {
        self.grandchildren
            .as_ref()
            .and_then(|g| g.failed.as_ref())
            .is_some_and(|path| !path.select(grandchild).is_empty())
    }

    /// The `grandchildren.fields` of `grandchild`, evaluated like [`Self::fields`].
    pub fn grandchild_fields(&self, grandchild: &Value) -> BTreeMap<String, Value> {
        self.grandchildren
            .as_ref()
            .map(|g| evaluate_fields(&g.fields, grandchild))
            .unwrap_or_default()
    }

    /// The first `held` rule that matches `grandchild`, unless it finished: what holds it back.
    pub fn grandchild_held(&self, grandchild: &Value) -> Option<Held> {
        if self.grandchild_finished(grandchild) {
            return None;
        }
        let rule = self
            .grandchildren
            .as_ref()?
            .held
            .iter()
            .find(|rule| !rule.when.select(grandchild).is_empty())?;
        Some(Held {
            result: rule.result.clone(),
            message: rule
                .message
                .as_ref()
                .and_then(|path| path.select(grandchild).first().and_then(|v| scalar_text(v))),
        })
    }
}

/// Every field of `fields` that selects something in `object` (counts are always present).
fn evaluate_fields(fields: &BTreeMap<String, Field>, object: &Value) -> BTreeMap<String, Value> {
    fields
        .iter()
        .filter_map(|(name, field)| {
            let value = match field {
                Field::Value(path) => path.select(object).first().map(|v| (*v).clone())?,
                Field::Count(path) => Value::from(path.select(object).len()),
            };
            Some((name.clone(), value))
        })
        .collect()
}

/// Adds what `fields` read (values) or count (nodes) to `projection`.
fn add_fields(projection: &mut Projection, fields: &BTreeMap<String, Field>) {
    for field in fields.values() {
        match field {
            Field::Value(path) => projection.add(&path.query, Use::Value),
            Field::Count(path) => projection.add(&path.query, Use::Exists),
        }
    }
}

/// A scalar as text (strings as they are, numbers and booleans written out); `None` otherwise.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Field {
    /// A field from its file form: a JSONPath string or `{count: <JSONPath>}`.
    fn compile(raw: &Value) -> Result<Self, String> {
        match raw {
            Value::String(path) => CompiledPath::compile(path).map(Field::Value),
            Value::Object(map) => match (map.len(), map.get("count")) {
                (1, Some(Value::String(path))) => CompiledPath::compile(path).map(Field::Count),
                _ => Err(format!(
                    "expected a JSONPath string or {{count: <JSONPath>}}, found {raw}"
                )),
            },
            other => Err(format!(
                "expected a JSONPath string or {{count: <JSONPath>}}, found {other}"
            )),
        }
    }
}

impl Grandchildren {
    /// Compiles the section; an error is `(rule, message)`.
    fn compile(raw: RawGrandchildren, rules: &MappingRules) -> Result<Self, (String, String)> {
        if raw.names.is_none() && raw.owner_label.is_none() {
            return Err((
                "grandchildren.names".to_owned(),
                "missing field `names`: say how to find a child's grandchildren, by a path \
                 listing their names on the child (`names`) or by a label whose value is the \
                 child's name (`ownerLabel`)"
                    .to_owned(),
            ));
        }
        let names = optional_path(raw.names.as_ref(), "grandchildren.names")?;
        let finished = optional_path(raw.finished.as_ref(), "grandchildren.finished")?;
        let failed = optional_path(raw.failed.as_ref(), "grandchildren.failed")?;
        let fields = compile_fields(&raw.fields, "grandchildren field")?;
        let held = compile_held_rules(&raw.held, rules)?;
        if let Some(label) = &raw.owner_label
            && let Err(e) = crate::names::QualifiedName::check(label)
        {
            return Err((
                "grandchildren.ownerLabel".to_owned(),
                format!("`{label}` is not a label key: {e}"),
            ));
        }
        if raw.ran.is_empty() {
            return Err((
                "grandchildren.ran".to_owned(),
                "lists no paths: say how to tell that work started in a grandchild".to_owned(),
            ));
        }
        let ran = raw
            .ran
            .iter()
            .enumerate()
            .map(|(i, path)| {
                CompiledPath::compile(path)
                    .map_err(|m| (format!("grandchildren.ran[{}]", i + 1), m))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut facts = BTreeMap::new();
        for (name, path) in raw.facts {
            let label = format!("grandchildren fact `{name}`");
            if name.trim().is_empty() {
                return Err((label, "a fact needs a name".to_owned()));
            }
            let path = CompiledPath::compile(&path).map_err(|m| (label, m))?;
            facts.insert(name, path);
        }
        Ok(Grandchildren {
            child: raw.child,
            names,
            owner_label: raw.owner_label,
            finished,
            failed,
            fields,
            ran,
            held,
            facts,
        })
    }
}

/// An optional path of the rule `rule`.
fn optional_path(
    path: Option<&String>,
    rule: &str,
) -> Result<Option<CompiledPath>, (String, String)> {
    path.map(|p| CompiledPath::compile(p).map_err(|m| (rule.to_owned(), m)))
        .transpose()
}

/// The `grandchildren.held` rules, in order; every `result` must be one of the operator's results.
fn compile_held_rules(
    raw: &[RawHeldRule],
    rules: &MappingRules,
) -> Result<Vec<HeldRule>, (String, String)> {
    raw.iter()
        .enumerate()
        .map(|(i, rule)| {
            let label = format!("grandchildren.held[{}] (result: {})", i + 1, rule.result);
            check_known(&label, "result", &rule.result, &rules.results)?;
            Ok(HeldRule {
                when: CompiledPath::compile(&rule.when).map_err(|m| (label.clone(), m))?,
                result: rule.result.clone(),
                message: optional_path(rule.message.as_ref(), &label)?,
            })
        })
        .collect()
}

/// The `phase` rules, in order; a rule after a catch-all is unreachable, and every `then` must be
/// one of the operator's phases.
fn compile_phase_rules(
    raw: Vec<RawPhaseRule>,
    rules: &MappingRules,
) -> Result<Vec<PhaseRule>, (String, String)> {
    let mut phase = Vec::with_capacity(raw.len());
    let mut catch_all: Option<String> = None;
    for (i, rule) in raw.into_iter().enumerate() {
        let name = format!("phase rule {} (then: {})", i + 1, rule.then);
        if let Some(earlier) = &catch_all {
            return Err((
                name,
                format!("unreachable: {earlier} has no `when` and always matches"),
            ));
        }
        check_known(&name, "phase", &rule.then, &rules.phases)?;
        let when = match &rule.when {
            Some(path) => Some(CompiledPath::compile(path).map_err(|m| (name.clone(), m))?),
            None => {
                catch_all = Some(name);
                None
            }
        };
        phase.push(PhaseRule {
            when,
            then: rule.then,
        });
    }
    Ok(phase)
}

/// The `classify` rules, in order; a rule after a catch-all is unreachable, and every `result`
/// must be one of the operator's results.
fn compile_classify_rules(
    raw: Vec<RawClassifyRule>,
    rules: &MappingRules,
) -> Result<Vec<ClassifyRule>, (String, String)> {
    let mut classify = Vec::with_capacity(raw.len());
    let mut catch_all: Option<String> = None;
    for (i, rule) in raw.into_iter().enumerate() {
        let name = format!("classify rule {} (result: {})", i + 1, rule.result);
        if let Some(earlier) = &catch_all {
            return Err((
                name,
                format!("unreachable: {earlier} has no `any`/`all` and always matches"),
            ));
        }
        check_known(&name, "result", &rule.result, &rules.results)?;
        let any = compile_matchers(rule.any.as_ref(), "any").map_err(|m| (name.clone(), m))?;
        let all = compile_matchers(rule.all.as_ref(), "all").map_err(|m| (name.clone(), m))?;
        if rule.any.is_none() && rule.all.is_none() {
            catch_all = Some(name);
        }
        classify.push(ClassifyRule {
            result: rule.result,
            any,
            all,
        });
    }
    Ok(classify)
}

/// Refuses a `value` (a phase or result) the operator does not accept, naming those it does.
fn check_known(
    rule: &str,
    what: &str,
    value: &str,
    known: &[String],
) -> Result<(), (String, String)> {
    if known.iter().any(|k| k == value) {
        return Ok(());
    }
    Err((
        rule.to_owned(),
        format!(
            "unknown {what} `{value}`; expected one of: {}",
            known.join(", ")
        ),
    ))
}

/// Named fields (`<label> `name``), each a path or a `{count: path}`.
fn compile_fields(
    raw: &BTreeMap<String, Value>,
    label: &str,
) -> Result<BTreeMap<String, Field>, (String, String)> {
    let mut fields = BTreeMap::new();
    for (name, raw_field) in raw {
        let rule = format!("{label} `{name}`");
        if name.trim().is_empty() {
            return Err((rule, "a field needs a name".to_owned()));
        }
        fields.insert(
            name.clone(),
            Field::compile(raw_field).map_err(|m| (rule, m))?,
        );
    }
    Ok(fields)
}

/// Every field the operator reads ([`MappingRules::required_fields`]) is declared; a missing one
/// is named, with a declared field it looks like a misspelling of.
fn check_required_fields(
    fields: &BTreeMap<String, Field>,
    rules: &MappingRules,
) -> Result<(), (String, String)> {
    let Some(required) = rules
        .required_fields
        .iter()
        .find(|required| !fields.contains_key(*required))
    else {
        return Ok(());
    };
    let misspelt = fields
        .keys()
        .filter(|name| !rules.required_fields.contains(name))
        .find(|name| looks_like(name, required))
        .map(|name| format!(" (is `{name}` a misspelling of it?)"))
        .unwrap_or_default();
    let all = rules
        .required_fields
        .iter()
        .map(|f| format!("`{f}`"))
        .collect::<Vec<_>>()
        .join(", ");
    Err((
        "fields".to_owned(),
        format!("missing `{required}`{misspelt}; the operator reads the fields {all}"),
    ))
}

fn compile_matchers(
    raw: Option<&BTreeMap<String, Vec<String>>>,
    which: &str,
) -> Result<Vec<(String, Vec<Pattern>)>, String> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if raw.is_empty() {
        return Err(format!("`{which}` lists no facts"));
    }
    raw.iter()
        .map(|(fact, patterns)| {
            if patterns.is_empty() {
                return Err(format!("`{which}.{fact}` lists no patterns"));
            }
            let patterns = patterns
                .iter()
                .map(|p| Pattern::compile(p).map_err(|m| format!("`{which}.{fact}`: {m}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((fact.clone(), patterns))
        })
        .collect()
}

impl ClassifyRule {
    fn matches(&self, facts: &BTreeMap<String, Vec<String>>) -> bool {
        let fact_matches = |(fact, patterns): &(String, Vec<Pattern>)| {
            facts
                .get(fact)
                .is_some_and(|values| values.iter().any(|v| patterns.iter().any(|p| p.matches(v))))
        };
        (self.any.is_empty() || self.any.iter().any(fact_matches))
            && self.all.iter().all(fact_matches)
    }
}

impl CompiledPath {
    fn compile(raw: &str) -> Result<Self, String> {
        let text = normalize_path(raw)?;
        let query = jsonpath_rust::parser::parse_json_path(&text)
            .map_err(|e| format!("invalid JSONPath `{raw}`: {}", one_line(&e.to_string())))?;
        Ok(CompiledPath { query })
    }

    fn select<'a>(&self, value: &'a Value) -> Vec<&'a Value> {
        jsonpath_rust::query::js_path_process(&self.query, value)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .unwrap_or_default()
    }
}

/// Accepts RFC 9535 paths (`$…`) and kubectl's single-expression form (`{.a.b}` → `$.a.b`).
fn normalize_path(raw: &str) -> Result<String, String> {
    let text = raw.trim();
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        let inner = inner.trim();
        return if inner.starts_with('$') {
            Ok(inner.to_owned())
        } else if inner.starts_with('.') || inner.starts_with('[') {
            Ok(format!("${inner}"))
        } else {
            Err(format!(
                "invalid kubectl-style path `{raw}`: expected `{{.field…}}`"
            ))
        };
    }
    if text.starts_with('$') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "invalid JSONPath `{raw}`: must start with `$` (or be kubectl-style `{{.a.b}}`)"
        ))
    }
}

/// Pest errors are multi-line drawings; keep messages on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Pattern {
    fn compile(raw: &str) -> Result<Self, GlobError> {
        Glob::new(raw, Case::Insensitive).map(Pattern)
    }

    fn matches(&self, value: &str) -> bool {
        self.0.matches(value)
    }
}

/// Whether `name` looks like a misspelling of `wanted`: equal ignoring case, `_` and `-`, or a
/// few edits apart (two, or a quarter of the name's length if that is more).
fn looks_like(name: &str, wanted: &str) -> bool {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (a, b) = (norm(name), norm(wanted));
    if a == b {
        return true;
    }
    // Levenshtein distance, one row at a time.
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()] <= (b.len() / 4).max(2)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TEKTON: &str = r#"
child: {apiVersion: tekton.dev/v1, kind: PipelineRun}
phase:
  - when: "$.status.conditions[?@.type=='Succeeded' && @.status=='True']"
    then: Completed
  - when: "$.status.conditions[?@.type=='Succeeded' && @.status=='False']"
    then: Failed
  - when: "$.status.conditions[?@.type=='Succeeded']"
    then: Running
  - then: Pending
fields:
  status:         "$.status.conditions[?@.type=='Succeeded'].status"
  reason:         "$.status.conditions[?@.type=='Succeeded'].reason"
  message:        "{.status.conditions[?(@.type==\"Succeeded\")].message}"
  startTime:      "{.status.startTime}"
  completionTime: "$.status.completionTime"
  taskNames:      "$.status.childReferences[*].name"
  totalTasks:     {count: "$.status.childReferences[?@.kind=='TaskRun']"}
classify:
  - {result: OOMKilled, any: {stepTerminationReason: [OOMKilled], reason: [StepOOM, SidecarOOM], message: ["*oom*"]}}
  - {result: DeadlineExceeded, any: {reason: [PipelineRunTimeout, TaskRunTimeout], message: ["*timeout*", "*deadline*"]}}
  - {result: TaskFailed, all: {reason: [Failed], failedTaskName: ["*"]}}
  - {result: Unknown}
"#;

    fn rules() -> MappingRules {
        MappingRules {
            phases: ["Pending", "Running", "Completed", "Failed"]
                .map(String::from)
                .to_vec(),
            results: ["OOMKilled", "DeadlineExceeded", "TaskFailed", "Unknown"]
                .map(String::from)
                .to_vec(),
            require_grandchildren: false,
            required_fields: Vec::new(),
        }
    }

    fn tekton() -> StatusMapping {
        StatusMapping::from_yaml(TEKTON, &rules()).unwrap()
    }

    /// A PipelineRun as Tekton writes it, with a `Succeeded` condition (or no status at all).
    fn pipeline_run(succeeded: Option<(&str, &str, &str)>, finished: bool) -> Value {
        let mut run = json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {"name": "wfe-f3457dcc8fbcb6d9", "namespace": "kubernaut-workflows"},
            "spec": {"pipelineRef": {"resolver": "bundles"}},
        });
        if let Some((status, reason, message)) = succeeded {
            run["status"] = json!({
                "conditions": [
                    {"type": "Succeeded", "status": status, "reason": reason, "message": message,
                     "lastTransitionTime": "2025-03-01T10:02:30Z"}
                ],
                "startTime": "2025-03-01T10:00:00Z",
                "childReferences": [
                    {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "wfe-f3457dcc8fbcb6d9-drain", "pipelineTaskName": "drain"},
                    {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "wfe-f3457dcc8fbcb6d9-scale", "pipelineTaskName": "scale"},
                    {"apiVersion": "tekton.dev/v1beta1", "kind": "CustomRun", "name": "wfe-f3457dcc8fbcb6d9-wait", "pipelineTaskName": "wait"}
                ]
            });
            if finished {
                run["status"]["completionTime"] = json!("2025-03-01T10:02:30Z");
            }
        }
        run
    }

    #[test]
    fn every_tekton_succeeded_state() {
        let mapping = tekton();
        // (condition, finished, phase, reason)
        let cases = [
            (
                Some((
                    "True",
                    "Succeeded",
                    "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0",
                )),
                true,
                "Completed",
            ),
            (
                Some((
                    "True",
                    "Completed",
                    "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 1",
                )),
                true,
                "Completed",
            ),
            (
                Some((
                    "False",
                    "Failed",
                    "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0",
                )),
                true,
                "Failed",
            ),
            (
                Some((
                    "False",
                    "PipelineRunTimeout",
                    "PipelineRun \"wfe-f3457dcc8fbcb6d9\" failed to finish within \"1h0m0s\"",
                )),
                true,
                "Failed",
            ),
            (
                Some((
                    "False",
                    "Cancelled",
                    "PipelineRun \"wfe-f3457dcc8fbcb6d9\" was cancelled",
                )),
                true,
                "Failed",
            ),
            (
                Some((
                    "Unknown",
                    "Running",
                    "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0",
                )),
                false,
                "Running",
            ),
            (Some(("Unknown", "Started", "")), false, "Running"),
            (None, false, "Pending"),
        ];
        for (condition, finished, phase) in cases {
            let run = pipeline_run(condition, finished);
            assert_eq!(mapping.phase(&run), Some(phase), "{condition:?}");

            let fields = mapping.fields(&run);
            match condition {
                Some((status, reason, message)) => {
                    assert_eq!(fields["status"], status);
                    assert_eq!(fields["reason"], reason);
                    assert_eq!(fields["message"], message, "kubectl-style path");
                    assert_eq!(fields["startTime"], "2025-03-01T10:00:00Z");
                    assert_eq!(fields["totalTasks"], 2, "CustomRun not counted");
                    // Several nodes selected: the first one.
                    assert_eq!(fields["taskNames"], "wfe-f3457dcc8fbcb6d9-drain");
                    assert_eq!(fields.contains_key("completionTime"), finished);
                }
                None => {
                    // Nothing selected: absent, except counts, which are 0.
                    assert_eq!(
                        fields,
                        BTreeMap::from([("totalTasks".to_owned(), json!(0))])
                    );
                }
            }
        }
    }

    /// A fact name and its values.
    type Fact<'a> = (&'a str, &'a [&'a str]);

    fn facts(pairs: &[Fact]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
            .collect()
    }

    #[test]
    fn classification_first_match_wins() {
        let mapping = tekton();
        let cases: [(&[Fact], &str); 10] = [
            // any: a step terminated OOMKilled (case-insensitive), whatever else is said.
            (
                &[
                    ("reason", &["Failed"]),
                    ("stepTerminationReason", &["Completed", "oomkilled"]),
                ],
                "OOMKilled",
            ),
            (&[("reason", &["StepOOM"])], "OOMKilled"),
            // glob "*oom*" = contains, case-insensitive.
            (
                &[
                    ("reason", &["Failed"]),
                    ("message", &["container was killed: OOM"]),
                ],
                "OOMKilled",
            ),
            // Both OOM and timeout: the earlier rule wins.
            (
                &[
                    ("reason", &["PipelineRunTimeout"]),
                    ("message", &["OOM before timeout"]),
                ],
                "OOMKilled",
            ),
            (&[("reason", &["PipelineRunTimeout"])], "DeadlineExceeded"),
            (
                &[
                    ("reason", &["Failed"]),
                    ("message", &["context deadline exceeded"]),
                ],
                "DeadlineExceeded",
            ),
            // all: reason Failed AND some failed task name.
            (
                &[
                    ("reason", &["Failed"]),
                    ("failedTaskName", &["wfe-x-scale"]),
                ],
                "TaskFailed",
            ),
            // "*" needs a non-empty value.
            (
                &[("reason", &["Failed"]), ("failedTaskName", &[""])],
                "Unknown",
            ),
            // No `*`: whole-value equality, so "FailedX" is not "Failed".
            (
                &[("reason", &["FailedX"]), ("failedTaskName", &["t"])],
                "Unknown",
            ),
            (&[], "Unknown"),
        ];
        for (facts_in, expected) in cases {
            assert_eq!(
                mapping.classify(&facts(facts_in)),
                Some(expected),
                "{facts_in:?}"
            );
        }
    }

    #[test]
    fn no_rule_matching_gives_none() {
        let src = "child: {apiVersion: v1, kind: ConfigMap}\n\
                   phase: [{when: '$.status.ready', then: Running}]\n\
                   classify: [{result: Unknown, any: {reason: [x]}}]\n";
        let mapping = StatusMapping::from_yaml(src, &rules()).unwrap();
        assert_eq!(mapping.phase(&json!({"status": {}})), None);
        assert_eq!(
            mapping.phase(&json!({"status": {"ready": false}})),
            Some("Running"),
            "a selected false still counts"
        );
        assert_eq!(mapping.classify(&facts(&[("reason", &["y"])])), None);
        assert_eq!(
            mapping.child(),
            &ChildKind {
                api_version: "v1".into(),
                kind: "ConfigMap".into()
            }
        );
    }

    #[test]
    fn glob_patterns() {
        // (pattern, value, matches)
        let cases = [
            ("oom", "OOM", true),
            ("oom", "oom killed", false),
            ("*oom*", "was OOM killed", true),
            ("*oom*", "oom", true),
            ("oom*", "OOMKilled", true),
            ("oom*", "killed: oom", false),
            ("*killed", "OOMKilled", true),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("*", "x", true),
            ("*", "", false),
            ("ÉCHEC", "échec", true),
        ];
        for (pattern, value, expected) in cases {
            assert_eq!(
                Pattern::compile(pattern).unwrap().matches(value),
                expected,
                "{pattern:?} vs {value:?}"
            );
        }
    }

    /// `yaml` is refused with a message containing every one of `fragments`.
    fn assert_refused(yaml: &str, fragments: &[&str]) {
        let text = StatusMapping::from_yaml(yaml, &rules())
            .unwrap_err()
            .to_string();
        for fragment in fragments {
            assert!(
                text.contains(fragment),
                "{yaml}: {text:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn load_time_errors_name_the_rule() {
        let child = "child: {apiVersion: tekton.dev/v1, kind: PipelineRun}\n";
        // (yaml after `child`, expected fragments of the message)
        // (yaml after `child`, expected fragments of the message)
        let cases: [(&str, &[&str]); 13] = [
            (
                "phase: [{when: '$.status[', then: Running}]",
                &["phase rule 1 (then: Running)", "invalid JSONPath"],
            ),
            (
                "phase: [{when: 'status.x', then: Running}]",
                &["phase rule 1", "must start with `$`"],
            ),
            (
                "phase: [{when: '$.a', then: Running}, {then: Bogus}]",
                &[
                    "phase rule 2 (then: Bogus)",
                    "unknown phase `Bogus`",
                    "Pending, Running",
                ],
            ),
            (
                "phase: [{then: Running}, {when: '$.a', then: Failed}]",
                &["phase rule 2 (then: Failed)", "unreachable", "phase rule 1"],
            ),
            (
                "fields: {reason: '$.status.conditions[?@.type==]'}",
                &["field `reason`", "invalid JSONPath"],
            ),
            (
                "fields: {total: {count: '{status}'}}",
                &["field `total`", "kubectl-style"],
            ),
            (
                "classify: [{result: Nope}]",
                &["classify rule 1 (result: Nope)", "unknown result `Nope`"],
            ),
            (
                "classify: [{result: Unknown}, {result: OOMKilled, any: {reason: [x]}}]",
                &["classify rule 2 (result: OOMKilled)", "unreachable"],
            ),
            (
                "classify: [{result: OOMKilled, any: {}}]",
                &["classify rule 1", "`any` lists no facts"],
            ),
            (
                "classify: [{result: OOMKilled, all: {reason: []}}]",
                &["classify rule 1", "`all.reason` lists no patterns"],
            ),
            (
                "classify: [{result: OOMKilled, any: {reason: ['']}}]",
                &["classify rule 1", "empty pattern"],
            ),
            ("phases: []", &["unknown field `phases`"]),
            (
                "fields: {total: {count: '$.a', extra: 1}}",
                &["field `total`", "{count: <JSONPath>}"],
            ),
        ];
        for (body, fragments) in cases {
            assert_refused(&format!("{child}{body}\n"), fragments);
        }
    }

    #[test]
    fn empty_missing_and_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("status.yaml");
        for content in ["", "# only a comment\n", "---\n"] {
            std::fs::write(&empty, content).unwrap();
            let err = StatusMapping::load(&empty, &rules()).unwrap_err();
            assert!(
                matches!(err, MappingError::Empty { .. }),
                "{content:?}: {err}"
            );
            assert!(err.to_string().contains("status.yaml"), "{err}");
        }
        let missing = dir.path().join("missing.yaml");
        let err = StatusMapping::load(&missing, &rules()).unwrap_err();
        assert!(
            matches!(err, MappingError::Read { .. }) && err.to_string().contains("missing.yaml")
        );

        std::fs::write(&empty, "phase: [{then: Running}]\n").unwrap();
        let err = StatusMapping::load(&empty, &rules()).unwrap_err();
        assert!(err.to_string().contains("missing field `child`"), "{err}");

        std::fs::write(&empty, "child: {apiVersion: v1, kind: X}\nphase: [\n").unwrap();
        let err = StatusMapping::load(&empty, &rules()).unwrap_err();
        assert!(
            matches!(err, MappingError::Syntax { .. }) && err.to_string().contains("line"),
            "{err}"
        );

        std::fs::write(&empty, TEKTON).unwrap();
        assert_eq!(
            StatusMapping::load(&empty, &rules()).unwrap().child().kind,
            "PipelineRun"
        );
    }

    /// A `grandchildren` section in Tekton's shape: a TaskRun ran when it succeeded, a step is
    /// running, or a step terminated with a start of its own (Tekton gives the steps it stops
    /// before they started the TaskRun's creation time).
    const GRANDCHILDREN: &str = r#"
grandchildren:
  child: {apiVersion: tekton.dev/v1, kind: TaskRun}
  names: "$.status.childReferences[?@.kind=='TaskRun'].name"
  ownerLabel: tekton.dev/pipelineRun
  finished: "$.status.conditions[?@.type=='Succeeded' && @.status!='Unknown']"
  failed: "$.status.conditions[?@.type=='Succeeded' && @.status=='False']"
  fields:
    reason: "$.status.conditions[?@.type=='Succeeded'].reason"
    steps: {count: "$.status.steps[*]"}
  held:
    - when: "$.status.conditions[?@.type=='Succeeded' && @.reason=='ExceededResourceQuota']"
      result: OOMKilled
      message: "$.status.conditions[?@.type=='Succeeded'].message"
    - when: "$.status.conditions[?@.reason=='Stuck']"
      result: DeadlineExceeded
  ran:
    - "$.status.conditions[?@.type=='Succeeded' && @.status=='True']"
    - "$.status.steps[?@.running]"
    - "$.status.steps[?@.terminated.startedAt && @.terminated.startedAt != $.metadata.creationTimestamp]"
  facts:
    stepTerminationReason: "$.status.steps[*].terminated.reason"
    exitCode: "$.status.steps[?@.terminated && @.terminated.exitCode != 0 && @.terminated.reason != 'TaskRunImagePullFailed'].terminated.exitCode"
    ready: "$.status.ready"
    objects: "$.status.steps[*]"
"#;

    fn task_run(steps: Value, succeeded: &str) -> Value {
        json!({
            "metadata": {"name": "tr", "creationTimestamp": "2025-06-01T11:50:05Z"},
            "status": {
                "conditions": [{"type": "Succeeded", "status": succeeded}],
                "steps": steps,
                "ready": true,
            }
        })
    }

    #[test]
    fn grandchildren_say_whether_work_started_and_give_facts() {
        let mapping =
            StatusMapping::from_yaml(&format!("{TEKTON}{GRANDCHILDREN}"), &rules()).unwrap();
        assert!(mapping.reads_grandchildren());
        assert_eq!(
            mapping.grandchild_owner_label(),
            Some("tekton.dev/pipelineRun")
        );
        let rewritten_waiting = json!({"name": "a", "terminated": {
            "exitCode": 1, "reason": "TaskRunImagePullFailed",
            "startedAt": "2025-06-01T11:50:05Z", "finishedAt": "2025-06-01T11:52:30Z"}});
        let rewritten_running = json!({"name": "a", "terminated": {
            "exitCode": 1, "reason": "TaskRunCancelled",
            "startedAt": "2025-06-01T11:50:09Z", "finishedAt": "2025-06-01T11:52:30Z"}});
        let error = json!({"name": "b", "terminated": {
            "exitCode": 3, "reason": "Error",
            "startedAt": "2025-06-01T11:50:09Z", "finishedAt": "2025-06-01T11:52:30Z"}});
        // (steps, Succeeded status, ran)
        let cases = [
            (json!([]), "True", true),
            (json!([]), "False", false),
            (
                json!([{"name": "a", "running": {"startedAt": "2025-06-01T11:50:09Z"}}]),
                "Unknown",
                true,
            ),
            (
                json!([{"name": "a", "waiting": {"reason": "ImagePullBackOff"}}]),
                "Unknown",
                false,
            ),
            (json!([rewritten_waiting.clone()]), "False", false),
            (
                json!([rewritten_waiting.clone(), rewritten_running]),
                "False",
                true,
            ),
            (json!([error.clone()]), "False", true),
            (json!([{"name": "a"}]), "False", false),
        ];
        for (steps, succeeded, ran) in cases {
            let tr = task_run(steps.clone(), succeeded);
            assert_eq!(mapping.grandchild_ran(&tr), ran, "{succeeded} {steps}");
        }

        let tr = task_run(json!([rewritten_waiting, error]), "False");
        let facts = mapping.grandchild_facts(&tr);
        assert_eq!(
            facts["stepTerminationReason"],
            ["TaskRunImagePullFailed", "Error"]
        );
        assert_eq!(facts["exitCode"], ["3"], "numbers as text, filter applied");
        assert_eq!(facts["ready"], ["true"]);
        assert!(facts["objects"].is_empty(), "objects are not facts");

        // Kind, names in the child's order (the CustomRun is not one), finished, failed, fields.
        assert_eq!(
            mapping
                .grandchild_kind()
                .map(ToString::to_string)
                .as_deref(),
            Some("tekton.dev/v1, Kind=TaskRun")
        );
        let run = pipeline_run(Some(("False", "Failed", "x")), true);
        assert_eq!(
            mapping.grandchild_names(&run),
            [
                (0, "wfe-f3457dcc8fbcb6d9-drain".to_owned()),
                (1, "wfe-f3457dcc8fbcb6d9-scale".to_owned())
            ]
        );
        for (succeeded, finished, failed) in [
            ("True", true, false),
            ("False", true, true),
            ("Unknown", false, false),
        ] {
            let tr = task_run(json!([]), succeeded);
            assert_eq!(mapping.grandchild_finished(&tr), finished, "{succeeded}");
            assert_eq!(mapping.grandchild_failed(&tr), failed, "{succeeded}");
        }
        let mut failed_tr = task_run(json!([error.clone()]), "False");
        failed_tr["status"]["conditions"][0]["reason"] = json!("Failed");
        assert_eq!(
            mapping.grandchild_fields(&failed_tr),
            BTreeMap::from([
                ("reason".to_owned(), json!("Failed")),
                ("steps".to_owned(), json!(1))
            ])
        );

        // Held: the first matching rule, only while unfinished; the message when it selects one.
        let held = |status: &str, reason: &str| {
            let mut tr = task_run(json!([]), status);
            tr["status"]["conditions"][0]["reason"] = json!(reason);
            tr["status"]["conditions"][0]["message"] = json!("exceeded quota: no-pods");
            mapping.grandchild_held(&tr)
        };
        assert_eq!(
            held("Unknown", "ExceededResourceQuota"),
            Some(Held {
                result: "OOMKilled".to_owned(),
                message: Some("exceeded quota: no-pods".to_owned())
            })
        );
        assert_eq!(
            held("Unknown", "Stuck"),
            Some(Held {
                result: "DeadlineExceeded".to_owned(),
                message: None
            })
        );
        assert_eq!(held("False", "ExceededResourceQuota"), None, "finished");
        assert_eq!(held("Unknown", "Running"), None);

        // Without the section: nothing ran, no facts.
        let plain = tekton();
        assert!(!plain.reads_grandchildren());
        assert!(!plain.grandchild_ran(&task_run(json!([]), "True")));
        assert!(plain.grandchild_facts(&tr).is_empty());
        assert_eq!(plain.grandchild_owner_label(), None);
        assert_eq!(plain.grandchild_kind(), None);
        assert!(plain.grandchild_names(&run).is_empty());
        assert!(!plain.grandchild_failed(&failed_tr));
        assert_eq!(plain.grandchild_held(&failed_tr), None);
    }

    /// A `grandchildren` section in a Job's shape: its pods are not listed on it, they carry its
    /// name in a label.
    const BY_LABEL: &str = r#"
grandchildren:
  child: {apiVersion: v1, kind: Pod}
  ownerLabel: batch.kubernetes.io/job-name
  failed: "$.status[?@.phase=='Failed']"
  ran: ["$.status.containerStatuses[?@.state.running]"]
"#;

    fn pod(name: &str, job: Option<&str>, created: &str) -> Value {
        let mut pod = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if let Some(job) = job {
            pod["metadata"]["labels"] = json!({"batch.kubernetes.io/job-name": job});
        }
        pod
    }

    fn by_name(objects: &[Value]) -> BTreeMap<String, Value> {
        objects
            .iter()
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap().to_owned(),
                    o.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn grandchildren_without_names_are_found_by_the_owner_label_in_creation_order() {
        let mapping = StatusMapping::from_yaml(&format!("{TEKTON}{BY_LABEL}"), &rules()).unwrap();
        let job = json!({"metadata": {"name": "wfe-1"}});
        let lookup = mapping.grandchild_lookup(&job).unwrap();
        assert_eq!(
            lookup,
            GrandchildLookup::Labelled {
                label: "batch.kubernetes.io/job-name".to_owned(),
                value: "wfe-1".to_owned()
            }
        );
        assert_eq!(
            lookup.label_selector().as_deref(),
            Some("batch.kubernetes.io/job-name=wfe-1")
        );
        assert!(mapping.grandchild_names(&job).is_empty(), "no names path");

        // Another Job's pod, an unlabelled one and one whose label is not a string are not its.
        let mut odd = pod("odd", None, "2025-06-01T11:50:00Z");
        odd["metadata"]["labels"] = json!({"batch.kubernetes.io/job-name": 1});
        let found = by_name(&[
            pod("wfe-1-zzz", Some("wfe-1"), "2025-06-01T11:50:01Z"),
            pod("wfe-1-bbb", Some("wfe-1"), "2025-06-01T11:50:05Z"),
            pod("wfe-1-aaa", Some("wfe-1"), "2025-06-01T11:50:05Z"),
            pod("wfe-2-aaa", Some("wfe-2"), "2025-06-01T11:49:00Z"),
            pod("stray", None, "2025-06-01T11:49:00Z"),
            odd,
        ]);
        // By creation time, then by name among pods created in the same second.
        let expected = [
            (0, "wfe-1-zzz".to_owned()),
            (1, "wfe-1-aaa".to_owned()),
            (2, "wfe-1-bbb".to_owned()),
        ];
        assert_eq!(mapping.grandchild_order(&job, &found), expected);
        assert_eq!(lookup.order(&found), expected);
        assert!(lookup.selects(&found["wfe-1-aaa"]));
        assert!(!lookup.selects(&found["wfe-2-aaa"]));
        assert!(!lookup.selects(&found["odd"]));

        // A child without a name has none to find.
        let nameless = json!({"metadata": {}});
        assert_eq!(
            mapping.grandchild_lookup(&nameless),
            Some(GrandchildLookup::Named(Vec::new()))
        );
        assert!(mapping.grandchild_order(&nameless, &found).is_empty());
        // Without the section there is no lookup at all.
        assert_eq!(tekton().grandchild_lookup(&job), None);
        assert!(tekton().grandchild_order(&job, &found).is_empty());
    }

    #[test]
    fn grandchildren_with_names_are_the_ones_the_child_lists_in_its_order() {
        let mapping =
            StatusMapping::from_yaml(&format!("{TEKTON}{GRANDCHILDREN}"), &rules()).unwrap();
        let run = pipeline_run(Some(("False", "Failed", "x")), true);
        let listed = [
            (0, "wfe-f3457dcc8fbcb6d9-drain".to_owned()),
            (1, "wfe-f3457dcc8fbcb6d9-scale".to_owned()),
        ];
        let lookup = mapping.grandchild_lookup(&run).unwrap();
        assert_eq!(lookup, GrandchildLookup::Named(listed.to_vec()));
        assert_eq!(lookup.label_selector(), None, "names win over ownerLabel");
        // The run's order, whatever was found (a name not found is still listed, an object
        // found but not listed is not).
        let found = by_name(&[
            pod("wfe-f3457dcc8fbcb6d9-scale", None, "2025-06-01T11:50:00Z"),
            pod("other", None, "2025-06-01T11:40:00Z"),
        ]);
        assert_eq!(mapping.grandchild_order(&run, &found), listed);
        assert!(lookup.selects(&found["wfe-f3457dcc8fbcb6d9-scale"]));
        assert!(!lookup.selects(&found["other"]));
    }

    #[test]
    fn grandchildren_errors_name_the_entry() {
        let child = "child: {apiVersion: tekton.dev/v1, kind: PipelineRun}\n";
        // What every section needs, prefixed to the cases that are not about it.
        let keys = "child: {apiVersion: tekton.dev/v1, kind: TaskRun}, names: '$.n', ";
        let cases: [(String, &[&str]); 13] = [
            ("{}".to_owned(), &["missing field `child`"]),
            (
                "{child: {apiVersion: v1, kind: Pod}}".to_owned(),
                &[
                    "grandchildren.names",
                    "missing field `names`",
                    "`ownerLabel`",
                ],
            ),
            (
                "{names: '$.a', ran: ['$.a']}".to_owned(),
                &["missing field `child`"],
            ),
            (
                "{child: {apiVersion: v1, kind: Pod}, names: 'a', ran: ['$.a']}".to_owned(),
                &["grandchildren.names", "must start with `$`"],
            ),
            (
                format!("{{{keys}}}"),
                &["grandchildren.ran", "lists no paths"],
            ),
            (
                format!("{{{keys}ran: ['$.a', '$.b[']}}"),
                &["grandchildren.ran[2]", "invalid JSONPath"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], facts: {{exitCode: 'steps'}}}}"),
                &["grandchildren fact `exitCode`", "must start with `$`"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], facts: {{' ': '$.a'}}}}"),
                &["grandchildren fact", "needs a name"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], ownerLabel: 'a b'}}"),
                &["grandchildren.ownerLabel", "not a label key"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], steps: '$.a'}}"),
                &["unknown field `steps`"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], failed: '$.['}}"),
                &["grandchildren.failed", "invalid JSONPath"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], fields: {{reason: 3}}}}"),
                &["grandchildren field `reason`", "expected a JSONPath string"],
            ),
            (
                format!("{{{keys}ran: ['$.a'], held: [{{when: '$.a', result: Quota}}]}}"),
                &[
                    "grandchildren.held[1] (result: Quota)",
                    "unknown result `Quota`",
                ],
            ),
        ];
        for (body, fragments) in cases {
            assert_refused(&format!("{child}grandchildren: {body}\n"), fragments);
        }
        let required = MappingRules {
            require_grandchildren: true,
            ..rules()
        };
        let err = StatusMapping::from_yaml(TEKTON, &required).unwrap_err();
        assert!(err.to_string().contains("grandchildren: missing"), "{err}");
        assert!(StatusMapping::from_yaml(&format!("{TEKTON}{GRANDCHILDREN}"), &required).is_ok());
    }

    #[test]
    fn fields_the_operator_reads_must_be_there() {
        let rules = MappingRules {
            required_fields: ["reason", "startTime", "completionTime"]
                .map(String::from)
                .to_vec(),
            ..rules()
        };
        assert!(StatusMapping::from_yaml(TEKTON, &rules).is_ok());
        let cases: [(&str, &str, &[&str]); 3] = [
            (
                "  startTime:",
                "  starttime:",
                &["missing `startTime`", "`starttime` a misspelling"],
            ),
            (
                "  completionTime:",
                "  completedTime:",
                &["missing `completionTime`", "`completedTime` a misspelling"],
            ),
            (
                "  reason:",
                "  why:",
                &[
                    "missing `reason`;",
                    "the operator reads the fields `reason`, `startTime`",
                ],
            ),
        ];
        for (from, to, fragments) in cases {
            let text = TEKTON.replacen(from, to, 1);
            let err = StatusMapping::from_yaml(&text, &rules)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("status mapping (inline): fields: missing"),
                "{err}"
            );
            for fragment in fragments {
                assert!(err.contains(fragment), "{to}: {err}");
            }
        }
    }

    #[test]
    fn path_forms() {
        let cases = [
            ("$.a.b", Ok("$.a.b")),
            ("  $.a ", Ok("$.a")),
            ("{.a.b}", Ok("$.a.b")),
            ("{ .items[0] }", Ok("$.items[0]")),
            ("{[0]}", Ok("$[0]")),
            ("{$.a}", Ok("$.a")),
            ("{a}", Err(())),
            ("a.b", Err(())),
        ];
        for (raw, expected) in cases {
            assert_eq!(
                normalize_path(raw).map_err(|_| ()),
                expected.map(str::to_owned),
                "{raw}"
            );
        }
    }
}
