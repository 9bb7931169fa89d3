//! A local control plane prepared for the operator run from a checkout, as `make
//! controlplane-shell` (the `local-controlplane` binary) and the README's "Run the operator from a
//! checkout" use it: the CRDs, the namespaces of `deploy/` the operator needs, and the Tekton
//! simulator.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams};
use workflowexecution_operator::types;

use crate::{
    ControlPlane,
    simulator::{Simulator, SimulatorConfig},
    tekton,
};

/// The namespaces a run from a checkout needs: the leader Lease's and the PipelineRuns' (those of
/// `deploy/` and the default configuration).
pub const NAMESPACES: [&str; 2] = ["kubernaut-system", "kubernaut-workflows"];

/// How long the simulator takes to finish a PipelineRun.
pub const SIMULATED_RUN_TIME: Duration = Duration::from_secs(5);

/// Installs Tekton's PipelineRun and TaskRun CRDs and the WorkflowExecution CRD, creates [`NAMESPACES`] and,
/// if `simulate`, starts the Tekton simulator on the PipelineRuns' namespace (it runs while the
/// returned value is kept).
///
/// # Errors
/// When the CRDs cannot be installed or a namespace cannot be created.
pub async fn prepare(cp: &ControlPlane, simulate: bool) -> anyhow::Result<Option<Simulator>> {
    let mut crds = tekton::crds();
    crds.push(types::crd());
    cp.install_crds(&crds).await?;
    let client = cp.client().await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in NAMESPACES {
        let namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        namespaces
            .create(&PostParams::default(), &namespace)
            .await?;
    }
    Ok(simulate.then(|| {
        Simulator::start(
            client,
            SimulatorConfig {
                namespace: Some(NAMESPACES[1].into()),
                run_time: SIMULATED_RUN_TIME,
                ..Default::default()
            },
        )
    }))
}
