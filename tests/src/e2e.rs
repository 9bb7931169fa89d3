//! The end-to-end cluster: a container-free Kubernetes cluster running real Tekton Pipelines.
//!
//! [`E2eCluster::start`] starts, on loopback and in a temporary directory:
//! 1. the [`ControlPlane`] (etcd + kube-apiserver);
//! 2. **kube-controller-manager** (service-account tokens and `default` service accounts, garbage
//!    collection, namespace lifecycle, ResourceQuota status, Jobs, node lifecycle) and
//!    **kube-scheduler**;
//! 3. **kwok** playing kubelet for [`NODES`] fake nodes, with the stages of `tests/e2e/kwok.yaml`
//!    (pods succeed, fail, are OOMKilled or wait in `ImagePullBackOff` as the task's labels say);
//! 4. **Tekton Pipelines** (controller + resolvers, bundles resolver only) with the CRDs and
//!    ConfigMaps of the same module version's `config/`;
//! 5. an **OCI registry** (`tekton-tools registry`) holding every `tests/e2e/bundles/*.yaml` as a
//!    Tekton bundle `127.0.0.1:<port>/kubernaut/workflows/<file stem>:latest`.
//!
//! Every binary is built by `tests/e2e/install.sh` (`make e2e-deps`) into a cache outside the
//! clone.
//!
//! Guarantees:
//! 1. Nothing Tekton does is simulated: PipelineRuns are resolved, validated, turned into TaskRuns
//!    and pods, and their statuses written by Tekton's own controllers.
//! 2. Every process is killed and the temporary directory removed when the test binary exits (an
//!    `atexit` hook), on [`Drop`] of an owned cluster, and — should the test binary be killed — by
//!    the same guard process as the control plane's.
//! 3. [`E2eCluster::shared`] starts one cluster per test binary.
//!
//! Assumptions:
//! 1. The bundles' steps use `script:`, so Tekton never looks up an image's entrypoint in a
//!    registry (the step images do not exist).
//! 2. References to `127.0.0.1` are plain HTTP for go-containerregistry (`name.Registry.Scheme`),
//!    which the bundles resolver uses: the loopback registry needs no TLS and no configuration.
//!
//! Caveats:
//! 1. No container runs: a step's exit code and reason come from kwok's stages, not from a script.
//! 2. Tekton's admission webhook does not run. CRD conversion is set to `None` (only `v1` is used),
//!    objects are defaulted by the controller when reconciled rather than at admission, and an
//!    invalid object is refused by the controller (a failed run) rather than by the API server.
//! 3. The ResolutionRequest CRD marks `status.refSource` and `status.source` as required, and the
//!    resolvers write them as `null` when a resolution fails; the API server then refuses the status
//!    update and the failure is never recorded. The harness marks both `nullable`.
//! 4. Component processes log to files in [`E2eCluster::dir`]; [`E2eCluster::print_logs`] prints
//!    their tails.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Namespace, Node, ServiceAccount},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use tokio::sync::OnceCell;

use crate::controlplane::{
    ControlPlane, free_port, install_script_print, register_cleanup, spawn_guard,
    unregister_cleanup,
};

pub mod workflows;

/// The command that builds the end-to-end components; named in every "binaries missing" error.
pub const INSTALL_COMMAND: &str = "make e2e-deps   (or: tests/e2e/install.sh)";

/// How many fake nodes kwok manages.
pub const NODES: usize = 2;

/// The annotation that hands a node to kwok.
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// Tekton's own namespaces (from its `config/`).
const TEKTON_NAMESPACE: &str = "tekton-pipelines";
const TEKTON_RESOLVERS_NAMESPACE: &str = "tekton-pipelines-resolvers";

/// The label that chooses what kwok does with a task's pod (see `tests/e2e/kwok.yaml`).
pub const SCENARIO_LABEL: &str = "e2e.kubernaut.ai/scenario";

const FIELD_MANAGER: &str = "kubernaut-e2e-harness";

