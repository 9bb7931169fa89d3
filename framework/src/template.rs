//! Declarative child resources rendered from minijinja templates.
//!
//! An operator declares its child templates ([`TemplateDecl`]: a file in a template directory, the
//! child's apiVersion/kind, and a sample context). [`TemplateSet::load`] reads, compiles and
//! test-renders them; [`TemplateSet::render`] turns a context into the child object;
//! [`apply_identity`] then stamps the framework-owned identity (name, namespace, ownership labels)
//! on it. [`TemplateStore`] keeps the set current while an admin edits the directory.
//!
//! # The template language
//!
//! Jinja syntax (minijinja) producing YAML, in an environment made for that:
//!
//! * **Every `{{ }}` output is a complete YAML value that cannot change the structure around
//!   it.** Strings are emitted as double-quoted YAML scalars; numbers and booleans as their JSON
//!   literal (`42`, `1.5`, `true`), none as `null`; lists and maps as single-line JSON flow
//!   collections. Escaping is JSON's plus every character YAML treats specially or cannot carry
//!   raw in a double-quoted scalar (DEL, C1 controls including NEL, U+2028/U+2029, the byte order
//!   mark, U+FFFE/U+FFFF become `\uXXXX`), so the text means the same to a YAML and a JSON reader
//!   and a value always reads back byte for byte. Because an output is a complete value, a
//!   string is built inside the expression (`{{ "registry/" ~ tag }}`), not around it.
//! * Undefined variables are errors (strict undefined), naming the variable:
//!   ``undefined value: `wfe.spec.nope` is undefined``. Optional values are spelt out:
//!   `{{ x | default(none) }}`, `(x | default({})).field | default("1h")` for a field of an
//!   optional object, `{% if x is defined %}` (a bare `{% if x %}` on an undefined `x` is an
//!   error too).
//! * A render has a fuel budget ([`FUEL`]) and a recursion limit ([`RECURSION_LIMIT`]): a runaway
//!   loop stops with "ran out of fuel" instead of hanging the reconciler. `range(n)` pays for its
//!   `n` items up front, so `range(100000000)` stops at once.
//! * No file or environment access: templates are read from the declared files only (there is no
//!   loader, so no `include`, `import` or `extends`), and there is no `env` or `debug` global.
//!   The built-in filters and tests (`default`, `dictsort`, `lower`, `replace`, …) are available.
//!
//! # Guarantees
//!
//! 1. [`TemplateSet::load`] fails unless every declared template parses **and** renders its
//!    sample into exactly one YAML mapping whose `apiVersion`/`kind` equal the declaration.
//!    Errors name the template file and the template line; YAML errors also quote the rendered
//!    line.
//! 2. [`TemplateSet::render`] checks every render the same way, and additionally that the
//!    rendered object equals the template's skeleton (its text with each output replaced by a
//!    placeholder) with the output values put in: no value, whatever its characters, can add,
//!    remove or move a key or item. An output used as part of a larger scalar (e.g.
//!    `image: registry/{{ tag }}`) is an error naming its line. Skeletons repeat (every object
//!    with the same shape of data renders the same one), so a set keeps the parses of its last
//!    [`SHAPE_CACHE_ENTRIES`] distinct skeletons, keyed by their exact text: the check is the
//!    same, it only skips parsing a text it has parsed before. The rendered labels and
//!    annotations are checked as the API server checks them (keys, label values, string values,
//!    total annotation size), so what it would refuse fails the render
//!    ([`TemplateError::Metadata`]), at load with the sample as on every render.
//! 3. The [revision](TemplateSet::revision) is a hash of the declared file names and contents:
//!    the same files give the same revision on every replica and after restarts.
//! 4. [`TemplateStore`] never serves a set that failed to load: a broken edit is reported as
//!    [`ReloadOutcome::Rejected`] (once per distinct content) and the last good set keeps serving.
//!
//! # Assumptions
//!
//! 1. Template authors are trusted to write the template; the guarantees above are about the
//!    *values* in the context (which come from users creating parent objects).
//! 2. The directory is either plain or a Kubernetes ConfigMap/Secret volume (files reached
//!    through symlinks into a `..data` directory that the kubelet swaps atomically).
//!
//! # Caveats
//!
//! 1. A mapping key written as `{{ k }}:` is limited to 1024 characters by YAML's implicit keys.
//! 2. The output of macros and `{% filter %}`/`{% set %}` blocks is a string and is emitted as one
//!    quoted scalar, so they compute values; they cannot emit YAML structure.
//! 3. On a plain (non-ConfigMap) directory an edit of several files is not atomic: a poll between
//!    two writes may load a mixed set, replaced at the next poll.
//! 4. [`TemplateStore::watch`] polls; changes are seen within one poll period.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use minijinja::value::{Serde, ValueKind};
use minijinja::{
    AutoEscape, Environment, ErrorKind, Output, OutputSpan, OutputSpanKind, State,
    UndefinedBehavior, Value,
};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// Fuel budget of one render: about one unit per instruction plus one per 64 bytes produced.
pub const FUEL: u64 = 250_000;
/// Maximum nesting of recursive constructs (loops, macro calls) in one render.
pub const RECURSION_LIMIT: usize = 100;
/// Deepest nesting of a list/map value printed with `{{ }}`.
const MAX_VALUE_DEPTH: usize = 64;
/// Longest rendered line quoted in an error message.
const MAX_QUOTED_LINE: usize = 200;

/// The apiVersion and kind of a child resource, as declared next to its template or mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChildKind {
    /// `group/version`, or `version` for the core group (e.g. `tekton.dev/v1`).
    pub api_version: String,
    /// The kind (e.g. `PipelineRun`).
    pub kind: String,
}

