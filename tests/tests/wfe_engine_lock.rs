//! One target, several execution engines: the lock is the child's deterministic name whatever the
//! engine's kind, so a Tekton execution and a Job execution on the same target never run at once.
//! Against the real API server (it serves `batch/v1` Jobs; no Job controller runs them here, so a
//! Job stays unstarted and its execution Running).

mod support;

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DynamicObject, PostParams},
    core::GroupVersionKind,
};
use kubernaut_test_harness::simulator::Scenario;
use serde_json::json;
use support::{Env, status_of, wfe};
use workflowexecution_operator::types::{Phase, SkipReason, WorkflowExecution};

/// The operator with the Tekton and the Job engines, Tekton the default.
async fn env(prefix: &str) -> anyhow::Result<Env> {
    Env::new(prefix, |config| {
        config.execution.engines = vec!["tekton".to_owned(), "job".to_owned()];
    })
    .await
}

fn on_engine(mut object: WorkflowExecution, engine: Option<&str>) -> WorkflowExecution {
    object.spec.execution_engine = engine.map(str::to_owned);
    object
}

fn jobs(env: &Env) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("batch", "v1", "Job"));
    Api::namespaced_with(env.client.clone(), &env.exec_ns, &resource)
}

/// The children named `lock` of either kind.
async fn holders(env: &Env, lock: &str) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    if let Some(run) = env.runs().get_opt(lock).await? {
        found.push(format!("PipelineRun {}", run.name_any()));
    }
    if let Some(job) = jobs(env).get_opt(lock).await? {
        found.push(format!("Job {}", job.name_any()));
    }
    Ok(found)
}

#[tokio::test]
async fn an_execution_on_the_job_engine_creates_a_job_and_records_its_engine() -> anyhow::Result<()>
{
    let env = env("wfe-engine-job").await?;
    let object = wfe(
        "by-job",
        "restart-deployment",
        "default/deployment/engine-job",
        Scenario::Success,
        json!({"REPLICAS": "3"}),
    );
    env.wfes()
        .create(&PostParams::default(), &on_engine(object, Some("job")))
        .await?;
    let running = env.wait_phase("by-job", Phase::Running).await?;
    let status = status_of(&running);
    assert_eq!(status.execution_engine.as_deref(), Some("job"));
    let lock = status.pipeline_run_ref.expect("the child's reference").name;
    let job = jobs(&env).get(&lock).await?;
    assert_eq!(
        job.labels()["kubernaut.ai/workflow-execution"],
        "by-job",
        "{job:?}"
    );
    assert_eq!(
        job.data["spec"]["template"]["spec"]["containers"][0]["image"],
        json!(Scenario::Success.bundle())
    );
    assert_eq!(holders(&env, &lock).await?, vec![format!("Job {lock}")]);
    Ok(())
}

#[tokio::test]
async fn a_tekton_and_a_job_execution_on_one_target_never_run_at_once() -> anyhow::Result<()> {
    let env = env("wfe-engine-lock").await?;
    let target = "default/deployment/shared-engines";
    let first = wfe(
        "first-by-job",
        "restart-deployment",
        target,
        Scenario::Success,
        json!({}),
    );
    env.wfes()
        .create(&PostParams::default(), &on_engine(first, Some("job")))
        .await?;
    let running = env.wait_phase("first-by-job", Phase::Running).await?;
    let lock = status_of(&running)
        .pipeline_run_ref
        .expect("the child's reference")
        .name;

    // The default engine (Tekton) on the same target waits its turn: skipped as busy.
    let second = wfe(
        "then-by-tekton",
        "restart-deployment",
        target,
        Scenario::Success,
        json!({}),
    );
    env.wfes()
        .create(&PostParams::default(), &on_engine(second, None))
        .await?;
    let skipped = env.wait_phase("then-by-tekton", Phase::Skipped).await?;
    let skip = status_of(&skipped).skip_details.expect("skip details");
    assert_eq!(skip.reason, SkipReason::ResourceBusy, "{skip:?}");
    assert_eq!(holders(&env, &lock).await?, vec![format!("Job {lock}")]);
    Ok(())
}

#[tokio::test]
async fn executions_of_two_engines_created_at_once_on_one_target_run_one_child()
-> anyhow::Result<()> {
    let env = env("wfe-engine-race").await?;
    let target = "default/deployment/raced-engines";
    let api = env.wfes();
    let by_job = on_engine(
        wfe(
            "race-job",
            "restart-deployment",
            target,
            Scenario::Success,
            json!({}),
        ),
        Some("job"),
    );
    let by_tekton = on_engine(
        wfe(
            "race-tekton",
            "restart-deployment",
            target,
            Scenario::Hang,
            json!({}),
        ),
        Some("tekton"),
    );
    let params = PostParams::default();
    let (a, b) = tokio::join!(
        api.create(&params, &by_job),
        api.create(&params, &by_tekton)
    );
    a?;
    b?;
    let mut decided = Vec::new();
    for name in ["race-job", "race-tekton"] {
        let wfe = env
            .wait_for(name, "Running or Skipped", |w| {
                matches!(
                    w.status.as_ref().and_then(|s| s.phase),
                    Some(Phase::Running | Phase::Skipped)
                )
            })
            .await?;
        decided.push(wfe);
    }
    let running: Vec<&WorkflowExecution> = decided
        .iter()
        .filter(|w| status_of(w).phase == Some(Phase::Running))
        .collect();
    assert_eq!(running.len(), 1, "exactly one runs: {decided:?}");
    let lock = status_of(running[0])
        .pipeline_run_ref
        .expect("the child's reference")
        .name;
    let children = holders(&env, &lock).await?;
    assert_eq!(children.len(), 1, "one child of one kind: {children:?}");
    Ok(())
}
