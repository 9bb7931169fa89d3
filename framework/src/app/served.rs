//! "This API must be served": a start-up check that the cluster serves a kind the templates
//! create or read, so that a missing CRD (Tekton's, say) stops the process with a clear message
//! instead of a watch failing forever.

use kube::{Client, api::ApiResource, core::GroupVersionKind};

use crate::template::ChildKind;

/// The cluster does not serve a kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {kind} API is not served by this cluster ({message})")]
pub struct NotServed {
    /// The kind, as `apiVersion, Kind=…`.
    pub kind: String,
    /// What the API server said instead.
    pub message: String,
}

/// The API resource of a kind named in a template or mapping file (plural guessed the way kube
/// does: `TaskRun` → `taskruns`).
pub fn resource_of(kind: &ChildKind) -> ApiResource {
    let (group, version) = kind
        .api_version
        .rsplit_once('/')
        .unwrap_or(("", kind.api_version.as_str()));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind.kind))
}

/// Fails unless the cluster serves `kind` (its API group version lists its plural).
///
/// # Errors
/// [`NotServed`] naming what was found instead.
pub async fn check_served(client: &Client, kind: &ChildKind) -> Result<(), NotServed> {
    let resource = resource_of(kind);
    let missing = |message: String| NotServed {
        kind: kind.to_string(),
        message,
    };
    // The core group (`v1`) is served under /api, every other group under /apis.
    let listed = if kind.api_version.contains('/') {
        client.list_api_group_resources(&kind.api_version).await
    } else {
        client.list_core_api_resources(&kind.api_version).await
    };
    match listed {
        Ok(list) if list.resources.iter().any(|r| r.name == resource.plural) => Ok(()),
        Ok(_) => Err(missing(format!(
            "{} has no {} resource",
            kind.api_version, resource.plural
        ))),
        Err(e) => Err(missing(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_of_splits_group_and_version_and_guesses_the_plural() {
        let kind = ChildKind {
            api_version: "tekton.dev/v1".into(),
            kind: "TaskRun".into(),
        };
        let resource = resource_of(&kind);
        assert_eq!(
            (resource.group.as_str(), resource.version.as_str()),
            ("tekton.dev", "v1")
        );
        assert_eq!(resource.plural, "taskruns");
        let core = resource_of(&ChildKind {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        });
        assert_eq!((core.group.as_str(), core.api_version.as_str()), ("", "v1"));
        assert_eq!(core.plural, "configmaps");
    }
}
