//! `Running`: read the run through the status mapping → `Completed` or `Failed`, or a refreshed
//! `pipelineRunStatus` (and whether a TaskRun is held back) while it runs: mere progress is
//! written at most once per `status.progressInterval` (`progress`).

use std::sync::Arc;

use jiff::Timestamp;
use kube::{ResourceExt, api::DynamicObject, runtime::events::EventType};
use kubernaut_framework::{
    runtime::{Action, GrandchildrenOf},
    status::{Held, Reading, grandchildren},
};

use super::{
    Error, ExecutionCondition, Outcome, Pass, SAFETY_RESYNC, conditions, held_condition, progress,
    seen_started, terminal,
};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    failure,
    run_status::{self, RunObservation, RunPhase},
    types::{Phase, WorkflowExecution, WorkflowExecutionStatus},
};

impl Pass<'_> {
    pub(super) async fn running(&self, wfe: Arc<WorkflowExecution>) -> Result<Outcome, Error> {
        let Some(run_ref) = wfe.status.as_ref().and_then(|s| s.pipeline_run_ref.clone()) else {
            // Running without a run reference cannot come from this operator; treat it like a
            // vanished run.
            return self.run_vanished(&wfe, "(unknown)").await;
        };
        // Not (yet) in the cache, or the cache holds an older object: ask the API server before
        // concluding anything.
        let Some(run) = self.our_run(&wfe, &run_ref, false).await? else {
            return self.run_vanished(&wfe, &run_ref.name).await;
        };
        let namespace = run.namespace().unwrap_or(run_ref.namespace.clone());
        // The mapping, evaluated once for this pass.
        let reading = self.engine.mapping.read(&run.data);
        let observation = run_status::observe(&self.engine.mapping, &reading);
        match observation.phase {
            RunPhase::Completed => Ok(completed(&wfe, &observation, &self.config, self.now)),
            RunPhase::Failed => {
                self.run_failed(&wfe, &run, &namespace, reading, &observation)
                    .await
            }
            RunPhase::Pending | RunPhase::Running => {
                Ok(self.still_running(&wfe, &run, &namespace, observation))
            }
        }
    }

    /// A run still pending or running, with its TaskRuns from the cache: their watch reconciles
    /// this WFE when one changes, which is how a TaskRun held back by a quota is seen at all (the
    /// run itself only says "Running" meanwhile).
    fn still_running(
        &self,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
        namespace: &str,
        mut observation: RunObservation,
    ) -> Outcome {
        let mapping = &self.engine.mapping;
        // The whole run: a mapping that finds the grandchildren by an owner label reads its name.
        let whole = grandchildren::whole(run);
        let task_runs = self
            .ctx
            .cached_grandchildren(&self.engine, namespace, &whole);
        let status = wfe.status.as_ref();
        // That work ran is recorded as soon as it is seen: an engine may rewrite what it stopped
        // (a step that started in the same second as its grandchild's creation then looks like
        // one that never started, and the mapping's `ran` rules cannot tell them apart); what
        // was seen while it ran is the only sure evidence. The record is progress: held within
        // `status.progressInterval` like the rest of the run's summary, every later pass of this
        // process decides from it, and it rides on the next write (see `progress`).
        if !seen_started(status) && task_runs.values().any(|t| mapping.grandchild_ran(t)) {
            observation.summary.execution_started = Some(true);
        }
        // A hold outlives what showed it: a Job's deadline deletes the held pod before the Job
        // is marked failed, and the failure is then told from the remembered hold.
        let remembered = || {
            status
                .and_then(held_condition)
                .filter(|_| task_runs.is_empty())
        };
        let held = mapping.first_held(&whole, &task_runs).or_else(remembered);
        unfinished(wfe, &observation, held, self.now)
    }

    /// The run is gone (deleted by someone else): `Failed`, an execution failure if a step ran.
    async fn run_vanished(
        &self,
        wfe: &WorkflowExecution,
        run_name: &str,
    ) -> Result<Outcome, Error> {
        let status = wfe.status.as_ref();
        let namespace = self.run_ref(wfe).namespace;
        // The run's TaskRuns outlive it briefly (until garbage collection): a step that ran
        // since the last status change may still be visible in them. Without them nothing can
        // say the work did not start: it counts as started.
        let step_ran = seen_started(status) || {
            let (engine, kind) = (&self.engine, &self.engine.child().kind);
            let what = format!("listing what carried the failure facts of deleted {kind}");
            let deleted = GrandchildrenOf::Deleted(run_name);
            let read = self.ctx.read_grandchildren(engine, &namespace, deleted);
            let task_runs = read
                .await
                .map_err(Error::api(format!("{what} {run_name}")))?;
            engine.mapping.work_ran(&task_runs)
        };
        let started_at = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let details = failure::run_deleted_failure(
            &self.failure_context(wfe),
            &namespace,
            run_name,
            started_at.filter(|_| step_ran),
            step_ran,
            self.now,
        );
        Ok(self.fail(wfe, details, self.now, None))
    }

    /// The run failed: its TaskRuns are read from the API server (the failed one says why).
    async fn run_failed(
        &self,
        wfe: &WorkflowExecution,
        run: &DynamicObject,
        namespace: &str,
        mut reading: Reading,
        observation: &RunObservation,
    ) -> Result<Outcome, Error> {
        let mapping = &self.engine.mapping;
        let whole = grandchildren::whole(run);
        let (kind, name) = (&self.engine.child().kind, run.name_any());
        let what = format!("reading what carries the failure facts of {kind} {name}");
        let of_run = GrandchildrenOf::Child(&whole);
        let read = self.ctx.read_grandchildren(&self.engine, namespace, of_run);
        let task_runs = read.await.map_err(Error::api(what))?;
        reading.grandchildren = Some(mapping.read_grandchildren(&whole, &task_runs));
        let (status, context) = (wfe.status.as_ref(), self.failure_context(wfe));
        let seen_started = seen_started(status);
        let mut summary = run_status::observe(mapping, &reading).summary;
        if seen_started {
            summary.execution_started = Some(true);
        }
        let held = status.and_then(held_condition);
        let remembered = failure::Remembered { seen_started, held };
        let details =
            failure::failure_details_remembered(mapping, &context, &reading, &remembered, self.now);
        let completed_at = observation.completion_time.unwrap_or(self.now);
        Ok(self.fail(wfe, details, completed_at, Some(summary)))
    }
}

