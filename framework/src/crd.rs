//! Reading an object against its CustomResourceDefinition before the API server does: the type of
//! every value is checked against the CRD's `openAPIV3Schema`, so that a file read offline (a
//! `render` input) fails naming its field (`spec.parameters.REPLICAS`) instead of with a bare
//! deserialization message.
//!
//! [`read_object`] reads a custom object from a YAML or JSON file as `kubectl apply` would take
//! it, checked this way; [`crd_yaml`] prints a CRD as the YAML document an operator checks in.
//!
//! # Guarantees
//!
//! 1. [`check_schema_types`] accepts what the API server's type check accepts for `type`,
//!    `nullable` and `x-kubernetes-int-or-string`; the error names the first offending field and
//!    what was found there.
//!
//! 2. [`read_object`] refuses a file that is not one object of the kind asked for (its
//!    `apiVersion`/`kind`, a value of the wrong type, no `metadata.name`), saying which; a
//!    namespaced object without `metadata.namespace` is read as in `default`, as `kubectl apply`
//!    would create it.
//!
//! # Caveats
//!
//! 1. Only types are checked: formats, patterns, enums, bounds and CEL rules are not (the object's
//!    own validation covers what the operator relies on).
//! 2. A `null` passes for any field: the API server drops nulls of non-nullable fields.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::{CustomResourceExt, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The OpenAPI schema of the first version of `crd` that has one (an empty schema, which
/// accepts everything, if none has).
pub fn openapi_schema(crd: CustomResourceDefinition) -> JSONSchemaProps {
    crd.spec
        .versions
        .into_iter()
        .find_map(|v| v.schema.and_then(|s| s.open_api_v3_schema))
        .unwrap_or_default()
}

/// Checks the type of every value in `value` against `schema` as the API server does at
/// admission (`type`, `nullable`, `x-kubernetes-int-or-string`; nulls of non-nullable fields are
/// dropped by the API server, so they pass). The error names the first offending field.
pub fn check_schema_types(value: &Value, schema: &JSONSchemaProps) -> Result<(), String> {
    check_types_at(value, schema, "")
}

