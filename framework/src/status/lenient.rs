//! Lenient deserializers for evaluated mapping fields ([`super::reading::fields_as`]): a value
//! of another shape than expected is absent, never an error, so one odd field in a child's
//! status cannot hide the others.
//!
//! ```
//! #[derive(serde::Deserialize, Default)]
//! struct Fields {
//!     #[serde(default, deserialize_with = "kubernaut_framework::status::lenient::text")]
//!     reason: Option<String>,
//! }
//! ```
use jiff::Timestamp;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Text: a string, or a number or boolean written as text; anything else is absent.
///
/// # Errors
/// Only what the deserializer itself reports; no value is refused.
pub fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(deserializer)?
        .as_ref()
        .and_then(super::scalar_text))
}

/// An RFC 3339 timestamp; anything else is absent.
///
/// # Errors
/// Only what the deserializer itself reports; no value is refused.
pub fn timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok()))
}

/// A count that fits a `u32`; anything else is absent.
///
/// # Errors
/// Only what the deserializer itself reports; no value is refused.
pub fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value
        .as_ref()
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok()))
}
