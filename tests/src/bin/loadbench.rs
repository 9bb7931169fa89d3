//! `make bench`: the load and scale benchmark of the WorkflowExecution operator against the local
//! control plane, and the page that reports it (`docs/performance.md` + `docs/performance.json`).
//!
//! Phases, in one run, on one control plane:
//! 1. **Ceiling** — a bare client creates PipelineRuns of the operator's payload size as fast as
//!    it can (bounded concurrency): the write rate this API server allows on this machine.
//!    Then the **status write cost**: the same bare client writes WorkflowExecution statuses
//!    (a running WFE's progress) alternately as whole-object `PUT .../status` and as JSON merge
//!    patches of what changed carrying the resourceVersion read, and the API server's CPU per
//!    write is compared (the operator writes with the cheaper one).
//! 2. **Load** — the release-built operator runs as its own process (config file + environment,
//!    leader election off), the Tekton simulator completes every run after a fixed delay, and N
//!    WorkflowExecutions on distinct targets are created, first at a fixed rate, then as fast as
//!    possible. The benchmark's own watches (millisecond clock) give created → Running and
//!    PipelineRun `Succeeded` → WFE `Completed` latencies; the API server's
//!    `apiserver_request_total` (by verb and resource, before/after) gives the writes; `/proc`
//!    gives the operator's CPU seconds and peak RSS.
//! 3. **Scale** — 10 000 terminal WorkflowExecutions and 10 000 PipelineRuns present (created
//!    directly by the benchmark, already terminal so nothing runs), the operator restarted: time
//!    to `/readyz`, writes while nothing changed, and RSS after settling.
//! 4. **Micro** — criterion's estimates (run by `make bench` before this binary) are read from
//!    `$CARGO_TARGET_DIR/criterion`.
//!
//! Guarantees:
//! 1. Every request goes to the loopback control plane or the operator's loopback endpoints.
//! 2. Every request loop is bounded in count (the configured N) and in time (a deadline per
//!    phase); a phase that runs out of time is reported as incomplete, never silently dropped.
//! 3. The operator process is stopped (SIGTERM, then SIGKILL) when the benchmark ends or fails.
//!
//! Caveats:
//! 1. Operator, API server, etcd, simulator and this driver share the machine's cores: the numbers
//!    are for this machine, measured side by side, not for a cluster.
//! 2. Before/after rows of earlier changes come from `docs/performance-baseline.json` (measured
//!    by this binary at the commit it names); they are separate runs, so the page gives ratios.
//! 3. The page's "Image" and "Real Tekton" sections are not measured here (`make image` and
//!    `make bench-tekton` report those figures): they are carried over from the page being
//!    replaced.
//!
//! What the load phases share with `make bench-tekton` (the operator process, the API server's
//! write counters, the watches, the load phase itself) is `kubernaut_test_harness::bench`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use futures::{StreamExt, stream};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use workflowexecution_operator::{
    config::OperatorConfig,
    controller::FINALIZER,
    pipelinerun,
    testing::{load_templates, render_pipeline_run},
    types::{
        Phase, PipelineRunRef, PipelineRunStatusSummary, WorkflowExecution, WorkflowExecutionStatus,
    },
};

use kubernaut_test_harness::{
    ControlPlane,
    bench::{
        apiserver::{apiserver_requests, is_operator_write, write_delta},
        flags::{flags, parse},
        histogram::Latency,
        load::{
            LoadResult, LoadSetup, Shared, load_phase, load_wfe, lock, simulator_control_plane,
            start_simulator, start_watches, target,
        },
        process::{
            Machine, OperatorProcess, command_output, control_plane_pids, cpu_of, git_commit,
            init_tracing, machine, print_log_tail, repo, write_operator_config,
        },
        report::{
            Percentiles, count, fmt_p, keep_sections, ms, per_wfe, percentiles, ratio, table_head,
            two_decimals, write_json,
        },
    },
    simulator::Simulator,
    tekton,
};

const EXEC_NAMESPACE: &str = "kubernaut-workflows";
const CEILING_NAMESPACE: &str = "bench-ceiling";
const RATE_NAMESPACE: &str = "bench-rate";
const LOW_RATE_NAMESPACE: &str = "bench-low-rate";
const BURST_NAMESPACE: &str = "bench-burst";
const SCALE_NAMESPACE: &str = "bench-scale";
const STATUS_NAMESPACE: &str = "bench-status";
/// Where the phase without an operator creates its WorkflowExecutions …
const BARE_NAMESPACE: &str = "bench-bare";
/// … and its PipelineRuns (a namespace the operator does not watch).
const BARE_EXEC_NAMESPACE: &str = "bench-bare-runs";
/// Rounds of the status write cost phase: PUT and merge patch alternate, this many each.
const STATUS_ROUNDS: usize = 3;
/// The most a load phase may take before it is reported incomplete.
const LOAD_DEADLINE: Duration = Duration::from_secs(240);
/// The most the scale phase's creation may take.
const SCALE_DEADLINE: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------------------------------ args

#[derive(Clone, Debug, Serialize)]
struct Args {
    /// WorkflowExecutions per load phase.
    n: usize,
    /// Creation rate of the fixed-rate phase (WFE/s).
    rate: f64,
    /// Creation rate of a second fixed-rate phase below the API server's saturation, with N/2
    /// WFEs (0: skipped): at most this, half the as-fast-as-possible throughput when that is
    /// lower ([`below_saturation`]).
    low_rate: f64,
    /// Objects of each kind present in the scale phase.
    scale: usize,
    /// PipelineRuns created by the ceiling phase.
    ceiling: usize,
    /// WorkflowExecutions of the status write cost phase (0: skipped).
    status_writes: usize,
    /// Requests in flight at most (ceiling, burst and scale creation).
    concurrency: usize,
    /// Simulated PipelineRun duration.
    run_time_ms: u64,
    /// Where performance.md / performance.json go.
    #[serde(skip)]
    out: PathBuf,
    /// The release-built operator binary.
    #[serde(skip)]
    operator: PathBuf,
    /// Criterion's output directory.
    #[serde(skip)]
    criterion: PathBuf,
    /// Skip the scale phase (quick runs).
    skip_scale: bool,
    /// Only the scale phase, after one burst of `n` WFEs (whose finished run status it copies);
    /// prints its figures and writes no report.
    #[serde(skip)]
    only_scale: bool,
    /// With `only_scale`: another operator binary restarted over the same objects afterwards,
    /// its figures printed too (an A/B comparison in one machine state).
    #[serde(skip)]
    compare: Option<PathBuf>,
    /// How long the scale phase may spend creating objects (seconds).
    #[serde(skip)]
    scale_deadline_s: u64,
    /// Only re-render performance.md from an existing performance.json (and the baseline).
    #[serde(skip)]
    render_only: bool,
}

fn usage() -> &'static str {
    "loadbench [--n 1000] [--rate 50] [--low-rate 20 (at most; half the saturated throughput if lower)] [--scale 10000] [--ceiling 2000] [--concurrency 32] \
     [--run-time-ms 500] [--status-writes 500] [--out docs] [--operator PATH] [--criterion DIR] \
     [--skip-scale] [--only-scale [--compare OPERATOR]] [--scale-deadline-s 300] [--render-only]"
}

fn parse_args() -> anyhow::Result<Args> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let mut args = Args {
        n: 1000,
        rate: 50.0,
        low_rate: 20.0,
        scale: 10_000,
        ceiling: 2000,
        status_writes: 500,
        concurrency: 32,
        run_time_ms: 500,
        out: repo().join("docs"),
        operator: target.join("release/workflowexecution-operator"),
        criterion: target.join("criterion"),
        skip_scale: false,
        only_scale: false,
        compare: None,
        scale_deadline_s: SCALE_DEADLINE.as_secs(),
        render_only: false,
    };
    for (flag, value) in flags(&["--skip-scale", "--only-scale", "--render-only"], usage())? {
        let Some(value) = value else {
            match flag.as_str() {
                "--skip-scale" => args.skip_scale = true,
                "--only-scale" => args.only_scale = true,
                _ => args.render_only = true,
            }
            continue;
        };
        match flag.as_str() {
            "--n" => args.n = parse(&flag, &value)?,
            "--rate" => args.rate = parse(&flag, &value)?,
            "--low-rate" => args.low_rate = parse(&flag, &value)?,
            "--scale" => args.scale = parse(&flag, &value)?,
            "--ceiling" => args.ceiling = parse(&flag, &value)?,
            "--status-writes" => args.status_writes = parse(&flag, &value)?,
            "--concurrency" => args.concurrency = parse(&flag, &value)?,
            "--run-time-ms" => args.run_time_ms = parse(&flag, &value)?,
            "--out" => args.out = PathBuf::from(value),
            "--operator" => args.operator = PathBuf::from(value),
            "--compare" => args.compare = Some(PathBuf::from(value)),
            "--scale-deadline-s" => args.scale_deadline_s = parse(&flag, &value)?,
            "--criterion" => args.criterion = PathBuf::from(value),
            _ => bail!("unknown flag {flag}\nusage: {}", usage()),
        }
    }
    if args.n == 0 || args.rate <= 0.0 || args.concurrency == 0 || args.ceiling == 0 {
        bail!("--n, --rate, --concurrency and --ceiling must be positive");
    }
    Ok(args)
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Versions {
    operator: String,
    commit: String,
    rustc: String,
    kube_apiserver: String,
    etcd: String,
}

// ------------------------------------------------------------------------------------ ceiling

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CeilingResult {
    created: usize,
    failed: usize,
    concurrency: usize,
    payload_bytes: usize,
    seconds: f64,
    creates_per_second: f64,
    latency_ms: Percentiles,
    apiserver_cpu_seconds: f64,
}

