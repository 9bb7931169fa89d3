//! Cumulative Prometheus histograms read before and after a phase: how long each kind of request
//! (the API server's `apiserver_request_duration_seconds`) or each step of a reconcile (the
//! operator's `framework_*_seconds`) took during it.
//!
//! Guarantees:
//! 1. A phase's figure is the difference of two snapshots: what happened before it is not in it.
//! 2. Series whose key function returns the same key are added up (the API server splits a
//!    request kind by group, version, scope and component).
//!
//! Caveats:
//! 1. The 95th percentile is interpolated linearly inside its bucket: it is as coarse as the
//!    buckets (the API server's are 5, 25, 50, 100, 200, 400 ms …); the mean is exact.
//! 2. The API server's duration is its own handling of a request, from receiving it to answering:
//!    the client's queueing and the watch event that tells the others come on top.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One histogram's cumulative state: bucket upper bound → observations at most that, sum, count.
#[derive(Clone, Debug, Default)]
struct Series {
    buckets: BTreeMap<u64, f64>,
    sum: f64,
    count: f64,
}

/// A snapshot of the histograms of one metric, by key.
#[derive(Clone, Debug, Default)]
pub struct Histograms(BTreeMap<String, Series>);

/// How long the observations made between two snapshots took.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Observations.
    pub count: u64,
    /// Their mean (ms).
    pub mean_ms: f64,
    /// Their 95th percentile, interpolated within its bucket (ms).
    pub p95_ms: f64,
}

/// The labels of a sample, `a="x",b="y"` → {a: x, b: y}.
pub(crate) fn parse_labels(text: &str) -> HashMap<String, String> {
    let mut labels = HashMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.insert(
            key.trim_start_matches(',').trim().to_string(),
            after[..end].to_string(),
        );
        rest = &after[end + 1..];
    }
    labels
}

/// A bucket bound as an orderable key: microseconds (`+Inf` the largest).
fn bound_key(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    let seconds: f64 = le.parse().ok()?;
    Some((seconds * 1e6).round() as u64)
}

impl Histograms {
    /// The histograms of `metric` in the Prometheus text `page`, keyed by `key` of each series'
    /// labels (series it returns `None` for are left out).
    pub fn parse(
        page: &str,
        metric: &str,
        key: impl Fn(&HashMap<String, String>) -> Option<String>,
    ) -> Self {
        let mut out = Self::default();
        for line in page.lines() {
            let Some(rest) = line.strip_prefix(metric) else {
                continue;
            };
            let (suffix, rest) = rest.split_once('{').unwrap_or((rest, ""));
            let (labels, value) = match rest.rsplit_once('}') {
                Some((labels, value)) => (labels, value),
                None => match suffix.split_once(' ') {
                    Some((_, value)) => ("", value),
                    None => continue,
                },
            };
            let suffix = suffix.split_whitespace().next().unwrap_or("");
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let labels = parse_labels(labels);
            let Some(key) = key(&labels) else { continue };
            let series = out.0.entry(key).or_default();
            match suffix {
                "_bucket" => {
                    if let Some(bound) = labels.get("le").and_then(|le| bound_key(le)) {
                        *series.buckets.entry(bound).or_default() += value;
                    }
                }
                "_sum" => series.sum += value,
                "_count" => series.count += value,
                _ => {}
            }
        }
        out
    }

    /// These and `other`'s (keys of both: `other`'s win).
    #[must_use]
    pub fn with(mut self, other: Self) -> Self {
        self.0.extend(other.0);
        self
    }

    /// What was observed since `before`, by key (keys with no observation left out).
    pub fn since(&self, before: &Self) -> BTreeMap<String, Latency> {
        let empty = Series::default();
        let mut out = BTreeMap::new();
        for (key, after) in &self.0 {
            let before = before.0.get(key).unwrap_or(&empty);
            let count = after.count - before.count;
            if count < 0.5 {
                continue;
            }
            let buckets: Vec<(u64, f64)> = after
                .buckets
                .iter()
                .map(|(bound, n)| {
                    (
                        *bound,
                        n - before.buckets.get(bound).copied().unwrap_or(0.0),
                    )
                })
                .collect();
            out.insert(
                key.clone(),
                Latency {
                    count: count.round() as u64,
                    mean_ms: (after.sum - before.sum) * 1e3 / count,
                    p95_ms: quantile(&buckets, count, 0.95),
                },
            );
        }
        out
    }
}

