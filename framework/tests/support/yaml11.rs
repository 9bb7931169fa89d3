//! A YAML 1.1 reader for tests: what `kubectl` (go-yaml v2, YAML 1.1) makes of a YAML text, as a
//! JSON value.
//!
//! The structure comes from `granit-parser`'s event stream (block and flow collections, the
//! quoting style of each scalar); every *plain* scalar is then resolved with the implicit types of
//! the YAML 1.1 type repository (yaml.org/type: `bool`, `null`, `int`, `float`, `timestamp`,
//! `merge`, `value`), using the regular expressions published there verbatim. Quoted and block
//! scalars are strings. A value JSON cannot hold (a timestamp, `.inf`, a merge key, a non-string
//! map key) is returned as a tagged object or string (`{"!!timestamp": "2001-12-14"}`,
//! `"!!bool true"`), so it never equals the string it was written as.
//!
//! The 1.1-only line breaks (NEL, U+2028, U+2029) have no meaning to the 1.2 parser used for the
//! structure, so [`read`] refuses a text that holds them raw.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use granit_parser::{Event, Parser, ScalarStyle};
use regex::Regex;
use serde_json::{Map, Value};

/// Reads the single document of `text` as a YAML 1.1 reader does.
pub fn read(text: &str) -> Value {
    assert!(
        !text.contains(['\u{85}', '\u{2028}', '\u{2029}']),
        "a raw YAML 1.1 line break (NEL, U+2028, U+2029) in {text:?}"
    );
    let mut stack: Vec<Frame> = Vec::new();
    let mut done: Option<Value> = None;
    for item in Parser::new_from_str(text) {
        let (event, _span) = item.unwrap_or_else(|e| panic!("YAML parse error: {e:?}\n{text}"));
        let value = match event {
            Event::MappingStart(..) => {
                stack.push(Frame::Map(Map::new(), None));
                continue;
            }
            Event::SequenceStart(..) => {
                stack.push(Frame::Seq(Vec::new()));
                continue;
            }
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(map, _)) => Value::Object(map),
                other => panic!("unbalanced mapping end: {other:?}"),
            },
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items)) => Value::Array(items),
                other => panic!("unbalanced sequence end: {other:?}"),
            },
            Event::Scalar(text, style, _, tag) => {
                assert!(tag.is_none(), "unexpected tag on {text:?}");
                if style == ScalarStyle::Plain {
                    resolve_plain(&text)
                } else {
                    Value::String(text.into_owned())
                }
            }
            Event::Alias(_) => panic!("aliases are not expected"),
            _ => continue,
        };
        match stack.last_mut() {
            None => {
                assert!(done.is_none(), "more than one document");
                done = Some(value);
            }
            Some(Frame::Seq(items)) => items.push(value),
            Some(Frame::Map(map, key)) => match key.take() {
                None => *key = Some(key_string(value)),
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
    }
    done.unwrap_or(Value::Null)
}

#[derive(Debug)]
enum Frame {
    Map(Map<String, Value>, Option<String>),
    Seq(Vec<Value>),
}

/// A JSON key for a resolved YAML key: a string stays itself, anything else is tagged.
fn key_string(key: Value) -> String {
    match key {
        Value::String(s) => s,
        Value::Bool(b) => format!("!!bool {b}"),
        Value::Null => "!!null".to_owned(),
        Value::Number(n) => format!("!!number {n}"),
        other => format!("!!{other}"),
    }
}

/// Whether the whole of `s` matches `pattern` (compiled once per pattern).
fn full(pattern: &'static str) -> Matcher {
    static CACHE: LazyLock<Mutex<HashMap<&'static str, Regex>>> = LazyLock::new(Default::default);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let regex = cache
        .entry(pattern)
        .or_insert_with(|| Regex::new(&format!("^(?:{pattern})$")).expect("a valid pattern"))
        .clone();
    Matcher(regex)
}

struct Matcher(Regex);

impl Matcher {
    fn is_match(&self, s: &str) -> bool {
        self.0.is_match(s)
    }
}

/// The implicit resolution of a plain scalar in YAML 1.1.
fn resolve_plain(s: &str) -> Value {
    // yaml.org/type/bool.html, null.html, merge.html, value.html
    if full("y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF")
        .is_match(s)
    {
        return Value::Bool(matches!(
            s,
            "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON"
        ));
    }
    if full("~|null|Null|NULL|").is_match(s) {
        return Value::Null;
    }
    if s == "<<" {
        return serde_json::json!({"!!merge": s});
    }
    if s == "=" {
        return serde_json::json!({"!!value": s});
    }
    // yaml.org/type/int.html
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1i128, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let int = |radix: u32, text: &str| {
        i128::from_str_radix(&text.replace('_', ""), radix).map(|n| sign * n)
    };
    let as_int = if full("[-+]?0b[0-1_]+").is_match(s) {
        int(2, &digits[2..]).ok()
    } else if full("[-+]?0[0-7_]+").is_match(s) {
        int(8, &digits[1..]).ok()
    } else if full("[-+]?(0|[1-9][0-9_]*)").is_match(s) {
        int(10, digits).ok()
    } else if full("[-+]?0x[0-9a-fA-F_]+").is_match(s) {
        int(16, &digits[2..]).ok()
    } else if full("[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+").is_match(s) {
        digits
            .replace('_', "")
            .split(':')
            .try_fold(0i128, |acc, part| {
                part.parse::<i128>().map(|p| acc * 60 + p)
            })
            .ok()
            .map(|n| sign * n)
    } else {
        None
    };
    if let Some(n) = as_int {
        return i64::try_from(n)
            .map(Value::from)
            .or_else(|_| u64::try_from(n).map(Value::from))
            .unwrap_or_else(|_| serde_json::json!({"!!int": s}));
    }
    // yaml.org/type/float.html
    if full(r"[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?").is_match(s) {
        return s
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            .unwrap_or_else(|| serde_json::json!({"!!float": s}));
    }
    if full(r"[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)")
        .is_match(s)
    {
        return serde_json::json!({"!!float": s});
    }
    // yaml.org/type/timestamp.html
    if full(
        r"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?([Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9](\.[0-9]*)?(([ \t]*)Z|[-+][0-9][0-9]?(:[0-9][0-9])?)?",
    )
    .is_match(s)
    {
        return serde_json::json!({"!!timestamp": s});
    }
    Value::String(s.to_owned())
}
