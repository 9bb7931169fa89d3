//! Safety under real-world conditions, against the real control plane and the Tekton simulator:
//! runs are owned by one WorkflowExecution *instance*, stale locks are released, a block holds
//! until it is cleared (whatever else happens on the target), long names keep their status sync,
//! and the recorded run namespace outlives a change of `execution.namespace`.

mod support;

use std::time::Duration;

use kube::{
    Api, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams},
};
use kubernaut_test_harness::{simulator::Scenario, tekton};
use serde_json::json;
use support::{
    Env,
    audit_receiver::{AuditReceiver, send_audit_to},
    status_of, wfe,
};
use workflowexecution_operator::{
    pipelinerun::{self, ANNOTATION_EXECUTION_BLOCK, LABEL_WORKFLOW_EXECUTION_UID},
    types::{ExecutionConfig, Phase, SkipReason, WorkflowExecution},
};

const HOLD_FINALIZER: &str = "test.kubernaut.ai/hold";

/// A WFE the operator's runtime validation refuses (service account not allowed).
fn invalid(name: &str, target: &str) -> WorkflowExecution {
    let mut w = wfe(name, "scale-up", target, Scenario::Success, json!({}));
    w.spec.execution_config = Some(Box::new(ExecutionConfig {
        timeout: None,
        service_account_name: Some("cluster-admin-sa".to_owned()),
    }));
    w
}

fn skip_reason(w: &WorkflowExecution) -> Option<SkipReason> {
    status_of(w).skip_details.map(|s| s.reason)
}

