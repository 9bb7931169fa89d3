//! The Tekton specifics that are data, against the real control plane: the bundle reference the
//! template renders (by digest, with the resolver's service account) and the cancellation the
//! cancel file (`tekton/cancel.yaml`) describes.

mod support;

use std::{path::Path, time::Duration};

use jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kubernaut_test_harness::simulator::{Scenario, Simulator, SimulatorConfig};
use serde_json::{Value, json};
use support::{Env, WAIT, eventually, status_of, wfe};
use workflowexecution_operator::{
    pipelinerun::pipeline_run_name,
    types::{FailureReason, Phase, WorkflowExecution},
};

const DIGEST: &str = "sha256:4e1f3c9a0b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

/// A WFE running `scenario` from `image`, pinned to `digest`.
fn pinned(name: &str, target: &str, image: &str, digest: &str) -> WorkflowExecution {
    let mut object = wfe(name, "restart-pods", target, Scenario::Success, json!({}));
    object.spec.workflow_ref.container_image = image.to_owned();
    object.spec.workflow_ref.container_digest = Some(digest.to_owned());
    object
}

/// The `pipelineRef` params of a run: name → value.
fn resolver_params(run: &Value) -> Vec<(String, String)> {
    run["spec"]["pipelineRef"]["params"]
        .as_array()
        .map(|params| {
            params
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_owned(),
                        p["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Stops the environment's Tekton simulator: the test plays Tekton itself.
fn without_tekton(env: &mut Env) {
    env.simulator = Simulator::start(
        env.client.clone(),
        SimulatorConfig {
            namespace: Some(format!("{}-nothing-here", env.exec_ns)),
            ..Default::default()
        },
    );
}

/// Writes the run's `Succeeded` condition as Tekton does.
async fn set_run_condition(env: &Env, run: &str, status: &str, reason: &str) -> anyhow::Result<()> {
    let now = Timestamp::now().to_string();
    env.runs()
        .patch_status(
            run,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now,
                "conditions": [{"type": "Succeeded", "status": status, "reason": reason,
                                "message": format!("PipelineRun {run:?} {reason}"),
                                "lastTransitionTime": now}],
            }})),
        )
        .await?;
    Ok(())
}

/// Waits until the run's `spec.status` is `value`.
async fn wait_spec_status(env: &Env, run: &str, value: &str) -> anyhow::Result<()> {
    eventually(
        &format!("PipelineRun {run} spec.status {value}"),
        WAIT,
        || async {
            let current = env.runs().get_opt(run).await?;
            Ok(current
                .filter(|r| r.data["spec"]["status"] == value)
                .map(|_| ()))
        },
    )
    .await
}

