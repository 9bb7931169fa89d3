//! Audit records of WorkflowExecution decisions: what a record says. The framework's
//! [`kubernaut_framework::audit`] module carries them (the `log` and `http` sinks, batching,
//! retries, drop accounting, TLS and bearer-token authentication).
//!
//! The reconciler builds one [`AuditEvent`] per audited step — a workflow started, completed,
//! failed or was skipped, or an execution block was cleared — and hands it to
//! [`Auditor::record`](kubernaut_framework::audit::Auditor::record). An event serializes to
//! Kubernaut's audit envelope:
//!
//! | field | value |
//! |---|---|
//! | `event_type` | `workflowexecution.workflow.started` · `.completed` · `.failed` · `.skipped`, or `workflowexecution.block.cleared` |
//! | `event_timestamp` | RFC 3339 in UTC with exactly three fractional digits (milliseconds, truncated): `2025-03-01T12:00:00.250Z` |
//! | `event_category` | `workflow` |
//! | `event_action` | `started` · `completed` · `failed` · `skipped` · `cleared` |
//! | `outcome` | see [`AuditOutcome`]: started → `pending` (the run's result is not known yet), completed → `success`, failed → `failure`, skipped → `skipped`, cleared → `success` (the clearance took effect) |
//! | `actor_type`, `actor_id` | `service`, `workflowexecution-controller` |
//! | `resource_type`, `resource_id` | `WorkflowExecution`, the WFE's **name** (its namespace is the `namespace` field; Kubernaut's own controller and queries identify WFEs by name) |
//! | `namespace` | the WFE's namespace |
//! | `correlation_id` | `spec.remediationRequestRef.name`, or the WFE's name when that is unset or empty |
//! | `event_data` | [`AuditData`]: `workflow_id`, `target_resource`, `phase`, `container_image`, `execution_name`, `pipelinerun_name`, `started_at`, `completed_at`, `duration`, `failure_reason`, `failure_message`, `failed_task_name`, `skip_reason`, `skip_message`; a field without a value is **omitted**, never `null` |
//!
//! The sink's metrics carry the prefix [`METRIC_PREFIX`]:
//! `workflowexecution_audit_events_buffered`, `workflowexecution_audit_events_written_total`,
//! `workflowexecution_audit_events_dropped_total{reason}` and
//! `workflowexecution_audit_batches_failed_total`.

use kubernaut_framework::audit::{Action, AuditRecord, Producer};
use prometheus::Registry;
use serde::Serialize;

pub use kubernaut_framework::audit::{AuditError, AuditOutcome};

/// The sink the reconciler records to, carrying [`AuditEvent`]s.
pub type Auditor = kubernaut_framework::audit::Auditor<AuditEvent>;

/// One audit record about one WorkflowExecution, in Kubernaut's envelope (the [module
/// documentation](self) lists its fields). `remediation_request` (the second-to-last argument
/// of [`AuditRecord::new`]) is `spec.remediationRequestRef.name`.
pub type AuditEvent = AuditRecord<AuditAction, AuditData>;

/// The first part of the audit sink's metric names (`workflowexecution_audit_…`).
pub const METRIC_PREFIX: &str = "workflowexecution";

/// Starts the sink `settings` name, its metrics on `registry` under [`METRIC_PREFIX`], its
/// requests identified as `workflowexecution-controller/<version>`.
pub fn start(
    settings: &kubernaut_framework::audit::AuditSettings,
    registry: &Registry,
) -> Result<Auditor, AuditError> {
    let user_agent = concat!("workflowexecution-controller/", env!("CARGO_PKG_VERSION"));
    let producer = Producer {
        metric_prefix: METRIC_PREFIX,
        user_agent,
    };
    Auditor::new(settings, &producer, registry)
}

kubernaut_framework::string_enum! {
    /// What happened to a WorkflowExecution: the audited steps. The name is the envelope's
    /// `event_action` (`started`, `cleared`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum AuditAction {
        /// The PipelineRun was created (or adopted) and the WFE is `Running`.
        Started = "started",
        /// The PipelineRun succeeded and the WFE is `Completed`.
        Completed = "completed",
        /// The WFE is `Failed` (before or during execution).
        Failed = "failed",
        /// The WFE is `Skipped` (lock held, cooldown, backoff, previous execution failure).
        Skipped = "skipped",
        /// The execution block of a failed WFE was cleared by annotation.
        BlockCleared = "cleared",
    }
}

impl Action for AuditAction {
    const CATEGORY: &'static str = "workflow";
    const ACTOR_TYPE: &'static str = "service";
    const ACTOR_ID: &'static str = "workflowexecution-controller";
    const RESOURCE_TYPE: &'static str = "WorkflowExecution";

