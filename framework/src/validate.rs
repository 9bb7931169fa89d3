//! Run-time checks of an object's fields, every problem reported with the field it is about: the
//! runtime copy of a CRD's admission rules (CEL rules, `maxLength`s) and the checks only an
//! operator can make (its configuration's allowlists and bounds).
//!
//! | item | what it checks |
//! |---|---|
//! | [`FieldErrors`] | collects the problems, in the order found; prints `field: message; field: message` |
//! | [`map_key_field`] | the field path of one entry of a map (`spec.parameters["1bad"]`), safe to print |
//! | [`MapBounds`] | a string map's size: entries, key and value lengths, total length, stored size |
//! | [`json_stored_size`] | the bytes a string takes as the API server stores it |
//! | [`parse_bounded_go_duration`] | a positive Go duration no longer than a configured maximum |
//!
//! Guarantees:
//! 1. Every problem is kept, in the order it was found; [`FieldErrors`] prints them on one line,
//!    each as `field: message`, separated by `; `.
//! 2. A map key shown in a field path is quoted with escapes and shortened to
//!    [`SHOWN_KEY_CHARACTERS`] characters and `…`, so a hostile key can neither forge lines or
//!    fields in the message nor make it huge.
//! 3. [`json_stored_size`] counts what Go's `encoding/json` writes, the encoder the API server
//!    stores objects with.
//!
//! Caveats:
//! 1. Only map keys are quoted and shortened here; a message that shows a value must quote it
//!    itself (`{value:?}`).
//! 2. Lengths are counted in characters (Unicode scalar values), as CEL's `size()` and a CRD's
//!    `maxLength` count them; [`json_stored_size`] counts bytes.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::duration::{GoDurationError, format_go_duration, parse_go_duration};

/// How many characters of an overlong map key a field path shows.
pub const SHOWN_KEY_CHARACTERS: usize = 40;

/// One problem: the field it is about and what is wrong. Prints as `field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    field: String,
    message: String,
}

impl FieldError {
    /// The problem `message` with `field` (a path in the object's own spelling,
    /// `spec.workflowRef.workflowId`).
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The field the problem is about.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with it.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found, in the order found. As an error it is never empty (see
/// [`into_result`](Self::into_result)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// No problems yet.
    pub fn new() -> Self {
        FieldErrors::default()
    }

    /// Records the problem `message` with `field`.
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    /// The problems, in the order found.
    pub fn errors(&self) -> &[FieldError] {
        &self.0
    }

    /// `Ok` when no problem was found, else the problems.
    ///
    /// # Errors
    /// `self`, when it holds a problem.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// The field path of the entry `key` of the map at `field`: `field["key"]`, the key quoted with
/// escapes and shortened to its first [`SHOWN_KEY_CHARACTERS`] characters and `…` when longer.
pub fn map_key_field(field: &str, key: &str) -> String {
    if key.chars().count() <= SHOWN_KEY_CHARACTERS {
        return format!("{field}[{key:?}]");
    }
    let mut shown: String = key.chars().take(SHOWN_KEY_CHARACTERS).collect();
    shown.push('…');
    format!("{field}[{shown:?}]")
}

/// The bytes `text` takes inside a JSON string as the API server writes it to storage: Go's
/// `encoding/json`, which escapes `"` and `\` (2 bytes), `\n`, `\r`, `\t`, backspace and
/// form feed (2), other control characters, `<`, `>`, `&`, U+2028 and U+2029 (6 bytes each),
/// and writes everything else as UTF-8.
pub fn json_stored_size(text: &str) -> usize {
    text.chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => 6,
            c if u32::from(c) < 0x20 => 6,
            c => c.len_utf8(),
        })
        .sum()
}

/// The bounds of a map of strings to strings (a CRD's `maxProperties`, the `maxLength` of its
/// keys and values, a rule on their total size, and the room it may take in storage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapBounds {
    /// What the entries are called in messages (`parameters`).
    pub noun: &'static str,
    /// The most entries.
    pub max_entries: usize,
    /// The longest key, in characters.
    pub max_key_length: usize,
    /// The longest value, in characters.
    pub max_value_length: usize,
    /// The most characters all keys and values may hold together.
    pub max_total_length: usize,
    /// The most bytes all keys and values may take as stored ([`json_stored_size`]).
    pub max_stored_bytes: usize,
    /// What a map above `max_stored_bytes` would cause, for the message (`the PipelineRun would
    /// not fit the API server's request limit`).
    pub too_large: &'static str,
}

impl MapBounds {
    /// Records every bound `map`, at `field`, exceeds: too many entries; each key or value too
    /// long (at the entry's [field path](map_key_field)); too long in all, or else too large as
    /// stored.
    pub fn check(&self, field: &str, map: &BTreeMap<String, String>, errors: &mut FieldErrors) {
        if map.len() > self.max_entries {
            errors.push(
                field,
                format!(
                    "{} {}, at most {} allowed",
                    map.len(),
                    self.noun,
                    self.max_entries
                ),
            );
        }
        let (mut length, mut bytes) = (0, 0);
        for (key, value) in map {
            for (part, part_length, max) in [
                ("name", key.chars().count(), self.max_key_length),
                ("value", value.chars().count(), self.max_value_length),
            ] {
                if part_length > max {
                    errors.push(
                        map_key_field(field, key),
                        format!("the {part} has {part_length} characters, at most {max} allowed"),
                    );
                }
                length += part_length;
            }
            bytes += json_stored_size(key) + json_stored_size(value);
        }
        if length > self.max_total_length {
            errors.push(
                field,
                format!(
                    "names and values hold {length} characters in all, at most {} allowed",
                    self.max_total_length
                ),
            );
        } else if bytes > self.max_stored_bytes {
            errors.push(
                field,
                format!(
                    "names and values take {bytes} bytes as stored (JSON-escaped), at most {} allowed: {}",
                    self.max_stored_bytes, self.too_large
                ),
            );
        }
    }
}

