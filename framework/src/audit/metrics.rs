//! The sink's counters, named with the operator's prefix.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

use super::DropReason;
use crate::metrics::{MetricError, Registrar};

/// The four series of one sink: `<prefix>_audit_events_buffered`,
/// `<prefix>_audit_events_written_total`, `<prefix>_audit_events_dropped_total{reason}` and
/// `<prefix>_audit_batches_failed_total`.
#[derive(Clone)]
pub(crate) struct AuditMetrics {
    pub(crate) buffered: IntGauge,
    pub(crate) written: IntCounter,
    dropped: IntCounterVec,
    pub(crate) batches_failed: IntCounter,
}

impl AuditMetrics {
    /// Registers the series on `registry`, every drop reason at 0.
    pub(crate) fn register(prefix: &str, registry: &Registry) -> Result<AuditMetrics, MetricError> {
        let audit = Registrar::new(registry, prefix);
        let metrics = AuditMetrics {
            buffered: audit.gauge(
                "audit_events_buffered",
                "Audit events accepted by the sink and not yet written or dropped.",
            )?,
            written: audit.counter(
                "audit_events_written_total",
                "Audit events written (accepted by Data Storage, or logged).",
            )?,
            dropped: audit.counter_vec(
                "audit_events_dropped_total",
                "Audit events dropped, by reason.",
                &["reason"],
            )?,
            batches_failed: audit.counter(
                "audit_batches_failed_total",
                "Audit batches that were not delivered (rejected, undeliverable, or cut off by shutdown).",
            )?,
        };
        for reason in DropReason::ALL {
            metrics.dropped.with_label_values(&[reason.as_str()]);
        }
        Ok(metrics)
    }

    /// Counts `events` dropped for `reason`.
    pub(crate) fn dropped(&self, reason: DropReason, events: usize) {
        self.dropped
            .with_label_values(&[reason.as_str()])
            .inc_by(events as u64);
    }
}