/// Why a file does not hold an object of the kind asked for.
#[derive(Debug, thiserror::Error)]
pub enum ReadObjectError {
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold an object of the kind.
    #[error("{}: not a {kind}: {message}", path.display())]
    NotTheKind {
        /// The file.
        path: PathBuf,
        /// The kind asked for.
        kind: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads one object of kind `K` from a YAML or JSON file: its `apiVersion` and `kind` must be
/// `K`'s, every value's type must match `K`'s CRD ([`check_schema_types`]), and it must have a
/// name; a namespaced object without a namespace is read as in `default`.
///
/// # Errors
/// [`ReadObjectError`] naming the file and what is wrong.
pub fn read_object<K>(path: &Path) -> Result<K, ReadObjectError>
where
    K: CustomResourceExt + Resource<DynamicType = ()> + DeserializeOwned,
{
    let text = std::fs::read_to_string(path).map_err(|source| ReadObjectError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let (want_version, want_kind) = (K::api_version(&()), K::kind(&()));
    let wrong = |message: String| ReadObjectError::NotTheKind {
        path: path.to_path_buf(),
        kind: want_kind.to_string(),
        message,
    };
    // JSON is read as JSON: a YAML reader takes characters such as NEL (U+0085) in a string
    // for line breaks and folds them.
    let raw: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| wrong(e.to_string()))?
    } else {
        serde_yaml::from_str(&text).map_err(|e| wrong(e.to_string()))?
    };
    let api_version = raw.get("apiVersion").and_then(Value::as_str);
    let kind = raw.get("kind").and_then(Value::as_str);
    if api_version != Some(&*want_version) || kind != Some(&*want_kind) {
        return Err(wrong(format!(
            "apiVersion/kind is {}/{}, expected {want_version}/{want_kind}",
            api_version.unwrap_or("<none>"),
            kind.unwrap_or("<none>")
        )));
    }
    let crd = K::crd();
    let namespaced = crd.spec.scope == "Namespaced";
    // The API server checks every value's type against the CRD's schema before anything else;
    // do the same, so that a type error names its field (`spec.parameters.REPLICAS`) instead of
    // surfacing as a bare deserialization message.
    check_schema_types(&raw, &openapi_schema(crd)).map_err(&wrong)?;
    let mut object: K = serde_json::from_value(raw).map_err(|e| wrong(e.to_string()))?;
    let meta = object.meta_mut();
    if meta.name.as_deref().is_none_or(str::is_empty) {
        return Err(wrong("metadata.name is missing".to_owned()));
    }
    if namespaced && meta.namespace.is_none() {
        meta.namespace = Some("default".to_owned());
    }
    Ok(object)
}

/// Why a CRD could not be printed.
#[derive(Debug, thiserror::Error)]
#[error("serialising the {kind} CRD: {source}")]
pub struct CrdYamlError {
    /// The CRD's kind.
    pub kind: String,
    /// The serializer's error.
    pub source: serde_json::Error,
}

/// `crd` as the YAML document an operator checks in, headed by a comment naming `generator`
/// (the command that prints it); every string reads back the same in YAML 1.1 (kubectl) and
/// 1.2 readers ([`crate::yaml`]).
///
/// # Errors
/// [`CrdYamlError`] when the CRD cannot be turned into JSON.
pub fn crd_yaml(crd: &CustomResourceDefinition, generator: &str) -> Result<String, CrdYamlError> {
    let value = serde_json::to_value(crd).map_err(|source| CrdYamlError {
        kind: crd.spec.names.kind.clone(),
        source,
    })?;
    let body = crate::yaml::to_string(&value);
    Ok(format!(
        "# Generated by `{generator}`; do not edit.\n---\n{body}"
    ))
}

fn check_types_at(value: &Value, schema: &JSONSchemaProps, path: &str) -> Result<(), String> {
    if !type_ok(value, schema) {
        let expected = schema.type_.as_deref().unwrap_or("?");
        return Err(format!(
            "`{path}` must be of type {expected}, not {} (the API server refuses it; quote a value meant as a string)",
            describe(value)
        ));
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let sub = schema.properties.as_ref().and_then(|p| p.get(key)).or(
                    match &schema.additional_properties {
                        Some(JSONSchemaPropsOrBool::Schema(s)) => Some(&**s),
                        _ => None,
                    },
                );
                if let Some(sub) = sub {
                    let field = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    check_types_at(item, sub, &field)?;
                }
            }
        }
        Value::Array(items) => {
            if let Some(JSONSchemaPropsOrArray::Schema(sub)) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    check_types_at(item, sub, &format!("{path}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether `value` has the type `schema` declares.
fn type_ok(value: &Value, schema: &JSONSchemaProps) -> bool {
    match (schema.type_.as_deref(), value) {
        (_, Value::Null) => true,
        _ if schema.x_kubernetes_int_or_string == Some(true) => {
            value.is_string() || value.is_i64() || value.is_u64()
        }
        (None, _) => true,
        (Some("string"), v) => v.is_string(),
        (Some("integer"), v) => v.is_i64() || v.is_u64(),
        (Some("number"), v) => v.is_number(),
        (Some("boolean"), v) => v.is_boolean(),
        (Some("object"), v) => v.is_object(),
        (Some("array"), v) => v.is_array(),
        (Some(_), _) => true,
    }
}

/// A value as an error message shows it: its type, and the value itself when it is a scalar.
fn describe(value: &Value) -> String {
    match value {
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "a map".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `spec.replicas` an integer, `spec.labels` a map of strings, `spec.items` a list of
    /// objects with a `port` that is an int or a string, `spec.note` a nullable string.
    fn schema() -> JSONSchemaProps {
        serde_json::from_value(json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "replicas": {"type": "integer"},
                "ratio": {"type": "number"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "port": {"x-kubernetes-int-or-string": true},
                }}},
                "note": {"type": "string", "nullable": true},
                "free": {},
            }}},
        }))
        .unwrap()
    }

    #[test]
    fn values_of_the_declared_types_pass() {
        let ok = json!({"spec": {
            "replicas": 3, "ratio": 0.5, "labels": {"a": "b"},
            "items": [{"port": 80}, {"port": "http"}], "note": null, "free": [1, "x"],
            "unknown": true,
        }});
        assert_eq!(check_schema_types(&ok, &schema()), Ok(()));
    }

    #[test]
    fn a_type_error_names_its_field_and_what_was_found() {
        let cases = [
            (
                json!({"spec": {"replicas": "3"}}),
                "`spec.replicas`",
                "string \"3\"",
            ),
            (
                json!({"spec": {"replicas": 1.5}}),
                "`spec.replicas`",
                "number 1.5",
            ),
            (
                json!({"spec": {"labels": {"a": 1}}}),
                "`spec.labels.a`",
                "number 1",
            ),
            (
                json!({"spec": {"items": [{"port": 1}, {"port": true}]}}),
                "`spec.items[1].port`",
                "boolean true",
            ),
            (json!({"spec": {"items": {}}}), "`spec.items`", "a map"),
            (json!({"spec": []}), "`spec`", "a list"),
        ];
        for (value, field, found) in cases {
            let err = check_schema_types(&value, &schema()).unwrap_err();
            assert!(err.starts_with(field), "{value}: {err}");
            assert!(err.contains(found), "{value}: {err}");
        }
    }

    #[test]
    fn the_schema_of_a_crd_is_its_first_versions() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Thing", "plural": "things"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}}}]},
        }))
        .unwrap();
        assert_eq!(openapi_schema(crd).type_.as_deref(), Some("object"));
    }
}