/// How long to wait for the cluster's components to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the end-to-end components live: `KUBERNAUT_E2E_DIR`, else what the install script prints.
pub fn components_dir() -> anyhow::Result<PathBuf> {
    match std::env::var("KUBERNAUT_E2E_DIR") {
        Ok(dir) => Ok(PathBuf::from(dir)),
        Err(_) => install_script_print("e2e/install.sh"),
    }
}

/// The installed components: binaries, Tekton's `config/`, and what versions they are.
#[derive(Debug, Clone)]
pub struct Components {
    dir: PathBuf,
}

impl Components {
    /// The components the install script built, or an error naming the command that builds them.
    pub fn installed() -> anyhow::Result<Components> {
        let dir = components_dir()?;
        if !dir.join(".complete").is_file() {
            bail!(
                "the end-to-end components are not installed ({} is missing).\n\
                 End-to-end tests need kube-controller-manager, kube-scheduler, kwok, Tekton \
                 Pipelines and tekton-tools; build them with:\n    {INSTALL_COMMAND}",
                dir.join(".complete").display()
            );
        }
        Ok(Components { dir })
    }

    /// Path of a component (`kwok`, `tekton-controller`, `tekton-tools`, ...).
    pub fn path(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(name);
        if path.exists() {
            Ok(path)
        } else {
            bail!(
                "{} is missing; rebuild the end-to-end components with:\n    {INSTALL_COMMAND}",
                path.display()
            )
        }
    }

    /// The `tekton-tools` binary (bundle registry, PipelineRun validation).
    pub fn tekton_tools(&self) -> anyhow::Result<PathBuf> {
        self.path("tekton-tools")
    }

    /// `component version` lines, as the install script recorded them.
    pub fn versions(&self) -> anyhow::Result<String> {
        fs::read_to_string(self.dir.join("versions")).context("reading the components' versions")
    }
}

/// The bundle registry: its address and the bundles pushed at start.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub address: String,
    /// File stem of `tests/e2e/bundles/*.yaml` → the bundle's reference by digest.
    pub bundles: BTreeMap<String, String>,
}

/// One process of the cluster and its log file.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

/// A running end-to-end cluster.
pub struct E2eCluster {
    control_plane: ControlPlane,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    components: Components,
    processes: Vec<Process>,
    guard: Option<Child>,
    registry: Registry,
    startup: Duration,
}

fn repo_tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundle files pushed to the registry (`tests/e2e/bundles`).
pub fn bundles_dir() -> PathBuf {
    repo_tests_dir().join("e2e/bundles")
}

impl E2eCluster {
    /// Start a new cluster (prefer [`E2eCluster::shared`] in tests).
    pub async fn start() -> anyhow::Result<E2eCluster> {
        let started = Instant::now();
        let components = Components::installed()?;
        let control_plane = ControlPlane::start().await?;
        let dir = tempfile::Builder::new()
            .prefix("kubernaut-e2e-")
            .tempdir()?;
        let dir_path = dir.path().to_path_buf();
        let mut cluster = E2eCluster {
            control_plane,
            dir: Some(dir),
            dir_path,
            components,
            processes: Vec::new(),
            guard: None,
            registry: Registry {
                address: String::new(),
                bundles: BTreeMap::new(),
            },
            startup: Duration::ZERO,
        };
        if let Err(e) = cluster.bring_up().await {
            cluster.print_logs();
            return Err(e);
        }
        cluster.startup = started.elapsed();
        Ok(cluster)
    }

    async fn bring_up(&mut self) -> anyhow::Result<()> {
        self.start_kube_components()?;
        self.start_kwok().await?;
        self.install_tekton().await?;
        self.start_registry().await?;
        self.start_tekton()?;
        self.protect_processes()?;
        self.wait_nodes_ready().await?;
        self.wait_tekton_ready().await
    }

