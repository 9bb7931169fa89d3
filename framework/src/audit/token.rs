//! The `http` sink's bearer token: read from a file for every request, never shown.

use std::fmt;
use std::path::{Path, PathBuf};

/// A bearer token. Its `Debug` and `Display` print `[redacted]`, so a token can never reach a
/// log line or an error message by formatting.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BearerToken(String);

impl BearerToken {
    /// The `Authorization` header value, marked sensitive so `http`'s own `Debug` hides it.
    pub(crate) fn header(&self) -> Result<reqwest::header::HeaderValue, TokenError> {
        let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {}", self.0))
            .map_err(|_| TokenError::NotAHeaderValue)?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// `text` with every occurrence of the token replaced by `[redacted]`.
    pub(crate) fn redact(&self, text: &str) -> String {
        text.replace(&self.0, REDACTED)
    }
}

const REDACTED: &str = "[redacted]";

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Why the token file gave no usable token. The messages never contain the file's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("reading the bearer token file failed: {0}")]
    Unreadable(String),
    /// The file holds only whitespace.
    #[error("the bearer token file is empty")]
    Empty,
    /// The token has characters an HTTP header cannot carry.
    #[error("the bearer token file holds characters an HTTP header cannot carry")]
    NotAHeaderValue,
}

/// The token file. It is read again for every request, so a token the kubelet rotated (or an
/// edit in place) is used from the next request on, with no window in which a stale copy is
/// sent; a projected token is a few hundred bytes on a tmpfs, and requests are at most a few per
/// flush interval.
pub(crate) struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// A token file at `path`; nothing is read yet.
    pub(crate) fn new(path: &Path) -> TokenFile {
        TokenFile {
            path: path.to_owned(),
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The token the file holds now, surrounding whitespace removed.
    pub(crate) async fn read(&self) -> Result<BearerToken, TokenError> {
        let text = tokio::fs::read_to_string(&self.path)
            .await
            .map_err(|e| TokenError::Unreadable(e.to_string()))?;
        parse(&text)
    }

    /// [`TokenFile::read`] for code outside a runtime (the start-up check).
    pub(crate) fn read_now(&self) -> Result<BearerToken, TokenError> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| TokenError::Unreadable(e.to_string()))?;
        parse(&text)
    }
}

fn parse(text: &str) -> Result<BearerToken, TokenError> {
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    let token = BearerToken(token.to_owned());
    token.header()?;
    Ok(token)
}
