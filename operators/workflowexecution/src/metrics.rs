//! The operator's own Prometheus metrics, with the names the behaviour contract fixes.
//!
//! Registered on the framework runtime's registry, so `/metrics` serves them next to the
//! framework's reconcile metrics and the audit sink's counters.
//!
//! Guarantees:
//! 1. Every label value is bounded: outcomes, reasons and the targets currently in backoff
//!    (a `consecutive_failures` series is removed when its target returns to 0).

use kubernaut_framework::metrics::{MetricError, Registrar, set_or_remove};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Registry};

/// Bucket bounds of `workflowexecution_duration_seconds`: 5 s to 320 s, doubling.
pub const DURATION_BUCKETS: [f64; 7] = [5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0];

/// The WorkflowExecution metrics.
#[derive(Clone)]
pub struct Metrics {
    /// `workflowexecution_total{outcome}`: WFEs that reached a terminal phase, by outcome
    /// (`Completed`, `Failed`, `Skipped`).
    pub total: IntCounterVec,
    /// `workflowexecution_duration_seconds{outcome}`: run duration of Completed/Failed WFEs.
    pub duration: HistogramVec,
    /// `workflowexecution_pipelinerun_creation_total`: PipelineRuns created.
    pub pipelinerun_creation: IntCounter,
    /// `workflowexecution_skip_total{reason}`: skipped WFEs by skip reason.
    pub skip: IntCounterVec,
    /// `workflowexecution_backoff_skip_total{reason}`: skips caused by backoff
    /// (`ExhaustedRetries`, `PreviousExecutionFailed`).
    pub backoff_skip: IntCounterVec,
    /// `workflowexecution_consecutive_failures{target_resource}`: the current pre-execution
    /// failure count per target; the series is removed when it returns to 0.
    pub consecutive_failures: IntGaugeVec,
}

impl Metrics {
    /// Create the metrics and register them on `registry`.
    ///
    /// # Errors
    /// When a metric of the same name is already registered.
    pub fn register(registry: &Registry) -> Result<Metrics, MetricError> {
        let wfe = Registrar::new(registry, "workflowexecution");
        Ok(Metrics {
            total: wfe.counter_vec(
                "total",
                "WorkflowExecutions that reached a terminal phase, by outcome",
                &["outcome"],
            )?,
            duration: wfe.histogram_vec(
                "duration_seconds",
                "Duration of finished WorkflowExecution runs",
                &["outcome"],
                &DURATION_BUCKETS,
            )?,
            pipelinerun_creation: wfe.counter(
                "pipelinerun_creation_total",
                "PipelineRuns created for WorkflowExecutions",
            )?,
            skip: wfe.counter_vec(
                "skip_total",
                "Skipped WorkflowExecutions, by skip reason",
                &["reason"],
            )?,
            backoff_skip: wfe.counter_vec(
                "backoff_skip_total",
                "WorkflowExecutions skipped because of failure backoff, by reason",
                &["reason"],
            )?,
            consecutive_failures: wfe.gauge_vec(
                "consecutive_failures",
                "Consecutive pre-execution failures per target resource",
                &["target_resource"],
            )?,
        })
    }

    /// Record the current consecutive-failure count of `target`; 0 removes its series. The label
    /// is the target's lock key ([`crate::types::target_key`]), so the spellings of one target
    /// share one series.
    pub fn set_consecutive_failures(&self, target: &str, count: u32) {
        let target = crate::types::target_key(target);
        set_or_remove(&self.consecutive_failures, &[&target], i64::from(count));
    }

    /// The duration histogram of one outcome.
    pub fn duration_of(&self, outcome: &str) -> Histogram {
        self.duration.with_label_values(&[outcome])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_the_contract_names_and_removes_zero_series() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).unwrap();
        metrics.total.with_label_values(&["Completed"]).inc();
        metrics.duration_of("Completed").observe(12.0);
        metrics.pipelinerun_creation.inc();
        metrics.skip.with_label_values(&["ResourceBusy"]).inc();
        metrics
            .backoff_skip
            .with_label_values(&["ExhaustedRetries"])
            .inc();
        metrics.set_consecutive_failures("default/deployment/nginx", 2);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for name in [
            "workflowexecution_total",
            "workflowexecution_duration_seconds",
            "workflowexecution_pipelinerun_creation_total",
            "workflowexecution_skip_total",
            "workflowexecution_backoff_skip_total",
            "workflowexecution_consecutive_failures",
        ] {
            assert!(
                names.iter().any(|n| n == name),
                "{name} missing from {names:?}"
            );
        }
        metrics.set_consecutive_failures("default/deployment/nginx", 0);
        let gauge = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == "workflowexecution_consecutive_failures");
        assert!(
            gauge.is_none_or(|f| f.get_metric().is_empty()),
            "the 0 series must be removed"
        );
        // A second registration on the same registry is refused, not silently duplicated.
        assert!(Metrics::register(&registry).is_err());
    }
}
