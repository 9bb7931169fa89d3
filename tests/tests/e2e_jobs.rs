//! The Job engine (`templates/workflowexecution/job/`) on the real Job controller: the Job its
//! template renders, created as is in the end-to-end cluster (`kubernaut_test_harness::e2e`:
//! kube-controller-manager runs the `job` controller, kube-scheduler places the pods, kwok plays
//! kubelet), ends the way its status mapping (`job/status.yaml`) says it does.
//!
//! Each scenario renders the template for a sample WorkflowExecution with the operator's library
//! functions (no operator process: selecting the engine per WorkflowExecution is not there yet),
//! creates the Job in a namespace of its own, waits for the outcome and reads the Job and its
//! pods (found by the mapping's `ownerLabel`) through the mapping, as the operator would:
//!
//! | scenario        | how                                        | outcome                          |
//! |-----------------|--------------------------------------------|----------------------------------|
//! | `succeed`       | the container exits 0                      | Completed                        |
//! | `exit-1`        | it exits 1                                 | Failed, TaskFailed (exit code 1) |
//! | `oom`           | it is OOMKilled (137)                      | Failed, OOMKilled                |
//! | `image-pull`    | the image cannot be pulled; deadline 8s    | held ImagePullBackOff, then Failed ImagePullBackOff (pre-execution) |
//! | `deadline`      | it runs past activeDeadlineSeconds (5s)    | Failed, DeadlineExceeded         |
//! | `unschedulable` | a LimitRange asks 1000 CPUs of every pod   | held ResourceExhausted, then Failed ResourceExhausted |
//! | `quota`         | a ResourceQuota allows no pod              | Failed, DeadlineExceeded (the quota shows only in an Event) |
//! | `cancelled`     | `job/cancel.yaml`'s patch on a running Job | its pod deleted, then Failed     |
//!
//! kwok picks the scenario from the container image's name (`/e2e-exit-1`, `/e2e-oom`,
//! `/e2e-image-pull`, `/e2e-sleep`; `tests/e2e/kwok.yaml`), so the template needs to know nothing
//! of it.
//!
//! With `KUBERNAUT_E2E_RECORD=<dir>` set, each scenario writes the Job and its pods as the
//! cluster wrote them to `<dir>/job/<scenario>.yaml`, headed by the Kubernetes version
//! (`tests/e2e/recorded/job/` holds the committed recordings; the golden tests map them).
//!
//! Needs `make e2e-deps`; without it the tests fail naming the command.

use std::{
    collections::BTreeMap,
    future::Future,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::core::v1::{Event, LimitRange, ResourceQuota};
use kube::{
    Api, Client,
    api::{
        ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
    },
};
use kubernaut_framework::cancel::CancelSpec;
use kubernaut_framework::status::{StatusMapping, grandchildren};
use kubernaut_framework::template::{ChildKind, TemplateSet, apply_identity};
use kubernaut_test_harness::e2e::E2eCluster;
use serde_json::Value;
use workflowexecution_operator::{
    config::OperatorConfig,
    failure::{FailureContext, Remembered, failure_details_remembered},
    pipelinerun::pipeline_run_identity,
    run_status::{RunPhase, observe_run},
    templates::{mapping_rules, template_context},
    testing::template_decl,
    types::{FailureDetails, FailureReason, WorkflowExecution, WorkflowExecutionSpec, WorkflowRef},
};

/// The service account the Job's pod runs as (the operator's `execution.serviceAccountName`).
const RUNNER: &str = "kubernaut-workflow-runner";
/// The Job engine's template, relative to the template directory.
const JOB_TEMPLATE: &str = "job/job.yaml.j2";
/// Generous: a few seconds of kwok stage delays and deadlines on a shared, busy machine.
const WAIT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn templates_dir() -> PathBuf {
    repo().join("templates/workflowexecution")
}

fn job_kind() -> ChildKind {
    ChildKind {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
    }
}

fn job_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("batch", "v1", "Job"))
}

fn pod_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Pod"))
}

fn mapping() -> anyhow::Result<StatusMapping> {
    StatusMapping::load(&templates_dir().join("job/status.yaml"), &mapping_rules())
        .map_err(|e| anyhow!("{e}"))
}

