//! `make bench-tekton`: the load figure of the WorkflowExecution operator on real Tekton, next to
//! the Tekton simulator's, in one run.
//!
//! Phases, one after the other, with the same operator binary and the same load:
//! 1. **Simulator** — a local control plane with Tekton's CRDs and the simulator that `make bench`
//!    uses (it replays the recorded two-task run, completing each run after `--run-time-ms`).
//! 2. **Real Tekton** — the end-to-end cluster (`kubernaut_test_harness::e2e::E2eCluster`: etcd,
//!    kube-apiserver, kube-controller-manager, kube-scheduler, kwok and Tekton Pipelines), running
//!    the three-task workflow `tests/e2e/bundles/three-tasks.yaml` from the cluster's bundle
//!    registry.
//!
//! Each phase creates `--n` WorkflowExecutions on distinct targets as fast as `--concurrency`
//! allows and waits until all have ended (`kubernaut_test_harness::bench::load::load_phase`, the
//! load phase of `make bench`): throughput, created → Running and PipelineRun `Succeeded` → WFE
//! `Completed` latencies, the writes the API server counted by request, and who made them. The
//! real-Tekton phase also counts Tekton's own writes, its processes' CPU, and the Events each
//! component wrote.
//!
//! The figures go to the "Real Tekton" section of `docs/performance.md` (which `make bench` keeps)
//! and to `docs/performance-tekton.json`.
//!
//! Guarantees:
//! 1. Every request goes to the loopback control planes or the operator's loopback endpoints.
//! 2. Each phase is bounded in time; what did not end is reported incomplete.
//! 3. The operator processes and both clusters are stopped when the benchmark ends or fails.
//!
//! Assumptions:
//! 1. `make e2e-deps` has built the end-to-end components and `make controlplane` the control
//!    plane; otherwise the benchmark fails naming the command.
//! 2. The operator is the only client writing WorkflowExecutions (but for the benchmark's creates)
//!    and creating PipelineRuns; Tekton is the only one writing PipelineRun and TaskRun statuses,
//!    TaskRuns, ResolutionRequests and pods (but for kwok's pod statuses and the scheduler's
//!    bindings): the API server's counters do not name the client ([`writer`]).
//!
//! Caveats:
//! 1. The two workloads differ where the simulator cannot follow: the simulator replays a two-task
//!    run and completes it after a fixed time; real Tekton runs three tasks, each a pod that kwok
//!    plays, and its own controllers' queues and rate limits decide how long that takes.
//! 2. Everything shares the machine's cores, other builds included: the page states how busy the
//!    machine was; compare the two phases of one run, not runs.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use jiff::Timestamp;
use k8s_openapi::api::events::v1::Event;
use kube::{Api, Client, api::ListParams};
use serde::{Deserialize, Serialize};
use workflowexecution_operator::types;

use kubernaut_test_harness::{
    bench::{
        flags::{flags, parse},
        load::{
            LoadResult, LoadSetup, Shared, load_phase, simulator_control_plane, start_simulator,
            start_watches,
        },
        process::{
            Machine, OperatorProcess, command_output, control_plane_pids, cpu_of, git_commit,
            init_tracing, machine, pids_of, print_log_tail, repo, write_operator_config,
        },
        report::{
            Percentiles, fmt_p, per_wfe, ratio, replace_section, table_head, two_decimals,
            write_json,
        },
    },
    e2e::{E2eCluster, workflows::execution},
};

/// The simulator phase's execution namespace and the namespace of its WorkflowExecutions.
const SIM_EXEC_NAMESPACE: &str = "kubernaut-workflows";
const SIM_NAMESPACE: &str = "bench-simulator";
/// The bundle (`tests/e2e/bundles/<stem>.yaml`) the real-Tekton phase runs.
const BUNDLE: &str = "three-tasks";
/// The tasks of [`BUNDLE`].
const TASKS: usize = 3;
/// The service account the workflows' tasks run as.
const RUNNER: &str = "kubernaut-workflow-runner";
/// The most the simulator phase may take.
const SIMULATOR_DEADLINE: Duration = Duration::from_secs(240);
/// The most the real-Tekton phase may take: each run is three pods in sequence.
const TEKTON_DEADLINE: Duration = Duration::from_secs(600);
/// The heading of the page's section this benchmark writes.
const SECTION: &str = "## Real Tekton";

