//! Registering Prometheus metrics: one call per metric, with a name prefix, help text and a typed
//! error that names the metric.
//!
//! Every component that exports metrics (the runtime, the audit sink, an operator) does the same
//! three steps per metric: build the name from its prefix, create the collector with its help
//! text (and labels or buckets), register it in the process's [`Registry`]. [`Registrar`] does
//! them in one call:
//!
//! ```
//! use kubernaut_framework::metrics::Registrar;
//! let registry = prometheus::Registry::new();
//! let metrics = Registrar::new(&registry, "workflowexecution");
//! let total = metrics.counter_vec("total", "Executions by outcome", &["outcome"]).unwrap();
//! total.with_label_values(&["Completed"]).inc();
//! assert_eq!(registry.gather()[0].name(), "workflowexecution_total");
//! ```
//!
//! Guarantees:
//! 1. The full name is `<prefix>_<name>`, or `<name>` with an empty prefix.
//! 2. A metric is returned only once it is registered; a [`MetricError`] names the full metric
//!    name and carries `prometheus`' reason (an invalid name, a name already registered).
//!
//! 3. [`set_or_remove`] keeps a gauge's series to the non-zero ones, so a label with unbounded
//!    values (a target) holds only the series that matter now.
//!
//! Caveats:
//! 1. A name can be registered once per registry: registering the same metric twice (two
//!    operators in one registry with one prefix) is an error, not a shared series.
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// A metric could not be created or registered.
#[derive(Debug, thiserror::Error)]
#[error("registering metric {name}: {source}")]
pub struct MetricError {
    /// The metric's full name.
    pub name: String,
    /// Why `prometheus` refused it.
    #[source]
    pub source: prometheus::Error,
}

impl MetricError {
    /// The error for the metric `name` refused with `source`.
    pub fn new(name: impl Into<String>, source: prometheus::Error) -> Self {
        MetricError {
            name: name.into(),
            source,
        }
    }
}

/// Creates metrics named with one prefix and registers them in one [`Registry`].
#[derive(Debug, Clone)]
pub struct Registrar<'a> {
    registry: &'a Registry,
    prefix: String,
}

impl<'a> Registrar<'a> {
    /// Registers in `registry`, naming every metric `<prefix>_<name>` (`<name>` when `prefix` is
    /// empty).
    pub fn new(registry: &'a Registry, prefix: impl Into<String>) -> Self {
        Registrar {
            registry,
            prefix: prefix.into(),
        }
    }

    /// The full name of the metric `name`.
    pub fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }

    /// Registers a counter.
    ///
    /// # Errors
    /// A [`MetricError`] when the name is invalid or already registered.
    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, MetricError> {
        self.register(name, |full| IntCounter::with_opts(Opts::new(full, help)))
    }

    /// Registers a counter with labels.
    ///
    /// # Errors
    /// A [`MetricError`] when the name or a label is invalid, or the name is already registered.
    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, MetricError> {
        self.register(name, |full| {
            IntCounterVec::new(Opts::new(full, help), labels)
        })
    }

    /// Registers a gauge.
    ///
    /// # Errors
    /// A [`MetricError`] when the name is invalid or already registered.
    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, MetricError> {
        self.register(name, |full| IntGauge::with_opts(Opts::new(full, help)))
    }

    /// Registers a gauge with labels.
    ///
    /// # Errors
    /// A [`MetricError`] when the name or a label is invalid, or the name is already registered.
    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, MetricError> {
        self.register(name, |full| IntGaugeVec::new(Opts::new(full, help), labels))
    }

    /// Registers a histogram with the bucket upper bounds `buckets`.
    ///
    /// # Errors
    /// A [`MetricError`] when the name or the buckets are invalid, or the name is already
    /// registered.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, MetricError> {
        self.register(name, |full| {
            Histogram::with_opts(HistogramOpts::new(full, help).buckets(buckets.to_vec()))
        })
    }

    /// Registers a histogram with labels and the bucket upper bounds `buckets`.
    ///
    /// # Errors
    /// A [`MetricError`] when the name, a label or the buckets are invalid, or the name is
    /// already registered.
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, MetricError> {
        self.register(name, |full| {
            HistogramVec::new(
                HistogramOpts::new(full, help).buckets(buckets.to_vec()),
                labels,
            )
        })
    }

    /// Registers a collector built elsewhere (a process collector, a metric created before the
    /// registry was known) under the name it reports as `name`.
    ///
    /// # Errors
    /// A [`MetricError`] when a collector of the same name is already registered.
    pub fn collector<C: Collector + 'static>(
        &self,
        name: &str,
        collector: C,
    ) -> Result<(), MetricError> {
        self.registry
            .register(Box::new(collector))
            .map_err(|source| MetricError::new(name, source))
    }

    /// Builds the metric under its full name and registers a handle to it.
    fn register<C: Collector + Clone + 'static>(
        &self,
        name: &str,
        make: impl FnOnce(String) -> Result<C, prometheus::Error>,
    ) -> Result<C, MetricError> {
        let full = self.full_name(name);
        let error = |source| MetricError::new(full.clone(), source);
        let metric = make(full.clone()).map_err(error)?;
        self.registry
            .register(Box::new(metric.clone()))
            .map_err(error)?;
        Ok(metric)
    }
}

