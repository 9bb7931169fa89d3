//! Integration test of the runtime's wait for its own writes (`Operator::own_writes`) against the
//! local control plane: a reconcile started on a cached parent that the operator's own write
//! already replaced runs on the newer version as soon as its watch event stored it, instead of
//! standing aside and waiting for a later trigger.
//!
//! The operator under test advances a step counter on ConfigMap parents. Each step first touches
//! the parent's child (whose watch event asks for the parent's next reconcile while this one
//! still runs) and then writes the parent: the next reconcile starts right after the write,
//! usually before the write's own watch event reached the cache. The test counts how every step
//! was reached: on a copy the runtime waited for, or on a copy that predated the write.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, ObjectMeta, Patch, PatchParams, PostParams},
};
use kubernaut_framework::{
    own_writes::OwnWrites,
    runtime::{Action, Context, Operator},
};
use kubernaut_test_harness::{
    ControlPlane,
    runtime::{PARENT_LABEL, PARENT_NAME, PARENT_NAMESPACE, children_in, parents_in, settings},
};
use serde_json::json;

/// The steps every parent advances through.
const STEPS: usize = 5;
/// Parents per round.
const PARENTS: usize = 12;
/// Rounds at most until a reconcile met a cached copy older than its own write.
const ROUNDS: usize = 5;

/// What the step operator shares with its reconciles, and what the test counts.
#[derive(Default)]
struct Steps {
    own_writes: OwnWrites<ConfigMap>,
    /// Reconciles handed a copy that the operator's own write had already replaced.
    handed_outdated: AtomicUsize,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct StepError(#[from] kube::Error);

impl kubernaut_framework::runtime::MetricLabel for StepError {
    fn metric_label(&self) -> &'static str {
        "kube"
    }
}

fn step_of(cm: &ConfigMap) -> usize {
    cm.data
        .as_ref()
        .and_then(|d| d.get("step"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One step: stand aside on a copy our own write replaced (as `lifecycle::reconcile` does);
/// else touch the child, then write the next step with the resourceVersion read.
async fn advance(
    cm: Arc<ConfigMap>,
    ctx: Arc<Context<ConfigMap, Steps>>,
) -> Result<Action, StepError> {
    let steps = &ctx.data;
    if steps.own_writes.is_outdated(&cm) {
        steps.handed_outdated.fetch_add(1, Ordering::SeqCst);
        return Ok(Action::await_change());
    }
    let step = step_of(&cm);
    if step >= STEPS {
        return Ok(Action::await_change());
    }
    let namespace = cm.namespace().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
    let child = json!({"metadata": {"annotations": {"step": (step + 1).to_string()}}});
    api.patch(
        &child_name(&cm.name_any()),
        &PatchParams::default(),
        &Patch::Merge(&child),
    )
    .await?;
    let mut next = (*cm).clone();
    next.data
        .get_or_insert_with(BTreeMap::new)
        .insert("step".into(), (step + 1).to_string());
    let written = api
        .replace(&cm.name_any(), &PostParams::default(), &next)
        .await?;
    steps.own_writes.record(&cm, &written);
    Ok(Action::await_change())
}

fn child_name(parent: &str) -> String {
    format!("{parent}-child")
}

async fn create_pair(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let child = ConfigMap {
        metadata: ObjectMeta {
            name: Some(child_name(name)),
            labels: Some(BTreeMap::from([
                (PARENT_NAME.to_string(), name.to_string()),
                (PARENT_NAMESPACE.to_string(), ns.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    api.create(&PostParams::default(), &child).await?;
    let parent = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                PARENT_LABEL.to_string(),
                "true".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("step".to_string(), "0".to_string())])),
        ..ConfigMap::default()
    };
    api.create(&PostParams::default(), &parent).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reconcile_behind_its_own_write_runs_on_the_newer_copy_without_standing_aside()
-> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("own-writes").await?;
    let client = cp.client().await?;
    let steps = Steps::default();
    let own_writes = steps.own_writes.clone();
    let running = Operator::<ConfigMap>::new(client.clone(), settings("own-writes-test"))
        .parents(parents_in(&ns))
        .children(children_in(ApiResource::erase::<ConfigMap>(&()), &ns))
        .own_writes(own_writes)
        .start(advance, steps)
        .await?;
    let ctx = running.context().clone();
    let waits = |outcome: &str| {
        ctx.metrics
            .own_write_waits
            .with_label_values(&[outcome])
            .get()
    };
    let parents: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    // The race that makes a reconcile meet its own write's predecessor is usual but not certain
    // in one step: rounds of parents until it happened.
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..PARENTS).map(|i| format!("p{round}-{i}")).collect();
        for name in &names {
            create_pair(&client, &ns, name).await?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut done = 0;
            for name in &names {
                if step_of(&parents.get(name).await?) >= STEPS {
                    done += 1;
                }
            }
            if done == names.len() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "round {round}: {done} of {} parents reached step {STEPS} within 60 s",
                names.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if waits("caught_up") > 0 {
            break;
        }
    }
    let steps = &ctx.data;
    let caught_up = waits("caught_up");
    assert!(
        caught_up > 0,
        "no reconcile started behind its own write in {ROUNDS} rounds: the test did not exercise the wait"
    );
    assert_eq!(
        steps.handed_outdated.load(Ordering::SeqCst),
        0,
        "a reconcile was handed a copy its own write had replaced ({caught_up} others waited for the newer one)"
    );
    assert_eq!(
        waits("timed_out"),
        0,
        "every wait ended with the newer copy"
    );
    let failed = ctx.metrics.reconciles.with_label_values(&["error"]).get();
    assert_eq!(
        failed, 0,
        "no reconcile failed (a stale write would conflict)"
    );
    running.shutdown().await?;
    Ok(())
}