// ------------------------------------------------------------------------------------------ args

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Args {
    /// WorkflowExecutions per phase.
    n: usize,
    /// Creates in flight at most.
    concurrency: usize,
    /// The simulator's run duration.
    run_time_ms: u64,
    /// The operator binary.
    operator: PathBuf,
    /// Which build it is: `release`, `debug`, or `--operator` when given.
    operator_build: String,
    /// Where performance.md and performance-tekton.json go.
    #[serde(skip)]
    out: PathBuf,
    /// Run only the real-Tekton phase.
    skip_simulator: bool,
    /// Only re-render the page's section from an existing performance-tekton.json.
    #[serde(skip)]
    render_only: bool,
}

fn usage() -> &'static str {
    "tektonbench [--n 100] [--concurrency 32] [--run-time-ms 500] [--operator PATH] [--out docs] \
     [--skip-simulator] [--render-only]\n\
     Without --operator: the release build in $CARGO_TARGET_DIR if there is one, else the debug build."
}

/// The release build of the operator if there is one, else the debug build.
fn default_operator() -> (PathBuf, &'static str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let release = target.join("release/workflowexecution-operator");
    if release.is_file() {
        (release, "release")
    } else {
        (target.join("debug/workflowexecution-operator"), "debug")
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let (operator, build) = default_operator();
    let mut args = Args {
        n: 100,
        concurrency: 32,
        run_time_ms: 500,
        operator,
        operator_build: build.to_string(),
        out: repo().join("docs"),
        skip_simulator: false,
        render_only: false,
    };
    for (flag, value) in flags(&["--skip-simulator", "--render-only"], usage())? {
        let Some(value) = value else {
            match flag.as_str() {
                "--skip-simulator" => args.skip_simulator = true,
                _ => args.render_only = true,
            }
            continue;
        };
        match flag.as_str() {
            "--n" => args.n = parse(&flag, &value)?,
            "--concurrency" => args.concurrency = parse(&flag, &value)?,
            "--run-time-ms" => args.run_time_ms = parse(&flag, &value)?,
            "--operator" => {
                args.operator = PathBuf::from(value);
                args.operator_build = "--operator".into();
            }
            "--out" => args.out = PathBuf::from(value),
            _ => bail!("unknown flag {flag}\nusage: {}", usage()),
        }
    }
    if args.n == 0 || args.concurrency == 0 {
        bail!("--n and --concurrency must be positive");
    }
    Ok(args)
}

// ------------------------------------------------------------------------------------ writers

/// Who made a write on the real-Tekton cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Writer {
    /// The operator.
    Operator,
    /// This benchmark (the WFE creates).
    Benchmark,
    /// Tekton's controller and resolvers.
    Tekton,
    /// kube-scheduler, kwok, kube-controller-manager and the API server itself.
    Cluster,
    /// Events: every component writes them; [`event_writes`] splits them.
    Events,
}

impl Writer {
    fn label(self) -> &'static str {
        match self {
            Writer::Operator => "operator",
            Writer::Benchmark => "benchmark",
            Writer::Tekton => "Tekton",
            Writer::Cluster => "cluster (scheduler, kwok, controller-manager, API server)",
            Writer::Events => "Events of the other components (split below)",
        }
    }
}

/// Who made a write (`VERB resource[/subresource]`, as `write_delta` names it) on the real-Tekton
/// cluster, by what only one party writes (module assumption 2).
fn writer(name: &str) -> Writer {
    let mut words = name.split_whitespace();
    let verb = words.next().unwrap_or("");
    let resource = words.next().unwrap_or("");
    match resource {
        "workflowexecutions" if verb == "POST" => Writer::Benchmark,
        "workflowexecutions" | "workflowexecutions/status" => Writer::Operator,
        // The operator creates runs (and cancels or deletes them, which the happy path does
        // not); Tekton labels, annotates and updates them.
        "pipelineruns" if verb == "POST" || verb == "DELETE" => Writer::Operator,
        "pipelineruns" | "pipelineruns/status" | "taskruns" | "taskruns/status" => Writer::Tekton,
        "resolutionrequests" | "resolutionrequests/status" => Writer::Tekton,
        // Tekton validates a resolved Pipeline or Task by a dry-run create
        // (`pkg/reconciler/apiserver`): counted, never stored.
        "pipelines" | "tasks" => Writer::Tekton,
        // Tekton creates the pods and marks them ready to start; kwok writes their statuses and
        // the scheduler binds them.
        "pods" => Writer::Tekton,
        "events" => Writer::Events,
        _ => Writer::Cluster,
    }
}