async fn ceiling(client: &Client, cp_pids: &[u32], args: &Args) -> anyhow::Result<CeilingResult> {
    let dir = repo().join("templates/workflowexecution");
    let templates = load_templates(&dir).map_err(|e| anyhow!("loading {}: {e}", dir.display()))?;
    let mut config = OperatorConfig::default();
    config.execution.namespace = CEILING_NAMESPACE.into();
    let mut sample = load_wfe(BURST_NAMESPACE, "wfe-00000", &target(BURST_NAMESPACE, 0));
    sample.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    let rendered = render_pipeline_run(&sample, &config, &templates)
        .map_err(|e| anyhow!("rendering the PipelineRun: {e}"))?;
    let payload_bytes = serde_json::to_vec(&rendered)?.len();
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        CEILING_NAMESPACE,
        &tekton::pipelinerun_resource(),
    );
    // Warm up (connections, the API server's handlers for the kind), unmeasured.
    let warm_up = args.concurrency * 2;
    let _: Vec<_> = stream::iter(0..warm_up)
        .map(|i| {
            let api = api.clone();
            let mut object = rendered.clone();
            object["metadata"]["name"] = json!(format!("warm-up-{i:05}"));
            async move {
                let object: DynamicObject = serde_json::from_value(object).ok()?;
                api.create(&PostParams::default(), &object).await.ok()
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let cpu_before = cpu_of(cp_pids);
    let started = Instant::now();
    let deadline = started + LOAD_DEADLINE;
    let results: Vec<Result<Duration, String>> = stream::iter(0..args.ceiling)
        .map(|i| {
            let api = api.clone();
            let mut object = rendered.clone();
            object["metadata"]["name"] = json!(format!("ceiling-{i:05}"));
            async move {
                if Instant::now() > deadline {
                    return Err("deadline passed".to_string());
                }
                let object: DynamicObject =
                    serde_json::from_value(object).map_err(|e| e.to_string())?;
                let sent = Instant::now();
                api.create(&PostParams::default(), &object)
                    .await
                    .map(|_| sent.elapsed())
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let latencies: Vec<f64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|d| ms(*d))
        .collect();
    let failed = results.len() - latencies.len();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("ceiling: {failed} creates failed, e.g. {e}");
    }
    Ok(CeilingResult {
        created: latencies.len(),
        failed,
        concurrency: args.concurrency,
        payload_bytes,
        seconds,
        creates_per_second: latencies.len() as f64 / seconds,
        latency_ms: percentiles(latencies),
        apiserver_cpu_seconds: cpu_of(cp_pids) - cpu_before,
    })
}

// ---------------------------------------------------------------------------- without operator

/// The benchmark's world without an operator: what the API server allows when the operator's
/// writes, reads and watches cost nothing. Any operator's throughput is below it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WithoutOperator {
    /// Items: a WFE created by the benchmark and a PipelineRun created for it directly.
    n: usize,
    /// Runs that reached `Succeeded` within the deadline.
    finished: usize,
    /// First create sent → last run seen finished.
    seconds: f64,
    /// Runs finished per second.
    throughput: f64,
    /// Every write of the phase per item (the benchmark's two creates, the simulator's writes).
    writes_per_item: f64,
    /// CPU seconds of the API server + etcd per item (ms).
    apiserver_etcd_cpu_ms_per_item: f64,
    /// `throughput` ÷ the ceiling's creates per second.
    fraction_of_ceiling: f64,
}

/// The shipped templates, and the default config with PipelineRuns going to `exec_namespace`:
/// what the operator renders with in the benchmark.
fn shipped_templates(
    exec_namespace: &str,
) -> anyhow::Result<(kubernaut_framework::template::TemplateSet, OperatorConfig)> {
    let dir = repo().join("templates/workflowexecution");
    let templates = load_templates(&dir).map_err(|e| anyhow!("loading {}: {e}", dir.display()))?;
    let mut config = OperatorConfig::default();
    config.execution.namespace = exec_namespace.into();
    Ok((templates, config))
}

/// Creates `args.n` WFEs as fast as possible (the burst's concurrency), each followed by its
/// rendered PipelineRun created directly, which the simulator runs to `Succeeded` as in the load
/// phases; the benchmark's own watches run as in them. Run before the operator starts; the WFEs
/// are deleted afterwards, so the operator never sees them.
async fn without_operator(
    client: &Client,
    cp_pids: &[u32],
    args: &Args,
    ceiling: &CeilingResult,
) -> anyhow::Result<WithoutOperator> {
    let (templates, config) = shipped_templates(BARE_EXEC_NAMESPACE)?;
    let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), BARE_NAMESPACE);
    let runs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        BARE_EXEC_NAMESPACE,
        &tekton::pipelinerun_resource(),
    );
    let simulator = start_simulator(
        client,
        BARE_EXEC_NAMESPACE,
        Duration::from_millis(args.run_time_ms),
    );
    let tracker: Shared = Arc::default();
    let watches = start_watches(client, &tracker, BARE_EXEC_NAMESPACE).await?;
    let requests_before = apiserver_requests(client).await?;
    let cpu_before = cpu_of(cp_pids);
    let started = Instant::now();
    let deadline = started + LOAD_DEADLINE;
    let created: Vec<Result<(), String>> = stream::iter(0..args.n)
        .map(|i| {
            let (wfes, runs) = (wfes.clone(), runs.clone());
            let wfe = load_wfe(
                BARE_NAMESPACE,
                &format!("wfe-{i:05}"),
                &target(BARE_NAMESPACE, i),
            );
            let (config, templates) = (&config, &templates);
            async move {
                let created = wfes
                    .create(&PostParams::default(), &wfe)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut run = render_pipeline_run(&created, config, templates)
                    .map_err(|e| format!("rendering the PipelineRun: {e}"))?;
                run["metadata"]["name"] = json!(format!("bare-{i:05}"));
                let run: DynamicObject = serde_json::from_value(run).map_err(|e| e.to_string())?;
                runs.create(&PostParams::default(), &run)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let failed = created.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = created.iter().find(|r| r.is_err()) {
        eprintln!("without an operator: {failed} items failed, e.g. {e}");
    }
    let finished = loop {
        let finished = lock(&tracker).run_finished.len();
        if finished + failed >= args.n || Instant::now() > deadline {
            break finished;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let last = lock(&tracker)
        .run_finished
        .values()
        .copied()
        .max()
        .unwrap_or(started);
    let cpu_seconds = cpu_of(cp_pids) - cpu_before;
    let requests_after = apiserver_requests(client).await?;
    for w in watches {
        w.abort();
    }
    drop(simulator);
    wfes.delete_collection(&Default::default(), &ListParams::default())
        .await
        .context("deleting the WFEs of the phase without an operator")?;
    let seconds = last.saturating_duration_since(started).as_secs_f64();
    let throughput = finished as f64 / seconds.max(1e-9);
    let writes: u64 = write_delta(&requests_before, &requests_after)
        .values()
        .sum();
    let items = args.n.max(1) as f64;
    Ok(WithoutOperator {
        n: args.n,
        finished,
        seconds,
        throughput,
        writes_per_item: writes as f64 / items,
        apiserver_etcd_cpu_ms_per_item: cpu_seconds * 1e3 / items,
        fraction_of_ceiling: if ceiling.creates_per_second > 0.0 {
            throughput / ceiling.creates_per_second
        } else {
            0.0
        },
    })
}

// ------------------------------------------------------------------------- status write cost

/// What one way of writing a status cost the API server.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StatusWriteMode {
    writes: usize,
    failed: usize,
    /// Mean request body size.
    body_bytes: usize,
    latency_ms: Percentiles,
    apiserver_cpu_seconds: f64,
    cpu_ms_per_write: f64,
}

/// Whole-object `PUT .../status` against a JSON merge patch of what changed, on the same
/// WorkflowExecutions, alternating round by round.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct StatusWriteCost {
    objects: usize,
    rounds: usize,
    put: StatusWriteMode,
    merge_patch: StatusWriteMode,
}

/// The status of a running WFE whose run reports `completed` finished tasks.
fn running_status(completed: u32) -> WorkflowExecutionStatus {
    let now = Time(Timestamp::now());
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now.clone(),
            observed_generation: Some(1),
        }
    };
    WorkflowExecutionStatus {
        phase: Some(Phase::Running),
        observed_generation: Some(1),
        start_time: Some(now.clone()),
        pipeline_run_ref: Some(PipelineRunRef {
            name: "wfe-0123456789abcdef".into(),
            namespace: EXEC_NAMESPACE.into(),
        }),
        pipeline_run_status: Some(progress(completed)),
        template_revision: Some("0123456789abcdef".into()),
        execution_engine: Some("tekton".into()),
        conditions: vec![
            condition("Ready", "Unknown", "Running", "The workflow is running"),
            condition(
                "ExecutionCreated",
                "True",
                "PipelineRunCreated",
                "PipelineRun wfe-0123456789abcdef created",
            ),
            condition(
                "ExecutionRunning",
                "True",
                "Running",
                "The PipelineRun is running",
            ),
        ],
        ..WorkflowExecutionStatus::default()
    }
}

/// A run's progress: `completed` of 5 tasks done.
fn progress(completed: u32) -> PipelineRunStatusSummary {
    PipelineRunStatusSummary {
        status: Some("Unknown".into()),
        reason: Some("Running".into()),
        message: Some(format!(
            "Tasks Completed: {completed} (Failed: 0, Cancelled 0), Incomplete: {}, Skipped: 0",
            5 - completed.min(5)
        )),
        completed_tasks: Some(completed),
        total_tasks: Some(5),
        execution_started: Some(true),
    }
}

/// One status write: its latency and request body size, or why it failed.
type StatusWriteOutcome = Result<(Duration, usize), String>;