/// Sets the series of `gauges` at `labels` to `value`, or removes it when `value` is 0, so a
/// gauge labelled by something unbounded (a target, an object) holds only its non-zero series.
pub fn set_or_remove(gauges: &IntGaugeVec, labels: &[&str], value: i64) {
    if value == 0 {
        // Absent already is what 0 means.
        let _ = gauges.remove_label_values(labels);
    } else {
        gauges.with_label_values(labels).set(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_gauge_series_is_removed() {
        let registry = Registry::new();
        let gauges = Registrar::new(&registry, "")
            .gauge_vec("failures", "Failures per target", &["target"])
            .unwrap();
        set_or_remove(&gauges, &["a"], 2);
        assert_eq!(gauges.with_label_values(&["a"]).get(), 2);
        set_or_remove(&gauges, &["a"], 0);
        set_or_remove(&gauges, &["b"], 0);
        assert!(registry.gather().iter().all(|f| f.get_metric().is_empty()));
    }

    fn names(registry: &Registry) -> Vec<String> {
        registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect()
    }

    #[test]
    fn every_kind_is_registered_under_its_prefixed_name() {
        let registry = Registry::new();
        let metrics = Registrar::new(&registry, "op");
        metrics.counter("a_total", "A.").unwrap().inc();
        metrics
            .counter_vec("b_total", "B.", &["reason"])
            .unwrap()
            .with_label_values(&["x"])
            .inc();
        metrics.gauge("c", "C.").unwrap().set(1);
        metrics
            .gauge_vec("d", "D.", &["target"])
            .unwrap()
            .with_label_values(&["y"])
            .set(2);
        metrics
            .histogram("e_seconds", "E.", &[1.0, 2.0])
            .unwrap()
            .observe(1.5);
        metrics
            .histogram_vec("f_seconds", "F.", &["outcome"], &[1.0])
            .unwrap()
            .with_label_values(&["z"])
            .observe(0.5);
        assert_eq!(
            names(&registry),
            [
                "op_a_total",
                "op_b_total",
                "op_c",
                "op_d",
                "op_e_seconds",
                "op_f_seconds"
            ]
        );
        let unprefixed = Registrar::new(&registry, "");
        unprefixed.gauge("plain", "P.").unwrap();
        assert!(names(&registry).contains(&"plain".to_owned()));
    }

    #[test]
    fn a_refused_metric_names_itself() {
        let registry = Registry::new();
        let metrics = Registrar::new(&registry, "op");
        metrics.counter("a_total", "A.").unwrap();
        let twice = metrics.counter("a_total", "A.").unwrap_err();
        assert_eq!(twice.name, "op_a_total");
        assert!(matches!(twice.source, prometheus::Error::AlreadyReg));
        let invalid = metrics.gauge("bad-name", "B.").unwrap_err();
        assert_eq!(invalid.name, "op_bad-name");
        assert!(
            invalid
                .to_string()
                .starts_with("registering metric op_bad-name: "),
            "{invalid}"
        );
        let buckets = metrics.histogram("h", "H.", &[2.0, 1.0]).unwrap_err();
        assert_eq!(buckets.name, "op_h");
    }
}
