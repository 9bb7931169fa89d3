//! `local-controlplane` (`make controlplane-shell`): a local Kubernetes control plane ready for the
//! WorkflowExecution operator run from a checkout — Tekton's PipelineRun and TaskRun CRDs and the
//! WorkflowExecution CRD installed, the namespaces `kubernaut-system` (the leader Lease) and
//! `kubernaut-workflows` (the PipelineRuns) created, and the Tekton simulator driving the
//! PipelineRuns to completion (scripted by the bundle name, see `tests/src/simulator.rs`). Prints
//! how to reach it and stops it on Ctrl-C.
//!
//! `--no-simulator` leaves the PipelineRuns alone (they then stay `Running`).

use kubernaut_test_harness::{
    ControlPlane,
    checkout::{self, NAMESPACES},
    tekton,
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
        "Installed: Tekton {}'s PipelineRun and TaskRun CRDs (tekton.dev/v1), the WorkflowExecution CRD, the namespaces {}.",
        tekton::VERSION,
        NAMESPACES.join(" and ")
    );
    if simulate {
        println!(
            "A Tekton simulator plays the PipelineRuns in {} (see tests/src/simulator.rs for the bundle names that fail).",
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