#[tokio::test]
async fn a_wfe_with_a_container_digest_runs_its_bundle_by_digest() -> anyhow::Result<()> {
    let env = Env::new("wfe-digest", |c| {
        c.execution.bundle_service_account = Some("registry-puller".into());
    })
    .await?;
    let cases = [
        (
            "by-tag",
            "default/deployment/by-tag",
            "registry.example/kubernaut/workflows/success:v1",
            "registry.example/kubernaut/workflows/success",
        ),
        (
            "with-port",
            "default/deployment/with-port",
            "127.0.0.1:5000/kubernaut/workflows/success:v1",
            "127.0.0.1:5000/kubernaut/workflows/success",
        ),
        (
            "re-pinned",
            "default/deployment/re-pinned",
            "registry.example/kubernaut/workflows/success:v1@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "registry.example/kubernaut/workflows/success",
        ),
    ];
    for (name, target, image, _) in cases {
        env.create_wfe(&pinned(name, target, image, DIGEST)).await?;
    }
    for (name, target, _, repository) in cases {
        let done = env.wait_phase(name, Phase::Completed).await?;
        let run_ref = status_of(&done).pipeline_run_ref.expect("pipelineRunRef");
        assert_eq!(run_ref.name, pipeline_run_name(target));
        let run = env.runs().get(&run_ref.name).await?;
        assert_eq!(
            resolver_params(&run.data),
            [
                ("bundle".to_owned(), format!("{repository}@{DIGEST}")),
                ("name".to_owned(), "workflow".to_owned()),
                ("kind".to_owned(), "pipeline".to_owned()),
                ("serviceAccount".to_owned(), "registry-puller".to_owned()),
            ],
            "{name}"
        );
        // The runner stays the tasks' account.
        assert_eq!(
            run.data["spec"]["taskRunTemplate"]["serviceAccountName"],
            "kubernaut-workflow-runner"
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_allowlist_judges_the_reference_pulled_by_digest() -> anyhow::Result<()> {
    // Only tag v1 is allowed: a digest-pinned WFE pulls no tag, so it is refused.
    let env = Env::new("wfe-digest-allow", |c| {
        c.execution.allowed_bundles = vec!["registry.example/kubernaut/workflows/*:v1".into()];
    })
    .await?;
    let image = Scenario::Success.bundle();
    env.create_wfe(&pinned("pinned", "default/deployment/a", &image, DIGEST))
        .await?;
    env.create(
        "tagged",
        "restart-pods",
        "default/deployment/b",
        Scenario::Success,
    )
    .await?;
    let failed = env.wait_phase("pinned", Phase::Failed).await?;
    let details = status_of(&failed).failure_details.expect("failureDetails");
    assert_eq!(details.reason, FailureReason::ConfigurationError);
    assert!(!details.was_execution_failure);
    assert!(
        details.message.contains(&format!(
            "registry.example/kubernaut/workflows/success@{DIGEST}"
        )),
        "{}",
        details.message
    );
    assert!(status_of(&failed).pipeline_run_ref.is_none());
    env.wait_phase("tagged", Phase::Completed).await?;
    Ok(())
}

#[tokio::test]
async fn a_malformed_digest_is_refused_at_admission() -> anyhow::Result<()> {
    let env = Env::new("wfe-digest-admission", |_| {}).await?;
    let image = Scenario::Success.bundle();
    for digest in [
        "sha256:abc",
        "SHA256:4E1F3C9A0B8D7E6F5A4B3C2D1E0F9A8B7C6D5E4F3A2B1C0D9E8F7A6B5C4D3E2F",
        "sha512:4e1f3c9a0b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f",
        "latest",
    ] {
        let object = pinned("bad-digest", "default/deployment/x", &image, digest);
        match env.wfes().create(&PostParams::default(), &object).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{digest}: {status:?}");
                assert!(
                    status.message.contains("containerDigest"),
                    "{digest}: {}",
                    status.message
                );
            }
            other => anyhow::bail!("{digest} was admitted: {other:?}"),
        }
    }
    env.create_wfe(&pinned(
        "good-digest",
        "default/deployment/x",
        &image,
        DIGEST,
    ))
    .await?;
    Ok(())
}

#[tokio::test]
async fn deleting_a_running_wfe_lets_the_cancelled_run_finish_its_finally_tasks()
-> anyhow::Result<()> {
    let mut env = Env::new("wfe-cancel-finally", |_| {}).await?;
    without_tekton(&mut env);
    env.create("doomed", "drain-node", "node/worker-node-9", Scenario::Hang)
        .await?;
    let running = env.wait_phase("doomed", Phase::Running).await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    set_run_condition(&env, &run, "Unknown", "Running").await?;

    env.wfes()
        .delete("doomed", &DeleteParams::default())
        .await?;
    // The shipped cancel file asks Tekton to run the workflow's `finally` tasks.
    wait_spec_status(&env, &run, "CancelledRunFinally").await?;
    env.wait_event("doomed", "PipelineRunCancelled").await?;
    // Tekton cancels the tasks and runs `finally`, reporting CancelledRunningFinally meanwhile.
    // The run must outlive that: deleting it would stop the `finally` tasks.
    set_run_condition(&env, &run, "Unknown", "CancelledRunningFinally").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let current = env.runs().get_opt(&run).await?;
    assert!(
        current.is_some_and(|r| r.metadata.deletion_timestamp.is_none()),
        "the run was deleted while its finally tasks ran"
    );
    assert!(
        env.wfes().get_opt("doomed").await?.is_some(),
        "the WorkflowExecution went before its run"
    );

    // `finally` done: Tekton ends the run Cancelled, and only now is it deleted.
    set_run_condition(&env, &run, "False", "Cancelled").await?;
    env.wait_run_gone(&run).await?;
    env.wait_gone("doomed").await?;
    env.wait_event("doomed", "WorkflowExecutionDeleted").await?;
    Ok(())
}

/// Copies the shipped template directory to `to`, with the file `edited` edited by `edit`.
fn templates_with(to: &Path, edited: &str, edit: impl Fn(&str) -> String) -> anyhow::Result<()> {
    let from = support::templates_dir().join("tekton");
    std::fs::create_dir_all(to.join("tekton"))?;
    for file in ["pipelinerun.yaml.j2", "status.yaml", "cancel.yaml"] {
        let text = std::fs::read_to_string(from.join(file))?;
        let text = if file == edited { edit(&text) } else { text };
        std::fs::write(to.join("tekton").join(file), text)?;
    }
    Ok(())
}

#[tokio::test]
async fn the_cancel_file_chooses_the_patch_and_bounds_the_wait_for_a_run_that_never_finishes()
-> anyhow::Result<()> {
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("templates");
    templates_with(&dir, "cancel.yaml", |text| {
        text.replace("status: CancelledRunFinally", "status: Cancelled")
            .replace("finishGracePeriod: 5m", "finishGracePeriod: 2s")
    })?;
    let mut env = Env::new("wfe-cancel-data", |c| c.templates.dir = dir.clone()).await?;
    // Nothing plays Tekton: the cancelled run never finishes.
    without_tekton(&mut env);
    env.create("stuck", "drain-node", "node/worker-node-8", Scenario::Hang)
        .await?;
    let running = env.wait_phase("stuck", Phase::Running).await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;

    env.wfes().delete("stuck", &DeleteParams::default()).await?;
    wait_spec_status(&env, &run, "Cancelled").await?;
    // After the grace period the run is deleted anyway, and the WorkflowExecution goes.
    env.wait_run_gone(&run).await?;
    env.wait_gone("stuck").await?;
    Ok(())
}

/// Waits until the run `name` is being deleted and holds the `orphan` finalizer the API server adds
/// for `propagationPolicy: Orphan` (nothing here runs a garbage collector to remove it), then
/// removes the finalizer so that the run goes.
async fn wait_orphaning_delete(env: &Env, name: &str) -> anyhow::Result<()> {
    eventually(
        &format!("PipelineRun {name} deleted with propagationPolicy Orphan"),
        WAIT,
        || async {
            Ok(env.runs().get_opt(name).await?.filter(|run| {
                run.metadata.deletion_timestamp.is_some()
                    && run.metadata.finalizers.as_deref() == Some(&["orphan".to_owned()][..])
            }))
        },
    )
    .await?;
    let unblock = json!({"metadata": {"finalizers": null}});
    env.runs()
        .patch(name, &PatchParams::default(), &Patch::Merge(&unblock))
        .await?;
    env.wait_run_gone(name).await
}

#[tokio::test]
async fn the_cancel_file_chooses_the_propagation_policy_of_every_run_deletion() -> anyhow::Result<()>
{
    let scratch = tempfile::tempdir()?;
    let dir = scratch.path().join("templates");
    templates_with(&dir, "cancel.yaml", |text| {
        text.replace(
            "# deletePropagation: Background",
            "deletePropagation: Orphan",
        )
        .replace("finishGracePeriod: 5m", "finishGracePeriod: 2s")
    })?;
    let env = Env::new("wfe-cancel-propagation", |c| c.templates.dir = dir.clone()).await?;

    // The lock released after the cooldown.
    env.create(
        "finished",
        "restart-pods",
        "default/deployment/web",
        Scenario::Success,
    )
    .await?;
    let completed = env.wait_phase("finished", Phase::Completed).await?;
    let run = status_of(&completed)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    wait_orphaning_delete(&env, &run).await?;

    // The run of a deleted WorkflowExecution.
    env.create(
        "deleted",
        "drain-node",
        "node/worker-node-7",
        Scenario::Hang,
    )
    .await?;
    let running = env.wait_phase("deleted", Phase::Running).await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    env.wfes()
        .delete("deleted", &DeleteParams::default())
        .await?;
    wait_orphaning_delete(&env, &run).await?;
    env.wait_gone("deleted").await?;
    Ok(())
}

/// A TaskRun of `run` named `<run>-<task>`, labelled and annotated from the run as Tekton does
/// (it copies the run's labels and annotations onto its TaskRuns), with `condition` as status.
async fn create_task_run(
    env: &Env,
    run: &str,
    task: &str,
    condition: Value,
) -> anyhow::Result<String> {
    let parent = env.runs().get(run).await?;
    let name = format!("{run}-{task}");
    let mut labels = parent.metadata.labels.clone().unwrap_or_default();
    labels.insert("tekton.dev/pipelineRun".into(), run.into());
    labels.insert("tekton.dev/pipelineTask".into(), task.into());
    let mut tr =
        kube::api::DynamicObject::new(&name, &kubernaut_test_harness::tekton::taskrun_resource());
    tr.metadata.labels = Some(labels);
    tr.metadata.annotations = parent.metadata.annotations.clone();
    tr.data = json!({"spec": {"serviceAccountName": "kubernaut-workflow-runner",
        "taskSpec": {"steps": [{"name": "scale", "image": "registry.example/step:1", "script": "true"}]}}});
    env.taskruns().create(&PostParams::default(), &tr).await?;
    env.taskruns()
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"podName": "", "conditions": [condition]}})),
        )
        .await?;
    Ok(name)
}