#[tokio::test]
async fn a_recreated_wfe_neither_adopts_nor_fails_on_its_predecessors_run_held_by_a_finalizer()
-> anyhow::Result<()> {
    let env = Env::new("wfe-recreate", |_| {}).await?;
    let target = "default/deployment/recreated";
    let first = env
        .create("same-name", "restart", target, Scenario::Hang)
        .await?;
    let running = env.wait_phase("same-name", Phase::Running).await?;
    let run_name = status_of(&running).pipeline_run_ref.expect("run").name;
    // Something else (Tekton Results, Chains, a slow cancel) keeps the run alive for a while.
    env.runs()
        .patch(
            &run_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": [HOLD_FINALIZER]}})),
        )
        .await?;
    env.wfes()
        .delete("same-name", &DeleteParams::default())
        .await?;
    env.wait_gone("same-name").await?;
    let old_run = env.runs().get(&run_name).await?;
    assert!(old_run.metadata.deletion_timestamp.is_some());

    // The same manifest again: a new instance with a new uid.
    let second = env
        .create("same-name", "restart", target, Scenario::Success)
        .await?;
    assert_ne!(first.uid(), second.uid());
    let waiting = env
        .wait_for("same-name", "waiting for the previous run", |w| {
            status_of(w)
                .conditions
                .iter()
                .any(|c| c.type_ == "ExecutionCreated" && c.reason == "WaitingForPreviousRun")
        })
        .await?;
    assert_eq!(
        waiting.phase(),
        Some(Phase::Pending),
        "neither adopted nor failed"
    );
    // Still waiting a moment later: it does not give up or adopt.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = env.wfes().get("same-name").await?;
    assert_eq!(still.phase(), Some(Phase::Pending));
    assert!(status_of(&still).failure_details.is_none());

    // The finalizer goes, the old run goes, the new WFE runs its own workflow.
    env.runs()
        .patch(
            &run_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    let done = env.wait_phase("same-name", Phase::Completed).await?;
    assert_eq!(done.uid(), second.uid());
    let new_run = env.runs().get_opt(&run_name).await?;
    if let Some(new_run) = new_run {
        assert_eq!(
            new_run.labels().get(LABEL_WORKFLOW_EXECUTION_UID),
            second.uid().as_ref(),
            "the run that completed is the new instance's own"
        );
    }
    Ok(())
}

/// A lock run for `target` naming an owner WFE that does not exist (any more).
fn orphan_run(env: &Env, target: &str, owner_name: &str) -> DynamicObject {
    let mut run = DynamicObject::new(
        &pipelinerun::pipeline_run_name(target),
        &tekton::pipelinerun_resource(),
    )
    .within(&env.exec_ns);
    run.metadata.labels = Some(
        [
            (pipelinerun::LABEL_WORKFLOW_EXECUTION, owner_name),
            (pipelinerun::LABEL_SOURCE_NAMESPACE, env.ns.as_str()),
            (LABEL_WORKFLOW_EXECUTION_UID, "0000-gone"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    run.data = json!({"spec": {"pipelineRef": {"resolver": "bundles"}}});
    run
}

#[tokio::test]
async fn a_run_whose_owner_no_longer_exists_is_a_stale_lock_and_is_released() -> anyhow::Result<()>
{
    let env = Env::new("wfe-stale", |_| {}).await?;
    let target = "default/deployment/stale";
    let stale = env
        .runs()
        .create(
            &PostParams::default(),
            &orphan_run(&env, target, "long-gone"),
        )
        .await?;

    env.create("fresh", "restart", target, Scenario::Success)
        .await?;
    let done = env.wait_phase("fresh", Phase::Completed).await?;
    assert!(
        status_of(&done).skip_details.is_none(),
        "never a false ResourceBusy naming a deleted WFE"
    );
    let run = env.runs().get_opt(&stale.name_any()).await?;
    if let Some(run) = run {
        assert_ne!(run.uid(), stale.uid(), "the stale run was replaced");
    }
    Ok(())
}

#[tokio::test]
async fn a_busy_lock_names_the_holder_by_its_full_name() -> anyhow::Result<()> {
    let env = Env::new("wfe-busyname", |_| {}).await?;
    let target = "default/deployment/busy";
    let holder = format!("holder-{}", "h".repeat(180));
    env.create(&holder, "restart", target, Scenario::Hang)
        .await?;
    env.wait_phase(&holder, Phase::Running).await?;
    // Created while the store already shows the holder Running → the store decides; either way
    // the name must be the real one.
    env.create("second", "scale", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("second", Phase::Skipped).await?;
    let details = status_of(&skipped).skip_details.expect("skipDetails");
    assert_eq!(details.reason, SkipReason::ResourceBusy);
    assert_eq!(
        details
            .conflicting_workflow
            .expect("conflictingWorkflow")
            .name,
        holder
    );
    Ok(())
}

#[tokio::test]
async fn a_wfe_with_a_200_character_name_completes_through_watch_events() -> anyhow::Result<()> {
    // The safety resync is 10 minutes: completing within the test's wait proves the run's
    // events reached the WFE.
    let env = Env::new("wfe-longname", |_| {}).await?;
    let name = format!("remediate-{}", "x".repeat(190));
    assert_eq!(name.len(), 200);
    env.create(
        &name,
        "restart",
        "default/deployment/long",
        Scenario::Success,
    )
    .await?;
    let done = env.wait_phase(&name, Phase::Completed).await?;
    let run = status_of(&done).pipeline_run_ref.expect("run").name;
    let run = env.runs().get_opt(&run).await?;
    if let Some(run) = run {
        assert_eq!(
            run.annotations()
                .get(pipelinerun::ANNOTATION_WORKFLOW_EXECUTION),
            Some(&name)
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_block_survives_a_validation_failure_a_restart_and_the_deletion_of_the_failed_wfe()
-> anyhow::Result<()> {
    let receiver = AuditReceiver::start().await?;
    let mut env = Env::new("wfe-block", |c| send_audit_to(c, &receiver)).await?;
    let target = "payment/deployment/half-done";
    env.create("broke-it", "restart-pods", target, Scenario::TaskFailure)
        .await?;
    let failed = env.wait_phase("broke-it", Phase::Failed).await?;
    assert!(
        status_of(&failed)
            .failure_details
            .is_some_and(|d| d.was_execution_failure)
    );
    let run_name = status_of(&failed).pipeline_run_ref.expect("run").name;

    // A later WFE on the target fails validation: the block holds.
    env.create_wfe(&invalid("invalid", target)).await?;
    env.wait_phase("invalid", Phase::Failed).await?;
    env.create("after-invalid", "scale-up", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("after-invalid", Phase::Skipped).await?;
    assert_eq!(
        skip_reason(&skipped),
        Some(SkipReason::PreviousExecutionFailed)
    );

    // The failed run stays as the lock, marked, well past the cooldown.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let run = env.runs().get(&run_name).await?;
    assert!(run.annotations().contains_key(ANNOTATION_EXECUTION_BLOCK));

    // A restart does not lift it.
    env.stop_operator().await?;
    env.start_operator().await?;
    env.create("after-restart", "scale-up", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("after-restart", Phase::Skipped).await?;
    assert_eq!(
        skip_reason(&skipped),
        Some(SkipReason::PreviousExecutionFailed)
    );

    // Deleting the failed WFE (garbage collection of its RemediationRequest) does not lift it.
    env.wfes()
        .delete("broke-it", &DeleteParams::default())
        .await?;
    env.wait_gone("broke-it").await?;
    assert!(
        env.runs().get_opt(&run_name).await?.is_some(),
        "the block run stays"
    );
    env.create("after-delete", "scale-up", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("after-delete", Phase::Skipped).await?;
    assert_eq!(
        skip_reason(&skipped),
        Some(SkipReason::PreviousExecutionFailed)
    );
    let message = status_of(&skipped).skip_details.expect("details").message;
    assert!(message.contains("broke-it"), "{message}");

    // Only a clearance lifts it, given on a WFE the block skipped.
    let reason = "deployment restored from backup";
    env.clear_block("after-delete", reason).await?;
    let cleared = env
        .wait_for("after-delete", "clearance recorded", |w| {
            status_of(w).block_clearance.is_some()
        })
        .await?;
    assert_eq!(
        status_of(&cleared)
            .block_clearance
            .expect("clearance")
            .clear_reason,
        reason
    );
    env.wait_run_gone(&run_name).await?;
    receiver
        .wait_event("after-delete", "workflowexecution.block.cleared")
        .await?;
    env.create("after-clearance", "scale-up", target, Scenario::Success)
        .await?;
    env.wait_phase("after-clearance", Phase::Completed).await?;
    Ok(())
}

#[tokio::test]
async fn clearing_an_exhausted_retries_target_resets_its_streak() -> anyhow::Result<()> {
    let env = Env::new("wfe-exhausted", |c| {
        c.backoff.base = Duration::from_millis(200);
        c.backoff.max = Duration::from_millis(400);
        c.backoff.max_consecutive_failures = 2;
    })
    .await?;
    let target = "default/deployment/flaky";
    env.create_wfe(&invalid("bad-1", target)).await?;
    env.wait_phase("bad-1", Phase::Failed).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.create_wfe(&invalid("bad-2", target)).await?;
    let bad2 = env.wait_phase("bad-2", Phase::Failed).await?;
    assert_eq!(status_of(&bad2).consecutive_failures, Some(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.create("exhausted", "restart", target, Scenario::Success)
        .await?;
    let skipped = env.wait_phase("exhausted", Phase::Skipped).await?;
    assert_eq!(skip_reason(&skipped), Some(SkipReason::ExhaustedRetries));

    env.clear_block("exhausted", "cause fixed").await?;
    env.wait_for("bad-2", "streak cleared", |w| {
        status_of(w).block_clearance.is_some()
    })
    .await?;
    env.create("after-reset", "restart", target, Scenario::Success)
        .await?;
    env.wait_phase("after-reset", Phase::Completed).await?;

    // Counting starts again from zero.
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.create_wfe(&invalid("bad-3", target)).await?;
    let bad3 = env.wait_phase("bad-3", Phase::Failed).await?;
    assert_eq!(status_of(&bad3).consecutive_failures, Some(1));
    Ok(())
}

#[tokio::test]
async fn a_clearance_that_changes_nothing_is_refused_and_never_audited() -> anyhow::Result<()> {
    let receiver = AuditReceiver::start().await?;
    let env = Env::new("wfe-noclear", |c| send_audit_to(c, &receiver)).await?;
    env.create(
        "fine",
        "restart",
        "default/deployment/fine",
        Scenario::Success,
    )
    .await?;
    env.wait_phase("fine", Phase::Completed).await?;
    env.clear_block("fine", "just in case").await?;
    let event = env.wait_event("fine", "BlockClearanceRefused").await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let refused = env
        .wait_for("fine", "refusal recorded", |w| {
            status_of(w)
                .conditions
                .iter()
                .any(|c| c.type_ == "BlockCleared" && c.status == "False")
        })
        .await?;
    assert!(status_of(&refused).block_clearance.is_none());
    // The audit trail has the completion but no clearance.
    receiver
        .wait_event("fine", "workflowexecution.workflow.completed")
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        receiver
            .events()
            .iter()
            .all(|e| e["event_type"] != "workflowexecution.block.cleared"),
        "a refused clearance is never audited"
    );
    let refusals = env
        .events_for("fine")
        .await?
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("BlockClearanceRefused"))
        .count();
    assert_eq!(refusals, 1, "refused once, not on every reconcile");
    Ok(())
}

#[tokio::test]
async fn the_failure_gauge_is_rebuilt_from_the_store_after_a_restart() -> anyhow::Result<()> {
    let mut env = Env::new("wfe-gauge", |c| {
        c.backoff.base = Duration::from_secs(30);
        c.backoff.max = Duration::from_secs(60);
    })
    .await?;
    let target = "default/deployment/gauge";
    env.create_wfe(&invalid("bad", target)).await?;
    env.wait_phase("bad", Phase::Failed).await?;
    let gauge = "workflowexecution_consecutive_failures";
    support::eventually("the gauge set", support::WAIT, || async {
        let scrape = env.scrape().await?;
        Ok((scrape.value(gauge, &[("target_resource", target)]) == Some(1.0)).then_some(()))
    })
    .await?;

    env.stop_operator().await?;
    env.start_operator().await?;
    support::eventually("the gauge rebuilt", support::WAIT, || async {
        let scrape = env.scrape().await?;
        Ok((scrape.value(gauge, &[("target_resource", target)]) == Some(1.0)).then_some(()))
    })
    .await?;

    // No WFE on the target carries failures any more: the series goes.
    env.wfes().delete("bad", &DeleteParams::default()).await?;
    env.wait_gone("bad").await?;
    support::eventually("the series removed", support::WAIT, || async {
        let scrape = env.scrape().await?;
        Ok(scrape
            .value(gauge, &[("target_resource", target)])
            .is_none()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn runs_are_found_in_their_recorded_namespace_after_execution_namespace_changes()
-> anyhow::Result<()> {
    let mut env = Env::new("wfe-movens", |c| c.cooldown.period = Duration::from_secs(4)).await?;
    let old_ns = env.exec_ns.clone();
    let old_runs: Api<DynamicObject> = env.runs();
    env.create(
        "in-flight",
        "restart",
        "default/deployment/moving",
        Scenario::Hang,
    )
    .await?;
    let running = env.wait_phase("in-flight", Phase::Running).await?;
    let in_flight_run = status_of(&running).pipeline_run_ref.expect("run");
    assert_eq!(in_flight_run.namespace, old_ns);
    env.create(
        "finished",
        "restart",
        "default/deployment/moved",
        Scenario::Success,
    )
    .await?;
    let finished = env.wait_phase("finished", Phase::Completed).await?;
    let finished_run = status_of(&finished).pipeline_run_ref.expect("run");

    // The admin moves the execution namespace (a restart-only key).
    env.stop_operator().await?;
    let new_ns = env.cp.create_namespace("wfe-movens-new").await?;
    env.config.execution.namespace = new_ns;
    env.start_operator().await?;

    // Terminal release deletes the finished run where it is.
    let gone = support::eventually("the finished run released", support::WAIT, || async {
        Ok(old_runs
            .get_opt(&finished_run.name)
            .await?
            .is_none()
            .then_some(()))
    });
    gone.await?;
    // Deleting the in-flight WFE cancels and deletes its run where it is.
    env.wfes()
        .delete("in-flight", &DeleteParams::default())
        .await?;
    env.wait_gone("in-flight").await?;
    assert!(old_runs.get_opt(&in_flight_run.name).await?.is_none());
    Ok(())
}
