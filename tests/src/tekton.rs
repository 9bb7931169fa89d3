//! Tekton's own `tekton.dev` PipelineRun and TaskRun CRDs for every test tier.
//!
//! `tests/crds/` holds the CRDs of the Tekton Pipelines release the end-to-end tier runs, vendored
//! from its Go module by `tests/crds/vendor.sh` (`make record-tekton`). They are structural: the API
//! server prunes any field Tekton's schema does not declare, in the spec as in the status, exactly
//! as on a cluster running Tekton. So a misspelt field in the operator's template, or a status shape
//! the simulator invents, is caught by the integration tests rather than accepted by an open schema.
//!
//! Guarantees:
//! 1. [`crds`] and the end-to-end tier's installation of Tekton's `config/` apply the same
//!    adjustment, [`without_webhook`], and nothing else.
//! 2. [`VERSION`] is the Tekton version the vendored files state in their header (a unit test
//!    checks both files agree with it).
//!
//! Caveats:
//! 1. No Tekton webhook runs outside the end-to-end tier: conversion is `None` (only `v1` is used)
//!    and nothing is defaulted or validated at admission — the schema's pruning is all the API
//!    server does.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition,
};
use kube::api::ApiResource;

const PIPELINERUN_CRD: &str = include_str!("../crds/tekton.dev_pipelineruns.yaml");
const TASKRUN_CRD: &str = include_str!("../crds/tekton.dev_taskruns.yaml");

/// The Tekton Pipelines version the vendored CRDs (and the recordings of `tests/e2e/recorded/`)
/// come from.
pub const VERSION: &str = "v1.12.2";

/// Tekton's PipelineRun and TaskRun CRDs, ready to install on a cluster without Tekton's webhook.
///
/// # Panics
///
/// When a vendored file does not parse as a CRD (they are compiled in; a unit test parses them).
pub fn crds() -> Vec<CustomResourceDefinition> {
    [PIPELINERUN_CRD, TASKRUN_CRD]
        .iter()
        .map(|text| {
            let mut crd: CustomResourceDefinition =
                serde_yaml::from_str(text).unwrap_or_else(|e| {
                    panic!("a vendored Tekton CRD (tests/crds/) does not parse: {e}")
                });
            without_webhook(&mut crd);
            crd
        })
        .collect()
}

/// Adjusts one of Tekton's CRDs for a cluster without Tekton's webhook: `None` conversion (the
/// tests only use `v1`, so nothing needs converting). The ResolutionRequest CRD's
/// `status.refSource` and `status.source`, which the resolvers write as `null` when a resolution
/// fails, are made nullable: Tekton's webhook would not let such a status through either, but
/// without it the API server refuses the update and the failure is never recorded.
pub fn without_webhook(crd: &mut CustomResourceDefinition) {
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "None".to_string(),
        webhook: None,
    });
    if crd.metadata.name.as_deref() != Some("resolutionrequests.resolution.tekton.dev") {
        return;
    }
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"))
            .and_then(|s| s.properties.as_mut());
        if let Some(status) = status {
            for field in ["refSource", "source"] {
                if let Some(schema) = status.get_mut(field) {
                    schema.nullable = Some(true);
                }
            }
        }
    }
}

/// The shipped Tekton engine as the operator loads it: the CRDs must serve exactly the kinds its
/// status mapping names (its child and the grandchildren that carry the failure facts).
fn shipped_engine() -> workflowexecution_operator::engine::Engine {
    let templates = crate::deploy::repo_root().join("templates/workflowexecution");
    let rules = workflowexecution_operator::templates::mapping_rules();
    workflowexecution_operator::engine::Engine::load(&templates, "tekton", &rules)
        .unwrap_or_else(|e| panic!("the shipped Tekton engine does not load: {e}"))
}

/// `tekton.dev/v1` PipelineRun: the shipped Tekton engine's child.
pub fn pipelinerun_resource() -> ApiResource {
    shipped_engine().child_resource
}

/// `tekton.dev/v1` TaskRun: what carries the shipped Tekton engine's failure facts.
pub fn taskrun_resource() -> ApiResource {
    shipped_engine()
        .grandchild_resource
        .unwrap_or_else(|| panic!("the shipped Tekton engine reads no TaskRuns"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendored_crds_are_tektons_structural_v1_with_status_and_no_webhook() {
        let crds = crds();
        assert_eq!(crds.len(), 2);
        let resources = [pipelinerun_resource(), taskrun_resource()];
        for (crd, resource) in crds.iter().zip(resources) {
            assert_eq!(crd.spec.group, "tekton.dev");
            assert_eq!(crd.spec.names.plural, resource.plural);
            let v1 = crd
                .spec
                .versions
                .iter()
                .find(|v| v.name == "v1")
                .unwrap_or_else(|| panic!("{:?} has no v1", crd.metadata.name));
            assert!(v1.storage && v1.served);
            assert!(v1.subresources.as_ref().is_some_and(|s| s.status.is_some()));
            // Structural: the root does not keep unknown fields, so the API server prunes them.
            let root = v1
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .unwrap_or_else(|| panic!("{:?} has no schema", crd.metadata.name));
            assert_ne!(root.x_kubernetes_preserve_unknown_fields, Some(true));
            assert!(
                root.properties
                    .as_ref()
                    .is_some_and(|p| p.contains_key("spec"))
            );
            assert_eq!(
                crd.spec.conversion.as_ref().map(|c| c.strategy.as_str()),
                Some("None")
            );
        }
    }

    #[test]
    fn vendored_crds_state_the_tekton_version_and_their_source() {
        for text in [PIPELINERUN_CRD, TASKRUN_CRD] {
            let header = text.lines().next().unwrap_or_default();
            assert_eq!(
                header.split(':').next(),
                Some(format!("# Tekton Pipelines {VERSION}").as_str()),
                "{header}"
            );
            assert!(text.contains(&format!("github.com/tektoncd/pipeline@{VERSION}")));
        }
    }
}