/// Real Tekton keeps a TaskRun whose pod a ResourceQuota refuses `Unknown`/`ExceededResourceQuota`
/// (retrying every minute) while its PipelineRun only says `Running`, until the run times out
/// with the quota text gone. The WFE says so while it runs, and fails for the quota.
#[tokio::test]
async fn a_taskrun_held_by_a_quota_is_reported_while_running_and_fails_the_run_as_resource_exhausted()
-> anyhow::Result<()> {
    let mut env = Env::new("wfe-held", |_| {}).await?;
    without_tekton(&mut env);
    env.create(
        "quota",
        "scale-deployment",
        "deployment/payments",
        Scenario::Hang,
    )
    .await?;
    let running = env.wait_phase("quota", Phase::Running).await?;
    let run = status_of(&running)
        .pipeline_run_ref
        .expect("pipelineRunRef")
        .name;
    let now = Timestamp::now().to_string();
    env.runs()
        .patch_status(
            &run,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "startTime": now,
                "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Running",
                    "message": "Tasks Completed: 0 (Failed: 0, Cancelled 0), Incomplete: 2, Skipped: 0",
                    "lastTransitionTime": now}],
                "childReferences": [{"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
                    "name": format!("{run}-remediate"), "pipelineTaskName": "remediate"}],
                "pipelineSpec": {"tasks": [
                    {"name": "remediate", "taskSpec": {"steps": [{"name": "scale", "image": "i", "script": "true"}]}},
                    {"name": "verify", "runAfter": ["remediate"], "taskSpec": {"steps": [{"name": "check", "image": "i", "script": "true"}]}}]},
            }})),
        )
        .await?;
    let quota = "TaskRun Pod exceeded available resources: pods \"p\" is forbidden: exceeded quota: no-pods, requested: pods=1, used: pods=0, limited: pods=0";
    let held = json!({"type": "Succeeded", "status": "Unknown", "reason": "ExceededResourceQuota",
        "message": quota, "lastTransitionTime": now});
    let task_run = create_task_run(&env, &run, "remediate", held.clone()).await?;

    // Reported while the run still counts as running: a condition and one Warning Event.
    let reported = env
        .wait_for("quota", "ExecutionRunning=False ResourceExhausted", |w| {
            status_of(w).conditions.iter().any(|c| {
                c.type_ == "ExecutionRunning"
                    && c.status == "False"
                    && c.reason == "ResourceExhausted"
                    && c.message.contains("exceeded quota: no-pods")
                    && c.message.contains(&task_run)
            })
        })
        .await?;
    assert_eq!(status_of(&reported).phase, Some(Phase::Running));
    assert_eq!(
        status_of(&reported)
            .pipeline_run_status
            .and_then(|s| s.total_tasks),
        Some(2),
        "totalTasks counts the resolved pipeline, not the TaskRuns created so far"
    );
    let event = env.wait_event("quota", "ExecutionHeld").await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .message
            .as_deref()
            .unwrap_or("")
            .contains("exceeded quota"),
        "{event:?}"
    );
    // Tekton retries every minute, rewriting the same status: no second Event.
    let mut retried = held.clone();
    retried["lastTransitionTime"] = json!(Timestamp::now().to_string());
    env.taskruns()
        .patch_status(
            &task_run,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [retried]}})),
        )
        .await?;

    // The run times out; the TaskRun still says the quota (Tekton cancels it, status unchanged).
    let end = Timestamp::now().to_string();
    env.runs()
        .patch_status(
            &run,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "completionTime": end,
                "conditions": [{"type": "Succeeded", "status": "False", "reason": "PipelineRunTimeout",
                    "message": format!("PipelineRun {run:?} failed to finish within \"30s\""),
                    "lastTransitionTime": end}],
            }})),
        )
        .await?;
    let failed = env.wait_phase("quota", Phase::Failed).await?;
    let details = status_of(&failed).failure_details.expect("failureDetails");
    assert_eq!(details.reason, FailureReason::ResourceExhausted);
    assert!(!details.was_execution_failure, "no step ran");
    assert!(
        details.message.contains("failed to finish within"),
        "{}",
        details.message
    );
    assert!(
        details.message.contains("exceeded quota: no-pods"),
        "{}",
        details.message
    );
    let held_events = env
        .events_for("quota")
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ExecutionHeld"))
        .count();
    assert_eq!(held_events, 1, "one ExecutionHeld Event per hold");
    Ok(())
}

