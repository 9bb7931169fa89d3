//! YAML text for JSON values that every YAML reader reads back as the same value.
//!
//! Kubernetes' own tools read YAML with YAML 1.1 rules (`kubectl` and `sigs.k8s.io/yaml` use a
//! go-yaml fork), while most Rust and Python libraries of today follow YAML 1.2. The two disagree
//! on plain (unquoted) scalars: to a YAML 1.1 reader `yes`, `no`, `on`, `off`, `y` and `n` are
//! booleans, `1_000`, `0x10`, `010` and `190:20:30` numbers, `2001-12-14` a timestamp and `<<` a
//! merge key. A general-purpose emitter quotes only what its own (1.2) reader would misread, so
//! `kubectl create -f` of its output turns an annotation `"yes"` into `true` and fails.
//! [`to_string`] prints a [`serde_json::Value`] as block-style YAML and quotes every string that
//! either version could read as anything but that string.
//!
//! # Guarantees
//!
//! 1. A YAML 1.1 and a YAML 1.2 (core schema) reader both read the output back as `value`:
//!    strings stay strings byte for byte (map keys included), numbers stay numbers, booleans and
//!    null stay what they are.
//! 2. A string is written plain only when it cannot be mistaken for anything else (see
//!    [`is_plain_safe`]); otherwise single-quoted, or as a literal block (`|-`) when it spans
//!    lines, or double-quoted with escapes when it holds characters that the other styles cannot
//!    carry (control characters, tabs, YAML 1.1 line breaks such as NEL and U+2028).
//! 3. A float always has a fraction and a signed exponent (`1.0e+300`, never `1e300`, which YAML
//!    1.1 reads as a string).
//! 4. The layout is that of the usual emitters: two-space indentation, sequences under a key at the
//!    key's column (`key:\n- a`), empty collections as `{}` / `[]`, a final newline.
//!
//! # Caveats
//!
//! 1. The plain/quoted decision is deliberately conservative: some strings that both versions
//!    would read as strings are quoted anyway (for example `'1.0.0'`).
//! 2. Map keys longer than 1024 characters are written as explicit keys (`? key`), which YAML
//!    requires and some minimal readers do not support.

use serde_json::{Map, Number, Value};

/// Implicit (`key: value`) keys may be at most this long in YAML.
const MAX_IMPLICIT_KEY: usize = 1024;

/// `value` as a YAML document (no `---` marker), ending in a newline. See the module docs.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        scalar => {
            // A block scalar at the top level is indented too: at column 0 it would end at once.
            out.push_str(&inline_or_block(scalar, 2));
            out.push('\n');
        }
    }
    out
}

/// Writes a non-empty map's entries at `indent`, each on its own line(s).
fn write_map(out: &mut String, map: &Map<String, Value>, indent: usize) {
    for (i, (key, value)) in map.iter().enumerate() {
        // The first entry of a map inside a sequence item follows its `- ` on the same line.
        if i > 0 || !out.ends_with("- ") {
            push_indent(out, indent);
        }
        write_entry(out, key, value, indent);
    }
}

fn write_entry(out: &mut String, key: &str, value: &Value, indent: usize) {
    let key_text = key_scalar(key);
    if key.chars().count() > MAX_IMPLICIT_KEY {
        // An explicit key: `? key` then `: value` on the next line.
        out.push_str("? ");
        out.push_str(&key_text);
        out.push('\n');
        push_indent(out, indent);
        out.push(':');
    } else {
        out.push_str(&key_text);
        out.push(':');
    }
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, indent + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, indent);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline_or_block(scalar, indent + 2));
            out.push('\n');
        }
    }
}

