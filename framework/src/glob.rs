//! Glob patterns with one wildcard, `*`: the matcher behind status classification rules and
//! allowlists in operator configuration.
//!
//! A pattern is literal text in which `*` stands for any run of characters, the empty run
//! included. `"*oom*"` matches any value containing `oom`, `"registry.example.com/team/*"` any
//! value starting with that prefix, `"*"` any non-empty value; a pattern without `*` must equal
//! the whole value.
//!
//! Guarantees:
//! 1. Matching is linear in the value's length per pattern part (a greedy left-to-right scan; a
//!    single wildcard class needs no backtracking), so a hostile value cannot make it slow.
//! 2. An empty value matches no pattern, not even `"*"`: an unset field is never "allowed" or
//!    "classified" by a catch-all.
//! 3. [`Case::Insensitive`] compares the Unicode lowercase forms of pattern and value;
//!    [`Case::Sensitive`] compares them as written.
//!
//! Caveats:
//! 1. `*` crosses every separator (`/`, `:`, `@`): `"registry.example.com/team/*"` also matches
//!    `"registry.example.com/team/sub/image:tag"`. Anchor what must be fixed in the literal part.
//! 2. There is no escape for a literal `*`, and no `?` or character classes.
use std::fmt;

/// How a [`Glob`] compares letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// `A` and `a` are different characters.
    Sensitive,
    /// `A` and `a` are the same character (Unicode lowercase forms are compared).
    Insensitive,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    /// The pattern is empty; it could never match anything.
    #[error("empty pattern (use \"*\" for any non-empty value)")]
    Empty,
}

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    raw: String,
    case: Case,
    /// The literal text between the `*`s (one part: no wildcard), lowercased when insensitive.
    parts: Vec<String>,
}

impl Glob {
    /// Compiles `raw`, comparing letters as `case` says.
    pub fn new(raw: &str, case: Case) -> Result<Glob, GlobError> {
        if raw.is_empty() {
            return Err(GlobError::Empty);
        }
        let folded = fold(raw, case);
        Ok(Glob {
            raw: raw.to_owned(),
            case,
            parts: folded.split('*').map(str::to_owned).collect(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether `value` matches the pattern (never when `value` is empty).
    pub fn matches(&self, value: &str) -> bool {
        if value.is_empty() {
            return false;
        }
        let value = fold(value, self.case);
        let [first, middle @ .., last] = self.parts.as_slice() else {
            // One part: no `*`, whole-value equality.
            return self.parts.first().is_some_and(|p| *p == value);
        };
        let Some(mut rest) = value.strip_prefix(first.as_str()) else {
            return false;
        };
        for part in middle {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.ends_with(last.as_str())
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn fold(text: &str, case: Case) -> String {
    match case {
        Case::Sensitive => text.to_owned(),
        Case::Insensitive => text.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        // (pattern, case, value, matches)
        let cases = [
            ("oom", Case::Insensitive, "OOM", true),
            ("oom", Case::Insensitive, "oom killed", false),
            ("*oom*", Case::Insensitive, "was OOM killed", true),
            ("*oom*", Case::Insensitive, "oom", true),
            ("oom*", Case::Insensitive, "OOMKilled", true),
            ("oom*", Case::Insensitive, "killed: oom", false),
            ("*killed", Case::Insensitive, "OOMKilled", true),
            ("a*a", Case::Insensitive, "a", false),
            ("a*a", Case::Insensitive, "aa", true),
            ("a*b*c", Case::Insensitive, "axxbyyc", true),
            ("a*b*c", Case::Insensitive, "acb", false),
            ("*", Case::Insensitive, "x", true),
            ("*", Case::Insensitive, "", false),
            ("*", Case::Sensitive, "", false),
            ("ÉCHEC", Case::Insensitive, "échec", true),
            ("ÉCHEC", Case::Sensitive, "échec", false),
            (
                "r.example.com/team/*",
                Case::Sensitive,
                "r.example.com/team/x:v1",
                true,
            ),
            (
                "r.example.com/team/*",
                Case::Sensitive,
                "r.example.com/team/a/b@sha256:0",
                true,
            ),
            (
                "r.example.com/team/*",
                Case::Sensitive,
                "r.example.com/team",
                false,
            ),
            (
                "r.example.com/team/*",
                Case::Sensitive,
                "r.example.com/teamx/y",
                false,
            ),
            (
                "r.example.com/team/*",
                Case::Sensitive,
                "evil.io/r.example.com/team/y",
                false,
            ),
            (
                "r.example.com/team/*",
                Case::Sensitive,
                "R.example.com/team/y",
                false,
            ),
            (
                "r.example.com/team/x:v1",
                Case::Sensitive,
                "r.example.com/team/x:v1",
                true,
            ),
            (
                "r.example.com/team/x:v1",
                Case::Sensitive,
                "r.example.com/team/x:v12",
                false,
            ),
        ];
        for (pattern, case, value, expected) in cases {
            let glob = Glob::new(pattern, case).unwrap();
            assert_eq!(
                glob.matches(value),
                expected,
                "{pattern:?} ({case:?}) vs {value:?}"
            );
            assert_eq!(glob.as_str(), pattern);
        }
    }

    #[test]
    fn an_empty_pattern_is_refused() {
        assert_eq!(Glob::new("", Case::Sensitive), Err(GlobError::Empty));
        assert!(GlobError::Empty.to_string().contains("empty pattern"));
    }
}
