//! `Running`: read the run through the status mapping → `Completed` or `Failed`, or a refreshed
//! `pipelineRunStatus` (and whether a TaskRun is held back) while it runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    Api, ResourceExt,
    api::DynamicObject,
    runtime::{events::EventType, reflector::ObjectRef},
};
use kubernaut_framework::{
    condition::ConditionStatus,
    runtime::Action,
    status::{Held, Reading, grandchildren},
};

use super::{
    Error, ExecutionCondition, MetricUpdate, Outcome, OutcomeExt as _, Pass, SAFETY_RESYNC,
    conditions, failed::FailureCause, held_condition, kube_err, seen_started, terminal,
};
use crate::{
    audit::AuditAction,
    config::OperatorConfig,
    failure::{self, FailureContext},
    pipelinerun,
    run_status::{self, RunObservation, RunPhase},
    types::{Phase, WorkflowExecution, WorkflowExecutionStatus},
};
use kubernaut_framework::duration::{duration_between, format_go_duration};

impl Pass<'_> {
    pub(super) async fn running(&self, wfe: Arc<WorkflowExecution>) -> Result<Outcome, Error> {
        let Some(run_ref) = wfe.status.as_ref().and_then(|s| s.pipeline_run_ref.clone()) else {
            // Running without a run reference cannot come from this operator; treat it like a
            // vanished run.
            return self.run_vanished(&wfe, "(unknown)").await;
        };
        let owner = pipelinerun::owner(&wfe);
        let cached = self.ctx.children.get(
            &ObjectRef::new_with(&run_ref.name, self.engine.child_resource.clone())
                .within(&run_ref.namespace),
        );
        let run = match cached {
            Some(run) if owner.owns(run.labels()) => (*run).clone(),
            // Not (yet) in the cache, or the cache holds an older object: ask the API server
            // before concluding anything.
            _ => match self
                .runs_in(&run_ref.namespace)
                .get_opt(&run_ref.name)
                .await
                .map_err(kube_err(format!("reading PipelineRun {}", run_ref.name)))?
            {
                Some(run) if owner.owns(run.labels()) => run,
                _ => return self.run_vanished(&wfe, &run_ref.name).await,
            },
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
        let task_runs = match &self.engine.grandchild_resource {
            Some(resource) => grandchildren::cached(
                &self.ctx.grandchildren,
                resource,
                namespace,
                mapping,
                &whole,
            ),
            None => BTreeMap::new(),
        };
        let status = wfe.status.as_ref();
        if crate::task_runs::learn_step_ran(
            mapping,
            &task_runs,
            status.and_then(|s| s.pipeline_run_status.as_ref()),
        ) {
            observation.summary.execution_started = Some(true);
        }
        // A hold outlives what showed it: a Job's deadline deletes the held pod before the Job
        // is marked failed, and the failure is then told from the remembered hold.
        let held = mapping.first_held(&whole, &task_runs).or_else(|| {
            task_runs
                .is_empty()
                .then(|| status.and_then(held_condition))
                .flatten()
        });
        unfinished(wfe, &observation, held, self.now)
    }

    /// The run is gone (deleted by someone else): `Failed`, an execution failure if a step ran.
    async fn run_vanished(
        &self,
        wfe: &WorkflowExecution,
        run_name: &str,
    ) -> Result<Outcome, Error> {
        let status = wfe.status.as_ref();
        let namespace = status
            .and_then(|s| s.pipeline_run_ref.as_ref())
            .map_or(self.config.execution.namespace.clone(), |r| {
                r.namespace.clone()
            });
        let mapping = &self.engine.mapping;
        // The run's TaskRuns outlive it briefly (until garbage collection): a step that ran
        // since the last status change may still be visible in them.
        let step_ran = seen_started(wfe)
            || match &self.engine.grandchild_resource {
                Some(resource) => {
                    let api = Api::namespaced_with(self.ctx.client.clone(), &namespace, resource);
                    let task_runs = grandchildren::read_of_deleted(&api, mapping, run_name)
                        .await
                        .map_err(kube_err(format!(
                            "listing what carried the failure facts of deleted {} {run_name}",
                            self.engine.child().kind
                        )))?;
                    mapping.work_ran(&task_runs)
                }
                // Nothing can say the work did not start: it counts as started.
                None => mapping.work_ran(&BTreeMap::new()),
            };
        let started_at = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let context =
            FailureContext::new(wfe, &self.config.execution).reading(&self.engine.mapping);
        let details = failure::run_deleted_failure(
            &context,
            &namespace,
            run_name,
            started_at.filter(|_| step_ran),
            step_ran,
            self.now,
        );
        let cause = FailureCause::Run {
            details,
            completed_at: None,
            summary: None,
        };
        Ok(self.fail(wfe, cause))
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
        let task_runs = match &self.engine.grandchild_resource {
            Some(resource) => {
                let api = Api::namespaced_with(self.ctx.client.clone(), namespace, resource);
                grandchildren::read(&api, mapping, &whole)
                    .await
                    .map_err(kube_err(format!(
                        "reading what carries the failure facts of {} {}",
                        self.engine.child().kind,
                        run.name_any()
                    )))?
            }
            None => BTreeMap::new(),
        };
        reading.grandchildren = Some(mapping.read_grandchildren(&whole, &task_runs));
        let seen_started = seen_started(wfe);
        let mut summary = run_status::observe(mapping, &reading).summary;
        if seen_started {
            summary.execution_started = Some(true);
        }
        let context =
            FailureContext::new(wfe, &self.config.execution).reading(&self.engine.mapping);
        let remembered = failure::Remembered {
            seen_started,
            held: wfe.status.as_ref().and_then(held_condition),
        };
        let details =
            failure::failure_details_remembered(mapping, &context, &reading, &remembered, self.now);
        let cause = FailureCause::Run {
            details,
            completed_at: observation.completion_time,
            summary: Some(summary),
        };
        Ok(self.fail(wfe, cause))
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
    let outcome = Outcome::write(status, Action::requeue(SAFETY_RESYNC));
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
    let seen_started = status
        .pipeline_run_status
        .as_ref()
        .and_then(|s| s.execution_started)
        == Some(true);
    let mut summary = observation.summary.clone();
    if seen_started {
        summary.execution_started = Some(true);
    }
    status.pipeline_run_status = Some(summary);
    let mut set = conditions(wfe, status, now);
    if let Some(held) = held {
        set.set(
            ExecutionCondition::ExecutionRunning,
            ConditionStatus::False,
            &held.result,
            &held
                .message
                .clone()
                .unwrap_or_else(|| format!("A {} is held back", observation.part)),
        );
    } else if observation.phase == RunPhase::Running {
        set.set(
            ExecutionCondition::ExecutionRunning,
            ConditionStatus::True,
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
    let mut status = wfe.status.clone().unwrap_or_default();
    let completed_at = observation.completion_time.unwrap_or(now);
    status.phase = Some(Phase::Completed);
    status.completion_time = Some(Time(completed_at));
    status.pipeline_run_status = Some(observation.summary.clone());
    let start = status
        .start_time
        .as_ref()
        .map(|t| t.0)
        .or(observation.start_time);
    let ran_for = start.map(|start| duration_between(start, completed_at));
    if let Some(ran_for) = ran_for {
        status.duration = Some(format_go_duration(ran_for));
    }
    status.consecutive_failures = Some(0);
    status.next_allowed_execution = None;
    let mut set = conditions(wfe, &mut status, now);
    set.set(
        ExecutionCondition::Ready,
        ConditionStatus::True,
        "Completed",
        "The workflow completed successfully",
    );
    set.set(
        ExecutionCondition::ExecutionRunning,
        ConditionStatus::False,
        "Completed",
        "The PipelineRun has finished",
    );
    set.set(
        ExecutionCondition::ExecutionComplete,
        ConditionStatus::True,
        "Succeeded",
        observation
            .summary
            .message
            .as_deref()
            .unwrap_or("The PipelineRun succeeded"),
    );
    let duration = status.duration.clone().unwrap_or_default();
    let note = format!(
        "Workflow {} completed on {} in {}",
        wfe.spec.workflow_ref.workflow_id,
        wfe.spec.target_resource,
        status.duration.as_deref().unwrap_or("?")
    );
    let action = terminal::hold_lock(&status, config, now);
    Outcome::write(status, action)
        .metric(MetricUpdate::Finished {
            phase: Phase::Completed,
            duration: ran_for,
        })
        .metric(MetricUpdate::ConsecutiveFailures(0))
        .log(format!("workflow completed in {duration}"))
        .event(EventType::Normal, "WorkflowCompleted", note)
        .audit(AuditAction::Completed)
}