/// The operator's writes on the real-Tekton cluster, Events excepted ([`event_writes`]).
fn is_operator_write_on_tekton(name: &str) -> bool {
    writer(name) == Writer::Operator
}

/// The Event writes in `namespace` by reporting component, from the Events themselves: one write
/// per Event, and one per repeat of a series.
async fn event_writes(client: &Client, namespace: &str) -> anyhow::Result<BTreeMap<String, u64>> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let mut by = BTreeMap::new();
    for event in events.list(&ListParams::default()).await?.items {
        let reporter = event
            .reporting_controller
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| {
                event
                    .deprecated_source
                    .as_ref()
                    .and_then(|s| s.component.clone())
            })
            .unwrap_or_else(|| "unknown".into());
        let writes = event
            .series
            .as_ref()
            .map(|s| s.count)
            .or(event.deprecated_count)
            .unwrap_or(1)
            .max(1);
        *by.entry(reporter).or_default() += u64::try_from(writes).unwrap_or(1);
    }
    Ok(by)
}

// ------------------------------------------------------------------------------------- phases

/// One phase's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PhaseResult {
    /// What the load phase measured.
    load: LoadResult,
    /// The 1-minute load average before and after.
    load_average: (f64, f64),
    /// The phase's writes per WFE by who made them (the real-Tekton phase; Events split by
    /// their reporters, the operator's counted with it).
    by_writer: BTreeMap<String, f64>,
    /// Event writes by reporting component, in the WFE and the execution namespace.
    events: BTreeMap<String, u64>,
    /// The operator's writes per WFE, Events included.
    operator_writes_per_wfe: f64,
    /// CPU seconds of Tekton's controller and resolvers in the phase.
    tekton_cpu_seconds: Option<f64>,
    /// CPU seconds of kube-controller-manager, kube-scheduler and kwok in the phase.
    cluster_cpu_seconds: Option<f64>,
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Starts the operator with `config` against `kubeconfig` and waits until it is ready.
async fn start_operator(
    args: &Args,
    config: &Path,
    kubeconfig: &Path,
    log: &Path,
) -> anyhow::Result<OperatorProcess> {
    let mut operator = OperatorProcess::spawn(&args.operator, config, kubeconfig, log)?;
    let ready = operator.wait_ready().await?;
    println!("  operator pid {} ready in {ready:.2?}", operator.pid());
    Ok(operator)
}

async fn simulator_phase(args: &Args, work: &Path) -> anyhow::Result<PhaseResult> {
    let load_before = load_average();
    let (cp, client) = simulator_control_plane(&[SIM_EXEC_NAMESPACE, SIM_NAMESPACE]).await?;
    let config = write_operator_config(work, SIM_EXEC_NAMESPACE, "")?;
    let log = work.join("operator-simulator.log");
    let operator = start_operator(args, &config, cp.kubeconfig_path(), &log).await?;
    let _simulator = start_simulator(
        &client,
        SIM_EXEC_NAMESPACE,
        Duration::from_millis(args.run_time_ms),
    );
    let tracker = Shared::default();
    let watches = start_watches(&client, &tracker, SIM_EXEC_NAMESPACE).await?;
    let cp_pids = control_plane_pids(&cp);
    let setup = LoadSetup::on_simulator(
        &client,
        &operator,
        &tracker,
        &cp_pids,
        args.concurrency,
        SIMULATOR_DEADLINE,
    );
    let load = load_phase(&setup, SIM_NAMESPACE, args.n, None).await;
    for watch in watches {
        watch.abort();
    }
    let load = load.inspect_err(|_| print_log_tail(&log))?;
    let by_writer = BTreeMap::from([(
        Writer::Operator.label().to_string(),
        load.operator_writes_per_wfe,
    )]);
    Ok(PhaseResult {
        operator_writes_per_wfe: load.operator_writes_per_wfe,
        load,
        load_average: (load_before, load_average()),
        by_writer,
        events: BTreeMap::new(),
        tekton_cpu_seconds: None,
        cluster_cpu_seconds: None,
    })
}

