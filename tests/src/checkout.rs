//! A local control plane prepared for the operator run from a checkout, as `make
//! controlplane-shell` (the `local-controlplane` binary) and the README's "Run the operator from a
//! checkout" use it: the CRDs, the namespaces of `deploy/` the operator needs, and the Tekton
//! simulator; and the operator binary of the build ([`operator_binary`]), run as a process
//! ([`OperatorProcess`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// The `workflowexecution-operator` binary of this build: the one next to the running test binary
/// (`cargo test --workspace` builds it there; `cargo build -p workflowexecution-operator` does
/// too).
///
/// # Errors
/// When the binary is missing, naming the command that builds it.
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    let binary = profile_dir()?.join("workflowexecution-operator");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p workflowexecution-operator` (`make test` does)",
        binary.display()
    );
    Ok(binary)
}

/// The command that runs the operator `binary` as `run --config <config>` against the cluster of
/// `kubeconfig`, logging at `info` into `log` (stdout and stderr), stdin closed: how the
/// benchmarks ([`crate::bench::process::OperatorProcess`]) and the end-to-end tier
/// ([`crate::e2e::spawn_operator`]) start it; each adds its own environment before spawning.
///
/// # Errors
/// When `log` cannot be duplicated for the second stream.
pub fn operator_command(
    binary: &Path,
    config: &Path,
    kubeconfig: &Path,
    log: std::fs::File,
) -> std::io::Result<Command> {
    let mut command = Command::new(binary);
    command
        .args(["run", "--config"])
        .arg(config)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(command)
}

/// The profile directory of the running test binary (`target/debug` above `target/debug/deps`).
pub(crate) fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow::anyhow!("no target directory above {}", exe.display()))
}

/// An operator process a test started, writing stdout and stderr to a log file; it is killed
/// when dropped, however the test ends.
pub struct OperatorProcess {
    child: Child,
    log: PathBuf,
}

impl OperatorProcess {
    /// Starts `command` (stdin closed), its output going to `log`.
    ///
    /// # Errors
    /// When the log cannot be created or the process cannot be started.
    pub fn spawn(mut command: Command, log: &Path) -> anyhow::Result<OperatorProcess> {
        let file = std::fs::File::create(log)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()?;
        Ok(OperatorProcess {
            child,
            log: log.to_path_buf(),
        })
    }

    /// What the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How the process ended, if it has: an operator that exits while a test waits on it has
    /// failed the test.
    ///
    /// # Errors
    /// When the process's state cannot be read.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
