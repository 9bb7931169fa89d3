//! Durations in the two notations an operator meets: Go's, as Kubernetes and Tekton write them on
//! the wire, and the human notation of the operator's own configuration.
//!
//! **Go notation** ([`parse_go_duration`], [`format_go_duration`]): what Go's `time.Duration`
//! prints and `time.ParseDuration` reads (`2m30s`, `1h0m0s`, `500ms`, `1.5h`). A status field a
//! Kubernetes user reads (`status.duration`) and a timeout handed to a Go controller (a
//! PipelineRun's `spec.timeouts.pipeline`) use it.
//!
//! **Human notation** ([`parse_humane`], [`format_humane`]): the configuration's durations
//! (`90s`, `5m`, `1h30m`, and longer units such as `2days`), read and written with `humantime`;
//! [`crate::config::duration`] is its serde adapter.
//!
//! Guarantees:
//! 1. [`format_go_duration`] rounds to whole seconds (half away from zero, like Go's
//!    `Duration.Round(time.Second)`) and prints exactly what Go's `Duration.String()` prints for
//!    that value: `0s`, `45s`, `2m30s`, `1h0m0s`, `26h3m4s`.
//! 2. [`parse_go_duration`] accepts exactly the non-negative subset of Go's `time.ParseDuration`
//!    grammar (`300ms`, `1.5h`, `2h45m`, `0`; units `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`),
//!    so a string it accepts is one a Go controller accepts too.
//! 3. [`format_humane`] output reads back through [`parse_humane`] unchanged, so a serialized
//!    default configuration loads as itself.
//!
//! Caveats:
//! 1. Negative Go durations are rejected: nothing an operator reports or sets can be negative.
//! 2. Go values above Go's maximum (`2562047h47m16.854775807s`, `i64::MAX` nanoseconds) are
//!    rejected as out of range, as Go rejects them.
//! 3. The two notations look alike but differ (`1.5h` and `0` are Go only, `2days` and `1h 30m`
//!    human only): parse each field with the notation of whoever reads it next.
use std::time::Duration;

/// Go's largest duration, in nanoseconds (`math.MaxInt64`).
const GO_MAX_NANOS: u128 = i64::MAX as u128;

/// Why a string is not a (non-negative) Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoDurationError {
    /// The string is empty.
    #[error("invalid duration \"\": empty")]
    Empty,
    /// The string has a leading `-`.
    #[error("invalid duration {0:?}: negative durations are not allowed")]
    Negative(String),
    /// A number is not followed by a unit (`"5"`, `"1h30"`).
    #[error("invalid duration {0:?}: missing unit (one of ns, us, ms, s, m, h)")]
    MissingUnit(String),
    /// A unit is not one Go knows.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (one of ns, us, ms, s, m, h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit found.
        unit: String,
    },
    /// The string does not follow the `<number><unit>...` shape.
    #[error("invalid duration {0:?}: expected a sequence of <number><unit>, e.g. \"1h30m\"")]
    Malformed(String),
    /// The value exceeds Go's maximum duration.
    #[error("invalid duration {0:?}: out of range (at most 2562047h47m16s)")]
    OutOfRange(String),
}

/// Parses a non-negative Go duration string (`"90s"`, `"1h30m"`, `"1.5h"`, `"0"`).
pub fn parse_go_duration(input: &str) -> Result<Duration, GoDurationError> {
    let mut rest = match input.strip_prefix('+') {
        Some(r) => r,
        None if input.starts_with('-') => return Err(GoDurationError::Negative(input.to_owned())),
        None => input,
    };
    if rest.is_empty() {
        return Err(if input.is_empty() {
            GoDurationError::Empty
        } else {
            GoDurationError::Malformed(input.to_owned())
        });
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let out_of_range = || GoDurationError::OutOfRange(input.to_owned());
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (term, after) = GoTerm::split(rest, input)?;
        total = total
            .checked_add(term.nanos(input)?)
            .ok_or_else(out_of_range)?;
        if total > GO_MAX_NANOS {
            return Err(out_of_range());
        }
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| out_of_range())?;
    // The remainder is below 10^9 and fits a u32.
    let subsec = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, subsec))
}

