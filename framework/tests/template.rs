//! Template rendering: injection safety, load-time checks, limits, identity and hot reload.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use kubernaut_framework::template::{
    ChildIdentity, ChildKind, ReloadOutcome, TemplateDecl, TemplateError, TemplateSet,
    TemplateStore, apply_identity,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn config_map() -> ChildKind {
    ChildKind {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    }
}

fn decl(file: &str, sample: Value) -> TemplateDecl {
    TemplateDecl {
        file: file.into(),
        child: config_map(),
        sample,
    }
}

/// A directory holding `files` (name → content); subdirectories are created.
fn template_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn load_one(source: &str, sample: Value) -> Result<TemplateSet, TemplateError> {
    let dir = template_dir(&[("t.yaml.j2", source)]);
    TemplateSet::load(dir.path(), &[decl("t.yaml.j2", sample)])
}

/// Places `v` as a mapping value, a mapping key, a block list item, a flow mapping value, a flow
/// list item and a nested mapping value.
const POSITIONS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: fixed
data:
  value: {{ v }}
  other: fixed
keyed:
  {{ v }}: k
list:
  - {{ v }}
  - fixed
flow: {name: x, value: {{ v }}}
flowList: [{{ v }}, y]
nested:
  - name: a
    value: {{ v }}
"#;

fn positions_set() -> TemplateSet {
    load_one(POSITIONS, json!({"v": "sample"})).unwrap()
}

/// What POSITIONS must parse to for a string `v`.
fn expected_positions(v: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "fixed"},
        "data": {"value": v, "other": "fixed"},
        "keyed": {v: "k"},
        "list": [v, "fixed"],
        "flow": {"name": "x", "value": v},
        "flowList": [v, "y"],
        "nested": [{"name": "a", "value": v}],
    })
}

/// Renders POSITIONS with `v` and checks, both through `render` and by parsing the raw YAML text
/// independently, that every position holds `v` byte for byte and that the key sets are exactly
/// the template's.
fn assert_round_trip(set: &TemplateSet, v: &str) {
    let context = json!({"v": v});
    let expected = expected_positions(v);

    let rendered = set
        .render("t.yaml.j2", &context)
        .unwrap_or_else(|e| panic!("render {v:?}: {e}"));
    assert_eq!(rendered, expected, "render of {v:?}");

    let text = set.render_yaml("t.yaml.j2", &context).unwrap();
    let parsed: Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|e| panic!("YAML of {v:?} does not parse: {e}\n{text}"));
    assert_eq!(parsed, expected, "independent parse of {v:?}:\n{text}");
    let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "apiVersion",
            "data",
            "flow",
            "flowList",
            "keyed",
            "kind",
            "list",
            "metadata",
            "nested"
        ]
    );
    // The text is printable YAML: one line per template line, no raw line breaks from values.
    assert_eq!(text.lines().count(), POSITIONS.lines().count(), "{text}");
}

/// Characters that mean something to YAML, JSON or Jinja, or that YAML cannot carry raw.
const TRICKY: &[char] = &[
    '\0',
    '\t',
    '\n',
    '\r',
    '\x0B',
    '\x0C',
    '\x1B',
    '\x7F',
    '\u{80}',
    '\u{85}',
    '\u{9F}',
    '\u{A0}',
    '\u{2028}',
    '\u{2029}',
    '\u{FEFF}',
    '\u{FFFE}',
    '\u{FFFF}',
    '\u{E000}',
    '\u{E001}',
    '\u{1F600}',
    '\u{10FFFF}',
    ' ',
    '#',
    ':',
    '-',
    '?',
    ',',
    '[',
    ']',
    '{',
    '}',
    '&',
    '*',
    '!',
    '|',
    '>',
    '\'',
    '"',
    '%',
    '@',
    '`',
    '\\',
    '/',
    '~',
    '=',
];

