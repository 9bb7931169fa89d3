//! A Tekton simulator for tests: watches `tekton.dev/v1` PipelineRuns and replays, at test speed,
//! what real Tekton Pipelines wrote for the same kind of run.
//!
//! Every status, label and TaskRun it writes is taken from a recording of real Tekton
//! ([`crate::tekton::VERSION`]) made by the end-to-end tier (`tests/e2e/recorded/*.yaml`,
//! re-recorded by `make record-tekton`), compiled in. Only the names are substituted — the run's
//! name, namespace and uid, the bundle, the target and the runner service account — and the times
//! (see "How a recording is replayed").
//!
//! The outcome is scripted by the bundle reference (`spec.pipelineRef.params[bundle]`): the last
//! path segment of the image, before the tag or digest, names a [`Scenario`]
//! (`registry.example/workflows/oom-killed:v1` → [`Scenario::OomKilled`]). An unknown name runs as
//! [`Scenario::Success`]. Each scenario replays one recording:
//!
//! | Scenario | Recording | What Tekton did |
//! | --- | --- | --- |
//! | `Success` | `succeed` | `remediate`, then `verify`, succeed |
//! | `TaskFailure` | `step-fails` | `remediate`'s step `scale` exits 1 (`StepFailed`); `verify` is skipped |
//! | `OomKilled` | `oom` | `scale` is OOMKilled, 137 (`StepOOM`); `verify` is skipped |
//! | `Timeout` | `timeout` | `remediate` still runs at the timeout: `PipelineRunTimeout`, TaskRun `TaskRunCancelled` |
//! | `ImagePull` | `image-pull-first` | `remediate`'s image cannot be pulled: `TaskRunImagePullFailed`, steps rewritten `terminated` |
//! | `SecondTaskImagePull` | `image-pull-second` | `remediate` succeeds, then `verify`'s image cannot be pulled |
//! | `SecondTaskPullBackOff` | `image-pull-second` | as above, but `verify` keeps waiting for its image (see "invented") |
//! | `Quota` | `quota-running`, `quota-final` | the TaskRun stays `Unknown`/`ExceededResourceQuota` until the run's own timeout (`spec.timeouts.pipeline`), then the run is `PipelineRunTimeout` |
//! | `Forbidden` | `missing-sa` | the first task's pod cannot be created: `PodCreationFailed` |
//! | `CouldntGetPipeline` | `missing-bundle` | the bundle cannot be resolved: `CouldntGetPipeline`, with a `startTime` |
//! | `Hang` | `running`, `delete-running` | `remediate` runs until the run is cancelled |
//! | `Resolving` | none (see "invented") | the run stays in bundle resolution |
//!
//! How a recording is replayed:
//! 1. After [`SimulatorConfig::start_delay`], Tekton's labels (`tekton.dev/pipeline`) are added to
//!    the run's metadata, and its status gets `startTime`, the `Running` condition, the resolved
//!    `pipelineSpec`, `provenance` and the `childReferences` of the tasks that start first.
//! 2. A task's TaskRun is created when its task starts, never earlier: with the run's labels and
//!    annotations plus Tekton's own, an owner reference to the run, the recorded spec, and the
//!    recorded in-progress status (`running`). `childReferences` grows with the DAG; tasks the
//!    recording skipped (`skippedTasks`) never get a TaskRun.
//! 3. The recorded TaskRuns end one after the other, spread over [`SimulatorConfig::run_time`];
//!    each end starts the tasks that ran after it and updates the run's `Running` message. Then
//!    the run gets its recorded final status.
//! 4. `spec.status: Cancelled`, `CancelledRunFinally` or `StoppedRunFinally` on an unfinished run
//!    replays `delete-running`: unfinished TaskRuns end `TaskRunCancelled` with their steps
//!    rewritten as Tekton does, the workflow's `finally` tasks run (not with `Cancelled`), and
//!    the run ends `Cancelled`.
//!
//! Times: a recorded time that equals the recorded run's or a TaskRun's creation or start time
//! becomes the live object's; a step's start becomes the start the simulator wrote for that step;
//! every other time is the wall-clock time of the write, to the nanosecond — so a step that ran
//! never starts, by a coincidence of the simulator's speed, in the very second its TaskRun was
//! created (which the status mapping reads as a step Tekton rewrote before it ran).
//!
//! Still invented, and why:
//! 1. The pace: a run takes [`SimulatorConfig::run_time`], not the recorded seconds (`Timeout`
//!    ends at `run_time` too; only `Quota` waits for the run's own timeout, which is its point).
//! 2. `Resolving`: the loopback registry answers before a snapshot can catch a run resolving its
//!    bundle, so its `ResolvingPipelineRef` status follows Tekton's source
//!    (pkg/reconciler/pipelinerun/pipelinerun.go, v1.12.2).
//! 3. `SecondTaskPullBackOff`, and the moment before Tekton fails a TaskRun whose image cannot be
//!    pulled: Tekton v1.12 fails it as soon as it sees `ImagePullBackOff` (unless
//!    `default-imagepullbackoff-timeout` is configured), so no recording holds the waiting state;
//!    it follows pkg/pod/status.go (`PullImageFailed`, the step `waiting`).
//! 4. `Forbidden`: the recorded `PodCreationFailed` names a missing service account; the message is
//!    replaced by an admission refusal (`pods "…" is forbidden: …`), which Tekton reports the same
//!    way (pkg/reconciler/taskrun/taskrun.go, `handlePodCreationError`).
//! 5. The `Running` message while tasks complete follows the recorded format (`Tasks Completed: 0
//!    (Failed: 0, Cancelled 0), Incomplete: N, Skipped: 0`, a unit test checks it against the
//!    recording) with the counts of the replay.
//!
//! Guarantees:
//! 1. Status is written through the status subresource, metadata with a merge patch of the run's
//!    labels, as Tekton's own writes are; the run's spec is never touched.
//! 2. A run deleted while being driven is dropped quietly.
//! 3. It reads runs as Tekton does, from its watch (Tekton's informer cache): a cancellation or
//!    deletion is acted on when its watch event arrives; no run is read back from the API server
//!    while it is driven (a GET per run per poll would load the API server unlike the real
//!    thing). It reads a TaskRun only to resume or cancel a run.
//!
//! Caveats:
//! 1. Test code only: it creates TaskRuns but no Pods.
//! 2. A simulator restarted while a run is in flight resumes it from its current status (it does not
//!    re-create TaskRuns that already exist).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde::Deserialize as _;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};

use crate::tekton::{pipelinerun_resource, taskrun_resource};

