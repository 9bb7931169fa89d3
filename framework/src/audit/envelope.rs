//! Kubernaut's audit envelope: the fields every Kubernaut service's records share in Data
//! Storage, around the `event_data` each service defines.
//!
//! | field | value |
//! |---|---|
//! | `event_type`, `event_action`, `outcome` | from the service's [`Action`] |
//! | `event_timestamp` | RFC 3339 in UTC with exactly three fractional digits (milliseconds, truncated): `2025-03-01T12:00:00.250Z` |
//! | `event_category`, `actor_type`, `actor_id`, `resource_type` | the [`Action`]'s constants |
//! | `resource_id`, `namespace` | the object's name and namespace |
//! | `correlation_id` | what ties the records of one remediation together, or the object's name when there is none |
//! | `event_data` | the service's own data |
//!
//! Guarantees:
//! 1. The constant fields are not stored in a record, so they cannot be set wrong; field order and
//!    names are the envelope's.
//! 2. An empty correlation id is never written: the object's name takes its place.
use serde::Serialize;

crate::string_enum! {
    /// The envelope's `outcome`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum AuditOutcome {
        /// `success`: the step succeeded (a workflow completed, a clearance took effect).
        Success = "success",
        /// `failure`: the step failed.
        Failure = "failure",
        /// `skipped`: the step was not taken.
        Skipped = "skipped",
        /// `pending`: the step started; its result is not known yet.
        Pending = "pending",
    }
}

/// What a service's audited steps say in the envelope: the constant fields of its records and,
/// per step, `event_type`, `event_action` and `outcome`.
pub trait Action: Copy {
    /// `event_category`.
    const CATEGORY: &'static str;
    /// `actor_type`.
    const ACTOR_TYPE: &'static str;
    /// `actor_id`.
    const ACTOR_ID: &'static str;
    /// `resource_type`.
    const RESOURCE_TYPE: &'static str;

    /// `event_type` (`workflowexecution.workflow.started`).
    fn event_type(self) -> &'static str;
    /// `event_action` (`started`).
    fn event_action(self) -> &'static str;
    /// `outcome`.
    fn outcome(self) -> AuditOutcome;
}

/// One audit record about one object, serialized as Kubernaut's envelope: `event_type`,
/// `event_timestamp`, `event_category`, `event_action`, `outcome`, `actor_type`, `actor_id`,
/// `resource_type`, `resource_id`, `namespace`, `correlation_id`, `event_data`, in that order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord<A, D> {
    /// What happened: `event_type`, `event_action` and `outcome`.
    pub action: A,
    /// When it happened: `event_timestamp`.
    pub timestamp: jiff::Timestamp,
    /// The object's namespace: `namespace`.
    pub namespace: String,
    /// The object's name: `resource_id`.
    pub name: String,
    /// `correlation_id`.
    pub correlation_id: String,
    /// `event_data`.
    pub data: D,
}

impl<A, D> AuditRecord<A, D> {
    /// A record about the object `namespace/name`, stamped now. `correlation` becomes the
    /// correlation id, or the object's name does when it is `None` or empty.
    pub fn new(
        action: A,
        namespace: impl Into<String>,
        name: impl Into<String>,
        correlation: Option<&str>,
        data: D,
    ) -> Self {
        let name = name.into();
        let correlation_id = match correlation {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => name.clone(),
        };
        AuditRecord {
            action,
            timestamp: jiff::Timestamp::now(),
            namespace: namespace.into(),
            name,
            correlation_id,
            data,
        }
    }

    /// The same record stamped `timestamp` instead (replays, tests).
    pub fn at(mut self, timestamp: jiff::Timestamp) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// `event_timestamp`: RFC 3339, UTC, milliseconds (truncated), e.g. `2025-03-01T12:00:00.250Z`.
    pub fn event_timestamp(&self) -> String {
        format!("{:.3}", self.timestamp)
    }
}

impl<A: Action, D: Serialize> AuditRecord<A, D> {
    /// The record as one JSON line (the `log` sink's output and one element of an `http` batch).
    ///
    /// # Errors
    /// When `event_data` cannot be serialized.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// The wire form of an [`AuditRecord`]: field order and names are the envelope's.
#[derive(Serialize)]
struct Envelope<'a, D> {
    event_type: &'static str,
    event_timestamp: String,
    event_category: &'static str,
    event_action: &'static str,
    outcome: &'static str,
    actor_type: &'static str,
    actor_id: &'static str,
    resource_type: &'static str,
    resource_id: &'a str,
    namespace: &'a str,
    correlation_id: &'a str,
    event_data: &'a D,
}

impl<A: Action, D: Serialize> Serialize for AuditRecord<A, D> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Envelope {
            event_type: self.action.event_type(),
            event_timestamp: self.event_timestamp(),
            event_category: A::CATEGORY,
            event_action: self.action.event_action(),
            outcome: self.action.outcome().as_str(),
            actor_type: A::ACTOR_TYPE,
            actor_id: A::ACTOR_ID,
            resource_type: A::RESOURCE_TYPE,
            resource_id: &self.name,
            namespace: &self.namespace,
            correlation_id: &self.correlation_id,
            event_data: &self.data,
        }
        .serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Touched;

    impl Action for Touched {
        const CATEGORY: &'static str = "thing";
        const ACTOR_TYPE: &'static str = "service";
        const ACTOR_ID: &'static str = "thing-controller";
        const RESOURCE_TYPE: &'static str = "Thing";

        fn event_type(self) -> &'static str {
            "thing.touched"
        }
        fn event_action(self) -> &'static str {
            "touched"
        }
        fn outcome(self) -> AuditOutcome {
            AuditOutcome::Success
        }
    }

    #[test]
    fn a_record_serializes_as_the_envelope_in_its_field_order() {
        let at = jiff::Timestamp::new(1_740_830_550, 250_999_999).unwrap();
        let record = AuditRecord::new(Touched, "ns", "thing-1", Some(""), [1]).at(at);
        assert_eq!(
            record.to_json().unwrap(),
            r#"{"event_type":"thing.touched","event_timestamp":"2025-03-01T12:02:30.250Z","event_category":"thing","event_action":"touched","outcome":"success","actor_type":"service","actor_id":"thing-controller","resource_type":"Thing","resource_id":"thing-1","namespace":"ns","correlation_id":"thing-1","event_data":[1]}"#
        );
        let correlated = AuditRecord::new(Touched, "ns", "thing-1", Some("rr-1"), ());
        assert_eq!(correlated.correlation_id, "rr-1");
    }
}
