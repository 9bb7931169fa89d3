//! A real, local Kubernetes control plane for tests: `etcd` + `kube-apiserver` on loopback.
//!
//! The binaries are built from their published Go modules by `tests/controlplane/install.sh` into a
//! cache outside the clone. [`ControlPlane::start`] starts both on free loopback ports with
//! generated certificates, static-token authentication and RBAC authorization, and returns once
//! `/readyz` answers `ok`.
//!
//! Guarantees:
//! 1. The API server is the real one: admission, validation (CEL included), RBAC and watches behave
//!    as in a cluster. Nothing is faked.
//! 2. Clients trust the generated CA; none skips certificate verification.
//! 3. [`ControlPlane::shared`] starts one control plane per test binary; every test gets its own
//!    namespace from [`ControlPlane::create_namespace`].
//! 4. Both processes are killed and the temporary directory removed when the test binary exits
//!    (an `atexit` hook), on [`Drop`] of an owned control plane, and — should the test binary be
//!    killed — by a small guard process that watches the test binary's pid.
//!
//! Caveats:
//! 1. There are no nodes, no scheduler and no controller-manager: Pods never run, namespaces are
//!    not finalized after deletion, and garbage collection does not happen. Tests create their own
//!    namespace and never rely on cascading deletion.
//! 2. Ports are picked by binding port 0 and releasing it; another process could take the port in
//!    between. Start-up is retried once with new ports when that happens.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        core::v1::{Namespace, ServiceAccount},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::sync::OnceCell;

/// The command that builds the control plane binaries; named in every "binaries missing" error.
pub const INSTALL_COMMAND: &str = "make controlplane   (or: tests/controlplane/install.sh)";

/// Field manager used by the harness for server-side apply.
const FIELD_MANAGER: &str = "kubernaut-test-harness";

/// The token of the harness's admin user (member of `system:masters`).
const ADMIN_TOKEN: &str = "kubernaut-test-admin-token";

/// How long to wait for the API server to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A running local control plane.
pub struct ControlPlane {
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    server_url: String,
    kubeconfig_path: PathBuf,
    kubeconfig: Kubeconfig,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    guard: Option<Child>,
    version: String,
    startup: Duration,
}

/// What `script --print` prints (an install script's output path), run from `tests/`.
pub fn install_script_print(relative_script: &str) -> anyhow::Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative_script);
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print")
        .output()
        .with_context(|| format!("running {} --print", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} --print failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Where the binaries live: `KUBERNAUT_CONTROLPLANE_DIR`, else what the install script prints.
pub fn binaries_dir() -> anyhow::Result<PathBuf> {
    match std::env::var("KUBERNAUT_CONTROLPLANE_DIR") {
        Ok(dir) => Ok(PathBuf::from(dir)),
        Err(_) => install_script_print("controlplane/install.sh"),
    }
}

fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    if path.is_file() && dir.join(".complete").is_file() {
        Ok(path)
    } else {
        bail!(
            "the local control plane is not installed: {} is missing.\n\
             Integration tests need a real kube-apiserver and etcd; build them with:\n    {}",
            path.display(),
            INSTALL_COMMAND
        )
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Certificates and keys of one control plane, written into its directory.
struct Pki {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
}

fn write_pki(dir: &Path) -> anyhow::Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "kubernaut-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default.svc".to_string(),
    ])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse()?));
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving = params.signed_by(&serving_key, &issuer)?;

    let sa_key = KeyPair::generate()?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    fs::write(&pki.ca_cert, ca.pem())?;
    fs::write(&pki.serving_cert, serving.pem())?;
    fs::write(&pki.serving_key, serving_key.serialize_pem())?;
    fs::write(&pki.sa_key, sa_key.serialize_pem())?;
    fs::write(&pki.sa_pub, sa_key.public_key_pem())?;
    Ok(pki)
}

