//! The Tekton simulator replays what real Tekton wrote (`tests/e2e/recorded/`), against the real
//! API server serving Tekton's own CRDs: every shape it writes survives the structural schema, and
//! the run and TaskRuns end exactly as recorded, up to names and times.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, anyhow};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use kubernaut_test_harness::{
    ControlPlane,
    requests::RequestLog,
    simulator::{Scenario, Simulator, SimulatorConfig},
    tekton,
};
use serde::Deserialize as _;
use serde_json::{Value, json};

const TARGET: &str = "default/deployment/web";
const RUNNER: &str = "kubernaut-workflow-runner";

/// A PipelineRun of the operator's shape running `scenario`, with `timeout` as its pipeline timeout.
fn pipelinerun(name: &str, scenario: Scenario, timeout: &str) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &tekton::pipelinerun_resource());
    obj.metadata.labels = Some(
        [(
            "kubernaut.ai/workflow-execution".to_string(),
            name.to_string(),
        )]
        .into(),
    );
    obj.data = json!({"spec": {
        "pipelineRef": {"resolver": "bundles", "params": [
            {"name": "bundle", "value": scenario.bundle()},
            {"name": "name", "value": "workflow"}, {"name": "kind", "value": "pipeline"}]},
        "params": [{"name": "TARGET_RESOURCE", "value": TARGET}],
        "taskRunTemplate": {"serviceAccountName": RUNNER},
        "timeouts": {"pipeline": timeout},
    }});
    obj
}

fn succeeded(obj: &Value) -> Value {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Succeeded").cloned())
        .unwrap_or(Value::Null)
}

