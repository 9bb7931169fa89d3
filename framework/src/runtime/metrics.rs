//! The framework's Prometheus metrics and the `/metrics` text encoding.
//!
//! Every [`Operator`](super::Operator) owns one [`prometheus::Registry`]; the framework registers
//! the metrics below in it, and an operator registers its own metrics in the same registry
//! (reachable from the reconcile [`Context`](super::Context)), so one `/metrics` endpoint serves both.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `framework_reconciles_total` | counter | `result` = `success` \| `error` |
//! | `framework_reconcile_duration_seconds` | histogram | – |
//! | `framework_reconcile_errors_total` | counter | `kind` = [`MetricLabel::metric_label`] of the error |
//! | `reconcile_error_backoff_objects` | gauge | – (objects in error backoff; owned by [`crate::backoff::ErrorBackoff`]) |
//! | `framework_reconciles_queued` | gauge | – (triggered reconciles waiting for a free slot, first come first served) |
//! | `framework_reconcile_queue_seconds` | histogram | – (how long a triggered reconcile waited for its slot) |
//! | `framework_reconciles_held_total` | counter | – (reconciles of objects in error backoff held back until their attempt is due) |
//! | `framework_own_write_waits_total` | counter | `outcome` = `caught_up` \| `timed_out` (reconciles handed a cached copy older than this process's own write, which waited for the newer one) |
//! | `framework_own_write_wait_seconds` | histogram | – (how long those that caught up waited) |
//! | `framework_decode_errors_total` | counter | – (watched objects that failed to deserialize) |
//! | `framework_template_reloads_total` | counter | `outcome` = `loaded` \| `rejected` |
//! | `framework_leader` | gauge | – (1 while this replica holds the Lease) |
//!
//! Plus the `process_*` metrics (RSS, CPU, open fds) on Linux.
//!
//! # Guarantees
//! 1. Every label value is drawn from a bounded set: results and outcomes are fixed strings and
//!    error kinds are `&'static str` chosen by the operator's error type, never free text.
//!
//! # Caveats
//! 1. A metric name can be registered once per registry: an operator must not register metrics
//!    with the names above.

use std::time::Duration;

use prometheus::{Encoder, Histogram, IntCounter, IntCounterVec, IntGauge, Registry, TextEncoder};

use crate::metrics::{MetricError, Registrar};

/// A bounded, low-cardinality name for an error kind, used as the `kind` label of
/// `framework_reconcile_errors_total`.
///
/// Implement it on the operator's reconcile error enum with one constant string per variant
/// (`Error::Kube(_) => "kube"`, `Error::Template(_) => "template"`, ...). Never derive the label from
/// the error message: every distinct label value is a new time series.
pub trait MetricLabel {
    /// The label value for this error kind.
    fn metric_label(&self) -> &'static str;
}

impl MetricLabel for kube::Error {
    fn metric_label(&self) -> &'static str {
        "kube"
    }
}

impl MetricLabel for std::convert::Infallible {
    fn metric_label(&self) -> &'static str {
        match *self {}
    }
}

/// The `result` label value of a successful reconcile.
pub const RESULT_SUCCESS: &str = "success";
/// The `result` label value of a failed reconcile.
pub const RESULT_ERROR: &str = "error";
/// The `kind` label value of a reconcile that panicked.
pub const KIND_PANIC: &str = "panic";
/// The `outcome` label value of a reconcile whose outdated copy was replaced by the newer one.
pub const OUTCOME_CAUGHT_UP: &str = "caught_up";
/// The `outcome` label value of a reconcile whose copy was still outdated when the wait ended.
pub const OUTCOME_TIMED_OUT: &str = "timed_out";
/// The `outcome` label value of a template set that was loaded by a hot reload.
pub const OUTCOME_LOADED: &str = "loaded";
/// The `outcome` label value of a template set that a hot reload rejected.
pub const OUTCOME_REJECTED: &str = "rejected";

/// Handles to the framework's metrics, registered in one [`Registry`].
///
/// Cheap to clone (every field is a shared handle).
#[derive(Clone, Debug)]
pub struct FrameworkMetrics {
    /// `framework_reconciles_total{result}`.
    pub reconciles: IntCounterVec,
    /// `framework_reconcile_duration_seconds`.
    pub reconcile_duration: Histogram,
    /// `framework_reconcile_errors_total{kind}`.
    pub reconcile_errors: IntCounterVec,
    /// `framework_reconciles_queued`.
    pub reconciles_queued: IntGauge,
    /// `framework_reconcile_queue_seconds`.
    pub reconcile_queue_wait: Histogram,
    /// `framework_reconciles_held_total`.
    pub reconciles_held: IntCounter,
    /// `framework_own_write_waits_total{outcome}`.
    pub own_write_waits: IntCounterVec,
    /// `framework_own_write_wait_seconds`.
    pub own_write_wait: Histogram,
    /// `framework_decode_errors_total`.
    pub decode_errors: IntCounter,
    /// `framework_template_reloads_total{outcome}`.
    pub template_reloads: IntCounterVec,
    /// `framework_leader`.
    pub leader: IntGauge,
}

