//! The Tekton simulator drives PipelineRuns the way Tekton does, against the real API server.

use std::time::Duration;

use kube::{
    Api,
    api::{DynamicObject, Patch, PatchParams, PostParams},
};
use kubernaut_test_harness::{
    ControlPlane,
    simulator::{Scenario, Simulator, SimulatorConfig},
    tekton,
};
use serde_json::{Value, json};

fn pipelinerun(name: &str, scenario: Scenario) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &tekton::pipelinerun_resource());
    obj.data = json!({"spec": {"pipelineRef": {"resolver": "bundles", "params": [
        {"name": "bundle", "value": scenario.bundle()},
        {"name": "name", "value": "workflow"}, {"name": "kind", "value": "pipeline"}]}}});
    obj
}

fn succeeded(obj: &DynamicObject) -> Value {
    obj.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Succeeded").cloned())
        .unwrap_or(Value::Null)
}

async fn wait_done(api: &Api<DynamicObject>, name: &str) -> anyhow::Result<DynamicObject> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let obj = api.get(name).await?;
        let status = succeeded(&obj)["status"].as_str().unwrap_or("").to_string();
        if status == "True" || status == "False" {
            return Ok(obj);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{name} never finished: {:?}",
            obj.data["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn setup() -> anyhow::Result<(Api<DynamicObject>, Api<DynamicObject>, Simulator)> {
    let cp = ControlPlane::shared().await?;
    cp.install_crds(&tekton::crds()).await?;
    let ns = cp.create_namespace("sim").await?;
    let client = cp.client().await?;
    let sim = Simulator::start(
        client.clone(),
        SimulatorConfig {
            namespace: Some(ns.clone()),
            ..Default::default()
        },
    );
    Ok((
        Api::namespaced_with(client.clone(), &ns, &tekton::pipelinerun_resource()),
        Api::namespaced_with(client, &ns, &tekton::taskrun_resource()),
        sim,
    ))
}

#[tokio::test]
async fn scenarios_end_with_tektons_reasons() -> anyhow::Result<()> {
    let (runs, taskruns, _sim) = setup().await?;
    let cases = [
        (Scenario::Success, "True", "Succeeded", 2),
        (Scenario::TaskFailure, "False", "Failed", 2),
        (Scenario::OomKilled, "False", "Failed", 2),
        (Scenario::Timeout, "False", "PipelineRunTimeout", 2),
        (Scenario::ImagePull, "False", "Failed", 1),
        (Scenario::Quota, "False", "Failed", 1),
        (Scenario::Forbidden, "False", "Failed", 1),
        (
            Scenario::CouldntGetPipeline,
            "False",
            "CouldntGetPipeline",
            0,
        ),
    ];
    for (i, (scenario, _, _, _)) in cases.iter().enumerate() {
        runs.create(
            &PostParams::default(),
            &pipelinerun(&format!("run-{i}"), *scenario),
        )
        .await?;
    }
    for (i, (scenario, status, reason, children)) in cases.iter().enumerate() {
        let done = wait_done(&runs, &format!("run-{i}")).await?;
        let cond = succeeded(&done);
        assert_eq!(cond["status"], *status, "{scenario:?}");
        assert_eq!(cond["reason"], *reason, "{scenario:?}");
        assert!(
            done.data["status"]["completionTime"].is_string(),
            "{scenario:?}"
        );
        let refs = done.data["status"]["childReferences"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(refs, *children, "{scenario:?}");
        assert_eq!(
            done.data["status"]["startTime"].is_string(),
            *scenario != Scenario::CouldntGetPipeline,
            "{scenario:?}: only a run that could not be resolved has no startTime"
        );
    }
    // The failing step of the task-failure and OOM runs carries its exit code and reason.
    let failed = taskruns.get("run-1-apply").await?;
    assert_eq!(
        failed.data["status"]["steps"][0]["terminated"]["exitCode"],
        1
    );
    let oom = taskruns.get("run-2-apply").await?;
    assert_eq!(
        oom.data["status"]["steps"][0]["terminated"]["reason"],
        "OOMKilled"
    );
    assert_eq!(
        oom.data["status"]["steps"][0]["terminated"]["exitCode"],
        137
    );
    let pull = taskruns.get("run-4-prepare").await?;
    assert_eq!(succeeded(&pull)["reason"], "TaskRunImagePullFailed");
    Ok(())
}

#[tokio::test]
async fn cancellation_is_honoured() -> anyhow::Result<()> {
    let (runs, _taskruns, _sim) = setup().await?;
    runs.create(
        &PostParams::default(),
        &pipelinerun("hanging", Scenario::Hang),
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while succeeded(&runs.get("hanging").await?)["reason"] != "Running" {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    runs.patch(
        "hanging",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"status": "Cancelled"}})),
    )
    .await?;
    let done = wait_done(&runs, "hanging").await?;
    assert_eq!(succeeded(&done)["reason"], "Cancelled");
    assert_eq!(succeeded(&done)["status"], "False");
    Ok(())
}