impl fmt::Display for ChildKind {
    /// `tekton.dev/v1, Kind=PipelineRun`, the way Kubernetes prints a GroupVersionKind.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, Kind={}", self.api_version, self.kind)
    }
}

/// One template an operator declares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateDecl {
    /// Path relative to the template directory, e.g. `tekton/pipelinerun.yaml.j2`.
    pub file: String,
    /// What the template must render.
    pub child: ChildKind,
    /// The context of the load-time test render (shaped like a real render's context).
    pub sample: Json,
}

/// Why a template set could not be loaded or a template could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// A declared file name is absolute, escapes the directory, or is declared twice.
    #[error("template `{file}`: {reason}")]
    InvalidDeclaration {
        /// The declared file.
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A declared file could not be read.
    #[error("template `{file}`: cannot read {}: {source}", path.display())]
    Read {
        /// The declared file.
        file: String,
        /// The path read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The template does not parse.
    #[error("template `{file}`{}: syntax error: {message}", at_line(*line))]
    Syntax {
        /// The template file.
        file: String,
        /// The template line, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// Rendering failed (undefined variable, out of fuel, a value that cannot be printed, …).
    #[error("template `{file}`{}: {message}", at_line(*line))]
    Render {
        /// The template file.
        file: String,
        /// The template line, when known.
        line: Option<usize>,
        /// What failed, e.g. ``undefined value: `wfe.spec.nope` is undefined``.
        message: String,
    },
    /// The rendered text is not one YAML mapping, or a value changed its structure.
    #[error(
        "template `{file}`{}: {message}{}",
        at_line(*template_line),
        rendered.as_ref().map(|(n, text)| format!("; rendered line {n}: {text}")).unwrap_or_default()
    )]
    Output {
        /// The template file.
        file: String,
        /// The template line that produced the offending output, when known.
        template_line: Option<usize>,
        /// The rendered line (1-based) and its text, when the problem has a position.
        rendered: Option<(usize, String)>,
        /// What is wrong.
        message: String,
    },
    /// The rendered object is not of the declared apiVersion/kind.
    #[error("template `{file}` renders {found}, but it is declared to render {expected}")]
    WrongKind {
        /// The template file.
        file: String,
        /// The declared kind.
        expected: ChildKind,
        /// What the render produced (`?` for missing fields).
        found: ChildKind,
    },
    /// The rendered object's labels or annotations would be refused by the API server.
    #[error("template `{file}`: {message}; the API server would refuse the object")]
    Metadata {
        /// The template file.
        file: String,
        /// Which label or annotation, and what is wrong with it.
        message: String,
    },
    /// `render` was asked for a file that is not part of the set.
    #[error("template `{file}` is not declared in this template set")]
    NotDeclared {
        /// The requested file.
        file: String,
    },
    /// The load-time render of the declared sample failed.
    #[error("{source} (in the load-time test render with the declared sample)")]
    Sample {
        /// The render error.
        source: Box<TemplateError>,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}

impl TemplateError {
    /// The template file the error is about.
    pub fn file(&self) -> &str {
        match self {
            TemplateError::InvalidDeclaration { file, .. }
            | TemplateError::Read { file, .. }
            | TemplateError::Syntax { file, .. }
            | TemplateError::Render { file, .. }
            | TemplateError::Output { file, .. }
            | TemplateError::WrongKind { file, .. }
            | TemplateError::Metadata { file, .. }
            | TemplateError::NotDeclared { file } => file,
            TemplateError::Sample { source } => source.file(),
        }
    }

    /// A bounded label for metrics (`declaration`, `read`, `syntax`, `render`, `output`,
    /// `kind`, `metadata`, `not_declared`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            TemplateError::InvalidDeclaration { .. } => "declaration",
            TemplateError::Read { .. } => "read",
            TemplateError::Syntax { .. } => "syntax",
            TemplateError::Render { .. } => "render",
            TemplateError::Output { .. } => "output",
            TemplateError::WrongKind { .. } => "kind",
            TemplateError::Metadata { .. } => "metadata",
            TemplateError::NotDeclared { .. } => "not_declared",
            TemplateError::Sample { source } => source.metric_label(),
        }
    }
}

/// An immutable, validated set of templates.
#[derive(Debug)]
pub struct TemplateSet {
    env: Environment<'static>,
    kinds: BTreeMap<String, ChildKind>,
    revision: String,
    shapes: ShapeCache,
}

/// How many distinct skeleton parses a [`TemplateSet`] keeps (see the module guarantees).
pub const SHAPE_CACHE_ENTRIES: usize = 64;

/// Parsed skeletons by their exact text. Parsing is a pure function of the text, so a hit
/// returns exactly what parsing would; only successful parses are kept.
#[derive(Debug, Default)]
struct ShapeCache(Mutex<HashMap<String, Json>>);

impl ShapeCache {
    fn parse(&self, skeleton: &str) -> Result<Json, (Option<usize>, String)> {
        let lock = || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(shape) = lock().get(skeleton) {
            return Ok(shape.clone());
        }
        let shape = parse_single_yaml(skeleton)?;
        let mut shapes = lock();
        if shapes.len() >= SHAPE_CACHE_ENTRIES {
            // Many distinct shapes: start over rather than track recency.
            shapes.clear();
        }
        shapes.insert(skeleton.to_owned(), shape.clone());
        Ok(shape)
    }
}

impl TemplateSet {
    /// Reads the declared templates from `dir`, compiles them and test-renders each with its
    /// sample. Files are read through symlinks; in a ConfigMap volume all of them come from the
    /// same `..data` snapshot.
    pub fn load(dir: &Path, decls: &[TemplateDecl]) -> Result<TemplateSet, TemplateError> {
        let sources = read_sources(dir, decls)?;
        Self::from_sources(decls, &sources)
    }