/// One `<number><unit>` term of a Go duration: `1.5h` is `("1", "5", h)`.
struct GoTerm<'a> {
    int_part: &'a str,
    frac_part: &'a str,
    unit_nanos: u128,
}

impl<'a> GoTerm<'a> {
    /// The term at the start of `rest` (a suffix of `input`, which errors name) and what follows.
    fn split(rest: &'a str, input: &str) -> Result<(GoTerm<'a>, &'a str), GoDurationError> {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, after_int) = rest.split_at(int_len);
        let (frac_part, after_num) = match after_int.strip_prefix('.') {
            Some(f) => {
                let frac_len = f.bytes().take_while(u8::is_ascii_digit).count();
                f.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(GoDurationError::Malformed(input.to_owned()));
        }
        let unit_len = after_num
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(after_num.len(), |(i, _)| i);
        let (unit, after_unit) = after_num.split_at(unit_len);
        let term = GoTerm {
            int_part,
            frac_part,
            unit_nanos: unit_nanos(unit, input)?,
        };
        Ok((term, after_unit))
    }

    /// The term's value in nanoseconds; out of range when it overflows.
    fn nanos(&self, input: &str) -> Result<u128, GoDurationError> {
        let out_of_range = || GoDurationError::OutOfRange(input.to_owned());
        let whole: u128 = if self.int_part.is_empty() {
            0
        } else {
            self.int_part.parse().map_err(|_| out_of_range())?
        };
        let nanos = whole
            .checked_mul(self.unit_nanos)
            .ok_or_else(out_of_range)?;
        // Fraction digits beyond 18 cannot change the result (the largest unit is 3.6e12 ns) and
        // are ignored, as Go truncates below nanosecond precision; 10^18 · 3.6e12 fits a u128.
        let mut scale: u128 = 1;
        let mut frac: u128 = 0;
        for digit in self.frac_part.bytes().take(18) {
            frac = frac * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        nanos
            .checked_add(frac * self.unit_nanos / scale)
            .ok_or_else(out_of_range)
    }
}

/// Nanoseconds per Go duration `unit` (of `input`, which errors name).
fn unit_nanos(unit: &str, input: &str) -> Result<u128, GoDurationError> {
    Ok(match unit {
        "" => return Err(GoDurationError::MissingUnit(input.to_owned())),
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        other => {
            return Err(GoDurationError::UnknownUnit {
                input: input.to_owned(),
                unit: other.to_owned(),
            });
        }
    })
}

/// Rounds to whole seconds, half away from zero (Go's `d.Round(time.Second)`).
pub fn round_to_seconds(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() >= 500_000_000 {
        secs.saturating_add(1)
    } else {
        secs
    }
}

/// Formats a duration the way Go's `Duration.String()` prints it after rounding to whole seconds:
/// `0s`, `45s`, `2m30s`, `1h0m0s`.
pub fn format_go_duration(duration: Duration) -> String {
    let total = round_to_seconds(duration);
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// The time from `from` to `to` as a Go-style string; zero when `to` is not after `from`.
pub fn format_span(from: jiff::Timestamp, to: jiff::Timestamp) -> String {
    format_go_duration(duration_between(from, to))
}

/// The non-negative time from `from` to `to` (zero when `to` is not after `from`).
pub fn duration_between(from: jiff::Timestamp, to: jiff::Timestamp) -> Duration {
    let nanos = to.as_nanosecond().saturating_sub(from.as_nanosecond());
    u64::try_from(nanos.max(0))
        .map(Duration::from_nanos)
        .unwrap_or(Duration::MAX)
}

/// `at + delay`, saturating at the largest timestamp.
pub fn add_saturating(at: jiff::Timestamp, delay: Duration) -> jiff::Timestamp {
    jiff::SignedDuration::try_from(delay)
        .ok()
        .and_then(|d| at.checked_add(d).ok())
        .unwrap_or(jiff::Timestamp::MAX)
}

/// Parses a duration in the human notation (`"90s"`, `"5m"`, `"1h30m"`, `"1h 30m"`); surrounding
/// whitespace is ignored. The error text names the value and says what was expected.
pub fn parse_humane(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    humantime::parse_duration(trimmed).map_err(|e| {
        format!(
            "invalid duration {trimmed:?}: {e} (expected a number with a unit, \
             like \"90s\", \"5m\" or \"1h30m\")"
        )
    })
}

/// Formats `d` in the human notation, compactly: units from days down to nanoseconds, no spaces
/// (`"1h30m"`, `"1m30s"`, `"0s"`).
pub fn format_humane(d: Duration) -> String {
    let text = humantime::format_duration(d).to_string();
    text.split_whitespace().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_like_go() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_millis(499), "0s"),
            (Duration::from_millis(500), "1s"),
            (Duration::from_secs(45), "45s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(150), "2m30s"),
            (Duration::from_millis(149_600), "2m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(3661), "1h1m1s"),
            (Duration::from_secs(26 * 3600 + 3 * 60 + 4), "26h3m4s"),
            (Duration::from_millis(59_500), "1m0s"),
        ];
        for (input, want) in cases {
            assert_eq!(format_go_duration(*input), *want, "{input:?}");
        }
    }

    #[test]
    fn parses_go_durations() {
        let cases: &[(&str, Duration)] = &[
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            ("90s", Duration::from_secs(90)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("2h45m10s", Duration::from_secs(2 * 3600 + 45 * 60 + 10)),
            ("1.5h", Duration::from_secs(5400)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("300ms", Duration::from_millis(300)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("10\u{3bc}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h0m0s", Duration::from_secs(3600)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_go_duration(input), Ok(*want), "{input:?}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        type Check = fn(&GoDurationError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, GoDurationError::Empty)),
            ("-5m", |e| matches!(e, GoDurationError::Negative(_))),
            ("5", |e| matches!(e, GoDurationError::MissingUnit(_))),
            ("1h30", |e| matches!(e, GoDurationError::MissingUnit(_))),
            ("5 minutes", |e| {
                matches!(e, GoDurationError::UnknownUnit { .. })
            }),
            ("1d", |e| matches!(e, GoDurationError::UnknownUnit { .. })),
            ("1h 30m", |e| {
                matches!(e, GoDurationError::UnknownUnit { .. })
            }),
            ("h", |e| matches!(e, GoDurationError::Malformed(_))),
            (".s", |e| matches!(e, GoDurationError::Malformed(_))),
            ("+", |e| matches!(e, GoDurationError::Malformed(_))),
            ("2562048h", |e| matches!(e, GoDurationError::OutOfRange(_))),
            ("99999999999999999999999999999999999999999h", |e| {
                matches!(e, GoDurationError::OutOfRange(_))
            }),
            ("1h\n", |e| matches!(e, GoDurationError::UnknownUnit { .. })),
            ("{{ 5 }}m", |e| matches!(e, GoDurationError::Malformed(_))),
        ];
        for (input, check) in cases {
            let err = parse_go_duration(input).expect_err(input);
            assert!(check(&err), "{input:?} gave {err:?}");
        }
    }

    #[test]
    fn spans_are_never_negative() {
        let a: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let b: jiff::Timestamp = "2025-01-01T00:02:30Z".parse().unwrap();
        assert_eq!(format_span(a, b), "2m30s");
        assert_eq!(format_span(b, a), "0s");
    }

    #[test]
    fn humane_durations_parse_and_format_compactly() {
        let cases = [
            ("90s", 90_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            (" 2m ", 120_000),
            ("250ms", 250),
            ("1m30s", 90_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_humane(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for bad in ["", "5", "5 parsecs", "-1s", "m"] {
            assert!(parse_humane(bad).is_err(), "{bad:?}");
        }
        let formatted = [
            (0, "0s"),
            (90_000, "1m30s"),
            (5_400_000, "1h30m"),
            (300_000, "5m"),
            (1_500, "1s500ms"),
        ];
        for (millis, text) in formatted {
            let d = Duration::from_millis(millis);
            assert_eq!(format_humane(d), text);
            assert_eq!(parse_humane(text), Ok(d), "round trip {text}");
        }
    }

    proptest! {
        #[test]
        fn formatted_durations_parse_back(secs in 0u64..10_000_000) {
            let text = format_go_duration(Duration::from_secs(secs));
            prop_assert_eq!(parse_go_duration(&text), Ok(Duration::from_secs(secs)));
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,24}") {
            let _ = parse_go_duration(&input);
        }
    }
}
