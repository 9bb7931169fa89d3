//! OCI image references: pulling an image (or a bundle) by digest.
//!
//! An image is usually named by tag (`registry.example.com/workflows/restart:v1.2.0`). Given a
//! digest as well (`sha256:<64 hex>`), [`pulled_reference`] names it **by digest**: the
//! repository of the reference (its tag and any digest removed) `@` the digest,
//! `registry.example.com/workflows/restart@sha256:…`. A tag that is moved later cannot change
//! what is pulled.
//!
//! Guarantees:
//! 1. Registry ports are not tags: `127.0.0.1:5000/x:v1` pulls `127.0.0.1:5000/x@sha256:…`
//!    (a `:` counts as a tag separator only after the last `/`).
//! 2. A digest is accepted only in the form [`DIGEST_PATTERN`] says: `sha256:` followed by
//!    exactly 64 lowercase hexadecimal characters, the only algorithm registries verify by
//!    default.
//!
//! Caveats:
//! 1. Without a digest the reference is passed unchanged, whatever its form; the puller judges
//!    it.
//! 2. The repository is not otherwise parsed or normalised (no implied `docker.io/library/`),
//!    so an allowlist pattern must be written in the same spelling as the references.

/// The form of a digest this module accepts, as a regular expression (for a CRD's CEL rule or
/// OpenAPI `pattern`).
pub const DIGEST_PATTERN: &str = "^sha256:[a-f0-9]{64}$";
/// The length of a valid digest: `sha256:` and 64 hexadecimal characters.
pub const DIGEST_LENGTH: usize = 7 + 64;

/// Why no by-digest reference could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// The digest is not `sha256:` and 64 lowercase hexadecimal characters.
    #[error(
        "{digest:?} is not a sha256 digest (expected sha256: followed by 64 lowercase hexadecimal characters)"
    )]
    Digest {
        /// The digest given.
        digest: String,
    },
    /// Nothing is left of the image reference once its tag and digest are removed.
    #[error("{image:?} names no repository to pull the digest from")]
    NoRepository {
        /// The image reference given.
        image: String,
    },
}

/// Whether `digest` is `sha256:` followed by 64 lowercase hexadecimal characters.
pub fn is_valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The repository of an image reference: the reference without its `@digest` and `:tag`.
///
/// A `:` before the last `/` belongs to the registry host (a port) and is kept.
pub fn repository(image: &str) -> &str {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let last_segment = without_digest.rfind('/').map_or(0, |slash| slash + 1);
    match without_digest[last_segment..].find(':') {
        Some(colon) => &without_digest[..last_segment + colon],
        None => without_digest,
    }
}

/// The reference to pull for `image` and the optional `digest`: `image` unchanged without a
/// digest, else `repository(image)@digest`.
///
/// # Errors
/// [`ImageRefError`] when the digest is malformed or the image names no repository.
pub fn pulled_reference(image: &str, digest: Option<&str>) -> Result<String, ImageRefError> {
    let Some(digest) = digest else {
        return Ok(image.to_owned());
    };
    if !is_valid_digest(digest) {
        return Err(ImageRefError::Digest {
            digest: digest.to_owned(),
        });
    }
    let repository = repository(image);
    if repository.is_empty() || repository.ends_with('/') {
        return Err(ImageRefError::NoRepository {
            image: image.to_owned(),
        });
    }
    Ok(format!("{repository}@{digest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:9b2f4c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
    const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_digest_replaces_tag_and_digest_but_never_a_port() {
        let cases = [
            (
                "registry.example.com/wf/restart:v1.2.0",
                "registry.example.com/wf/restart",
            ),
            (
                "registry.example.com/wf/restart",
                "registry.example.com/wf/restart",
            ),
            ("127.0.0.1:5000/x:v1", "127.0.0.1:5000/x"),
            ("127.0.0.1:5000/x", "127.0.0.1:5000/x"),
            ("localhost:5000/a/b/c:latest", "localhost:5000/a/b/c"),
            ("[::1]:5000/x:v1", "[::1]:5000/x"),
            (
                &format!("registry.example.com/x@{OTHER}"),
                "registry.example.com/x",
            ),
            (
                &format!("registry.example.com/x:v1@{OTHER}"),
                "registry.example.com/x",
            ),
            (&format!("127.0.0.1:5000/x:v1@{OTHER}"), "127.0.0.1:5000/x"),
            (&format!("127.0.0.1:5000/x@{OTHER}"), "127.0.0.1:5000/x"),
            ("ubuntu:22.04", "ubuntu"),
            ("ubuntu", "ubuntu"),
        ];
        for (image, repo) in cases {
            assert_eq!(repository(image), repo, "{image}");
            assert_eq!(
                pulled_reference(image, Some(DIGEST)),
                Ok(format!("{repo}@{DIGEST}")),
                "{image}"
            );
        }
    }

    #[test]
    fn without_a_digest_the_image_is_pulled_unchanged() {
        for image in [
            "registry.example.com/wf/restart:v1",
            "127.0.0.1:5000/x",
            "odd reference@@:",
            "",
        ] {
            assert_eq!(pulled_reference(image, None), Ok(image.to_owned()));
        }
    }

    #[test]
    fn malformed_digests_are_refused() {
        let hex63 = &DIGEST[..DIGEST.len() - 1];
        let cases = [
            "",
            "sha256:",
            hex63,
            &format!("{DIGEST}0"),
            &DIGEST.to_uppercase(),
            &DIGEST.replace("sha256:", "SHA256:"),
            &DIGEST.replace("sha256:", "sha512:"),
            &DIGEST.replace('9', "g"),
            &DIGEST.replace("sha256:", ""),
            &format!(" {DIGEST}"),
            &format!("{DIGEST}\n"),
            "sha256:\u{e9}b2f4c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b",
        ];
        for digest in cases {
            assert!(!is_valid_digest(digest), "{digest:?}");
            assert_eq!(
                pulled_reference("registry.example.com/x:v1", Some(digest)),
                Err(ImageRefError::Digest {
                    digest: digest.to_owned()
                }),
                "{digest:?}"
            );
        }
        assert!(is_valid_digest(DIGEST));
        assert_eq!(DIGEST.len(), DIGEST_LENGTH);
    }

    #[test]
    fn an_image_without_a_repository_is_refused() {
        for image in [
            ":v1",
            "",
            &format!("@{OTHER}"),
            "registry.example.com/",
            "r/:v1",
        ] {
            assert_eq!(
                pulled_reference(image, Some(DIGEST)),
                Err(ImageRefError::NoRepository {
                    image: image.to_owned()
                }),
                "{image:?}"
            );
        }
    }
}
