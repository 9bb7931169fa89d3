//! `local-controlplane`: start a local Kubernetes control plane, print how to reach it, and stop it
//! on Ctrl-C.

use kubernaut_test_harness::{ControlPlane, tekton};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cp = ControlPlane::start().await?;
    cp.install_crds(&tekton::crds()).await?;
    println!(
        "local control plane {} ready at {} (started in {:.1?})",
        cp.version(),
        cp.server_url(),
        cp.startup_time()
    );
    println!(
        "Tekton {}'s PipelineRun and TaskRun CRDs installed (tekton.dev/v1).",
        tekton::VERSION
    );
    println!();
    println!("  export KUBECONFIG={}", cp.kubeconfig_path().display());
    println!("  kubectl get --raw /version");
    println!();
    println!("logs: {}", cp.dir().display());
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    cp.stop();
    Ok(())
}