    fn from_sources(
        decls: &[TemplateDecl],
        sources: &BTreeMap<String, String>,
    ) -> Result<TemplateSet, TemplateError> {
        let mut env = environment();
        let mut kinds = BTreeMap::new();
        for decl in decls {
            let source = sources.get(&decl.file).cloned().unwrap_or_default();
            env.add_template_owned(decl.file.clone(), source)
                .map_err(|e| TemplateError::Syntax {
                    file: decl.file.clone(),
                    line: e.line(),
                    message: e.detail().map_or_else(|| engine_message(&e), str::to_owned),
                })?;
            kinds.insert(decl.file.clone(), decl.child.clone());
        }
        let set = TemplateSet {
            env,
            kinds,
            revision: revision_of(sources),
            shapes: ShapeCache::default(),
        };
        for decl in decls {
            set.render(&decl.file, &decl.sample)
                .map_err(|e| TemplateError::Sample {
                    source: Box::new(e),
                })?;
        }
        Ok(set)
    }

    /// The content hash of the set: first 16 hex characters of a SHA-256 over the declared file
    /// names and contents.
    pub fn revision(&self) -> &str {
        &self.revision
    }

    /// The declared files and the kind each renders.
    pub fn templates(&self) -> impl Iterator<Item = (&str, &ChildKind)> {
        self.kinds.iter().map(|(file, kind)| (file.as_str(), kind))
    }

    /// Renders `file` with `context` into the child object (a JSON object of the declared
    /// apiVersion/kind). See the module docs for the checks made.
    pub fn render(&self, file: &str, context: &Json) -> Result<Json, TemplateError> {
        let expected = self
            .kinds
            .get(file)
            .ok_or_else(|| TemplateError::NotDeclared {
                file: file.to_owned(),
            })?;
        let (text, spans) = self.render_raw(file, context)?;
        let object = check_output(file, &text, &spans, &self.shapes)?;
        let field = |name: &str| {
            object
                .get(name)
                .and_then(Json::as_str)
                .unwrap_or("?")
                .to_owned()
        };
        let found = ChildKind {
            api_version: field("apiVersion"),
            kind: field("kind"),
        };
        if &found != expected {
            return Err(TemplateError::WrongKind {
                file: file.to_owned(),
                expected: expected.clone(),
                found,
            });
        }
        check_metadata(&object).map_err(|message| TemplateError::Metadata {
            file: file.to_owned(),
            message,
        })?;
        Ok(object)
    }

    /// The rendered YAML text of `file` with `context`, unchecked (for dry runs, golden files and
    /// debugging a template). [`render`](Self::render) is what produces children.
    pub fn render_yaml(&self, file: &str, context: &Json) -> Result<String, TemplateError> {
        self.render_raw(file, context).map(|(text, _)| text)
    }

    fn render_raw(
        &self,
        file: &str,
        context: &Json,
    ) -> Result<(String, Vec<OutputSpan>), TemplateError> {
        if !self.kinds.contains_key(file) {
            return Err(TemplateError::NotDeclared {
                file: file.to_owned(),
            });
        }
        let template = self
            .env
            .get_template(file)
            .map_err(|_| TemplateError::NotDeclared {
                file: file.to_owned(),
            })?;
        template
            .render_with_spans(Value::from(Serde(context)))
            .map_err(|e| TemplateError::Render {
                file: file.to_owned(),
                line: e.line(),
                message: engine_message(&e),
            })
    }
}

/// The minijinja environment every template set uses (see the module docs).
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Debug mode makes undefined-value errors name the variable (`wfe.spec.nope`).
    env.set_debug(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_formatter(format_output);
    env.remove_global("debug");
    env.add_function("range", fueled_range);
    env
}