fn kubeconfig_yaml(server: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
         users:\n- name: {user}\n  user:\n    token: {token}\n\
         contexts:\n- name: local\n  context:\n    cluster: local\n    user: {user}\n    namespace: default\n\
         current-context: local\n",
        ca = ca.display()
    )
}

/// Children and directories to clean up when the test binary exits.
static CLEANUP: Mutex<Vec<(Vec<u32>, PathBuf)>> = Mutex::new(Vec::new());
static ATEXIT_REGISTERED: AtomicU32 = AtomicU32::new(0);

extern "C" fn cleanup_at_exit() {
    let entries = match CLEANUP.lock() {
        Ok(mut guard) => std::mem::take(&mut *guard),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    };
    for (pids, dir) in entries {
        for pid in pids {
            // SAFETY: plain syscall on a pid we started; harmless if it already exited.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = fs::remove_dir_all(dir);
    }
}

pub(crate) fn register_cleanup(pids: Vec<u32>, dir: PathBuf) {
    if ATEXIT_REGISTERED.swap(1, Ordering::SeqCst) == 0 {
        // SAFETY: registering a plain extern "C" fn without captured state.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
    }
    if let Ok(mut guard) = CLEANUP.lock() {
        guard.push((pids, dir));
    }
}

pub(crate) fn unregister_cleanup(dir: &Path) {
    if let Ok(mut guard) = CLEANUP.lock() {
        guard.retain(|(_, d)| d != dir);
    }
}

/// Spawn a guard that kills `pids` and removes `dir` once this process is gone (covers SIGKILL of
/// the test binary, where no exit hook runs).
pub(crate) fn spawn_guard(pids: &[u32], dir: &Path) -> anyhow::Result<Child> {
    let me = std::process::id();
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -9 {} 2>/dev/null; rm -rf '{}'",
        pids.join(" "),
        dir.display()
    );
    Ok(Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

impl ControlPlane {
    /// Start a new control plane (prefer [`ControlPlane::shared`] in tests).
    pub async fn start() -> anyhow::Result<ControlPlane> {
        match Self::start_once().await {
            Ok(cp) => Ok(cp),
            // A port taken between probing and binding shows up as a failed start; retry once.
            Err(first) if !first.to_string().contains("not installed") => {
                eprintln!("control plane start failed, retrying with new ports: {first:#}");
                Self::start_once().await
            }
            Err(e) => Err(e),
        }
    }

    async fn start_once() -> anyhow::Result<ControlPlane> {
        let started = Instant::now();
        let bins = binaries_dir()?;
        let etcd_bin = binary(&bins, "etcd")?;
        let apiserver_bin = binary(&bins, "kube-apiserver")?;

        let dir = tempfile::Builder::new()
            .prefix("kubernaut-controlplane-")
            .tempdir()?;
        let path = dir.path().to_path_buf();
        let pki = write_pki(&path)?;
        fs::write(
            path.join("tokens.csv"),
            format!("{ADMIN_TOKEN},kubernaut-admin,kubernaut-admin-uid,\"system:masters\"\n"),
        )?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let apiserver_port = free_port()?;

        let etcd_log = fs::File::create(path.join("etcd.log"))?;
        let etcd = Command::new(&etcd_bin)
            .args([
                "--name=default".to_string(),
                format!("--data-dir={}", path.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{etcd_client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=default=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync=true".to_string(),
                "--log-level=warn".to_string(),
                "--quota-backend-bytes=4294967296".to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(etcd_log.try_clone()?)
            .stderr(etcd_log)
            .spawn()
            .with_context(|| format!("starting {}", etcd_bin.display()))?;

        let apiserver_log = fs::File::create(path.join("kube-apiserver.log"))?;
        let apiserver = Command::new(&apiserver_bin)
            .args([
                format!("--etcd-servers=http://127.0.0.1:{etcd_client}"),
                "--bind-address=127.0.0.1".to_string(),
                "--advertise-address=127.0.0.1".to_string(),
                format!("--secure-port={apiserver_port}"),
                format!("--tls-cert-file={}", pki.serving_cert.display()),
                format!("--tls-private-key-file={}", pki.serving_key.display()),
                format!("--token-auth-file={}", path.join("tokens.csv").display()),
                "--authorization-mode=RBAC".to_string(),
                format!("--service-account-key-file={}", pki.sa_pub.display()),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_key.display()
                ),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
                "--service-cluster-ip-range=10.96.0.0/16".to_string(),
                "--endpoint-reconciler-type=none".to_string(),
                "--disable-admission-plugins=ServiceAccount".to_string(),
                format!("--cert-dir={}", path.join("certs").display()),
                "--v=1".to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(apiserver_log.try_clone()?)
            .stderr(apiserver_log)
            .spawn()
            .with_context(|| format!("starting {}", apiserver_bin.display()))?;

        let pids = vec![etcd.id(), apiserver.id()];
        register_cleanup(pids.clone(), path.clone());
        let guard = spawn_guard(&pids, &path).ok();

        let server_url = format!("https://127.0.0.1:{apiserver_port}");
        let kubeconfig_text = kubeconfig_yaml(&server_url, &pki.ca_cert, "admin", ADMIN_TOKEN);
        let kubeconfig_path = path.join("kubeconfig");
        fs::write(&kubeconfig_path, &kubeconfig_text)?;
        let kubeconfig = Kubeconfig::from_yaml(&kubeconfig_text)?;

        let mut cp = ControlPlane {
            dir: Some(dir),
            dir_path: path,
            server_url,
            kubeconfig_path,
            kubeconfig,
            etcd: Some(etcd),
            apiserver: Some(apiserver),
            guard,
            version: String::new(),
            startup: Duration::ZERO,
        };
        if let Err(e) = cp.wait_ready().await {
            cp.print_logs();
            return Err(e);
        }
        cp.startup = started.elapsed();
        Ok(cp)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let client = self.client().await?;
        let mut last_error = String::from("no answer yet");
        while Instant::now() < deadline {
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Some(child) = child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    bail!("{name} exited during start-up with {status}");
                }
            }
            let request = http::Request::get("/readyz").body(Vec::new())?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => {
                    let version = client.apiserver_version().await?;
                    self.version = version.git_version;
                    return Ok(());
                }
                Ok(body) => last_error = body,
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bail!("kube-apiserver not ready after {READY_TIMEOUT:?}: {last_error}")
    }

    /// The control plane shared by every test of this test binary (started on first use).
    pub async fn shared() -> anyhow::Result<&'static ControlPlane> {
        static SHARED: OnceCell<ControlPlane> = OnceCell::const_new();
        static FAILED: Mutex<Option<String>> = Mutex::new(None);
        if let Ok(guard) = FAILED.lock()
            && let Some(message) = guard.as_ref()
        {
            bail!("{message}");
        }
        let result = SHARED
            .get_or_try_init(|| async {
                let cp = ControlPlane::start().await?;
                eprintln!(
                    "local control plane {} ready at {} in {:.1?} (logs: {})",
                    cp.version,
                    cp.server_url,
                    cp.startup,
                    cp.dir_path.display()
                );
                Ok::<_, anyhow::Error>(cp)
            })
            .await;
        match result {
            Ok(cp) => Ok(cp),
            Err(e) => {
                let message = format!("{e:#}");
                if let Ok(mut guard) = FAILED.lock() {
                    *guard = Some(message.clone());
                }
                Err(anyhow!(message))
            }
        }
    }

    /// A new admin client (member of `system:masters`).
    ///
    /// A fresh client per call: a `kube::Client` spawns its connection worker on the runtime that
    /// created it, and every `#[tokio::test]` has a runtime of its own.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let config =
            Config::from_custom_kubeconfig(self.kubeconfig.clone(), &KubeConfigOptions::default())
                .await?;
        Ok(Client::try_from(config)?)
    }

    /// A client for a user authenticated by `token`, trusting this control plane's CA.
    pub async fn client_with_token(&self, token: &str) -> anyhow::Result<Client> {
        let yaml = kubeconfig_yaml(&self.server_url, &self.ca_path(), "token-user", token);
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&yaml)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        Ok(Client::try_from(config)?)
    }

    /// Create the ServiceAccount `namespace/name` if needed and return a client authenticated as it
    /// with a token minted by the TokenRequest API (valid for one hour).
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Client> {
        let token = self.service_account_token(namespace, name).await?;
        self.client_with_token(&token).await
    }

    /// Create the ServiceAccount `namespace/name` if needed and mint a token for it.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let client = self.client().await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e).context("creating the ServiceAccount"),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec![],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let minted = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .context("minting a ServiceAccount token")?;
        minted
            .status
            .map(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest for {namespace}/{name} returned no token"))
    }

    /// Create a namespace named `prefix-<random>` and return its name.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        let suffix: u32 = rand::random();
        let name = format!("{}-{:08x}", prefix.to_lowercase(), suffix);
        let api: Api<Namespace> = Api::all(self.client().await?);
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(name)
    }

    /// Server-side apply `crds` and wait until each is `Established`.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await?);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        for crd in crds {
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("a CRD without metadata.name"))?;
            api.patch(&name, &params, &Patch::Apply(crd))
                .await
                .with_context(|| format!("applying CRD {name}"))?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            loop {
                let current = api.get(&name).await?;
                let established = current
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("CRD {name} not Established after 30s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The API server's URL.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The `/version` the API server reports (e.g. `v1.34.4`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How long start-up took, from spawning etcd to `/readyz` = ok.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// Path of an admin kubeconfig for this control plane (for `kubectl` or an operator process).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Path of the CA certificate that signed the serving certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir_path.join("ca.crt")
    }

    /// Write a kubeconfig for the user authenticated by `token` and return its path.
    pub fn write_kubeconfig(&self, file_name: &str, token: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir_path.join(file_name);
        fs::write(
            &path,
            kubeconfig_yaml(&self.server_url, &self.ca_path(), "token-user", token),
        )?;
        Ok(path)
    }

    /// The directory holding certificates, data and the process logs.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The last `lines` lines of each process log.
    pub fn log_tails(&self, lines: usize) -> BTreeMap<String, Vec<String>> {
        ["etcd.log", "kube-apiserver.log"]
            .iter()
            .map(|name| (name.to_string(), log_tail(&self.dir_path.join(name), lines)))
            .collect()
    }

    /// Print the tails of the process logs to stderr.
    pub fn print_logs(&self) {
        print_tails(self.log_tails(40));
    }

    /// A guard that prints the process logs if the test panics while it is alive.
    pub fn logs_on_failure(&'static self) -> LogsOnFailure {
        LogsOnFailure(self)
    }

    /// Stop both processes and remove the directory.
    pub fn stop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd, &mut self.guard]
            .into_iter()
            .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.apiserver = None;
        self.etcd = None;
        self.guard = None;
        unregister_cleanup(&self.dir_path);
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Prints the control plane's logs when dropped during a panic (a failing test).
pub struct LogsOnFailure(&'static ControlPlane);

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.print_logs();
        }
    }
}

/// Prints log tails (file name → its last lines) to stderr, each under a header line.
pub fn print_tails(tails: BTreeMap<String, Vec<String>>) {
    for (name, lines) in tails {
        eprintln!("----- {name} (last {} lines) -----", lines.len());
        for line in lines {
            eprintln!("{line}");
        }
    }
}

/// The last `lines` lines of the log file at `path`; none when it cannot be read.
pub fn log_tail(path: &Path, lines: usize) -> Vec<String> {
    fs::File::open(path)
        .map(|f| {
            let all: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
            all[all.len().saturating_sub(lines)..].to_vec()
        })
        .unwrap_or_default()
}
