//! How often the operator writes a WorkflowExecution's status, seen through a watch of the WFE
//! from before its creation (every version the API server stored, in order): no separate
//! `Pending` write for a WFE that starts at once, `Pending` (with its reason) for one that waits,
//! the run's progress written at most once per `status.progressInterval` with the latest progress
//! at its end, terminal transitions never held back by that interval, at most six writes for a
//! fast successful WFE (Events included), and a step seen running, held back with the progress,
//! still making the deletion of the run an execution failure.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, TryStreamExt};
use kube::{
    ResourceExt,
    api::{
        DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
        WatchParams,
    },
};
use kubernaut_test_harness::simulator::Scenario;
use serde_json::{Value, json};
use support::{Env, WAIT, eventually, status_of};
use tokio::task::JoinHandle;
use workflowexecution_operator::{
    pipelinerun::pipeline_run_name,
    types::{Phase, SkipReason, WorkflowExecution},
};

/// Every version of one WorkflowExecution the API server stored, in order, from its creation.
struct Versions {
    seen: Arc<Mutex<Vec<WorkflowExecution>>>,
    task: JoinHandle<()>,
}

impl Versions {
    /// Starts watching `name` in the WFE namespace of `env` from the namespace's current
    /// resourceVersion (call it before creating the WFE).
    async fn watch(env: &Env, name: &str) -> anyhow::Result<Versions> {
        let api = env.wfes();
        let from = api
            .list_metadata(&ListParams::default().limit(1))
            .await?
            .metadata
            .resource_version
            .unwrap_or_default();
        let params = WatchParams::default().fields(&format!("metadata.name={name}"));
        let mut stream = api.watch(&params, &from).await?.boxed();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok(Some(event)) = stream.try_next().await {
                if let WatchEvent::Added(wfe) | WatchEvent::Modified(wfe) = event {
                    into.lock().map(|mut v| v.push(wfe)).ok();
                }
            }
        });
        Ok(Versions { seen, task })
    }

    fn all(&self) -> Vec<WorkflowExecution> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Waits until a version satisfies `pred`; returns every version up to and including it.
    async fn until(
        &self,
        what: &str,
        pred: impl Fn(&WorkflowExecution) -> bool,
    ) -> anyhow::Result<Vec<WorkflowExecution>> {
        eventually(what, WAIT, || async {
            let all = self.all();
            Ok(all.iter().position(&pred).map(|i| all[..=i].to_vec()))
        })
        .await
    }
}

impl Drop for Versions {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn phase(wfe: &WorkflowExecution) -> Option<Phase> {
    wfe.status.as_ref().and_then(|s| s.phase)
}

/// The versions whose status differs from the version before them: one per status write.
fn status_writes(versions: &[WorkflowExecution]) -> Vec<WorkflowExecution> {
    let mut previous = None;
    let mut writes = Vec::new();
    for version in versions {
        if version.status != previous {
            writes.push(version.clone());
        }
        previous = version.status.clone();
    }
    writes
}

fn started(wfe: &WorkflowExecution) -> bool {
    status_of(wfe)
        .pipeline_run_status
        .and_then(|s| s.execution_started)
        == Some(true)
}

#[tokio::test]
async fn a_wfe_that_starts_at_once_is_running_with_its_first_status_write() -> anyhow::Result<()> {
    let env = Env::new("wfe-writes-start", |_| {}).await?;
    let versions = Versions::watch(&env, "at-once").await?;
    env.create(
        "at-once",
        "restart",
        "default/deployment/at-once",
        Scenario::Success,
    )
    .await?;
    let to_running = versions
        .until("Running", |w| phase(w) == Some(Phase::Running))
        .await?;
    let phases: Vec<Option<Phase>> = to_running.iter().map(phase).collect();
    assert!(
        !phases.contains(&Some(Phase::Pending)),
        "no version is Pending: {phases:?}"
    );
    let writes = status_writes(&to_running);
    assert_eq!(
        writes.len(),
        1,
        "exactly one status write up to Running: {phases:?}"
    );
    assert_eq!(
        to_running.len(),
        3,
        "created, finalizer added, Running: {phases:?}"
    );
    let running = &writes[0];
    let status = status_of(running);
    assert!(status.pipeline_run_ref.is_some() && status.start_time.is_some());
    assert!(
        running
            .finalizers()
            .iter()
            .any(|f| f.contains("workflowexecution-cleanup"))
    );
    env.wait_phase("at-once", Phase::Completed).await?;
    Ok(())
}

#[tokio::test]
async fn a_wfe_that_must_wait_shows_pending_with_its_reason() -> anyhow::Result<()> {
    let env = Env::new("wfe-writes-wait", |_| {}).await?;
    let target = "default/deployment/waits";
    // A run holding the target's lock name is being deleted (a finalizer keeps it).
    let name = pipeline_run_name(target);
    let held: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name, "finalizers": ["example.com/hold"]},
        "spec": {"pipelineRef": {"name": "elsewhere"}},
    }))?;
    env.runs().create(&PostParams::default(), &held).await?;
    env.runs().delete(&name, &DeleteParams::default()).await?;

    let versions = Versions::watch(&env, "waits").await?;
    env.create("waits", "restart", target, Scenario::Success)
        .await?;
    let waiting = versions
        .until("waiting for the previous run", |w| {
            status_of(w)
                .conditions
                .iter()
                .any(|c| c.type_ == "ExecutionCreated" && c.reason == "WaitingForPreviousRun")
        })
        .await?;
    let writes = status_writes(&waiting);
    let phases: Vec<Option<Phase>> = writes.iter().map(phase).collect();
    assert_eq!(
        phases,
        [Some(Phase::Pending), Some(Phase::Pending)],
        "Pending first, then the reason it waits"
    );
    let ready = status_of(&writes[0])
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status, c.reason));
    assert_eq!(ready, Some(("Unknown".to_owned(), "Pending".to_owned())));

    // The previous run goes: the WFE starts.
    env.runs()
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    env.wait_phase("waits", Phase::Completed).await?;
    Ok(())
}

