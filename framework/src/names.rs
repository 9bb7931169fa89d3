//! Kubernetes names as types: object names, label values and label keys that are valid by
//! construction, checked with the API server's rules and refused with its words.
//!
//! | type | what it is | rule (as in `k8s.io/apimachinery/pkg/util/validation`) |
//! |---|---|---|
//! | [`DnsLabel`] | namespaces, most names that become a DNS label | `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters |
//! | [`DnsSubdomain`] | most object names (ServiceAccounts, Leases, ConfigMaps) | DNS labels joined by `.`, at most 253 characters |
//! | [`LabelValue`] | a label's value | empty, or `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters |
//! | [`QualifiedName`] | a label or annotation key | an optional DNS subdomain prefix and `/`, then a name part like a non-empty label value |
//!
//! [`namespaced_name`] writes an object's `namespace/name`, the form `kubectl` and the API
//! server's messages use. A Kubernaut remediation target is written `namespace/kind/name` (or
//! `kind/name` for a cluster-scoped object): [`is_target_resource`] checks the shape,
//! [`target_key`] gives the one spelling every "same target" comparison uses.
//!
//! Guarantees:
//! 1. A value of one of these types passed its rule when it was built; there is no other way to
//!    build one.
//! 2. A [`NameError`] quotes the value (escaped) and says what was wrong with the API server's
//!    wording (`must be no more than 63 characters`, `a lowercase RFC 1123 label must consist of
//!    …`), so an operator's message reads like the `Invalid value` the API server would return.
//! 3. [`LabelValue::fitting`] turns any text into a valid label value, keeping valid text as it
//!    is and giving distinct identities distinct values otherwise.
//!
//! Caveats:
//! 1. Lengths are counted in bytes, as Go counts them; every valid value is ASCII, so bytes and
//!    characters agree on every value that passes.
//! 2. Rules that depend on the resource kind (a Service name must be a DNS-1035 label, a Pod name
//!    may not contain `..` in some versions) are not covered.
use std::fmt;

use kube::ResourceExt;

use crate::lock::lock_name;

/// The longest DNS label and the longest label value.
const MAX_LABEL_LENGTH: usize = 63;
/// The longest DNS subdomain (and label key prefix).
const MAX_SUBDOMAIN_LENGTH: usize = 253;
/// Characters of the text kept when [`LabelValue::fitting`] appends a hash (`<prefix>-<16 hex>`).
const HASHED_PREFIX_LENGTH: usize = MAX_LABEL_LENGTH - 17;

/// The API server's message for a value that is not a DNS label.
const DNS_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// The API server's message for a value that is not a DNS subdomain (a macro, so the label key
/// prefix's message can extend it with `concat!`).
macro_rules! dns_subdomain_rule {
    () => {
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    };
}
/// The API server's message for a value that is not a DNS subdomain.
const DNS_SUBDOMAIN_RULE: &str = dns_subdomain_rule!();
/// The API server's message for a label key whose prefix is not a DNS subdomain.
const PREFIX_RULE: &str = concat!("prefix part ", dns_subdomain_rule!());
/// The API server's message for a value that is not a label value.
const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
/// The API server's message for a key whose name part is malformed.
const QUALIFIED_NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
/// The API server's message for a key with more than one `/`.
const QUALIFIED_NAME_SHAPE: &str = "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')";

/// Why a string is not a valid name of the kind asked for. The message starts with the quoted
/// value, as the API server's `Invalid value: "…": …` does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The value is empty where a name is required.
    #[error("{value:?}: {part}must be non-empty")]
    Empty {
        /// The value given.
        value: String,
        /// Which part of a label key was empty (`"name part "`, `"prefix part "`), or `""`.
        part: &'static str,
    },
    /// The value (or a part of a label key) is longer than its rule allows.
    #[error("{value:?}: {part}must be no more than {max} characters")]
    TooLong {
        /// The value given.
        value: String,
        /// Which part of a label key was too long (`"name part "`, `"prefix part "`), or `""`.
        part: &'static str,
        /// The maximum length.
        max: usize,
    },
    /// The value has characters or a shape its rule does not allow.
    #[error("{value:?}: {rule}")]
    Invalid {
        /// The value given.
        value: String,
        /// The rule, in the API server's words.
        rule: &'static str,
    },
}