    /// The cluster shared by every test of this test binary (started on first use).
    pub async fn shared() -> anyhow::Result<&'static E2eCluster> {
        static SHARED: OnceCell<E2eCluster> = OnceCell::const_new();
        static FAILED: Mutex<Option<String>> = Mutex::new(None);
        if let Ok(guard) = FAILED.lock()
            && let Some(message) = guard.as_ref()
        {
            bail!("{message}");
        }
        let result = SHARED
            .get_or_try_init(|| async {
                let cluster = E2eCluster::start().await?;
                eprintln!(
                    "end-to-end cluster ready at {} in {:.1?} (logs: {}, {})\n{}",
                    cluster.control_plane.server_url(),
                    cluster.startup,
                    cluster.control_plane.dir().display(),
                    cluster.dir_path.display(),
                    cluster.components.versions().unwrap_or_default().trim_end()
                );
                Ok::<_, anyhow::Error>(cluster)
            })
            .await;
        match result {
            Ok(cluster) => Ok(cluster),
            Err(e) => {
                let message = format!("{e:#}");
                if let Ok(mut guard) = FAILED.lock() {
                    *guard = Some(message.clone());
                }
                Err(anyhow!(message))
            }
        }
    }

    // ------------------------------------------------------------------------- processes

    fn spawn(
        &mut self,
        name: &'static str,
        binary: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<()> {
        let log = self.dir_path.join(format!("{name}.log"));
        let file = fs::File::create(&log)?;
        let child = Command::new(binary)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&self.dir_path)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name} ({})", binary.display()))?;
        // Registered at once, so a failure later in the bring-up still ends this process.
        register_cleanup(vec![child.id()], PathBuf::new());
        self.processes.push(Process { name, child, log });
        Ok(())
    }

    /// One guard and one exit-hook entry for every process and the directory.
    fn protect_processes(&mut self) -> anyhow::Result<()> {
        let pids: Vec<u32> = self.processes.iter().map(|p| p.child.id()).collect();
        unregister_cleanup(Path::new(""));
        register_cleanup(pids.clone(), self.dir_path.clone());
        self.guard = Some(spawn_guard(&pids, &self.dir_path)?);
        Ok(())
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for process in &mut self.processes {
            if let Ok(Some(status)) = process.child.try_wait() {
                bail!(
                    "{} exited with {status} (log: {})",
                    process.name,
                    process.log.display()
                );
            }
        }
        Ok(())
    }

    fn kubeconfig(&self) -> String {
        self.control_plane.kubeconfig_path().display().to_string()
    }

    fn start_kube_components(&mut self) -> anyhow::Result<()> {
        let kubeconfig = self.kubeconfig();
        let cp_dir = self.control_plane.dir().to_path_buf();
        let kcm = self.components.path("kube-controller-manager")?;
        let scheduler = self.components.path("kube-scheduler")?;
        let common = |port: u16, certs: &str| {
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--bind-address=127.0.0.1".to_string(),
                format!("--secure-port={port}"),
                format!("--cert-dir={certs}"),
                "--leader-elect=false".to_string(),
                "--v=1".to_string(),
            ]
        };
        let mut kcm_args = common(
            free_port()?,
            &self.dir_path.join("kcm-certs").display().to_string(),
        );
        kcm_args.extend([
            // What the tests rely on: tokens and default service accounts, cascading deletion of
            // a PipelineRun's TaskRuns and pods, namespaces going away, quota usage, Jobs; and
            // node lifecycle, which lifts the not-ready taint the API server's admission puts on
            // every new node (TaintNodesByCondition) once kwok reports it Ready.
            "--controllers=serviceaccount-token,serviceaccount,garbagecollector,namespace,\
             resourcequota,job,nodelifecycle"
                .to_string(),
            format!(
                "--service-account-private-key-file={}",
                cp_dir.join("sa.key").display()
            ),
            format!("--root-ca-file={}", cp_dir.join("ca.crt").display()),
            "--use-service-account-credentials=false".to_string(),
            "--cluster-name=kubernaut-e2e".to_string(),
        ]);
        self.spawn("kube-controller-manager", &kcm, &kcm_args, &[])?;
        let scheduler_args = common(
            free_port()?,
            &self.dir_path.join("scheduler-certs").display().to_string(),
        );
        self.spawn("kube-scheduler", &scheduler, &scheduler_args, &[])
    }

    async fn start_kwok(&mut self) -> anyhow::Result<()> {
        let client = self.control_plane.client().await?;
        let nodes: Api<Node> = Api::all(client);
        for i in 0..NODES {
            let name = format!("kwok-node-{i}");
            let node: Node = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": { KWOK_NODE_ANNOTATION: "fake" },
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                },
            }))?;
            nodes
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&node),
                )
                .await
                .with_context(|| format!("creating node {name}"))?;
        }
        let kwok = self.components.path("kwok")?;
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig()),
            format!(
                "--config={}",
                repo_tests_dir().join("e2e/kwok.yaml").display()
            ),
            "--manage-all-nodes=false".to_string(),
            format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
            format!("--server-address=127.0.0.1:{}", free_port()?),
        ];
        self.spawn("kwok", &kwok, &args, &[])
    }

    async fn wait_nodes_ready(&mut self) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.control_plane.client().await?);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_running()?;
            let ready = nodes
                .list(&Default::default())
                .await?
                .items
                .iter()
                .filter(|n| {
                    let ready = n
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    let schedulable = n
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.as_ref())
                        .is_none_or(|t| t.iter().all(|t| t.effect != "NoSchedule"));
                    ready && schedulable
                })
                .count();
            if ready >= NODES {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{ready} of {NODES} kwok nodes Ready and untainted after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // --------------------------------------------------------------------------- Tekton

    async fn install_tekton(&mut self) -> anyhow::Result<()> {
        let config = self.components.path("tekton-config")?;
        let objects = TektonConfig::read(&config)?;
        let client = self.control_plane.client().await?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in &objects.namespaces {
            let name = ns.metadata.name.clone().unwrap_or_default();
            namespaces
                .patch(&name, &params, &Patch::Apply(ns))
                .await
                .with_context(|| format!("creating namespace {name}"))?;
        }
        self.control_plane.install_crds(&objects.crds).await?;
        for cm in &objects.config_maps {
            let name = cm.metadata.name.clone().unwrap_or_default();
            let ns = cm.metadata.namespace.clone().unwrap_or_default();
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            api.patch(&name, &params, &Patch::Apply(cm))
                .await
                .with_context(|| format!("applying ConfigMap {ns}/{name}"))?;
        }
        Ok(())
    }

    fn start_tekton(&mut self) -> anyhow::Result<()> {
        let kubeconfig = self.kubeconfig();
        let controller = self.components.path("tekton-controller")?;
        let resolvers = self.components.path("tekton-resolvers")?;
        // The images Tekton puts in its pods; kwok never pulls them, so they need not exist.
        let image = |name: &str| format!("registry.invalid/tekton/{name}:e2e");
        let mut args = vec![format!("--kubeconfig={kubeconfig}")];
        for (flag, name) in [
            ("-entrypoint-image", "entrypoint"),
            ("-nop-image", "nop"),
            ("-sidecarlogresults-image", "sidecarlogresults"),
            ("-workingdirinit-image", "workingdirinit"),
            ("-shell-image", "busybox"),
            ("-shell-image-win", "powershell"),
        ] {
            args.push(flag.to_string());
            args.push(image(name));
        }
        // The environment of Tekton's own Deployments (config/controller.yaml,
        // config/resolvers/resolvers-deployment.yaml), with every listening port on a free one.
        let common = |system_ns: &str,
                      leader_election: &str,
                      metrics_domain: &str|
         -> anyhow::Result<Vec<(&'static str, String)>> {
            Ok(vec![
                ("SYSTEM_NAMESPACE", system_ns.to_string()),
                ("KUBERNETES_MIN_VERSION", "v1.28.0".to_string()),
                ("CONFIG_LOGGING_NAME", "config-logging".to_string()),
                (
                    "CONFIG_OBSERVABILITY_NAME",
                    "config-observability".to_string(),
                ),
                ("CONFIG_FEATURE_FLAGS_NAME", "feature-flags".to_string()),
                ("CONFIG_LEADERELECTION_NAME", leader_election.to_string()),
                ("METRICS_DOMAIN", metrics_domain.to_string()),
                ("PROBES_PORT", free_port()?.to_string()),
                ("METRICS_PROMETHEUS_HOST", "127.0.0.1".to_string()),
                ("METRICS_PROMETHEUS_PORT", free_port()?.to_string()),
                ("PROFILING_PORT", free_port()?.to_string()),
                ("KUBECONFIG", kubeconfig.clone()),
            ])
        };
        let mut controller_env = common(
            TEKTON_NAMESPACE,
            "config-leader-election-controller",
            "tekton.dev/pipeline",
        )?;
        controller_env.extend([
            ("CONFIG_DEFAULTS_NAME", "config-defaults".to_string()),
            ("CONFIG_SPIRE", "config-spire".to_string()),
        ]);
        self.spawn("tekton-controller", &controller, &args, &controller_env)?;
        let resolvers_env = common(
            TEKTON_RESOLVERS_NAMESPACE,
            "config-leader-election-resolvers",
            "tekton.dev/resolution",
        )?;
        self.spawn(
            "tekton-resolvers",
            &resolvers,
            &[format!("--kubeconfig={kubeconfig}")],
            &resolvers_env,
        )
    }

    /// Tekton is ready when both processes hold leader leases (knative's controllers only
    /// reconcile as leaders; each reconciler has its own lease, taken at about the same time).
    async fn wait_tekton_ready(&mut self) -> anyhow::Result<()> {
        use k8s_openapi::api::coordination::v1::Lease;
        let client = self.control_plane.client().await?;
        let deadline = Instant::now() + READY_TIMEOUT;
        for (ns, prefix) in [
            (TEKTON_NAMESPACE, "tekton-pipelines-controller."),
            (TEKTON_RESOLVERS_NAMESPACE, ""),
        ] {
            let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
            loop {
                self.check_running()?;
                let held = leases
                    .list(&Default::default())
                    .await?
                    .items
                    .iter()
                    .any(|l| {
                        l.metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with(prefix))
                            && l.spec
                                .as_ref()
                                .and_then(|s| s.holder_identity.as_ref())
                                .is_some()
                    });
                if held {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("no leader lease {ns}/{prefix}* after {READY_TIMEOUT:?}");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------------- registry

    async fn start_registry(&mut self) -> anyhow::Result<()> {
        let tools = self.components.tekton_tools()?;
        let ready_file = self.dir_path.join("registry.json");
        let args = vec![
            "registry".to_string(),
            "--bundles".to_string(),
            bundles_dir().display().to_string(),
            "--ready-file".to_string(),
            ready_file.display().to_string(),
        ];
        self.spawn("registry", &tools, &args, &[])?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !ready_file.is_file() {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("the bundle registry was not ready after {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = fs::read_to_string(&ready_file)?;
        self.registry = serde_json::from_str(&text)
            .with_context(|| format!("reading the registry's ready line {text:?}"))?;
        Ok(())
    }

    // --------------------------------------------------------------------------- access

    /// The control plane underneath.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.control_plane
    }

    /// A new admin client.
    pub async fn client(&self) -> anyhow::Result<Client> {
        self.control_plane.client().await
    }

    /// The bundle registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tag reference of the bundle built from `tests/e2e/bundles/<stem>.yaml`.
    pub fn bundle(&self, stem: &str) -> anyhow::Result<String> {
        if !self.registry.bundles.contains_key(stem) {
            bail!(
                "no bundle {stem:?} in the registry (bundles: {:?})",
                self.registry.bundles.keys().collect::<Vec<_>>()
            );
        }
        Ok(format!(
            "{}/kubernaut/workflows/{stem}:latest",
            self.registry.address
        ))
    }

    /// The installed components (binaries and versions).
    pub fn components(&self) -> &Components {
        &self.components
    }

    /// The directory holding the component logs and configuration.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Create a namespace for PipelineRuns: its `default` service account (the bundles resolver
    /// pulls as it) and `runner`, the service account the tasks run as. Returns the namespace.
    pub async fn create_run_namespace(&self, prefix: &str, runner: &str) -> anyhow::Result<String> {
        let ns = self.control_plane.create_namespace(prefix).await?;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client().await?, &ns);
        for name in ["default", runner] {
            let sa = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    ..Default::default()
                },
                ..Default::default()
            };
            match sas.create(&PostParams::default(), &sa).await {
                Ok(_) => {}
                // The serviceaccount controller may have created `default` first.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("creating {ns}/{name}")),
            }
        }
        Ok(ns)
    }

    /// The last `lines` lines of every component's log (the control plane's included).
    pub fn log_tails(&self, lines: usize) -> BTreeMap<String, Vec<String>> {
        let mut tails = self.control_plane.log_tails(lines);
        for process in &self.processes {
            let tail = crate::controlplane::log_tail(&process.log, lines);
            tails.insert(format!("{}.log", process.name), tail);
        }
        tails
    }

    /// Print the tails of every log to stderr.
    pub fn print_logs(&self) {
        crate::controlplane::print_tails(self.log_tails(30));
    }

    /// A guard that prints the logs if the test panics while it is alive.
    pub fn logs_on_failure(&'static self) -> E2eLogsOnFailure {
        E2eLogsOnFailure(self)
    }

    /// Stop every process (the control plane last) and remove the directories.
    pub fn stop(&mut self) {
        for process in self.processes.iter_mut().rev() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        self.processes.clear();
        if let Some(guard) = &mut self.guard {
            let _ = guard.kill();
            let _ = guard.wait();
        }
        self.guard = None;
        unregister_cleanup(&self.dir_path);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
        self.control_plane.stop();
    }
}

impl Drop for E2eCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints the cluster's logs when dropped during a panic (a failing test).
pub struct E2eLogsOnFailure(&'static E2eCluster);

impl Drop for E2eLogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.print_logs();
        }
    }
}