async fn tekton_phase(
    args: &Args,
    work: &Path,
    cluster: &E2eCluster,
) -> anyhow::Result<PhaseResult> {
    let load_before = load_average();
    let cp = cluster.control_plane();
    cp.install_crds(&[types::crd()]).await?;
    let client = cluster.client().await?;
    let exec_ns = cluster
        .create_run_namespace("kubernaut-workflows", RUNNER)
        .await?;
    let wfe_ns = cp.create_namespace("bench-tekton").await?;
    let bundle = cluster.bundle(BUNDLE)?;
    let config =
        write_operator_config(work, &exec_ns, &format!("  serviceAccountName: {RUNNER}\n"))?;
    let log = work.join("operator-tekton.log");
    let operator = start_operator(args, &config, cp.kubeconfig_path(), &log).await?;
    let tracker = Shared::default();
    let watches = start_watches(&client, &tracker, &exec_ns).await?;
    let cp_pids = control_plane_pids(cp);
    let tekton_pids = pids_of(cp.dir(), &["tekton-controller", "tekton-resolvers"]);
    let cluster_pids = pids_of(
        cp.dir(),
        &["kube-controller-manager", "kube-scheduler", "kwok"],
    );
    if tekton_pids.len() != 2 {
        bail!("found {} Tekton processes, expected 2", tekton_pids.len());
    }
    let (tekton_before, cluster_before) = (cpu_of(&tekton_pids), cpu_of(&cluster_pids));
    let setup = LoadSetup {
        client: &client,
        operator: &operator,
        tracker: &tracker,
        cp_pids: &cp_pids,
        concurrency: args.concurrency,
        deadline: TEKTON_DEADLINE,
        wfe: &|namespace, i| {
            let name = format!("wfe-{i:05}");
            execution(
                namespace,
                &name,
                bundle.clone(),
                &format!("app-{i:05}"),
                None,
                None,
            )
        },
        is_operator_write: is_operator_write_on_tekton,
    };
    let load = load_phase(&setup, &wfe_ns, args.n, None).await;
    for watch in watches {
        watch.abort();
    }
    let load = load.inspect_err(|_| print_log_tail(&log))?;
    let tekton_cpu = cpu_of(&tekton_pids) - tekton_before;
    let cluster_cpu = cpu_of(&cluster_pids) - cluster_before;
    let operator_events = event_writes(&client, &wfe_ns).await?;
    let mut events = event_writes(&client, &exec_ns).await?;
    for (reporter, writes) in &operator_events {
        *events
            .entry(format!("{reporter} (on WorkflowExecutions)"))
            .or_default() += writes;
    }
    let (by_writer, operator_writes_per_wfe) =
        writes_by_writer(&load.writes, operator_events.values().sum(), args.n);
    Ok(PhaseResult {
        operator_writes_per_wfe,
        load,
        load_average: (load_before, load_average()),
        by_writer,
        events,
        tekton_cpu_seconds: Some(tekton_cpu),
        cluster_cpu_seconds: Some(cluster_cpu),
    })
}

/// The writes of a real-Tekton phase per WFE by who made them, and the operator's: its writes
/// with its `operator_event_writes` (from the Events), which the Events row leaves out.
fn writes_by_writer(
    writes: &BTreeMap<String, u64>,
    operator_event_writes: u64,
    n: usize,
) -> (BTreeMap<String, f64>, f64) {
    let per_wfe = |count: u64| per_wfe(count, n);
    let mut by: BTreeMap<Writer, u64> = BTreeMap::new();
    for (name, count) in writes {
        *by.entry(writer(name)).or_default() += count;
    }
    let events = by.entry(Writer::Events).or_default();
    *events = events.saturating_sub(operator_event_writes);
    *by.entry(Writer::Operator).or_default() += operator_event_writes;
    let operator = per_wfe(by.get(&Writer::Operator).copied().unwrap_or(0));
    let by = by
        .into_iter()
        .map(|(w, count)| (w.label().to_string(), per_wfe(count)))
        .collect();
    (by, operator)
}