/// One round: every object's status gets the progress of `completed` tasks, written `put` or
/// as a merge patch; the objects are replaced by what the API server returned.
async fn status_round(
    api: &Api<WorkflowExecution>,
    objects: Vec<WorkflowExecution>,
    completed: u32,
    put: bool,
    concurrency: usize,
) -> (Vec<WorkflowExecution>, Vec<StatusWriteOutcome>) {
    let results: Vec<(Option<WorkflowExecution>, StatusWriteOutcome)> = stream::iter(objects)
        .map(|object| async move {
            let name = object.name_any();
            let sent = Instant::now();
            let written = if put {
                let mut updated = object.clone();
                let mut status = updated.status.clone().unwrap_or_default();
                status.pipeline_run_status = Some(progress(completed));
                updated.status = Some(status);
                updated.metadata.managed_fields = None;
                let bytes = serde_json::to_vec(&updated).map_or(0, |b| b.len());
                api.replace_status(&name, &PostParams::default(), &updated)
                    .await
                    .map(|w| (w, bytes))
            } else {
                let patch = json!({
                    "metadata": {"resourceVersion": object.resource_version()},
                    "status": {"pipelineRunStatus": progress(completed)},
                });
                let bytes = serde_json::to_vec(&patch).map_or(0, |b| b.len());
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|w| (w, bytes))
            };
            match written {
                Ok((w, bytes)) => (Some(w), Ok((sent.elapsed(), bytes))),
                Err(e) => (Some(object), Err(e.to_string())),
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut objects = Vec::with_capacity(results.len());
    let mut outcomes = Vec::with_capacity(results.len());
    for (object, outcome) in results {
        objects.extend(object);
        outcomes.push(outcome);
    }
    (objects, outcomes)
}

/// The status write cost phase (see the module doc).
async fn status_write_cost(
    client: &Client,
    cp_pids: &[u32],
    args: &Args,
) -> anyhow::Result<StatusWriteCost> {
    let api: Api<WorkflowExecution> = Api::namespaced(client.clone(), STATUS_NAMESPACE);
    let n = args.status_writes;
    let created: Vec<anyhow::Result<WorkflowExecution>> = stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("status-{i:05}");
                let wfe = load_wfe(STATUS_NAMESPACE, &name, &target(STATUS_NAMESPACE, i));
                let mut created = api.create(&PostParams::default(), &wfe).await?;
                created.status = Some(running_status(0));
                Ok(api
                    .replace_status(&name, &PostParams::default(), &created)
                    .await?)
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let mut objects: Vec<WorkflowExecution> = created.into_iter().collect::<anyhow::Result<_>>()?;
    let mut cost = StatusWriteCost {
        objects: objects.len(),
        rounds: STATUS_ROUNDS,
        ..StatusWriteCost::default()
    };
    let mut samples: [(Vec<f64>, usize, usize, f64); 2] = Default::default();
    // Round 0 warms the merge patch path up (the creation warmed PUT up) and is not counted.
    for round in 0..=STATUS_ROUNDS * 2 {
        let put = round % 2 == 1;
        let cpu_before = cpu_of(cp_pids);
        let completed = u32::try_from(round % 5 + 1).unwrap_or(1);
        let (next, outcomes) = status_round(&api, objects, completed, put, args.concurrency).await;
        objects = next;
        if round == 0 {
            continue;
        }
        let sample = &mut samples[usize::from(!put)];
        sample.3 += cpu_of(cp_pids) - cpu_before;
        for outcome in outcomes {
            match outcome {
                Ok((latency, bytes)) => {
                    sample.0.push(ms(latency));
                    sample.1 += bytes;
                }
                Err(e) => {
                    sample.2 += 1;
                    eprintln!("status write failed: {e}");
                }
            }
        }
    }
    let [put, patch] = samples;
    let mode = |(latencies, bytes, failed, cpu): (Vec<f64>, usize, usize, f64)| {
        let writes = latencies.len();
        StatusWriteMode {
            writes,
            failed,
            body_bytes: bytes / writes.max(1),
            latency_ms: percentiles(latencies),
            apiserver_cpu_seconds: cpu,
            cpu_ms_per_write: cpu_ms_per_write(cpu, writes as u64),
        }
    };
    cost.put = mode(put);
    cost.merge_patch = mode(patch);
    // Gone before the operator starts: it never sees them.
    api.delete_collection(&Default::default(), &ListParams::default())
        .await?;
    Ok(cost)
}

// -------------------------------------------------------------------------------------- scale

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ScaleResult {
    workflow_executions: usize,
    pipeline_runs: usize,
    create_seconds: f64,
    seconds_to_ready: f64,
    seconds_to_reconciled: f64,
    reconciles_after_restart: f64,
    writes_after_restart: BTreeMap<String, u64>,
    operator_writes_after_restart: u64,
    rss_mib_settled: f64,
    /// The anonymous part of `rss_mib_settled` (heap, stacks); 0 in results of before it was
    /// measured.
    #[serde(default)]
    rss_anon_mib_settled: f64,
    /// The file-backed part of `rss_mib_settled` (the executable's pages).
    #[serde(default)]
    rss_file_mib_settled: f64,
    peak_rss_mib: f64,
    process_resident_memory_mib: f64,
    operator_cpu_seconds_to_settle: f64,
}

/// A terminal WorkflowExecution (finalizer already present) and its finished PipelineRun.
async fn create_scale_pair(
    client: &Client,
    config: &OperatorConfig,
    templates: &kubernaut_framework::template::TemplateSet,
    i: usize,
    run_status: &Value,
) -> anyhow::Result<()> {
    let name = format!("wfe-{i:05}");
    let mut wfe = load_wfe(SCALE_NAMESPACE, &name, &target(SCALE_NAMESPACE, i));
    wfe.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), SCALE_NAMESPACE);
    let mut created = wfes.create(&PostParams::default(), &wfe).await?;
    let rendered = render_pipeline_run(&created, config, templates)
        .map_err(|e| anyhow!("rendering the PipelineRun of {name}: {e}"))?;
    let run: DynamicObject = serde_json::from_value(rendered)?;
    let runs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        EXEC_NAMESPACE,
        &tekton::pipelinerun_resource(),
    );
    let run = match runs.create(&PostParams::default(), &run).await {
        Ok(run) => run,
        Err(kube::Error::Api(s)) if s.code == 409 => runs.get(&run.name_any()).await?,
        Err(e) => return Err(e.into()),
    };
    runs.patch_status(
        &run.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": run_status })),
    )
    .await?;
    let now = Timestamp::now();
    created.status = Some(WorkflowExecutionStatus {
        phase: Some(Phase::Completed),
        observed_generation: created.metadata.generation,
        start_time: Some(Time(now)),
        completion_time: Some(Time(now)),
        duration: Some("1s".into()),
        pipeline_run_ref: Some(PipelineRunRef {
            name: run.name_any(),
            namespace: EXEC_NAMESPACE.into(),
        }),
        pipeline_run_status: Some(PipelineRunStatusSummary {
            status: Some("True".into()),
            reason: Some("Succeeded".into()),
            message: Some("Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0".into()),
            completed_tasks: None,
            total_tasks: Some(2),
            execution_started: None,
        }),
        consecutive_failures: Some(0),
        template_revision: Some(templates.revision().to_string()),
        ..WorkflowExecutionStatus::default()
    });
    wfes.replace_status(&name, &PostParams::default(), &created)
        .await?;
    Ok(())
}

async fn count_present(client: &Client) -> anyhow::Result<(usize, usize)> {
    let wfes: Api<WorkflowExecution> = Api::all(client.clone());
    let runs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        EXEC_NAMESPACE,
        &tekton::pipelinerun_resource(),
    );
    let params = ListParams::default();
    let w = wfes.list_metadata(&params).await?.items.len();
    let r = runs
        .list_metadata(&ListParams::default().labels(pipelinerun::LABEL_WORKFLOW_EXECUTION))
        .await?
        .items
        .len();
    Ok((w, r))
}

/// What the scale phase stops while it writes its finished history, and starts again before the
/// restart it measures.
struct ScaleWorld<'a> {
    /// Starts the operator.
    spawn: &'a dyn Fn() -> anyhow::Result<OperatorProcess>,
    /// The running Tekton simulator, if any.
    simulator: &'a mut Option<Simulator>,
    /// Starts the Tekton simulator.
    start_simulator: &'a dyn Fn() -> Simulator,
}

