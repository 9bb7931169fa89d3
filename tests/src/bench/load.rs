//! One load phase: WorkflowExecutions created at a fixed rate or as fast as possible, watched
//! until they end, and what that cost ([`load_phase`] → [`LoadResult`]).
//!
//! Guarantees:
//! 1. Latencies come from the benchmark's own watches ([`start_watches`]): a WFE's phases as
//!    they were written, a PipelineRun's first sight and its `Succeeded` condition.
//! 2. A phase is bounded by [`LoadSetup::deadline`]; WFEs that did not end by then are counted
//!    incomplete.
//! 3. The operator's writes are the API server's count, attributed by
//!    [`LoadSetup::is_operator_write`].
//!
//! Assumptions:
//! 1. Every WorkflowExecution of a phase has a target of its own, so none waits for another's
//!    lock.
//! 2. Each resourceVersion is delivered to the watch (no write is lost to a re-list), so the
//!    distinct versions seen of a WFE are the writes that changed it.
//!
//! Caveats:
//! 1. The watch of PipelineRuns covers one execution namespace.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::anyhow;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kubernaut_framework::phase::Phase as _;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use workflowexecution_operator::types::{
    self, Phase, WorkflowExecution, WorkflowExecutionSpec, WorkflowRef,
};

use super::{
    apiserver::{apiserver_requests, apiserver_write_durations, is_operator_write, write_delta},
    histogram::Latency,
    process::{OperatorProcess, cpu_of, machine_cpu_seconds, proc_sample},
    report::{Percentiles, ms, percentiles},
};
use crate::{
    ControlPlane,
    simulator::{Scenario, Simulator, SimulatorConfig},
    tekton,
};

/// The benchmark's WorkflowExecution `namespace/name`: the workflow `restart-deployment` of the
/// simulator's [`Scenario::Success`] bundle, against `target`.
pub fn load_wfe(namespace: &str, name: &str, target: &str) -> WorkflowExecution {
    let mut wfe = WorkflowExecution::new(
        name,
        WorkflowExecutionSpec {
            workflow_ref: WorkflowRef {
                workflow_id: "restart-deployment".into(),
                version: "1.2.0".into(),
                container_image: Scenario::Success.bundle(),
                container_digest: None,
            },
            target_resource: target.into(),
            parameters: [
                ("NAMESPACE", namespace),
                ("DEPLOYMENT_NAME", name),
                ("REASON", "OOMKilled: container exceeded its memory limit"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            confidence: Some(0.9),
            rationale: Some("Memory leak pattern; a rolling restart recovers the service.".into()),
            remediation_request_ref: None,
            execution_config: None,
            execution_engine: None,
        },
    );
    wfe.metadata.namespace = Some(namespace.into());
    wfe
}

/// The distinct target of the `i`th WorkflowExecution of `namespace`.
pub fn target(namespace: &str, i: usize) -> String {
    format!("{namespace}/deployment/app-{i:05}")
}

/// What the benchmark's own watches saw of one WorkflowExecution.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// When the create request was sent.
    pub sent: Option<Instant>,
    /// First watch event (the creation).
    pub added: Option<Instant>,
    /// Distinct resourceVersions seen before and including the first `Running` one.
    pub versions_to_running: u32,
    /// Distinct resourceVersions seen in all: the create and every write that changed it.
    pub versions: u32,
    /// Distinct resourceVersions seen in phase `Running`: the Running write and every update of
    /// the run's progress mirrored while it ran.
    pub versions_running: u32,
    /// When it was first seen `Running`.
    pub running: Option<Instant>,
    /// When it was first seen in a terminal phase, and that phase.
    pub terminal: Option<(Instant, Phase)>,
    last_version: String,
    /// The name of its PipelineRun, once its status names one.
    pub run_name: Option<String>,
}

/// What the benchmark's watches saw, by object.
#[derive(Default)]
pub struct Tracker {
    /// `namespace/name` → what was seen of that WorkflowExecution.
    pub wfes: HashMap<String, Seen>,
    /// PipelineRun name → first time it was seen.
    pub run_seen: HashMap<String, Instant>,
    /// PipelineRun name → first time its `Succeeded=True` (or False) was seen.
    pub run_finished: HashMap<String, Instant>,
    /// A snapshot of one finished run's status (for the scale phase's objects).
    pub finished_status: Option<Value>,
}

/// The [`Tracker`] the watches feed and the phases read.
pub type Shared = Arc<Mutex<Tracker>>;

/// The tracker, locked (a panic while it was held poisons nothing that matters here).
pub fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn observe_wfe(tracker: &Shared, wfe: &WorkflowExecution) {
    let now = Instant::now();
    let key = kubernaut_framework::names::namespaced_name(wfe);
    let version = wfe.resource_version().unwrap_or_default();
    let mut t = lock(tracker);
    let seen = t.wfes.entry(key).or_default();
    if seen.added.is_none() {
        seen.added = Some(now);
    }
    if seen.last_version == version {
        return;
    }
    seen.last_version = version;
    let phase = wfe.phase();
    seen.versions += 1;
    if phase == Some(Phase::Running) {
        seen.versions_running += 1;
    }
    if seen.running.is_none() && seen.terminal.is_none() {
        seen.versions_to_running += 1;
    }
    if phase == Some(Phase::Running) && seen.running.is_none() {
        seen.running = Some(now);
    }
    if let Some(run) = wfe
        .status
        .as_ref()
        .and_then(|s| s.pipeline_run_ref.as_ref())
    {
        seen.run_name = Some(run.name.clone());
    }
    if let Some(p) = phase
        && p.is_terminal()
        && seen.terminal.is_none()
    {
        seen.terminal = Some((now, p));
    }
}

fn observe_run(tracker: &Shared, run: &DynamicObject) {
    let now = Instant::now();
    lock(tracker).run_seen.entry(run.name_any()).or_insert(now);
    let finished = run.data["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c["type"] == "Succeeded" && (c["status"] == "True" || c["status"] == "False")
            })
        });
    if !finished {
        return;
    }
    let mut t = lock(tracker);
    t.run_finished.entry(run.name_any()).or_insert(now);
    if t.finished_status.is_none() {
        t.finished_status = Some(run.data["status"].clone());
    }
}

