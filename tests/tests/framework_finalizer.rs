//! `kubernaut_framework::finalizer` against a real API server: the first-sight / cleanup flow, and
//! idempotent, non-clobbering add and remove while another writer keeps changing the same object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use kubernaut_framework::finalizer::{
    self, Ensure, Event, FinalizerError, Removal, ensure_finalizer, remove_finalizer,
};
use kubernaut_test_harness::ControlPlane;
use serde_json::json;

const OURS: &str = "kubernaut.ai/test-cleanup";
const WRITER_BASE: &str = "writer.example/base";

async fn setup(prefix: &str) -> anyhow::Result<(&'static ControlPlane, Api<ConfigMap>)> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace(prefix).await?;
    Ok((cp, Api::namespaced(cp.client().await?, &ns)))
}

async fn create_configmap(
    api: &Api<ConfigMap>,
    name: &str,
    finalizers: &[&str],
) -> anyhow::Result<ConfigMap> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "finalizers": finalizers},
        "data": {"k": "v"},
    }))?;
    Ok(api.create(&PostParams::default(), &cm).await?)
}

fn count(obj: &ConfigMap, finalizer: &str) -> usize {
    obj.finalizers().iter().filter(|f| *f == finalizer).count()
}

#[tokio::test]
async fn first_sight_apply_cleanup_and_removal_complete_the_deletion() -> anyhow::Result<()> {
    let (cp, api) = setup("fin-flow").await?;
    let _logs = cp.logs_on_failure();
    // No finalizers at all: the add must take the "absent list" path.
    let created = create_configmap(&api, "flow", &[]).await?;
    assert!(created.metadata.finalizers.is_none());

    let Event::Added(patched) = finalizer::event(&api, Arc::new(created), OURS).await? else {
        panic!("first sight must add the finalizer");
    };
    assert_eq!(patched.finalizers(), [OURS]);
    assert_eq!(count(&api.get("flow").await?, OURS), 1);

    let live = api.get("flow").await?;
    assert!(
        matches!(
            finalizer::event(&api, Arc::new(live), OURS).await?,
            Event::Apply(_)
        ),
        "a live object with the finalizer is applied"
    );

    api.delete("flow", &DeleteParams::default()).await?;
    let deleting = api.get("flow").await?;
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "held by the finalizer"
    );
    let Event::Cleanup(deleting) = finalizer::event(&api, Arc::new(deleting), OURS).await? else {
        panic!("a deleting object with the finalizer must be cleaned up");
    };
    assert_eq!(
        remove_finalizer(&api, &*deleting, OURS).await?,
        Removal::Removed
    );
    assert!(
        api.get_opt("flow").await?.is_none(),
        "deletion completed once the finalizer was removed"
    );
    // The stale object still says "cleanup"; removing again is harmless.
    assert_eq!(
        remove_finalizer(&api, &*deleting, OURS).await?,
        Removal::Gone
    );
    Ok(())
}

#[tokio::test]
async fn a_deleting_object_without_our_finalizer_is_done() -> anyhow::Result<()> {
    let (cp, api) = setup("fin-done").await?;
    let _logs = cp.logs_on_failure();
    create_configmap(&api, "other", &[WRITER_BASE]).await?;
    api.delete("other", &DeleteParams::default()).await?;
    let deleting = api.get("other").await?;
    assert!(matches!(
        finalizer::event(&api, Arc::new(deleting.clone()), OURS).await?,
        Event::Done
    ));
    // ensure_finalizer refuses to add (the API server would reject it) and writes nothing.
    assert!(matches!(
        ensure_finalizer(&api, &deleting, OURS).await?,
        Ensure::Deleting
    ));
    assert_eq!(api.get("other").await?.finalizers(), [WRITER_BASE]);
    Ok(())
}

