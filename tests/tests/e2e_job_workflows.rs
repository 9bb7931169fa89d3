//! End-to-end scenarios of the Job engine through the operator: the operator binary, configured
//! with `execution.engines: [tekton, job]`, runs WorkflowExecutions that set
//! `spec.executionEngine: job` as `batch/v1` Jobs on the end-to-end cluster (the Job controller of
//! kube-controller-manager, kube-scheduler, kwok as kubelet), and each test asserts the outcome the
//! operator writes on the WorkflowExecution.
//!
//! One operator process serves every test of this binary; each test creates its
//! WorkflowExecutions in a namespace of its own, on targets of its own. kwok picks how a pod ends
//! from its container image's name (`/e2e-exit-1`, `/e2e-oom`, `/e2e-image-pull`, `/e2e-sleep`;
//! otherwise it exits 0; `tests/e2e/kwok.yaml`).
//!
//! Needs `make e2e-deps` and the operator's build (`make e2e` builds both); without them the tests
//! fail naming the command.

use anyhow::anyhow;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams},
};
use kubernaut_test_harness::e2e::workflows::{
    ENDED, OperatorEnv, Scenario, assert_failure, child_name, eventually, execution, phase,
    wait_phase,
};
use tokio::sync::OnceCell;
use workflowexecution_operator::types::{FailureReason, Phase, SkipReason, WorkflowExecution};

/// The service account the Jobs' pods run as (the operator's `execution.serviceAccountName`).
const RUNNER: &str = "kubernaut-workflow-runner";

/// The name of the Job engine (its directory under `templates/workflowexecution/`).
const JOB_ENGINE: &str = "job";

/// The shared cluster with one operator process (started on first use).
async fn env() -> anyhow::Result<&'static OperatorEnv> {
    static ENV: OnceCell<OperatorEnv> = OnceCell::const_new();
    ENV.get_or_try_init(|| async {
        let extra = format!("  engines: [tekton, {JOB_ENGINE}]\n");
        OperatorEnv::start("operator-job-workflows", "e2e-job-runs", RUNNER, &extra).await
    })
    .await
}

/// A WorkflowExecution on the Job engine running `image` (a kwok scenario name such as
/// `e2e-exit-1`) against the deployment `target` of `ns`.
fn job_execution(
    ns: &str,
    name: &str,
    image: &str,
    target: &str,
    timeout: &str,
) -> WorkflowExecution {
    execution(
        ns,
        name,
        format!("registry.invalid/kubernaut/{image}:1"),
        target,
        Some(timeout),
        Some(JOB_ENGINE),
    )
}

/// The pods of the Job `job`.
fn job_pods(job: &str) -> ListParams {
    ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"))
}

/// One Job execution `name` of `image` in a namespace of its own, run to its end (on the Job
/// engine, checked); returns the scenario and the execution as it ended.
async fn run_job(
    env: &OperatorEnv,
    name: &str,
    image: &str,
    timeout: &str,
) -> anyhow::Result<(Scenario, WorkflowExecution)> {
    let scenario = env.scenario(&format!("e2e-job-{name}")).await?;
    let wfe = job_execution(&scenario.ns, name, image, name, timeout);
    let done = scenario.run_to_end(&wfe).await?;
    let engine = done
        .status
        .as_ref()
        .and_then(|s| s.execution_engine.clone());
    assert_eq!(engine.as_deref(), Some(JOB_ENGINE), "{:?}", done.status);
    Ok((scenario, done))
}

// ------------------------------------------------------------------------------------- success

#[tokio::test]
async fn a_job_execution_whose_container_exits_0_completes_as_a_job_run_by_the_runner()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let (scenario, done) = run_job(env, "succeed", "e2e-succeed", "5m").await?;
        let client = &scenario.client;
        assert_eq!(
            phase(&done),
            Some(Phase::Completed),
            "status: {:?}",
            done.status
        );
        let job = child_name(&done)?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &env.exec_ns);
        let job = jobs.get(&job).await?;
        let pods: Api<Pod> = Api::namespaced(client.clone(), &env.exec_ns);
        let pods = pods.list(&job_pods(&job.name_any())).await?.items;
        assert_eq!(pods.len(), 1, "one pod: {pods:?}");
        let spec = pods[0]
            .spec
            .as_ref()
            .ok_or_else(|| anyhow!("a pod without spec"))?;
        assert_eq!(spec.service_account_name.as_deref(), Some(RUNNER));
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------ failures

#[tokio::test]
async fn a_job_container_exiting_1_fails_the_execution_as_task_failed_naming_the_container()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let (_, done) = run_job(env, "exit-1", "e2e-exit-1", "5m").await?;
        let details = assert_failure(&done, FailureReason::TaskFailed, true)?;
        assert_eq!(details.exit_code, Some(1), "{details:?}");
        let step = details.failed_step_name.as_deref();
        assert_eq!(step, Some("workflow"), "{details:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_oom_killed_job_container_fails_the_execution_as_oom_killed() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let (_, done) = run_job(env, "oom", "e2e-oom", "5m").await?;
        let details = assert_failure(&done, FailureReason::OomKilled, true)?;
        assert_eq!(details.exit_code, Some(137), "{details:?}");
        Ok(())
    })
    .await
}