/// Whether `name` is a DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?` (length not checked).
fn is_label_shaped(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Whether `value` is `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]` (non-empty; length not checked).
fn is_name_part_shaped(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// Checks a DNS label (the length first, as the API server reports it).
fn check_dns_label(value: &str) -> Result<(), NameError> {
    check_length(value, "", MAX_LABEL_LENGTH)?;
    if is_label_shaped(value) {
        Ok(())
    } else {
        Err(invalid(value, DNS_LABEL_RULE))
    }
}

/// Checks a DNS subdomain.
fn check_dns_subdomain(value: &str, part: &'static str) -> Result<(), NameError> {
    check_length(value, part, MAX_SUBDOMAIN_LENGTH)?;
    if !value.is_empty() && value.split('.').all(is_label_shaped) {
        Ok(())
    } else {
        Err(invalid(value, DNS_SUBDOMAIN_RULE))
    }
}

/// Checks a label value.
fn check_label_value(value: &str) -> Result<(), NameError> {
    check_length(value, "", MAX_LABEL_LENGTH)?;
    if value.is_empty() || is_name_part_shaped(value) {
        Ok(())
    } else {
        Err(invalid(value, LABEL_VALUE_RULE))
    }
}

/// Checks a label key: `[prefix/]name`.
fn check_qualified_name(value: &str) -> Result<(), NameError> {
    let (prefix, name) = match value.split('/').collect::<Vec<_>>()[..] {
        [name] => (None, name),
        [prefix, name] => (Some(prefix), name),
        _ => return Err(invalid(value, QUALIFIED_NAME_SHAPE)),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err(NameError::Empty {
                value: value.to_owned(),
                part: "prefix part ",
            });
        }
        check_dns_subdomain(prefix, "prefix part ").map_err(|e| match e {
            NameError::TooLong { part, max, .. } => NameError::TooLong {
                value: value.to_owned(),
                part,
                max,
            },
            _ => invalid(value, PREFIX_RULE),
        })?;
    }
    if name.is_empty() {
        return Err(NameError::Empty {
            value: value.to_owned(),
            part: "name part ",
        });
    }
    if name.len() > MAX_LABEL_LENGTH {
        return Err(NameError::TooLong {
            value: value.to_owned(),
            part: "name part ",
            max: MAX_LABEL_LENGTH,
        });
    }
    if is_name_part_shaped(name) {
        Ok(())
    } else {
        Err(invalid(value, QUALIFIED_NAME_RULE))
    }
}

fn check_length(value: &str, part: &'static str, max: usize) -> Result<(), NameError> {
    if value.len() > max {
        Err(NameError::TooLong {
            value: value.to_owned(),
            part,
            max,
        })
    } else {
        Ok(())
    }
}

fn invalid(value: &str, rule: &'static str) -> NameError {
    NameError::Invalid {
        value: value.to_owned(),
        rule,
    }
}

/// Declares a string newtype whose constructor checks one rule.
macro_rules! checked_name {
    ($(#[$meta:meta])* $name:ident, $check:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            ///
            /// # Errors
            /// A [`NameError`] saying what is wrong with `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                Self::check(&value)?;
                Ok(Self(value))
            }

            /// Checks `value` without keeping it.
            ///
            /// # Errors
            /// A [`NameError`] saying what is wrong with `value`.
            pub fn check(value: &str) -> Result<(), NameError> {
                ($check)(value)
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value, unwrapped.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(value: String) -> Result<Self, NameError> {
                Self::new(value)
            }
        }
    };
}

checked_name!(
    /// An RFC 1123 DNS label (namespaces): lowercase alphanumerics and `-`, starting and ending
    /// alphanumeric, at most 63 characters.
    DnsLabel,
    check_dns_label
);

checked_name!(
    /// An RFC 1123 DNS subdomain (most object names, ServiceAccounts, Leases): lowercase
    /// alphanumerics, `-` and `.`, each `.`-separated part starting and ending alphanumeric, at
    /// most 253 characters.
    DnsSubdomain,
    |value| check_dns_subdomain(value, "")
);

checked_name!(
    /// A label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`, starting and ending
    /// alphanumeric.
    LabelValue,
    check_label_value
);

checked_name!(
    /// A label (or annotation) key: an optional DNS subdomain prefix and `/`, then a name part of
    /// at most 63 alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric
    /// (`kubernaut.ai/workflow-id`, `app`).
    QualifiedName,
    check_qualified_name
);

impl LabelValue {
    /// A valid label value for any `text`: `text` itself when it is one; otherwise its first 46
    /// characters with every character a label value cannot hold replaced by `_` and the edges
    /// trimmed to alphanumerics, then `-` and 16 hex characters of SHA-256(`identity`) (only the
    /// hash when nothing is left).
    ///
    /// `identity` is what the value must keep distinct, usually `text` itself; pass the original
    /// when `text` is a rewritten form of it (an operator that writes `/` as `__`, say), so two
    /// originals that rewrite alike still get distinct values.
    pub fn fitting(text: &str, identity: &str) -> LabelValue {
        if check_label_value(text).is_ok() {
            return LabelValue(text.to_owned());
        }
        let cleaned: String = text
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .take(HASHED_PREFIX_LENGTH)
            .collect();
        let prefix = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        let hash = lock_name("", identity);
        if prefix.is_empty() {
            LabelValue(hash)
        } else {
            LabelValue(format!("{prefix}-{hash}"))
        }
    }
}

/// `namespace/name` of `object`, or only `name` for a cluster-scoped object: the form `kubectl`
/// and the API server's messages use.
pub fn namespaced_name<K: ResourceExt>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// Whether `target` is a Kubernaut remediation target: `namespace/kind/name` or `kind/name`, every
/// part non-empty.
pub fn is_target_resource(target: &str) -> bool {
    let parts: Vec<&str> = target.split('/').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty())
}

