//! `kubernaut_framework::yaml::to_string` reads back as the same value in a YAML 1.1 reader (the
//! oracle in `support/yaml11.rs`: YAML 1.1 type resolution, as kubectl reads) and in a YAML 1.2
//! reader (`serde_yaml`).

mod support {
    pub mod yaml11;
}

use kubernaut_framework::yaml;
use proptest::prelude::*;
use serde_json::{Value, json};
use support::yaml11;

/// Strings that a YAML 1.1 or 1.2 reader resolves to something else when written plain.
const HOSTILE: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "N",
    "YES",
    "Off",
    "true",
    "False",
    "~",
    "null",
    "NULL",
    "",
    "1_000",
    "0x10",
    "0o17",
    "0b101",
    "017",
    "1e3",
    "1.5e+3",
    "1.0",
    ".5",
    ".inf",
    "-.inf",
    ".NaN",
    "190:20:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "<<",
    "=",
    "-",
    "- item",
    "? key",
    ": value",
    "key: value",
    "# comment",
    "a # b",
    "trailing ",
    " leading",
    "tab\there",
    "line\nbreak",
    "ends\n",
    "ends\n\n",
    "\nstarts",
    "nel\u{85}",
    "ls\u{2028}ps\u{2029}",
    "bom\u{feff}",
    "del\u{7f}",
    "'single'",
    "\"double\"",
    "{a: 1}",
    "[1, 2]",
    "*alias",
    "&anchor",
    "!tag",
    "%directive",
    "@at",
    "`tick",
    "|",
    ">",
    "---",
    "...",
    "1h0m0s",
    "v1.2.3",
    "1.0.0",
    "4cbf64e84fdd4b41",
];

fn assert_reads_back(value: &Value) {
    let text = yaml::to_string(value);
    assert_eq!(yaml11::read(&text), *value, "YAML 1.1 reading of:\n{text}");
    let yaml12: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    assert_eq!(yaml12, *value, "YAML 1.2 reading of:\n{text}");
}

#[test]
fn hostile_strings_read_back_unchanged_in_yaml_1_1_and_1_2() {
    for s in HOSTILE {
        // As a value, as a key, as a list item, and nested the way a PipelineRun carries them.
        assert_reads_back(&json!(s));
        assert_reads_back(&json!({ *s: s }));
        assert_reads_back(&json!([s, [s], { "k": s }]));
        assert_reads_back(&json!({
            "metadata": {"annotations": {"example.com/flag": s}, "labels": {"x": s}},
            "spec": {"params": [{"name": "P", "value": s}]},
        }));
    }
}

#[test]
fn numbers_booleans_and_null_keep_their_type() {
    for value in [
        json!(0),
        json!(-17),
        json!(u64::MAX),
        json!(1.5),
        json!(1000.0),
        json!(1e300),
        json!(-2.5e-7),
        json!(true),
        json!(false),
        json!(null),
        json!({}),
        json!([]),
        json!({"a": {}, "b": [], "c": [[]]}),
    ] {
        assert_reads_back(&value);
    }
}

#[test]
fn the_1_1_oracle_misreads_what_a_plain_emitter_writes() {
    // The oracle must be able to fail: plain `yes`, `1_000`, `2001-12-14` are not strings in 1.1.
    assert_eq!(yaml11::read("a: yes"), json!({"a": true}));
    assert_eq!(yaml11::read("a: 1_000"), json!({"a": 1000}));
    assert_eq!(yaml11::read("a: 0x10"), json!({"a": 16}));
    assert_eq!(yaml11::read("a: 1e3"), json!({"a": "1e3"}));
    assert_ne!(yaml11::read("a: 2001-12-14"), json!({"a": "2001-12-14"}));
    assert_ne!(yaml11::read("on: x"), json!({"on": "x"}));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_string_reads_back_unchanged(s in any::<String>(), t in "[ -~\\n\\t]{0,12}") {
        for s in [&s, &t] {
            let value = json!({ s.as_str(): [s, {"v": s}] });
            let text = yaml::to_string(&value);
            prop_assert_eq!(yaml11::read(&text), value.clone(), "{}", text);
            let yaml12: Value = serde_yaml::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(yaml12, value, "{}", text);
        }
    }
}