/// What a simulated PipelineRun does, chosen by its bundle reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Both tasks (`remediate`, then `verify`) succeed. Bundle name `success` (and any unknown
    /// name).
    Success,
    /// The first task's first step (`remediate`/`scale`) exits 1; `verify` is skipped. Bundle name
    /// `task-failure`.
    TaskFailure,
    /// The first task's first step is OOMKilled (exit 137). Bundle name `oom-killed`.
    OomKilled,
    /// The run exceeds its timeout while its first task runs: `PipelineRunTimeout`. Bundle name
    /// `timeout`.
    Timeout,
    /// The first task cannot pull its image: `TaskRunImagePullFailed`, no step ran. Bundle name
    /// `image-pull`.
    ImagePull,
    /// The first task succeeds, then the second task cannot pull its image: its TaskRun ends
    /// `TaskRunImagePullFailed` with Tekton's rewritten step states, the run `Failed`. A step
    /// ran. Bundle name `second-task-image-pull`.
    SecondTaskImagePull,
    /// The first task succeeds, then the second task waits in `ImagePullBackOff` until the run
    /// is cancelled or deleted (Tekton configured with `default-imagepullbackoff-timeout`).
    /// Bundle name `second-task-pull-backoff`.
    SecondTaskPullBackOff,
    /// The run stays in bundle resolution (`startTime` set, `ResolvingPipelineRef`, no
    /// children) until it is cancelled or deleted. Bundle name `resolving`.
    Resolving,
    /// The first task's pod exceeds a ResourceQuota: its TaskRun stays
    /// `Unknown`/`ExceededResourceQuota` and the run ends `PipelineRunTimeout` at its own timeout
    /// (`spec.timeouts.pipeline`). Bundle name `quota`.
    Quota,
    /// The first task's pod is refused at creation (`PodCreationFailed`, "… is forbidden: …").
    /// Bundle name `forbidden`.
    Forbidden,
    /// The pipeline cannot be resolved before anything starts: `CouldntGetPipeline`.
    /// Bundle name `couldnt-get-pipeline`.
    CouldntGetPipeline,
    /// The first task runs and never finishes (until the run is cancelled; its `finally` task
    /// then runs). Bundle name `hang`.
    Hang,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 12] = [
        Scenario::Success,
        Scenario::TaskFailure,
        Scenario::OomKilled,
        Scenario::Timeout,
        Scenario::ImagePull,
        Scenario::SecondTaskImagePull,
        Scenario::SecondTaskPullBackOff,
        Scenario::Resolving,
        Scenario::Quota,
        Scenario::Forbidden,
        Scenario::CouldntGetPipeline,
        Scenario::Hang,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Success => "success",
            Scenario::TaskFailure => "task-failure",
            Scenario::OomKilled => "oom-killed",
            Scenario::Timeout => "timeout",
            Scenario::ImagePull => "image-pull",
            Scenario::SecondTaskImagePull => "second-task-image-pull",
            Scenario::SecondTaskPullBackOff => "second-task-pull-backoff",
            Scenario::Resolving => "resolving",
            Scenario::Quota => "quota",
            Scenario::Forbidden => "forbidden",
            Scenario::CouldntGetPipeline => "couldnt-get-pipeline",
            Scenario::Hang => "hang",
        }
    }

    /// The scenario a bundle reference scripts.
    pub fn from_bundle(bundle: &str) -> Scenario {
        let last = bundle.rsplit('/').next().unwrap_or(bundle);
        let name = last.split(['@', ':']).next().unwrap_or(last);
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .unwrap_or(Scenario::Success)
    }

    /// A bundle reference that scripts this scenario.
    pub fn bundle(self) -> String {
        format!("registry.example/kubernaut/workflows/{}:v1", self.name())
    }

    /// The recording (`tests/e2e/recorded/<name>.yaml`) whose final state this scenario replays;
    /// `None` for [`Scenario::Resolving`], which no recording holds.
    pub fn recording(self) -> Option<&'static str> {
        Some(match self {
            Scenario::Success => "succeed",
            Scenario::TaskFailure => "step-fails",
            Scenario::OomKilled => "oom",
            Scenario::Timeout => "timeout",
            Scenario::ImagePull => "image-pull-first",
            Scenario::SecondTaskImagePull | Scenario::SecondTaskPullBackOff => "image-pull-second",
            Scenario::Quota => "quota-final",
            Scenario::Forbidden => "missing-sa",
            Scenario::CouldntGetPipeline => "missing-bundle",
            Scenario::Hang => "delete-running",
            Scenario::Resolving => return None,
        })
    }
}

/// Simulator settings.
#[derive(Clone, Debug)]
pub struct SimulatorConfig {
    /// Namespace to watch (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Time from start to the end of a run.
    pub run_time: Duration,
    /// Time from creation to `startTime` (Tekton resolving the bundle).
    pub start_delay: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            namespace: None,
            run_time: Duration::from_millis(300),
            start_delay: Duration::from_millis(20),
        }
    }
}