// ------------------------------------------------------------------------------------- report

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Report {
    date: String,
    total_seconds: f64,
    machine: Machine,
    settings: Args,
    operator_version: String,
    commit: String,
    components: String,
    simulator: Option<PhaseResult>,
    tekton: PhaseResult,
}

type Row = (
    &'static str,
    fn(&PhaseResult) -> String,
    Option<fn(&PhaseResult) -> f64>,
);

const ROWS: [Row; 14] = [
    (
        "outcome",
        |p| {
            format!(
                "{} Completed, {} Failed, {} Skipped, {} incomplete",
                p.load.completed, p.load.failed, p.load.skipped, p.load.incomplete
            )
        },
        None,
    ),
    (
        "throughput to Completed (WFE/s)",
        |p| format!("**{:.1}**", p.load.throughput),
        Some(|p| p.load.throughput),
    ),
    (
        "throughput to Running (WFE/s)",
        |p| format!("{:.1}", p.load.running_throughput),
        Some(|p| p.load.running_throughput),
    ),
    (
        "created → Running p50 / p95 / p99 (ms)",
        |p| fmt_p(&p.load.created_to_running_ms),
        Some(|p| p.load.created_to_running_ms.p95),
    ),
    (
        "PipelineRun seen → finished p50 / p95 / p99 (ms)",
        |p| {
            fmt_p(
                p.load
                    .run_seen_to_finished_ms
                    .as_ref()
                    .unwrap_or(&Percentiles::default()),
            )
        },
        Some(|p| {
            p.load
                .run_seen_to_finished_ms
                .as_ref()
                .map_or(0.0, |r| r.p95)
        }),
    ),
    (
        "Succeeded → Completed p50 / p95 / max (ms)",
        |p| {
            let s = &p.load.succeeded_to_completed_ms;
            format!("{:.1} / {:.1} / {:.1}", s.p50, s.p95, s.max)
        },
        Some(|p| p.load.succeeded_to_completed_ms.p95),
    ),
    (
        "operator writes per WFE (Events included)",
        |p| format!("**{:.2}**", p.operator_writes_per_wfe),
        Some(|p| p.operator_writes_per_wfe),
    ),
    (
        "writes to the WFE per WFE (after its create)",
        |p| format!("{:.2}", p.load.wfe_writes_mean.unwrap_or(0.0)),
        Some(|p| p.load.wfe_writes_mean.unwrap_or(0.0)),
    ),
    (
        "… of them in phase Running (the Running write + mirrored progress)",
        |p| format!("{:.2}", p.load.wfe_writes_running_mean.unwrap_or(0.0)),
        Some(|p| p.load.wfe_writes_running_mean.unwrap_or(0.0)),
    ),
    (
        "every write per WFE (all components)",
        |p| format!("{:.2}", p.load.all_writes_per_wfe),
        Some(|p| p.load.all_writes_per_wfe),
    ),
    (
        "operator CPU s per 1 000 WFEs",
        |p| format!("{:.2}", p.load.operator_cpu_seconds_per_1000),
        Some(|p| p.load.operator_cpu_seconds_per_1000),
    ),
    (
        "API server + etcd CPU s (cores busy)",
        |p| {
            format!(
                "{:.1} ({:.2})",
                p.load.apiserver_etcd_cpu_seconds, p.load.apiserver_etcd_cores
            )
        },
        Some(|p| p.load.apiserver_etcd_cpu_seconds),
    ),
    (
        "Tekton controller + resolvers / scheduler + kwok + controller-manager CPU s",
        |p| match (p.tekton_cpu_seconds, p.cluster_cpu_seconds) {
            (Some(t), Some(c)) => format!("{t:.1} / {c:.1}"),
            _ => "– (simulator: in the benchmark's process)".into(),
        },
        None,
    ),
    (
        "machine: cores busy / outside the control plane, operator and benchmark / load average before → after",
        |p| {
            format!(
                "{:.2} / {:.2} / {:.1} → {:.1}",
                p.load.machine_cores, p.load.other_cores, p.load_average.0, p.load_average.1
            )
        },
        None,
    ),
];