/// Writes a non-empty sequence's items at `indent`.
fn write_seq(out: &mut String, items: &[Value], indent: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !out.ends_with("- ") {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Value::Object(map) if !map.is_empty() => write_map(out, map, indent + 2),
            Value::Array(inner) if !inner.is_empty() => write_seq(out, inner, indent + 2),
            scalar => {
                out.push_str(&inline_or_block(scalar, indent + 2));
                out.push('\n');
            }
        }
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A scalar or empty collection as written after `key: ` or `- `; a literal block's lines are
/// indented by `block_indent`.
fn inline_or_block(value: &Value, block_indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string_scalar(s, Some(block_indent)),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A map key: like a string value, but never a block scalar.
fn key_scalar(key: &str) -> String {
    string_scalar(key, None)
}

/// A number as both YAML versions read it: integers as they are, floats with a `.` and a signed
/// exponent.
fn number(n: &Number) -> String {
    let text = n.to_string();
    if !n.is_f64() {
        return text;
    }
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m.to_owned(), Some(e.to_owned())),
        None => (text.clone(), None),
    };
    let mantissa = if mantissa.contains('.') {
        mantissa
    } else {
        format!("{mantissa}.0")
    };
    match exponent {
        None => mantissa,
        Some(e) if e.starts_with(['-', '+']) => format!("{mantissa}e{e}"),
        Some(e) => format!("{mantissa}e+{e}"),
    }
}

/// A string in the first style that carries it safely: plain, single-quoted, literal block (when
/// `block_indent` is given and the text spans lines), double-quoted.
fn string_scalar(s: &str, block_indent: Option<usize>) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if !s.contains('\n') && s.chars().all(is_quotable) {
        return format!("'{}'", s.replace('\'', "''"));
    }
    if let Some(indent) = block_indent
        && is_literal_safe(s)
    {
        return literal_block(s, indent);
    }
    double_quoted(s)
}

/// Whether `s` may be written as a plain scalar: YAML 1.1 and 1.2 both read it as this string.
///
/// Conservative by construction: refused are the empty string, every spelling of the 1.1
/// booleans and nulls (`y`, `n`, `yes`, `no`, `on`, `off`, `true`, `false`, `null`, `~`, in any
/// case), `<<` and `=`, anything that might be a number or a timestamp in either version
/// (integers, floats, `.inf`, timestamps), anything that starts with an indicator character,
/// contains `: ` or ` #`, ends with `:` or a space, or holds a tab, a line break or a character
/// that is not printable in both versions.
pub fn is_plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let lower = s.to_ascii_lowercase();
    const WORDS: [&str; 10] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    if WORDS.contains(&lower.as_str()) || s == "<<" || s == "=" || looks_numeric(s) {
        return false;
    }
    // `.` is no indicator; it starts only `.inf`/`.nan` and numbers (refused above).
    const INDICATORS: &str = "-?:,[]{}#&*!|>'\"%@`~+ ";
    if INDICATORS.contains(first) {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') || s.ends_with(' ') {
        return false;
    }
    s.chars().all(|c| c != '\t' && is_quotable(c))
}

/// Whether `s` might read as a number or a timestamp in YAML 1.1 or 1.2: a superset of their
/// integer (decimal, `0x`, `0o`, `0b`, 1.1 octal `0…`, `_` separators, sexagesimal `190:20:30`),
/// float (`1.5`, `1e3`, `.5`, `.inf`, `.nan`) and timestamp (`2001-12-14…`) forms, so some
/// strings are quoted that need not be (`1.0.0`).
fn looks_numeric(s: &str) -> bool {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let lower = unsigned.to_ascii_lowercase();
    if lower.starts_with(".inf") || lower.starts_with(".nan") {
        return true;
    }
    if !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return false;
    }
    let bytes = unsigned.as_bytes();
    let timestamp =
        bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-';
    let prefixed = ["0x", "0o", "0b"].iter().any(|p| lower.starts_with(p))
        && lower[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '_');
    let decimal = unsigned
        .chars()
        .all(|c| c.is_ascii_digit() || "_.:eE+-".contains(c));
    timestamp || prefixed || decimal
}

