//! A Tekton simulator for tests: watches `tekton.dev/v1` PipelineRuns and drives them the way the
//! Tekton controller does — `Succeeded` condition with Tekton's reasons and messages, `startTime`,
//! `completionTime`, `childReferences`, and TaskRuns with step states and exit codes.
//!
//! The outcome is scripted by the bundle reference (`spec.pipelineRef.params[bundle]`): the last
//! path segment of the image, before the tag or digest, names a [`Scenario`]
//! (`registry.example/workflows/oom-killed:v1` → [`Scenario::OomKilled`]). An unknown name runs as
//! [`Scenario::Success`].
//!
//! Guarantees:
//! 1. Every write is a status-subresource merge patch, as Tekton's own writes are; the spec is never
//!    touched.
//! 2. `spec.status: Cancelled` (or `CancelledRunFinally`) on an unfinished run is honoured like Tekton
//!    does: the run and its TaskRuns end `Succeeded=False` with reason `Cancelled`.
//! 3. A run deleted while being driven is dropped quietly.
//!
//! Caveats:
//! 1. Test code only: it creates TaskRuns but no Pods, and times are wall-clock.
//! 2. A simulator restarted while a run is in flight resumes it from its current status (it does not
//!    re-create TaskRuns that already exist).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::tekton::{pipelinerun_resource, taskrun_resource};

/// What a simulated PipelineRun does, chosen by its bundle reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Two tasks, both succeed. Bundle name `success` (and any unknown name).
    Success,
    /// The second task's step exits 1. Bundle name `task-failure`.
    TaskFailure,
    /// The second task's step is OOMKilled (exit 137). Bundle name `oom-killed`.
    OomKilled,
    /// The run exceeds its timeout: `PipelineRunTimeout`. Bundle name `timeout`.
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
    /// The first task's pod exceeds a ResourceQuota: `ExceededResourceQuota`. Bundle name `quota`.
    Quota,
    /// The first task's pod is forbidden by RBAC. Bundle name `forbidden`.
    Forbidden,
    /// The pipeline cannot be resolved before anything starts: `CouldntGetPipeline`.
    /// Bundle name `couldnt-get-pipeline`.
    CouldntGetPipeline,
    /// The run starts and never finishes (until cancelled). Bundle name `hang`.
    Hang,
}

impl Scenario {
    /// The scenario a bundle reference scripts.
    pub fn from_bundle(bundle: &str) -> Scenario {
        let last = bundle.rsplit('/').next().unwrap_or(bundle);
        let name = last.split(['@', ':']).next().unwrap_or(last);
        match name {
            "task-failure" => Scenario::TaskFailure,
            "oom-killed" => Scenario::OomKilled,
            "timeout" => Scenario::Timeout,
            "image-pull" => Scenario::ImagePull,
            "second-task-image-pull" => Scenario::SecondTaskImagePull,
            "second-task-pull-backoff" => Scenario::SecondTaskPullBackOff,
            "resolving" => Scenario::Resolving,
            "quota" => Scenario::Quota,
            "forbidden" => Scenario::Forbidden,
            "couldnt-get-pipeline" => Scenario::CouldntGetPipeline,
            "hang" => Scenario::Hang,
            _ => Scenario::Success,
        }
    }

    /// A bundle reference that scripts this scenario.
    pub fn bundle(self) -> String {
        let name = match self {
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
        };
        format!("registry.example/kubernaut/workflows/{name}:v1")
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
    /// How often a started run is re-read for cancellation or deletion (one GET per run each
    /// time; a benchmark raises it so the simulator's reads do not load the API server).
    pub poll_interval: Duration,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            namespace: None,
            run_time: Duration::from_millis(300),
            start_delay: Duration::from_millis(20),
            poll_interval: Duration::from_millis(50),
        }
    }
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

const TASKS: [&str; 2] = ["prepare", "apply"];

fn now() -> String {
    Timestamp::now().to_string()
}

fn bundle_of(run: &DynamicObject) -> String {
    run.data["spec"]["pipelineRef"]["params"]
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

fn succeeded(obj: &Value) -> Option<&Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Succeeded")
}

fn is_done(obj: &Value) -> bool {
    succeeded(obj).is_some_and(|c| c["status"] == "True" || c["status"] == "False")
}

fn is_cancel_requested(obj: &Value) -> bool {
    matches!(
        obj["spec"]["status"].as_str(),
        Some("Cancelled" | "CancelledRunFinally" | "StoppedRunFinally")
    )
}