/// Starts the benchmark's watches of every WorkflowExecution and of the PipelineRuns of
/// `exec_namespace`; returns once both listed.
///
/// # Errors
///
/// When they have not listed within 60 s.
pub async fn start_watches(
    client: &Client,
    tracker: &Shared,
    exec_namespace: &str,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let wfes: Api<WorkflowExecution> = Api::all(client.clone());
    let runs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        exec_namespace,
        &tekton::pipelinerun_resource(),
    );
    let (t1, t2) = (tracker.clone(), tracker.clone());
    let (wfe_task, wfe_ready) = spawn_watch(wfes, "WorkflowExecutions", move |w| {
        observe_wfe(&t1, w);
    });
    let (run_task, run_ready) = spawn_watch(runs, "PipelineRuns", move |r| observe_run(&t2, r));
    tokio::time::timeout(Duration::from_secs(60), async {
        let _ = wfe_ready.await;
        let _ = run_ready.await;
    })
    .await
    .map_err(|_| anyhow!("the benchmark's watches did not list within 60s"))?;
    Ok(vec![wfe_task, run_task])
}

/// A task feeding every object `api`'s watch sees to `observe`, and a receiver told when the
/// watch has listed; errors are printed (naming `what`) and the watch retries with backoff.
fn spawn_watch<K>(
    api: Api<K>,
    what: &'static str,
    observe: impl Fn(&K) + Send + 'static,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
)
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => observe(&o),
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("benchmark watch ({what}): {e}"),
            }
        }
    });
    (task, ready_rx)
}