/// The outcome for a run that has not finished: its summary and `ExecutionRunning`, with a
/// warning and an Event when a TaskRun is newly held back.
pub(super) fn unfinished(
    wfe: &WorkflowExecution,
    observation: &RunObservation,
    held: Option<Held>,
    now: Timestamp,
) -> Outcome {
    let mut status = wfe.status.clone().unwrap_or_default();
    let newly_held = held
        .as_ref()
        .filter(|h| held_condition(&status).as_ref() != Some(*h))
        .cloned();
    observe_unfinished(wfe, &mut status, observation, held.as_ref(), now);
    let action = Action::requeue(SAFETY_RESYNC);
    let outcome = match progress::is_progress(wfe.status.as_ref(), &status) {
        true => Outcome::progress(status, action),
        false => Outcome::write(status, action),
    };
    let Some(held) = newly_held else {
        return outcome;
    };
    outcome
        .warn(format!("execution held back: {}", held.result))
        .event(
            EventType::Warning,
            "ExecutionHeld",
            format!(
                "{} ({}); the {} counts as running until it proceeds or times out",
                held.message
                    .clone()
                    .unwrap_or_else(|| format!("a {} is held back", observation.part)),
                held.result,
                observation.kind
            ),
        )
}

/// The status of a WFE whose run has not finished: the run's summary, and `ExecutionRunning`
/// once the run is running — `False` with the held result as its reason while one of its
/// TaskRuns is held back ([`StatusMapping::first_held`](kubernaut_framework::status::StatusMapping::first_held)).
pub(super) fn observe_unfinished(
    wfe: &WorkflowExecution,
    status: &mut WorkflowExecutionStatus,
    observation: &RunObservation,
    held: Option<&Held>,
    now: Timestamp,
) {
    // A step once seen running stays seen: the TaskRuns that showed it may be gone later.
    let mut summary = observation.summary.clone();
    if seen_started(Some(status)) {
        summary.execution_started = Some(true);
    }
    status.pipeline_run_status = Some(summary);
    let mut set = conditions(wfe, status, now);
    if let Some(held) = held {
        set.set_false(
            ExecutionCondition::ExecutionRunning,
            &held.result,
            &held
                .message
                .clone()
                .unwrap_or_else(|| format!("A {} is held back", observation.part)),
        );
    } else if observation.phase == RunPhase::Running {
        set.set_true(
            ExecutionCondition::ExecutionRunning,
            "Running",
            &format!("The {} is running", observation.kind),
        );
    }
}

/// `Completed`: the run succeeded.
pub(super) fn completed(
    wfe: &WorkflowExecution,
    observation: &RunObservation,
    config: &OperatorConfig,
    now: Timestamp,
) -> Outcome {
    let completed_at = observation.completion_time.unwrap_or(now);
    let (mut status, ran_for) =
        terminal::finish(wfe, Phase::Completed, completed_at, observation.start_time);
    let mut summary = observation.summary.clone();
    // A step seen running in an earlier pass (perhaps only held back, not yet written) stays
    // seen: the write that ends the run carries it.
    if seen_started(wfe.status.as_ref()) {
        summary.execution_started = Some(true);
    }
    status.pipeline_run_status = Some(summary);
    status.consecutive_failures = Some(0);
    status.next_allowed_execution = None;
    let mut set = conditions(wfe, &mut status, now);
    set.set_true(
        ExecutionCondition::Ready,
        "Completed",
        "The workflow completed successfully",
    );
    let summary = observation.summary.message.as_deref();
    let message = summary.unwrap_or("The PipelineRun succeeded");
    terminal::run_finished(&mut set, "Completed", "Succeeded", message);
    let duration = status.duration.clone();
    let note = format!(
        "Workflow {} completed on {} in {}",
        wfe.spec.workflow_ref.workflow_id,
        wfe.spec.target_resource,
        duration.as_deref().unwrap_or("?")
    );
    terminal::finished(status, Phase::Completed, ran_for, config, now)
        .log(format!(
            "workflow completed in {}",
            duration.unwrap_or_default()
        ))
        .event(EventType::Normal, "WorkflowCompleted", note)
        .audit(AuditAction::Completed)
}