fn condition(status: &str, reason: &str, message: &str) -> Value {
    json!([{
        "type": "Succeeded", "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now()
    }])
}

impl Simulator {
    /// Start the simulator on `client`.
    pub fn start(client: Client, config: SimulatorConfig) -> Simulator {
        let task = tokio::spawn(run(client, config));
        Simulator { task }
    }
}

async fn run(client: Client, config: SimulatorConfig) {
    let resource = pipelinerun_resource();
    let api: Api<DynamicObject> = match &config.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let driving: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    loop {
        let run = match events.try_next().await {
            Ok(Some(run)) => run,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("simulator watch error: {e}");
                continue;
            }
        };
        let Some(uid) = run.uid() else { continue };
        if is_done(&run.data) {
            continue;
        }
        let is_new = driving
            .lock()
            .map(|mut d| d.insert(uid.clone()))
            .unwrap_or(false);
        if !is_new {
            continue;
        }
        let client = client.clone();
        let config = config.clone();
        let driving = driving.clone();
        tokio::spawn(async move {
            if let Err(e) = drive(client, &config, run).await {
                tracing::debug!("simulator: {e}");
            }
            if let Ok(mut d) = driving.lock() {
                d.remove(&uid);
            }
        });
    }
}

struct Run {
    runs: Api<DynamicObject>,
    taskruns: Api<DynamicObject>,
    name: String,
    uid: String,
    /// The run's labels and annotations: Tekton copies them onto its TaskRuns.
    labels: std::collections::BTreeMap<String, String>,
    annotations: std::collections::BTreeMap<String, String>,
}

impl Run {
    async fn patch_status(&self, status: Value) -> kube::Result<DynamicObject> {
        self.runs
            .patch_status(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
    }

    async fn current(&self) -> kube::Result<Option<DynamicObject>> {
        let current = self.runs.get_opt(&self.name).await?;
        Ok(current.filter(|r| r.uid().as_deref() == Some(self.uid.as_str())))
    }

    fn taskrun_name(&self, task: &str) -> String {
        format!("{}-{task}", self.name)
    }

    /// Creates the TaskRun of `task` with its step `running`, or with the `(conditions, steps)`
    /// given.
    async fn create_taskrun(&self, task: &str, state: Option<(Value, Value)>) -> kube::Result<()> {
        let mut tr = DynamicObject::new(&self.taskrun_name(task), &taskrun_resource());
        let mut labels = self.labels.clone();
        labels.insert("tekton.dev/pipelineRun".to_string(), self.name.clone());
        labels.insert("tekton.dev/pipelineTask".to_string(), task.to_string());
        tr.metadata.labels = Some(labels);
        tr.metadata.annotations = Some(self.annotations.clone());
        tr.data = json!({"spec": {"taskRef": {"name": task}}});
        match self.taskruns.create(&PostParams::default(), &tr).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e),
        }
        let (conditions, steps) = state.unwrap_or_else(|| {
            (
                condition(
                    "Unknown",
                    "Running",
                    "Not all Steps in the Task have finished executing",
                ),
                json!([{"name": task, "container": format!("step-{task}"),
                        "running": {"startedAt": now()}}]),
            )
        });
        self.taskrun_status(
            task,
            json!({
                "podName": format!("{}-pod", self.taskrun_name(task)),
                "startTime": now(),
                "conditions": conditions,
                "steps": steps,
            }),
        )
        .await
    }

    async fn taskrun_status(&self, task: &str, status: Value) -> kube::Result<()> {
        self.taskruns
            .patch_status(
                &self.taskrun_name(task),
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .map(|_| ())
    }

    async fn finish_taskrun(
        &self,
        task: &str,
        ok: bool,
        reason: &str,
        message: &str,
        step: Value,
    ) -> kube::Result<()> {
        self.taskrun_status(
            task,
            json!({
                "completionTime": now(),
                "conditions": condition(if ok { "True" } else { "False" }, reason, message),
                "steps": [step]
            }),
        )
        .await
    }

    /// The TaskRun's `metadata.creationTimestamp`, as the API server writes it.
    async fn taskrun_created(&self, task: &str) -> kube::Result<String> {
        let tr = self.taskruns.get(&self.taskrun_name(task)).await?;
        Ok(tr
            .metadata
            .creation_timestamp
            .map(|t| t.0.to_string())
            .unwrap_or_default())
    }

    /// Tekton failing the TaskRun of `task` whose step cannot pull its image
    /// (pkg/reconciler/taskrun/taskrun.go in tektoncd/pipeline v1.12.2: `checkContainerFailure`
    /// writes the reason and message, `failTaskRun` → `terminateStepsInPod` rewrites the waiting
    /// step into `terminated` with exit code 1, the TaskRun's reason, and the TaskRun's creation
    /// time as `startedAt`; the step's empty `imageID` is the image the message names).
    async fn fail_image_pull(&self, task: &str) -> kube::Result<()> {
        let tr = self.taskrun_name(task);
        let created = self.taskrun_created(task).await?;
        let finished = now_seconds();
        self.taskrun_status(
            task,
            json!({
                "completionTime": finished,
                "conditions": condition("False", "TaskRunImagePullFailed", &format!(
                    "the step \"{task}\" in TaskRun \"{tr}\" failed to pull the image \"\". The pod errored with the message: \"{PULL_BACK_OFF}.\""
                )),
                "steps": [{
                    "name": task, "container": format!("step-{task}"),
                    "terminated": {
                        "exitCode": 1, "reason": "TaskRunImagePullFailed",
                        "message": format!("Step {task} terminated as pod {tr}-pod is terminated"),
                        "startedAt": created, "finishedAt": finished,
                    },
                    "terminationReason": "TaskRunImagePullFailed",
                }]
            }),
        )
        .await
    }

    /// Tekton stopping an unfinished TaskRun (pkg/reconciler/taskrun/taskrun.go v1.12.2,
    /// `failTaskRun` → `terminateStepsInPod`): every running or waiting step becomes
    /// `terminated` with exit code 1 and the TaskRun's reason; a running step keeps its
    /// `startedAt`, a waiting one gets the TaskRun's creation time. A finished TaskRun is left
    /// alone.
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
        let finished = now_seconds();
        let pod = format!("{}-pod", self.taskrun_name(task));
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
        self.taskrun_status(
            task,
            json!({
                "completionTime": finished,
                "conditions": condition("False", reason, message),
                "steps": steps,
            }),
        )
        .await
    }

    fn child_references(&self, tasks: &[&str]) -> Value {
        Value::Array(
            tasks
                .iter()
                .map(|t| {
                    json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                           "name": self.taskrun_name(t), "pipelineTaskName": t})
                })
                .collect(),
        )
    }
}