/// Whole strings that are meaningful YAML or Jinja on their own.
const CORPUS: &[&str] = &[
    "",
    " ",
    ": ",
    "a: b",
    "# comment",
    "x #comment",
    "- item",
    "-",
    "{{ v }}",
    "{% if true %}x{% endif %}",
    "{# c #}",
    "'",
    "''",
    "\"",
    "\\",
    "\\n",
    "\\u0041",
    "\\\"",
    "|",
    "| \n  block",
    ">",
    "> folded",
    "&anchor",
    "*alias",
    "&a [1, 2]",
    "!!tag",
    "!!binary aGVsbG8=",
    "!local x",
    "---",
    "...",
    "--- \n...",
    "\t",
    "a\tb",
    "\r",
    "\r\n",
    "\n",
    "line1\nline2",
    "\u{85}",
    "x\u{85}y",
    "\u{2028}",
    "\u{2029}",
    "\u{FEFF}",
    "\u{FEFF}starts with a BOM",
    "  leading",
    "trailing  ",
    "  both  ",
    "x\n  injected: true",
    "x\ninjected: true",
    "x\n- injected",
    "x}, injected: {y: z",
    "x], [y",
    "\", injected: \"",
    "\"}\ninjected: true\n#",
    "true",
    "false",
    "yes",
    "no",
    "on",
    "off",
    "null",
    "~",
    "NULL",
    "123",
    "0x1F",
    "0o17",
    "1e3",
    "1_000",
    ".inf",
    "-.inf",
    ".nan",
    "2001-12-14t21:59:43.10-05:00",
    "=",
    "<<",
    "%YAML 1.2",
    "@at",
    "`tick`",
    "?",
    "? complex",
    "[",
    "]",
    "{",
    "}",
    "{}",
    "[]",
    "\u{0}\u{1}\u{1F}",
    "\u{7F}\u{80}\u{9F}",
    "\u{E000}0\u{E001}",
    "\"\u{E000}0\u{E001}\"",
    "😀 emoji and 漢字 and עברית",
    "\u{10FFFF}",
];

#[test]
fn corpus_values_round_trip_in_every_position() {
    let set = positions_set();
    for v in CORPUS {
        assert_round_trip(&set, v);
    }
    for c in TRICKY {
        assert_round_trip(&set, &c.to_string());
        assert_round_trip(&set, &format!("a{c}b{c}"));
    }
}

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        1 => proptest::sample::select(TRICKY),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Strings drawn from the whole Unicode scalar range (`any::<char>()` covers `\0..=\u{10FFFF}`),
    /// biased towards YAML-significant characters.
    #[test]
    fn arbitrary_strings_round_trip(chars in proptest::collection::vec(any_char(), 0..48)) {
        let v: String = chars.into_iter().collect();
        assert_round_trip(&positions_set_cached(), &v);
    }

    /// Concatenations of the metacharacter corpus.
    #[test]
    fn corpus_combinations_round_trip(parts in proptest::collection::vec(proptest::sample::select(CORPUS), 1..5)) {
        let v = parts.concat();
        assert_round_trip(&positions_set_cached(), &v);
    }

    #[test]
    fn numbers_and_bools_round_trip(i in any::<i64>(), u in any::<u64>(), f in any::<f64>().prop_filter("finite", |f| f.is_finite()), b in any::<bool>()) {
        let set = scalars_set();
        let context = json!({"i": i, "u": u, "f": f, "b": b});
        let rendered = set.render("t.yaml.j2", &context).unwrap();
        prop_assert_eq!(&rendered["data"], &context);
    }
}

fn positions_set_cached() -> Arc<TemplateSet> {
    static SET: std::sync::OnceLock<Arc<TemplateSet>> = std::sync::OnceLock::new();
    Arc::clone(SET.get_or_init(|| Arc::new(positions_set())))
}

