//! String enums: a closed set of names written on the wire (status fields, Event reasons, metric
//! labels), declared once with [`string_enum!`](crate::string_enum!).
//!
//! An operator has many small enums whose values are strings somewhere: a phase in
//! `status.phase`, a failure reason in a status field and a metric label, an audit outcome in a
//! record. Written by hand each needs the same four items, kept in step with the variants:
//! `as_str`, `ALL`, `from_name` and `Display`. The macro writes them from one list of
//! `Variant = "name"` pairs.
//!
//! ```
//! kubernaut_framework::string_enum! {
//!     /// How a job ended.
//!     #[derive(Clone, Copy, Debug, PartialEq, Eq)]
//!     pub enum Outcome {
//!         /// It worked.
//!         Succeeded = "Succeeded",
//!         /// It ran out of memory.
//!         OomKilled = "OOMKilled",
//!     }
//! }
//! assert_eq!(Outcome::OomKilled.as_str(), "OOMKilled");
//! assert_eq!(Outcome::from_name("Succeeded"), Some(Outcome::Succeeded));
//! assert_eq!(Outcome::ALL, [Outcome::Succeeded, Outcome::OomKilled]);
//! assert_eq!(Outcome::OomKilled.to_string(), "OOMKilled");
//! ```
//!
//! Guarantees:
//! 1. `as_str`, `from_name`, `Display` and `ALL` are generated from the same list, so they cannot
//!    disagree; `ALL` is in declaration order.
//! 2. With a leading `serde;` the macro also puts `#[serde(rename = "name")]` on every variant:
//!    the serialized name (and, through serde's attributes, a `schemars` schema's `enum` values) is
//!    the `as_str` name by construction.
//!
//! Assumptions:
//! 1. The enum derives `Clone` and `Copy` (the methods take `self`); with `serde;` it also derives
//!    `Serialize` and/or `Deserialize`, which read the generated `rename` attributes.
//!
//! Caveats:
//! 1. Only unit variants: a value that carries data is not a closed set of names.
//! 2. `from_name` is case-sensitive, like the API server's enum validation.
//!
//! The crate `strum` derives the same items; it is not a dependency of this workspace and cannot
//! be fetched in every build environment, so this small declarative macro stands in for it.

/// Declares an enum of unit variants, each with its wire name, and generates `ALL`, `as_str`,
/// `from_name` and `Display` for it. See the [module documentation](mod@crate::string_enum).
///
/// `string_enum! { serde; ... }` additionally renames every variant for serde to its wire name;
/// `string_enum! { condition; ... }` declares the condition types of a status
/// ([`ConditionType`](crate::condition::ConditionType), each named by its wire name).
#[macro_export]
macro_rules! string_enum {
    (
        condition;
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $crate::string_enum! {
            $(#[$meta])*
            $vis enum $name { $( $(#[$variant_meta])* $variant = $text ),+ }
        }

        impl $crate::condition::ConditionType for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
        }
    };
    (
        serde;
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $crate::string_enum! {
            @emit [$(#[$meta])*] $vis $name
            $( [$(#[$variant_meta])* #[serde(rename = $text)]] $variant = $text ),+
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $crate::string_enum! {
            @emit [$(#[$meta])*] $vis $name
            $( [$(#[$variant_meta])*] $variant = $text ),+
        }
    };
    (
        @emit [$(#[$meta:meta])*] $vis:vis $name:ident
        $( [$(#[$variant_meta:meta])*] $variant:ident = $text:literal ),+
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$variant_meta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [$name; <[&str]>::len(&[$($text),+])] = [$($name::$variant),+];

            /// The value's name as written on the wire.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }

            /// The value named `name` (as [`Self::as_str`] writes it); `None` for any other name.
            pub fn from_name(name: &str) -> ::core::option::Option<$name> {
                match name {
                    $( $text => ::core::option::Option::Some($name::$variant), )+
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    crate::string_enum! {
        serde;
        /// A wire enum with a name that differs from its variant.
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Reason {
            /// Out of memory.
            OomKilled = "OOMKilled",
            /// Too slow.
            DeadlineExceeded = "DeadlineExceeded",
        }
    }

    crate::string_enum! {
        /// A label enum without serde.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Label {
            /// `buffer_full`.
            BufferFull = "buffer_full",
            /// `rejected`.
            Rejected = "rejected",
            /// `shutdown`.
            Shutdown = "shutdown",
        }
    }

    #[test]
    fn names_round_trip_through_every_generated_item() {
        assert_eq!(
            Label::ALL,
            [Label::BufferFull, Label::Rejected, Label::Shutdown]
        );
        for label in Label::ALL {
            assert_eq!(Label::from_name(label.as_str()), Some(label));
            assert_eq!(label.to_string(), label.as_str());
        }
        assert_eq!(Label::BufferFull.as_str(), "buffer_full");
        assert_eq!(Label::from_name("BufferFull"), None, "names, not variants");
        assert_eq!(Label::from_name("REJECTED"), None, "case-sensitive");
    }

    #[test]
    fn serde_names_are_the_wire_names() {
        for reason in Reason::ALL {
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, serde_json::json!(reason.as_str()));
            assert_eq!(serde_json::from_value::<Reason>(json).unwrap(), reason);
            assert_eq!(Reason::from_name(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::OomKilled.as_str(), "OOMKilled");
        assert!(serde_json::from_str::<Reason>("\"OomKilled\"").is_err());
    }
}
