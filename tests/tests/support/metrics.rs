//! Reading the operator's `/metrics` page: fetch it over HTTP and look up samples by name and
//! labels (Prometheus text format).
//!
//! Caveats:
//! 1. Only what the tests need: `name{label="value",...} number` lines; comments are skipped and
//!    label values may contain escaped quotes and backslashes.
#![allow(dead_code)]

use std::{collections::BTreeMap, net::SocketAddr};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (`workflowexecution_total`, `..._bucket`, ...).
    pub name: String,
    /// The labels.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed `/metrics` page.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// The page as served.
    pub text: String,
    /// Its samples, in page order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// GET `http://<addr>/metrics` and parse it.
    pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Scrape> {
        let response = reqwest::get(format!("http://{addr}/metrics")).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "/metrics answered {}",
            response.status()
        );
        let text = response.text().await?;
        Scrape::parse(&text)
    }

    /// Parse a page in the Prometheus text format.
    pub fn parse(text: &str) -> anyhow::Result<Scrape> {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(parse_line)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Scrape {
            text: text.to_string(),
            samples,
        })
    }

    /// The value of the series `name` whose labels are exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// [`Scrape::value`], or 0 when the series is absent (a counter never incremented).
    pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// Every series named `name`.
    pub fn series(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// Whether any series of the metric family `name` is on the page (counters, gauges, and the
    /// `_bucket`/`_sum`/`_count` series of histograms).
    pub fn has_family(&self, name: &str) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                || s.name
                    .strip_prefix(name)
                    .is_some_and(|rest| matches!(rest, "_bucket" | "_sum" | "_count"))
        })
    }
}

fn parse_line(line: &str) -> anyhow::Result<Sample> {
    let (series, value) = line
        .rsplit_once(' ')
        .ok_or_else(|| anyhow::anyhow!("not a sample line: {line:?}"))?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .map_err(|e| anyhow::anyhow!("bad value in {line:?}: {e}"))?,
    };
    let Some((name, rest)) = series.split_once('{') else {
        return Ok(Sample {
            name: series.to_string(),
            labels: BTreeMap::new(),
            value,
        });
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim_start_matches(',').trim().to_string();
        if key.is_empty() || key == "}" {
            break;
        }
        anyhow::ensure!(chars.next() == Some('"'), "bad label in {line:?}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}
