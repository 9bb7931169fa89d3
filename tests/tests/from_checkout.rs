//! The README's "Run the operator from a checkout", step by step: the control plane of `make
//! controlplane-shell`, the operator binary started with the README's command line from the
//! repository root (no environment but `KUBECONFIG`, and free ports), a sample applied, and the
//! WorkflowExecution completing.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use kube::{Api, api::PostParams};
use kubernaut_test_harness::{
    ControlPlane,
    checkout::{self, OperatorProcess, operator_binary},
};
use workflowexecution_operator::types::{Phase, WorkflowExecution};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn the_readme_walkthrough_completes_a_sample() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let _simulator = checkout::prepare(&cp, true).await?;
    let mut command = Command::new(operator_binary()?);
    command
        .args([
            "run",
            "--config",
            "config/workflowexecution.yaml",
            "--templates",
            "templates/workflowexecution",
        ])
        .current_dir(repo())
        .env_clear()
        .env("KUBECONFIG", cp.kubeconfig_path())
        // Free ports: the defaults (9090, 8081) may be taken on the machine running the test.
        .env("WFE_CONTROLLER__METRICSADDR", "127.0.0.1:0")
        .env("WFE_CONTROLLER__HEALTHADDR", "127.0.0.1:0");
    let operator = OperatorProcess::spawn(command, &cp.dir().join("operator.log"))?;

    // `kubectl apply -f config/samples/namespaced-deployment.yaml`
    let sample = std::fs::read_to_string(repo().join("config/samples/namespaced-deployment.yaml"))?;
    let wfe: WorkflowExecution = serde_yaml::from_str(&sample)?;
    let namespace = wfe.metadata.namespace.clone().unwrap_or("default".into());
    let name = wfe.metadata.name.clone().unwrap_or_default();
    let wfes: Api<WorkflowExecution> = Api::namespaced(cp.client().await?, &namespace);
    wfes.create(&PostParams::default(), &wfe).await?;

    // `kubectl get wfe -A -w` until it is Completed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let current = wfes.get(&name).await?;
        let phase = current.status.as_ref().and_then(|s| s.phase);
        if phase == Some(Phase::Completed) {
            let status = current.status.unwrap_or_default();
            let run = status
                .pipeline_run_ref
                .map(|r| r.namespace)
                .unwrap_or_default();
            assert_eq!(run, checkout::NAMESPACES[1]);
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{namespace}/{name} is {phase:?}, not Completed; operator log:\n{}",
            operator.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