/// The `q` quantile (ms) of `count` observations in cumulative `buckets` (bound in µs → count),
/// interpolated linearly within the bucket it falls in; the largest finite bound when it falls in
/// `+Inf`.
fn quantile(buckets: &[(u64, f64)], count: f64, q: f64) -> f64 {
    let rank = q * count;
    let (mut lower, mut below) = (0u64, 0.0);
    for &(bound, cumulative) in buckets {
        if cumulative >= rank {
            if bound == u64::MAX {
                return lower as f64 / 1e3;
            }
            let within = cumulative - below;
            let fraction = if within > 0.0 {
                (rank - below) / within
            } else {
                1.0
            };
            return (lower as f64 + fraction * (bound - lower) as f64) / 1e3;
        }
        (lower, below) = (bound, cumulative);
    }
    lower as f64 / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP x_seconds a histogram
x_seconds_bucket{verb="PATCH",le="0.1"} 1
x_seconds_bucket{verb="PATCH",le="0.2"} 1
x_seconds_bucket{verb="PATCH",le="+Inf"} 1
x_seconds_sum{verb="PATCH"} 0.05
x_seconds_count{verb="PATCH"} 1
"#;
    const AFTER: &str = r#"x_seconds_bucket{verb="PATCH",le="0.1"} 11
x_seconds_bucket{verb="PATCH",le="0.2"} 21
x_seconds_bucket{verb="PATCH",le="+Inf"} 21
x_seconds_sum{verb="PATCH"} 3.05
x_seconds_count{verb="PATCH"} 21
x_seconds_bucket{verb="GET",le="0.1"} 4
x_seconds_bucket{verb="GET",le="0.2"} 4
x_seconds_bucket{verb="GET",le="+Inf"} 4
x_seconds_sum{verb="GET"} 0.1
x_seconds_count{verb="GET"} 4
other_seconds_count{verb="PATCH"} 7
"#;

    fn by_verb(labels: &HashMap<String, String>) -> Option<String> {
        labels.get("verb").filter(|v| *v != "GET").cloned()
    }

    #[test]
    fn a_phase_sees_only_its_own_observations_with_their_mean_and_95th_percentile() {
        let before = Histograms::parse(BEFORE, "x_seconds", by_verb);
        let after = Histograms::parse(AFTER, "x_seconds", by_verb);
        let phase = after.since(&before);
        assert_eq!(phase.len(), 1, "GET is left out by the key: {phase:?}");
        let patch = &phase["PATCH"];
        assert_eq!(patch.count, 20);
        assert!((patch.mean_ms - 150.0).abs() < 1e-9, "{patch:?}");
        // 10 in (0, 100 ms], 10 in (100, 200 ms]: rank 19 is 9/10 into the second bucket.
        assert!((patch.p95_ms - 190.0).abs() < 1e-9, "{patch:?}");
    }

    #[test]
    fn a_quantile_in_the_overflow_bucket_is_the_largest_finite_bound() {
        let buckets = [(100_000, 1.0), (200_000, 1.0), (u64::MAX, 10.0)];
        assert_eq!(quantile(&buckets, 10.0, 0.95), 200.0);
    }

    #[test]
    fn an_unlabelled_histogram_is_read() {
        let page = "y_seconds_bucket{le=\"0.5\"} 2\ny_seconds_bucket{le=\"+Inf\"} 2\ny_seconds_sum 0.4\ny_seconds_count 2\n";
        let phase = Histograms::parse(page, "y_seconds", |_| Some("y".into()))
            .since(&Histograms::default());
        assert_eq!(phase["y"].count, 2);
        assert!((phase["y"].mean_ms - 200.0).abs() < 1e-9);
    }
}