/// The kubelet's message for a step container whose image cannot be pulled.
const PULL_BACK_OFF: &str =
    "Back-off pulling image \"registry.example/kubernaut/tools/kubectl:missing\"";

/// A TaskRun whose step container waits for its image, as Tekton reports it while the pod is
/// pending (pkg/pod/status.go v1.12.2, `updateIncompleteTaskRunStatus`: `PullImageFailed` with
/// `getWaitingMessage`): `(conditions, steps)`.
fn waiting_for_image(task: &str) -> (Value, Value) {
    (
        condition(
            "Unknown",
            "PullImageFailed",
            &format!("build step \"step-{task}\" is pending with reason {PULL_BACK_OFF:?}"),
        ),
        json!([{"name": task, "container": format!("step-{task}"),
                "waiting": {"reason": "ImagePullBackOff", "message": PULL_BACK_OFF}}]),
    )
}

/// Now, to the second, as Kubernetes and Tekton write times (`metav1.Time`).
fn now_seconds() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| now())
}

fn running_message(completed: usize, incomplete: usize) -> String {
    format!(
        "Tasks Completed: {completed} (Failed: 0, Cancelled 0), Incomplete: {incomplete}, Skipped: 0"
    )
}

fn terminated(task: &str, exit_code: i64, reason: &str) -> Value {
    json!({"name": task, "container": format!("step-{task}"),
           "terminated": {"exitCode": exit_code, "reason": reason,
                          "startedAt": now(), "finishedAt": now()}})
}

