//! What of a document a status mapping reads: a [`Projection`] keeps exactly the parts of a child
//! (or grandchild) that the mapping's JSONPath queries look at, so a cache can hold that instead
//! of the whole object ([`StatusMapping::child_projection`],
//! [`StatusMapping::grandchild_projection`], [`crate::runtime::prune::project`]).
//!
//! A projection is built from the queries' syntax, not from any one object: every query names the
//! members it walks through, and what it does with the nodes it reaches (read their value, or only
//! see that they exist). Walking a wildcard, an index, a slice or a filter keeps every element (an
//! index keeps its meaning only if no element before it goes); a filter adds what its own
//! expressions read (relative to each candidate, or from the root).
//!
//! # Guarantees
//! 1. Every query the projection was built from selects, over the projected document, the same
//!    nodes in the same order as over the whole one, with the same values where its use reads
//!    values ([`Use::Value`]); where it only tests for nodes ([`Use::Exists`]), the same number
//!    of nodes.
//! 2. What no query reaches is dropped: a member no query names, the contents of a node only
//!    tested for (an object becomes `{}`, an array `[]`; a scalar stays, it costs nothing to keep).
//! 3. Projecting is total: a document of any shape is projected, never refused.
//!
//! # Caveats
//! 1. A descendant segment (`..`) keeps the whole node it starts from, and a function
//!    (`length()`, `match()` …) keeps the whole of what it reads: both read more than their syntax
//!    says.
//! 2. Only the mapping's queries are accounted for: whatever else a reader looks at in a cached
//!    object (labels, annotations, identity) is the cache's business
//!    ([`crate::runtime::prune::project`] keeps identity and the labels and annotations it is told).
use std::collections::BTreeMap;

use jsonpath_rust::parser::model::{
    Comparable, FnArg, JpQuery, Segment, Selector, SingularQuery, SingularQuerySegment, Test,
    TestFunction,
};
use jsonpath_rust::parser::model::{Filter, FilterAtom};
use serde_json::{Map, Value};

/// What a reader does with the nodes a query selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Reads their values (a field, a fact, a name).
    Value,
    /// Only tests that there are some, or counts them (a phase rule's `when`, a `{count: …}`).
    Exists,
}

/// What of a node stays.
#[derive(Debug, Clone, PartialEq)]
enum Keep {
    /// The node as it is.
    Whole,
    /// The node, not its contents: an object becomes `{}`, an array `[]`.
    Exists,
    /// The node with some of its members and, when `each` is set, every member or element, each
    /// projected by its own keep.
    Parts {
        members: BTreeMap<String, Keep>,
        each: Option<Box<Keep>>,
    },
}

impl Keep {
    fn nothing() -> Keep {
        Keep::Parts {
            members: BTreeMap::new(),
            each: None,
        }
    }

    fn member(name: &str, keep: Keep) -> Keep {
        Keep::Parts {
            members: BTreeMap::from([(name.to_owned(), keep)]),
            each: None,
        }
    }

    fn each(keep: Keep) -> Keep {
        Keep::Parts {
            members: BTreeMap::new(),
            each: Some(Box::new(keep)),
        }
    }

    /// What keeps both what `self` and `other` keep.
    fn merge(self, other: Keep) -> Keep {
        match (self, other) {
            (Keep::Whole, _) | (_, Keep::Whole) => Keep::Whole,
            (Keep::Exists, keep) | (keep, Keep::Exists) => keep,
            (
                Keep::Parts { mut members, each },
                Keep::Parts {
                    members: more,
                    each: more_each,
                },
            ) => {
                for (name, keep) in more {
                    let merged = match members.remove(&name) {
                        Some(existing) => existing.merge(keep),
                        None => keep,
                    };
                    members.insert(name, merged);
                }
                let each = match (each, more_each) {
                    (Some(a), Some(b)) => Some(Box::new(a.merge(*b))),
                    (a, b) => a.or(b),
                };
                Keep::Parts { members, each }
            }
        }
    }