fn comparison_table(r: &Report) -> String {
    let mut md = String::new();
    let sim = r.simulator.as_ref();
    let _ = writeln!(
        md,
        "| {} WFEs as fast as possible ({} in flight) | simulator (2 tasks) | real Tekton ({TASKS} tasks) | real ÷ simulator |\n|---|---|---|---|",
        r.tekton.load.n, r.settings.concurrency
    );
    for (name, cell, value) in ROWS {
        let ratio = match (sim, value) {
            (Some(s), Some(v)) => ratio(Some(v(&r.tekton)), Some(v(s))),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {ratio} |",
            sim.map_or("not run".into(), cell),
            cell(&r.tekton)
        );
    }
    md
}

fn writes_table(p: &PhaseResult) -> String {
    let mut md = String::new();
    let n = p.load.n;
    let _ = writeln!(
        md,
        "Writes on the real-Tekton cluster per WFE, by request (`apiserver_request_total`):\n"
    );
    md.push_str(&table_head(&["request", "per WFE", "by"]));
    for (name, count) in &p.load.writes {
        let _ = writeln!(
            md,
            "| `{name}` | {:.2} | {} |",
            per_wfe(*count, n),
            writer(name).label()
        );
    }
    let _ = writeln!(
        md,
        "\nEvent writes per WFE by reporting component (from the Events: one write each, one per repeat of a series):\n"
    );
    md.push_str(&table_head(&["reporter", "per WFE"]));
    for (reporter, count) in &p.events {
        let _ = writeln!(md, "| {reporter} | {:.2} |", per_wfe(*count, n));
    }
    let _ = writeln!(md, "\nWrites per WFE by who made them:\n");
    md.push_str(&table_head(&["by", "per WFE"]));
    for (by, per_wfe) in &p.by_writer {
        let _ = writeln!(md, "| {by} | {per_wfe:.2} |");
    }
    md
}

fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Generated by `make bench-tekton` ({:.0} s) on {} — do not edit by hand; the numbers are \
         also in [`performance-tekton.json`](performance-tekton.json). Operator: {} ({} build, \
         commit {}). Cluster: {}.\n",
        r.total_seconds,
        r.date,
        r.operator_version,
        r.settings.operator_build,
        r.commit,
        r.components.lines().collect::<Vec<_>>().join(", ")
    );
    let _ = writeln!(
        md,
        "The same operator binary and load on the Tekton simulator (`make bench`'s, runs of {} ms) \
         and on real Tekton (`tests/e2e/bundles/{BUNDLE}.yaml`: {TASKS} tasks in sequence, each a \
         pod that kwok runs for 1 s), one phase after the other in one run; the machine ({} \
         cores) was shared with other work, as its last row says.\n",
        r.settings.run_time_ms, r.machine.nproc
    );
    md.push_str(&comparison_table(r));
    md.push('\n');
    md.push_str(&churn(r));
    md.push('\n');
    md.push_str(&tekton_rate(&r.tekton));
    md.push('\n');
    md.push_str(&writes_table(&r.tekton));
    md
}

/// Tekton's client rate limit: client-go's default of 5 requests/s, doubled when no flag sets it
/// and doubled again for its two controllers (`cmd/controller/main.go` of Tekton Pipelines).
const TEKTON_CLIENT_QPS: f64 = 20.0;

