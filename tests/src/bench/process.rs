//! The processes a benchmark measures: the operator it runs ([`OperatorProcess`]), the control
//! plane's and cluster's processes ([`pids_of`]), and their CPU seconds and memory from `/proc`.
//!
//! Guarantees:
//! 1. An [`OperatorProcess`] is killed when dropped; [`OperatorProcess::stop`] ends it gracefully
//!    (SIGTERM, then SIGKILL after 20 s).
//! 2. Its metrics and health endpoints listen on free loopback ports; leader election is off.
//!
//! Caveats:
//! 1. CPU seconds are cumulative per process: a figure for a phase is the difference of two
//!    samples, and a process that exited in between counts 0.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::histogram::Histograms;
use crate::ControlPlane;

/// The operator's cooldown in the benchmarks: longer than a run, so no lock is released while
/// writes are counted (a release is one more delete per WFE, after the cooldown).
pub const COOLDOWN: &str = "1h";

/// How long the operator may take to become ready.
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The trimmed standard output of `program args`, or `unknown` when it fails.
pub fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// A free loopback address (bound, then released).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A plain HTTP/1.0 GET to a loopback endpoint: (status code, body).
///
/// # Errors
///
/// When the endpoint does not answer within 10 s or answers no status line.
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("no status line from {addr}{path}"))?;
        Ok::<_, anyhow::Error>((code, body.to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow!("GET {addr}{path} timed out"))?
}

/// The machine a benchmark ran on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Cores available to this process.
    pub nproc: usize,
    /// `MemTotal`.
    pub memory_mib: u64,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// The kernel's release.
    pub kernel: String,
}

/// This machine.
pub fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, usize::from),
        memory_mib: memory_kib / 1024,
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// CPU seconds (user + system) and memory of a process, from `/proc/<pid>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_seconds: f64,
    /// Resident memory now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident memory (`VmHWM`).
    pub hwm_kib: u64,
    /// Resident anonymous memory now (`RssAnon`: the heap, stacks).
    pub rss_anon_kib: u64,
    /// Resident file-backed memory now (`RssFile`: mostly the executable's pages).
    pub rss_file_kib: u64,
}

/// A [`ProcSample`] of `pid`.
///
/// # Errors
///
/// When `/proc/<pid>` cannot be read (the process has gone).
pub fn proc_sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after its closing parenthesis do not.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the state field.
    let ticks = |i: usize| -> f64 { fields.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0) };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_seconds: (ticks(11) + ticks(12)) / hz,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        rss_anon_kib: kib("RssAnon:"),
        rss_file_kib: kib("RssFile:"),
    })
}

/// The pids of the processes running one of `programs` (the file name of their executable) whose
/// command lines name `dir`: the processes of one control plane or cluster, not another's.
pub fn pids_of(dir: &Path, programs: &[&str]) -> Vec<u32> {
    let dir = dir.to_string_lossy().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let mut args = raw.split(|b| *b == 0).map(String::from_utf8_lossy);
                let program = args.next().unwrap_or_default();
                let program = program.rsplit('/').next().unwrap_or_default();
                programs.contains(&program) && args.any(|arg| arg.contains(&dir))
            })
        })
        .collect()
}

/// The pids of the control plane's processes (etcd and kube-apiserver).
pub fn control_plane_pids(cp: &ControlPlane) -> Vec<u32> {
    pids_of(cp.dir(), &["kube-apiserver", "etcd"])
}

/// CPU seconds the whole machine spent busy (everything but idle and iowait) since boot.
pub fn machine_cpu_seconds() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            let line = stat.lines().find(|l| l.starts_with("cpu "))?.to_string();
            let ticks: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let busy: f64 = ticks
                .iter()
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .map(|(_, v)| v)
                .sum();
            Some(busy / hz)
        })
        .unwrap_or(0.0)
}

/// CPU seconds of `pids` together (a process that has gone counts 0).
pub fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| proc_sample(*pid).ok())
        .map(|s| s.cpu_seconds)
        .sum()
}

/// The operator as a process of its own: `run --config <file>`, leader election off, metrics and
/// health on free loopback ports; killed when dropped.
pub struct OperatorProcess {
    child: Child,
    metrics: SocketAddr,
    health: SocketAddr,
    started: Instant,
}