/// Printable in a single-quoted (or plain) scalar under YAML 1.1 and 1.2 alike, without an
/// escape: no control characters (tab included), no DEL or C1 controls (NEL is a 1.1 line
/// break), no U+2028/U+2029 (1.1 line breaks), no byte order mark or non-characters.
fn is_quotable(c: char) -> bool {
    !(c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{FEFF}' | '\u{FFFE}' | '\u{FFFF}'
        ))
}

/// Whether `s` can be a literal block scalar (`|-`, `|`, `|+`) that reads back byte for byte: it
/// spans lines, starts with neither a space nor a line break (the block's indentation is taken
/// from its first line), has no line ending in a space, and every other character is printable.
fn is_literal_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.contains(" \n")
        && !s.ends_with(' ')
        && s.chars().all(|c| c == '\n' || is_quotable(c))
}

/// `s` as a literal block: `|-` (no final line break), `|` (one) or `|+` (more), then each line
/// at `indent` (empty lines stay empty).
fn literal_block(s: &str, indent: usize) -> String {
    let body = s.trim_end_matches('\n');
    let chomp = match s.len() - body.len() {
        0 => "|-",
        1 => "|",
        _ => "|+",
    };
    let mut out = chomp.to_owned();
    // Every final line break beyond the last line is an empty line of the block.
    let extra_breaks = (s.len() - body.len()).saturating_sub(1);
    for line in body.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', indent));
            out.push_str(line);
        }
    }
    for _ in 0..extra_breaks {
        out.push('\n');
    }
    out
}

/// `s` as a double-quoted scalar: JSON's escapes, plus `\uXXXX` for every character that is not
/// [printable](is_quotable) in both YAML versions.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if !is_quotable(c) => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn layout_is_block_style_with_sequences_at_the_key_column() {
        let value = json!({
            "apiVersion": "v1",
            "list": ["a", {"k": "v", "l": [1, 2]}, [], {}],
            "empty": {},
            "nested": {"x": null, "y": true, "z": 1.5},
        });
        assert_eq!(
            to_string(&value),
            "apiVersion: v1\n\
             empty: {}\n\
             list:\n\
             - a\n\
             - k: v\n  l:\n  - 1\n  - 2\n\
             - []\n\
             - {}\n\
             nested:\n  x: null\n  'y': true\n  z: 1.5\n"
        );
    }

    #[test]
    fn strings_take_the_first_safe_style() {
        let cases = [
            ("plain text, with commas", "plain text, with commas"),
            ("1h0m0s", "1h0m0s"),
            ("4cbf64e84fdd4b41", "4cbf64e84fdd4b41"),
            (".status.phase", ".status.phase"),
            ("1.0.0", "'1.0.0'"),
            ("-.inf", "'-.inf'"),
            ("0o17", "'0o17'"),
            ("190:20:30", "'190:20:30'"),
            ("yes", "'yes'"),
            ("Off", "'Off'"),
            ("~", "'~'"),
            ("", "''"),
            ("1_000", "'1_000'"),
            ("0x10", "'0x10'"),
            ("1e3", "'1e3'"),
            (".inf", "'.inf'"),
            ("2001-12-14", "'2001-12-14'"),
            ("<<", "'<<'"),
            ("it's: here", "'it''s: here'"),
            ("tab\there", "\"tab\\there\""),
            ("nel\u{85}", "\"nel\\u0085\""),
            ("two\nlines", "|-\n  two\n  lines"),
            ("ends\n", "|\n  ends"),
            ("ends\n\n", "|+\n  ends\n"),
            (" leading\nspace", "\" leading\\nspace\""),
        ];
        for (input, expected) in cases {
            assert_eq!(string_scalar(input, Some(2)), expected, "{input:?}");
        }
    }

    #[test]
    fn floats_keep_a_fraction_and_a_signed_exponent() {
        for (value, expected) in [
            (json!(1e300), "1.0e+300"),
            (json!(1.5e-7), "1.5e-7"),
            (json!(1000.0), "1000.0"),
            (json!(-2), "-2"),
        ] {
            let Value::Number(n) = value else {
                unreachable!()
            };
            assert_eq!(number(&n), expected);
        }
    }
}
