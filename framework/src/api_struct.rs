//! API structs whose optional fields are left out when unset, declared without an attribute per
//! field: [`api_struct!`](macro@crate::api_struct).
//!
//! Kubernetes API types omit an unset optional field rather than writing `null` (a merge patch
//! would read `null` as "delete"); every `Option` field of a status or spec type therefore
//! carries `#[serde(default, skip_serializing_if = "Option::is_none")]`. The macro adds that
//! attribute to every field whose type is written `Option<…>` and leaves every other field, and
//! every attribute written, as it is.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! kubernaut_framework::api_struct! {
//!     /// A status.
//!     #[derive(Serialize, Deserialize, Default)]
//!     #[serde(rename_all = "camelCase")]
//!     pub struct Status {
//!         /// Always written.
//!         pub phase: String,
//!         /// Written only when set.
//!         pub started_at: Option<String>,
//!     }
//! }
//!
//! let status = Status { phase: "Running".into(), ..Status::default() };
//! assert_eq!(serde_json::to_string(&status).unwrap(), r#"{"phase":"Running"}"#);
//! let read: Status = serde_json::from_str(r#"{"phase":"Running"}"#).unwrap();
//! assert_eq!(read.started_at, None);
//! ```
//!
//! Guarantees:
//! 1. A field written `Option<…>` (the last path segment `Option`, not `std::option::Option`)
//!    gets `#[serde(default, skip_serializing_if = "Option::is_none")]` after its own attributes;
//!    nothing else changes, so derives (serde, schemars, kube's `CustomResource`) see the struct
//!    as if the attribute were written by hand.
//!
//! Caveats:
//! 1. Only structs with named fields; a field's own `skip_serializing_if` would be repeated, so a
//!    struct with one is written without the macro.

/// Declares a struct whose `Option<…>` fields are omitted when `None` and read as `None` when
/// absent. See the [module documentation](mod@crate::api_struct).
#[macro_export]
macro_rules! api_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($fields:tt)* }
    ) => {
        $crate::api_struct! { @fields [$(#[$meta])* $vis struct $name] [] $($fields)* }
    };
    (
        @fields $head:tt [$($done:tt)*]
        $(#[$field_meta:meta])* $field_vis:vis $field:ident : Option<$ty:ty>
        $(, $($rest:tt)*)?
    ) => {
        $crate::api_struct! {
            @fields $head [
                $($done)*
                $(#[$field_meta])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                $field_vis $field: Option<$ty>,
            ]
            $($($rest)*)?
        }
    };
    (
        @fields $head:tt [$($done:tt)*]
        $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty
        $(, $($rest:tt)*)?
    ) => {
        $crate::api_struct! {
            @fields $head [$($done)* $(#[$field_meta])* $field_vis $field: $ty,]
            $($($rest)*)?
        }
    };
    (@fields [$($head:tt)*] [$($done:tt)*]) => {
        $($head)* { $($done)* }
    };
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    crate::api_struct! {
        #[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
        #[serde(rename_all = "camelCase")]
        struct Sample {
            name: String,
            #[serde(rename = "count")]
            number: Option<u32>,
            nested: Option<Vec<Option<String>>>,
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            items: Vec<String>,
            last_field: Option<bool>
        }
    }

    #[test]
    fn unset_options_are_left_out_and_read_back_as_none() {
        let empty = Sample::default();
        assert_eq!(serde_json::to_value(&empty).unwrap(), json!({"name": ""}));
        let read: Sample = serde_json::from_value(json!({"name": "a"})).unwrap();
        assert_eq!(read, empty_named("a"));
        let full = Sample {
            name: "a".into(),
            number: Some(1),
            nested: Some(vec![None]),
            items: vec!["x".into()],
            last_field: Some(false),
        };
        let written = serde_json::to_value(&full).unwrap();
        assert_eq!(
            written,
            json!({"name": "a", "count": 1, "nested": [null], "items": ["x"], "lastField": false})
        );
        assert_eq!(serde_json::from_value::<Sample>(written).unwrap(), full);
    }

    fn empty_named(name: &str) -> Sample {
        Sample {
            name: name.into(),
            ..Sample::default()
        }
    }
}