    /// `value` with only what this keeps.
    fn apply(&self, value: Value) -> Value {
        match (self, value) {
            (Keep::Whole, value) => value,
            (Keep::Exists, Value::Object(_)) => Value::Object(Map::new()),
            (Keep::Exists, Value::Array(_)) => Value::Array(Vec::new()),
            (Keep::Parts { members, each }, Value::Object(map)) => Value::Object(
                map.into_iter()
                    .filter_map(|(name, value)| {
                        let keep = match (members.get(&name), each.as_deref()) {
                            (Some(named), Some(every)) => named.clone().merge(every.clone()),
                            (Some(named), None) => named.clone(),
                            (None, Some(every)) => every.clone(),
                            (None, None) => return None,
                        };
                        Some((name, keep.apply(value)))
                    })
                    .collect(),
            ),
            (Keep::Parts { each, .. }, Value::Array(items)) => match each.as_deref() {
                Some(every) => Value::Array(items.into_iter().map(|v| every.apply(v)).collect()),
                None => Value::Array(Vec::new()),
            },
            (_, scalar) => scalar,
        }
    }

    /// The keep of member `name`, if this keeps it at all.
    fn of_member(&self, name: &str) -> Option<Keep> {
        match self {
            Keep::Whole => Some(Keep::Whole),
            Keep::Exists => None,
            Keep::Parts { members, each } => match (members.get(name), each.as_deref()) {
                (Some(named), Some(every)) => Some(named.clone().merge(every.clone())),
                (Some(keep), None) | (None, Some(keep)) => Some(keep.clone()),
                (None, None) => None,
            },
        }
    }
}

/// The parts of a document that a set of JSONPath queries reads (see the [module docs](self)).
/// The default keeps nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    root: Keep,
}

impl Default for Projection {
    fn default() -> Self {
        Projection {
            root: Keep::nothing(),
        }
    }
}

impl Projection {
    /// Also keeps what `query` reads when its nodes are put to `use`.
    pub fn add(&mut self, query: &JpQuery, usage: Use) {
        let terminal = match usage {
            Use::Value => Keep::Whole,
            Use::Exists => Keep::Exists,
        };
        let mut absolute = Vec::new();
        let keep = segments(&query.segments, terminal, &mut absolute);
        let root = std::mem::replace(&mut self.root, Keep::Whole);
        self.root = absolute.into_iter().fold(root.merge(keep), Keep::merge);
    }

    /// Also keeps the member at `path` (names from the root) whole.
    pub fn add_member(&mut self, path: &[&str]) {
        let keep = path
            .iter()
            .rev()
            .fold(Keep::Whole, |keep, name| Keep::member(name, keep));
        let root = std::mem::replace(&mut self.root, Keep::Whole);
        self.root = root.merge(keep);
    }

    /// Also keeps what `other` keeps.
    pub fn merge(&mut self, other: &Projection) {
        let root = std::mem::replace(&mut self.root, Keep::Whole);
        self.root = root.merge(other.root.clone());
    }

    /// `document` with only what the queries read.
    pub fn apply(&self, document: Value) -> Value {
        self.root.apply(document)
    }

    /// Whether the member at `path` (names from the root) is kept whole.
    pub fn keeps_whole(&self, path: &[&str]) -> bool {
        self.at(path).is_some_and(|keep| keep == Keep::Whole)
    }

    /// Whether the member at `path` (names from the root) is kept at all.
    pub fn keeps(&self, path: &[&str]) -> bool {
        self.at(path).is_some()
    }