    /// `workflowexecution.workflow.started`, …, `workflowexecution.block.cleared`.
    fn event_type(self) -> &'static str {
        match self {
            AuditAction::Started => "workflowexecution.workflow.started",
            AuditAction::Completed => "workflowexecution.workflow.completed",
            AuditAction::Failed => "workflowexecution.workflow.failed",
            AuditAction::Skipped => "workflowexecution.workflow.skipped",
            AuditAction::BlockCleared => "workflowexecution.block.cleared",
        }
    }

    fn event_action(self) -> &'static str {
        self.as_str()
    }

    /// Started → `pending` (the run's result is not known yet), completed and cleared →
    /// `success`, failed → `failure`, skipped → `skipped`.
    fn outcome(self) -> AuditOutcome {
        match self {
            AuditAction::Started => AuditOutcome::Pending,
            AuditAction::Completed | AuditAction::BlockCleared => AuditOutcome::Success,
            AuditAction::Failed => AuditOutcome::Failure,
            AuditAction::Skipped => AuditOutcome::Skipped,
        }
    }
}

kubernaut_framework::api_struct! {
    /// The envelope's `event_data`. Every field is optional; a `None` field is left out of the JSON.
    /// Times are RFC 3339 strings as in the WFE's status, `duration` as in `status.duration`
    /// (`2m30s`).
    #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
    pub struct AuditData {
        /// `spec.workflowRef.workflowId`.
        pub workflow_id: Option<String>,
        /// `spec.targetResource`.
        pub target_resource: Option<String>,
        /// The WFE's phase after the audited step (`Running`, `Completed`, `Failed`, `Skipped`).
        pub phase: Option<String>,
        /// `spec.workflowRef.containerImage` (the Tekton bundle).
        pub container_image: Option<String>,
        /// The WFE's name.
        pub execution_name: Option<String>,
        /// The PipelineRun's name.
        pub pipelinerun_name: Option<String>,
        /// `status.startTime`.
        pub started_at: Option<String>,
        /// `status.completionTime`.
        pub completed_at: Option<String>,
        /// `status.duration`.
        pub duration: Option<String>,
        /// `status.failureDetails.reason`.
        pub failure_reason: Option<String>,
        /// `status.failureDetails.message`.
        pub failure_message: Option<String>,
        /// `status.failureDetails.failedTaskName`.
        pub failed_task_name: Option<String>,
        /// `status.skipDetails.reason`.
        pub skip_reason: Option<String>,
        /// `status.skipDetails.message`.
        pub skip_message: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    use kubernaut_framework::audit::{AuditSettings, DropReason};

    fn ts(second: i64, nanosecond: i32) -> jiff::Timestamp {
        jiff::Timestamp::new(second, nanosecond).unwrap()
    }

    fn full_data() -> AuditData {
        AuditData {
            workflow_id: Some("restart-deployment".into()),
            target_resource: Some("payment/deployment/payment-api".into()),
            phase: Some("Failed".into()),
            container_image: Some("registry.example/kubernaut/workflows:restart@sha256:abc".into()),
            execution_name: Some("wfe-1".into()),
            pipelinerun_name: Some("wfe-cf0cc089293b1165".into()),
            started_at: Some("2025-03-01T12:00:00Z".into()),
            completed_at: Some("2025-03-01T12:02:30Z".into()),
            duration: Some("2m30s".into()),
            failure_reason: Some("OOMKilled".into()),
            failure_message: Some("step \"restart\" was OOM killed".into()),
            failed_task_name: Some("wfe-cf0cc089293b1165-restart".into()),
            skip_reason: Some("ResourceBusy".into()),
            skip_message: Some("another workflow runs on the target".into()),
        }
    }

    /// An event whose `execution_name` tells events apart in batches.
    fn numbered(i: usize) -> AuditEvent {
        AuditEvent::new(
            AuditAction::Started,
            "payment",
            format!("wfe-{i}"),
            Some("rr-1"),
            AuditData {
                execution_name: Some(format!("e{i}")),
                ..AuditData::default()
            },
        )
    }

    #[test]
    fn envelope_golden() {
        let event = AuditEvent::new(
            AuditAction::Failed,
            "payment",
            "wfe-1",
            Some("rr-42"),
            full_data(),
        )
        .at(ts(1_740_830_550, 250_999_999));
        let golden = r#"{
  "event_type": "workflowexecution.workflow.failed",
  "event_timestamp": "2025-03-01T12:02:30.250Z",
  "event_category": "workflow",
  "event_action": "failed",
  "outcome": "failure",
  "actor_type": "service",
  "actor_id": "workflowexecution-controller",
  "resource_type": "WorkflowExecution",
  "resource_id": "wfe-1",
  "namespace": "payment",
  "correlation_id": "rr-42",
  "event_data": {
    "workflow_id": "restart-deployment",
    "target_resource": "payment/deployment/payment-api",
    "phase": "Failed",
    "container_image": "registry.example/kubernaut/workflows:restart@sha256:abc",
    "execution_name": "wfe-1",
    "pipelinerun_name": "wfe-cf0cc089293b1165",
    "started_at": "2025-03-01T12:00:00Z",
    "completed_at": "2025-03-01T12:02:30Z",
    "duration": "2m30s",
    "failure_reason": "OOMKilled",
    "failure_message": "step \"restart\" was OOM killed",
    "failed_task_name": "wfe-cf0cc089293b1165-restart",
    "skip_reason": "ResourceBusy",
    "skip_message": "another workflow runs on the target"
  }
}"#;
        assert_eq!(serde_json::to_string_pretty(&event).unwrap(), golden);
        // The log line is the same document on one line.
        let line = event.to_json().unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            serde_json::from_str::<serde_json::Value>(golden).unwrap()
        );
    }

    #[test]
    fn actions_map_to_type_action_and_outcome() {
        let cases = [
            (
                AuditAction::Started,
                "workflowexecution.workflow.started",
                "started",
                "pending",
            ),
            (
                AuditAction::Completed,
                "workflowexecution.workflow.completed",
                "completed",
                "success",
            ),
            (
                AuditAction::Failed,
                "workflowexecution.workflow.failed",
                "failed",
                "failure",
            ),
            (
                AuditAction::Skipped,
                "workflowexecution.workflow.skipped",
                "skipped",
                "skipped",
            ),
            (
                AuditAction::BlockCleared,
                "workflowexecution.block.cleared",
                "cleared",
                "success",
            ),
        ];
        assert_eq!(cases.len(), AuditAction::ALL.len());
        for (action, event_type, event_action, outcome) in cases {
            let json = serde_json::to_value(AuditEvent::new(
                action,
                "ns",
                "wfe",
                None,
                AuditData::default(),
            ))
            .unwrap();
            assert_eq!(json["event_type"], event_type, "{action:?}");
            assert_eq!(json["event_action"], event_action, "{action:?}");
            assert_eq!(json["outcome"], outcome, "{action:?}");
            assert_eq!(json["event_category"], "workflow", "{action:?}");
        }
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let cases = [
            (ts(1_740_830_400, 0), "2025-03-01T12:00:00.000Z"),
            (ts(1_740_830_400, 1_000_000), "2025-03-01T12:00:00.001Z"),
            (ts(1_740_830_400, 123_456_789), "2025-03-01T12:00:00.123Z"),
            (ts(1_740_830_400, 999_999_999), "2025-03-01T12:00:00.999Z"),
            (ts(0, 0), "1970-01-01T00:00:00.000Z"),
        ];
        for (timestamp, expected) in cases {
            let event = numbered(0).at(timestamp);
            assert_eq!(event.event_timestamp(), expected);
            assert_eq!(
                serde_json::to_value(&event).unwrap()["event_timestamp"],
                expected
            );
        }
        // A fresh event is stamped now and parses back as RFC 3339.
        let before = jiff::Timestamp::now();
        let stamped: jiff::Timestamp = numbered(0).event_timestamp().parse().unwrap();
        assert!(stamped.as_millisecond() >= before.as_millisecond());
    }

    #[test]
    fn correlation_id_falls_back_to_the_wfe_name() {
        let cases = [(Some("rr-7"), "rr-7"), (None, "wfe-9"), (Some(""), "wfe-9")];
        for (request, expected) in cases {
            let event = AuditEvent::new(
                AuditAction::Started,
                "ns",
                "wfe-9",
                request,
                AuditData::default(),
            );
            assert_eq!(event.correlation_id, expected, "{request:?}");
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["correlation_id"], expected);
            assert_eq!(json["resource_id"], "wfe-9");
        }
    }

    #[test]
    fn absent_event_data_fields_are_omitted() {
        let event = AuditEvent::new(
            AuditAction::Skipped,
            "ns",
            "wfe",
            None,
            AuditData {
                workflow_id: Some("w".into()),
                skip_reason: Some("ResourceBusy".into()),
                ..AuditData::default()
            },
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["event_data"],
            serde_json::json!({"workflow_id": "w", "skip_reason": "ResourceBusy"})
        );
        let empty = serde_json::to_value(AuditEvent::new(
            AuditAction::Started,
            "ns",
            "wfe",
            None,
            AuditData::default(),
        ))
        .unwrap();
        assert_eq!(empty["event_data"], serde_json::json!({}));
    }

    #[test]
    fn the_sinks_metrics_keep_the_contracts_names() {
        let registry = Registry::new();
        let _auditor = start(&AuditSettings::default(), &registry).unwrap();
        let families = registry.gather();
        let names: BTreeSet<&str> = families.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "workflowexecution_audit_batches_failed_total",
                "workflowexecution_audit_events_buffered",
                "workflowexecution_audit_events_dropped_total",
                "workflowexecution_audit_events_written_total",
            ])
        );
        let reasons: BTreeSet<&str> = families
            .iter()
            .filter(|f| f.name() == "workflowexecution_audit_events_dropped_total")
            .flat_map(|f| f.get_metric())
            .flat_map(|m| m.get_label())
            .map(|l| l.value())
            .collect();
        assert_eq!(
            reasons,
            BTreeSet::from(DropReason::ALL.map(DropReason::as_str))
        );
    }
}
