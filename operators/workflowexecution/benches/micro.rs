//! Micro-benchmarks of the operator's hot paths (criterion): the lock name, rendering the
//! PipelineRun template, mapping and classifying a failed run, and the cooldown decision with
//! 10 000 WorkflowExecutions in the store.
//!
//! Run with `cargo bench -p workflowexecution-operator --bench micro` (`make bench` runs it with
//! shorter measurement times and copies the estimates into `docs/performance.md`). The benchmark
//! ids are stable: the bench driver reads `<target>/criterion/<group>/<id>/new/estimates.json`.
//!
//! The cooldown decision is measured twice: through the runtime's [`ParentIndex`] keyed by target
//! (what the reconciler does) and by scanning the whole store (what it did before the index was
//! wired), so the page can show both side by side from one run.
use std::{collections::BTreeMap, hint::black_box, path::PathBuf, sync::Arc};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    ResourceExt,
    runtime::{reflector::ObjectRef, watcher},
};
use kubernaut_framework::{
    lock::lock_name,
    phase::Phase as _,
    runtime::{ParentIndex, ParentStore, ParentWriter, frozen::Frozen},
    template::apply_identity,
};
use serde::Deserialize;
use serde_json::Value;
use workflowexecution_operator::{
    config::OperatorConfig,
    decide,
    failure::{FailureContext, failure_details},
    pipelinerun::pipeline_run_identity,
    run_status::observe_run,
    templates::{sample_workflow_execution, template_context},
    testing::{PIPELINERUN_TEMPLATE, load_status_mapping, load_templates, render_pipeline_run},
    types::{Phase, PipelineRunRef, WorkflowExecution, WorkflowExecutionStatus},
};

/// How many WorkflowExecutions the decision benchmarks keep in the store.
const STORE_SIZE: usize = 10_000;
/// How many of them share each target (one Running-free history per target).
const PER_TARGET: usize = 4;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn templates_dir() -> PathBuf {
    repo().join("templates/workflowexecution")
}

fn bench_lock_name(c: &mut Criterion) {
    c.bench_function("lock_name", |b| {
        b.iter(|| {
            lock_name(
                black_box("wfe-"),
                black_box("payment/deployment/payment-api"),
            )
        });
    });
}