/// A recording: the PipelineRun, then its TaskRuns.
fn recording(name: &str) -> anyhow::Result<Vec<Value>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("e2e/recorded/{name}.yaml"));
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// What must be equal between a recorded and a replayed object: the Succeeded condition (without
/// its time), the step states (without times), `childReferences` and `skippedTasks` — with the
/// `names` replaced.
fn shape(obj: &Value, names: &[(String, String)]) -> Value {
    let mut condition = succeeded(obj);
    if let Some(map) = condition.as_object_mut() {
        map.remove("lastTransitionTime");
    }
    let steps: Vec<Value> = obj["status"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut step| {
            for state in ["terminated", "running", "waiting"] {
                if let Some(state) = step[state].as_object_mut() {
                    state.remove("startedAt");
                    state.remove("finishedAt");
                }
            }
            if let Some(map) = step.as_object_mut() {
                map.remove("provenance");
            }
            step
        })
        .collect();
    let mut text = json!({
        "condition": condition,
        "steps": steps,
        "childReferences": obj["status"]["childReferences"],
        "skippedTasks": obj["status"]["skippedTasks"],
        "podName": obj["status"]["podName"],
    })
    .to_string();
    for (old, new) in names {
        text = text.replace(old.as_str(), new);
    }
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn wait_for(
    api: &Api<DynamicObject>,
    name: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<DynamicObject> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(obj) = api.get_opt(name).await? {
            if done(&serde_json::to_value(&obj)?) {
                return Ok(obj);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{name}: never {what}: {:?}",
                obj.data["status"]
            );
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name}: never {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is_done(obj: &Value) -> bool {
    matches!(succeeded(obj)["status"].as_str(), Some("True" | "False"))
}

struct Setup {
    runs: Api<DynamicObject>,
    taskruns: Api<DynamicObject>,
    /// Every request the simulator made.
    requests: RequestLog,
    _sim: Simulator,
}

impl Setup {
    /// Creates the run `name` of the operator's shape running `scenario` (see [`pipelinerun`]).
    async fn create_run(&self, name: &str, scenario: Scenario, timeout: &str) -> kube::Result<()> {
        self.runs
            .create(
                &PostParams::default(),
                &pipelinerun(name, scenario, timeout),
            )
            .await
            .map(|_| ())
    }
}

async fn setup(run_time: Duration) -> anyhow::Result<Setup> {
    let cp = ControlPlane::shared().await?;
    cp.install_crds(&tekton::crds()).await?;
    let ns = cp.create_namespace("sim").await?;
    let client = cp.client().await?;
    let requests = RequestLog::new();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let sim = Simulator::start(
        requests.client(config)?,
        SimulatorConfig {
            namespace: Some(ns.clone()),
            run_time,
            ..Default::default()
        },
    );
    Ok(Setup {
        runs: Api::namespaced_with(client.clone(), &ns, &tekton::pipelinerun_resource()),
        taskruns: Api::namespaced_with(client, &ns, &tekton::taskrun_resource()),
        requests,
        _sim: sim,
    })
}

#[tokio::test]
async fn every_scenario_ends_as_recorded_from_real_tekton() -> anyhow::Result<()> {
    let s = setup(Duration::from_millis(300)).await?;
    let scenarios = [
        Scenario::Success,
        Scenario::TaskFailure,
        Scenario::OomKilled,
        Scenario::Timeout,
        Scenario::ImagePull,
        Scenario::SecondTaskImagePull,
        Scenario::Quota,
        Scenario::Forbidden,
        Scenario::CouldntGetPipeline,
    ];
    // The quota run ends at its own timeout; the others at the simulator's pace.
    let timeout = |s: Scenario| if s == Scenario::Quota { "2s" } else { "1h0m0s" };
    for (i, scenario) in scenarios.iter().enumerate() {
        s.create_run(&format!("run-{i}"), *scenario, timeout(*scenario))
            .await?;
    }
    for (i, scenario) in scenarios.iter().enumerate() {
        let name = format!("run-{i}");
        let context = format!("{scenario:?} ({name})");
        let done = wait_for(&s.runs, &name, "done", is_done)
            .await
            .with_context(|| context.clone())?;
        let live = serde_json::to_value(&done)?;
        let recorded = recording(scenario.recording().ok_or_else(|| anyhow!("{context}"))?)?;
        let recorded_run = recorded[0]["metadata"]["name"].as_str().unwrap_or_default();
        let recorded_timeout = recorded[0]["spec"]["timeouts"]["pipeline"]
            .as_str()
            .unwrap_or_default();
        // In JSON text: the run's name, and the timeout in `failed to finish within "…"`.
        let names = vec![
            (recorded_run.to_string(), name.clone()),
            (
                format!("within \\\"{recorded_timeout}\\\""),
                format!("within \\\"{}\\\"", timeout(*scenario)),
            ),
        ];
        let mut want = shape(&recorded[0], &names);
        if *scenario == Scenario::CouldntGetPipeline {
            // The message names the registry and namespace the recording resolved from.
            assert!(
                succeeded(&live)["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("couldnt-get-pipeline/manifests/v1")
                        && m.contains(&done.namespace().unwrap_or_default())),
                "{context}: {}",
                succeeded(&live)
            );
            want["condition"]["message"] = succeeded(&live)["message"].clone();
        }
        assert_eq!(shape(&live, &[]), want, "{context}");
        // Tekton sets startTime even on a run it could not resolve, and copies the Pipeline's
        // labels onto the run.
        assert!(live["status"]["startTime"].is_string(), "{context}");
        assert!(live["status"]["completionTime"].is_string(), "{context}");
        assert_eq!(
            live["metadata"]["labels"]["tekton.dev/pipeline"],
            recorded[0]["metadata"]["labels"]["tekton.dev/pipeline"],
            "{context}"
        );
        // The resolved pipeline is kept in the status, as recorded.
        assert_eq!(
            live["status"]["pipelineSpec"].is_object(),
            recorded[0]["status"]["pipelineSpec"].is_object(),
            "{context}"
        );

        // Exactly the recorded TaskRuns exist, each ended as recorded.
        let trs = s
            .taskruns
            .list(
                &kube::api::ListParams::default().labels(&format!("tekton.dev/pipelineRun={name}")),
            )
            .await?
            .items;
        assert_eq!(trs.len(), recorded.len() - 1, "{context}: {trs:?}");
        for recorded_tr in &recorded[1..] {
            let tr_name = recorded_tr["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .replace(recorded_run, &name);
            let tr = s
                .taskruns
                .get(&tr_name)
                .await
                .with_context(|| format!("{context}: {tr_name}"))?;
            let tr = serde_json::to_value(&tr)?;
            let mut want = shape(recorded_tr, &names);
            if *scenario == Scenario::Forbidden {
                let message = succeeded(&tr)["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(
                    message.contains("is forbidden") && message.contains(&tr_name),
                    "{context}: {message}"
                );
                want["condition"]["message"] = json!(message);
            }
            assert_eq!(shape(&tr, &[]), want, "{context}: {tr_name}");
            // Tekton's labels, the run's own labels, and the run as controlling owner.
            let labels = &tr["metadata"]["labels"];
            assert_eq!(labels["tekton.dev/pipelineRun"], json!(name), "{context}");
            assert_eq!(
                labels["kubernaut.ai/workflow-execution"],
                json!(name),
                "{context}"
            );
            assert_eq!(
                labels["tekton.dev/pipelineTask"],
                recorded_tr["metadata"]["labels"]["tekton.dev/pipelineTask"],
                "{context}"
            );
            assert_eq!(
                tr["metadata"]["ownerReferences"][0]["uid"],
                json!(done.uid()),
                "{context}"
            );
            assert_eq!(tr["spec"]["serviceAccountName"], RUNNER, "{context}");
        }
    }
    Ok(())
}

/// A task's TaskRun appears only when the task starts: while the first task runs, the run lists
/// one child and the second task has no TaskRun.
#[tokio::test]
async fn child_references_grow_with_the_dag() -> anyhow::Result<()> {
    let s = setup(Duration::from_secs(4)).await?;
    s.create_run("dag", Scenario::Success, "1h0m0s").await?;
    let running = wait_for(&s.runs, "dag", "running its first task", |r| {
        succeeded(r)["reason"] == "Running"
    })
    .await?;
    assert_eq!(
        running.data["status"]["childReferences"],
        json!([{"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                "name": "dag-remediate", "pipelineTaskName": "remediate"}])
    );
    let first = s.taskruns.get("dag-remediate").await?;
    assert_eq!(succeeded(&first.data)["reason"], "Running");
    assert!(
        first.data["status"]["steps"][0]["running"]["startedAt"].is_string(),
        "{:?}",
        first.data["status"]
    );
    assert!(s.taskruns.get_opt("dag-verify").await?.is_none());

    let second = wait_for(&s.runs, "dag", "running its second task", |r| {
        r["status"]["childReferences"]
            .as_array()
            .map_or(0, Vec::len)
            == 2
    })
    .await?;
    assert_eq!(
        succeeded(&second.data)["message"],
        "Tasks Completed: 1 (Failed: 0, Cancelled 0), Incomplete: 1, Skipped: 0"
    );
    assert_eq!(
        succeeded(&s.taskruns.get("dag-remediate").await?.data)["reason"],
        "Succeeded"
    );
    wait_for(&s.runs, "dag", "done", is_done).await?;
    Ok(())
}

/// A quota-refused TaskRun stays `Unknown`/`ExceededResourceQuota` with no start time while the
/// run is `Running`; at the run's timeout the run ends `PipelineRunTimeout`.
#[tokio::test]
async fn a_quota_refused_taskrun_waits_until_the_run_times_out() -> anyhow::Result<()> {
    let s = setup(Duration::from_millis(300)).await?;
    s.create_run("held", Scenario::Quota, "3s").await?;
    wait_for(&s.runs, "held", "running", |r| {
        succeeded(r)["reason"] == "Running"
    })
    .await?;
    let tr = s.taskruns.get("held-remediate").await?;
    let condition = succeeded(&tr.data);
    assert_eq!(condition["status"], "Unknown");
    assert_eq!(condition["reason"], "ExceededResourceQuota");
    assert!(tr.data["status"]["startTime"].is_null());
    // Well past the simulator's pace, the run still waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        succeeded(&s.runs.get("held").await?.data)["reason"],
        "Running"
    );

    let done = wait_for(&s.runs, "held", "done", is_done).await?;
    assert_eq!(succeeded(&done.data)["reason"], "PipelineRunTimeout");
    assert_eq!(
        succeeded(&done.data)["message"],
        "PipelineRun \"held\" failed to finish within \"3s\""
    );
    Ok(())
}

async fn cancel(s: &Setup, name: &str, status: &str) -> anyhow::Result<DynamicObject> {
    s.create_run(name, Scenario::Hang, "1h0m0s").await?;
    let remediate = format!("{name}-remediate");
    wait_for(&s.taskruns, &remediate, "running", |tr| {
        succeeded(tr)["reason"] == "Running"
    })
    .await?;
    s.runs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"status": status}})),
        )
        .await?;
    let done = wait_for(&s.runs, name, "done", is_done).await?;
    assert_eq!(succeeded(&done.data)["reason"], "Cancelled");
    assert_eq!(succeeded(&done.data)["status"], "False");
    assert_eq!(
        succeeded(&done.data)["message"],
        json!(format!("PipelineRun \"{name}\" was cancelled"))
    );
    let tr = s.taskruns.get(&remediate).await?;
    assert_eq!(succeeded(&tr.data)["reason"], "TaskRunCancelled");
    let step = &tr.data["status"]["steps"][0];
    assert_eq!(step["terminated"]["exitCode"], 1, "{step}");
    assert_eq!(step["terminationReason"], "TaskRunCancelled", "{step}");
    Ok(done)
}

/// `CancelledRunFinally` (what the operator writes) runs the workflow's `finally` task before the
/// run ends `Cancelled`, as recorded in `delete-running`; `Cancelled` skips it.
#[tokio::test]
async fn cancellation_runs_finally_only_when_asked_to() -> anyhow::Result<()> {
    let s = setup(Duration::from_millis(300)).await?;
    let done = cancel(&s, "with-finally", "CancelledRunFinally").await?;
    let undo = s.taskruns.get("with-finally-undo").await?;
    assert_eq!(succeeded(&undo.data)["reason"], "Succeeded");
    assert!(done.data["status"]["finallyStartTime"].is_string());
    assert_eq!(
        done.data["status"]["childReferences"]
            .as_array()
            .map_or(0, Vec::len),
        2
    );

    let done = cancel(&s, "without-finally", "Cancelled").await?;
    assert!(s.taskruns.get_opt("without-finally-undo").await?.is_none());
    assert!(done.data["status"]["finallyStartTime"].is_null());
    Ok(())
}

/// The simulator knows a run from its watch, as Tekton from its informer cache: it drives a run
/// to its end and acts on a cancellation without ever reading a run back from the API server (a
/// read per run per poll would cost the API server what real Tekton does not).
#[tokio::test]
async fn runs_are_driven_from_the_watch_without_reading_them_back() -> anyhow::Result<()> {
    let s = setup(Duration::from_millis(600)).await?;
    s.create_run("watched", Scenario::Success, "1h0m0s").await?;
    let done = wait_for(&s.runs, "watched", "done", is_done).await?;
    assert_eq!(succeeded(&done.data)["reason"], "Succeeded");
    let writes_to_watched = |requests: &[kubernaut_test_harness::requests::ApiRequest]| {
        requests
            .iter()
            .filter(|r| r.is_write() && r.name.as_deref() == Some("watched"))
            .count()
    };
    let writes_when_done = writes_to_watched(&s.requests.requests());
    // A cancellation reaches it through the watch too.
    cancel(&s, "watched-cancel", "Cancelled").await?;
    let requests = s.requests.requests();
    // The watch events of its own earlier writes, arriving after the run ended, drive it no more.
    assert_eq!(
        writes_to_watched(&requests),
        writes_when_done,
        "the ended run was written again: {requests:?}"
    );
    let conflicts: Vec<String> = requests
        .iter()
        .filter(|r| r.status == 409)
        .map(kubernaut_test_harness::requests::ApiRequest::describe)
        .collect();
    assert!(conflicts.is_empty(), "conflicting writes: {conflicts:?}");
    let runs_read: Vec<String> = requests
        .iter()
        .filter(|r| r.resource.as_deref() == Some("pipelineruns") && r.verb == "get")
        .map(kubernaut_test_harness::requests::ApiRequest::describe)
        .collect();
    assert!(runs_read.is_empty(), "runs read back: {runs_read:?}");
    assert!(
        requests
            .iter()
            .any(|r| r.resource.as_deref() == Some("pipelineruns") && r.verb == "watch"),
        "the simulator watches the runs: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.resource.as_deref() == Some("pipelineruns/status") && r.verb == "patch"),
        "the log sees the simulator's writes: {requests:?}"
    );
    Ok(())
}