async fn drive(client: Client, config: &SimulatorConfig, obj: DynamicObject) -> kube::Result<()> {
    let ns = obj.namespace().unwrap_or_default();
    let run = Run {
        runs: Api::namespaced_with(client.clone(), &ns, &pipelinerun_resource()),
        taskruns: Api::namespaced_with(client, &ns, &taskrun_resource()),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        labels: obj.labels().clone(),
        annotations: obj.annotations().clone(),
    };
    let scenario = Scenario::from_bundle(&bundle_of(&obj));
    let name = run.name.clone();

    if obj.data["status"]["startTime"].is_null() {
        tokio::time::sleep(config.start_delay).await;
        if scenario == Scenario::CouldntGetPipeline {
            run.patch_status(json!({
                "completionTime": now(),
                "conditions": condition("False", "CouldntGetPipeline",
                    &format!("Error retrieving pipeline for pipelinerun {ns}/{name}: error requesting remote resource: bundle not found")),
            }))
            .await?;
            return Ok(());
        }
        if scenario == Scenario::Resolving {
            // pkg/reconciler/pipelinerun/pipelinerun.go (v1.12.2): `InitializeConditions` sets
            // startTime, then `MarkRunning(ResolvingPipelineRef, …)` while the bundle resolver
            // has not answered; no TaskRun exists yet.
            run.patch_status(json!({
                "startTime": now(),
                "conditions": condition("Unknown", "ResolvingPipelineRef",
                    &format!("PipelineRun {ns}/{name} awaiting remote resource")),
            }))
            .await?;
        } else {
            // Tasks that run one after the other get their TaskRun when the previous one is
            // done (childReferences grows with the DAG).
            let first_only = matches!(
                scenario,
                Scenario::ImagePull
                    | Scenario::Quota
                    | Scenario::Forbidden
                    | Scenario::SecondTaskImagePull
                    | Scenario::SecondTaskPullBackOff
            );
            let tasks: &[&str] = if first_only { &TASKS[..1] } else { &TASKS[..] };
            for task in tasks {
                let steps = match scenario {
                    Scenario::ImagePull => Some(waiting_for_image(task)),
                    // No pod could be created: no step has a state (pkg/reconciler/taskrun/
                    // taskrun.go v1.12.2, `handlePodCreationError` keeps a quota-refused
                    // TaskRun ongoing).
                    Scenario::Quota => Some((
                        condition(
                            "Unknown",
                            "ExceededResourceQuota",
                            &format!(
                                "TaskRun Pod exceeded available resources: pods \"{}-pod\" is forbidden: exceeded quota: compute-quota",
                                run.taskrun_name(task)
                            ),
                        ),
                        json!([]),
                    )),
                    Scenario::Forbidden => {
                        Some((condition("Unknown", "Pending", "Pending"), json!([])))
                    }
                    _ => None,
                };
                run.create_taskrun(task, steps).await?;
            }
            run.patch_status(json!({
                "startTime": now(),
                "conditions": condition("Unknown", "Running", &running_message(0, TASKS.len())),
                "childReferences": run.child_references(tasks),
                // The resolved pipeline, as Tekton copies it into the run's status.
                "pipelineSpec": {"tasks": TASKS.iter().map(|t| json!({"name": t})).collect::<Vec<_>>()},
            }))
            .await?;
        }
    }
    let in_flight = matches!(
        scenario,
        Scenario::Hang | Scenario::Resolving | Scenario::SecondTaskPullBackOff
    );
    let mut second_task_started = obj.data["status"]["childReferences"]
        .as_array()
        .is_some_and(|refs| refs.len() > 1);

    // Wait for the run time, watching for cancellation or deletion.
    let deadline = tokio::time::Instant::now() + config.run_time;
    loop {
        let Some(current) = run.current().await? else {
            return Ok(());
        };
        if is_done(&current.data) {
            return Ok(());
        }
        if is_cancel_requested(&current.data) {
            return cancel(&run, &current).await;
        }
        let sequential = matches!(
            scenario,
            Scenario::SecondTaskImagePull | Scenario::SecondTaskPullBackOff
        );
        if sequential
            && !second_task_started
            && tokio::time::Instant::now() + config.run_time / 2 >= deadline
        {
            start_second_task(&run).await?;
            second_task_started = true;
        }
        if !in_flight && tokio::time::Instant::now() >= deadline {
            break;
        }
        let pause = if in_flight {
            config.poll_interval
        } else {
            // Not past the deadline (checked above): wake at the deadline at the latest.
            config
                .poll_interval
                .min(deadline.saturating_duration_since(tokio::time::Instant::now()))
        };
        tokio::time::sleep(pause).await;
    }
    finish(&run, scenario).await
}

/// The first task succeeded; the second one's TaskRun is created, its step waiting for an image
/// that cannot be pulled.
async fn start_second_task(run: &Run) -> kube::Result<()> {
    let (prepare, apply) = (TASKS[0], TASKS[1]);
    run.finish_taskrun(
        prepare,
        true,
        "Succeeded",
        "All Steps have completed executing",
        terminated(prepare, 0, "Completed"),
    )
    .await?;
    run.create_taskrun(apply, Some(waiting_for_image(apply)))
        .await?;
    run.patch_status(json!({
        "conditions": condition("Unknown", "Running", &running_message(1, 1)),
        "childReferences": run.child_references(&TASKS),
    }))
    .await?;
    Ok(())
}

