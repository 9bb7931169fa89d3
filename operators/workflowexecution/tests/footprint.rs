//! What each cached object costs in heap: a PipelineRun and a TaskRun as the runtime's child and
//! grandchild caches hold them (frozen, and with the store's entry), a finished
//! WorkflowExecution typed and as the parent cache holds it (frozen, and with the store's entry),
//! measured with a counting global allocator over real Tekton's recorded objects
//! (`tests/e2e/recorded/succeed.yaml`), each measured object another variant of them (its own
//! name, uid, labels and times, as in a cluster: the caches compress against objects alike).
//!
//! One test per binary: the allocator counts every thread, so nothing else may run beside it.
//! Run with `--nocapture` to see the breakdown.
#[path = "support/runs.rs"]
mod runs;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::Event;
use kubernaut_framework::runtime::{ChildWriter, FrozenObject, ParentWriter, frozen::Frozen};
use serde_json::{Value, json};
use workflowexecution_operator::pipelinerun::{
    ANNOTATION_EXECUTION_BLOCK, ANNOTATION_WORKFLOW_EXECUTION, project_cached,
};
use workflowexecution_operator::types::WorkflowExecution;

/// The system allocator, counting live bytes and live allocations.
struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

fn signed(size: usize) -> isize {
    isize::try_from(size).unwrap_or(isize::MAX)
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(signed(layout.size()), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(signed(layout.size()), Ordering::Relaxed);
        ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        BYTES.fetch_add(signed(new_size) - signed(layout.size()), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The heap one object built by `make` keeps alive: (bytes requested, allocations), averaged
/// over many objects kept at once.
#[derive(Debug, Clone, Copy)]
struct Cost {
    bytes: f64,
    allocations: f64,
}

impl Cost {
    /// What glibc's malloc spends on it: each allocation rounded up to 16 bytes plus an 8-byte
    /// header, at least 32 bytes.
    fn resident(self) -> f64 {
        let per_allocation = self.bytes / self.allocations.max(1.0);
        let chunk = ((per_allocation + 8.0) / 16.0).ceil().max(2.0) * 16.0;
        chunk * self.allocations
    }
}

/// How many objects each figure is averaged over.
const N: usize = 500;

/// The heap `make(i)` keeps alive for `i` in `0..N`, per object.
fn cost<T>(make: impl Fn(usize) -> T) -> Cost {
    let (bytes, allocations) = (
        BYTES.load(Ordering::SeqCst),
        ALLOCATIONS.load(Ordering::SeqCst),
    );
    let kept: Vec<T> = (0..N).map(&make).collect();
    let per = |now: isize, before: isize| (now - before) as f64 / N as f64;
    let cost = Cost {
        bytes: per(BYTES.load(Ordering::SeqCst), bytes),
        allocations: per(ALLOCATIONS.load(Ordering::SeqCst), allocations),
    };
    drop(kept);
    cost
}

/// The `i`-th variant of a recorded object: its own name, uid, resourceVersion, creation time
/// and the labels and annotations naming its WorkflowExecution, as objects differ in a cluster.
fn variant(object: &Value, i: usize) -> Value {
    let mut object = object.clone();
    let metadata = &mut object["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default().to_owned();
    metadata["name"] = json!(format!("{name}-{i:05}"));
    metadata["uid"] = json!(format!(
        "{:08x}-5b7a-4c3e-9d2f-{:012x}",
        i * 7919,
        i * 104_729
    ));
    metadata["resourceVersion"] = json!((100_000 + i * 7).to_string());
    metadata["creationTimestamp"] =
        json!(format!("2026-12-02T08:{:02}:{:02}Z", i / 60 % 60, i % 60));
    for key in ["labels", "annotations"] {
        if let Some(map) = metadata[key].as_object_mut() {
            for (k, v) in map.iter_mut() {
                if k == ANNOTATION_WORKFLOW_EXECUTION {
                    *v = json!(format!("scale-{i:05}"));
                } else if k.ends_with("-uid") {
                    *v = json!(format!(
                        "{:08x}-da99-44e5-949f-{:012x}",
                        i * 31,
                        i * 1_299_709
                    ));
                }
            }
        }
    }
    object
}

/// What a cache keeps per object of `objects`: `fill` applies each (through the cache's writer,
/// which it returns), and the heap the writer then holds is divided among them (the frozen
/// objects, the table, the shared namespace); `len` tells how many the cache holds.
fn cached_cost<T, W>(
    objects: impl Fn(usize) -> T,
    fill: impl FnOnce(&[Event<T>]) -> W,
    len: impl Fn(&W) -> usize,
) -> Cost {
    let events: Vec<Event<T>> = (0..N).map(|i| Event::Apply(objects(i))).collect();
    let (bytes, allocations) = (
        BYTES.load(Ordering::SeqCst),
        ALLOCATIONS.load(Ordering::SeqCst),
    );
    let writer = fill(&events);
    let per = |now: isize, before: isize| (now - before) as f64 / N as f64;
    let cost = Cost {
        bytes: per(BYTES.load(Ordering::SeqCst), bytes),
        allocations: per(ALLOCATIONS.load(Ordering::SeqCst), allocations),
    };
    assert_eq!(len(&writer), N, "every variant cached");
    drop(writer);
    cost
}

/// What the child cache of `resource`'s kind keeps per object of `objects`.
fn child_cached_cost(resource: &ApiResource, objects: impl Fn(usize) -> DynamicObject) -> Cost {
    cached_cost(
        objects,
        |events| {
            let mut writer = ChildWriter::new(resource.clone());
            for event in events {
                writer.apply_watcher_event(event);
            }
            writer
        },
        |writer| writer.as_reader().len(),
    )
}

/// An object as the watch hands it over: decoded from the API server's JSON, `managedFields`
/// stripped as the reflector does.
fn decoded(object: &Value) -> DynamicObject {
    let text = serde_json::to_vec(object).unwrap();
    let mut object: DynamicObject = serde_json::from_slice(&text).unwrap();
    object.metadata.managed_fields = None;
    object
}

/// A finished WorkflowExecution as the scale benchmark leaves it, as the API server returns it.
fn finished_wfe() -> Value {
    let mut wfe =
        serde_json::to_value(workflowexecution_operator::templates::sample_workflow_execution())
            .unwrap();
    wfe["metadata"]["uid"] = json!("2f1c8d0e-5b7a-4c3e-9d2f-1a0b9c8d7e6f");
    wfe["metadata"]["resourceVersion"] = json!("1234567");
    wfe["metadata"]["generation"] = json!(1);
    wfe["metadata"]["creationTimestamp"] = json!("2026-12-02T07:59:53Z");
    wfe["metadata"]["finalizers"] = json!(["kubernaut.ai/workflowexecution-cleanup"]);
    wfe["status"] = json!({
        "phase": "Completed",
        "observedGeneration": 1,
        "startTime": "2026-12-02T07:59:53Z",
        "completionTime": "2026-12-02T07:59:56Z",
        "duration": "3s",
        "executionEngine": "tekton",
        "pipelineRunRef": {"name": "wfe-7a27abc6bc1c9b1d", "namespace": "kubernaut-workflows"},
        "pipelineRunStatus": {
            "status": "True", "reason": "Succeeded",
            "message": "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0",
            "totalTasks": 2, "completedTasks": 2
        },
        "consecutiveFailures": 0,
        "templateRevision": "4cbf64e84fdd4b41",
        "conditions": [
            {"type": "ExecutionCreated", "status": "True", "reason": "PipelineRunCreated",
             "message": "PipelineRun kubernaut-workflows/wfe-7a27abc6bc1c9b1d created",
             "lastTransitionTime": "2026-12-02T07:59:53Z", "observedGeneration": 1},
            {"type": "ExecutionRunning", "status": "False", "reason": "ExecutionFinished",
             "message": "The PipelineRun finished", "lastTransitionTime": "2026-12-02T07:59:56Z",
             "observedGeneration": 1},
            {"type": "ExecutionComplete", "status": "True", "reason": "Succeeded",
             "message": "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0",
             "lastTransitionTime": "2026-12-02T07:59:56Z", "observedGeneration": 1}
        ]
    });
    wfe
}

fn show(what: &str, cost: Cost) {
    println!(
        "{what:<48} {:>7.0} B in {:>4.0} allocations (~{:>6.0} B with malloc's overhead)",
        cost.bytes,
        cost.allocations,
        cost.resident()
    );
}

/// What the caches held before they kept only what the status mapping reads: the object without
/// its spec, its status fields of `status_fields` and the annotations but the operator's own.
fn pruned(object: &Value, status_fields: &[&str]) -> DynamicObject {
    let mut object = decoded(object);
    kubernaut_framework::runtime::prune::prune(&mut object, status_fields, |key| {
        key == ANNOTATION_WORKFLOW_EXECUTION || key == ANNOTATION_EXECUTION_BLOCK
    });
    object
}

/// The breakdown, and the projection's saving on the cached kinds.
#[test]
fn what_each_cached_object_costs() {
    let succeed = runs::recorded()
        .into_iter()
        .find(|r| r.name == "succeed")
        .expect("tests/e2e/recorded/succeed.yaml");
    let (run, wfe) = (succeed.run.clone(), finished_wfe());
    let task_run = succeed.task_runs.values().next().unwrap().clone();
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/workflowexecution");
    let mapping = workflowexecution_operator::testing::load_status_mapping(&templates).unwrap();
    let (run_projection, task_run_projection) = (
        mapping.child_projection(),
        mapping.grandchild_projection().unwrap(),
    );

    let whole_run = cost(|i| Arc::new(decoded(&variant(&run, i))));
    let pruned_run = cost(|i| Arc::new(pruned(&variant(&run, i), &[])));
    let projected = |object: &Value, projection, i| {
        let mut object = decoded(&variant(object, i));
        project_cached(&mut object, projection);
        object
    };
    // Projected, frozen, and cached with the store's entry: each a different set of variants.
    let child_costs = |object: &Value, projection, kind: &str| {
        let resource =
            ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("tekton.dev", "v1", kind));
        (
            cost(|i| Arc::new(projected(object, projection, i))),
            cost(|i| Arc::new(FrozenObject::freeze(projected(object, projection, i + N)))),
            child_cached_cost(&resource, |i| projected(object, projection, i + 2 * N)),
        )
    };
    let (projected_run, frozen_run, cached_run) = child_costs(&run, &run_projection, "PipelineRun");
    let pruned_task_run = cost(|i| {
        let fields = [
            "taskSpec",
            "provenance",
            "results",
            "sidecars",
            "artifacts",
            "spanContext",
        ];
        Arc::new(pruned(&variant(&task_run, i), &fields))
    });
    let (projected_task_run, frozen_task_run, cached_task_run) =
        child_costs(&task_run, &task_run_projection, "TaskRun");
    let typed = |i| {
        let text = serde_json::to_vec(&variant(&wfe, i)).unwrap();
        serde_json::from_slice::<WorkflowExecution>(&text).unwrap()
    };
    let typed_wfe = cost(|i| Arc::new(typed(i)));
    let frozen_wfe = cost(|i| Arc::new(Frozen::freeze(typed(i + N))));
    let cached_wfe = cached_cost(
        |i| typed(i + 2 * N),
        |events| {
            let mut writer = ParentWriter::<WorkflowExecution>::default();
            for event in events {
                writer.apply_watcher_event(event);
            }
            writer
        },
        |writer| writer.as_reader().len(),
    );
    let mut sample = decoded(&run);
    project_cached(&mut sample, &run_projection);
    println!(
        "a projected PipelineRun: {}",
        serde_json::to_string(&sample).unwrap()
    );
    let mut sample = decoded(&task_run);
    project_cached(&mut sample, &task_run_projection);
    println!(
        "a projected TaskRun: {}",
        serde_json::to_string(&sample).unwrap()
    );
    println!(
        "inline sizes: WorkflowExecution {} B (spec {} B, status {} B, metadata {} B), DynamicObject {} B",
        std::mem::size_of::<WorkflowExecution>(),
        std::mem::size_of::<workflowexecution_operator::types::WorkflowExecutionSpec>(),
        std::mem::size_of::<Option<workflowexecution_operator::types::WorkflowExecutionStatus>>(),
        std::mem::size_of::<kube::api::ObjectMeta>(),
        std::mem::size_of::<DynamicObject>(),
    );
    println!("per cached object (heap):");
    show("PipelineRun, whole (managedFields stripped)", whole_run);
    show("PipelineRun, pruned (spec, annotations)", pruned_run);
    show("PipelineRun, projected", projected_run);
    show("PipelineRun, projected and frozen", frozen_run);
    show("PipelineRun, cached (with the store's entry)", cached_run);
    show(
        "TaskRun, pruned (spec, annotations, 6 fields)",
        pruned_task_run,
    );
    show("TaskRun, projected", projected_task_run);
    show("TaskRun, projected and frozen", frozen_task_run);
    show("TaskRun, cached (with the store's entry)", cached_task_run);
    show("WorkflowExecution, typed (managedFields None)", typed_wfe);
    show("WorkflowExecution, frozen (cached)", frozen_wfe);
    show(
        "WorkflowExecution, cached (with the store's entry)",
        cached_wfe,
    );
    // (what, the smaller, how many times it fits into the larger, the larger)
    let savings = [
        (
            "a projected PipelineRun vs a pruned one",
            projected_run,
            3.0,
            pruned_run,
        ),
        (
            "a projected TaskRun vs a pruned one",
            projected_task_run,
            1.25,
            pruned_task_run,
        ),
        (
            "a frozen PipelineRun vs a projected one",
            frozen_run,
            2.0,
            projected_run,
        ),
        (
            "a frozen TaskRun vs a projected one",
            frozen_task_run,
            2.0,
            projected_task_run,
        ),
        (
            "a cached PipelineRun, its entry included, vs a projected one",
            cached_run,
            4.0,
            projected_run,
        ),
        (
            "a cached TaskRun, its entry included, vs a projected one",
            cached_task_run,
            4.0,
            projected_task_run,
        ),
        (
            "a frozen WorkflowExecution vs a typed one",
            frozen_wfe,
            2.0,
            typed_wfe,
        ),
        (
            "a cached WorkflowExecution, its entry included, vs a typed one",
            cached_wfe,
            4.0,
            typed_wfe,
        ),
    ];
    for (what, smaller, times, larger) in savings {
        assert!(
            smaller.resident() * times < larger.resident(),
            "{what}: {:.0} B × {times} is not below {:.0} B",
            smaller.resident(),
            larger.resident()
        );
    }
}