/// What one load phase measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// `fixed rate` or `as fast as possible`.
    pub mode: String,
    /// WorkflowExecutions created.
    pub n: usize,
    /// The creation rate asked for (none: as fast as possible).
    pub rate_requested: Option<f64>,
    /// The creation rate achieved (WFE/s).
    pub rate_achieved: f64,
    /// WorkflowExecutions that ended `Completed`.
    pub completed: usize,
    /// … `Failed`.
    pub failed: usize,
    /// … `Skipped`.
    pub skipped: usize,
    /// WorkflowExecutions not seen ending before the phase's deadline.
    pub incomplete: usize,
    /// First create sent → last WFE seen Running.
    pub seconds_to_all_running: f64,
    /// First create sent → last WFE seen terminal.
    pub seconds_to_all_terminal: f64,
    /// WFEs per second, first create sent → last WFE terminal.
    pub throughput: f64,
    /// WFEs per second, first create sent → last WFE Running.
    pub running_throughput: f64,
    /// WFE first seen → seen Running.
    pub created_to_running_ms: Percentiles,
    /// Create request sent → WFE seen Running.
    pub sent_to_running_ms: Percentiles,
    /// PipelineRun seen `Succeeded` → its WFE seen `Completed`.
    pub succeeded_to_completed_ms: Percentiles,
    /// PipelineRun first seen → seen finished (absent from reports made before it was measured).
    #[serde(default)]
    pub run_seen_to_finished_ms: Option<Percentiles>,
    /// Completions seen more than 1 s after their run's `Succeeded` (absent from reports made
    /// before they were counted).
    #[serde(default)]
    pub completed_over_1s: Option<usize>,
    /// Completions seen more than 10 s after their run's `Succeeded`.
    #[serde(default)]
    pub completed_over_10s: Option<usize>,
    /// Reconciles handed a cached WFE older than the operator's own write whose wait for the
    /// newer copy caught up (`framework_own_write_waits_total`).
    #[serde(default)]
    pub own_write_waits_caught_up: Option<u64>,
    /// … whose wait timed out.
    #[serde(default)]
    pub own_write_waits_timed_out: Option<u64>,
    /// Operator writes to the WFE up to Running (from the watch) + its PipelineRun create.
    pub writes_to_running_mean: f64,
    /// The most of those for one WFE.
    pub writes_to_running_max: u32,
    /// Mean distinct resourceVersions seen per WFE after its create: every write that changed it
    /// (absent from reports made before it was measured).
    #[serde(default)]
    pub wfe_writes_mean: Option<f64>,
    /// Mean distinct resourceVersions seen per WFE in phase `Running`: the Running write and the
    /// run's progress mirrored while it ran.
    #[serde(default)]
    pub wfe_writes_running_mean: Option<f64>,
    /// Every write the API server counted during the phase, by verb and resource.
    pub writes: BTreeMap<String, u64>,
    /// How long the API server took to handle the phase's writes, by verb and resource (absent
    /// from reports made before it was measured).
    #[serde(default)]
    pub write_durations: BTreeMap<String, Latency>,
    /// How long the operator's reconciles waited for a slot (`queue`), ran (`reconcile`) and
    /// waited for their own write's watch event (`own write`) in the phase.
    #[serde(default)]
    pub operator_steps: BTreeMap<String, Latency>,
    /// The writes [`LoadSetup::is_operator_write`] attributes to the operator.
    pub operator_writes: u64,
    /// … per WFE.
    pub operator_writes_per_wfe: f64,
    /// Every write of the phase per WFE.
    pub all_writes_per_wfe: f64,
    /// The operator's CPU seconds in the phase.
    pub operator_cpu_seconds: f64,
    /// … per 1 000 WFEs.
    pub operator_cpu_seconds_per_1000: f64,
    /// The operator's RSS at the end (MiB).
    pub operator_rss_mib_end: f64,
    /// The operator's peak RSS so far (MiB).
    pub operator_peak_rss_mib: f64,
    /// CPU seconds of the API server + etcd in the phase.
    pub apiserver_etcd_cpu_seconds: f64,
    /// Average cores busy in the API server + etcd over the phase.
    pub apiserver_etcd_cores: f64,
    /// Average cores busy in the operator over the phase.
    pub operator_cores: f64,
    /// Cores busy on the whole machine.
    pub machine_cores: f64,
    /// Cores busy in processes that are neither the control plane, the operator nor this
    /// benchmark (other work on a shared machine skews every figure; a Tekton cluster's
    /// processes are in it).
    pub other_cores: f64,
    /// Writes while the operator had nothing to do, after the phase (5 s window).
    pub idle_writes: u64,
}

