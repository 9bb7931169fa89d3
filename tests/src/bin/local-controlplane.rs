//! `local-controlplane` (`make controlplane-shell`): a local Kubernetes control plane ready for the
//! WorkflowExecution operator run from a checkout — the Tekton stand-in CRDs and the
//! WorkflowExecution CRD installed, the namespaces `kubernaut-system` (the leader Lease) and
//! `kubernaut-workflows` (the PipelineRuns) created, and the Tekton simulator driving the
//! PipelineRuns to completion (scripted by the bundle name, see `tests/src/simulator.rs`). Prints
//! how to reach it and stops it on Ctrl-C.
//!
//! `--no-simulator` leaves the PipelineRuns alone (they then stay `Running`).

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, api::PostParams};
use kubernaut_test_harness::{
    ControlPlane,
    simulator::{Simulator, SimulatorConfig},
    tekton,
};
use workflowexecution_operator::types;

/// The namespaces `deploy/` creates that a local run needs: the Lease's and the PipelineRuns'.
const NAMESPACES: [&str; 2] = ["kubernaut-system", "kubernaut-workflows"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let simulate = !std::env::args().any(|a| a == "--no-simulator");
    let mut cp = ControlPlane::start().await?;
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
    let _simulator = simulate.then(|| {
        Simulator::start(
            client.clone(),
            SimulatorConfig {
                namespace: Some(NAMESPACES[1].into()),
                run_time: Duration::from_secs(5),
                ..Default::default()
            },
        )
    });
    println!(
        "local control plane {} ready at {} (started in {:.1?})",
        cp.version(),
        cp.server_url(),
        cp.startup_time()
    );
    println!(
        "Installed: the Tekton stand-in CRDs (tekton.dev/v1 PipelineRun, TaskRun), the WorkflowExecution CRD, the namespaces {}.",
        NAMESPACES.join(" and ")
    );
    if simulate {
        println!(
            "A Tekton simulator completes PipelineRuns in {} after 5s (a bundle named task-failure, oom-killed, timeout or image-pull fails instead).",
            NAMESPACES[1]
        );
    }
    println!();
    println!("  export KUBECONFIG={}", cp.kubeconfig_path().display());
    println!("  kubectl get --raw /version");
    println!();
    println!("Run the operator from the checkout (another terminal, same KUBECONFIG):");
    println!(
        "  cargo run -p workflowexecution-operator -- run --config config/workflowexecution.yaml --templates templates/workflowexecution"
    );
    println!();
    println!("logs: {}", cp.dir().display());
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    cp.stop();
    Ok(())
}