/// What the harness installs from Tekton's `config/`: namespaces, CRDs and ConfigMaps (no
/// Deployments, Services, webhooks or RBAC: the processes run here, as the admin user).
pub struct TektonConfig {
    /// `tekton-pipelines`, `tekton-pipelines-resolvers`.
    pub namespaces: Vec<Namespace>,
    /// The CRDs, patched for a cluster without Tekton's webhook (see the module caveats).
    pub crds: Vec<CustomResourceDefinition>,
    /// The controllers' and resolvers' ConfigMaps; only the bundles resolver is enabled.
    pub config_maps: Vec<ConfigMap>,
}

impl TektonConfig {
    /// Read `dir` (a copy of Tekton's `config/`).
    pub fn read(dir: &Path) -> anyhow::Result<TektonConfig> {
        let mut config = TektonConfig {
            namespaces: Vec::new(),
            crds: Vec::new(),
            config_maps: Vec::new(),
        };
        for sub in ["100-namespace", ".", "resolvers", "300-crds"] {
            let mut files: Vec<PathBuf> = fs::read_dir(dir.join(sub))
                .with_context(|| format!("reading {}", dir.join(sub).display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect();
            files.sort();
            for file in files {
                config.add_file(&file)?;
            }
        }
        if config.crds.is_empty() || config.namespaces.len() < 2 {
            bail!("{} does not look like Tekton's config/", dir.display());
        }
        Ok(config)
    }

    fn add_file(&mut self, file: &Path) -> anyhow::Result<()> {
        use serde::Deserialize as _;
        let text = fs::read_to_string(file)?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            let kind = value
                .get("kind")
                .and_then(|k| k.as_str())
                .unwrap_or("")
                .to_string();
            let context = || format!("reading a {kind} from {}", file.display());
            match kind.as_str() {
                "Namespace" => self
                    .namespaces
                    .push(serde_json::from_value(value).with_context(context)?),
                "ConfigMap" => {
                    let mut cm: ConfigMap = serde_json::from_value(value).with_context(context)?;
                    enable_only_bundles_resolver(&mut cm);
                    self.config_maps.push(cm);
                }
                "CustomResourceDefinition" => {
                    let mut crd: CustomResourceDefinition =
                        serde_json::from_value(value).with_context(context)?;
                    crate::tekton::without_webhook(&mut crd);
                    self.crds.push(crd);
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The resolvers' feature flags: bundles on; hub, git, http and cluster off (they would reach out
/// of the machine or are not used).
fn enable_only_bundles_resolver(cm: &mut ConfigMap) {
    if cm.metadata.name.as_deref() != Some("resolvers-feature-flags") {
        return;
    }
    let data = cm.data.get_or_insert_with(Default::default);
    for (flag, on) in [
        ("enable-bundles-resolver", true),
        ("enable-hub-resolver", false),
        ("enable-git-resolver", false),
        ("enable-http-resolver", false),
        ("enable-cluster-resolver", false),
    ] {
        data.insert(flag.to_string(), on.to_string());
    }
}

/// Ends `child` with the test binary: at exit (an exit hook) or, should the binary be killed, by a
/// guard process. For processes a test starts on the shared cluster (the operator), which no
/// [`Drop`] ends because the shared cluster lives in a `static`.
///
/// # Errors
///
/// When the guard process cannot be started.
pub fn end_with_test_binary(child: &Child) -> anyhow::Result<()> {
    register_cleanup(vec![child.id()], PathBuf::new());
    // The guard's directory argument is empty: it removes nothing (`rm -rf ''`).
    spawn_guard(&[child.id()], Path::new(""))?;
    Ok(())
}

/// The operator binary the end-to-end tests run: `KUBERNAUT_OPERATOR_BINARY` when set, else the
/// debug build in `$CARGO_TARGET_DIR` (`./target` without it) — the build the workspace's tests
/// already made; behaviour, not speed, is what these tests judge.
///
/// # Errors
///
/// When the binary is missing, naming the command that builds it.
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    let binary = match std::env::var_os("KUBERNAUT_OPERATOR_BINARY") {
        Some(path) => PathBuf::from(path),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_tests_dir().join("../target"))
            .join("debug/workflowexecution-operator"),
    };
    if !binary.is_file() {
        bail!(
            "{} is missing; build it with:\n    cargo build -p workflowexecution-operator   (make e2e does)",
            binary.display()
        );
    }
    Ok(binary)
}

/// Starts [`operator_binary`] as `run --config <cluster dir>/<name>.yaml` (`config_yaml` written
/// there) against `cluster`, logging to `<cluster dir>/<name>.log`; the process ends with the test
/// binary ([`end_with_test_binary`]).
///
/// # Errors
///
/// When the binary is missing or cannot be started, or a file cannot be written.
pub fn spawn_operator(
    cluster: &E2eCluster,
    name: &str,
    config_yaml: &str,
) -> anyhow::Result<Child> {
    let binary = operator_binary()?;
    let config_file = cluster.dir().join(format!("{name}.yaml"));
    fs::write(&config_file, config_yaml)?;
    let log = fs::File::create(cluster.dir().join(format!("{name}.log")))?;
    let kubeconfig = cluster.control_plane().kubeconfig_path();
    let child = crate::checkout::operator_command(&binary, &config_file, kubeconfig, log)?
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    end_with_test_binary(&child)?;
    Ok(child)
}

/// Polls `check` every 250 ms until it returns a value, for at most `within`; the error names
/// `what` and the last error `check` returned. The end-to-end tests' one way of waiting.
///
/// # Errors
/// `what` did not happen within `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::from("not checked yet");
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {within:?} (last error: {last})");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