/// The image cannot be pulled: the operator reports the hold while the Job waits (condition
/// `ExecutionRunning` False `ImagePullBackOff`), and when the Job's `activeDeadlineSeconds` (the
/// execution's timeout) ends it, fails the execution as `ImagePullBackOff`, pre-execution: the
/// container never started.
#[tokio::test]
async fn an_image_that_cannot_be_pulled_is_reported_held_then_fails_the_execution_pre_execution()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let scenario = env.scenario("e2e-job-image-pull").await?;
        let (ns, wfes) = (&scenario.ns, &scenario.wfes);
        let wfe = job_execution(ns, "image-pull", "e2e-image-pull", "image-pull", "20s");
        scenario.create(&wfe).await?;
        let held = eventually("the WFE reports the image pull while running", || async {
            let current = wfes.get("image-pull").await?;
            let reported = current.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "ExecutionRunning"
                        && c.status == "False"
                        && c.reason == "ImagePullBackOff"
                })
            });
            Ok(reported.then_some(current))
        })
        .await?;
        assert_eq!(phase(&held), Some(Phase::Running), "{:?}", held.status);
        let done = wait_phase(wfes, "image-pull", ENDED).await?;
        assert_failure(&done, FailureReason::ImagePullBackOff, false)?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_job_container_running_past_the_timeout_fails_the_execution_as_deadline_exceeded()
-> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let (_, done) = run_job(env, "deadline", "e2e-sleep", "8s").await?;
        assert_failure(&done, FailureReason::DeadlineExceeded, true)?;
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------ deletion

#[tokio::test]
async fn deleting_a_running_job_execution_removes_it_with_its_job_and_pods() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let scenario = env.scenario("e2e-job-deleted").await?;
        let (client, ns, wfes) = (&scenario.client, &scenario.ns, &scenario.wfes);
        scenario
            .create(&job_execution(ns, "deleted", "e2e-sleep", "deleted", "1h"))
            .await?;
        let running = wait_phase(wfes, "deleted", &[Phase::Running, Phase::Failed]).await?;
        assert_eq!(
            phase(&running),
            Some(Phase::Running),
            "{:?}",
            running.status
        );
        let job = child_name(&running)?;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &env.exec_ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &env.exec_ns);
        eventually("the Job's pod runs", || async {
            let list = pods.list(&job_pods(&job)).await?.items;
            let running = list
                .iter()
                .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
            Ok(running.then_some(()))
        })
        .await?;

        wfes.delete("deleted", &DeleteParams::default()).await?;
        eventually("the WFE is gone", || async {
            Ok(wfes.get_opt("deleted").await?.is_none().then_some(()))
        })
        .await?;
        eventually("the Job and its pods are gone", || async {
            let job_gone = jobs.get_opt(&job).await?.is_none();
            let pods_gone = pods.list(&job_pods(&job)).await?.items.is_empty();
            Ok((job_gone && pods_gone).then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}

// ------------------------------------------------------------------------------------- the lock

/// The lock is one per target whatever the engine: of a Tekton execution and a Job execution
/// created at once on the same target, one runs and the other is skipped as busy, naming it.
#[tokio::test]
async fn a_tekton_and_a_job_execution_on_one_target_never_run_at_once() -> anyhow::Result<()> {
    let env = env().await?;
    env.logged(async {
        let scenario = env.scenario("e2e-job-lock").await?;
        let (ns, wfes) = (&scenario.ns, &scenario.wfes);
        let mut tekton = job_execution(ns, "tekton", "unused", "shared", "1h");
        tekton.spec.workflow_ref.container_image = env.cluster.bundle("long-running")?;
        tekton.spec.execution_engine = Some("tekton".into());
        let job = job_execution(ns, "job", "e2e-sleep", "shared", "1h");
        scenario.create(&tekton).await?;
        scenario.create(&job).await?;
        let all = [
            Phase::Running,
            Phase::Completed,
            Phase::Failed,
            Phase::Skipped,
        ];
        let decided = [
            wait_phase(wfes, "tekton", &all).await?,
            wait_phase(wfes, "job", &all).await?,
        ];
        let running: Vec<&WorkflowExecution> = decided
            .iter()
            .filter(|w| phase(w) == Some(Phase::Running))
            .collect();
        assert_eq!(running.len(), 1, "exactly one runs: {decided:?}");
        let runner = running[0].name_any();
        let skipped = decided
            .iter()
            .find(|w| w.name_any() != runner)
            .ok_or_else(|| anyhow!("no second execution"))?;
        let skip = skipped
            .status
            .as_ref()
            .and_then(|s| s.skip_details.as_ref())
            .ok_or_else(|| anyhow!("{} not skipped: {:?}", skipped.name_any(), skipped.status))?;
        assert_eq!(skip.reason, SkipReason::ResourceBusy, "{skip:?}");
        assert_eq!(
            skip.conflicting_workflow.as_ref().map(|c| c.name.as_str()),
            Some(runner.as_str()),
            "{skip:?}"
        );
        // Ends the hour-long run.
        wfes.delete(&runner, &DeleteParams::default()).await?;
        eventually("the running WFE is gone", || async {
            Ok(wfes.get_opt(&runner).await?.is_none().then_some(()))
        })
        .await?;
        Ok(())
    })
    .await
}