/// What a load phase runs against.
pub struct LoadSetup<'a> {
    /// An admin client of the control plane.
    pub client: &'a Client,
    /// The operator being measured.
    pub operator: &'a OperatorProcess,
    /// What the watches of [`start_watches`] saw.
    pub tracker: &'a Shared,
    /// The control plane's processes ([`super::process::control_plane_pids`]).
    pub cp_pids: &'a [u32],
    /// Creates in flight at most, as fast as possible.
    pub concurrency: usize,
    /// The most a phase may take before what has not ended is reported incomplete.
    pub deadline: Duration,
    /// The `i`th WorkflowExecution of a namespace: `(namespace, i)` → the object, named
    /// `wfe-<i, 5 digits>`.
    pub wfe: &'a (dyn Fn(&str, usize) -> WorkflowExecution + Sync),
    /// Whether a write (`VERB resource[/subresource]`, as [`write_delta`] names it) is the
    /// operator's.
    pub is_operator_write: fn(&str) -> bool,
}

impl<'a> LoadSetup<'a> {
    /// A setup for the Tekton simulator: the WorkflowExecutions of [`simulator_wfe`], writes
    /// attributed by [`is_operator_write`] (the simulator writes no Events and creates no runs).
    pub fn on_simulator(
        client: &'a Client,
        operator: &'a OperatorProcess,
        tracker: &'a Shared,
        cp_pids: &'a [u32],
        concurrency: usize,
        deadline: Duration,
    ) -> Self {
        LoadSetup {
            client,
            operator,
            tracker,
            cp_pids,
            concurrency,
            deadline,
            wfe: &simulator_wfe,
            is_operator_write,
        }
    }
}

/// The `i`th WorkflowExecution of `namespace` on the simulator: [`load_wfe`] named `wfe-<i>` on
/// its own [`target`].
pub fn simulator_wfe(namespace: &str, i: usize) -> WorkflowExecution {
    load_wfe(namespace, &format!("wfe-{i:05}"), &target(namespace, i))
}

