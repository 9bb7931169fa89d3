//! Tekton stand-ins for tests: `tekton.dev/v1` PipelineRun and TaskRun CRDs written by this project
//! (open schema, status subresource, the real group/version/names), so the operator can be tested
//! against a real API server without installing Tekton.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

const PIPELINERUN_CRD: &str = include_str!("../crds/tekton.dev_pipelineruns.yaml");
const TASKRUN_CRD: &str = include_str!("../crds/tekton.dev_taskruns.yaml");

/// The stand-in PipelineRun and TaskRun CRDs.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [PIPELINERUN_CRD, TASKRUN_CRD]
        .iter()
        .map(|text| {
            serde_yaml::from_str(text)
                .unwrap_or_else(|e| panic!("stand-in Tekton CRD does not parse: {e}"))
        })
        .collect()
}

// The operator's own definitions: the stand-ins must serve exactly what the operator talks to.
pub use workflowexecution_operator::operator::{pipelinerun_resource, taskrun_resource};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stand_in_crds_parse_with_status_subresource() {
        let crds = crds();
        assert_eq!(crds.len(), 2);
        for crd in &crds {
            assert_eq!(crd.spec.group, "tekton.dev");
            let v1 = &crd.spec.versions[0];
            assert_eq!(v1.name, "v1");
            assert!(v1.subresources.as_ref().is_some_and(|s| s.status.is_some()));
        }
    }
}