/// How fast Tekton wrote, against its client's rate limit, from this run's figures.
fn tekton_rate(p: &PhaseResult) -> String {
    let tekton: u64 = p
        .load
        .writes
        .iter()
        .filter(|(name, _)| writer(name) == Writer::Tekton)
        .map(|(_, count)| count)
        .sum();
    // The resolvers (their own process and client) write the ResolutionRequests' statuses.
    let resolvers: u64 = p
        .load
        .writes
        .iter()
        .filter(|(name, _)| name.contains("resolutionrequests/status"))
        .map(|(_, count)| count)
        .sum();
    let seconds = p.load.seconds_to_all_terminal.max(1e-9);
    let controller_rate = tekton.saturating_sub(resolvers) as f64 / seconds;
    format!(
        "**Tekton's pace.** Tekton's controller and resolvers wrote {:.2} times per WFE ({tekton} \
         writes), {:.1} writes/s from the first create to the last WFE ending, and used {} CPU s. \
         Tekton's controller sends at most {TEKTON_CLIENT_QPS:.0} requests/s to the API server \
         (client-go's default of 5, doubled by its `cmd/controller/main.go` when no flag sets it \
         and doubled again for its two controllers); the harness runs it with its own defaults. \
         Its writes alone (the resolvers' left out) came to {controller_rate:.1}/s.{}\n",
        per_wfe(tekton, p.load.n),
        tekton as f64 / seconds,
        p.tekton_cpu_seconds
            .map_or("–".into(), |cpu| format!("{cpu:.1}")),
        if controller_rate >= 0.75 * TEKTON_CLIENT_QPS {
            " Every TaskRun, pod and status of every run waits its turn at that limit, reads \
             included: close to it, Tekton paced these runs, not the operator (which mirrored \
             each run's end into its WFE within the Succeeded → Completed figure above) or the \
             API server (see its cores above)."
        } else {
            ""
        },
    )
}

/// What real Tekton's status churn costs the operator, from this run's figures.
fn churn(r: &Report) -> String {
    let mirrored = |p: &PhaseResult| (p.load.wfe_writes_running_mean.unwrap_or(0.0) - 1.0).max(0.0);
    let count = |p: &PhaseResult, name: &str| {
        per_wfe(p.load.writes.get(name).copied().unwrap_or(0), p.load.n)
    };
    let run_status_of = |p: &PhaseResult| {
        count(p, "PUT pipelineruns/status") + count(p, "PATCH pipelineruns/status")
    };
    let sim = r.simulator.as_ref();
    let sim_run_status = two_decimals(sim.map(run_status_of));
    let count = |name: &str| count(&r.tekton, name);
    let status_writes =
        count("PUT workflowexecutions/status") + count("PATCH workflowexecutions/status");
    let run_status = run_status_of(&r.tekton);
    format!(
        "**Status churn.** On real Tekton the operator wrote each WFE's status {status_writes:.2} \
         times; the WFE changed {:.2} times after its create, {:.2} of them in phase Running: the \
         Running write and {:.2} updates mirroring the run's progress (`pipelineRunStatus`) as \
         Tekton wrote the PipelineRun's status {run_status:.2} times per run. On the simulator, \
         which wrote a run's status {sim_run_status} times, the WFE changed {} times, {} of them \
         mirrored progress.\n",
        r.tekton.load.wfe_writes_mean.unwrap_or(0.0),
        r.tekton.load.wfe_writes_running_mean.unwrap_or(0.0),
        mirrored(&r.tekton),
        two_decimals(sim.map(|s| s.load.wfe_writes_mean.unwrap_or(0.0))),
        two_decimals(sim.map(mirrored)),
    )
}

// --------------------------------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = parse_args()?;
    if args.render_only {
        let text = std::fs::read_to_string(args.out.join("performance-tekton.json"))
            .context("--render-only needs an existing performance-tekton.json")?;
        let report: Report = serde_json::from_str(&text)?;
        return write_section(&args.out, &report);
    }
    let begun = Instant::now();
    let operator_version = command_output(&args.operator.to_string_lossy(), &["version"]);
    println!(
        "operator: {} ({} build, {})",
        operator_version,
        args.operator_build,
        args.operator.display()
    );
    let work = tempfile::Builder::new()
        .prefix("kubernaut-tektonbench-")
        .tempdir()?;
    let simulator = if args.skip_simulator {
        None
    } else {
        println!("simulator: {} WFEs as fast as possible …", args.n);
        let phase = simulator_phase(&args, work.path()).await?;
        print_phase(&phase);
        Some(phase)
    };
    println!("real Tekton: starting the end-to-end cluster …");
    let cluster = E2eCluster::start()
        .await
        .context("starting the end-to-end cluster (make e2e-deps builds its components)")?;
    let components = cluster.components().versions().unwrap_or_default();
    println!(
        "real Tekton: {} WFEs of {BUNDLE} as fast as possible …",
        args.n
    );
    let tekton = tekton_phase(&args, work.path(), &cluster).await;
    let tekton = tekton.inspect_err(|_| cluster.print_logs())?;
    print_phase(&tekton);
    drop(cluster);

    let report = Report {
        date: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        total_seconds: begun.elapsed().as_secs_f64(),
        machine: machine(),
        commit: git_commit(),
        settings: args.clone(),
        operator_version,
        components: components.trim().to_string(),
        simulator,
        tekton,
    };
    write_json(&args.out, "performance-tekton.json", &report)?;
    write_section(&args.out, &report)?;
    println!(
        "\nwrote the \"{}\" section of {1}/performance.md and {1}/performance-tekton.json",
        SECTION.trim_start_matches("## "),
        args.out.display()
    );
    Ok(())
}