#[tokio::test]
async fn an_invalid_finalizer_name_is_reported_not_retried() -> anyhow::Result<()> {
    let (cp, api) = setup("fin-invalid").await?;
    let _logs = cp.logs_on_failure();
    let created = create_configmap(&api, "bad", &[WRITER_BASE]).await?;
    let error = ensure_finalizer(&api, &created, "not a valid/finalizer name!")
        .await
        .expect_err("the API server rejects the name");
    assert!(matches!(error, FinalizerError::Add { .. }), "{error:?}");
    assert!(error.to_string().contains("configmaps/bad"), "{error}");
    assert_eq!(api.get("bad").await?.finalizers(), [WRITER_BASE]);
    Ok(())
}

/// Keeps changing the object the way a well-behaved other controller would: merge-patches a new
/// label and appends its own finalizer (an atomic JSON patch `add` at `/-`), until told to stop.
/// Returns the labels and finalizers it wrote.
async fn concurrent_writer(
    api: Api<ConfigMap>,
    name: String,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<(BTreeMap<String, String>, Vec<String>)> {
    let mut labels = BTreeMap::new();
    let mut finalizers = vec![WRITER_BASE.to_owned()];
    let mut i = 0u32;
    while !stop.load(Ordering::SeqCst) || i < 10 {
        let key = format!("writer-{i}");
        let label_patch = json!({"metadata": {"labels": {&key: i.to_string()}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&label_patch))
            .await?;
        labels.insert(key, i.to_string());
        if i.is_multiple_of(3) {
            let fin = format!("writer.example/f-{i}");
            let append = json!([{"op": "add", "path": "/metadata/finalizers/-", "value": &fin}]);
            let append = Patch::Json::<()>(serde_json::from_value(append)?);
            api.patch(&name, &PatchParams::default(), &append).await?;
            finalizers.push(fin);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok((labels, finalizers))
}

#[tokio::test]
async fn add_and_remove_are_idempotent_and_never_clobber_a_concurrent_writer() -> anyhow::Result<()>
{
    const RECONCILERS: usize = 6;
    let (cp, api) = setup("fin-race").await?;
    let _logs = cp.logs_on_failure();
    let name = "contended".to_owned();
    let initial = create_configmap(&api, &name, &[WRITER_BASE]).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(concurrent_writer(api.clone(), name.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(30)).await;

    // Several reconcilers, all holding the same stale first-sight object, add concurrently.
    let adders: Vec<_> = (0..RECONCILERS)
        .map(|_| {
            let (api, obj) = (api.clone(), initial.clone());
            tokio::spawn(async move { ensure_finalizer(&api, &obj, OURS).await })
        })
        .collect();
    let mut added = 0;
    for adder in adders {
        match adder.await?? {
            Ensure::Added(obj) => {
                added += 1;
                assert_eq!(count(&obj, OURS), 1);
            }
            Ensure::AlreadyPresent => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(added, 1, "exactly one reconciler adds the finalizer");
    let with_ours = api.get(&name).await?;
    assert_eq!(count(&with_ours, OURS), 1, "added exactly once");

    // Same again for removal, all holding the same stale object that carries our finalizer.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let removers: Vec<_> = (0..RECONCILERS)
        .map(|_| {
            let (api, obj) = (api.clone(), with_ours.clone());
            tokio::spawn(async move { remove_finalizer(&api, &obj, OURS).await })
        })
        .collect();
    let mut removed = 0;
    for remover in removers {
        match remover.await?? {
            Removal::Removed => removed += 1,
            Removal::AlreadyAbsent => {}
            Removal::Gone => panic!("the object must still exist"),
        }
    }
    assert_eq!(removed, 1, "exactly one reconciler removes the finalizer");

    stop.store(true, Ordering::SeqCst);
    let (labels, writer_finalizers) = writer.await??;
    let last = api.get(&name).await?;
    assert_eq!(count(&last, OURS), 0, "ours is gone");
    assert_eq!(
        last.finalizers(),
        writer_finalizers.as_slice(),
        "every finalizer of the other writer survived, in order"
    );
    for (key, value) in &labels {
        assert_eq!(last.labels().get(key), Some(value), "label {key} survived");
    }
    assert!(
        labels.len() >= 10,
        "the writer really ran concurrently ({} writes)",
        labels.len()
    );
    Ok(())
}
