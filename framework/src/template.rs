//! Declarative child resources rendered from minijinja templates.
//!
//! Work in progress: the types shared with the status mapping come first.

use std::fmt;

use serde::{Deserialize, Serialize};

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