async fn scale_phase(
    client: &Client,
    operator: &mut OperatorProcess,
    world: ScaleWorld<'_>,
    tracker: &Shared,
    args: &Args,
) -> anyhow::Result<ScaleResult> {
    let (templates, config) = shipped_templates(EXEC_NAMESPACE)?;
    let run_status = lock(tracker)
        .finished_status
        .clone()
        .ok_or_else(|| anyhow!("no finished PipelineRun was seen in the load phases"))?;

    // Stop the operator while the objects are created: the restart is what is measured. Tekton
    // (the simulator) is down too: watching, it would start each run in the moment between its
    // creation and its finished status (creating TaskRuns, writing `Running` over the history),
    // and its writes would fall into the restart's window.
    operator.stop();
    *world.simulator = None;
    let (wfes_present, runs_present) = count_present(client).await?;
    let missing = args.scale.saturating_sub(wfes_present.min(runs_present));
    println!(
        "scale: {wfes_present} WFEs and {runs_present} PipelineRuns present; creating {missing} pairs …"
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.scale_deadline_s);
    let failures: Vec<anyhow::Error> = stream::iter(0..missing)
        .map(|i| {
            let (client, config, templates, run_status) =
                (client, &config, &templates, &run_status);
            async move {
                if Instant::now() > deadline {
                    return Err(anyhow!("deadline passed"));
                }
                create_scale_pair(client, config, templates, i, run_status).await
            }
        })
        .buffer_unordered(args.concurrency)
        .filter_map(|r| std::future::ready(r.err()))
        .collect()
        .await;
    if let Some(e) = failures.first() {
        eprintln!("scale: {} pairs failed, e.g. {e:#}", failures.len());
    }
    let create_seconds = started.elapsed().as_secs_f64();
    let (wfes_present, runs_present) = count_present(client).await?;

    *world.simulator = Some((world.start_simulator)());
    let requests_before = apiserver_requests(client).await?;
    let mut restarted = (world.spawn)()?;
    let seconds_to_ready = restarted.wait_ready().await?.as_secs_f64();
    // Settled: the reconcile counter stopped moving for 3 s (bounded by 120 s).
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let mut last = -1.0;
    let mut last_change = Instant::now();
    let mut reconciled_at = Instant::now();
    while Instant::now() < settle_deadline {
        let reconciles = restarted
            .metric("framework_reconciles_total")
            .await
            .unwrap_or(0.0);
        if reconciles > last {
            last = reconciles;
            last_change = Instant::now();
            reconciled_at = last_change;
        } else if last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests_after = apiserver_requests(client).await?;
    let sample = restarted.sample()?;
    let resident = restarted
        .metric("process_resident_memory_bytes")
        .await
        .unwrap_or(0.0);
    let writes = write_delta(&requests_before, &requests_after);
    let operator_writes = writes
        .iter()
        .filter(|(k, _)| is_operator_write(k))
        .map(|(_, v)| v)
        .sum();
    let result = ScaleResult {
        workflow_executions: wfes_present,
        pipeline_runs: runs_present,
        create_seconds,
        seconds_to_ready,
        seconds_to_reconciled: reconciled_at
            .duration_since(restarted.started())
            .as_secs_f64(),
        reconciles_after_restart: last.max(0.0),
        writes_after_restart: writes,
        operator_writes_after_restart: operator_writes,
        rss_mib_settled: sample.rss_kib as f64 / 1024.0,
        rss_anon_mib_settled: sample.rss_anon_kib as f64 / 1024.0,
        rss_file_mib_settled: sample.rss_file_kib as f64 / 1024.0,
        peak_rss_mib: sample.hwm_kib as f64 / 1024.0,
        process_resident_memory_mib: resident / 1024.0 / 1024.0,
        operator_cpu_seconds_to_settle: sample.cpu_seconds,
    };
    *operator = restarted;
    Ok(result)
}

// -------------------------------------------------------------------------------------- micro

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct MicroResult {
    id: String,
    mean_ns: f64,
    lower_ns: f64,
    upper_ns: f64,
}

/// The criterion benchmarks `make bench` runs, by id (`group/function`).
const MICRO: [&str; 10] = [
    "lock_name",
    "render_pipelinerun",
    "render_stages/context",
    "render_stages/engine",
    "render_stages/engine_and_checks",
    "render_stages/identity",
    "map_and_classify_failed_run",
    "cooldown_decision_10k/target_index",
    "cooldown_decision_10k/full_scan",
    "target_index_apply_event",
];

fn micro(criterion: &Path) -> Vec<MicroResult> {
    MICRO
        .iter()
        .filter_map(|id| {
            let path = criterion.join(id).join("new/estimates.json");
            let text = std::fs::read_to_string(&path).ok()?;
            let v: Value = serde_json::from_str(&text).ok()?;
            Some(MicroResult {
                id: (*id).to_string(),
                mean_ns: v["mean"]["point_estimate"].as_f64()?,
                lower_ns: v["mean"]["confidence_interval"]["lower_bound"].as_f64()?,
                upper_ns: v["mean"]["confidence_interval"]["upper_bound"].as_f64()?,
            })
        })
        .collect()
}

// ------------------------------------------------------------------------------------- report

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Target {
    name: String,
    target: String,
    measured: String,
    met: Option<bool>,
    note: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Report {
    date: String,
    machine: Machine,
    versions: Versions,
    settings: Value,
    ceiling: CeilingResult,
    /// PUT against merge patch for status writes, when run.
    #[serde(default)]
    status_writes: Option<StatusWriteCost>,
    /// The benchmark's world without an operator (absent from reports made before it was
    /// measured).
    #[serde(default)]
    without_operator: Option<WithoutOperator>,
    rate: LoadResult,
    burst: LoadResult,
    /// The fixed-rate phase below saturation, when run.
    low_rate: Option<LoadResult>,
    /// burst throughput ÷ (ceiling ÷ operator writes per WFE).
    fraction_of_ceiling_operator_writes: f64,
    /// burst throughput ÷ (ceiling ÷ every write per WFE, the benchmark's and simulator's too).
    fraction_of_ceiling_all_writes: f64,
    scale: Option<ScaleResult>,
    micro: Vec<MicroResult>,
    targets: Vec<Target>,
    total_seconds: f64,
    /// The operator's RSS right after it became ready with empty caches (MiB).
    operator_rss_mib_at_start: f64,
}

fn micro_ns(report: &Report, id: &str) -> Option<f64> {
    report.micro.iter().find(|m| m.id == id).map(|m| m.mean_ns)
}

fn evaluate(report: &Report) -> Vec<Target> {
    let mut targets = Vec::new();
    let mut push = |name: &str, target: &str, measured: String, met: Option<bool>, note: &str| {
        targets.push(Target {
            name: name.into(),
            target: target.into(),
            measured,
            met,
            note: note.into(),
        });
    };
    let f_op = report.fraction_of_ceiling_operator_writes;
    let f_all = report.fraction_of_ceiling_all_writes;
    push(
        "throughput vs API-server ceiling",
        "≥ 90 % of ceiling ÷ writes per WFE",
        format!(
            "{:.0} % (operator writes only); {:.0} % (every write of the run)",
            f_op * 100.0,
            f_all * 100.0
        ),
        Some(f_op >= 0.9),
        "judged on the operator's writes; the second figure counts the benchmark's creates and the simulator's TaskRun/status writes, which share the same API server",
    );
    let fraction = report.burst.throughput / report.ceiling.creates_per_second.max(1e-9);
    push(
        "throughput ÷ create ceiling",
        "≥ 3.8 % (WFE/s as fast as possible ÷ bare creates/s)",
        format!(
            "{:.1} % ({:.1} WFE/s ÷ {:.0} creates/s){}",
            fraction * 100.0,
            report.burst.throughput,
            report.ceiling.creates_per_second,
            report
                .without_operator
                .as_ref()
                .map_or(String::new(), |w| format!(
                    "; without an operator {:.1} % ({:.1} runs/s), so the operator reaches {:.0} % of what this bench allows",
                    w.fraction_of_ceiling * 100.0,
                    w.throughput,
                    fraction / w.fraction_of_ceiling.max(1e-9) * 100.0
                ))
        ),
        Some(fraction >= 0.038 && report.burst.throughput > 0.0),
        "the phase without an operator creates each WFE and its PipelineRun directly, with the same watches and the same simulated Tekton: what the API server allows when the operator costs it nothing, a bound no operator passes",
    );
    let p95 = report.rate.created_to_running_ms.p95;
    push(
        "Running latency at 50 WFE/s",
        "p95 < 100 ms",
        format!(
            "p95 {p95:.1} ms (p50 {:.1}, p99 {:.1}) at {}/s{}",
            report.rate.created_to_running_ms.p50,
            report.rate.created_to_running_ms.p99,
            report.rate.rate_requested.unwrap_or(0.0),
            report
                .low_rate
                .as_ref()
                .map_or(String::new(), |low| format!(
                    "; p95 {:.1} ms at {}/s",
                    low.created_to_running_ms.p95,
                    low.rate_requested.unwrap_or(0.0)
                ))
        ),
        Some(p95 < 100.0 && report.rate.created_to_running_ms.count > 0),
        "created (the benchmark's watch sees the WFE) → Running (its watch sees phase Running)",
    );
    let p99 = report.rate.succeeded_to_completed_ms.p99;
    push(
        "status sync",
        "p99 < 200 ms",
        format!(
            "p99 {p99:.1} ms at {}/s{}; {:.1} ms as fast as possible",
            report.rate.rate_requested.unwrap_or(0.0),
            report
                .low_rate
                .as_ref()
                .map_or(String::new(), |low| format!(
                    "; {:.1} ms at {}/s",
                    low.succeeded_to_completed_ms.p99,
                    low.rate_requested.unwrap_or(0.0)
                )),
            report.burst.succeeded_to_completed_ms.p99
        ),
        Some(p99 < 200.0 && report.rate.succeeded_to_completed_ms.count > 0),
        "PipelineRun Succeeded seen → WFE Completed seen, both on the benchmark's watches",
    );
    if let Some(low) = &report.low_rate {
        let (running, sync) = (
            low.created_to_running_ms.p95,
            low.succeeded_to_completed_ms.p99,
        );
        push(
            "below saturation",
            "Running p95 ≤ 250 ms, status sync p99 ≤ 100 ms",
            format!(
                "Running p95 {running:.1} ms, status sync p99 {sync:.1} ms at {}/s",
                low.rate_requested.unwrap_or(0.0)
            ),
            Some(
                running <= 250.0
                    && sync <= 100.0
                    && low.created_to_running_ms.count > 0
                    && low.succeeded_to_completed_ms.count > 0,
            ),
            "at the lower of 20 WFE/s and half the as-fast-as-possible throughput, so the API server is not saturated",
        );
    }
    let b = &report.burst;
    push(
        "status sync in a burst",
        "p99 ≤ 2 s, no completion > 10 s after Succeeded",
        format!(
            "p99 {:.1} ms, max {:.1} ms; {} seen > 1 s and {} > 10 s after Succeeded ({} WFEs as fast as possible)",
            b.succeeded_to_completed_ms.p99,
            b.succeeded_to_completed_ms.max,
            count(b.completed_over_1s),
            count(b.completed_over_10s),
            b.n
        ),
        b.completed_over_10s.map(|over_10s| {
            b.succeeded_to_completed_ms.p99 <= 2_000.0
                && over_10s == 0
                && b.succeeded_to_completed_ms.count > 0
        }),
        "PipelineRun Succeeded seen → WFE Completed seen in the as-fast-as-possible phase",
    );
    let w = report
        .rate
        .writes_to_running_max
        .max(report.burst.writes_to_running_max);
    push(
        "writes up to Running",
        "≤ 3 per WFE (finalizer, PipelineRun, Running: no separate Pending)",
        format!(
            "mean {:.2}, max {w} (fixed rate); mean {:.2} (as fast as possible)",
            report.rate.writes_to_running_mean, report.burst.writes_to_running_mean
        ),
        Some(w <= 3),
        "WFE resourceVersions seen before Running (minus the create) + the PipelineRun create",
    );
    // Progress writes: the WFE's versions in phase Running beyond the Running write itself.
    let progress = |phase: &LoadResult| {
        phase
            .wfe_writes_running_mean
            .map_or(0.0, |running| (running - 1.0).max(0.0))
    };
    let happy = |phase: &LoadResult| phase.operator_writes_per_wfe - progress(phase);
    let run_p50_s = |phase: &LoadResult| {
        phase
            .run_seen_to_finished_ms
            .as_ref()
            .map_or(0.0, |p| p.p50 / 1e3)
    };
    let mut phases: Vec<(&str, &LoadResult)> = Vec::new();
    if let Some(low) = &report.low_rate {
        phases.push(("below saturation", low));
    }
    phases.push(("at the fixed rate", &report.rate));
    phases.push(("as fast as possible", &report.burst));
    push(
        "writes per WFE",
        "≤ 6 on the happy path, Events included (a run that ends within `status.progressInterval`)",
        phases
            .iter()
            .map(|(name, phase)| {
                format!(
                    "{:.2} {name} ({:.2} progress writes, runs took p50 {:.1} s: {:.2} without them)",
                    phase.operator_writes_per_wfe,
                    progress(phase),
                    run_p50_s(phase),
                    happy(phase)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Some(
            phases
                .iter()
                .all(|(_, phase)| phase.completed > 0 && happy(phase) <= 6.005),
        ),
        "operator writes counted by the API server ÷ WFEs; progress writes are the WFE's versions in phase Running after the Running write (at most one per progress interval, as designed, once the saturated API server stretches a run beyond it)",
    );
    let idle = report.rate.idle_writes
        + report.burst.idle_writes
        + report
            .scale
            .as_ref()
            .map_or(0, |s| s.operator_writes_after_restart);
    push(
        "no write when nothing changed",
        "0 writes",
        format!(
            "{} after the load phases (5 s idle windows){}",
            report.rate.idle_writes + report.burst.idle_writes,
            report.scale.as_ref().map_or(String::new(), |s| format!(
                "; {} while restarting over {} WFEs",
                s.operator_writes_after_restart, s.workflow_executions
            ))
        ),
        Some(idle == 0),
        "operator writes counted by the API server",
    );
    if let Some(scale) = &report.scale {
        push(
            "memory at scale",
            "RSS < 40 MiB with 10 000 + 10 000 objects",
            format!(
                "{:.1} MiB settled (peak {:.1} MiB) with {} WFEs + {} PipelineRuns",
                scale.rss_mib_settled,
                scale.peak_rss_mib,
                scale.workflow_executions,
                scale.pipeline_runs
            ),
            Some(scale.rss_mib_settled < 40.0),
            "VmRSS after the restart settled",
        );
    }
    if let Some(ns) = micro_ns(report, "render_pipelinerun") {
        push(
            "render",
            "< 50 µs",
            format!("{:.1} µs", ns / 1e3),
            Some(ns < 50_000.0),
            "criterion mean",
        );
    }
    if let Some(ns) = micro_ns(report, "cooldown_decision_10k/target_index") {
        push(
            "cooldown decision with 10 000 WFEs",
            "< 10 µs",
            format!("{:.2} µs", ns / 1e3),
            Some(ns < 10_000.0),
            "criterion mean, through the target index",
        );
    }
    targets
}

/// API server + etcd CPU milliseconds per write counted in a phase (reads and watch fan-out
/// included: they are what the writes cost beyond the write itself).
fn cpu_ms_per_write(cpu_seconds: f64, writes: u64) -> f64 {
    if writes == 0 {
        0.0
    } else {
        cpu_seconds * 1000.0 / writes as f64
    }
}

/// The head of a table with one column per load phase, after a first column titled `first`.
fn phase_table_header(first: &str, phases: &[(String, &LoadResult)]) -> String {
    let names = phases.iter().map(|(name, _)| name.as_str());
    table_head(&std::iter::once(first).chain(names).collect::<Vec<_>>())
}

/// The operator's writes per WFE of each phase, by request (verb, resource, subresource; and
/// the code when not 2xx): the happy path's write budget, request by request.
fn writes_per_wfe(phases: &[(String, &LoadResult)]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\nOperator writes per WFE, by request:\n");
    md.push_str(&phase_table_header("request", phases));
    keyed_rows(
        &mut md,
        phases,
        |p| &p.writes,
        is_operator_write,
        |count, p| format!(" {:.2} |", per_wfe(count.copied().unwrap_or(0), p.n)),
    );
    let totals: String = phases
        .iter()
        .map(|(_, p)| format!(" **{:.2}** |", p.operator_writes_per_wfe))
        .collect();
    let _ = writeln!(md, "| all |{totals}");
    md
}

/// One table row per key of `map` in any phase (those `keep` passes, sorted), a `cell` per
/// phase (`None` where the phase has no such key).
fn keyed_rows<T>(
    md: &mut String,
    phases: &[(String, &LoadResult)],
    map: impl Fn(&LoadResult) -> &BTreeMap<String, T>,
    keep: impl Fn(&str) -> bool,
    cell: impl Fn(Option<&T>, &LoadResult) -> String,
) {
    let mut names: Vec<&String> = phases
        .iter()
        .flat_map(|(_, p)| map(p).keys())
        .filter(|name| keep(name))
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let cells: String = phases
            .iter()
            .map(|(_, p)| cell(map(p).get(name), p))
            .collect();
        let _ = writeln!(md, "| `{name}` |{cells}");
    }
}

/// How long the API server took to handle each kind of write, and the operator's reconcile steps,
/// per phase (mean / interpolated p95): where a WFE's latency goes.
fn durations(phases: &[(String, &LoadResult)]) -> String {
    let mut md = String::new();
    if phases.iter().all(|(_, p)| p.write_durations.is_empty()) {
        return md;
    }
    let _ = writeln!(
        md,
        "\nHow long each step took, mean / p95 in ms: the API server's handling of each kind of \
         write (`apiserver_request_duration_seconds`, p95 interpolated in its buckets) and the \
         operator's reconciles (waiting for a slot, running, waiting for their own write's watch \
         event):\n"
    );
    md.push_str(&phase_table_header("step", phases));
    let cell = |latency: Option<&Latency>| {
        latency.map_or(" – |".to_string(), |l| {
            format!(" {:.1} / {:.1} |", l.mean_ms, l.p95_ms)
        })
    };
    keyed_rows(
        &mut md,
        phases,
        |p| &p.write_durations,
        |_| true,
        |latency, _| cell(latency),
    );
    for step in ["queue", "reconcile", "own write"] {
        let cells: String = phases
            .iter()
            .map(|(_, p)| cell(p.operator_steps.get(step)))
            .collect();
        let _ = writeln!(md, "| operator: {step} |{cells}");
    }
    md
}

/// Where the time goes, computed from this run's figures.
fn analysis(r: &Report) -> String {
    let mut md = String::new();
    let c = &r.ceiling;
    let b = &r.burst;
    let burst_writes: u64 = b.writes.values().sum();
    let _ = writeln!(md, "\n## What limits us\n");
    let _ = writeln!(
        md,
        "- **The API server, not the operator.** As fast as possible, etcd + kube-apiserver kept \
         {:.2} of the machine's {} cores busy on average while the operator used {:.2} \
         ({:.2} CPU s per 1 000 WFEs). The ceiling run cost the API server {:.2} ms of CPU per \
         PipelineRun create; the load cost {:.2} ms per write, because every write of the load \
         is also delivered to two or three watches (operator, simulator, benchmark), WFE status \
         updates run the CRD's validation, and the simulator and benchmark read too.",
        b.apiserver_etcd_cores,
        r.machine.nproc,
        b.operator_cores,
        b.operator_cpu_seconds_per_1000,
        cpu_ms_per_write(c.apiserver_cpu_seconds, c.created as u64),
        cpu_ms_per_write(b.apiserver_etcd_cpu_seconds, burst_writes),
    );
    let _ = writeln!(
        md,
        "- **Writes per WFE.** The operator writes {:.2} times per WFE: finalizer, PipelineRun, \
         Running (the 3 up to Running: a WFE that can start at once gets no separate `Pending` \
         write), Completed, and two Events. The run's progress, the first step seen running \
         (`pipelineRunStatus.executionStarted`) included, is written at most once per \
         `status.progressInterval` (5 s), so a run that finishes within it costs no progress \
         write: the operator holds it in memory and the Completed write carries it. The simulated Tekton adds its run status, label and TaskRun writes and the \
         benchmark 1: \
         {:.2} writes per WFE in all, so the ceiling allows at most {:.1} WFE/s and the run \
         reached {:.1} ({:.0} %).",
        b.operator_writes_per_wfe,
        b.all_writes_per_wfe,
        if b.all_writes_per_wfe > 0.0 {
            c.creates_per_second / b.all_writes_per_wfe
        } else {
            0.0
        },
        b.throughput,
        r.fraction_of_ceiling_all_writes * 100.0,
    );
    if let Some(w) = &r.without_operator {
        let with = b.apiserver_etcd_cpu_seconds * 1e3 / b.n.max(1) as f64;
        let _ = writeln!(
            md,
            "- **What no operator can pass.** Without an operator — the benchmark creating each \
             WFE and its PipelineRun itself, {} at once as in the burst, the simulated Tekton \
             running them and the benchmark's watches as in the load phases — {} items took \
             {:.1} s: **{:.1} runs/s, {:.1} % of the ceiling**, at {:.2} writes and {:.1} ms of \
             API-server CPU per item. With the operator a WFE cost {:.1} ms ({:.1} ms more, for \
             its {:.2} writes beyond the PipelineRun create and the deliveries to its watches) \
             and the burst reached {:.1} WFE/s, {:.0} % of that bound. The bound moves with the \
             machine as the ceiling does, but it is the most any operator can reach on this \
             benchmark: a target above it asks for a cheaper simulated Tekton or API server.",
            r.ceiling.concurrency,
            w.finished,
            w.seconds,
            w.throughput,
            w.fraction_of_ceiling * 100.0,
            w.writes_per_item,
            w.apiserver_etcd_cpu_ms_per_item,
            with,
            with - w.apiserver_etcd_cpu_ms_per_item,
            b.operator_writes_per_wfe - 1.0,
            b.throughput,
            b.throughput / w.throughput.max(1e-9) * 100.0,
        );
    }
    if let (Some(over_1s), Some(over_10s)) = (b.completed_over_1s, b.completed_over_10s) {
        let _ = writeln!(
            md,
            "- **No stand-aside tail in a burst.** A run's `Succeeded` event often reaches the \
             operator while it is still writing that WFE, so the next reconcile starts on a \
             cached WFE older than the operator's own last write. The runtime holds such a \
             reconcile in its slot until the write's watch event updated the cache and then \
             reconciles the newer copy: as fast as possible that happened {} times ({} waits \
             timed out). Left to the write's own event instead, the reconcile would queue \
             behind every other WFE of the burst. Succeeded → Completed as fast as possible: \
             p99 {:.0} ms, max {:.0} ms; {over_1s} completions seen more than 1 s and \
             {over_10s} more than 10 s after their run succeeded.",
            count(b.own_write_waits_caught_up),
            count(b.own_write_waits_timed_out),
            b.succeeded_to_completed_ms.p99,
            b.succeeded_to_completed_ms.max,
        );
    }
    let low = r.low_rate.as_ref();
    let _ = writeln!(
        md,
        "- **Latency is queueing at the API server.** At {} WFE/s the offered writes ({:.0}/s) \
         exceed what the API server completes on this machine, so requests queue and created → \
         Running grows with the backlog (p95 {:.0} ms). Below saturation{} the same operator \
         reaches Running in p95 {:.1} ms and syncs a finished run in p99 {:.1} ms (processes \
         outside the run kept {:.2} cores busy meanwhile; on a shared machine this moves the \
         figure from run to run).",
        r.rate.rate_requested.unwrap_or(0.0),
        r.rate.rate_requested.unwrap_or(0.0) * r.rate.all_writes_per_wfe,
        r.rate.created_to_running_ms.p95,
        low.map_or(String::new(), |l| format!(
            ", at {} WFE/s,",
            l.rate_requested.unwrap_or(0.0)
        )),
        low.map_or(0.0, |l| l.created_to_running_ms.p95),
        low.map_or(0.0, |l| l.succeeded_to_completed_ms.p99),
        low.map_or(0.0, |l| l.other_cores),
    );
    if let Some(s) = &r.scale {
        let _ = writeln!(
            md,
            "- **Memory is the executable, the two caches and the allocator.** Both caches keep \
             every object frozen, its text compressed (LZ4) against a dictionary of earlier \
             objects of its kind, so what every object of a kind repeats is kept once, in stores \
             of the runtime's own where each object is its own key: a WFE as one compressed \
             compact JSON text beside its name and namespace (about 0.25 KiB of heap with its \
             entry, against 3.8 KiB typed), a PipelineRun projected on what the status mapping \
             reads (identity, ownership labels, the `Succeeded` condition, times, TaskRun names, \
             the task count), labels and all compressed (about 0.3 KiB), thawed when read \
             (`cargo test -p workflowexecution-operator --test footprint -- --nocapture` prints \
             the breakdown). The controller loop is the runtime's own too: its queue, requeue \
             timers and running set name a WFE by the cached name and namespace, where kube's \
             controller and store kept an `ObjectRef` and a whole `ObjectMeta` per WFE (about \
             1 KiB, 11 MiB at 10 000). Lists come in pages of 50: a page is decoded whole before \
             it is trimmed, and kube's 500 left 40 MiB more behind. It starts at {:.1} MiB; with \
             {} WFEs and {} PipelineRuns it settles at {:.1} MiB, {:.1} MiB of it the \
             executable's pages (`RssFile`; fat LTO made it 3 MB smaller, `opt-level = \"s\"` \
             would save about 4 MiB more for a fifth more CPU), the rest the caches, each WFE's \
             requeue timer while its cooldown runs, the parent index and glibc's arenas.",
            r.operator_rss_mib_at_start,
            s.workflow_executions,
            s.pipeline_runs,
            s.rss_mib_settled,
            s.rss_file_mib_settled,
        );
    }
    md
}

/// The rate of the phase below saturation: `cap` (`--low-rate`), or half of what the operator
/// completed as fast as possible (`saturated`, WFE/s) when that is lower, rounded down to a
/// half: on a machine where the API server completes fewer than twice `cap` WFEs a second,
/// `cap` itself would queue at the API server, and the phase would measure the queue.
fn below_saturation(cap: f64, saturated: f64) -> f64 {
    let half = (saturated / 2.0 * 2.0).floor() / 2.0;
    if half >= 0.5 { cap.min(half) } else { cap }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

/// The sections of the page this benchmark does not measure, by heading: kept as they are when
/// the page is rewritten (the real-Tekton figures come from `make bench-tekton`, the image's from
/// `make image`).
const KEPT_SECTIONS: [&str; 2] = ["## Real Tekton", "## Image"];

fn markdown(report: &Report, baseline: Option<&Value>) -> String {
    let mut md = String::new();
    let r = report;
    let _ = writeln!(md, "# Performance\n");
    let _ = writeln!(
        md,
        "Generated by `make bench` ({:.0} s) on {} — do not edit by hand; the numbers are also in \
         [`performance.json`](performance.json).\n",
        r.total_seconds, r.date
    );
    let _ = writeln!(md, "## Machine and versions\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(
        md,
        "| CPU | {} × {} |",
        r.machine.nproc, r.machine.cpu_model
    );
    let _ = writeln!(md, "| memory | {} MiB |", r.machine.memory_mib);
    let _ = writeln!(md, "| kernel | {} |", r.machine.kernel);
    let _ = writeln!(
        md,
        "| operator | {} (commit {}) |",
        r.versions.operator, r.versions.commit
    );
    let _ = writeln!(md, "| rustc | {} |", r.versions.rustc);
    let _ = writeln!(md, "| kube-apiserver | {} |", r.versions.kube_apiserver);
    let _ = writeln!(md, "| etcd | {} |", r.versions.etcd);
    let _ = writeln!(
        md,
        "\nEverything runs on this machine at once: etcd, kube-apiserver, the operator (release \
         build, its own process, leader election off, concurrency 8), the Tekton simulator \
         (completes each run {} ms after it starts) and this benchmark's clients and watches.\n",
        r.settings["run_time_ms"]
    );

    let _ = writeln!(md, "## Targets\n");
    md.push_str(&table_head(&["target", "goal", "measured", "met"]));
    for t in &r.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", t.name, t.target, t.measured);
    }
    let _ = writeln!(md);
    for t in &r.targets {
        let _ = writeln!(md, "- *{}*: {}.", t.name, t.note);
    }

    let _ = writeln!(md, "\n## Ceiling: a bare client creating PipelineRuns\n");
    let c = &r.ceiling;
    let _ = writeln!(
        md,
        "| PipelineRuns | payload | concurrency | seconds | creates/s | latency p50 / p95 / p99 (ms) | API server + etcd CPU s |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    let _ = writeln!(
        md,
        "| {} ({} failed) | {} B | {} | {:.2} | **{:.0}** | {} | {:.1} |",
        c.created,
        c.failed,
        c.payload_bytes,
        c.concurrency,
        c.seconds,
        c.creates_per_second,
        fmt_p(&c.latency_ms),
        c.apiserver_cpu_seconds
    );
    if let Some(cost) = &r.status_writes {
        let _ = writeln!(
            md,
            "\n## Status writes: whole-object PUT against a merge patch of what changed\n\n\
             {} running WorkflowExecutions get a new `pipelineRunStatus` {} times each way, \
             alternating, {} in flight; the merge patch carries the resourceVersion read, so a \
             concurrent change is a `409 Conflict` either way.\n",
            cost.objects, cost.rounds, r.ceiling.concurrency
        );
        md.push_str(&table_head(&[
            "request",
            "writes (failed)",
            "body",
            "latency p50 / p95 / p99 (ms)",
            "API server + etcd CPU s",
            "CPU ms per write",
        ]));
        for (name, m) in [
            ("`PUT workflowexecutions/status`", &cost.put),
            (
                "`PATCH workflowexecutions/status` (merge)",
                &cost.merge_patch,
            ),
        ] {
            let _ = writeln!(
                md,
                "| {name} | {} ({}) | {} B | {} | {:.2} | **{:.3}** |",
                m.writes,
                m.failed,
                m.body_bytes,
                fmt_p(&m.latency_ms),
                m.apiserver_cpu_seconds,
                m.cpu_ms_per_write
            );
        }
    }

    let _ = writeln!(
        md,
        "\n## Load: {} WorkflowExecutions on distinct targets\n",
        r.rate.n
    );
    let (a, b) = (&r.rate, &r.burst);
    let mut phases: Vec<(String, &LoadResult)> = vec![
        (
            format!("{} at {}/s", a.n, a.rate_requested.unwrap_or(0.0)),
            a,
        ),
        (format!("{} as fast as possible", b.n), b),
    ];
    if let Some(low) = &r.low_rate {
        phases.push((
            format!("{} at {}/s", low.n, low.rate_requested.unwrap_or(0.0)),
            low,
        ));
    }
    md.push_str(&phase_table_header("", &phases));
    type Cell = fn(&LoadResult) -> String;
    let rows: [(&str, Cell); 21] = [
        ("creation rate achieved (WFE/s)", |p| {
            format!("{:.1}", p.rate_achieved)
        }),
        ("outcome", |p| {
            format!(
                "{} Completed, {} Failed, {} Skipped, {} incomplete",
                p.completed, p.failed, p.skipped, p.incomplete
            )
        }),
        ("created → Running p50 / p95 / p99 (ms)", |p| {
            fmt_p(&p.created_to_running_ms)
        }),
        ("create sent → Running p50 / p95 / p99 (ms)", |p| {
            fmt_p(&p.sent_to_running_ms)
        }),
        ("Succeeded → Completed p50 / p95 / p99 (ms)", |p| {
            fmt_p(&p.succeeded_to_completed_ms)
        }),
        ("Succeeded → Completed max (ms)", |p| {
            format!("{:.1}", p.succeeded_to_completed_ms.max)
        }),
        ("Completed seen > 1 s / > 10 s after Succeeded", |p| {
            format!(
                "{} / {}",
                count(p.completed_over_1s),
                count(p.completed_over_10s)
            )
        }),
        (
            "reconciles handed a copy older than our own write: caught up / timed out",
            |p| {
                format!(
                    "{} / {}",
                    count(p.own_write_waits_caught_up),
                    count(p.own_write_waits_timed_out)
                )
            },
        ),
        ("throughput to Running (WFE/s)", |p| {
            format!("{:.1}", p.running_throughput)
        }),
        ("throughput to Completed (WFE/s)", |p| {
            format!("{:.1}", p.throughput)
        }),
        ("writes up to Running, mean / max", |p| {
            format!(
                "{:.2} / {}",
                p.writes_to_running_mean, p.writes_to_running_max
            )
        }),
        ("operator writes per WFE (all, incl. Events)", |p| {
            format!("{:.2}", p.operator_writes_per_wfe)
        }),
        ("every write per WFE (+ benchmark, simulator)", |p| {
            format!("{:.2}", p.all_writes_per_wfe)
        }),
        ("operator CPU s per 1 000 WFEs", |p| {
            format!("{:.2}", p.operator_cpu_seconds_per_1000)
        }),
        ("API server + etcd CPU s", |p| {
            format!("{:.1}", p.apiserver_etcd_cpu_seconds)
        }),
        ("API server + etcd cores busy (of the machine's)", |p| {
            format!("{:.2}", p.apiserver_etcd_cores)
        }),
        ("operator cores busy", |p| {
            format!("{:.2}", p.operator_cores)
        }),
        ("benchmark + simulator cores busy", |p| {
            format!(
                "{:.2}",
                (p.machine_cores - p.apiserver_etcd_cores - p.operator_cores - p.other_cores)
                    .max(0.0)
            )
        }),
        ("other processes' cores busy (not part of the run)", |p| {
            format!("{:.2}", p.other_cores)
        }),
        ("operator peak RSS (MiB)", |p| {
            format!("{:.1}", p.operator_peak_rss_mib)
        }),
        ("operator writes in a 5 s idle window after", |p| {
            format!("{}", p.idle_writes)
        }),
    ];
    for (name, cell) in rows {
        let _ = writeln!(
            md,
            "| {name} |{}",
            phases
                .iter()
                .map(|(_, p)| format!(" {} |", cell(p)))
                .collect::<String>()
        );
    }
    let _ = writeln!(
        md,
        "\nThroughput as a fraction of the ceiling: as fast as possible, {:.1} WFE/s ÷ ({:.0} creates/s ÷ {:.2} operator writes per WFE) = **{:.0} %**; counting every write of the run ({:.2} per WFE): **{:.0} %**.",
        b.throughput,
        c.creates_per_second,
        b.operator_writes_per_wfe,
        r.fraction_of_ceiling_operator_writes * 100.0,
        b.all_writes_per_wfe,
        r.fraction_of_ceiling_all_writes * 100.0
    );
    let _ = writeln!(
        md,
        "\nWrites counted by the API server (`apiserver_request_total`), per phase:\n"
    );
    md.push_str(&table_head(&[
        "request",
        "fixed rate",
        "as fast as possible",
        "by",
    ]));
    let mut names: Vec<&String> = a.writes.keys().chain(b.writes.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let by = if is_operator_write(name) {
            "operator"
        } else if name.starts_with("POST workflowexecutions") {
            "benchmark"
        } else if name.contains("leases") {
            "kube-apiserver (its own lease)"
        } else {
            "simulator"
        };
        let _ = writeln!(
            md,
            "| `{name}` | {} | {} | {by} |",
            a.writes.get(name).copied().unwrap_or(0),
            b.writes.get(name).copied().unwrap_or(0)
        );
    }

    md.push_str(&writes_per_wfe(&phases));
    md.push_str(&durations(&phases));
    md.push_str(&analysis(r));

    let _ = writeln!(
        md,
        "\n## Scale: restart over 10 000 WorkflowExecutions + 10 000 PipelineRuns\n"
    );
    match &r.scale {
        Some(s) => {
            let _ = writeln!(md, "| | |\n|---|---|");
            let _ = writeln!(
                md,
                "| objects present | {} WFEs, {} PipelineRuns |",
                s.workflow_executions, s.pipeline_runs
            );
            let _ = writeln!(
                md,
                "| creating them (benchmark, {} in flight) | {:.1} s |",
                r.settings["concurrency"], s.create_seconds
            );
            let _ = writeln!(
                md,
                "| restart → `/readyz` 200 | **{:.2} s** |",
                s.seconds_to_ready
            );
            let _ = writeln!(
                md,
                "| restart → every WFE reconciled once | {:.2} s ({:.0} reconciles) |",
                s.seconds_to_reconciled, s.reconciles_after_restart
            );
            let _ = writeln!(
                md,
                "| operator writes during restart | {} |",
                s.operator_writes_after_restart
            );
            let _ = writeln!(
                md,
                "| RSS settled (VmRSS) | **{:.1} MiB** |",
                s.rss_mib_settled
            );
            if s.rss_anon_mib_settled + s.rss_file_mib_settled > 0.0 {
                let _ = writeln!(
                    md,
                    "| of which anonymous (heap, stacks: `RssAnon`) / file-backed (the executable's pages: `RssFile`) | {:.1} / {:.1} MiB |",
                    s.rss_anon_mib_settled, s.rss_file_mib_settled
                );
            }
            let _ = writeln!(md, "| peak RSS (VmHWM) | {:.1} MiB |", s.peak_rss_mib);
            let _ = writeln!(
                md,
                "| `process_resident_memory_bytes` | {:.1} MiB |",
                s.process_resident_memory_mib
            );
            let _ = writeln!(
                md,
                "| operator CPU s, start → settled | {:.2} |",
                s.operator_cpu_seconds_to_settle
            );
        }
        None => {
            let _ = writeln!(md, "Not run (`--skip-scale`).");
        }
    }

    let _ = writeln!(
        md,
        "\n## Micro-benchmarks (criterion, mean and 95 % interval)\n"
    );
    md.push_str(&table_head(&["benchmark", "mean", "interval"]));
    for m in &r.micro {
        let _ = writeln!(
            md,
            "| `{}` | {} | {} – {} |",
            m.id,
            fmt_ns(m.mean_ns),
            fmt_ns(m.lower_ns),
            fmt_ns(m.upper_ns)
        );
    }
    if let (Some(scan), Some(index)) = (
        micro_ns(r, "cooldown_decision_10k/full_scan"),
        micro_ns(r, "cooldown_decision_10k/target_index"),
    ) {
        let _ = writeln!(
            md,
            "\nThe decision through the target index is {:.0}× faster than scanning all 10 000 cached WFEs (same run).",
            scan / index
        );
    }

    if let Some(baseline) = baseline {
        md.push_str(&before_after(report, baseline));
    }
    md
}

/// Before/after: each change measured by two runs around its commit (from the baseline file),
/// then the first measured state against this run.
fn before_after(report: &Report, baseline: &Value) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "\n## Bottlenecks removed (before → after)\n");
    if let Some(text) = baseline["note"].as_str() {
        let _ = writeln!(md, "{text}\n");
    }
    md.push_str(&table_head(&[
        "commit",
        "change",
        "figure",
        "before",
        "after",
        "after ÷ before",
    ]));
    for row in baseline["changes"].as_array().into_iter().flatten() {
        let text = |k: &str| row[k].as_str().unwrap_or("").to_string();
        let (before, after) = (row["before"].as_f64(), row["after"].as_f64());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            text("commit"),
            text("change"),
            text("figure"),
            two_decimals(before),
            two_decimals(after),
            ratio(after, before)
        );
    }
    let current = serde_json::to_value(report).unwrap_or(Value::Null);
    let _ = writeln!(
        md,
        "\nAll changes together: the first measured state ({}) against this run.\n",
        baseline["baseline"]["label"].as_str().unwrap_or("baseline")
    );
    md.push_str(&table_head(&[
        "figure",
        "before",
        "this run",
        "this run ÷ before",
    ]));
    for row in baseline["baseline"]["figures"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let before = row["before"].as_f64();
        let after = row["pointer"]
            .as_str()
            .and_then(|p| current.pointer(p))
            .and_then(Value::as_f64);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            row["figure"].as_str().unwrap_or(""),
            two_decimals(before),
            two_decimals(after),
            ratio(after, before)
        );
    }
    md
}