/// The identity of a remediation target for locking, cooldown and every "same target"
/// comparison: `target` with its kind part lower-cased.
///
/// Users write kinds in CamelCase (`Deployment`) as often as in lower case (`deployment`); both
/// name one object, so both must be one key. Namespaces and names are DNS names, lower-case
/// already, and stay as written. A value that is not `namespace/kind/name` or `kind/name` is
/// returned unchanged (validation refuses it before any key is used).
pub fn target_key(target: &str) -> String {
    let mut parts: Vec<String> = target.split('/').map(str::to_owned).collect();
    let kind = match parts.len() {
        3 => 1,
        2 => 0,
        _ => return target.to_owned(),
    };
    parts[kind] = parts[kind].to_lowercase();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use kube::api::ObjectMeta;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn dns_labels_and_subdomains_follow_rfc_1123() {
        let cases: &[(&str, bool, bool)] = &[
            ("kubernaut-workflows", true, true),
            ("a", true, true),
            ("0a9", true, true),
            ("runner.v2", false, true),
            ("-a", false, false),
            ("a-", false, false),
            ("A", false, false),
            ("a_b", false, false),
            ("", false, false),
            ("a..b", false, false),
            (".a", false, false),
            ("\u{e9}t\u{e9}", false, false),
        ];
        for (name, label, subdomain) in cases {
            assert_eq!(DnsLabel::check(name).is_ok(), *label, "{name:?}");
            assert_eq!(DnsSubdomain::check(name).is_ok(), *subdomain, "{name:?}");
        }
        assert!(DnsLabel::check(&"a".repeat(63)).is_ok());
        assert!(DnsLabel::check(&"a".repeat(64)).is_err());
        // A subdomain's parts are not bounded by 63 on their own; the whole is bounded by 253.
        assert!(DnsSubdomain::check(&format!("{}.b", "a".repeat(64))).is_ok());
        assert!(DnsSubdomain::check(&"a".repeat(253)).is_ok());
        assert!(DnsSubdomain::check(&"a".repeat(254)).is_err());
    }

    #[test]
    fn label_values_allow_mixed_case_underscores_and_empty() {
        for valid in ["", "a", "MyValue", "my_value", "1.2-3", &"x".repeat(63)] {
            assert!(LabelValue::check(valid).is_ok(), "{valid:?}");
        }
        for invalid in ["_a", "a.", "a/b", "a b", "caf\u{e9}", &"x".repeat(64)] {
            assert!(LabelValue::check(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn qualified_names_have_an_optional_subdomain_prefix() {
        for valid in [
            "app",
            "kubernaut.ai/workflow-id",
            "example.com/My_Name",
            "a/b",
        ] {
            assert!(QualifiedName::check(valid).is_ok(), "{valid:?}");
        }
        for invalid in [
            "",
            "/a",
            "a/",
            "a/b/c",
            "Example.com/a",
            "-a",
            "kubernaut.ai/-x",
            &"x".repeat(64),
            &format!("{}/a", "a".repeat(254)),
        ] {
            assert!(QualifiedName::check(invalid).is_err(), "{invalid:?}");
        }
    }

    #[test]
    fn errors_quote_the_value_and_speak_like_the_api_server() {
        let cases: &[(Result<(), NameError>, &str)] = &[
            (
                DnsLabel::check("Team-A"),
                "\"Team-A\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
            ),
            (
                DnsLabel::check(&"a".repeat(64)),
                "must be no more than 63 characters",
            ),
            (
                DnsSubdomain::check("runner_1"),
                "\"runner_1\": a lowercase RFC 1123 subdomain must consist of",
            ),
            (
                LabelValue::check("a/b"),
                "\"a/b\": a valid label must be an empty string or consist of alphanumeric characters",
            ),
            (
                QualifiedName::check("x/"),
                "\"x/\": name part must be non-empty",
            ),
            (
                QualifiedName::check("a/b/c"),
                "with an optional DNS subdomain prefix and '/'",
            ),
            (
                DnsLabel::check("a\nb"),
                "\"a\\nb\": a lowercase RFC 1123 label",
            ),
        ];
        for (result, want) in cases {
            let message = result.as_ref().expect_err(want).to_string();
            assert!(message.contains(want), "{message:?} lacks {want:?}");
        }
    }

    #[test]
    fn newtypes_keep_what_they_checked() {
        let label = DnsLabel::new("kubernaut-workflows").unwrap();
        assert_eq!(label.as_str(), "kubernaut-workflows");
        assert_eq!(label.to_string(), "kubernaut-workflows");
        assert_eq!(String::from(label), "kubernaut-workflows");
        assert!(DnsSubdomain::try_from("Nope".to_owned()).is_err());
    }

    #[test]
    fn fitting_keeps_valid_text_and_hashes_the_rest() {
        assert_eq!(
            LabelValue::fitting("default__deployment__nginx", "x").as_str(),
            "default__deployment__nginx"
        );
        let hashed = LabelValue::fitting("caf\u{e9}", "caf\u{e9}");
        assert_eq!(
            hashed.as_str(),
            format!("caf-{}", lock_name("", "caf\u{e9}"))
        );
        assert_eq!(
            LabelValue::fitting("\u{e9}", "\u{e9}").as_str(),
            lock_name("", "\u{e9}")
        );
        let long = "a".repeat(100);
        assert_eq!(
            LabelValue::fitting(&long, &long).as_str(),
            format!("{}-{}", "a".repeat(46), lock_name("", &long))
        );
    }

    #[test]
    fn namespaced_names_match_kubectl() {
        let config_map = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                namespace: Some("team-a".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        assert_eq!(namespaced_name(&config_map), "team-a/settings");
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some("team-a".into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        assert_eq!(namespaced_name(&namespace), "team-a");
    }

    proptest! {
        #[test]
        fn fitting_always_gives_a_valid_label_value(text in "\\PC{0,100}") {
            let value = LabelValue::fitting(&text, &text);
            prop_assert!(LabelValue::check(value.as_str()).is_ok(), "{:?} -> {:?}", text, value);
        }
    }

    #[test]
    fn target_keys_lower_case_only_the_kind() {
        let cases = [
            ("default/Deployment/nginx", "default/deployment/nginx"),
            ("default/deployment/nginx", "default/deployment/nginx"),
            ("default/DEPLOYMENT/nginx", "default/deployment/nginx"),
            ("Team-A/Deployment/Nginx", "Team-A/deployment/Nginx"),
            ("ns/Deployment.apps/web", "ns/deployment.apps/web"),
            ("Node/worker-node-1", "node/worker-node-1"),
            ("node/Worker-Node-1", "node/Worker-Node-1"),
            ("nginx", "nginx"),
            ("a/B/c/D", "a/B/c/D"),
            ("", ""),
        ];
        for (target, key) in cases {
            assert_eq!(target_key(target), key, "{target:?}");
        }
    }

    #[test]
    fn a_target_has_two_or_three_non_empty_parts() {
        for (target, valid) in [
            ("ns/Deployment/web", true),
            ("Node/worker", true),
            ("web", false),
            ("a/b/c/d", false),
            ("ns//web", false),
            ("/Node/worker", false),
            ("", false),
        ] {
            assert_eq!(is_target_resource(target), valid, "{target:?}");
        }
    }
}
