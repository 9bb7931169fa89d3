//! The bundle a WorkflowExecution runs: which OCI reference the bundles resolver pulls.
//!
//! `spec.workflowRef.containerImage` names the bundle, usually by tag
//! (`registry.example.com/workflows/restart:v1.2.0`). When `spec.workflowRef.containerDigest` is
//! set as well (`sha256:<64 hex>`), the bundle is pulled **by digest**: the repository of
//! `containerImage` (its tag and any digest removed) `@` the digest,
//! `registry.example.com/workflows/restart@sha256:…`. A tag that is moved later cannot change
//! what runs on a production target.
//!
//! Guarantees:
//! 1. [`pulled_reference`] is the one place the reference is computed: the template context
//!    (`bundle.reference`, see [`crate::templates::template_context`]) and the
//!    `execution.allowedBundles` check ([`crate::validate`]) both use it, so the allowlist judges
//!    what is actually pulled.
//! 2. A digest is accepted only in the form the CRD admits ([`DIGEST_PATTERN`]).
//!
//! The reference itself is the framework's ([`kubernaut_framework::image`]): registry ports are
//! not tags, and without a digest `containerImage` is passed unchanged for the resolver to judge.

pub use kubernaut_framework::image::{
    DIGEST_LENGTH, DIGEST_PATTERN, ImageRefError as BundleRefError, is_valid_digest,
    pulled_reference, repository,
};