fn scalars_set() -> Arc<TemplateSet> {
    static SET: std::sync::OnceLock<Arc<TemplateSet>> = std::sync::OnceLock::new();
    let source = "apiVersion: v1\nkind: ConfigMap\ndata:\n  i: {{ i }}\n  u: {{ u }}\n  f: {{ f }}\n  b: {{ b }}\n";
    Arc::clone(SET.get_or_init(|| {
        Arc::new(load_one(source, json!({"i": 1, "u": 2, "f": 0.5, "b": true})).unwrap())
    }))
}

#[test]
fn non_string_values_keep_their_type() {
    let source =
        "apiVersion: v1\nkind: ConfigMap\ndata: {{ data }}\nlist: [{{ n }}, {{ t }}, {{ z }}]\n";
    let set = load_one(source, json!({"data": {}, "n": 1, "t": true, "z": null})).unwrap();
    // (value, expected as it comes back)
    let cases = [
        json!(0),
        json!(-17),
        json!(u64::MAX),
        json!(1.5),
        json!(3.0),
        json!(-0.0),
        json!(1e300),
        json!(true),
        json!(null),
        json!("1"),
        json!(["a", 1, {"b": [null, false]}]),
        json!({"nested": {"key: with colon": "v\n  injected: true", "": "empty key"}}),
        json!({}),
        json!([]),
    ];
    for value in cases {
        let context = json!({"data": value, "n": value, "t": value, "z": value});
        let rendered = set.render("t.yaml.j2", &context).unwrap();
        assert_eq!(rendered["data"], value, "{value}");
        assert_eq!(rendered["list"], json!([value, value, value]), "{value}");
    }
    // Expressions produce typed values too.
    let set = load_one(
        "apiVersion: v1\nkind: ConfigMap\ndata: {a: {{ 1 + 2 }}, b: {{ 'x' ~ 1 }}, c: {{ [1, 'two'] }}, d: {{ 0.5 * 3 }}}\n",
        json!({}),
    )
    .unwrap();
    let rendered = set.render("t.yaml.j2", &json!({})).unwrap();
    assert_eq!(
        rendered["data"],
        json!({"a": 3, "b": "x1", "c": [1, "two"], "d": 1.5})
    );
}

#[test]
fn safe_filter_does_not_bypass_quoting() {
    let source =
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: {{ v | safe }}\n  b: {{ v | upper }}\n";
    let set = load_one(source, json!({"v": "x"})).unwrap();
    let v = "x\ninjected: true";
    let rendered = set.render("t.yaml.j2", &json!({"v": v})).unwrap();
    assert_eq!(rendered["data"], json!({"a": v, "b": v.to_uppercase()}));
}