/// The kinds the operator creates and reads are the status mapping's (`child`,
/// `grandchildren.child`); it refuses to start, naming the kind, when the cluster does not serve
/// one of them.
#[tokio::test]
async fn the_operator_refuses_to_start_when_a_kind_of_the_mapping_is_not_served()
-> anyhow::Result<()> {
    let mut env = Env::new("wfe-kinds", |_| {}).await?;
    env.stop_operator().await?;
    let scratch = tempfile::tempdir()?;
    for (name, from, to) in [
        ("child", "kind: PipelineRun}", "kind: PipelineRunz}"),
        ("grandchild", "kind: TaskRun}", "kind: TaskRunz}"),
    ] {
        let dir = scratch.path().join(name);
        templates_with(&dir, "status.yaml", |text| text.replacen(from, to, 1))?;
        if name == "child" {
            // An engine's files agree on its kind: the template renders it and the cancel file
            // names it too.
            for file in ["pipelinerun.yaml.j2", "cancel.yaml"] {
                let path = dir.join("tekton").join(file);
                let text = std::fs::read_to_string(&path)?
                    .replace("kind: PipelineRun}", "kind: PipelineRunz}")
                    .replace("kind: PipelineRun\n", "kind: PipelineRunz\n");
                std::fs::write(&path, text)?;
            }
        }
        env.config.templates.dir = dir;
        let err = env
            .start_operator()
            .await
            .expect_err("started without the kind being served");
        let text = format!("{err:#}");
        let kind = to.trim_start_matches("kind: ").trim_end_matches('}');
        assert!(
            text.contains(&format!("tekton.dev/v1, Kind={kind} API is not served")),
            "{name}: {text}"
        );
    }
    // With the shipped mapping it starts.
    env.config.templates.dir = support::templates_dir();
    env.start_operator().await?;
    Ok(())
}