fn operator_config(exec_ns: &str) -> OperatorConfig {
    let mut config = OperatorConfig::default();
    config.execution.namespace = exec_ns.to_owned();
    config.execution.service_account_name = RUNNER.to_owned();
    config.templates.dir = templates_dir();
    config
}

fn workflow_execution(ns: &str, name: &str, image: &str, timeout: &str) -> WorkflowExecution {
    let mut wfe = WorkflowExecution::new(
        name,
        WorkflowExecutionSpec {
            workflow_ref: WorkflowRef {
                workflow_id: "scale-deployment".into(),
                version: "1.0.0".into(),
                container_image: format!("registry.invalid/kubernaut/{image}:1"),
                container_digest: None,
            },
            target_resource: format!("{ns}/deployment/{name}"),
            parameters: [("REPLICAS".to_owned(), "3".to_owned())].into(),
            confidence: Some(0.9),
            rationale: Some("end-to-end test".into()),
            remediation_request_ref: None,
            execution_config: Some(Box::new(
                workflowexecution_operator::types::ExecutionConfig {
                    timeout: Some(timeout.to_owned()),
                    service_account_name: None,
                },
            )),
            execution_engine: None,
        },
    );
    wfe.metadata.namespace = Some(ns.to_owned());
    wfe.metadata.uid = Some(format!(
        "00000000-0000-4000-8000-{:012x}",
        rand::random::<u64>() & 0xffff_ffff_ffff
    ));
    wfe
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    kubernaut_test_harness::e2e::eventually(what, WAIT, check).await
}

/// Renders the Job of `wfe` with the shipped template, as the operator renders a child: the
/// template with the operator's context, then the framework-owned identity (name = the lock).
fn render_job(wfe: &WorkflowExecution, config: &OperatorConfig) -> anyhow::Result<Value> {
    let templates = TemplateSet::load(
        &config.templates.dir,
        &[template_decl(JOB_TEMPLATE, job_kind())],
    )
    .map_err(|e| anyhow!("loading the Job template: {e}"))?;
    let mut job = templates
        .render(JOB_TEMPLATE, &template_context(wfe, config))
        .map_err(|e| anyhow!("rendering the Job: {e}"))?;
    apply_identity(
        &mut job,
        &pipeline_run_identity(wfe, config, templates.revision()),
    );
    Ok(job)
}

/// One run of the Job engine in the cluster: a namespace, its Job, the mapping.
struct JobRun<'a> {
    cluster: &'a E2eCluster,
    client: Client,
    ns: String,
    name: String,
    wfe: WorkflowExecution,
    config: OperatorConfig,
    mapping: StatusMapping,
}