impl OperatorProcess {
    /// Starts `binary` with `config` against the cluster of `kubeconfig`, appending its output to
    /// `log`.
    ///
    /// # Errors
    ///
    /// When the binary is missing or cannot be started, or the log cannot be opened.
    pub fn spawn(
        binary: &Path,
        config: &Path,
        kubeconfig: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        if !binary.is_file() {
            bail!(
                "{} is missing: build it with `cargo build [--release] -p workflowexecution-operator`",
                binary.display()
            );
        }
        let (metrics, health) = (free_addr()?, free_addr()?);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let started = Instant::now();
        let child = crate::checkout::operator_command(binary, config, kubeconfig, log)?
            .env("WFE_CONTROLLER__LEADERELECTION", "false")
            .env("WFE_CONTROLLER__METRICSADDR", metrics.to_string())
            .env("WFE_CONTROLLER__HEALTHADDR", health.to_string())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self {
            child,
            metrics,
            health,
            started,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When it was spawned.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Time from spawning to `/readyz` answering 200.
    ///
    /// # Errors
    ///
    /// When it exits or is not ready within two minutes.
    pub async fn wait_ready(&mut self) -> anyhow::Result<Duration> {
        let deadline = Instant::now() + READY_DEADLINE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("the operator exited during start-up with {status}");
            }
            if let Ok((200, _)) = http_get(self.health, "/readyz").await {
                return Ok(self.started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the operator was not ready after {READY_DEADLINE:?}")
    }

    /// Its CPU seconds and memory now.
    ///
    /// # Errors
    ///
    /// When the process has gone.
    pub fn sample(&self) -> anyhow::Result<ProcSample> {
        proc_sample(self.pid())
    }

    /// The sum of the samples of `name` (a metric name, or a name with labels) on its `/metrics`.
    ///
    /// # Errors
    ///
    /// When `/metrics` does not answer.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = http_get(self.metrics, "/metrics").await?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum())
    }

    /// A snapshot of how long reconciles waited for their slot (`queue`), ran (`reconcile`) and
    /// waited for their own write's watch event (`own write`), from the framework's histograms.
    ///
    /// # Errors
    ///
    /// When `/metrics` does not answer.
    pub async fn step_durations(&self) -> anyhow::Result<Histograms> {
        let (_, page) = http_get(self.metrics, "/metrics").await?;
        let named = |metric: &str, name: &str| {
            let name = name.to_string();
            Histograms::parse(&page, metric, move |_| Some(name.clone()))
        };
        Ok(named("framework_reconcile_queue_seconds", "queue")
            .with(named("framework_reconcile_duration_seconds", "reconcile"))
            .with(named("framework_own_write_wait_seconds", "own write")))
    }

    /// `framework_own_write_waits_total` by outcome: (caught up, timed out); (0, 0) from an
    /// operator built before the metric existed.
    ///
    /// # Errors
    ///
    /// When `/metrics` does not answer.
    pub async fn own_write_waits(&self) -> anyhow::Result<(u64, u64)> {
        let waits =
            |outcome: &str| format!("framework_own_write_waits_total{{outcome=\"{outcome}\"}}");
        let caught_up = self.metric(&waits("caught_up")).await?;
        let timed_out = self.metric(&waits("timed_out")).await?;
        Ok((caught_up.round() as u64, timed_out.round() as u64))
    }

    /// SIGTERM, then SIGKILL after 20 s.
    pub fn stop(&mut self) {
        // SAFETY: a plain kill(2) on the child we spawned.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes the operator's configuration file `<dir>/operator.yaml`: the execution namespace,
/// further lines of the `execution` section (`execution_extra`, each indented by two spaces), a
/// [`COOLDOWN`], the repository's templates and the log audit sink. Returns its path.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_operator_config(
    dir: &Path,
    exec_namespace: &str,
    execution_extra: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("operator.yaml");
    let templates = repo().join("templates/workflowexecution");
    let templates = templates.canonicalize().unwrap_or(templates);
    std::fs::write(
        &path,
        format!(
            "execution:\n  namespace: {exec_namespace}\n{execution_extra}cooldown:\n  period: {COOLDOWN}\n\
             templates:\n  dir: {}\naudit:\n  sink: log\n",
            templates.display()
        ),
    )?;
    Ok(path)
}

/// Logs warnings and above to stderr (`RUST_LOG` overrides), kube's own logs off.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off,kube_runtime=off".into()),
        )
        .init();
}

/// The short hash of the repository's `HEAD`, or `unknown`.
pub fn git_commit() -> String {
    command_output(
        "git",
        &[
            "-C",
            &repo().to_string_lossy(),
            "rev-parse",
            "--short",
            "HEAD",
        ],
    )
}

/// Prints the last 40 lines of the log at `path` to stderr (a failed phase's operator log).
pub fn print_log_tail(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path) {
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("----- {} (last 40 lines) -----", path.display());
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{line}");
        }
    }
}