/// The run's `Succeeded` condition with `message`, the rest as it is.
fn with_message(run: &DynamicObject, message: &str) -> Value {
    let mut conditions = run.data["status"]["conditions"].clone();
    if let Some(first) = conditions.get_mut(0) {
        first["message"] = json!(message);
    }
    json!({"status": {"conditions": conditions}})
}

#[tokio::test]
async fn progress_is_written_at_most_once_per_interval_and_the_latest_at_its_end()
-> anyhow::Result<()> {
    const INTERVAL: Duration = Duration::from_secs(3);
    const CHANGES: usize = 12;
    let env = Env::new("wfe-writes-progress", |c| {
        c.status.progress_interval = INTERVAL;
    })
    .await?;
    let versions = Versions::watch(&env, "busy").await?;
    // The first task runs until the run is cancelled: the run's status is ours to change.
    env.create("busy", "restart", "default/deployment/busy", Scenario::Hang)
        .await?;
    let running = env
        .wait_for("busy", "a step seen running", |w| {
            started(w)
                && status_of(w)
                    .pipeline_run_status
                    .is_some_and(|s| s.reason.as_deref() == Some("Running"))
        })
        .await?;
    let run_name = status_of(&running)
        .pipeline_run_ref
        .map(|r| r.name)
        .unwrap_or_default();
    let api = env.runs();

    // Many progress changes, as fast as the API server takes them.
    let before = versions.all().len();
    let started_at = Instant::now();
    let last = format!("progress {CHANGES}");
    for i in 1..=CHANGES {
        let run = api.get(&run_name).await?;
        let patch = with_message(&run, &format!("progress {i}"));
        api.patch_status(&run_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let burst = started_at.elapsed();
    let latest = versions
        .until("the latest progress written", |w| {
            status_of(w)
                .pipeline_run_status
                .and_then(|s| s.message)
                .as_deref()
                == Some(last.as_str())
        })
        .await?;
    let elapsed = started_at.elapsed();
    let writes = status_writes(&latest[before.saturating_sub(1)..]);
    // The version before the burst is the first element; every later one is a write of it.
    let progress_writes = writes.len().saturating_sub(1);
    // One write may go at once (the interval since the last write is over), then at most one
    // per interval that began while this test waited.
    let bound = 1 + (elapsed.as_millis() / INTERVAL.as_millis()) as usize + 1;
    assert!(
        progress_writes <= bound && progress_writes < CHANGES,
        "{progress_writes} status writes for {CHANGES} progress changes in {burst:?} \
         (seen after {elapsed:?}, interval {INTERVAL:?}): at most {bound}"
    );
    let messages: Vec<Option<String>> = writes
        .iter()
        .map(|w| status_of(w).pipeline_run_status.and_then(|s| s.message))
        .collect();
    assert_eq!(
        messages.last().cloned().flatten(),
        Some(last.clone()),
        "the latest progress is written: {messages:?}"
    );
    Ok(())
}

/// A WFE `name` running the simulator's successful workflow, in a new environment (`prefix`)
/// whose progress interval is `interval`: the environment, and every version of the WFE up to
/// `Completed`.
async fn succeeded(
    prefix: &str,
    name: &str,
    interval: Duration,
) -> anyhow::Result<(Env, Vec<WorkflowExecution>)> {
    let env = Env::new(prefix, |c| c.status.progress_interval = interval).await?;
    let versions = Versions::watch(&env, name).await?;
    let target = format!("default/deployment/{name}");
    env.create(name, "restart", &target, Scenario::Success)
        .await?;
    let all = versions
        .until("Completed", |w| phase(w) == Some(Phase::Completed))
        .await?;
    Ok((env, all))
}

#[tokio::test]
async fn terminal_transitions_are_not_held_back_by_the_interval() -> anyhow::Result<()> {
    // Longer than any test: progress written within it would never show.
    let (env, all) = succeeded("wfe-writes-terminal", "quick", Duration::from_secs(3600)).await?;
    let writes = status_writes(&all);
    let phases: Vec<Option<Phase>> = writes.iter().map(phase).collect();
    assert_eq!(phases.first(), Some(&Some(Phase::Running)), "{phases:?}");
    assert_eq!(phases.last(), Some(&Some(Phase::Completed)), "{phases:?}");
    // Nothing between them: the run's progress, the step seen running included, is held back
    // and rides on the Completed write.
    assert_eq!(
        writes.len(),
        2,
        "Running and Completed, nothing between: {phases:?}"
    );
    let completed = status_of(&writes[writes.len() - 1]);
    assert_eq!(
        completed
            .pipeline_run_status
            .and_then(|s| s.status)
            .as_deref(),
        Some("True"),
        "the final progress is in the Completed write"
    );

    // The happy path's two Events, and no other.
    env.wait_event("quick", "WorkflowCompleted").await?;
    let mut reasons: Vec<String> = env
        .events_for("quick")
        .await?
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    reasons.sort();
    assert_eq!(reasons, ["PipelineRunCreated", "WorkflowCompleted"]);
    Ok(())
}

/// Writes per request of one WFE's happy path.
#[derive(Debug, PartialEq)]
struct HappyPathWrites {
    /// Metadata writes of the WFE: the finalizer.
    finalizer: usize,
    /// PipelineRuns created.
    runs_created: usize,
    /// Status writes of the WFE.
    status: usize,
    /// Event writes (a repeated Event is one write per occurrence).
    events: usize,
}

impl HappyPathWrites {
    fn total(&self) -> usize {
        self.finalizer + self.runs_created + self.status + self.events
    }
}

#[tokio::test]
async fn a_fast_successful_wfe_costs_at_most_six_writes_events_included() -> anyhow::Result<()> {
    // Longer than the simulated run: its progress all rides on the Completed write.
    let (env, all) = succeeded("wfe-writes-six", "six", Duration::from_secs(60)).await?;
    env.wait_event("six", "WorkflowCompleted").await?;
    // Every version after the one created: a write of the status or of the rest (the finalizer).
    let status = status_writes(&all).len();
    let events: usize = env
        .events_for("six")
        .await?
        .iter()
        .map(|e| usize::try_from(e.count.unwrap_or(1).max(1)).unwrap_or(1))
        .sum();
    let writes = HappyPathWrites {
        finalizer: all.len().saturating_sub(1).saturating_sub(status),
        runs_created: env.run_names().await?.len(),
        status,
        events,
    };
    println!(
        "writes per WFE on the happy path: {} {writes:?}",
        writes.total()
    );
    assert_eq!(
        writes,
        HappyPathWrites {
            finalizer: 1,
            runs_created: 1,
            status: 2,
            events: 2,
        },
        "finalizer, PipelineRun, Running, Completed, PipelineRunCreated, WorkflowCompleted"
    );
    assert!(writes.total() <= 6, "{writes:?}");
    Ok(())
}

#[tokio::test]
async fn a_step_seen_running_and_held_back_still_makes_the_runs_deletion_an_execution_failure()
-> anyhow::Result<()> {
    let env = Env::new("wfe-writes-held", |c| {
        // Longer than the test: nothing held back is written before the run is deleted.
        c.status.progress_interval = Duration::from_secs(3600);
    })
    .await?;
    let target = "default/deployment/held-marker";
    env.create("held", "restart", target, Scenario::Hang)
        .await?;
    let running = env.wait_phase("held", Phase::Running).await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .map(|r| r.name)
        .unwrap_or_default();
    // The simulator's TaskRun shows a step running; the operator sees it and holds the marker
    // back with the rest of the run's progress.
    let pace = &env.running().context().data.pace;
    let stored = eventually("the step seen running, held back", WAIT, || async {
        let wfe = env.wfes().get("held").await?;
        let held = pace.holding(&wfe);
        let marked = held
            .and_then(|s| s.pipeline_run_status)
            .and_then(|s| s.execution_started);
        Ok((marked == Some(true)).then_some(wfe))
    })
    .await?;
    assert!(
        !started(&stored),
        "the marker is held back, not written: {:?}",
        status_of(&stored).pipeline_run_status
    );

    // The run goes with its TaskRuns (as garbage collection takes them): only what the operator
    // remembered can tell that a step ran.
    let task_runs = env.taskruns().list(&ListParams::default()).await?;
    for task_run in task_runs.items.iter().filter(|tr| {
        tr.owner_references()
            .iter()
            .any(|o| o.kind == "PipelineRun" && o.name == run)
    }) {
        env.taskruns()
            .delete(&task_run.name_any(), &DeleteParams::default())
            .await?;
    }
    env.runs().delete(&run, &DeleteParams::default()).await?;

    let failed = env.wait_phase("held", Phase::Failed).await?;
    let details = status_of(&failed)
        .failure_details
        .ok_or_else(|| anyhow::anyhow!("no failureDetails"))?;
    assert!(
        details.was_execution_failure,
        "a step had been seen running: {details:#?}"
    );
    // The target is blocked: the next workflow on it is skipped.
    env.create("after-held", "restart", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("after-held", Phase::Skipped).await?;
    assert_eq!(
        status_of(&skipped).skip_details.map(|d| d.reason),
        Some(SkipReason::PreviousExecutionFailed)
    );
    Ok(())
}