impl<'a> JobRun<'a> {
    /// A namespace (with the runner service account) for `scenario`; `prepare` sets it up before
    /// the Job is created.
    async fn new(
        cluster: &'a E2eCluster,
        scenario: &str,
        image: &str,
        timeout: &str,
    ) -> anyhow::Result<JobRun<'a>> {
        let client = cluster.client().await?;
        let ns = cluster
            .create_run_namespace(&format!("e2e-job-{scenario}"), RUNNER)
            .await?;
        let wfe = workflow_execution(&ns, scenario, image, timeout);
        let config = operator_config(&ns);
        Ok(JobRun {
            cluster,
            client,
            name: String::new(),
            wfe,
            config,
            mapping: mapping()?,
            ns,
        })
    }

    /// Renders and creates the Job.
    async fn create(&mut self) -> anyhow::Result<()> {
        let mut job: DynamicObject = serde_json::from_value(render_job(&self.wfe, &self.config)?)?;
        // The owner is the WorkflowExecution, which does not exist here; garbage collection would
        // delete a Job whose owner is missing.
        job.metadata.owner_references = None;
        self.name = job
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow!("the rendered Job has no name"))?;
        self.jobs()
            .create(&PostParams::default(), &job)
            .await
            .context("creating the rendered Job")?;
        Ok(())
    }

    fn jobs(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &job_resource())
    }

    /// The Job and its pods now, as whole documents (the pods found the mapping's way).
    async fn read(&self) -> anyhow::Result<(Value, BTreeMap<String, Value>)> {
        let job = serde_json::to_value(self.jobs().get(&self.name).await?)?;
        let pods: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.ns, &pod_resource());
        let pods = grandchildren::read(&pods, &self.mapping, &job).await?;
        Ok((job, pods))
    }

    /// Waits until `done` holds for the Job and its pods; returns them.
    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&StatusMapping, &Value, &BTreeMap<String, Value>) -> bool,
    ) -> anyhow::Result<(Value, BTreeMap<String, Value>)> {
        let result = eventually(
            &format!("Job {}/{}: {what}", self.ns, self.name),
            || async {
                let (job, pods) = self.read().await?;
                Ok(done(&self.mapping, &job, &pods).then_some((job, pods)))
            },
        )
        .await;
        if result.is_err()
            && let Ok((job, pods)) = self.read().await
        {
            eprintln!("Job {}: {}", self.name, job["status"]);
            for (name, pod) in &pods {
                eprintln!("pod {name}: {}", pod["status"]);
            }
        }
        result
    }

    /// Waits until the mapping reads the Job as Completed or Failed.
    async fn finished(&self) -> anyhow::Result<(Value, BTreeMap<String, Value>)> {
        self.wait_for("finished", |mapping, job, _| {
            observe_run(mapping, job, None).phase.is_finished()
        })
        .await
    }

    /// The failure details the operator would write, with what it `remembered` while the Job
    /// ran.
    fn failure(
        &self,
        job: &Value,
        pods: &BTreeMap<String, Value>,
        remembered: &Remembered,
    ) -> FailureDetails {
        let context = FailureContext::new(&self.wfe, &self.config.execution);
        let mut reading = self.mapping.read(job);
        reading.grandchildren = Some(self.mapping.read_grandchildren(job, pods));
        failure_details_remembered(
            &self.mapping,
            &context,
            &reading,
            remembered,
            jiff::Timestamp::now(),
        )
    }

    /// With `KUBERNAUT_E2E_RECORD` set, writes the Job and its pods (by name) to
    /// `<dir>/job/<scenario>.yaml`, headed by the Kubernetes version.
    fn record(
        &self,
        job: &Value,
        pods: &BTreeMap<String, Value>,
        scenario: &str,
        note: &str,
    ) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os("KUBERNAUT_E2E_RECORD") else {
            return Ok(());
        };
        let versions = self.cluster.components().versions()?;
        let version = |component: &str| {
            versions
                .lines()
                .find(|l| l.starts_with(&format!("{component} ")))
                .unwrap_or(component)
                .to_owned()
        };
        let mut text = format!(
            "# Recorded from {} ({}, {}) by tests/tests/e2e_jobs.rs (KUBERNAUT_E2E_RECORD).\n\
             # Scenario: {note}\n\
             # The Job, then its pods; managedFields removed.\n",
            version("kube-controller-manager"),
            version("kube-scheduler"),
            version("kwok"),
        );
        for object in std::iter::once(job).chain(pods.values()) {
            let mut object = object.clone();
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("managedFields");
            }
            // The items of a LIST carry no apiVersion/kind.
            if object.get("kind").is_none_or(Value::is_null)
                && let Some(fields) = object.as_object_mut()
            {
                fields.insert("apiVersion".to_owned(), "v1".into());
                fields.insert("kind".to_owned(), "Pod".into());
            }
            text.push_str("---\n");
            text.push_str(&serde_yaml::to_string(&object)?);
        }
        let dir = Path::new(&dir).join("job");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{scenario}.yaml")), text)?;
        Ok(())
    }
}

/// Runs a scenario on the shared cluster; when it fails, prints the cluster's logs.
async fn logged<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(&'static E2eCluster) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let cluster = E2eCluster::shared().await?;
    let _logs = cluster.logs_on_failure();
    let result = body(cluster).await;
    if result.is_err() {
        cluster.print_logs();
    }
    result
}

fn phase(mapping: &StatusMapping, job: &Value) -> RunPhase {
    observe_run(mapping, job, None).phase
}