/// Why a duration was refused by [`parse_bounded_go_duration`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundedDurationError {
    /// Not a Go duration.
    #[error(transparent)]
    Syntax(#[from] GoDurationError),
    /// Zero (a Go controller reads it as "no limit").
    #[error("must be longer than 0s")]
    Zero,
    /// Longer than the configured maximum.
    #[error("{value} is longer than the operator config's {max_key} ({max})")]
    AboveMax {
        /// The duration given.
        value: String,
        /// The configuration key of the maximum (`execution.maxTimeout`).
        max_key: &'static str,
        /// The maximum, as a Go duration.
        max: String,
    },
}

/// Parses `value` as a positive Go duration of at most `max`, the configuration's `max_key`.
///
/// # Errors
/// [`BoundedDurationError`] saying why `value` is refused.
pub fn parse_bounded_go_duration(
    value: &str,
    max: Duration,
    max_key: &'static str,
) -> Result<Duration, BoundedDurationError> {
    let duration = parse_go_duration(value)?;
    if duration.is_zero() {
        return Err(BoundedDurationError::Zero);
    }
    if duration > max {
        return Err(BoundedDurationError::AboveMax {
            value: value.to_owned(),
            max_key,
            max: format_go_duration(max),
        });
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: MapBounds = MapBounds {
        noun: "parameters",
        max_entries: 2,
        max_key_length: 4,
        max_value_length: 8,
        max_total_length: 20,
        max_stored_bytes: 14,
        too_large: "it would not fit",
    };

    fn check(entries: &[(&str, &str)]) -> Vec<String> {
        let map = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut errors = FieldErrors::new();
        BOUNDS.check("spec.parameters", &map, &mut errors);
        errors.errors().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn errors_print_field_and_message_on_one_line_in_the_order_found() {
        let mut errors = FieldErrors::new();
        assert_eq!(errors.clone().into_result(), Ok(()));
        errors.push("spec.b", "second field, first found");
        errors.push("spec.a", "must not be empty");
        assert_eq!(errors.errors()[1].field(), "spec.a");
        assert_eq!(errors.errors()[1].message(), "must not be empty");
        let errors = errors.into_result().unwrap_err();
        assert_eq!(
            errors.to_string(),
            "spec.b: second field, first found; spec.a: must not be empty"
        );
    }

    #[test]
    fn map_keys_are_quoted_and_long_ones_shortened() {
        assert_eq!(map_key_field("spec.p", "1bad"), "spec.p[\"1bad\"]");
        assert_eq!(
            map_key_field("spec.p", "a\nkey: injected"),
            "spec.p[\"a\\nkey: injected\"]"
        );
        let long = "x".repeat(10_000);
        assert_eq!(
            map_key_field("spec.p", &long),
            format!("spec.p[\"{}…\"]", "x".repeat(SHOWN_KEY_CHARACTERS))
        );
        let exact = "y".repeat(SHOWN_KEY_CHARACTERS);
        assert_eq!(map_key_field("f", &exact), format!("f[{exact:?}]"));
    }

    #[test]
    fn map_bounds_report_every_bound_exceeded() {
        assert!(check(&[("a", "b"), ("c", "d")]).is_empty());
        assert_eq!(
            check(&[("a", ""), ("b", ""), ("c", "")]),
            ["spec.parameters: 3 parameters, at most 2 allowed"]
        );
        assert_eq!(
            check(&[("abcde", "123456789")]),
            [
                "spec.parameters[\"abcde\"]: the name has 5 characters, at most 4 allowed",
                "spec.parameters[\"abcde\"]: the value has 9 characters, at most 8 allowed",
            ]
        );
        assert_eq!(
            check(&[("abcd", "12345678"), ("efgh", "12345678")]),
            ["spec.parameters: names and values hold 24 characters in all, at most 20 allowed"]
        );
        // 10 characters, but 2 + 2·8 = 18 bytes as stored.
        assert_eq!(
            check(&[("ab", "\"\"\"\"\"\"\"\"")]),
            [
                "spec.parameters: names and values take 18 bytes as stored (JSON-escaped), at most 14 allowed: it would not fit"
            ]
        );
    }

    #[test]
    fn stored_size_counts_go_json_escapes() {
        let cases = [
            ("", 0),
            ("abc", 3),
            ("a\"b", 4),
            ("\\", 2),
            ("line\n", 6),
            ("\t\r", 4),
            ("\u{8}\u{c}", 4),
            ("\u{0}", 6),
            ("\u{1f}", 6),
            ("<a&b>", 20),
            ("caf\u{e9}", 5),
            ("\u{1f680}", 4),
            ("\u{2028}", 6),
            ("\u{7f}", 1),
        ];
        for (text, bytes) in cases {
            assert_eq!(json_stored_size(text), bytes, "{text:?}");
        }
    }

    #[test]
    fn bounded_durations_are_positive_and_at_most_the_maximum() {
        let max = Duration::from_secs(24 * 3600);
        let parse = |value| parse_bounded_go_duration(value, max, "execution.maxTimeout");
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse("24h"), Ok(max));
        assert_eq!(
            parse("0").unwrap_err().to_string(),
            "must be longer than 0s"
        );
        assert_eq!(
            parse("24h0m1s").unwrap_err().to_string(),
            "24h0m1s is longer than the operator config's execution.maxTimeout (24h0m0s)"
        );
        assert!(matches!(
            parse("5 minutes"),
            Err(BoundedDurationError::Syntax(_))
        ));
    }
}