/// What went wrong while driving a run.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// A call to the API server failed.
    #[error("simulator API call failed: {0}")]
    Kube(#[from] kube::Error),
    /// A compiled-in recording cannot be used.
    #[error("recording tests/e2e/recorded/{name}.yaml: {reason}")]
    Recording {
        /// The recording's file stem.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A running simulator; stops when dropped.
pub struct Simulator {
    task: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Start the simulator on `client`.
    pub fn start(client: Client, config: SimulatorConfig) -> Simulator {
        let task = tokio::spawn(run(client, config));
        Simulator { task }
    }
}

// ------------------------------------------------------------------------------- recordings

/// The recordings the scenarios replay, compiled in.
const RECORDED: [(&str, &str); 12] = [
    ("succeed", include_str!("../e2e/recorded/succeed.yaml")),
    (
        "step-fails",
        include_str!("../e2e/recorded/step-fails.yaml"),
    ),
    ("oom", include_str!("../e2e/recorded/oom.yaml")),
    ("timeout", include_str!("../e2e/recorded/timeout.yaml")),
    (
        "image-pull-first",
        include_str!("../e2e/recorded/image-pull-first.yaml"),
    ),
    (
        "image-pull-second",
        include_str!("../e2e/recorded/image-pull-second.yaml"),
    ),
    (
        "quota-running",
        include_str!("../e2e/recorded/quota-running.yaml"),
    ),
    (
        "quota-final",
        include_str!("../e2e/recorded/quota-final.yaml"),
    ),
    (
        "missing-sa",
        include_str!("../e2e/recorded/missing-sa.yaml"),
    ),
    (
        "missing-bundle",
        include_str!("../e2e/recorded/missing-bundle.yaml"),
    ),
    ("running", include_str!("../e2e/recorded/running.yaml")),
    (
        "delete-running",
        include_str!("../e2e/recorded/delete-running.yaml"),
    ),
];

/// One recording: the PipelineRun and its TaskRuns, in the order the run's `childReferences`
/// lists them.
#[derive(Debug, Clone)]
struct Recording {
    name: &'static str,
    run: Value,
    task_runs: Vec<Value>,
}

impl Recording {
    fn parse(name: &'static str, text: &str) -> Result<Recording, SimulatorError> {
        let bad = |reason: String| SimulatorError::Recording { name, reason };
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = Value::deserialize(doc).map_err(|e| bad(e.to_string()))?;
            if !value.is_null() {
                docs.push(value);
            }
        }
        let mut docs = docs.into_iter();
        let run = docs
            .next()
            .filter(|r| r["kind"] == "PipelineRun")
            .ok_or_else(|| bad("does not start with a PipelineRun".to_string()))?;
        let order: Vec<String> = run["status"]["childReferences"]
            .as_array()
            .map(|refs| {
                refs.iter()
                    .filter_map(|r| r["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let mut task_runs: Vec<Value> = docs.filter(|d| d["kind"] == "TaskRun").collect();
        task_runs.sort_by_key(|tr| {
            let name = tr["metadata"]["name"].as_str().unwrap_or_default();
            order.iter().position(|n| n == name).unwrap_or(usize::MAX)
        });
        Ok(Recording {
            name,
            run,
            task_runs,
        })
    }

    /// The recording named `name` (parsed once).
    fn get(name: &'static str) -> Result<&'static Recording, SimulatorError> {
        static PARSED: OnceLock<Vec<(&'static str, Result<Recording, String>)>> = OnceLock::new();
        let parsed = PARSED.get_or_init(|| {
            RECORDED
                .iter()
                .map(|(name, text)| {
                    (
                        *name,
                        Recording::parse(name, text).map_err(|e| e.to_string()),
                    )
                })
                .collect()
        });
        match parsed.iter().find(|(n, _)| *n == name) {
            Some((_, Ok(recording))) => Ok(recording),
            Some((_, Err(reason))) => Err(SimulatorError::Recording {
                name,
                reason: reason.clone(),
            }),
            None => Err(SimulatorError::Recording {
                name,
                reason: "not compiled into the simulator".to_string(),
            }),
        }
    }

    fn task_run(&self, task: &str) -> Option<&Value> {
        self.task_runs.iter().find(|tr| pipeline_task(tr) == task)
    }

    fn pipeline_spec(&self) -> &Value {
        &self.run["status"]["pipelineSpec"]
    }

    /// The pipeline's `finally` task names.
    fn finally_tasks(&self) -> Vec<String> {
        self.pipeline_spec()["finally"]
            .as_array()
            .map(|tasks| {
                tasks
                    .iter()
                    .filter_map(|t| t["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The tasks `task` runs after.
    fn run_after(&self, task: &str) -> Vec<String> {
        self.pipeline_spec()["tasks"]
            .as_array()
            .and_then(|tasks| tasks.iter().find(|t| t["name"] == task))
            .and_then(|t| t["runAfter"].as_array())
            .map(|after| {
                after
                    .iter()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many tasks the pipeline has (`finally` included), as Tekton counts them in its
    /// `Running` message.
    fn task_count(&self) -> usize {
        let count = |key: &str| self.pipeline_spec()[key].as_array().map_or(0, Vec::len);
        count("tasks") + count("finally")
    }
}

fn pipeline_task(task_run: &Value) -> &str {
    task_run["metadata"]["labels"]["tekton.dev/pipelineTask"]
        .as_str()
        .unwrap_or_default()
}

fn condition_of(obj: &Value) -> Option<&Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Succeeded")
}

fn reason_of(obj: &Value) -> &str {
    condition_of(obj)
        .and_then(|c| c["reason"].as_str())
        .unwrap_or_default()
}

fn is_done(obj: &Value) -> bool {
    condition_of(obj).is_some_and(|c| c["status"] == "True" || c["status"] == "False")
}

fn is_cancel_requested(obj: &Value) -> bool {
    matches!(
        obj["spec"]["status"].as_str(),
        Some("Cancelled" | "CancelledRunFinally" | "StoppedRunFinally")
    )
}

/// Whether the cancellation lets the pipeline's `finally` tasks run (`spec.status: Cancelled`
/// skips them).
fn cancel_runs_finally(obj: &Value) -> bool {
    matches!(
        obj["spec"]["status"].as_str(),
        Some("CancelledRunFinally" | "StoppedRunFinally")
    )
}

/// Tekton's `Running` message of a run with `completed` of `total` tasks done (the format of the
/// `running` recording).
fn running_message(completed: usize, total: usize) -> String {
    format!(
        "Tasks Completed: {completed} (Failed: 0, Cancelled 0), Incomplete: {}, Skipped: 0",
        total.saturating_sub(completed)
    )
}

fn bundle_of(run: &Value) -> String {
    run["spec"]["pipelineRef"]["params"]
        .as_array()
        .and_then(|params| {
            params
                .iter()
                .find(|p| p["name"] == "bundle")
                .and_then(|p| p["value"].as_str())
        })
        .unwrap_or_default()
        .to_string()
}

fn param_of<'a>(run: &'a Value, name: &str) -> Option<&'a str> {
    run["spec"]["params"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["value"].as_str())
}

/// A bundle reference split into the registry host, the repository path and the tag or digest.
fn bundle_parts(bundle: &str) -> (String, String, String) {
    let (name, reference) = match bundle.rsplit_once('@') {
        Some((name, digest)) => (name, digest.to_string()),
        None => match bundle.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag.to_string()),
            _ => (bundle, "latest".to_string()),
        },
    };
    let (host, path) = name.split_once('/').unwrap_or(("", name));
    (host.to_string(), path.to_string(), reference)
}

// ------------------------------------------------------------------------------ substitution

/// Turns a recording into the live run's objects: names replaced (longest first), and recorded
/// times mapped to live ones (see the module docs).
#[derive(Debug, Clone, Default)]
struct Substitution {
    names: Vec<(String, String)>,
    times: BTreeMap<String, String>,
}

impl Substitution {
    /// The names of `recorded`'s run mapped to those of the live run `live`.
    fn new(recorded: &Value, live: &Value) -> Substitution {
        let mut names = Vec::new();
        let mut pair = |old: Option<&str>, new: Option<&str>| {
            if let (Some(old), Some(new)) = (old, new)
                && !old.is_empty()
                && old != new
            {
                names.push((old.to_string(), new.to_string()));
            }
        };
        let meta = |v: &Value, key: &str| v["metadata"][key].as_str().map(str::to_string);
        pair(
            meta(recorded, "name").as_deref(),
            meta(live, "name").as_deref(),
        );
        pair(
            meta(recorded, "namespace").as_deref(),
            meta(live, "namespace").as_deref(),
        );
        pair(
            meta(recorded, "uid").as_deref(),
            meta(live, "uid").as_deref(),
        );
        pair(
            param_of(recorded, "TARGET_RESOURCE"),
            param_of(live, "TARGET_RESOURCE"),
        );
        let sa = |v: &Value| {
            v["spec"]["taskRunTemplate"]["serviceAccountName"]
                .as_str()
                .map(str::to_string)
        };
        pair(sa(recorded).as_deref(), sa(live).as_deref());
        let timeout = |v: &Value| {
            v["spec"]["timeouts"]["pipeline"]
                .as_str()
                .map(|t| format!("within \"{t}\""))
        };
        pair(timeout(recorded).as_deref(), timeout(live).as_deref());
        let (old_host, old_path, old_ref) = bundle_parts(&bundle_of(recorded));
        let (new_host, new_path, new_ref) = bundle_parts(&bundle_of(live));
        // How the bundles resolver names the manifest it could not get.
        pair(
            Some(&format!("{old_host}/v2/{old_path}/manifests/{old_ref}")),
            Some(&format!("{new_host}/v2/{new_path}/manifests/{new_ref}")),
        );
        pair(
            Some(&format!("{old_host}/{old_path}")),
            Some(&format!("{new_host}/{new_path}")),
        );
        names.sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
        Substitution {
            names,
            times: BTreeMap::new(),
        }
    }

    /// Maps the recorded time at `recorded[path]` to the live one at `live[path]`, when both exist.
    fn time(&mut self, recorded: &Value, live: &Value, path: &[&str]) {
        let at = |v: &Value| {
            path.iter()
                .try_fold(v, |v, key| v.get(*key))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        if let (Some(old), Some(new)) = (at(recorded), at(live)) {
            self.times.insert(old, new);
        }
    }

    /// `recorded` with names replaced and times mapped.
    fn apply(&self, recorded: &Value) -> Value {
        let now = Timestamp::now().to_string();
        let mut value = recorded.clone();
        self.walk(&mut value, &now);
        value
    }

    fn walk(&self, value: &mut Value, now: &str) {
        match value {
            Value::String(s) => {
                if is_recorded_time(s) {
                    *s = self
                        .times
                        .get(s.as_str())
                        .cloned()
                        .unwrap_or_else(|| now.to_string());
                } else {
                    for (old, new) in &self.names {
                        if s.contains(old.as_str()) {
                            *s = s.replace(old.as_str(), new);
                        }
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.walk(v, now)),
            Value::Object(map) => map.values_mut().for_each(|v| self.walk(v, now)),
            _ => {}
        }
    }
}

/// A time as Kubernetes and Tekton write it (`metav1.Time`, to the second: `2026-12-02T06:33:07Z`).
fn is_recorded_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20 && b[19] == b'Z' && b[10] == b'T' && s.parse::<Timestamp>().is_ok()
}

/// Go's `time.ParseDuration` for what a PipelineRun's `timeouts.pipeline` holds (`1h0m0s`,
/// `30s`, `1.5h`, `500ms`).
fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Some(Duration::from_secs_f64(total))
}

// ------------------------------------------------------------------------------- the driver

/// The latest copy of a run its watch delivered (`None` once deleted), as Tekton's informer
/// cache holds it: a replay reads it instead of the API server.
type Latest = watch::Receiver<Option<DynamicObject>>;

/// The runs the simulator drives or has driven, by uid.
#[derive(Default)]
struct Driving {
    /// Runs being driven: where their watch events go.
    running: HashMap<String, watch::Sender<Option<DynamicObject>>>,
    /// Runs driven to their end (until deleted).
    finished: HashSet<String>,
}

impl Driving {
    /// Takes one watch event of the run `uid` (`None` for its deletion): hands it to the run's
    /// drive, or returns where a new drive reads its run from when the run is neither driven,
    /// ended nor driven to its end before (whose lagging events of the simulator's own earlier
    /// writes must not drive it again).
    fn event(&mut self, uid: &str, run: Option<DynamicObject>) -> Option<Latest> {
        if run.is_none() {
            self.finished.remove(uid);
        }
        if let Some(sender) = self.running.get(uid) {
            sender.send_replace(run);
            return None;
        }
        let run = run.filter(|r| !is_done(&r.data) && !self.finished.contains(uid))?;
        let (sender, latest) = watch::channel(Some(run));
        self.running.insert(uid.to_string(), sender);
        Some(latest)
    }

    /// The drive of `uid` returned: an `Ok` drive took the run to its end, or saw it deleted
    /// (then nothing is left to remember).
    fn ended(&mut self, uid: &str, to_its_end: bool) {
        let deleted = self
            .running
            .remove(uid)
            .is_none_or(|sender| sender.borrow().is_none());
        if to_its_end && !deleted {
            self.finished.insert(uid.to_string());
        }
    }
}

async fn run(client: Client, config: SimulatorConfig) {
    let resource = pipelinerun_resource();
    let api: Api<DynamicObject> = match &config.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    // The runs being driven, by uid: where their watch events go; and the runs driven to their
    // end, whose lagging events (of the simulator's own earlier writes) must not drive them again.
    let driving: Arc<Mutex<Driving>> = Arc::default();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    loop {
        let (run, deleted) = match events.try_next().await {
            Ok(Some(watcher::Event::Apply(run) | watcher::Event::InitApply(run))) => (run, false),
            Ok(Some(watcher::Event::Delete(run))) => (run, true),
            Ok(Some(watcher::Event::Init | watcher::Event::InitDone)) => continue,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("simulator watch error: {e}");
                continue;
            }
        };
        let Some(uid) = run.uid() else { continue };
        let latest = {
            let Ok(mut driving) = driving.lock() else {
                return;
            };
            match driving.event(&uid, (!deleted).then(|| run.clone())) {
                Some(latest) => latest,
                None => continue,
            }
        };
        let client = client.clone();
        let config = config.clone();
        let driving = driving.clone();
        tokio::spawn(async move {
            let result = drive(client, &config, run, latest).await;
            if let Err(e) = &result {
                tracing::debug!("simulator: {e}");
            }
            if let Ok(mut d) = driving.lock() {
                d.ended(&uid, result.is_ok());
            }
        });
    }
}

/// Waits until `latest` changes or `until` passes (for ever without `until`); `false` once
/// neither can happen any more (the simulator stopped and no time is due).
async fn next_change(latest: &mut Latest, until: Option<tokio::time::Instant>) -> bool {
    let due = async {
        match until {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        changed = latest.changed() => {
            if changed.is_err() {
                // No more events: only the time is left to wait for.
                return match until {
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        true
                    }
                    None => false,
                };
            }
            true
        }
        () = due => true,
    }
}

/// Now, to the nanosecond.
fn now() -> String {
    Timestamp::now().to_string()
}

/// How a replay ends once its TaskRuns have ended as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The run gets the recording's final status.
    Recorded,
    /// Nothing more happens until the run is cancelled or deleted.
    Never,
    /// The run gets the recording's final status at its own timeout.
    AtTimeout,
}

/// One run being driven.
struct Replay {
    runs: Api<DynamicObject>,
    taskruns: Api<DynamicObject>,
    /// The live run as first seen (its name, uid, labels, annotations, spec).
    live: Value,
    name: String,
    uid: String,
    recording: &'static Recording,
    subst: Substitution,
    /// Pipeline tasks whose TaskRun exists, in the order they started.
    started: Vec<String>,
    /// Pipeline tasks whose TaskRun has ended.
    ended: BTreeSet<String>,
    /// The run as the simulator's watch last delivered it.
    latest: Latest,
}

impl Replay {
    async fn patch_status(&self, status: Value) -> kube::Result<DynamicObject> {
        patch_run_status(&self.runs, &self.name, status).await
    }

    /// The run as last watched (`None` once deleted or replaced by another of its name).
    fn current(&mut self) -> Option<DynamicObject> {
        let current = self.latest.borrow_and_update().clone();
        current.filter(|r| r.uid().as_deref() == Some(self.uid.as_str()))
    }

    fn taskrun_name(&self, task: &str) -> String {
        format!("{}-{task}", self.name)
    }

    fn child_references(&self) -> Value {
        Value::Array(
            self.started
                .iter()
                .map(|t| {
                    json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                           "name": self.taskrun_name(t), "pipelineTaskName": t})
                })
                .collect(),
        )
    }

    /// The recorded run's status for the live run: substituted, keeping the live `startTime`.
    fn run_status(&self, recorded: &Value) -> Value {
        let mut status = self.subst.apply(&recorded["status"]);
        if let Some(map) = status.as_object_mut() {
            map.remove("startTime");
        }
        status
    }

    /// Tekton's first write: the labels it copies from the Pipeline onto the run, then `startTime`,
    /// the `Running` condition, the resolved pipeline and the first tasks' TaskRuns.
    async fn start(&mut self, scenario: Scenario) -> Result<(), SimulatorError> {
        self.copy_labels().await?;
        let started = self.patch_status(json!({"startTime": now()})).await?;
        let live_run = serde_json::to_value(&started).unwrap_or_default();
        self.subst
            .time(&self.recording.run, &live_run, &["status", "startTime"]);
        let first: Vec<String> = self
            .recording
            .task_runs
            .iter()
            .map(|tr| pipeline_task(tr).to_string())
            .filter(|t| {
                !self.recording.finally_tasks().contains(t)
                    && self.recording.run_after(t).is_empty()
            })
            .collect();
        for task in &first {
            self.start_task(task, scenario).await?;
        }
        self.write_running().await
    }

    /// Adds the recorded run's `tekton.dev/` labels (Tekton copies the Pipeline's onto the run).
    async fn copy_labels(&self) -> kube::Result<()> {
        let labels: serde_json::Map<String, Value> = self.recording.run["metadata"]["labels"]
            .as_object()
            .map(|labels| {
                labels
                    .iter()
                    .filter(|(k, _)| k.starts_with("tekton.dev/"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if labels.is_empty() {
            return Ok(());
        }
        self.runs
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": labels}})),
            )
            .await
            .map(|_| ())
    }

    /// The run's `Running` status with its current children.
    async fn write_running(&self) -> Result<(), SimulatorError> {
        let running = Recording::get("running")?;
        let mut status = self.run_status(&running.run);
        status["conditions"][0]["message"] = json!(running_message(
            self.ended.len(),
            self.recording.task_count()
        ));
        status["pipelineSpec"] = self.subst.apply(self.recording.pipeline_spec());
        status["provenance"] = self
            .subst
            .apply(&self.recording.run["status"]["provenance"]);
        status["childReferences"] = self.child_references();
        if let Some(map) = status.as_object_mut() {
            map.remove("finallyStartTime");
        }
        self.patch_status(status).await?;
        Ok(())
    }

    /// Creates the TaskRun of `task` as Tekton does, in the state it starts in.
    async fn start_task(&mut self, task: &str, scenario: Scenario) -> Result<(), SimulatorError> {
        let Some(recorded) = self.recording.task_run(task) else {
            return Ok(());
        };
        let name = self.taskrun_name(task);
        let mut tr = DynamicObject::new(&name, &taskrun_resource());
        tr.metadata.labels = Some(self.inherited(recorded, "labels"));
        tr.metadata.annotations = Some(self.inherited(recorded, "annotations"));
        tr.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "tekton.dev/v1".to_string(),
                kind: "PipelineRun".to_string(),
                name: self.name.clone(),
                uid: self.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        tr.data = json!({"spec": self.subst.apply(&recorded["spec"])});
        let created = match self.taskruns.create(&PostParams::default(), &tr).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => self.taskruns.get(&name).await?,
            Err(e) => return Err(e.into()),
        };
        let live_tr = serde_json::to_value(&created).unwrap_or_default();
        let status = self.start_state(recorded, &live_tr, scenario)?;
        let written = self.taskrun_status(task, status).await?;
        let written = serde_json::to_value(&written).unwrap_or_default();
        self.subst
            .time(recorded, &written, &["status", "startTime"]);
        // A step's recorded start is the start the simulator wrote for it.
        if let Some(steps) = recorded["status"]["steps"].as_array() {
            for (i, step) in steps.iter().enumerate() {
                if let (Some(old), Some(new)) = (
                    step["terminated"]["startedAt"].as_str(),
                    written["status"]["steps"][i]["running"]["startedAt"].as_str(),
                ) {
                    self.subst.times.insert(old.to_string(), new.to_string());
                }
            }
        }
        // Last, so that it wins over an equal recorded time: a step Tekton rewrote from waiting
        // starts at its TaskRun's creation.
        self.subst
            .time(recorded, &live_tr, &["metadata", "creationTimestamp"]);
        if !self.started.iter().any(|t| t == task) {
            self.started.push(task.to_string());
        }
        Ok(())
    }

    /// The labels or annotations of a TaskRun: the live run's, plus those Tekton adds (the
    /// recorded TaskRun's that the recorded run does not have).
    fn inherited(&self, recorded: &Value, key: &str) -> BTreeMap<String, String> {
        let strings = |v: &Value| -> BTreeMap<String, String> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let recorded_run = strings(&self.recording.run["metadata"][key]);
        let mut out = strings(&self.live["metadata"][key]);
        for (k, v) in strings(&self.subst.apply(&recorded["metadata"][key])) {
            if !recorded_run.contains_key(&k) || k.starts_with("tekton.dev/") {
                out.insert(k, v);
            }
        }
        out
    }

    /// The status a TaskRun starts with: the recorded in-progress one (`running`), or — for the
    /// TaskRuns Tekton never sees running — the quota wait, the image-pull wait, or the failure
    /// written when the pod could not be created.
    fn start_state(
        &self,
        recorded: &Value,
        live_tr: &Value,
        scenario: Scenario,
    ) -> Result<Value, SimulatorError> {
        match reason_of(recorded) {
            "ExceededResourceQuota" => {
                let quota = Recording::get("quota-running")?;
                let state = quota
                    .task_runs
                    .first()
                    .ok_or_else(|| SimulatorError::Recording {
                        name: quota.name,
                        reason: "no TaskRun".to_string(),
                    })?;
                Ok(self.subst.apply(&state["status"]))
            }
            "TaskRunImagePullFailed" => Ok(waiting_for_image(recorded, live_tr)),
            "PodCreationFailed" => Ok(self.final_taskrun_status(recorded, scenario)),
            _ => {
                let running = Recording::get("running")?;
                let state = running
                    .task_runs
                    .first()
                    .ok_or_else(|| SimulatorError::Recording {
                        name: running.name,
                        reason: "no TaskRun".to_string(),
                    })?;
                let mut status = state["status"].clone();
                // The recorded TaskRun's steps, in the recorded running state.
                let template = state["status"]["steps"][0].clone();
                let steps: Vec<Value> = recorded["status"]["steps"]
                    .as_array()
                    .map(|steps| {
                        steps
                            .iter()
                            .map(|s| {
                                let mut step = template.clone();
                                step["name"] = s["name"].clone();
                                step["container"] = s["container"].clone();
                                step
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                status["steps"] = Value::Array(steps);
                status["taskSpec"] = recorded["status"]["taskSpec"].clone();
                status["podName"] = recorded["status"]["podName"].clone();
                let mut subst = self.subst.clone();
                subst.time(
                    &state["metadata"],
                    &live_tr["metadata"],
                    &["creationTimestamp"],
                );
                Ok(subst.apply(&status))
            }
        }
    }

    /// The recorded final status of a TaskRun, for the live one.
    fn final_taskrun_status(&self, recorded: &Value, scenario: Scenario) -> Value {
        let mut status = self.subst.apply(&recorded["status"]);
        if scenario == Scenario::Forbidden {
            let pod = status["podName"]
                .as_str()
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| {
                    format!(
                        "{}-pod",
                        recorded["metadata"]["name"].as_str().unwrap_or_default()
                    )
                });
            let pod = self.subst.apply(&json!(pod));
            let task_run = self.subst.apply(&recorded["metadata"]["name"]);
            if let Some(condition) = status["conditions"].get_mut(0) {
                condition["message"] = json!(format!(
                    "failed to create task run pod {task_run}: pods {pod} is forbidden: violates \
                     PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false. Maybe \
                     invalid TaskSpec"
                ));
            }
        }
        status
    }

    async fn taskrun_status(&self, task: &str, status: Value) -> kube::Result<DynamicObject> {
        self.taskruns
            .patch_status(
                &self.taskrun_name(task),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
    }

    /// Ends the TaskRun of `task` as recorded, then starts the tasks that ran after it.
    async fn end_task(&mut self, task: &str, scenario: Scenario) -> Result<(), SimulatorError> {
        if let Some(recorded) = self.recording.task_run(task) {
            let mut status = self.final_taskrun_status(recorded, scenario);
            if let Some(map) = status.as_object_mut()
                && recorded["status"]["startTime"].is_string()
            {
                // Tekton keeps the start it wrote.
                map.remove("startTime");
            }
            self.taskrun_status(task, status).await?;
        }
        self.ended.insert(task.to_string());
        let next: Vec<String> = self
            .recording
            .task_runs
            .iter()
            .map(|tr| pipeline_task(tr).to_string())
            .filter(|t| {
                !self.started.contains(t) && !self.recording.finally_tasks().contains(t) && {
                    let after = self.recording.run_after(t);
                    !after.is_empty() && after.iter().all(|a| self.ended.contains(a))
                }
            })
            .collect();
        for task in &next {
            self.start_task(task, scenario).await?;
        }
        self.write_running().await
    }

    /// The run's recorded final status.
    async fn finish(&self) -> Result<(), SimulatorError> {
        let mut status = self.run_status(&self.recording.run);
        status["childReferences"] = self.child_references();
        self.patch_status(status).await?;
        Ok(())
    }

    /// Tekton cancelling the run (the `delete-running` recording): unfinished TaskRuns end
    /// `TaskRunCancelled`, `finally` tasks run unless `spec.status` is `Cancelled`, and the run
    /// ends `Cancelled`.
    async fn cancel(&mut self, current: &DynamicObject) -> Result<(), SimulatorError> {
        let cancelled = Recording::get("delete-running")?;
        let finally = cancelled.finally_tasks();
        let cancelled_tr = cancelled
            .task_runs
            .iter()
            .find(|tr| reason_of(tr) == "TaskRunCancelled")
            .ok_or_else(|| SimulatorError::Recording {
                name: cancelled.name,
                reason: "no cancelled TaskRun".to_string(),
            })?;
        let recorded_tr_name = cancelled_tr["metadata"]["name"]
            .as_str()
            .unwrap_or_default();
        for task in self.started.clone() {
            let name = self.taskrun_name(&task);
            let message = condition_of(cancelled_tr)
                .and_then(|c| c["message"].as_str())
                .unwrap_or_default()
                .replace(recorded_tr_name, &name);
            self.stop_taskrun(&task, "TaskRunCancelled", &message)
                .await?;
        }
        let live = serde_json::to_value(current).unwrap_or_default();
        let mut status = Substitution::new(&cancelled.run, &live).apply(&cancelled.run["status"]);
        if let Some(map) = status.as_object_mut() {
            map.remove("startTime");
            map.remove("pipelineSpec");
            map.remove("provenance");
            map.remove("finallyStartTime");
        }
        if cancel_runs_finally(&current.data) {
            let own_finally = self.recording.finally_tasks();
            for task in own_finally.iter().filter(|t| finally.contains(t)) {
                if let Some(recorded) = self.recording.task_run(task) {
                    self.start_task(task, Scenario::Hang).await?;
                    let final_status = self.subst.apply(&recorded["status"]);
                    self.taskrun_status(task, final_status).await?;
                }
            }
            if !own_finally.is_empty() {
                status["finallyStartTime"] = json!(now());
            }
        }
        status["childReferences"] = self.child_references();
        self.patch_status(status).await?;
        Ok(())
    }

    /// Tekton stopping an unfinished TaskRun (pkg/reconciler/taskrun/taskrun.go v1.12.2,
    /// `failTaskRun` → `terminateStepsInPod`, as recorded in `delete-running` and `timeout`):
    /// every running or waiting step becomes `terminated` with exit code 1 and the TaskRun's
    /// reason; a running step keeps its `startedAt`, a waiting one gets the TaskRun's creation
    /// time. A finished TaskRun is left alone.
    async fn stop_taskrun(&self, task: &str, reason: &str, message: &str) -> kube::Result<()> {
        let Some(tr) = self.taskruns.get_opt(&self.taskrun_name(task)).await? else {
            return Ok(());
        };
        if is_done(&tr.data) {
            return Ok(());
        }
        let created = tr
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let finished = now();
        let pod = tr.data["status"]["podName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let steps: Vec<Value> = tr.data["status"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|step| {
                let started = if let Some(at) = step["running"]["startedAt"].as_str() {
                    at.to_string()
                } else if step["waiting"].is_object() {
                    created.clone()
                } else {
                    return step;
                };
                let name = step["name"].as_str().unwrap_or_default().to_string();
                json!({
                    "name": name, "container": step["container"],
                    "terminated": {
                        "exitCode": 1, "reason": reason,
                        "message": format!("Step {name} terminated as pod {pod} is terminated"),
                        "startedAt": started, "finishedAt": finished,
                    },
                    "terminationReason": reason,
                })
            })
            .collect();
        let condition = json!([{
            "type": "Succeeded", "status": "False", "reason": reason, "message": message,
            "lastTransitionTime": finished,
        }]);
        self.taskruns
            .patch_status(
                &self.taskrun_name(task),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {
                    "completionTime": finished, "conditions": condition, "steps": steps,
                }})),
            )
            .await
            .map(|_| ())
    }
}

/// A TaskRun whose step containers wait for an image that cannot be pulled, as Tekton reports it
/// while the pod is pending (pkg/pod/status.go v1.12.2, `updateIncompleteTaskRunStatus`:
/// `PullImageFailed` with `getWaitingMessage`); the image is the recorded step's.
fn waiting_for_image(recorded: &Value, live_tr: &Value) -> Value {
    let image = recorded["spec"]["taskSpec"]["steps"][0]["image"]
        .as_str()
        .unwrap_or("registry.invalid/image:missing");
    let back_off = format!("Back-off pulling image \"{image}\"");
    let steps: Vec<Value> = recorded["status"]["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    json!({"name": s["name"], "container": s["container"],
                           "waiting": {"reason": "ImagePullBackOff", "message": back_off}})
                })
                .collect()
        })
        .unwrap_or_default();
    let first = steps
        .first()
        .and_then(|s| s["container"].as_str())
        .unwrap_or_default()
        .to_string();
    json!({
        "podName": format!("{}-pod", live_tr["metadata"]["name"].as_str().unwrap_or_default()),
        "startTime": now(),
        "conditions": [{
            "type": "Succeeded", "status": "Unknown", "reason": "PullImageFailed",
            "message": format!("build step \"{first}\" is pending with reason {back_off:?}"),
            "lastTransitionTime": now(),
        }],
        "steps": steps,
    })
}

/// What the replay of `scenario` does after its start: which recorded TaskRuns end (in order)
/// and how the run ends.
fn plan(scenario: Scenario, recording: &Recording) -> (Vec<String>, Ending) {
    let tasks: Vec<String> = recording
        .task_runs
        .iter()
        .map(|tr| pipeline_task(tr).to_string())
        .filter(|t| !recording.finally_tasks().contains(t))
        .collect();
    match scenario {
        Scenario::Hang => (Vec::new(), Ending::Never),
        // The second task keeps waiting for its image.
        Scenario::SecondTaskPullBackOff => (tasks.into_iter().take(1).collect(), Ending::Never),
        // The TaskRun never ends: it waits on the quota until the run times out.
        Scenario::Quota => (Vec::new(), Ending::AtTimeout),
        _ => (tasks, Ending::Recorded),
    }
}

async fn drive(
    client: Client,
    config: &SimulatorConfig,
    obj: DynamicObject,
    mut latest: Latest,
) -> Result<(), SimulatorError> {
    let ns = obj.namespace().unwrap_or_default();
    let scenario = Scenario::from_bundle(&bundle_of(&obj.data));
    let runs = Api::namespaced_with(client.clone(), &ns, &pipelinerun_resource());
    let live = serde_json::to_value(&obj).unwrap_or_default();
    let Some(recording_name) = scenario.recording() else {
        return resolve_forever(&runs, config, &obj, &mut latest).await;
    };
    let recording = Recording::get(recording_name)?;
    let mut subst = Substitution::new(&recording.run, &live);
    subst.time(&recording.run, &live, &["metadata", "creationTimestamp"]);
    let mut replay = Replay {
        runs,
        taskruns: Api::namespaced_with(client, &ns, &taskrun_resource()),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        live,
        recording,
        subst,
        started: Vec::new(),
        ended: BTreeSet::new(),
        latest,
    };
    if !obj.data["status"]["startTime"].is_null() {
        replay.resume(&obj).await?;
    } else if scenario == Scenario::CouldntGetPipeline {
        tokio::time::sleep(config.start_delay).await;
        return replay.fail_resolution().await;
    } else {
        tokio::time::sleep(config.start_delay).await;
        replay.start(scenario).await?;
    }
    let timeout = obj.data["spec"]["timeouts"]["pipeline"]
        .as_str()
        .and_then(parse_go_duration)
        .unwrap_or(Duration::from_secs(3600));
    replay.play(config, scenario, timeout).await
}

impl Replay {
    /// The recording's failed resolution: Tekton fails the run in its first reconcile, so it
    /// starts and ends at once.
    async fn fail_resolution(&self) -> Result<(), SimulatorError> {
        self.copy_labels().await?;
        let mut status = self.subst.apply(&self.recording.run["status"]);
        status["startTime"] = self.live["metadata"]["creationTimestamp"].clone();
        self.patch_status(status).await?;
        Ok(())
    }

    /// Picks up a run another simulator started: its TaskRuns, and which of them ended.
    async fn resume(&mut self, obj: &DynamicObject) -> Result<(), SimulatorError> {
        for child in obj.data["status"]["childReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let Some(task) = child["pipelineTaskName"].as_str() else {
                continue;
            };
            self.started.push(task.to_string());
            if let Some(tr) = self.taskruns.get_opt(&self.taskrun_name(task)).await?
                && is_done(&tr.data)
            {
                self.ended.insert(task.to_string());
            }
        }
        Ok(())
    }

    /// Ends the recorded TaskRuns one after the other over the run time, then ends the run as
    /// the scenario says; a cancellation or deletion seen on the way takes over.
    async fn play(
        &mut self,
        config: &SimulatorConfig,
        scenario: Scenario,
        timeout: Duration,
    ) -> Result<(), SimulatorError> {
        let (to_end, ending) = plan(scenario, self.recording);
        let to_end: Vec<String> = to_end
            .into_iter()
            .filter(|t| !self.ended.contains(t))
            .collect();
        let begun = tokio::time::Instant::now();
        let step = config.run_time / u32::try_from(to_end.len().max(1)).unwrap_or(1);
        let mut next = 0usize;
        loop {
            let Some(current) = self.current() else {
                return Ok(());
            };
            if is_done(&current.data) {
                return Ok(());
            }
            if is_cancel_requested(&current.data) {
                return self.cancel(&current).await;
            }
            let now = tokio::time::Instant::now();
            let due = begun + step * u32::try_from(next + 1).unwrap_or(u32::MAX);
            if next < to_end.len() && now >= due {
                self.end_task(&to_end[next], scenario).await?;
                next += 1;
                continue;
            }
            let wake = if next < to_end.len() {
                Some(due)
            } else {
                match ending {
                    Ending::Recorded => return self.finish().await,
                    Ending::AtTimeout if now >= begun + timeout => {
                        // The TaskRuns as the recording left them, then the run's timeout.
                        for task in self.started.clone() {
                            if let Some(recorded) = self.recording.task_run(&task) {
                                let status = self.subst.apply(&recorded["status"]);
                                self.taskrun_status(&task, status).await?;
                            }
                        }
                        return self.finish().await;
                    }
                    Ending::AtTimeout => Some(begun + timeout),
                    Ending::Never => None,
                }
            };
            if !next_change(&mut self.latest, wake).await {
                return Ok(());
            }
        }
    }
}

/// [`Scenario::Resolving`]: Tekton has started the run and waits for the bundles resolver
/// (pkg/reconciler/pipelinerun/pipelinerun.go v1.12.2: `InitializeConditions` sets `startTime`,
/// then `MarkRunning(ResolvingPipelineRef, …)`; no TaskRun exists yet), until the run is
/// cancelled or deleted.
async fn resolve_forever(
    runs: &Api<DynamicObject>,
    config: &SimulatorConfig,
    obj: &DynamicObject,
    latest: &mut Latest,
) -> Result<(), SimulatorError> {
    let name = obj.name_any();
    let ns = obj.namespace().unwrap_or_default();
    let uid = obj.uid();
    let condition = |status: &str, reason: &str, message: String| {
        json!([{"type": "Succeeded", "status": status, "reason": reason, "message": message,
                "lastTransitionTime": now()}])
    };
    if obj.data["status"]["startTime"].is_null() {
        tokio::time::sleep(config.start_delay).await;
        patch_run_status(
            runs,
            &name,
            json!({
                "startTime": now(),
                "conditions": condition("Unknown", "ResolvingPipelineRef",
                    format!("PipelineRun {ns}/{name} awaiting remote resource")),
            }),
        )
        .await?;
    }
    loop {
        let current = latest.borrow_and_update().clone();
        let Some(current) = current.filter(|r| r.uid() == uid) else {
            return Ok(());
        };
        if is_done(&current.data) {
            return Ok(());
        }
        if is_cancel_requested(&current.data) {
            patch_run_status(
                runs,
                &name,
                json!({
                    "completionTime": now(),
                    "conditions": condition("False", "Cancelled",
                        format!("PipelineRun \"{name}\" was cancelled")),
                }),
            )
            .await?;
            return Ok(());
        }
        if !next_change(latest, None).await {
            return Ok(());
        }
    }
}

async fn patch_run_status(
    runs: &Api<DynamicObject>,
    name: &str,
    status: Value,
) -> kube::Result<DynamicObject> {
    runs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(status: Value) -> DynamicObject {
        let mut run = DynamicObject::new("r", &pipelinerun_resource());
        run.data = json!({ "status": status });
        run
    }

    #[test]
    fn a_run_driven_to_its_end_is_not_driven_again_by_lagging_events() {
        let mut driving = Driving::default();
        let running = run_with(json!({"startTime": "2026-12-02T06:33:07Z"}));
        let latest = driving
            .event("u", Some(running.clone()))
            .expect("a new run is driven");
        // Events while driven reach the drive.
        assert!(driving.event("u", Some(run_with(json!({})))).is_none());
        assert!(latest.has_changed().unwrap_or(false));
        driving.ended("u", true);
        // The event of an earlier write arrives after the drive ended.
        assert!(driving.event("u", Some(running.clone())).is_none());
        // A drive that failed part-way may be picked up again …
        let _retry = driving
            .event("v", Some(running.clone()))
            .expect("a new run is driven");
        driving.ended("v", false);
        assert!(driving.event("v", Some(running.clone())).is_some());
        // … and an ended run forgotten once deleted.
        assert!(driving.event("u", None).is_none());
        assert!(!driving.finished.contains("u"));
        // A run deleted while driven is not remembered.
        let _deleted = driving.event("x", Some(running.clone()));
        assert!(driving.event("x", None).is_none());
        driving.ended("x", true);
        assert!(driving.finished.is_empty());
        // A run seen done is never driven.
        let done = run_with(json!({"conditions": [{"type": "Succeeded", "status": "True"}]}));
        assert!(driving.event("w", Some(done)).is_none());
    }

    #[test]
    fn bundles_script_scenarios() {
        let cases = [
            ("registry.example/wf/success:v1", Scenario::Success),
            (
                "registry.example/wf/oom-killed@sha256:abc",
                Scenario::OomKilled,
            ),
            ("oom-killed", Scenario::OomKilled),
            ("registry.example:5000/wf/timeout:v2", Scenario::Timeout),
            ("registry.example/wf/something-else:v1", Scenario::Success),
        ];
        for (bundle, want) in cases {
            assert_eq!(Scenario::from_bundle(bundle), want, "{bundle}");
        }
        for s in Scenario::ALL {
            assert_eq!(Scenario::from_bundle(&s.bundle()), s);
        }
    }

    #[test]
    fn every_recording_parses_with_its_taskruns_in_dag_order() {
        for (name, _) in RECORDED {
            let recording = Recording::get(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(recording.run["kind"], "PipelineRun", "{name}");
            let refs = recording.run["status"]["childReferences"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (child, tr) in refs.iter().zip(&recording.task_runs) {
                assert_eq!(child["name"], tr["metadata"]["name"], "{name}");
            }
        }
        for scenario in Scenario::ALL {
            if let Some(name) = scenario.recording() {
                assert!(Recording::get(name).is_ok(), "{scenario:?}: {name}");
            }
        }
    }

    /// The `Running` message the simulator writes while tasks complete has Tekton's format.
    #[test]
    fn running_message_matches_the_recorded_one() {
        for name in ["running", "quota-running"] {
            let recording = Recording::get(name).unwrap_or_else(|e| panic!("{e}"));
            let recorded = condition_of(&recording.run)
                .and_then(|c| c["message"].as_str())
                .unwrap_or_default();
            assert_eq!(
                running_message(0, recording.task_count()),
                recorded,
                "{name}"
            );
        }
    }

    #[test]
    fn substitution_replaces_names_and_maps_times() {
        let recorded = json!({
            "metadata": {"name": "wfe-old", "namespace": "old-ns", "uid": "u-old",
                         "creationTimestamp": "2026-12-02T06:33:03Z"},
            "spec": {"params": [{"name": "TARGET_RESOURCE", "value": "old-ns-x/deployment/a"}],
                     "pipelineRef": {"params": [{"name": "bundle",
                         "value": "127.0.0.1:1/kubernaut/workflows/gone:v1"}]},
                     "timeouts": {"pipeline": "20s"}},
        });
        let live = json!({
            "metadata": {"name": "wfe-new", "namespace": "exec", "uid": "u-new",
                         "creationTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {"params": [{"name": "TARGET_RESOURCE", "value": "default/deployment/b"}],
                     "pipelineRef": {"params": [{"name": "bundle",
                         "value": "registry.example/kubernaut/workflows/couldnt-get-pipeline:v2"}]},
                     "timeouts": {"pipeline": "1h0m0s"}},
        });
        let mut subst = Substitution::new(&recorded, &live);
        subst.time(&recorded, &live, &["metadata", "creationTimestamp"]);
        let out = subst.apply(&json!({
            "task": "wfe-old-remediate in old-ns, uid u-old, target old-ns-x/deployment/a",
            "message": "GET http://127.0.0.1:1/v2/kubernaut/workflows/gone/manifests/v1: NAME_UNKNOWN; \
                        failed to finish within \"20s\"",
            "created": "2026-12-02T06:33:03Z",
            "later": "2026-12-02T06:33:09Z",
        }));
        assert_eq!(
            out["task"],
            "wfe-new-remediate in exec, uid u-new, target default/deployment/b"
        );
        assert_eq!(
            out["message"],
            "GET http://registry.example/v2/kubernaut/workflows/couldnt-get-pipeline/manifests/v2: \
             NAME_UNKNOWN; failed to finish within \"1h0m0s\""
        );
        assert_eq!(out["created"], "2030-01-01T00:00:00Z");
        let later = out["later"].as_str().unwrap_or_default();
        assert!(later.parse::<Timestamp>().is_ok() && later != "2026-12-02T06:33:09Z");
    }

    #[test]
    fn go_durations_parse_as_tekton_writes_them() {
        let cases = [
            ("1h0m0s", Some(3600.0)),
            ("30s", Some(30.0)),
            ("1.5h", Some(5400.0)),
            ("500ms", Some(0.5)),
            ("0", Some(0.0)),
            ("soon", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_go_duration(text).map(|d| d.as_secs_f64()),
                want,
                "{text}"
            );
        }
    }
}
