//! A child read through its status mapping once per reconcile, and the facts of its failure.
//!
//! [`StatusMapping::read`] evaluates the child's `phase` and `fields`; once its grandchildren have
//! been found (the [`super::grandchildren`] functions, or a cache),
//! [`StatusMapping::read_grandchildren`] walks them in the child's order
//! ([`StatusMapping::grandchild_order`]) a single time and keeps what an operator needs to
//! report: how many there are and how many finished, whether work ran in any, the first one
//! that failed with its fields and facts ([`FailedGrandchild`]), and the first one held back
//! ([`Held`], its message naming the grandchild's kind and name).
//!
//! Operators deserialize the evaluated fields into their own types ([`fields_as`], with the
//! lenient field deserializers of [`super::lenient`]) and classify the facts of a failure
//! ([`Reading::failure_facts`]) with the mapping's `classify` rules: what the facts and results
//! *mean* is theirs.
//!
//! # Guarantees
//!
//! 1. Pure: the same child and grandchildren always give the same reading.
//! 2. Grandchildren the child names but that were not found are skipped when looking for the
//!    failed or held one, and are counted (they exist, or existed) in
//!    [`GrandchildrenReading::count`].
//! 3. Without a `grandchildren` section the mapping cannot say whether the child's work ran
//!    before it failed or went away, so it counts as having run ([`StatusMapping::work_ran`]).
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Held, StatusMapping, scalar_text};

/// A child's `phase` and `fields` as its mapping reads them, and (once added) what its
/// grandchildren say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// The `then` of the first phase rule that matches, if any matches.
    pub phase: Option<String>,
    /// The child's fields ([`StatusMapping::fields`]).
    pub fields: BTreeMap<String, Value>,
    /// What its grandchildren say, when they were read ([`StatusMapping::read_grandchildren`]).
    pub grandchildren: Option<GrandchildrenReading>,
}

/// What the grandchildren of one child say, read once ([`StatusMapping::read_grandchildren`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrandchildrenReading {
    /// How many the child has in its order: every name it lists (found or not), or every one
    /// found by its owner label.
    pub count: usize,
    /// How many of those found have finished (`grandchildren.finished`).
    pub finished: usize,
    /// Whether work ran in any of those given (`grandchildren.ran`; always true without a
    /// `grandchildren` section, see [`StatusMapping::work_ran`]).
    pub work_ran: bool,
    /// The first, in order, that failed (`grandchildren.failed`).
    pub first_failed: Option<FailedGrandchild>,
    /// The first, in order, that is held back (`grandchildren.held`), its message prefixed with
    /// the grandchild's kind and name.
    pub held: Option<Held>,
}

/// The first failed grandchild of a child, with its fields and facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedGrandchild {
    /// Its name.
    pub name: String,
    /// Its position in the child's order.
    pub index: u32,
    /// Its `grandchildren.fields` ([`StatusMapping::grandchild_fields`]).
    pub fields: BTreeMap<String, Value>,
    /// Its `grandchildren.facts` ([`StatusMapping::grandchild_facts`]): every declared fact,
    /// present even when it selects nothing.
    pub facts: BTreeMap<String, Vec<String>>,
}

impl FailedGrandchild {
    /// The first value of fact `name`, if it has one.
    pub fn first_fact(&self, name: &str) -> Option<&str> {
        self.facts.get(name)?.first().map(String::as_str)
    }
}

/// Deserializes evaluated fields (a [`Reading`]'s or a [`FailedGrandchild`]'s) into an operator's
/// own type. Give every field of `T` a lenient deserializer ([`super::lenient`]) and a default:
/// a field of the wrong shape is then absent rather than an error. Should `T` still refuse the
/// fields, its default is returned.
pub fn fields_as<T: DeserializeOwned + Default>(fields: &BTreeMap<String, Value>) -> T {
    let object = fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    serde_json::from_value(Value::Object(object)).unwrap_or_default()
}

impl StatusMapping {
    /// Reads `child` (its phase and fields) once; add its grandchildren with
    /// [`Self::read_grandchildren`].
    pub fn read(&self, child: &Value) -> Reading {
        Reading {
            phase: self.phase(child).map(str::to_owned),
            fields: self.fields(child),
            grandchildren: None,
        }
    }