// --------------------------------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let args = parse_args()?;
    if args.render_only {
        let text = std::fs::read_to_string(args.out.join("performance.json"))
            .context("--render-only needs an existing performance.json")?;
        let report: Report = serde_json::from_str(&text)?;
        let baseline: Option<Value> =
            std::fs::read_to_string(args.out.join("performance-baseline.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
        keep_sections(
            &args.out.join("performance.md"),
            markdown(&report, baseline.as_ref()),
            &KEPT_SECTIONS,
        )?;
        println!("re-rendered {}/performance.md", args.out.display());
        return Ok(());
    }
    let begun = Instant::now();
    println!("starting a local control plane …");
    let (cp, client) = simulator_control_plane(&[
        LOW_RATE_NAMESPACE,
        EXEC_NAMESPACE,
        CEILING_NAMESPACE,
        RATE_NAMESPACE,
        BURST_NAMESPACE,
        SCALE_NAMESPACE,
        STATUS_NAMESPACE,
        BARE_NAMESPACE,
        BARE_EXEC_NAMESPACE,
    ])
    .await?;
    let cp_pids = control_plane_pids(&cp);
    let bins = kubernaut_test_harness::controlplane::binaries_dir()?;
    let versions = Versions {
        operator: command_output(&args.operator.to_string_lossy(), &["version"]),
        commit: git_commit(),
        rustc: command_output("rustc", &["--version"]),
        kube_apiserver: cp.version().to_string(),
        etcd: command_output(&bins.join("etcd").to_string_lossy(), &["--version"])
            .lines()
            .next()
            .unwrap_or("unknown")
            .to_string(),
    };
    println!(
        "control plane {} ready; ceiling: {} PipelineRuns, {} in flight …",
        cp.version(),
        args.ceiling,
        args.concurrency
    );
    if args.only_scale {
        return only_scale(&cp, &client, &cp_pids, &args).await;
    }
    let ceiling = ceiling(&client, &cp_pids, &args).await?;
    println!("ceiling: {:.0} creates/s", ceiling.creates_per_second);
    let status_writes = if args.status_writes > 0 {
        let cost = status_write_cost(&client, &cp_pids, &args).await?;
        println!(
            "status writes: PUT {:.3} ms API server CPU per write ({} B), merge patch {:.3} ms ({} B)",
            cost.put.cpu_ms_per_write,
            cost.put.body_bytes,
            cost.merge_patch.cpu_ms_per_write,
            cost.merge_patch.body_bytes
        );
        Some(cost)
    } else {
        None
    };

    println!(
        "without an operator: {} WFEs and their PipelineRuns …",
        args.n
    );
    let without_operator = without_operator(&client, &cp_pids, &args, &ceiling).await?;
    println!(
        "  {:.1} runs/s ({:.1} % of the ceiling), {:.2} writes per item",
        without_operator.throughput,
        without_operator.fraction_of_ceiling * 100.0,
        without_operator.writes_per_item
    );

    let files = OperatorFiles::new(&cp)?;
    let log_path = files.log.clone();
    let spawn = || files.spawn(&args.operator);
    let mut operator = spawn()?;
    let ready = operator.wait_ready().await?;
    println!("operator pid {} ready in {:.2?}", operator.pid(), ready);
    let rss_at_start = operator.sample()?.rss_kib as f64 / 1024.0;

    let run_time = Duration::from_millis(args.run_time_ms);
    let start_tekton = || start_simulator(&client, EXEC_NAMESPACE, run_time);
    let mut simulator = Some(start_tekton());
    let tracker: Shared = Arc::default();
    let watches = start_watches(&client, &tracker, EXEC_NAMESPACE).await?;

    let setup = LoadSetup::on_simulator(
        &client,
        &operator,
        &tracker,
        &cp_pids,
        args.concurrency,
        LOAD_DEADLINE,
    );
    println!("load: {} WFEs at {}/s …", args.n, args.rate);
    let rate = load_phase(&setup, RATE_NAMESPACE, args.n, Some(args.rate)).await;
    let rate = match rate {
        Ok(r) => r,
        Err(e) => {
            print_log_tail(&log_path);
            return Err(e);
        }
    };
    println!(
        "  created→Running p95 {:.1} ms, Succeeded→Completed p99 {:.1} ms, {:.2} writes to Running",
        rate.created_to_running_ms.p95,
        rate.succeeded_to_completed_ms.p99,
        rate.writes_to_running_mean
    );
    println!(
        "load: {} WFEs as fast as possible ({} in flight) …",
        args.n, args.concurrency
    );
    let burst = load_phase(&setup, BURST_NAMESPACE, args.n, None).await?;
    println!(
        "  {:.1} WFE/s to Completed, {:.1} to Running; {:.2} operator writes per WFE",
        burst.throughput, burst.running_throughput, burst.operator_writes_per_wfe
    );
    let low_rate = if args.low_rate > 0.0 {
        let rate = below_saturation(args.low_rate, burst.throughput);
        println!("load: {} WFEs at {rate}/s …", args.n / 2);
        let low = load_phase(&setup, LOW_RATE_NAMESPACE, (args.n / 2).max(1), Some(rate)).await?;
        println!(
            "  created→Running p95 {:.1} ms, Succeeded→Completed p99 {:.1} ms",
            low.created_to_running_ms.p95, low.succeeded_to_completed_ms.p99
        );
        Some(low)
    } else {
        None
    };

    let scale = if args.skip_scale {
        None
    } else {
        let world = ScaleWorld {
            spawn: &spawn,
            simulator: &mut simulator,
            start_simulator: &start_tekton,
        };
        let result = scale_phase(&client, &mut operator, world, &tracker, &args).await;
        match result {
            Ok(s) => {
                println!(
                    "scale: ready {:.2} s after restart, RSS {:.1} MiB settled",
                    s.seconds_to_ready, s.rss_mib_settled
                );
                Some(s)
            }
            Err(e) => {
                print_log_tail(&log_path);
                return Err(e);
            }
        }
    };
    operator.stop();
    for w in watches {
        w.abort();
    }

    let fraction = |writes_per_wfe: f64| {
        if ceiling.creates_per_second > 0.0 && writes_per_wfe > 0.0 {
            burst.throughput / (ceiling.creates_per_second / writes_per_wfe)
        } else {
            0.0
        }
    };
    let mut report = Report {
        date: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
        machine: machine(),
        versions,
        settings: serde_json::to_value(&args)?,
        fraction_of_ceiling_operator_writes: fraction(burst.operator_writes_per_wfe),
        fraction_of_ceiling_all_writes: fraction(burst.all_writes_per_wfe),
        ceiling,
        status_writes,
        without_operator: Some(without_operator),
        rate,
        burst,
        low_rate,
        scale,
        micro: micro(&args.criterion),
        targets: Vec::new(),
        total_seconds: begun.elapsed().as_secs_f64(),
        operator_rss_mib_at_start: rss_at_start,
    };
    report.targets = evaluate(&report);
    let baseline_path = args.out.join("performance-baseline.json");
    let baseline: Option<Value> = std::fs::read_to_string(&baseline_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    write_json(&args.out, "performance.json", &report)?;
    keep_sections(
        &args.out.join("performance.md"),
        markdown(&report, baseline.as_ref()),
        &KEPT_SECTIONS,
    )?;
    println!(
        "\nwrote {0}/performance.md and {0}/performance.json",
        args.out.display()
    );
    for t in &report.targets {
        println!(
            "  {:<40} {:<8} {}",
            t.name,
            match t.met {
                Some(true) => "met",
                Some(false) => "NOT MET",
                None => "n/a",
            },
            t.measured
        );
    }
    Ok(())
}

/// Where the operator processes of one benchmark run keep their config and log.
struct OperatorFiles {
    _work: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    kubeconfig: PathBuf,
}

impl OperatorFiles {
    fn new(cp: &ControlPlane) -> anyhow::Result<Self> {
        let work = tempfile::Builder::new()
            .prefix("kubernaut-bench-")
            .tempdir()?;
        Ok(OperatorFiles {
            config: write_operator_config(work.path(), EXEC_NAMESPACE, "")?,
            log: work.path().join("operator.log"),
            kubeconfig: cp.kubeconfig_path().to_path_buf(),
            _work: work,
        })
    }

    /// Starts `binary` with this run's config, log and kubeconfig.
    fn spawn(&self, binary: &Path) -> anyhow::Result<OperatorProcess> {
        OperatorProcess::spawn(binary, &self.config, &self.kubeconfig, &self.log)
    }
}

/// `--only-scale`: one burst of `--n` WFEs on the simulator (the scale phase copies the status
/// of a run they finish), then the scale phase; prints its figures, writes no report.
async fn only_scale(
    cp: &ControlPlane,
    client: &Client,
    cp_pids: &[u32],
    args: &Args,
) -> anyhow::Result<()> {
    let files = OperatorFiles::new(cp)?;
    let log_path = files.log.clone();
    let spawn = || files.spawn(&args.operator);
    let mut operator = spawn()?;
    operator.wait_ready().await?;
    let run_time = Duration::from_millis(args.run_time_ms);
    let start_tekton = || start_simulator(client, EXEC_NAMESPACE, run_time);
    let mut simulator = Some(start_tekton());
    let tracker: Shared = Arc::default();
    let watches = start_watches(client, &tracker, EXEC_NAMESPACE).await?;
    let setup = LoadSetup::on_simulator(
        client,
        &operator,
        &tracker,
        cp_pids,
        args.concurrency,
        LOAD_DEADLINE,
    );
    println!("load: {} WFEs as fast as possible …", args.n);
    load_phase(&setup, BURST_NAMESPACE, args.n, None).await?;
    let world = ScaleWorld {
        spawn: &spawn,
        simulator: &mut simulator,
        start_simulator: &start_tekton,
    };
    let scale = scale_phase(client, &mut operator, world, &tracker, args).await;
    let scale = scale.inspect_err(|_| print_log_tail(&log_path))?;
    println!(
        "{}: {}",
        args.operator.display(),
        serde_json::to_string_pretty(&scale)?
    );
    if let Some(other) = &args.compare {
        // The same objects: nothing more is created.
        let present = Args {
            scale: scale.workflow_executions.min(scale.pipeline_runs),
            operator: other.clone(),
            ..args.clone()
        };
        let spawn = || files.spawn(other);
        let world = ScaleWorld {
            spawn: &spawn,
            simulator: &mut simulator,
            start_simulator: &start_tekton,
        };
        let compared = scale_phase(client, &mut operator, world, &tracker, &present).await;
        let compared = compared.inspect_err(|_| print_log_tail(&log_path))?;
        println!(
            "{}: {}",
            other.display(),
            serde_json::to_string_pretty(&compared)?
        );
    }
    operator.stop();
    for w in watches {
        w.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::below_saturation;

    /// The phase below saturation runs at the cap unless the machine completes fewer than twice
    /// the cap as fast as possible; then at half that, in steps of a half.
    #[test]
    fn the_low_rate_stays_below_saturation() {
        assert_eq!(below_saturation(20.0, 30.7), 15.0);
        assert_eq!(below_saturation(20.0, 10.34), 5.0);
        assert_eq!(below_saturation(20.0, 11.2), 5.5);
        assert_eq!(below_saturation(20.0, 60.0), 20.0);
        assert_eq!(
            below_saturation(20.0, 0.0),
            20.0,
            "nothing completed: the cap"
        );
    }
}