#[test]
fn non_finite_numbers_are_refused() {
    let source = "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: {{ x * 1e308 * 10 }}\n";
    let set = load_one(source, json!({"x": 0})).unwrap();
    let err = set.render("t.yaml.j2", &json!({"x": 1})).unwrap_err();
    assert!(
        matches!(err, TemplateError::Render { line: Some(4), .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("cannot be printed"), "{err}");
}

#[test]
fn undefined_variable_error_names_it() {
    let source = "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: {{ wfe.spec.name }}\n  b: {{ wfe.spec.missing }}\n";
    let set = load_one(
        source,
        json!({"wfe": {"spec": {"name": "n", "missing": "m"}}}),
    )
    .unwrap();
    let err = set
        .render("t.yaml.j2", &json!({"wfe": {"spec": {"name": "n"}}}))
        .unwrap_err();
    assert!(
        matches!(err, TemplateError::Render { line: Some(5), .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("`wfe.spec.missing` is undefined"), "{text}");
    assert!(text.starts_with("template `t.yaml.j2` line 5:"), "{text}");

    // Also when the sample lacks it: the load fails and says it was the sample render.
    let err = load_one(source, json!({"wfe": {"spec": {"name": "n"}}})).unwrap_err();
    assert_eq!(err.file(), "t.yaml.j2");
    assert!(
        err.to_string().contains("`wfe.spec.missing` is undefined"),
        "{err}"
    );
    assert!(err.to_string().contains("sample"), "{err}");

    // Undefined in a condition and a loop, and a top-level name.
    for (body, name) in [
        ("{% if nope %}x: 1{% endif %}", "nope"),
        ("{% for x in nope %}{% endfor %}", "nope"),
        ("a: {{ nope | lower }}", "nope"),
    ] {
        let source = format!("apiVersion: v1\nkind: ConfigMap\n{body}\n");
        let err = load_one(&source, json!({})).unwrap_err();
        assert!(
            err.to_string().contains(&format!("`{name}`")),
            "{body}: {err}"
        );
    }
}

#[test]
fn optional_fields_with_default() {
    // The idioms for optional values under strict undefined.
    let source = r#"apiVersion: v1
kind: ConfigMap
data:
  timeout: {{ (wfe.spec.executionConfig | default({})).timeout | default(config.defaultTimeout) }}
  account: {{ wfe.spec.serviceAccountName | default(none) }}
{%- if wfe.spec.parameters is defined %}
  first: {{ (wfe.spec.parameters | dictsort | first)[1] }}
{%- endif %}
"#;
    let config = json!({"defaultTimeout": "1h"});
    let set = load_one(source, json!({"wfe": {"spec": {}}, "config": config})).unwrap();
    // (spec, expected data)
    let cases = [
        (json!({}), json!({"timeout": "1h", "account": null})),
        (
            json!({"executionConfig": {}}),
            json!({"timeout": "1h", "account": null}),
        ),
        (
            json!({"executionConfig": {"timeout": "5m"}, "serviceAccountName": "sa", "parameters": {"B": "2", "A": "1"}}),
            json!({"timeout": "5m", "account": "sa", "first": "1"}),
        ),
    ];
    for (spec, expected) in cases {
        let context = json!({"wfe": {"spec": spec}, "config": config});
        let rendered = set.render("t.yaml.j2", &context).unwrap();
        assert_eq!(rendered["data"], expected, "{spec}");
    }
}

#[test]
fn runaway_templates_stop_on_fuel_or_recursion() {
    let cases = [
        (
            "{% for i in range(100000000) %}x{% endfor %}",
            "ran out of fuel",
        ),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            "ran out of fuel",
        ),
        (
            "{% set s = 'x' * 100000 %}{% for i in range(1000) %}{{ s }}{% endfor %}",
            "ran out of fuel",
        ),
        (
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursion",
        ),
    ];
    for (body, expected) in cases {
        let source = format!("apiVersion: v1\nkind: ConfigMap\ndata:\n  a: |\n    {body}\n");
        let started = std::time::Instant::now();
        let err = load_one(&source, json!({})).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{body} took {:?}",
            started.elapsed()
        );
        let text = err.to_string();
        assert!(text.contains(expected), "{body}: {text}");
        assert!(
            text.contains("t.yaml.j2") && text.contains("line 5"),
            "{body}: {text}"
        );
    }
}

#[test]
fn load_rejects_wrong_shapes_naming_the_file() {
    // (template, expected message fragment)
    let cases = [
        (
            "- apiVersion: v1\n  kind: ConfigMap\n",
            "renders a YAML list, not a mapping",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n---\napiVersion: v1\nkind: ConfigMap\n",
            "renders 2 YAML documents",
        ),
        (
            "apiVersion: v1\nkind: Secret\n",
            "renders v1, Kind=Secret, but it is declared to render v1, Kind=ConfigMap",
        ),
        (
            "apiVersion: apps/v1\nkind: ConfigMap\n",
            "renders apps/v1, Kind=ConfigMap",
        ),
        ("kind: ConfigMap\n", "renders ?, Kind=ConfigMap"),
        ("just a string\n", "renders a YAML string"),
        ("", "renders a YAML null (nothing), not a mapping"),
        (
            "{% if false %}x: 1{% endif %}",
            "renders a YAML null (nothing), not a mapping",
        ),
        (
            "# only a comment\n",
            "renders a YAML null (nothing), not a mapping",
        ),
        ("apiVersion: v1\nkind: ConfigMap\ndata: [\n", "invalid YAML"),
    ];
    for (source, expected) in cases {
        let dir = template_dir(&[("tekton/child.yaml.j2", source)]);
        let err =
            TemplateSet::load(dir.path(), &[decl("tekton/child.yaml.j2", json!({}))]).unwrap_err();
        assert_eq!(err.file(), "tekton/child.yaml.j2");
        let text = err.to_string();
        assert!(text.contains("template `tekton/child.yaml.j2`"), "{text}");
        assert!(text.contains(expected), "{source:?}: {text}");
    }
}

#[test]
fn yaml_errors_point_at_template_and_rendered_lines() {
    // Five loop items shift the rendered lines two below the template lines.
    let source = "apiVersion: v1\nkind: ConfigMap\nitems:\n{%- for k in keys %}\n  - {{ k }}\n{%- endfor %}\nbad: a: b\n";
    let err = load_one(source, json!({"keys": ["a", "b", "c", "d", "e"]})).unwrap_err();
    let TemplateError::Sample { source } = &err else {
        panic!("{err:?}")
    };
    let TemplateError::Output {
        template_line,
        rendered,
        message,
        ..
    } = source.as_ref()
    else {
        panic!("{source:?}")
    };
    assert_eq!(*template_line, Some(7), "{err}");
    assert_eq!(rendered, &Some((9, "bad: a: b".to_owned())), "{err}");
    assert!(message.contains("invalid YAML"), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with("template `t.yaml.j2` line 7: invalid YAML"),
        "{text}"
    );
    assert!(text.contains("rendered line 9: bad: a: b"), "{text}");
}

#[test]
fn outputs_must_be_whole_values() {
    // (template lines, a fragment of the error, the line named)
    let cases = [
        ("image: registry/{{ tag }}", "must be a whole YAML value", 3),
        (
            "flow: {image: registry/{{ tag }}}",
            "must be a whole YAML value",
            3,
        ),
        (
            "script: |\n  echo {{ tag }}",
            "must be a whole YAML value",
            4,
        ),
        (
            "msg: \"hello {{ tag }}\"",
            "build strings inside the expression",
            3,
        ),
        (
            "msg: 'hello {{ tag }}'",
            "build strings inside the expression",
            3,
        ),
    ];
    for (lines, expected, line) in cases {
        let source = format!("apiVersion: v1\nkind: ConfigMap\n{lines}\n");
        let err = load_one(&source, json!({"tag": "v1"})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(expected), "{lines}: {text}");
        assert!(text.contains(&format!("line {line}:")), "{lines}: {text}");
    }
    // Building the string inside the expression is the supported form, and is injection-safe.
    let source = "apiVersion: v1\nkind: ConfigMap\nimage: {{ 'registry/' ~ tag }}\n";
    let set = load_one(source, json!({"tag": "v1"})).unwrap();
    let tag = "v1 #, injected: true";
    let rendered = set.render("t.yaml.j2", &json!({"tag": tag})).unwrap();
    assert_eq!(rendered["image"], format!("registry/{tag}"));
    // An output in a YAML comment is harmless and allowed.
    let source = "apiVersion: v1\nkind: ConfigMap\n# rendered for {{ tag }}\n";
    load_one(source, json!({"tag": "v1"})).unwrap();
}

#[test]
fn syntax_errors_and_forbidden_features_name_file_and_line() {
    let cases = [
        (
            "apiVersion: v1\nkind: ConfigMap\ndata: {{ x \n",
            "syntax error",
            Some(3),
        ),
        ("apiVersion: v1\n{% if %}\n", "syntax error", Some(2)),
        (
            "apiVersion: v1\nkind: ConfigMap\n{% include 'other.yaml' %}\n",
            "syntax error",
            Some(3),
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n{% extends 'base.yaml' %}\n",
            "syntax error",
            Some(3),
        ),
        // No environment or debug access.
        (
            "apiVersion: v1\nkind: ConfigMap\nhome: {{ env.HOME }}\n",
            "`env` is undefined",
            Some(3),
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nd: {{ debug() }}\n",
            "debug",
            Some(3),
        ),
    ];
    for (source, expected, line) in cases {
        let err = load_one(source, json!({})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("template `t.yaml.j2`"), "{text}");
        assert!(text.contains(expected), "{source:?}: {text}");
        if let Some(line) = line {
            assert!(text.contains(&format!("line {line}")), "{source:?}: {text}");
        }
    }
}

#[test]
fn declarations_must_stay_inside_the_directory() {
    let dir = template_dir(&[("t.yaml.j2", "apiVersion: v1\nkind: ConfigMap\n")]);
    for bad in [
        "../t.yaml.j2",
        "/etc/passwd",
        "./t.yaml.j2",
        "",
        "a/../../t",
    ] {
        let err = TemplateSet::load(dir.path(), &[decl(bad, json!({}))]).unwrap_err();
        assert!(
            matches!(err, TemplateError::InvalidDeclaration { .. }),
            "{bad}: {err}"
        );
    }
    let err = TemplateSet::load(
        dir.path(),
        &[decl("t.yaml.j2", json!({})), decl("t.yaml.j2", json!({}))],
    )
    .unwrap_err();
    assert!(err.to_string().contains("declared twice"), "{err}");
    let err = TemplateSet::load(dir.path(), &[decl("missing.yaml.j2", json!({}))]).unwrap_err();
    assert!(
        matches!(err, TemplateError::Read { .. }) && err.to_string().contains("missing.yaml.j2")
    );
    let set = TemplateSet::load(dir.path(), &[decl("t.yaml.j2", json!({}))]).unwrap();
    let err = set.render("other.yaml.j2", &json!({})).unwrap_err();
    assert!(matches!(err, TemplateError::NotDeclared { .. }), "{err}");
}

#[test]
fn revision_is_a_stable_content_hash() {
    let a = "apiVersion: v1\nkind: ConfigMap\n";
    let b = "apiVersion: v1\nkind: ConfigMap\ndata: {}\n";
    let revision = |content: &str, name: &str| {
        let dir = template_dir(&[(name, content)]);
        TemplateSet::load(dir.path(), &[decl(name, json!({}))])
            .unwrap()
            .revision()
            .to_owned()
    };
    let first = revision(a, "t.yaml.j2");
    assert_eq!(first.len(), 16);
    assert!(
        first
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(first, revision(a, "t.yaml.j2"), "same files, same revision");
    assert_ne!(first, revision(b, "t.yaml.j2"), "content changes it");
    assert_ne!(first, revision(a, "u.yaml.j2"), "the name changes it");
}

#[test]
fn identity_is_owned_by_the_framework() {
    let source = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ name }}
  generateName: evil-
  namespace: elsewhere
  labels:
    kubernaut.ai/workflow-execution: someone-else
    team: payments
  annotations:
    note: kept
  ownerReferences: [{apiVersion: v1, kind: Pod, name: p, uid: u}]
data: {}
"#;
    let set = load_one(source, json!({"name": "n"})).unwrap();
    let mut child = set
        .render("t.yaml.j2", &json!({"name": "template-name"}))
        .unwrap();
    let identity = ChildIdentity {
        name: "wfe-f3457dcc8fbcb6d9".into(),
        namespace: "kubernaut-workflows".into(),
        labels: BTreeMap::from([
            ("kubernaut.ai/workflow-execution".into(), "wfe-1".into()),
            ("kubernaut.ai/source-namespace".into(), "default".into()),
        ]),
        annotations: BTreeMap::from([(
            "kubernaut.ai/template-revision".into(),
            set.revision().into(),
        )]),
    };
    apply_identity(&mut child, &identity);
    assert_eq!(
        child["metadata"],
        json!({
            "name": "wfe-f3457dcc8fbcb6d9",
            "namespace": "kubernaut-workflows",
            "labels": {
                "kubernaut.ai/workflow-execution": "wfe-1",
                "kubernaut.ai/source-namespace": "default",
                "team": "payments",
            },
            "annotations": {"note": "kept", "kubernaut.ai/template-revision": set.revision()},
        })
    );

    // A template without metadata (or with a non-object one) gets one.
    for metadata in [None, Some(json!("oops"))] {
        let mut child = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        if let Some(m) = metadata {
            child["metadata"] = m;
        }
        apply_identity(&mut child, &identity);
        assert_eq!(child["metadata"]["name"], "wfe-f3457dcc8fbcb6d9");
        assert_eq!(
            child["metadata"]["labels"]["kubernaut.ai/source-namespace"],
            "default"
        );
    }
}

const GOOD_V1: &str =
    "apiVersion: v1\nkind: ConfigMap\ndata:\n  version: \"1\"\n  name: {{ name }}\n";
const GOOD_V2: &str =
    "apiVersion: v1\nkind: ConfigMap\ndata:\n  version: \"2\"\n  name: {{ name }}\n";
const BROKEN: &str = "apiVersion: v1\nkind: ConfigMap\ndata:\n  name: {{ name }\n";

fn store_decls() -> Vec<TemplateDecl> {
    vec![decl("child.yaml.j2", json!({"name": "sample"}))]
}

fn version(store: &TemplateStore) -> Value {
    store
        .current()
        .render("child.yaml.j2", &json!({"name": "x"}))
        .unwrap()["data"]["version"]
        .clone()
}

#[test]
fn reload_keeps_the_last_good_set() {
    let dir = template_dir(&[("child.yaml.j2", GOOD_V1)]);
    let file = dir.path().join("child.yaml.j2");
    let store = TemplateStore::load(dir.path(), &store_decls()).unwrap();
    let first = store.current().revision().to_owned();
    assert_eq!(store.reload(), ReloadOutcome::Unchanged);

    std::fs::write(&file, BROKEN).unwrap();
    let outcome = store.reload();
    let ReloadOutcome::Rejected {
        kept_revision,
        error,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(kept_revision, &first);
    assert!(
        error.contains("child.yaml.j2") && error.contains("line 4"),
        "{error}"
    );
    assert_eq!(store.current().revision(), first);
    assert_eq!(version(&store), "1", "the old set keeps serving");
    assert_eq!(
        store.reload(),
        ReloadOutcome::Unchanged,
        "one report per broken content"
    );

    std::fs::write(&file, GOOD_V2).unwrap();
    let ReloadOutcome::Loaded { revision } = store.reload() else {
        panic!("fixed edit not loaded")
    };
    assert_ne!(revision, first);
    assert_eq!(store.current().revision(), revision);
    assert_eq!(version(&store), "2");

    std::fs::remove_file(&file).unwrap();
    assert!(matches!(store.reload(), ReloadOutcome::Rejected { .. }));
    assert_eq!(version(&store), "2");
}

/// Builds the layout the kubelet gives a ConfigMap volume: `file -> ..data/file`,
/// `..data -> ..<version>/`.
#[cfg(unix)]
fn configmap_volume(dir: &Path, version: &str, content: &str) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("child.yaml.j2"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    // The kubelet's atomic swap: rename over the old `..data` link.
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("child.yaml.j2");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/child.yaml.j2", &link).unwrap();
    }
}

#[cfg(unix)]
#[test]
fn reload_follows_a_configmap_symlink_swap() {
    let dir = tempfile::tempdir().unwrap();
    configmap_volume(dir.path(), "2025_01_01_v1", GOOD_V1);
    let store = TemplateStore::load(dir.path(), &store_decls()).unwrap();
    assert_eq!(version(&store), "1");

    configmap_volume(dir.path(), "2025_01_02_v2", GOOD_V2);
    std::fs::remove_dir_all(dir.path().join("..2025_01_01_v1")).unwrap();
    assert!(matches!(store.reload(), ReloadOutcome::Loaded { .. }));
    assert_eq!(version(&store), "2");

    configmap_volume(dir.path(), "2025_01_03_v3", BROKEN);
    assert!(matches!(store.reload(), ReloadOutcome::Rejected { .. }));
    assert_eq!(version(&store), "2");
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<ReloadOutcome>) -> ReloadOutcome {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no outcome within 10s")
        .expect("watch stopped")
}

#[tokio::test]
async fn watch_reports_changes() {
    let dir = template_dir(&[("child.yaml.j2", GOOD_V1)]);
    let store = Arc::new(TemplateStore::load(dir.path(), &store_decls()).unwrap());
    let first = store.current().revision().to_owned();
    let mut outcomes = Arc::clone(&store).watch(Duration::from_millis(100));
    std::fs::write(dir.path().join("child.yaml.j2"), BROKEN).unwrap();
    let outcome = next(&mut outcomes).await;
    assert!(
        matches!(&outcome, ReloadOutcome::Rejected { kept_revision, .. } if *kept_revision == first),
        "{outcome:?}"
    );

    std::fs::write(dir.path().join("child.yaml.j2"), GOOD_V2).unwrap();
    let outcome = next(&mut outcomes).await;
    let ReloadOutcome::Loaded { revision } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(store.current().revision(), revision);
}

/// Labels and annotations the template writes are checked as the API server checks them: what it
/// would refuse fails the render (and the load, when the sample already produces it).
#[test]
fn metadata_the_api_server_would_refuse_fails_the_render() {
    let source = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels:\n    team: {{ team }}\n  annotations:\n    {{ key }}: {{ note }}\n";
    let sample = json!({"team": "payments", "key": "example.com/note", "note": "ok"});
    let set = load_one(source, sample.clone()).unwrap();
    let long = "a".repeat(64);
    let cases: [(Value, &str); 7] = [
        (
            json!({"team": "a\nb"}),
            r#"metadata.labels["team"]: "a\nb" is not a valid label value"#,
        ),
        (json!({"team": long}), "is not a valid label value"),
        (json!({"team": "-x"}), "is not a valid label value"),
        (
            json!({"team": 3}),
            r#"metadata.labels["team"]: the value is a number, not a string"#,
        ),
        (
            json!({"key": "Example.com/note"}),
            r#"metadata.annotations["Example.com/note"]: invalid key: the prefix "Example.com" is not a DNS subdomain"#,
        ),
        (
            json!({"key": "bad key"}),
            "invalid key: the name \"bad key\"",
        ),
        (
            json!({"note": "x".repeat(300 * 1024)}),
            "metadata.annotations: 307",
        ),
    ];
    for (overrides, fragment) in cases {
        let mut context = sample.clone();
        for (k, v) in overrides.as_object().unwrap() {
            context[k] = v.clone();
        }
        let err = set.render("t.yaml.j2", &context).unwrap_err();
        assert!(
            matches!(err, TemplateError::Metadata { .. }) && err.metric_label() == "metadata",
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(fragment), "{overrides}: {text}");
        assert!(
            text.ends_with("the API server would refuse the object"),
            "{text}"
        );
    }
    // Empty label values and annotation values of any characters are fine.
    let fine = json!({"team": "", "key": "k", "note": "multi\nline: {yes}"});
    assert!(set.render("t.yaml.j2", &fine).is_ok());
    // A template whose sample already renders a bad label is refused at load.
    let err = load_one(source, json!({"team": "a b", "key": "k", "note": "x"})).unwrap_err();
    assert!(matches!(err, TemplateError::Sample { .. }), "{err}");
    assert!(err.to_string().contains("not a valid label value"), "{err}");
}