    /// Reads the grandchildren `found` of `child` (whole objects by name, `metadata` included),
    /// walking them once in the child's order.
    pub fn read_grandchildren(
        &self,
        child: &Value,
        found: &BTreeMap<String, Value>,
    ) -> GrandchildrenReading {
        let order = self.grandchild_order(child, found);
        let mut reading = GrandchildrenReading {
            count: order.len(),
            work_ran: self.work_ran(found),
            ..GrandchildrenReading::default()
        };
        for (index, name) in order {
            let Some(grandchild) = found.get(&name) else {
                continue;
            };
            if self.grandchild_finished(grandchild) {
                reading.finished += 1;
            }
            if reading.held.is_none() {
                reading.held = self.held_message(&name, grandchild);
            }
            if reading.first_failed.is_none() && self.grandchild_failed(grandchild) {
                reading.first_failed = Some(FailedGrandchild {
                    fields: self.grandchild_fields(grandchild),
                    facts: self.grandchild_facts(grandchild),
                    name,
                    index,
                });
            }
        }
        reading
    }

    /// The first of the grandchildren `found` of `child`, in its order, that is held back
    /// ([`Self::grandchild_held`]), its message naming it by kind and name. Cheaper than
    /// [`Self::read_grandchildren`] when nothing else is wanted.
    pub fn first_held(&self, child: &Value, found: &BTreeMap<String, Value>) -> Option<Held> {
        self.grandchild_order(child, found)
            .into_iter()
            .find_map(|(_, name)| self.held_message(&name, found.get(&name)?))
    }

    /// Whether work ran in any of `grandchildren` (`grandchildren.ran`). A mapping without a
    /// `grandchildren` section cannot tell, so for it the work counts as having run.
    pub fn work_ran(&self, grandchildren: &BTreeMap<String, Value>) -> bool {
        !self.reads_grandchildren() || grandchildren.values().any(|g| self.grandchild_ran(g))
    }

    fn held_message(&self, name: &str, grandchild: &Value) -> Option<Held> {
        let held = self.grandchild_held(grandchild)?;
        let kind = &self.grandchild_kind()?.kind;
        let message = match held.message {
            Some(message) => format!("{kind} {name}: {message}"),
            None => format!("{kind} {name} is held back"),
        };
        Some(Held {
            result: held.result,
            message: Some(message),
        })
    }
}

impl Reading {
    /// The first failed grandchild, when the grandchildren were read and one failed.
    pub fn first_failed(&self) -> Option<&FailedGrandchild> {
        self.grandchildren.as_ref()?.first_failed.as_ref()
    }