/// A minijinja message without its own `(in file:line)` suffix (our errors carry those).
fn engine_message(err: &minijinja::Error) -> String {
    let mut message = match err.kind() {
        ErrorKind::OutOfFuel => format!(
            "ran out of fuel (budget {FUEL}): the template does too much work, \
             most likely an unbounded loop or recursion"
        ),
        kind => match err.detail() {
            Some(detail) => format!("{kind}: {detail}"),
            None => kind.to_string(),
        },
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// `range` that pays one fuel per item before creating the range, so a huge range fails on fuel
/// immediately instead of by the engine's own item cap or after a long loop.
fn fueled_range(
    state: &State,
    lower: i64,
    upper: Option<i64>,
    step: Option<i64>,
) -> Result<Value, minijinja::Error> {
    let (start, end) = match upper {
        Some(upper) => (i128::from(lower), i128::from(upper)),
        None => (0, i128::from(lower)),
    };
    let step_size = i128::from(step.unwrap_or(1));
    let items = match step_size {
        s if s > 0 && end > start => (end - start + s - 1) / s,
        s if s < 0 && start > end => (start - end - s - 1) / -s,
        _ => 0,
    };
    state.consume_fuel(u64::try_from(items).unwrap_or(u64::MAX))?;
    let to_isize = |v: i64| {
        isize::try_from(v).map_err(|_| {
            minijinja::Error::new(ErrorKind::InvalidOperation, "range bound out of range")
        })
    };
    minijinja::functions::range(
        to_isize(lower)?,
        upper.map(to_isize).transpose()?,
        step.map(to_isize).transpose()?,
    )
}

/// The formatter behind every `{{ }}`: one complete YAML value (see the module docs).
fn format_output(
    out: &mut Output,
    _state: &mut State,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let json = to_json(value, 0)?;
    out.write_str(&yaml_value(&json))
        .map_err(|_| minijinja::Error::new(ErrorKind::WriteFailure, "cannot write output"))
}

/// Converts a template value to JSON, refusing what has no faithful YAML form.
fn to_json(value: &Value, depth: usize) -> Result<Json, minijinja::Error> {
    let invalid = |message: String| minijinja::Error::new(ErrorKind::InvalidOperation, message);
    if depth > MAX_VALUE_DEPTH {
        return Err(invalid(format!(
            "value nested deeper than {MAX_VALUE_DEPTH} levels cannot be printed"
        )));
    }
    match value.kind() {
        // Strict undefined: let the engine build its own error, which names the variable.
        ValueKind::Undefined => match value.get_attr("") {
            Err(err) => Err(err),
            Ok(_) => Err(minijinja::Error::from(ErrorKind::UndefinedError)),
        },
        ValueKind::None => Ok(Json::Null),
        ValueKind::Bool => Ok(Json::Bool(value.is_true())),
        ValueKind::Number => {
            if !value.is_integer() {
                let float = f64::try_from(value.clone())?;
                if !float.is_finite() {
                    return Err(invalid(format!(
                        "the number {value} cannot be printed (YAML output must round-trip through JSON)"
                    )));
                }
            }
            serde_json::to_value(value).map_err(|e| invalid(format!("cannot print {value}: {e}")))
        }
        ValueKind::String | ValueKind::Bytes => match value.as_str() {
            Some(text) => Ok(Json::String(text.to_owned())),
            None => Err(invalid(
                "bytes that are not UTF-8 cannot be printed".to_owned(),
            )),
        },
        ValueKind::Seq | ValueKind::Iterable => value
            .try_iter()?
            .map(|item| to_json(&item, depth + 1))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        ValueKind::Map => {
            let mut map = serde_json::Map::new();
            for key in value.try_iter()? {
                let Some(name) = key.as_str() else {
                    return Err(invalid(format!(
                        "map key {key} is not a string; YAML output needs string keys"
                    )));
                };
                let item = value.get_item(&key)?;
                map.insert(name.to_owned(), to_json(&item, depth + 1)?);
            }
            Ok(Json::Object(map))
        }
        kind => Err(invalid(format!("a value of type {kind} cannot be printed"))),
    }
}

/// `value` as one line of JSON that YAML reads identically: see [`YamlSafe`].
fn yaml_value(value: &Json) -> String {
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, YamlSafe);
    // Serializing a `serde_json::Value` into memory cannot fail.
    if value.serialize(&mut serializer).is_err() {
        return "null".to_owned();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// JSON formatting that is also a correct YAML flow value.
///
/// serde_json already escapes `"`, `\` and C0 controls (with escapes YAML shares: `\b \f \n \r
/// \t \uXXXX`). On top of that every character that YAML forbids raw in a double-quoted scalar
/// or treats as a line break or stream marker is written as `\uXXXX` (all are in the BMP).
/// Separators get a space (`{"a": 1, "b": 2}`) like ordinary YAML flow style.
struct YamlSafe;

/// Characters written as `\uXXXX` in addition to JSON's escapes.
fn needs_yaml_escape(c: char) -> bool {
    matches!(
        c,
        '\u{7F}'
            ..='\u{9F}'          // DEL and C1 controls, NEL (U+0085) is a YAML line break
        | '\u{2028}' | '\u{2029}'    // line and paragraph separators are YAML line breaks
        | '\u{FEFF}'                 // byte order mark
        | '\u{FFFE}' | '\u{FFFF}' // non-characters, not printable in YAML
    )
}

impl serde_json::ser::Formatter for YamlSafe {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if needs_yaml_escape(c) {
                writer.write_all(&fragment.as_bytes()[start..at])?;
                write!(writer, "\\u{:04X}", u32::from(c))?;
                start = at + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        separate(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// The `, ` before every array item or mapping key but the first.
fn separate<W: ?Sized + std::io::Write>(writer: &mut W, first: bool) -> std::io::Result<()> {
    if first {
        Ok(())
    } else {
        writer.write_all(b", ")
    }
}

// ---- output checks ----

/// A placeholder for output slot `index`: a quoted scalar of private-use characters and digits,
/// with no line break, so line numbers stay those of the real output.
fn placeholder(index: usize) -> String {
    format!("\"\u{E000}{index}\u{E001}\"")
}

/// Recognises a placeholder inside a parsed string: `Some((index, whole))`.
fn find_placeholder(text: &str) -> Option<(usize, bool)> {
    let start = text.find('\u{E000}')?;
    let rest = &text[start + '\u{E000}'.len_utf8()..];
    let end = rest.find('\u{E001}')?;
    let index = rest[..end].parse().ok()?;
    let whole = start == 0 && end + '\u{E001}'.len_utf8() == rest.len();
    Some((index, whole))
}

/// Parses the rendered text and checks it is one mapping whose structure no output changed.
fn check_output(
    file: &str,
    text: &str,
    spans: &[OutputSpan],
    shapes: &ShapeCache,
) -> Result<Json, TemplateError> {
    let problem = |offset: Option<usize>, message: String| {
        let rendered = offset.map(|at| rendered_line(text, at));
        TemplateError::Output {
            file: file.to_owned(),
            template_line: offset.and_then(|at| template_line(spans, text, at)),
            rendered,
            message,
        }
    };
    let value = parse_single_yaml(text).map_err(|(at, message)| {
        let hint = if at.is_some_and(|at| line_has_expression(spans, text, at)) {
            " (a `{{ }}` output is a complete quoted YAML value: build strings inside the \
             expression, e.g. {{ \"prefix-\" ~ name }})"
        } else {
            ""
        };
        problem(at, format!("{message}{hint}"))
    })?;
    if !value.is_object() {
        return Err(problem(
            None,
            format!("renders a YAML {}, not a mapping", json_kind(&value)),
        ));
    }

    let (skeleton, slots) = skeleton(text, spans).map_err(|at| {
        // Only the formatter writes expression output, and it writes JSON.
        problem(Some(at), "an output is not a YAML value".to_owned())
    })?;
    let shape = shapes.parse(&skeleton).map_err(|(at, message)| {
        // Line numbers agree between text and skeleton (neither slots nor placeholders hold a
        // line break), so point at the real rendered line.
        let at = at.map(|at| line_start_in(text, line_of(&skeleton, at)));
        problem(
            at,
            format!("the template's structure depends on an output value: {message}"),
        )
    })?;
    let filled = fill(shape, &slots).map_err(|index| {
        let at = slots.get(index).map(|(range, _)| range.start);
        problem(
            at,
            "a `{{ }}` output must be a whole YAML value, not part of a larger scalar; build \
             strings inside the expression, e.g. {{ \"prefix-\" ~ name }}"
                .to_owned(),
        )
    })?;
    if filled != value {
        return Err(problem(
            None,
            "an output value changed the rendered structure".to_owned(),
        ));
    }
    Ok(value)
}

/// One `{{ }}` output of a rendered text: its byte range in the text and its value.
type Slot = (Range<usize>, Json);

/// The skeleton of rendered `text`: the same text with each expression output replaced by its
/// [`placeholder`], and the outputs (their range in `text` and their value) in placeholder order;
/// `Err(offset)` for an output that is not JSON.
fn skeleton(text: &str, spans: &[OutputSpan]) -> Result<(String, Vec<Slot>), usize> {
    let mut skeleton = String::with_capacity(text.len());
    let mut slots: Vec<Slot> = Vec::new();
    let mut copied = 0;
    for span in spans {
        if span.kind() != OutputSpanKind::Expression {
            continue;
        }
        let range = span.output_range();
        let Some(slot_text) = text.get(range.clone()) else {
            continue;
        };
        let slot_value = serde_json::from_str::<Json>(slot_text).map_err(|_| range.start)?;
        skeleton.push_str(&text[copied..range.start]);
        skeleton.push_str(&placeholder(slots.len()));
        copied = range.end;
        slots.push((range, slot_value));
    }
    skeleton.push_str(&text[copied..]);
    Ok((skeleton, slots))
}

/// Puts slot values in place of their placeholders; `Err(index)` for a placeholder that is only
/// part of a string.
fn fill(shape: Json, slots: &[Slot]) -> Result<Json, usize> {
    let slot = |text: &str| -> Result<Option<&Json>, usize> {
        match find_placeholder(text) {
            Some((index, true)) => Ok(slots.get(index).map(|(_, v)| v)),
            Some((index, false)) => Err(index),
            None => Ok(None),
        }
    };
    Ok(match shape {
        Json::String(text) => match slot(&text)? {
            Some(value) => value.clone(),
            None => Json::String(text),
        },
        Json::Array(items) => Json::Array(
            items
                .into_iter()
                .map(|item| fill(item, slots))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => {
            let mut out = serde_json::Map::new();
            for (key, item) in map {
                let key = match slot(&key)? {
                    Some(Json::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => key,
                };
                out.insert(key, fill(item, slots)?);
            }
            Json::Object(out)
        }
        other => other,
    })
}

/// Parses exactly one YAML document into JSON; errors carry the byte offset when known.
fn parse_single_yaml(text: &str) -> Result<Json, (Option<usize>, String)> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Json::deserialize(document).map_err(|e| {
            let at = e.location().map(|l| l.index());
            let message = e.to_string();
            // The location is reported separately; keep the message short.
            let message = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_owned();
            (at, format!("invalid YAML: {message}"))
        })?;
        documents.push(value);
    }
    match documents.len() {
        1 => Ok(documents.pop().unwrap_or(Json::Null)),
        0 => Err((None, "renders no YAML document".to_owned())),
        n => Err((
            None,
            format!("renders {n} YAML documents; a template must render exactly one object"),
        )),
    }
}

fn json_kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null (nothing)",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "mapping",
    }
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    let at = floor_char_boundary(text, at);
    text[..at].matches('\n').count() + 1
}

/// Byte offset where 1-based `line` starts (the end of the text if there are fewer lines).
fn line_start_in(text: &str, line: usize) -> usize {
    if line <= 1 {
        return 0;
    }
    text.match_indices('\n')
        .nth(line - 2)
        .map(|(at, _)| at + 1)
        .unwrap_or(text.len())
}

fn line_range(text: &str, at: usize) -> Range<usize> {
    let at = floor_char_boundary(text, at.min(text.len()));
    let start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[at..].find('\n').map(|i| at + i).unwrap_or(text.len());
    start..end
}

/// `(line number, quoted text)` of the rendered line holding byte `at`.
fn rendered_line(text: &str, at: usize) -> (usize, String) {
    let range = line_range(text, at);
    let line = &text[range];
    let quoted = if line.len() > MAX_QUOTED_LINE {
        let cut = floor_char_boundary(line, MAX_QUOTED_LINE);
        format!("{}…", &line[..cut])
    } else {
        line.to_owned()
    };
    (line_of(text, at), quoted)
}

/// The template line of the first span that produced part of the rendered line holding `at`.
fn template_line(spans: &[OutputSpan], text: &str, at: usize) -> Option<usize> {
    let line = line_range(text, at);
    spans
        .iter()
        .find(|s| s.output_range().end > line.start && s.output_range().start <= line.end)
        .filter(|s| s.line() > 0)
        .map(|s| {
            // A raw span may cover several template lines: count into it.
            let range = s.output_range();
            let from = range.start.max(line.start).min(range.end);
            if s.kind() == OutputSpanKind::Raw {
                s.line() + text[range.start..from].matches('\n').count()
            } else {
                s.line()
            }
        })
}

fn line_has_expression(spans: &[OutputSpan], text: &str, at: usize) -> bool {
    let line = line_range(text, at);
    spans.iter().any(|s| {
        s.kind() == OutputSpanKind::Expression
            && s.output_range().start >= line.start
            && s.output_range().start <= line.end
    })
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

// ---- reading ----

/// First 16 hex characters of SHA-256 over (name, length, content) of each file, by name.
fn revision_of(sources: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (name, content) in sources {
        hasher.update(name.as_bytes());
        hasher.update([0u8]);
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content.as_bytes());
    }
    let mut hex = hex::encode(hasher.finalize());
    hex.truncate(16);
    hex
}

/// A declared file name must stay inside the directory.
fn check_file_name(file: &str) -> Result<(), TemplateError> {
    let invalid = |reason: &str| TemplateError::InvalidDeclaration {
        file: file.to_owned(),
        reason: reason.to_owned(),
    };
    let path = Path::new(file);
    if file.is_empty() {
        return Err(invalid("empty file name"));
    }
    if !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid(
            "must be a relative path inside the template directory (no `/`, `..` or `.` prefix)",
        ));
    }
    Ok(())
}

/// Reads every declared file. In a ConfigMap volume the files are read from the directory
/// `..data` points to at that moment, so one read sees one version of the whole set; if the
/// kubelet removes that version mid-read, the read is retried.
fn read_sources(
    dir: &Path,
    decls: &[TemplateDecl],
) -> Result<BTreeMap<String, String>, TemplateError> {
    for decl in decls {
        check_file_name(&decl.file)?;
    }
    let mut seen = std::collections::BTreeSet::new();
    for decl in decls {
        if !seen.insert(decl.file.as_str()) {
            return Err(TemplateError::InvalidDeclaration {
                file: decl.file.clone(),
                reason: "declared twice".to_owned(),
            });
        }
    }
    const ATTEMPTS: usize = 3;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let snapshot = std::fs::canonicalize(dir.join("..data"))
            .ok()
            .filter(|p| p.is_dir());
        let root = snapshot.as_deref().unwrap_or(dir);
        match read_all(root, decls) {
            Ok(sources) => return Ok(sources),
            Err(_) if snapshot.is_some() && attempt < ATTEMPTS => continue,
            Err(err) => return Err(err),
        }
    }
}

fn read_all(
    root: &Path,
    decls: &[TemplateDecl],
) -> Result<BTreeMap<String, String>, TemplateError> {
    decls
        .iter()
        .map(|decl| {
            let path = root.join(&decl.file);
            std::fs::read_to_string(&path)
                .map(|content| (decl.file.clone(), content))
                .map_err(|source| TemplateError::Read {
                    file: decl.file.clone(),
                    path,
                    source,
                })
        })
        .collect()
}

// ---- metadata ----

/// The most bytes of annotation keys and values an object may carry (the API server's limit).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Checks a rendered object's `metadata.labels` and `metadata.annotations` as the API server's
/// object meta validation does: maps of strings, keys that are qualified names (an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 characters), label values of at most 63
/// characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric, annotations of at most
/// 256 KiB in all. The message names the offending entry.
fn check_metadata(object: &Json) -> Result<(), String> {
    let Some(metadata) = object.get("metadata") else {
        return Ok(());
    };
    if metadata.is_null() {
        return Ok(());
    }
    let Some(metadata) = metadata.as_object() else {
        return Err(format!("metadata is a {}, not a map", json_kind(metadata)));
    };
    let mut annotation_bytes = 0;
    for field in ["labels", "annotations"] {
        let entries = match metadata.get(field) {
            None | Some(Json::Null) => continue,
            Some(Json::Object(entries)) => entries,
            Some(other) => {
                return Err(format!(
                    "metadata.{field} is a {}, not a map",
                    json_kind(other)
                ));
            }
        };
        for (key, value) in entries {
            let at = format!("metadata.{field}[{key:?}]");
            check_qualified_name(key).map_err(|why| format!("{at}: invalid key: {why}"))?;
            let Some(value) = value.as_str() else {
                return Err(format!(
                    "{at}: the value is a {}, not a string (write it with `| string`)",
                    json_kind(value)
                ));
            };
            if field == "labels" && !is_label_value(value) {
                return Err(format!(
                    "{at}: {value:?} is not a valid label value (at most 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"
                ));
            }
            if field == "annotations" {
                annotation_bytes += key.len() + value.len();
            }
        }
    }
    if annotation_bytes > MAX_ANNOTATIONS_BYTES {
        return Err(format!(
            "metadata.annotations: {annotation_bytes} bytes in all, more than the {MAX_ANNOTATIONS_BYTES} allowed"
        ));
    }
    Ok(())
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63
/// characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
fn check_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(label_ok) {
            return Err(format!(
                "the prefix {prefix:?} is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
            ));
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!(
            "the name {name:?} must be 1 to 63 characters of letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A valid label value: empty, or at most 63 characters of `[A-Za-z0-9_.-]` starting and ending
/// alphanumeric.
fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || (bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric))
}

// ---- identity ----

/// The identity the framework owns on every child.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildIdentity {
    /// `metadata.name` (the lock name).
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// Labels set on top of the template's (ownership labels, template revision …).
    pub labels: BTreeMap<String, String>,
    /// Annotations set on top of the template's.
    pub annotations: BTreeMap<String, String>,
}

/// Stamps `identity` on a rendered child: sets `metadata.name` and `metadata.namespace`, sets
/// each label and annotation (overwriting the template's value for the same key, keeping its
/// other keys), and removes `generateName` and `ownerReferences`, so no template can break
/// locking or cleanup. A non-object `child` is left alone ([`TemplateSet::render`] only returns
/// objects).
pub fn apply_identity(child: &mut Json, identity: &ChildIdentity) {
    let Some(object) = child.as_object_mut() else {
        return;
    };
    let mut metadata = take_object(object, "metadata");
    metadata.insert("name".to_owned(), Json::from(identity.name.clone()));
    metadata.insert(
        "namespace".to_owned(),
        Json::from(identity.namespace.clone()),
    );
    metadata.remove("generateName");
    metadata.remove("ownerReferences");
    for (field, entries) in [
        ("labels", &identity.labels),
        ("annotations", &identity.annotations),
    ] {
        if entries.is_empty() {
            continue;
        }
        let mut map = take_object(&mut metadata, field);
        for (key, value) in entries {
            map.insert(key.clone(), Json::from(value.clone()));
        }
        metadata.insert(field.to_owned(), Json::Object(map));
    }
    object.insert("metadata".to_owned(), Json::Object(metadata));
}

/// Removes and returns the object under `key` (an empty one if absent or not an object).
fn take_object(
    parent: &mut serde_json::Map<String, Json>,
    key: &str,
) -> serde_json::Map<String, Json> {
    match parent.remove(key) {
        Some(Json::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

// ---- hot reload ----

/// The result of one reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are those of the current set (or of a set already rejected).
    Unchanged,
    /// A new set loaded and is now current.
    Loaded {
        /// Its revision.
        revision: String,
    },
    /// The files changed but do not load; the previous set keeps serving.
    Rejected {
        /// The revision still in use.
        kept_revision: String,
        /// Why the new files were refused.
        error: String,
    },
}

/// A template set that follows its directory, keeping the last good set.
#[derive(Debug)]
pub struct TemplateStore {
    dir: PathBuf,
    decls: Vec<TemplateDecl>,
    current: RwLock<Arc<TemplateSet>>,
    /// Fingerprint of the last rejected content, so one broken edit is reported once.
    rejected: Mutex<Option<String>>,
}

impl TemplateStore {
    /// Loads the set from `dir`; an error here means there is no good set to fall back to.
    pub fn load(dir: &Path, decls: &[TemplateDecl]) -> Result<Self, TemplateError> {
        let set = TemplateSet::load(dir, decls)?;
        Ok(TemplateStore {
            dir: dir.to_owned(),
            decls: decls.to_vec(),
            current: RwLock::new(Arc::new(set)),
            rejected: Mutex::new(None),
        })
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The set in use. Callers keep the `Arc` for the duration of one reconcile so a reload
    /// cannot change templates halfway.
    pub fn current(&self) -> Arc<TemplateSet> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the directory and swaps in the new set if it changed and loads.
    pub fn reload(&self) -> ReloadOutcome {
        let current = self.current();
        let (fingerprint, loaded) = match read_sources(&self.dir, &self.decls) {
            Ok(sources) => {
                let revision = revision_of(&sources);
                if revision == current.revision() {
                    self.set_rejected(None);
                    return ReloadOutcome::Unchanged;
                }
                (revision, TemplateSet::from_sources(&self.decls, &sources))
            }
            Err(err) => {
                let text = err.to_string();
                (format!("unreadable: {text}"), Err(err))
            }
        };
        match loaded {
            Ok(set) => {
                let revision = set.revision().to_owned();
                match self.current.write() {
                    Ok(mut guard) => *guard = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
                self.set_rejected(None);
                ReloadOutcome::Loaded { revision }
            }
            Err(err) => {
                if self.rejected_is(&fingerprint) {
                    return ReloadOutcome::Unchanged;
                }
                self.set_rejected(Some(fingerprint));
                ReloadOutcome::Rejected {
                    kept_revision: current.revision().to_owned(),
                    error: err.to_string(),
                }
            }
        }
    }

    /// Polls the directory every `poll` (at least 100ms) on a background task and sends every
    /// outcome other than [`ReloadOutcome::Unchanged`]. The task stops when the receiver is
    /// dropped. Must be called inside a Tokio runtime.
    pub fn watch(self: Arc<Self>, poll: Duration) -> tokio::sync::mpsc::Receiver<ReloadOutcome> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let period = poll.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The first tick fires at once; the set was just loaded.
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = tx.closed() => return,
                }
                let store = Arc::clone(&self);
                let outcome = match tokio::task::spawn_blocking(move || store.reload()).await {
                    Ok(outcome) => outcome,
                    Err(err) => ReloadOutcome::Rejected {
                        kept_revision: self.current().revision().to_owned(),
                        error: format!("template reload task failed: {err}"),
                    },
                };
                if outcome != ReloadOutcome::Unchanged && tx.send(outcome).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    fn rejected_is(&self, fingerprint: &str) -> bool {
        match self.rejected.lock() {
            Ok(guard) => guard.as_deref() == Some(fingerprint),
            Err(poisoned) => poisoned.into_inner().as_deref() == Some(fingerprint),
        }
    }

    fn set_rejected(&self, fingerprint: Option<String>) {
        match self.rejected.lock() {
            Ok(mut guard) => *guard = fingerprint,
            Err(poisoned) => *poisoned.into_inner() = fingerprint,
        }
    }
}

impl fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadOutcome::Unchanged => f.write_str("templates unchanged"),
            ReloadOutcome::Loaded { revision } => {
                write!(f, "templates loaded, revision {revision}")
            }
            ReloadOutcome::Rejected {
                kept_revision,
                error,
            } => write!(
                f,
                "templates rejected, keeping revision {kept_revision}: {error}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Renders through a cached skeleton give the same objects as fresh parses, per shape of
    /// data; the cache holds only distinct skeletons and stays bounded.
    #[test]
    fn skeleton_parses_are_shared_by_renders_of_one_shape() {
        let source = "apiVersion: v1\nkind: ConfigMap\ndata:\n{%- for k, v in items | dictsort %}\n  {{ k }}: {{ v }}\n{%- endfor %}\n";
        let decls = [TemplateDecl {
            file: "t.yaml.j2".into(),
            child: ChildKind {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
            },
            sample: json!({"items": {"a": "1"}}),
        }];
        let sources = BTreeMap::from([("t.yaml.j2".to_owned(), source.to_owned())]);
        let set = TemplateSet::from_sources(&decls, &sources).unwrap();
        let object = |items: Json| json!({"apiVersion": "v1", "kind": "ConfigMap", "data": items});
        // (items, skeletons cached afterwards): same key count = same skeleton.
        let cases = [
            (json!({"a": "x"}), 1),
            (json!({"a": "y: z\n- w"}), 1),
            (json!({"b": "#", "c": "{}"}), 2),
            (json!({"a": "x"}), 2),
        ];
        for (items, cached) in cases {
            let rendered = set
                .render("t.yaml.j2", &json!({"items": items.clone()}))
                .unwrap();
            assert_eq!(rendered, object(items.clone()), "{items}");
            let fresh = TemplateSet::from_sources(&decls, &sources)
                .unwrap()
                .render("t.yaml.j2", &json!({"items": items.clone()}))
                .unwrap();
            assert_eq!(rendered, fresh, "{items}: cached and fresh agree");
            assert_eq!(set.shapes.0.lock().unwrap().len(), cached, "{items}");
        }
        for n in 0..SHAPE_CACHE_ENTRIES + 5 {
            let items: serde_json::Map<String, Json> =
                (0..=n).map(|i| (format!("k{i}"), json!("v"))).collect();
            set.render("t.yaml.j2", &json!({ "items": items })).unwrap();
            assert!(set.shapes.0.lock().unwrap().len() <= SHAPE_CACHE_ENTRIES);
        }
    }

    #[test]
    fn yaml_value_format() {
        // (value, exact text)
        let cases = [
            (json!("plain"), r#""plain""#),
            (json!(""), r#""""#),
            (json!("a\"b\\c"), r#""a\"b\\c""#),
            (
                json!("\n\r\t\u{8}\u{c}\u{0}\u{1b}"),
                r#""\n\r\t\b\f\u0000\u001b""#,
            ),
            (
                json!("\u{7f}\u{80}\u{85}\u{9f}\u{a0}"),
                "\"\\u007F\\u0080\\u0085\\u009F\u{a0}\"",
            ),
            (
                json!("\u{2028}\u{2029}\u{feff}\u{fffe}\u{ffff}"),
                r#""\u2028\u2029\uFEFF\uFFFE\uFFFF""#,
            ),
            (json!("é😀\u{e000}\u{10ffff}"), "\"é😀\u{e000}\u{10ffff}\""),
            (json!(42), "42"),
            (json!(-1.5), "-1.5"),
            (json!(true), "true"),
            (json!(null), "null"),
            (json!([1, "a", []]), r#"[1, "a", []]"#),
            (
                json!({"b": {"c": null}, "a": 1}),
                r#"{"a": 1, "b": {"c": null}}"#,
            ),
        ];
        for (value, text) in cases {
            assert_eq!(yaml_value(&value), text, "{value}");
        }
    }

    #[test]
    fn placeholders_are_recognised() {
        let whole = placeholder(12);
        let inner = whole.trim_matches('"');
        assert_eq!(find_placeholder(inner), Some((12, true)));
        assert_eq!(
            find_placeholder(&format!("registry/{whole}")),
            Some((12, false))
        );
        assert_eq!(find_placeholder("\u{e000}x\u{e001}"), None);
        assert_eq!(find_placeholder("no placeholder"), None);
    }

    #[test]
    fn range_pays_for_its_items() {
        let mut env = environment();
        env.set_fuel(Some(1_000));
        // (expression, renders)
        let cases = [
            ("range(5) | list", Some("[0, 1, 2, 3, 4]")),
            ("range(2, 8, 3) | list", Some("[2, 5]")),
            ("range(8, 2, -3) | list", Some("[8, 5]")),
            ("range(3, 3) | list", Some("[]")),
            ("range(900) | length", Some("900")),
            ("range(2000) | length", None),
            (
                "range(-9223372036854775808, 9223372036854775807) | length",
                None,
            ),
        ];
        for (expression, expected) in cases {
            let rendered = env.render_str(&format!("{{{{ {expression} }}}}"), ());
            match expected {
                Some(text) => assert_eq!(rendered.unwrap(), text, "{expression}"),
                None => assert_eq!(
                    rendered.unwrap_err().kind(),
                    ErrorKind::OutOfFuel,
                    "{expression}"
                ),
            }
        }
    }

    #[test]
    fn lines_and_offsets() {
        let text = "a\nbb\n\nccc";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 3), 2);
        assert_eq!(line_of(text, 6), 4);
        assert_eq!(line_start_in(text, 1), 0);
        assert_eq!(line_start_in(text, 2), 2);
        assert_eq!(line_start_in(text, 4), 6);
        assert_eq!(line_start_in(text, 9), text.len());
        assert_eq!(rendered_line(text, 3), (2, "bb".to_owned()));
        let long = "x".repeat(MAX_QUOTED_LINE + 10);
        assert!(rendered_line(&long, 0).1.ends_with('…'));
    }
}