async fn cancel(run: &Run, current: &DynamicObject) -> kube::Result<()> {
    let children: Vec<String> = current.data["status"]["childReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["pipelineTaskName"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for task in &children {
        run.stop_taskrun(
            task,
            "TaskRunCancelled",
            "TaskRun cancelled as the PipelineRun it belongs to has been cancelled.",
        )
        .await?;
    }
    run.patch_status(json!({
        "completionTime": now(),
        "conditions": condition("False", "Cancelled",
            &format!("PipelineRun \"{}\" was cancelled", run.name)),
    }))
    .await?;
    Ok(())
}

async fn finish(run: &Run, scenario: Scenario) -> kube::Result<()> {
    let name = run.name.clone();
    let (prepare, apply) = (TASKS[0], TASKS[1]);
    let pipeline_failed = |failed: usize, completed: usize| {
        format!("Tasks Completed: {completed} (Failed: {failed}, Cancelled 0), Skipped: 0")
    };
    let (reason, message) = match scenario {
        Scenario::Success | Scenario::CouldntGetPipeline => {
            for task in TASKS {
                run.finish_taskrun(
                    task,
                    true,
                    "Succeeded",
                    "All Steps have completed executing",
                    terminated(task, 0, "Completed"),
                )
                .await?;
            }
            run.patch_status(json!({
                "completionTime": now(),
                "conditions": condition("True", "Succeeded",
                    "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"),
            }))
            .await?;
            return Ok(());
        }
        Scenario::TaskFailure | Scenario::OomKilled => {
            run.finish_taskrun(
                prepare,
                true,
                "Succeeded",
                "All Steps have completed executing",
                terminated(prepare, 0, "Completed"),
            )
            .await?;
            let (code, step_reason) = if scenario == Scenario::OomKilled {
                (137, "OOMKilled")
            } else {
                (1, "Error")
            };
            run.finish_taskrun(
                apply,
                false,
                "Failed",
                &format!("\"step-{apply}\" exited with code {code}"),
                terminated(apply, code, step_reason),
            )
            .await?;
            ("Failed".to_string(), pipeline_failed(1, 2))
        }
        Scenario::Timeout => {
            run.finish_taskrun(
                prepare,
                true,
                "Succeeded",
                "All Steps have completed executing",
                terminated(prepare, 0, "Completed"),
            )
            .await?;
            run.finish_taskrun(
                apply,
                false,
                "TaskRunCancelled",
                "TaskRun cancelled as the PipelineRun it belongs to has timed out.",
                terminated(apply, 1, "TaskRunCancelled"),
            )
            .await?;
            (
                "PipelineRunTimeout".to_string(),
                format!("PipelineRun \"{name}\" failed to finish within \"1h0m0s\""),
            )
        }
        Scenario::ImagePull => {
            run.fail_image_pull(prepare).await?;
            // The second task depends on the first: skipped, never created.
            (
                "Failed".to_string(),
                "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 1".to_string(),
            )
        }
        Scenario::SecondTaskImagePull => {
            run.fail_image_pull(apply).await?;
            ("Failed".to_string(), pipeline_failed(1, 2))
        }
        Scenario::Quota => {
            run.finish_taskrun(prepare, false, "ExceededResourceQuota",
                &format!("TaskRun Pod exceeded available resources: pods \"{name}-{prepare}-pod\" is forbidden: exceeded quota: compute-quota, requested: limits.memory=1Gi, used: limits.memory=2Gi, limited: limits.memory=2Gi"),
                json!({"name": prepare, "container": format!("step-{prepare}")})).await?;
            ("Failed".to_string(), pipeline_failed(1, 1))
        }
        Scenario::Forbidden => {
            run.finish_taskrun(prepare, false, "PodCreationFailed",
                &format!("failed to create task run pod \"{name}-{prepare}\": pods is forbidden: User \"system:serviceaccount:kubernaut-workflows:kubernaut-workflow-runner\" cannot create resource \"pods\": RBAC: permission denied"),
                json!({"name": prepare, "container": format!("step-{prepare}")})).await?;
            ("Failed".to_string(), pipeline_failed(1, 1))
        }
        Scenario::Hang | Scenario::Resolving | Scenario::SecondTaskPullBackOff => return Ok(()),
    };
    run.patch_status(json!({
        "completionTime": now(),
        "conditions": condition("False", &reason, &message),
    }))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for s in [
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
        ] {
            assert_eq!(Scenario::from_bundle(&s.bundle()), s);
        }
    }
}