    /// The facts a classification sees for a failed child: each of `fields` as a fact of the
    /// same name (the child's value, then the first failed grandchild's, as text; empty values
    /// left out), the failed grandchild's name as fact `name_fact`, and every fact it declares.
    /// Every one of them is present, possibly with no values, so `all` rules see them.
    pub fn failure_facts(&self, fields: &[&str], name_fact: &str) -> BTreeMap<String, Vec<String>> {
        let failed = self.first_failed();
        let mut facts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut push = |fact: &str, value: Option<String>| {
            let values = facts.entry(fact.to_owned()).or_default();
            values.extend(value.filter(|v| !v.is_empty()));
        };
        for field in fields {
            push(field, self.fields.get(*field).and_then(scalar_text));
        }
        push(name_fact, failed.map(|f| f.name.clone()));
        let Some(failed) = failed else {
            return facts;
        };
        for field in fields {
            push(field, failed.fields.get(*field).and_then(scalar_text));
        }
        for (fact, values) in &failed.facts {
            push(fact, None);
            for value in values {
                push(fact, Some(value.clone()));
            }
        }
        facts
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::status::MappingRules;

    const MAPPING: &str = r#"
child: {apiVersion: example.com/v1, kind: Run}
phase:
  - when: "$.status.failed"
    then: Failed
  - then: Running
fields:
  reason: "$.status.reason"
  total:  {count: "$.status.parts[*]"}
classify:
  - {result: Broken, all: {reason: ["*"], failedPart: ["*"], exitCode: ["*"]}}
grandchildren:
  child: {apiVersion: example.com/v1, kind: Part}
  names: "$.status.parts[*]"
  finished: "$.status.done"
  failed: "$.status.failed"
  fields:
    reason: "$.status.reason"
  ran: ["$.status.started"]
  held:
    - when: "$.status.quota"
      result: Quota
      message: "$.status.message"
  facts:
    exitCode: "$.status.codes[*]"
"#;

    fn rules() -> MappingRules {
        MappingRules {
            phases: vec!["Running".to_owned(), "Failed".to_owned()],
            results: vec!["Broken".to_owned(), "Quota".to_owned()],
            ..MappingRules::default()
        }
    }

    fn mapping() -> StatusMapping {
        StatusMapping::from_yaml(MAPPING, &rules()).unwrap()
    }

    fn part(name: &str, status: Value) -> (String, Value) {
        (
            name.to_owned(),
            json!({"metadata": {"name": name}, "status": status}),
        )
    }

    /// One walk in the child's order: the missing grandchild counts but is skipped, the first
    /// failed one (not the alphabetically first) carries its fields and facts, and the held one
    /// is named by kind and name.
    #[test]
    fn grandchildren_are_read_once_in_the_childs_order() {
        let mapping = mapping();
        let run = json!({"status": {"failed": true, "reason": "PartFailed",
                                    "parts": ["c", "gone", "b", "a"]}});
        let found = BTreeMap::from([
            part(
                "a",
                json!({"done": 1, "failed": 1, "reason": "Late", "started": 1}),
            ),
            part(
                "b",
                json!({"done": 1, "failed": 1, "reason": "Early", "codes": [3, 4]}),
            ),
            part("c", json!({"quota": 1, "message": "exceeded"})),
        ]);
        let mut reading = mapping.read(&run);
        assert_eq!(reading.phase.as_deref(), Some("Failed"));
        assert_eq!(reading.fields["total"], 4);
        assert_eq!(reading.first_failed(), None, "grandchildren not read yet");
        reading.grandchildren = Some(mapping.read_grandchildren(&run, &found));
        let grandchildren = reading.grandchildren.as_ref().unwrap();
        assert_eq!((grandchildren.count, grandchildren.finished), (4, 2));
        assert!(grandchildren.work_ran);
        let failed = reading.first_failed().unwrap();
        assert_eq!((failed.name.as_str(), failed.index), ("b", 2));
        assert_eq!(failed.first_fact("exitCode"), Some("3"));
        assert_eq!(failed.fields["reason"], "Early");
        let held = Held {
            result: "Quota".to_owned(),
            message: Some("Part c: exceeded".to_owned()),
        };
        assert_eq!(grandchildren.held.as_ref(), Some(&held));
        assert_eq!(mapping.first_held(&run, &found), Some(held));

        let facts = reading.failure_facts(&["reason", "message"], "failedPart");
        assert_eq!(facts["reason"], ["PartFailed", "Early"]);
        assert!(facts["message"].is_empty(), "declared, so present");
        assert_eq!(facts["failedPart"], ["b"]);
        assert_eq!(facts["exitCode"], ["3", "4"]);
        assert_eq!(mapping.classify(&facts), Some("Broken"));
    }

    /// Work ran when a grandchild says so; a mapping without grandchildren cannot tell and
    /// counts it as run; without a failed grandchild the facts are the child's alone.
    #[test]
    fn work_ran_and_the_facts_without_a_failed_grandchild() {
        let mapping = mapping();
        let run = json!({"status": {"reason": "Stopped", "parts": ["a"]}});
        let idle = BTreeMap::from([part("a", json!({"waiting": true}))]);
        assert!(!mapping.work_ran(&idle));
        assert!(!mapping.work_ran(&BTreeMap::new()));
        let mut reading = mapping.read(&run);
        reading.grandchildren = Some(mapping.read_grandchildren(&run, &idle));
        assert_eq!(reading.grandchildren.as_ref().unwrap().held, None);
        let facts = reading.failure_facts(&["reason"], "failedPart");
        assert_eq!(facts["reason"], ["Stopped"]);
        assert!(facts["failedPart"].is_empty());
        assert_eq!(facts.len(), 2);

        let head = MAPPING.split("\ngrandchildren:").next().unwrap();
        let without = StatusMapping::from_yaml(head, &rules()).unwrap();
        assert!(without.work_ran(&BTreeMap::new()));
        assert_eq!(without.first_held(&run, &idle), None);
    }

    /// Evaluated fields deserialize into an operator's own type; a type that refuses them
    /// gives its default.
    #[test]
    fn fields_deserialize_into_the_operators_type_or_its_default() {
        #[derive(Debug, Default, PartialEq, serde::Deserialize)]
        struct Fields {
            reason: Option<String>,
            total: Option<u32>,
        }
        let fields = mapping()
            .read(&json!({"status": {"reason": "R", "parts": [1, 2]}}))
            .fields;
        assert_eq!(
            fields_as::<Fields>(&fields),
            Fields {
                reason: Some("R".to_owned()),
                total: Some(2),
            }
        );
        let wrong = BTreeMap::from([("reason".to_owned(), json!(5))]);
        assert_eq!(fields_as::<Fields>(&wrong), Fields::default());
    }
}