/// Creates `n` WorkflowExecutions in `namespace` (at `rate` per second, or as fast as
/// [`LoadSetup::concurrency`] allows), waits until every one has ended (bounded by
/// [`LoadSetup::deadline`]) and a 5 s idle window after, and reports what was measured.
///
/// # Errors
///
/// When the API server's or the operator's metrics cannot be read, or the operator has gone.
pub async fn load_phase(
    setup: &LoadSetup<'_>,
    namespace: &str,
    n: usize,
    rate: Option<f64>,
) -> anyhow::Result<LoadResult> {
    let LoadSetup {
        client,
        operator,
        tracker,
        cp_pids,
        concurrency,
        deadline,
        wfe,
        is_operator_write,
    } = *setup;
    let api: Api<WorkflowExecution> = Api::namespaced(client.clone(), namespace);
    let requests_before = apiserver_requests(client).await?;
    let waits_before = operator.own_write_waits().await?;
    let durations_before = apiserver_write_durations(client).await?;
    let steps_before = operator.step_durations().await?;
    let proc_before = operator.sample()?;
    let cp_cpu_before = cpu_of(cp_pids);
    let machine_before = machine_cpu_seconds();
    let self_before = proc_sample(std::process::id()).map_or(0.0, |s| s.cpu_seconds);
    let started = Instant::now();
    let deadline = started + deadline;
    let keys: Vec<String> = (0..n).map(|i| format!("{namespace}/wfe-{i:05}")).collect();

    let in_flight = Arc::new(Semaphore::new(if rate.is_some() {
        256
    } else {
        concurrency
    }));
    let mut creators = tokio::task::JoinSet::new();
    let mut ticker = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut create_errors = 0usize;
    for (i, key) in keys.iter().enumerate() {
        if Instant::now() > deadline {
            break;
        }
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let permit = in_flight.clone().acquire_owned().await?;
        let wfe = wfe(namespace, i);
        lock(tracker).wfes.entry(key.clone()).or_default().sent = Some(Instant::now());
        let api = api.clone();
        creators.spawn(async move {
            let result = api.create(&PostParams::default(), &wfe).await;
            drop(permit);
            result.map(|_| ()).map_err(|e| e.to_string())
        });
    }
    let sending_seconds = started.elapsed().as_secs_f64();
    while let Some(joined) = creators.join_next().await {
        if !matches!(joined, Ok(Ok(()))) {
            create_errors += 1;
        }
    }
    if create_errors > 0 {
        eprintln!("{namespace}: {create_errors} creates failed");
    }

    // Wait until every WFE is terminal (bounded).
    loop {
        let done = {
            let t = lock(tracker);
            keys.iter()
                .filter(|k| t.wfes.get(*k).is_some_and(|s| s.terminal.is_some()))
                .count()
        };
        if done + create_errors >= keys.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let end = Instant::now();
    let proc_after = operator.sample()?;
    let cp_cpu_after = cpu_of(cp_pids);
    let machine_after = machine_cpu_seconds();
    let self_after = proc_sample(std::process::id()).map_or(0.0, |s| s.cpu_seconds);
    let requests_after = apiserver_requests(client).await?;
    let waits_after = operator.own_write_waits().await?;
    let write_durations = apiserver_write_durations(client)
        .await?
        .since(&durations_before);
    let operator_steps = operator.step_durations().await?.since(&steps_before);
    // Quiet window: nothing is happening, so nothing should be written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let requests_idle = apiserver_requests(client).await?;
    let idle_writes: u64 = write_delta(&requests_after, &requests_idle)
        .iter()
        .filter(|(k, _)| is_operator_write(k))
        .map(|(_, v)| v)
        .sum();

    let t = lock(tracker);
    let mut result = LoadResult {
        mode: if rate.is_some() {
            "fixed rate"
        } else {
            "as fast as possible"
        }
        .into(),
        n,
        rate_requested: rate,
        rate_achieved: n as f64 / sending_seconds.max(1e-9),
        ..LoadResult::default()
    };
    let (mut c2r, mut s2r, mut s2c, mut writes) = (vec![], vec![], vec![], vec![]);
    let (mut runs, mut wfe_writes, mut running_writes) = (vec![], vec![], vec![]);
    let (mut last_running, mut last_terminal) = (started, started);
    for key in &keys {
        let Some(seen) = t.wfes.get(key) else {
            result.incomplete += 1;
            continue;
        };
        wfe_writes.push(f64::from(seen.versions.saturating_sub(1)));
        running_writes.push(f64::from(seen.versions_running));
        if let Some(run) = &seen.run_name
            && let (Some(first), Some(finished)) = (t.run_seen.get(run), t.run_finished.get(run))
        {
            runs.push(ms(finished.saturating_duration_since(*first)));
        }
        if let (Some(added), Some(running)) = (seen.added, seen.running) {
            c2r.push(ms(running.saturating_duration_since(added)));
            writes.push(seen.versions_to_running.saturating_sub(1) + 1);
        }
        if let (Some(sent), Some(running)) = (seen.sent, seen.running) {
            s2r.push(ms(running.saturating_duration_since(sent)));
            last_running = last_running.max(running);
        }
        match seen.terminal {
            Some((at, phase)) => {
                last_terminal = last_terminal.max(at);
                match phase {
                    Phase::Completed => result.completed += 1,
                    Phase::Failed => result.failed += 1,
                    _ => result.skipped += 1,
                }
                if phase == Phase::Completed
                    && let Some(finished) =
                        seen.run_name.as_ref().and_then(|r| t.run_finished.get(r))
                {
                    s2c.push(ms(at.saturating_duration_since(*finished)));
                }
            }
            None => result.incomplete += 1,
        }
    }
    drop(t);
    result.seconds_to_all_running = last_running.duration_since(started).as_secs_f64();
    result.seconds_to_all_terminal = last_terminal.duration_since(started).as_secs_f64();
    let terminal = (result.completed + result.failed + result.skipped) as f64;
    result.throughput = terminal / result.seconds_to_all_terminal.max(1e-9);
    result.running_throughput = c2r.len() as f64 / result.seconds_to_all_running.max(1e-9);
    result.writes_to_running_mean = if writes.is_empty() {
        0.0
    } else {
        f64::from(writes.iter().sum::<u32>()) / writes.len() as f64
    };
    result.writes_to_running_max = writes.iter().copied().max().unwrap_or(0);
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    result.wfe_writes_mean = Some(mean(&wfe_writes));
    result.wfe_writes_running_mean = Some(mean(&running_writes));
    result.run_seen_to_finished_ms = Some(percentiles(runs));
    result.created_to_running_ms = percentiles(c2r);
    result.sent_to_running_ms = percentiles(s2r);
    result.completed_over_1s = Some(s2c.iter().filter(|ms| **ms > 1_000.0).count());
    result.completed_over_10s = Some(s2c.iter().filter(|ms| **ms > 10_000.0).count());
    result.succeeded_to_completed_ms = percentiles(s2c);
    result.own_write_waits_caught_up = Some(waits_after.0.saturating_sub(waits_before.0));
    result.own_write_waits_timed_out = Some(waits_after.1.saturating_sub(waits_before.1));
    result.writes = write_delta(&requests_before, &requests_after);
    result.write_durations = write_durations;
    result.operator_steps = operator_steps;
    result.operator_writes = result
        .writes
        .iter()
        .filter(|(k, _)| is_operator_write(k))
        .map(|(_, v)| v)
        .sum();
    let all: u64 = result.writes.values().sum();
    result.operator_writes_per_wfe = result.operator_writes as f64 / n as f64;
    result.all_writes_per_wfe = all as f64 / n as f64;
    result.operator_cpu_seconds = proc_after.cpu_seconds - proc_before.cpu_seconds;
    result.operator_cpu_seconds_per_1000 = result.operator_cpu_seconds * 1000.0 / n as f64;
    result.operator_rss_mib_end = proc_after.rss_kib as f64 / 1024.0;
    result.operator_peak_rss_mib = proc_after.hwm_kib as f64 / 1024.0;
    result.apiserver_etcd_cpu_seconds = cp_cpu_after - cp_cpu_before;
    let phase_seconds = end.duration_since(started).as_secs_f64().max(1e-9);
    result.apiserver_etcd_cores = result.apiserver_etcd_cpu_seconds / phase_seconds;
    result.operator_cores = result.operator_cpu_seconds / phase_seconds;
    let machine = machine_after - machine_before;
    result.machine_cores = machine / phase_seconds;
    result.other_cores = ((machine
        - result.apiserver_etcd_cpu_seconds
        - result.operator_cpu_seconds
        - (self_after - self_before))
        / phase_seconds)
        .max(0.0);
    result.idle_writes = idle_writes;
    Ok(result)
}

/// A new local control plane with Tekton's CRDs, the WorkflowExecution CRD and `namespaces`, and
/// an admin client of it: where the simulator's load phases run.
///
/// # Errors
///
/// When the control plane does not start or the objects cannot be created.
pub async fn simulator_control_plane(
    namespaces: &[&str],
) -> anyhow::Result<(ControlPlane, Client)> {
    let cp = ControlPlane::start().await?;
    let mut crds = tekton::crds();
    crds.push(types::crd());
    cp.install_crds(&crds).await?;
    let client = cp.client().await?;
    let api: Api<Namespace> = Api::all(client.clone());
    for ns in namespaces {
        let object = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        api.create(&PostParams::default(), &object).await?;
    }
    Ok((cp, client))
}

/// The Tekton simulator on the runs of `exec_namespace`, completing each `run_time` after it
/// started (it reads nothing back: what it knows of a run comes from its watch).
pub fn start_simulator(client: &Client, exec_namespace: &str, run_time: Duration) -> Simulator {
    Simulator::start(
        client.clone(),
        SimulatorConfig {
            namespace: Some(exec_namespace.into()),
            run_time,
            ..SimulatorConfig::default()
        },
    )
}