/// Writes the page's section of `report` into `<out>/performance.md`.
fn write_section(out: &Path, report: &Report) -> anyhow::Result<()> {
    replace_section(
        &out.join("performance.md"),
        SECTION,
        "## Image",
        &markdown(report),
    )
}

fn print_phase(p: &PhaseResult) {
    let l = &p.load;
    println!(
        "  {} Completed, {} incomplete in {:.1} s: {:.1} WFE/s; created→Running p50 {:.0} ms p95 {:.0} ms; \
         Succeeded→Completed p50 {:.0} ms p95 {:.0} ms max {:.0} ms; {:.2} operator writes per WFE \
         ({:.2} WFE writes, {:.2} while Running)",
        l.completed,
        l.incomplete,
        l.seconds_to_all_terminal,
        l.throughput,
        l.created_to_running_ms.p50,
        l.created_to_running_ms.p95,
        l.succeeded_to_completed_ms.p50,
        l.succeeded_to_completed_ms.p95,
        l.succeeded_to_completed_ms.max,
        p.operator_writes_per_wfe,
        l.wfe_writes_mean.unwrap_or(0.0),
        l.wfe_writes_running_mean.unwrap_or(0.0),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_attributed_to_who_alone_makes_them() {
        let cases = [
            ("POST workflowexecutions", Writer::Benchmark),
            ("PATCH workflowexecutions", Writer::Operator),
            ("PUT workflowexecutions/status", Writer::Operator),
            ("POST pipelineruns", Writer::Operator),
            ("PATCH pipelineruns", Writer::Tekton),
            ("PUT pipelineruns/status", Writer::Tekton),
            ("POST taskruns", Writer::Tekton),
            ("PUT taskruns/status", Writer::Tekton),
            ("POST resolutionrequests", Writer::Tekton),
            ("POST pipelines", Writer::Tekton),
            ("POST pods", Writer::Tekton),
            ("PATCH pods/status", Writer::Cluster),
            ("POST pods/binding", Writer::Cluster),
            ("PUT leases", Writer::Cluster),
            ("POST events", Writer::Events),
            ("PUT workflowexecutions/status (409)", Writer::Operator),
        ];
        for (name, want) in cases {
            assert_eq!(writer(name), want, "{name}");
        }
    }

    #[test]
    fn the_operators_events_move_from_the_events_row_to_the_operators() {
        let writes = BTreeMap::from([
            ("POST workflowexecutions".to_string(), 10),
            ("PUT workflowexecutions/status".to_string(), 40),
            ("POST pipelineruns".to_string(), 10),
            ("POST events".to_string(), 50),
            ("PUT taskruns/status".to_string(), 60),
        ]);
        let (by, operator) = writes_by_writer(&writes, 20, 10);
        assert_eq!(operator, 7.0);
        assert_eq!(by[Writer::Operator.label()], 7.0);
        assert_eq!(by[Writer::Events.label()], 3.0);
        assert_eq!(by[Writer::Tekton.label()], 6.0);
        assert_eq!(by[Writer::Benchmark.label()], 1.0);
    }

    #[test]
    fn ratios_are_real_over_simulator() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "–");
    }
}