    /// The names of the members of the node at `path` that are kept by name (empty when it is
    /// kept whole, only tested for, or not at all: see [`Self::keeps_whole`] and
    /// [`Self::keeps_every_member`]).
    pub fn kept_members(&self, path: &[&str]) -> Vec<String> {
        match self.at(path) {
            Some(Keep::Parts { members, .. }) => members.into_keys().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether every member of the node at `path` is kept (whole, or by a wildcard or filter).
    pub fn keeps_every_member(&self, path: &[&str]) -> bool {
        matches!(
            self.at(path),
            Some(Keep::Whole | Keep::Parts { each: Some(_), .. })
        )
    }

    fn at(&self, path: &[&str]) -> Option<Keep> {
        path.iter()
            .try_fold(self.root.clone(), |keep, name| keep.of_member(name))
    }
}

/// What `segments` read below the node they start from, ending in `terminal` at the nodes they
/// select; queries from the root inside filters go to `absolute`.
fn segments(segments: &[Segment], terminal: Keep, absolute: &mut Vec<Keep>) -> Keep {
    let Some((first, rest)) = segments.split_first() else {
        return terminal;
    };
    match first {
        Segment::Descendant(_) => Keep::Whole,
        Segment::Selector(selector) => selector_keep(selector, rest, terminal, absolute),
        Segment::Selectors(selectors) => {
            selectors.iter().fold(Keep::nothing(), |keep, selector| {
                keep.merge(selector_keep(selector, rest, terminal.clone(), absolute))
            })
        }
    }
}

fn selector_keep(
    selector: &Selector,
    rest: &[Segment],
    terminal: Keep,
    absolute: &mut Vec<Keep>,
) -> Keep {
    let below = segments(rest, terminal, absolute);
    match selector {
        Selector::Name(name) => Keep::member(name, below),
        // An index or slice selects by position: every element stays, so positions do.
        Selector::Wildcard | Selector::Index(_) | Selector::Slice(..) => Keep::each(below),
        Selector::Filter(filter) => Keep::each(below.merge(filter_keep(filter, absolute))),
    }
}

/// What a filter reads of each candidate.
fn filter_keep(filter: &Filter, absolute: &mut Vec<Keep>) -> Keep {
    match filter {
        Filter::Or(filters) | Filter::And(filters) => {
            filters.iter().fold(Keep::nothing(), |keep, f| {
                keep.merge(filter_keep(f, absolute))
            })
        }
        Filter::Atom(FilterAtom::Filter { expr, .. }) => filter_keep(expr, absolute),
        Filter::Atom(FilterAtom::Test { expr, .. }) => test_keep(expr, Keep::Exists, absolute),
        Filter::Atom(FilterAtom::Comparison(comparison)) => {
            let (left, right) = comparison.vals();
            comparable_keep(left, absolute).merge(comparable_keep(right, absolute))
        }
    }
}

fn test_keep(test: &Test, terminal: Keep, absolute: &mut Vec<Keep>) -> Keep {
    match test {
        Test::RelQuery(relative) => segments(relative, terminal, absolute),
        Test::AbsQuery(query) => {
            let keep = segments(&query.segments, terminal, absolute);
            absolute.push(keep);
            Keep::nothing()
        }
        Test::Function(function) => function_keep(function, absolute),
    }
}

/// What a function reads: the whole of every query among its arguments.
fn function_keep(function: &TestFunction, absolute: &mut Vec<Keep>) -> Keep {
    let args: Vec<&FnArg> = match function {
        TestFunction::Custom(_, args) => args.iter().collect(),
        TestFunction::Length(arg) => vec![arg.as_ref()],
        TestFunction::Value(arg) | TestFunction::Count(arg) => vec![arg],
        TestFunction::Search(a, b) | TestFunction::Match(a, b) => vec![a, b],
    };
    args.into_iter()
        .fold(Keep::nothing(), |keep, arg| match arg {
            FnArg::Literal(_) => keep,
            FnArg::Test(test) => keep.merge(test_keep(test, Keep::Whole, absolute)),
            FnArg::Filter(filter) => keep.merge(filter_keep(filter, absolute)),
        })
}

fn comparable_keep(comparable: &Comparable, absolute: &mut Vec<Keep>) -> Keep {
    match comparable {
        Comparable::Literal(_) => Keep::nothing(),
        Comparable::Function(function) => function_keep(function, absolute),
        Comparable::SingularQuery(SingularQuery::Current(path)) => singular(path),
        Comparable::SingularQuery(SingularQuery::Root(path)) => {
            absolute.push(singular(path));
            Keep::nothing()
        }
    }
}

/// A singular query's path, its value read.
fn singular(path: &[SingularQuerySegment]) -> Keep {
    path.iter()
        .rev()
        .fold(Keep::Whole, |keep, segment| match segment {
            SingularQuerySegment::Name(name) => Keep::member(name, keep),
            SingularQuerySegment::Index(_) => Keep::each(keep),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn query(text: &str) -> JpQuery {
        jsonpath_rust::parser::parse_json_path(text).unwrap()
    }

    fn select<'a>(text: &str, document: &'a Value) -> Vec<&'a Value> {
        jsonpath_rust::query::js_path_process(&query(text), document)
            .map(|refs| refs.into_iter().map(|r| r.val()).collect())
            .unwrap_or_default()
    }

    fn projection(queries: &[(&str, Use)]) -> Projection {
        let mut projection = Projection::default();
        for (text, usage) in queries {
            projection.add(&query(text), *usage);
        }
        projection
    }

    fn document() -> Value {
        json!({
            "metadata": {"name": "run", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"params": [{"name": "a", "value": "b"}], "active": 1},
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "ready"},
                    {"type": "Succeeded", "status": "False", "reason": "Failed", "message": "m",
                     "lastTransitionTime": "2026-01-01T00:00:01Z"}
                ],
                "startTime": "2026-01-01T00:00:00Z",
                "pipelineSpec": {"tasks": [{"name": "a", "taskSpec": {"steps": [{"script": "x"}]}},
                                           {"name": "b"}],
                                 "finally": [{"name": "c"}], "params": [{"name": "p"}]},
                "steps": [
                    {"name": "s1", "terminated": {"reason": "Completed", "exitCode": 0,
                      "startedAt": "2026-01-01T00:00:00Z"}},
                    {"name": "s2", "terminated": {"reason": "Error", "exitCode": 2,
                      "startedAt": "2026-01-01T00:00:05Z", "message": "long"}},
                    {"name": "s3", "waiting": {"reason": "ImagePullBackOff", "message": "long"}}
                ],
                "provenance": {"featureFlags": {"a": true}},
                "active": 0
            }
        })
    }

    /// Each case: the queries and their use, and the document that must remain.
    #[test]
    fn what_is_kept_and_what_is_dropped() {
        type Case = (&'static str, Vec<(&'static str, Use)>, Value);
        let cases: Vec<Case> = vec![
            ("nothing asked, nothing kept", vec![], json!({})),
            (
                "a value by name",
                vec![("$.status.startTime", Use::Value)],
                json!({"status": {"startTime": "2026-01-01T00:00:00Z"}}),
            ),
            (
                "a filter keeps every candidate with what the filter reads, the value whole",
                vec![(
                    "$.status.conditions[?@.type=='Succeeded'].reason",
                    Use::Value,
                )],
                json!({"status": {"conditions": [
                    {"type": "Ready"},
                    {"type": "Succeeded", "reason": "Failed"}
                ]}}),
            ),
            (
                "only tested for: the selected node stays, emptied",
                vec![("$.status.conditions[?@.status=='False']", Use::Exists)],
                json!({"status": {"conditions": [{"status": "True"}, {"status": "False"}]}}),
            ),
            (
                "a count over a wildcard keeps the elements, emptied",
                vec![("$.status.pipelineSpec['tasks','finally'][*]", Use::Exists)],
                json!({"status": {"pipelineSpec": {"tasks": [{}, {}], "finally": [{}]}}}),
            ),
            (
                "nested tests keep what they test, comparisons what they compare",
                vec![(
                    "$.status.steps[?@.terminated && @.terminated.exitCode != 0].name",
                    Use::Value,
                )],
                json!({"status": {"steps": [
                    {"name": "s1", "terminated": {"exitCode": 0}},
                    {"name": "s2", "terminated": {"exitCode": 2}},
                    {"name": "s3"}
                ]}}),
            ),
            (
                "a query from the root inside a filter keeps what it reads",
                vec![(
                    "$.status.steps[?@.terminated.startedAt != $.metadata.creationTimestamp]",
                    Use::Exists,
                )],
                json!({
                    "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
                    "status": {"steps": [
                        {"terminated": {"startedAt": "2026-01-01T00:00:00Z"}},
                        {"terminated": {"startedAt": "2026-01-01T00:00:05Z"}},
                        {}
                    ]}
                }),
            ),
            (
                "a filter on the root reads each member",
                vec![("$[?@.active > 0]", Use::Exists)],
                json!({"metadata": {}, "spec": {"active": 1}, "status": {"active": 0}}),
            ),
            (
                "an index keeps every element, so positions hold",
                vec![("$.status.conditions[1].type", Use::Value)],
                json!({"status": {"conditions": [{"type": "Ready"}, {"type": "Succeeded"}]}}),
            ),
            (
                "a descendant segment keeps the node it starts from",
                vec![("$.status.provenance..a", Use::Value)],
                json!({"status": {"provenance": {"featureFlags": {"a": true}}}}),
            ),
            (
                "a function keeps the whole of what it reads",
                vec![("$.spec.params[?length(@.name) > 0]", Use::Exists)],
                json!({"spec": {"params": [{"name": "a"}]}}),
            ),
        ];
        for (name, queries, want) in cases {
            let got = projection(&queries).apply(document());
            assert_eq!(got, want, "{name}");
        }
    }

    /// Over the projection every query selects what it selects over the whole document: the same
    /// values for a value read, as many nodes for a test.
    #[test]
    fn queries_read_the_projection_as_they_read_the_whole() {
        let queries: Vec<(&str, Use)> = vec![
            (
                "$.status.conditions[?@.type=='Succeeded' && @.status=='False']",
                Use::Exists,
            ),
            (
                "$.status.conditions[?@.type=='Succeeded'].message",
                Use::Value,
            ),
            ("$.status.startTime", Use::Exists),
            ("$.status.pipelineSpec['tasks','finally'][*]", Use::Exists),
            ("$.status.steps[*].terminated.reason", Use::Value),
            (
                "$.status.steps[?@.waiting || (@.terminated && @.terminated.exitCode != 0)].name",
                Use::Value,
            ),
            (
                "$.status.steps[?@.terminated && @.terminated.reason != 'Error'].terminated.exitCode",
                Use::Value,
            ),
            (
                "$.status.steps[?@.terminated.startedAt != $.metadata.creationTimestamp]",
                Use::Exists,
            ),
            (
                "$[?@.conditions[?@.type=='Ready'] && (!@.active || @.active == 0)]",
                Use::Exists,
            ),
            ("$.status.conditions[-1].lastTransitionTime", Use::Value),
        ];
        let projected = projection(&queries).apply(document());
        let whole = document();
        for (text, usage) in &queries {
            let (over_whole, over_projection) = (select(text, &whole), select(text, &projected));
            match usage {
                Use::Value => assert_eq!(over_projection, over_whole, "{text}"),
                Use::Exists => assert_eq!(over_projection.len(), over_whole.len(), "{text}"),
            }
        }
        assert!(projected["status"].get("provenance").is_none());
        // The filter on the root reads `active` of every member, the spec's too; nothing else.
        assert_eq!(projected["spec"], json!({"active": 1}));
    }

    #[test]
    fn merged_projections_keep_what_either_keeps() {
        let mut a = projection(&[("$.status.startTime", Use::Value)]);
        let b = projection(&[("$.status.conditions[*]", Use::Exists)]);
        a.merge(&b);
        a.add_member(&["metadata", "labels"]);
        assert_eq!(
            a.apply(document())["status"],
            json!({"startTime": "2026-01-01T00:00:00Z", "conditions": [{}, {}]})
        );
        assert!(a.keeps_whole(&["metadata", "labels"]));
        assert!(!a.keeps_whole(&["status"]));
        assert_eq!(a.kept_members(&["status"]), ["conditions", "startTime"]);
        assert!(a.keeps_every_member(&["status", "conditions"]));
        assert!(!a.keeps_every_member(&["status"]));
    }
}
