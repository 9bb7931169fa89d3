//! The API server's own count of requests (`apiserver_request_total`), read before and after a
//! phase: how many writes of each kind the phase cost, whoever made them.
//!
//! Guarantees:
//! 1. Writes are counted by the API server, so nothing any client writes is missed: the operator's,
//!    the benchmark's, a Tekton's (simulated or real) and the cluster's own.
//!
//! Caveats:
//! 1. The counters do not name the client; [`is_operator_write`] attributes a write by its verb and
//!    resource, which holds while the operator is the only one writing those kinds.
//! 2. Counters are cumulative since the API server started: a phase's figure is a difference, and
//!    anything else writing meanwhile is in it.

use std::{collections::BTreeMap, fmt::Write as _};

use anyhow::Context as _;
use kube::Client;

use super::histogram::{Histograms, parse_labels};

/// `apiserver_request_total` summed by (verb, resource, subresource, code class).
#[derive(Clone, Debug, Default)]
pub struct Requests(BTreeMap<(String, String, String, String), f64>);

/// The verbs that change something, as `apiserver_request_total` names them.
pub const WRITE_VERBS: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "APPLY",
    "DELETECOLLECTION",
];

/// A snapshot of the API server's `apiserver_request_total`.
///
/// # Errors
///
/// When `/metrics` cannot be read.
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<Requests> {
    let text = metrics_page(client).await?;
    let mut totals = Requests::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let labels = parse_labels(labels);
        let value: f64 = value.trim().parse().unwrap_or(0.0);
        let get = |k: &str| labels.get(k).cloned().unwrap_or_default();
        let code = get("code");
        let class = if code.starts_with('2') {
            "2xx".to_string()
        } else {
            code
        };
        *totals
            .0
            .entry((get("verb"), get("resource"), get("subresource"), class))
            .or_default() += value;
    }
    Ok(totals)
}

/// The API server's `/metrics` page.
async fn metrics_page(client: &Client) -> anyhow::Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    client
        .request_text(request)
        .await
        .context("reading the API server's /metrics")
}

/// A snapshot of the API server's `apiserver_request_duration_seconds` of writes, keyed as
/// [`write_delta`] names them ("VERB resource[/subresource]"); [`Histograms::since`] gives a
/// phase's.
///
/// # Errors
///
/// When `/metrics` cannot be read.
pub async fn apiserver_write_durations(client: &Client) -> anyhow::Result<Histograms> {
    let text = metrics_page(client).await?;
    Ok(Histograms::parse(
        &text,
        "apiserver_request_duration_seconds",
        |labels| {
            let verb = labels.get("verb")?;
            if !WRITE_VERBS.contains(&verb.as_str()) {
                return None;
            }
            let mut name = format!("{verb} {}", labels.get("resource")?);
            if let Some(sub) = labels.get("subresource").filter(|s| !s.is_empty()) {
                name.push('/');
                name.push_str(sub);
            }
            Some(name)
        },
    ))
}

/// Writes between two snapshots, by "VERB resource[/subresource]" (and code when not 2xx).
pub fn write_delta(before: &Requests, after: &Requests) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (key, value) in &after.0 {
        let (verb, resource, sub, class) = key;
        if !WRITE_VERBS.contains(&verb.as_str()) {
            continue;
        }
        let delta = value - before.0.get(key).copied().unwrap_or(0.0);
        if delta < 0.5 {
            continue;
        }
        let mut name = format!("{verb} {resource}");
        if !sub.is_empty() {
            name.push('/');
            name.push_str(sub);
        }
        if class != "2xx" {
            let _ = write!(name, " ({class})");
        }
        *out.entry(name).or_default() += delta.round() as u64;
    }
    out
}

/// Which writes the operator makes on the simulator: everything on its own kinds except the
/// benchmark's WFE creates, the simulator's PipelineRun label patches and status writes, and
/// TaskRuns.
pub fn is_operator_write(name: &str) -> bool {
    let resource = name.split_whitespace().nth(1).unwrap_or("");
    match resource {
        "workflowexecutions" => !name.starts_with("POST "),
        "workflowexecutions/status" => true,
        // The simulator copies the Pipeline's `tekton.dev/` labels onto every run as Tekton does
        // (a merge patch); the operator patches a run only to mark a failed one as a block or to
        // cancel one on deletion, which no load phase does (every run succeeds, nothing is
        // deleted).
        "pipelineruns" => !name.starts_with("PATCH "),
        // Leases are not counted: leader election is off, and the API server renews its own.
        "events" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_writes_on_the_simulator_are_its_own_kinds_but_for_the_others_writes() {
        let cases = [
            ("POST workflowexecutions", false),
            ("PATCH workflowexecutions", true),
            ("PUT workflowexecutions/status", true),
            ("PUT workflowexecutions/status (409)", true),
            ("POST pipelineruns", true),
            ("DELETE pipelineruns", true),
            ("PATCH pipelineruns", false),
            ("PATCH pipelineruns/status", false),
            ("POST taskruns", false),
            ("POST events", true),
            ("PUT leases", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_operator_write(name), want, "{name}");
        }
    }
}