impl FrameworkMetrics {
    /// Creates the framework metrics and registers them (and, on Linux, the process collector) in
    /// `registry`.
    ///
    /// # Errors
    /// A [`MetricError`] when a metric of the same name is already registered there.
    pub fn register(registry: &Registry) -> Result<Self, MetricError> {
        let framework = Registrar::new(registry, "framework");
        let metrics = Self {
            reconciles: framework.counter_vec("reconciles_total", "Reconciles by result.", &["result"])?,
            reconcile_duration: framework.histogram(
                "reconcile_duration_seconds",
                "Duration of one reconcile call.",
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            )?,
            reconcile_errors: framework.counter_vec(
                "reconcile_errors_total",
                "Failed reconciles by error kind.",
                &["kind"],
            )?,
            reconciles_queued: framework.gauge(
                "reconciles_queued",
                "Triggered reconciles waiting for a free slot (they get one first come, first served).",
            )?,
            reconcile_queue_wait: framework.histogram(
                "reconcile_queue_seconds",
                "How long a triggered reconcile waited for a free slot.",
                &[0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            )?,
            reconciles_held: framework.counter(
                "reconciles_held_total",
                "Reconciles of objects in error backoff held back until the next attempt is due, because nothing a reconcile reads had changed.",
            )?,
            own_write_waits: framework.counter_vec(
                "own_write_waits_total",
                "Reconciles handed a cached copy older than this process's own write, by how the wait for the newer copy ended.",
                &["outcome"],
            )?,
            own_write_wait: framework.histogram(
                "own_write_wait_seconds",
                "How long a reconcile handed an outdated copy waited for the watch event of this process's own write.",
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
            )?,
            decode_errors: framework.counter(
                "decode_errors_total",
                "Watched objects that could not be deserialized and were skipped.",
            )?,
            template_reloads: framework.counter_vec(
                "template_reloads_total",
                "Template hot reloads by outcome (loaded or rejected).",
                &["outcome"],
            )?,
            leader: framework.gauge(
                "leader",
                "1 while this replica holds the leader Lease and reconciles, else 0.",
            )?,
        };
        #[cfg(target_os = "linux")]
        framework.collector(
            "process",
            prometheus::process_collector::ProcessCollector::for_self(),
        )?;

        // Pre-create the fixed label values so a scrape shows them at 0 before the first event.
        for result in [RESULT_SUCCESS, RESULT_ERROR] {
            metrics.reconciles.with_label_values(&[result]);
        }
        for outcome in [OUTCOME_LOADED, OUTCOME_REJECTED] {
            metrics.template_reloads.with_label_values(&[outcome]);
        }
        for outcome in [OUTCOME_CAUGHT_UP, OUTCOME_TIMED_OUT] {
            metrics.own_write_waits.with_label_values(&[outcome]);
        }
        Ok(metrics)
    }

    /// Records one finished reconcile: its duration, its result and, for a failure, its error kind.
    pub fn observe_reconcile(&self, elapsed: Duration, error_kind: Option<&'static str>) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        match error_kind {
            None => self.reconciles.with_label_values(&[RESULT_SUCCESS]).inc(),
            Some(kind) => {
                self.reconciles.with_label_values(&[RESULT_ERROR]).inc();
                self.reconcile_errors.with_label_values(&[kind]).inc();
            }
        }
    }
}

/// Encodes every metric of `registry` in the Prometheus text exposition format.
///
/// # Errors
/// A [`prometheus::Error`] when a collector produced an invalid metric family.
pub fn encode_text(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    String::from_utf8(buffer).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// The `Content-Type` of [`encode_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_framework_metric_once() {
        let registry = Registry::new();
        let metrics = FrameworkMetrics::register(&registry).unwrap();
        metrics.observe_reconcile(Duration::from_millis(3), None);
        metrics.observe_reconcile(Duration::from_millis(7), Some("kube"));
        metrics.decode_errors.inc();
        metrics.leader.set(1);
        let text = encode_text(&registry).unwrap();
        for line in [
            "framework_reconciles_total{result=\"success\"} 1",
            "framework_reconciles_total{result=\"error\"} 1",
            "framework_reconcile_errors_total{kind=\"kube\"} 1",
            "framework_reconcile_duration_seconds_count 2",
            "framework_decode_errors_total 1",
            "framework_reconciles_held_total 0",
            "framework_template_reloads_total{outcome=\"loaded\"} 0",
            "framework_template_reloads_total{outcome=\"rejected\"} 0",
            "framework_leader 1",
            "framework_own_write_waits_total{outcome=\"caught_up\"} 0",
            "framework_own_write_waits_total{outcome=\"timed_out\"} 0",
            "framework_own_write_wait_seconds_count 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(
            FrameworkMetrics::register(&registry).is_err(),
            "second registration must fail"
        );
    }
}
