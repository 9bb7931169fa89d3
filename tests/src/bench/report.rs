//! Figures and the page: nearest-rank percentiles, how they are printed, and the sections of
//! `docs/performance.md` that a benchmark other than the one rewriting the page measured.
//!
//! Guarantees:
//! 1. [`replace_section`] changes only the section it names (or adds it); the rest of the page
//!    stays as it is.
//!
//! Caveats:
//! 1. A section is a `## ` heading up to the next one: a section must not contain `## ` lines of
//!    its own.

use std::{path::Path, time::Duration};

use serde::{Deserialize, Serialize};

/// Milliseconds of `d`, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Nearest-rank percentiles of `values` (milliseconds).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// How many values.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// The largest value.
    pub max: f64,
}

/// The [`Percentiles`] of `values` (all zero when there are none).
pub fn percentiles(mut values: Vec<f64>) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    values.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p / 100.0) * values.len() as f64).ceil() as usize;
        values[index.clamp(1, values.len()) - 1]
    };
    Percentiles {
        count: values.len(),
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        max: values[values.len() - 1],
    }
}

/// `p50 / p95 / p99`, one decimal.
pub fn fmt_p(p: &Percentiles) -> String {
    format!("{:.1} / {:.1} / {:.1}", p.p50, p.p95, p.p99)
}

/// A count that older reports lack: `–` then.
pub fn count<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "–".to_string(), |v| v.to_string())
}

/// `numerator ÷ denominator` to two decimals; `–` when either is missing or the denominator is 0.
pub fn ratio(numerator: Option<f64>, denominator: Option<f64>) -> String {
    match (numerator, denominator) {
        (Some(n), Some(d)) if d != 0.0 => format!("{:.2}", n / d),
        _ => "–".into(),
    }
}

/// A figure to two decimals; `–` when missing.
pub fn two_decimals(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"))
}

/// `count` per WFE of a phase of `n` WFEs (`n` taken as at least 1).
pub fn per_wfe(count: u64, n: usize) -> f64 {
    count as f64 / n.max(1) as f64
}

/// The head of a markdown table with `columns`, its separator line included, ending in a newline.
pub fn table_head(columns: &[&str]) -> String {
    let titles: String = columns.iter().map(|c| format!(" {c} |")).collect();
    format!("|{titles}\n|{}\n", "---|".repeat(columns.len()))
}

/// Writes `value` as pretty JSON to `<dir>/<file>`, creating `dir`.
///
/// # Errors
///
/// When it cannot be serialized or written.
pub fn write_json(dir: &Path, file: &str, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(file), serde_json::to_string_pretty(value)? + "\n")?;
    Ok(())
}

/// Writes `page` to `path`, followed by the sections of the page it replaces whose heading (a
/// `## ` line) is in `kept`, each as it was, after one blank line.
///
/// # Errors
///
/// When the page cannot be written.
pub fn keep_sections(path: &Path, mut page: String, kept: &[&str]) -> anyhow::Result<()> {
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let mut keeping = false;
    for line in previous.lines() {
        if line.starts_with("## ") {
            keeping = kept.contains(&line);
            if keeping {
                // One blank line before the heading, however many the page ends with.
                page.truncate(page.trim_end_matches('\n').len());
                page.push_str("\n\n");
            }
        }
        if keeping {
            page.push_str(line);
            page.push('\n');
        }
    }
    std::fs::write(path, page)?;
    Ok(())
}

/// Replaces the section `heading` (a `## ` line, up to the next `## ` line) of the page at `path`
/// with `heading` and `body`. A page without that section gets it before the section `before`,
/// or at its end; a missing page is written with the section alone.
///
/// # Errors
///
/// When the page cannot be written.
pub fn replace_section(path: &Path, heading: &str, before: &str, body: &str) -> anyhow::Result<()> {
    let previous = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{heading}\n\n{}\n", body.trim_end());
    let present = previous.lines().any(|line| line == heading);
    let mut page = String::new();
    let mut replaced = false;
    let mut skipping = false;
    for line in previous.lines() {
        if line.starts_with("## ") {
            skipping = line == heading;
            if skipping || (!present && !replaced && line == before) {
                page.push_str(&section);
                page.push('\n');
                replaced = true;
            }
        }
        if !skipping {
            page.push_str(line);
            page.push('\n');
        }
    }
    if !replaced {
        if !page.is_empty() && !page.ends_with("\n\n") {
            page.push('\n');
        }
        page.push_str(&section);
    }
    std::fs::write(path, page.trim_end().to_string() + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table heads and figures the benchmark pages print.
    #[test]
    fn tables_and_figures_print_as_the_pages_show_them() {
        assert_eq!(
            table_head(&["request", "per WFE"]),
            "| request | per WFE |\n|---|---|\n"
        );
        assert_eq!(table_head(&["", "a"]), "|  | a |\n|---|---|\n");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "–");
        assert_eq!(ratio(None, Some(2.0)), "–");
        assert_eq!(two_decimals(Some(1.0 / 3.0)), "0.33");
        assert_eq!(two_decimals(None), "–");
        assert_eq!(per_wfe(6, 3), 2.0);
        assert_eq!(per_wfe(6, 0), 6.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).collect());
        assert_eq!(
            (p.count, p.p50, p.p95, p.p99, p.max),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(percentiles(Vec::new()).count, 0);
    }

    /// Rewriting a page keeps the sections it does not write as they are, each after one blank
    /// line, however often it is rewritten.
    #[test]
    fn rewriting_a_page_keeps_the_other_sections_unchanged() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let page = dir.path().join("page.md");
        std::fs::write(&page, "# Old\n\n## A\n\nold\n\n## B\n\nb\n\n\n## C\n\nc\n")?;
        for _ in 0..3 {
            keep_sections(
                &page,
                "# New\n\n## A\n\nnew\n\n\n".into(),
                &["## B", "## C"],
            )?;
        }
        assert_eq!(
            std::fs::read_to_string(&page)?,
            "# New\n\n## A\n\nnew\n\n## B\n\nb\n\n## C\n\nc\n"
        );
        Ok(())
    }

    #[test]
    fn replace_section_changes_only_its_section_or_appends_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let page = dir.path().join("page.md");
        std::fs::write(&page, "# P\n\n## A\n\na\n\n## B\n\nold\n\n## C\n\nc\n")?;
        replace_section(&page, "## B", "## C", "new\n")?;
        assert_eq!(
            std::fs::read_to_string(&page)?,
            "# P\n\n## A\n\na\n\n## B\n\nnew\n\n## C\n\nc\n"
        );
        replace_section(&page, "## D", "## none", "d")?;
        assert_eq!(
            std::fs::read_to_string(&page)?,
            "# P\n\n## A\n\na\n\n## B\n\nnew\n\n## C\n\nc\n\n## D\n\nd\n"
        );
        replace_section(&page, "## E", "## C", "e")?;
        assert_eq!(
            std::fs::read_to_string(&page)?,
            "# P\n\n## A\n\na\n\n## B\n\nnew\n\n## E\n\ne\n\n## C\n\nc\n\n## D\n\nd\n"
        );
        Ok(())
    }
}