fn condition(job: &Value, type_: &str) -> Option<(String, String)> {
    job.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// The Job's one pod.
fn only_pod(pods: &BTreeMap<String, Value>) -> anyhow::Result<&Value> {
    match pods.values().collect::<Vec<_>>().as_slice() {
        [pod] => Ok(pod),
        other => bail!("expected one pod, found {}", other.len()),
    }
}

#[tokio::test]
async fn a_job_whose_container_exits_0_completes() -> anyhow::Result<()> {
    logged(|cluster| async move {
        let mut run = JobRun::new(cluster, "succeed", "e2e-job", "5m").await?;
        run.create().await?;
        let (job, pods) = run.finished().await?;
        run.record(&job, &pods, "succeed", "the container runs 1s and exits 0")?;
        assert_eq!(
            condition(&job, "Complete"),
            Some(("True".into(), "CompletionsReached".into()))
        );
        let observed = observe_run(&run.mapping, &job, Some(&pods));
        assert_eq!(observed.phase, RunPhase::Completed);
        assert_eq!(observed.summary.completed_tasks, Some(1));
        assert_eq!(observed.summary.total_tasks, Some(1));
        assert_eq!(observed.summary.execution_started, Some(true));
        assert!(observed.completion_time.is_some());
        // The pod ran as the runner, with no token, and maps back to the WorkflowExecution.
        let pod = only_pod(&pods)?;
        assert_eq!(pod["spec"]["serviceAccountName"], RUNNER);
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["kubernaut.ai/workflow-execution"], "succeed");
        assert_eq!(labels["kubernaut.ai/source-namespace"], run.ns.as_str());
        assert_eq!(
            labels["job-name"],
            run.name.as_str(),
            "the legacy label too"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["kubernaut.ai/workflow-execution"],
            "succeed"
        );
        let env = pod["spec"]["containers"][0]["env"].clone();
        assert!(
            env.as_array()
                .is_some_and(|env| env.iter().any(|e| e["name"] == "TARGET_RESOURCE"
                    && e["value"] == run.wfe.spec.target_resource.as_str())),
            "{env}"
        );
        Ok(())
    })
    .await
}

/// A failed Job with the facts of its failed pod: phase Failed, the reason, and what the
/// failure details say of the container.
async fn failing_job(
    cluster: &'static E2eCluster,
    scenario: &str,
    image: &str,
    note: &str,
) -> anyhow::Result<(FailureDetails, Value)> {
    let mut run = JobRun::new(cluster, scenario, image, "5m").await?;
    run.create().await?;
    let (job, pods) = run
        .wait_for("failed, its pod failed", |mapping, job, pods| {
            phase(mapping, job) == RunPhase::Failed
                && pods.values().any(|p| mapping.grandchild_failed(p))
        })
        .await?;
    run.record(&job, &pods, scenario, note)?;
    assert_eq!(
        condition(&job, "Failed"),
        Some(("True".into(), "BackoffLimitExceeded".into()))
    );
    let details = run.failure(&job, &pods, &Remembered::default());
    assert_eq!(details.failed_step_name.as_deref(), Some("workflow"));
    assert_eq!(details.failed_task_index, Some(0));
    assert!(details.was_execution_failure, "the container ran");
    Ok((details, job))
}