fn bench_render(c: &mut Criterion) {
    let templates = load_templates(&templates_dir()).expect("the shipped templates load");
    let config = OperatorConfig::default();
    let wfe = sample_workflow_execution();
    c.bench_function("render_pipelinerun", |b| {
        b.iter(|| render_pipeline_run(black_box(&wfe), &config, &templates).expect("renders"));
    });
    // Where a render's time goes: building the context, the template engine, the output checks.
    let context = template_context(&wfe, &config);
    let mut group = c.benchmark_group("render_stages");
    group.bench_function("context", |b| {
        b.iter(|| template_context(black_box(&wfe), &config));
    });
    group.bench_function("engine", |b| {
        b.iter(|| {
            templates
                .render_yaml(PIPELINERUN_TEMPLATE, black_box(&context))
                .expect("renders")
        });
    });
    group.bench_function("engine_and_checks", |b| {
        b.iter(|| {
            templates
                .render(PIPELINERUN_TEMPLATE, black_box(&context))
                .expect("renders")
        });
    });
    let rendered = templates
        .render(PIPELINERUN_TEMPLATE, &context)
        .expect("renders");
    group.bench_function("identity", |b| {
        b.iter_batched(
            || rendered.clone(),
            |mut run| {
                apply_identity(
                    &mut run,
                    &pipeline_run_identity(&wfe, &config, templates.revision()),
                );
                run
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// The `step-fails` run recorded from real Tekton: the PipelineRun, then its TaskRuns.
fn failed_run() -> (Value, BTreeMap<String, Value>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/e2e/recorded/step-fails.yaml");
    let text = std::fs::read_to_string(&path).expect("the recording exists");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("the recording is YAML"))
        .filter(|doc| !doc.is_null())
        .collect();
    let (run, task_runs) = docs
        .split_first()
        .expect("the recording holds a PipelineRun");
    let task_runs = task_runs
        .iter()
        .map(|tr| {
            (
                tr["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                tr.clone(),
            )
        })
        .collect();
    (run.clone(), task_runs)
}

fn bench_failed_run(c: &mut Criterion) {
    let mapping = load_status_mapping(&templates_dir()).expect("the shipped mapping loads");
    let config = OperatorConfig::default();
    let wfe = sample_workflow_execution();
    let context = FailureContext::new(&wfe, &config.execution);
    let (run, task_runs) = failed_run();
    let now = Timestamp::now();
    c.bench_function("map_and_classify_failed_run", |b| {
        b.iter(|| {
            let observation = observe_run(&mapping, black_box(&run), Some(&task_runs));
            let details = failure_details(&mapping, &context, &run, &task_runs, now);
            (observation, details)
        });
    });
}

fn at(minutes_ago: i64) -> Time {
    Time(Timestamp::now() - SignedDuration::from_mins(minutes_ago))
}

/// A WorkflowExecution on `target` in `phase`, finished `minutes_ago` when terminal.
fn stored_wfe(i: usize, target: &str, phase: Phase, minutes_ago: i64) -> WorkflowExecution {
    let mut wfe = sample_workflow_execution();
    wfe.metadata.name = Some(format!("wfe-{i:05}"));
    wfe.metadata.namespace = Some("bench".to_owned());
    wfe.metadata.uid = Some(format!("uid-{i:05}"));
    wfe.spec.target_resource = target.to_owned();
    wfe.status = Some(WorkflowExecutionStatus {
        phase: Some(phase),
        start_time: Some(at(minutes_ago + 1)),
        completion_time: phase.is_terminal().then(|| at(minutes_ago)),
        pipeline_run_ref: Some(PipelineRunRef {
            name: format!("run-{i}"),
            namespace: "kubernaut-workflows".to_owned(),
        }),
        consecutive_failures: Some(0),
        ..WorkflowExecutionStatus::default()
    });
    wfe
}

/// A store (and index) of [`STORE_SIZE`] WorkflowExecutions, [`PER_TARGET`] per target, all
/// finished long ago, and a new Pending one on one of those targets.
fn populated_store() -> (
    ParentStore<WorkflowExecution>,
    ParentIndex<WorkflowExecution>,
    WorkflowExecution,
) {
    let mut writer = ParentWriter::<WorkflowExecution>::default();
    let store = writer.as_reader();
    // The key the operator gives the runtime (`operator::start`).
    let index = ParentIndex::new(|wfe: &WorkflowExecution| Some(wfe.spec.target_resource.clone()));
    for i in 0..STORE_SIZE {
        let target = format!("ns-{}/deployment/app", i / PER_TARGET);
        let phase = if i % 2 == 0 {
            Phase::Completed
        } else {
            Phase::Failed
        };
        let mut wfe = stored_wfe(i, &target, phase, 600 + i as i64);
        if phase == Phase::Failed
            && let Some(status) = wfe.status.as_mut()
        {
            status.consecutive_failures = Some(1);
        }
        let event = watcher::Event::Apply(wfe);
        writer.apply_watcher_event(&event);
        index.apply(&event);
    }
    let mut pending = stored_wfe(
        STORE_SIZE,
        &format!("ns-{}/deployment/app", STORE_SIZE / PER_TARGET / 2),
        Phase::Pending,
        0,
    );
    pending.status = Some(WorkflowExecutionStatus {
        phase: Some(Phase::Pending),
        ..WorkflowExecutionStatus::default()
    });
    pending.spec.workflow_ref.workflow_id = "another-workflow".to_owned();
    (store, index, pending)
}

fn bench_cooldown_decision(c: &mut Criterion) {
    let (store, index, pending) = populated_store();
    assert_eq!(store.len(), STORE_SIZE);
    let config = OperatorConfig::default();
    let now = Timestamp::now();
    let mut group = c.benchmark_group("cooldown_decision_10k");
    group.bench_function("target_index", |b| {
        b.iter(|| {
            // As `peers_on_target` does it.
            let uid = pending.uid();
            let peers: Vec<Arc<WorkflowExecution>> = index
                .get(&pending.spec.target_resource, &store)
                .into_iter()
                .filter(|o| {
                    o.spec.target_resource == pending.spec.target_resource && o.uid() != uid
                })
                .collect();
            decide::decide(black_box(&pending), &peers, now, &config)
        });
    });
    group.bench_function("full_scan", |b| {
        b.iter(|| {
            let uid = pending.uid();
            let peers: Vec<Arc<WorkflowExecution>> = store
                .state()
                .into_iter()
                .filter(|o| {
                    o.spec.target_resource == pending.spec.target_resource && o.uid() != uid
                })
                .collect();
            decide::decide(black_box(&pending), &peers, now, &config)
        });
    });
    group.finish();
    // The index must not change the outcome.
    let scanned: Vec<Arc<WorkflowExecution>> = store
        .state()
        .into_iter()
        .filter(|o| o.spec.target_resource == pending.spec.target_resource)
        .collect();
    assert_eq!(
        decide::decide(&pending, &scanned, now, &config),
        decide::decide(
            &pending,
            &index.get(&pending.spec.target_resource, &store),
            now,
            &config
        )
    );
}

/// Reading a finished WorkflowExecution from the parent cache (it is kept frozen: deflated
/// text), and freezing one (once per watch event).
fn bench_parent_thaw(c: &mut Criterion) {
    let (store, _, _) = populated_store();
    let reference = ObjectRef::<WorkflowExecution>::new("wfe-00042").within("bench");
    assert!(store.get(&reference).is_some(), "{reference} is cached");
    c.bench_function("parent_cache_get_10k", |b| {
        b.iter(|| store.get(black_box(&reference)));
    });
    let finished = store.get(&reference).expect("cached");
    c.bench_function("parent_freeze", |b| {
        b.iter_batched(
            || (*finished).clone(),
            |wfe| Frozen::freeze(black_box(wfe)),
            BatchSize::SmallInput,
        );
    });
}

fn bench_index_update(c: &mut Criterion) {
    let (_store, index, pending) = populated_store();
    c.bench_function("target_index_apply_event", |b| {
        b.iter_batched(
            || watcher::Event::Apply(pending.clone()),
            |event| index.apply(&event),
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(
    micro,
    bench_lock_name,
    bench_render,
    bench_failed_run,
    bench_cooldown_decision,
    bench_parent_thaw,
    bench_index_update
);
criterion_main!(micro);
