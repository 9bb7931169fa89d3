//! `local-controlplane` (`make controlplane-shell`): a local Kubernetes control plane ready for the
//! WorkflowExecution operator run from a checkout — the Tekton stand-in CRDs and the
//! WorkflowExecution CRD installed, the namespaces `kubernaut-system` (the leader Lease) and
//! `kubernaut-workflows` (the PipelineRuns) created, and the Tekton simulator driving the
//! PipelineRuns to completion (scripted by the bundle name, see `tests/src/simulator.rs`). Prints
//! how to reach it and stops it on Ctrl-C.
//!
//! `--no-simulator` leaves the PipelineRuns alone (they then stay `Running`).

use kubernaut_test_harness::{
    ControlPlane,
    checkout::{self, NAMESPACES},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let simulate = !std::env::args().any(|a| a == "--no-simulator");
    let mut cp = ControlPlane::start().await?;
    let _simulator = checkout::prepare(&cp, simulate).await?;
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
            "A Tekton simulator completes PipelineRuns in {} after {:?} (a bundle named task-failure, oom-killed, timeout or image-pull fails instead).",
            NAMESPACES[1],
            checkout::SIMULATED_RUN_TIME
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