#[tokio::test]
async fn a_job_whose_container_exits_1_fails_as_task_failed() -> anyhow::Result<()> {
    logged(|cluster| async move {
        let (details, _) = failing_job(
            cluster,
            "exit-1",
            "e2e-exit-1",
            "the container runs 1s and exits 1 (Error)",
        )
        .await?;
        assert_eq!(details.reason, FailureReason::TaskFailed);
        assert_eq!(details.exit_code, Some(1));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_oom_killed_container_fails_the_job_as_oom_killed() -> anyhow::Result<()> {
    logged(|cluster| async move {
        let (details, _) = failing_job(
            cluster,
            "oom",
            "e2e-oom",
            "the container runs 1s and is OOMKilled (137)",
        )
        .await?;
        assert_eq!(details.reason, FailureReason::OomKilled);
        assert_eq!(details.exit_code, Some(137));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_job_past_its_deadline_fails_as_deadline_exceeded() -> anyhow::Result<()> {
    logged(|cluster| async move {
        let mut run = JobRun::new(cluster, "deadline", "e2e-sleep", "5s").await?;
        run.create().await?;
        let rendered = render_job(&run.wfe, &run.config)?;
        assert_eq!(rendered["spec"]["activeDeadlineSeconds"], 5);
        // While it runs, the operator sees the container started.
        let (job, pods) = run
            .wait_for("running, its container started", |mapping, job, pods| {
                phase(mapping, job) == RunPhase::Running
                    && pods.values().any(|p| mapping.grandchild_ran(p))
            })
            .await?;
        run.record(
            &job,
            &pods,
            "deadline-running",
            "the container runs until the pod is deleted; the Job while it runs",
        )?;
        let (job, pods) = run.finished().await?;
        run.record(
            &job,
            &pods,
            "deadline",
            "the container runs until the pod is deleted; activeDeadlineSeconds 5; the Job after \
             its deadline",
        )?;
        assert_eq!(
            condition(&job, "Failed"),
            Some(("True".into(), "DeadlineExceeded".into()))
        );
        let remembered = Remembered {
            seen_started: true,
            held: None,
        };
        let details = run.failure(&job, &pods, &remembered);
        assert_eq!(details.reason, FailureReason::DeadlineExceeded);
        assert!(details.was_execution_failure);
        // The Job's reason alone says so, whatever is left of its pod.
        assert_eq!(
            run.failure(&job, &BTreeMap::new(), &Remembered::default())
                .reason,
            FailureReason::DeadlineExceeded
        );
        Ok(())
    })
    .await
}

/// Cancelling as `job/cancel.yaml` says: the patch suspends the running Job, the Job controller
/// deletes its pod, and the mapping then reads the Job as finished (Failed), so the operator would
/// delete it — after its pod, never before.
#[tokio::test]
async fn a_cancelled_job_loses_its_pod_and_then_reads_as_finished() -> anyhow::Result<()> {
    logged(|cluster| async move {
        let mut run = JobRun::new(cluster, "cancel", "e2e-sleep", "5m").await?;
        run.create().await?;
        run.wait_for("running, its container started", |mapping, job, pods| {
            phase(mapping, job) == RunPhase::Running
                && pods.values().any(|p| mapping.grandchild_ran(p))
        })
        .await?;
        let cancel = CancelSpec::load(&templates_dir().join("job/cancel.yaml"), &job_kind())
            .map_err(|e| anyhow!("{e}"))?;
        let (job, _) = run.read().await?;
        assert!(!cancel.is_cancelled(&job));
        let resource_version = job["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        run.jobs()
            .patch(
                &run.name,
                &PatchParams::default(),
                &Patch::Merge(cancel.patch(resource_version.as_deref())),
            )
            .await
            .context("cancelling the Job")?;
        let (job, pods) = run.finished().await?;
        run.record(
            &job,
            &pods,
            "cancelled",
            "the container runs until the pod is deleted; the Job suspended by job/cancel.yaml's \
             patch, after its pod is gone",
        )?;
        assert!(cancel.is_cancelled(&job));
        assert_eq!(phase(&run.mapping, &job), RunPhase::Failed);
        assert!(
            pods.is_empty(),
            "the pod is gone before the Job reads as finished"
        );
        assert_eq!(
            condition(&job, "Suspended"),
            Some(("True".into(), "JobSuspended".into()))
        );
        Ok(())
    })
    .await
}

/// A Job held back by something its pod shows (`held`), until its deadline fails it: the hold is
/// seen while it runs and, remembered, names the failure; nothing ran.
async fn held_job(
    run: &mut JobRun<'_>,
    scenario: &str,
    note: &str,
    held_result: FailureReason,
) -> anyhow::Result<()> {
    run.create().await?;
    // The pod may be held before the Job controller has written the Job's startTime.
    let (job, pods) = run
        .wait_for("running, held back", |mapping, job, pods| {
            phase(mapping, job) == RunPhase::Running && mapping.first_held(job, pods).is_some()
        })
        .await?;
    run.record(&job, &pods, &format!("{scenario}-running"), note)?;
    assert_eq!(phase(&run.mapping, &job), RunPhase::Running);
    let held = run
        .mapping
        .first_held(&job, &pods)
        .ok_or_else(|| anyhow!("not held"))?;
    assert_eq!(held.result, held_result.as_str());
    assert!(
        held.message
            .as_deref()
            .is_some_and(|m| m.starts_with("Pod ")),
        "{held:?}"
    );
    assert!(!pods.values().any(|p| run.mapping.grandchild_ran(p)));

    let (job, pods) = run.finished().await?;
    run.record(
        &job,
        &pods,
        &format!("{scenario}-final"),
        &format!("{note}; the Job after its deadline"),
    )?;
    assert_eq!(
        condition(&job, "Failed"),
        Some(("True".into(), "DeadlineExceeded".into()))
    );
    let remembered = Remembered {
        seen_started: false,
        held: Some(held),
    };
    let details = run.failure(&job, &pods, &remembered);
    assert_eq!(details.reason, held_result);
    assert!(!details.was_execution_failure, "pre-execution");
    Ok(())
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_holds_the_job_then_fails_it_as_image_pull_back_off()
-> anyhow::Result<()> {
    logged(|cluster| async move {
        let mut run = JobRun::new(cluster, "image-pull", "e2e-image-pull", "8s").await?;
        held_job(
            &mut run,
            "image-pull",
            "the image cannot be pulled (ImagePullBackOff); activeDeadlineSeconds 8",
            FailureReason::ImagePullBackOff,
        )
        .await
    })
    .await
}

#[tokio::test]
async fn an_unschedulable_pod_holds_the_job_then_fails_it_as_resource_exhausted()
-> anyhow::Result<()> {
    logged(|cluster| async move {
        let mut run = JobRun::new(cluster, "unschedulable", "e2e-job", "8s").await?;
        // Every pod of the namespace asks more CPU than any node has.
        let limits: Api<LimitRange> = Api::namespaced(run.client.clone(), &run.ns);
        let limit: LimitRange = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "huge-requests"},
            "spec": {"limits": [{"type": "Container", "defaultRequest": {"cpu": "1000"}}]},
        }))?;
        limits.create(&PostParams::default(), &limit).await?;
        held_job(
            &mut run,
            "unschedulable",
            "a LimitRange gives the pod a request of 1000 CPUs: no node fits it; \
             activeDeadlineSeconds 8",
            FailureReason::ResourceExhausted,
        )
        .await
    })
    .await
}

/// What the Job controller does when a ResourceQuota refuses the pod: a FailedCreate Event on the
/// Job, nothing in its status, until the deadline fails it. The mapping can say only that.
#[tokio::test]
async fn a_quota_that_refuses_the_pod_shows_only_in_an_event_and_the_deadline_fails_the_job()
-> anyhow::Result<()> {
    logged(|cluster| async move {
        let mut run = JobRun::new(cluster, "quota", "e2e-job", "8s").await?;
        let quotas: Api<ResourceQuota> = Api::namespaced(run.client.clone(), &run.ns);
        let quota: ResourceQuota = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "no-pods"},
            "spec": {"hard": {"pods": "0"}},
        }))?;
        quotas.create(&PostParams::default(), &quota).await?;
        // Admission enforces a quota once the resourcequota controller has written its status.
        eventually("the quota's status is computed", || async {
            let q = quotas.get("no-pods").await?;
            Ok(q.status.and_then(|s| s.hard).is_some().then_some(()))
        })
        .await?;
        run.create().await?;

        let events: Api<Event> = Api::namespaced(run.client.clone(), &run.ns);
        let refused = eventually("the FailedCreate Event", || async {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={}", run.name)))
                .await?;
            Ok(list
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedCreate")))
        })
        .await?;
        assert!(
            refused
                .message
                .as_deref()
                .is_some_and(|m| m.contains("exceeded quota")),
            "{refused:?}"
        );
        // The Event may come before the Job controller has written the Job's startTime.
        let (job, pods) = run
            .wait_for("running", |mapping, job, _| {
                phase(mapping, job) == RunPhase::Running
            })
            .await?;
        run.record(
            &job,
            &pods,
            "quota-running",
            "a ResourceQuota allows no pod; the Job after the FailedCreate Event",
        )?;
        assert!(pods.is_empty());
        assert_eq!(phase(&run.mapping, &job), RunPhase::Running);

        let (job, pods) = run.finished().await?;
        run.record(
            &job,
            &pods,
            "quota-final",
            "a ResourceQuota allows no pod; activeDeadlineSeconds 8; the Job after its deadline",
        )?;
        let details = run.failure(&job, &pods, &Remembered::default());
        assert_eq!(details.reason, FailureReason::DeadlineExceeded);
        assert!(!details.was_execution_failure);
        assert_eq!(job.pointer("/status/active"), None, "no pod ever ran");
        Ok(())
    })
    .await
}
