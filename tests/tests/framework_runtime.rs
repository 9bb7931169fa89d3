//! Integration tests of `kubernaut_framework::runtime` against the local control plane: leader
//! election over a shared Lease, the decode error boundary, `/readyz`, `/metrics` and template hot
//! reload. The operators under test are tiny ConfigMap/Widget reconcilers that record what they
//! reconciled.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{coordination::v1::Lease, core::v1::ConfigMap, events::v1::Event as K8sEvent},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, CustomResource, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use kubernaut_framework::{
    runtime::{
        Action, Context, LeaderElectionSettings, MetricLabel, Operator, Running, prometheus,
    },
    template::{ChildIdentity, ChildKind, TemplateDecl, TemplateStore, apply_identity},
};
use kubernaut_test_harness::{
    ControlPlane,
    requests::{ApiRequest, RequestLog},
    runtime::{PARENT_LABEL, PARENT_NAME, PARENT_NAMESPACE, children_in, parents_in, settings},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REVISION: &str = "runtime.kubernaut.test/template-revision";

// ---------------------------------------------------------------------------------------------
// A tiny test operator: records every object it reconciles.

#[derive(Default)]
struct Seen {
    names: Mutex<BTreeSet<String>>,
    reconciles: AtomicUsize,
    per_name: Mutex<BTreeMap<String, usize>>,
}

impl Seen {
    /// Records one reconcile of `name`; returns how many `name` has had, this one included.
    fn record(&self, name: String) -> usize {
        self.reconciles.fetch_add(1, Ordering::SeqCst);
        self.names.lock().unwrap().insert(name.clone());
        let mut per_name = self.per_name.lock().unwrap();
        let count = per_name.entry(name).or_default();
        *count += 1;
        *count
    }

    fn count_of(&self, name: &str) -> usize {
        self.per_name
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    fn names(&self) -> BTreeSet<String> {
        self.names.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.reconciles.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("asked to fail")]
    AskedToFail,
    #[error("asked to fail differently each time: failure {0}")]
    AskedToFailDifferently(usize),
    #[error("template: {0}")]
    Template(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl MetricLabel for TestError {
    fn metric_label(&self) -> &'static str {
        match self {
            TestError::AskedToFail | TestError::AskedToFailDifferently(_) => "asked_to_fail",
            TestError::Template(_) => "template",
            TestError::Kube(_) => "kube",
        }
    }
}

async fn record_configmap(
    cm: Arc<ConfigMap>,
    ctx: Arc<Context<ConfigMap, Seen>>,
) -> Result<Action, TestError> {
    ctx.data.record(cm.name_any());
    if cm.labels().get("fail").is_some_and(|v| v == "true") {
        return Err(TestError::AskedToFail);
    }
    Ok(Action::await_change())
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug)]
#[kube(
    group = "runtime.kubernaut.test",
    version = "v1",
    kind = "Widget",
    namespaced,
    schema = "disabled"
)]
struct WidgetSpec {
    size: u32,
}

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug)]
#[kube(
    group = "runtime.kubernaut.test",
    version = "v1",
    kind = "Gadget",
    namespaced,
    schema = "disabled"
)]
struct GadgetSpec {
    #[serde(default)]
    color: Option<String>,
}

async fn record_widget(
    widget: Arc<Widget>,
    ctx: Arc<Context<Widget, Seen>>,
) -> Result<Action, TestError> {
    ctx.data.record(widget.name_any());
    Ok(Action::await_change())
}

async fn record_gadget(
    gadget: Arc<Gadget>,
    ctx: Arc<Context<Gadget, Seen>>,
) -> Result<Action, TestError> {
    ctx.data.record(gadget.name_any());
    Ok(Action::await_change())
}

/// A CRD whose spec accepts anything, so the API server stores objects our typed struct
/// cannot decode.
fn permissive_crd(kind: &str, plural: &str) -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.runtime.kubernaut.test")},
        "spec": {
            "group": "runtime.kubernaut.test",
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.to_lowercase(),
                "kind": kind,
                "listKind": format!("{kind}List"),
            },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}
                }}
            }]
        }
    }))
    .expect("valid CRD")
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kubernaut_framework=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn parent_configmap(name: &str, extra_labels: &[(&str, &str)]) -> ConfigMap {
    let mut labels = BTreeMap::from([(PARENT_LABEL.to_string(), "true".to_string())]);
    for (k, v) in extra_labels {
        labels.insert((*k).to_string(), (*v).to_string());
    }
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..ConfigMap::default()
    }
}

async fn create_parent(client: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &parent_configmap(name, &[]))
        .await?;
    Ok(())
}

/// Polls `check` every 100ms until it returns true, failing after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the sample `series` (`name` or `name{labels}`) in a Prometheus text exposition.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

async fn events_about(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<K8sEvent>> {
    let events = Api::<K8sEvent>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    Ok(events
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.name.as_deref())
                .is_some_and(|n| n == name)
        })
        .collect())
}

fn has_event(events: &[K8sEvent], type_: &str, reason: &str) -> bool {
    events
        .iter()
        .any(|e| e.type_.as_deref() == Some(type_) && e.reason.as_deref() == Some(reason))
}

// ---------------------------------------------------------------------------------------------
// Leader election.

const LEASE_DURATION: Duration = Duration::from_secs(4);
const RETRY_PERIOD: Duration = Duration::from_millis(500);

fn election(ns: &str, identity: &str) -> LeaderElectionSettings {
    LeaderElectionSettings {
        lease_duration: LEASE_DURATION,
        renew_deadline: Duration::from_secs(3),
        retry_period: RETRY_PERIOD,
        ..LeaderElectionSettings::new("runtime-test", ns, identity)
    }
}

async fn start_replica(
    cp: &ControlPlane,
    ns: &str,
    identity: &str,
) -> anyhow::Result<Running<ConfigMap, Seen>> {
    let mut settings = settings("leader-test");
    settings.leader_election = Some(election(ns, identity));
    Ok(Operator::<ConfigMap>::new(cp.client().await?, settings)
        .parents(parents_in(ns))
        .start(record_configmap, Seen::default())
        .await?)
}

/// Starts two replicas on one Lease and returns (leader, follower) once exactly one leads and
/// has reconciled `parents`.
async fn elect(
    cp: &ControlPlane,
    ns: &str,
    parents: &[&str],
) -> anyhow::Result<(Running<ConfigMap, Seen>, Running<ConfigMap, Seen>)> {
    let client = cp.client().await?;
    for name in parents {
        create_parent(&client, ns, name).await?;
    }
    let a = start_replica(cp, ns, "replica-a").await?;
    let b = start_replica(cp, ns, "replica-b").await?;
    eventually("one replica leads", Duration::from_secs(20), || async {
        Ok(a.is_leader() || b.is_leader())
    })
    .await?;
    let (leader, follower) = if a.is_leader() { (a, b) } else { (b, a) };
    let want: BTreeSet<String> = parents.iter().map(|s| (*s).to_string()).collect();
    eventually(
        "the leader reconciled every parent",
        Duration::from_secs(20),
        || async { Ok(leader.context().data.names() == want) },
    )
    .await?;

    // Several renewals later, still exactly one leader and the follower never reconciled.
    tokio::time::sleep(RETRY_PERIOD * 4).await;
    assert!(
        leader.is_leader() && !follower.is_leader(),
        "exactly one leader"
    );
    assert_eq!(
        follower.context().data.count(),
        0,
        "the follower must not reconcile"
    );
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get("runtime-test")
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        Some(leader.context().identity.clone()),
        "the Lease names the leader"
    );
    let (_, leader_metrics) = http_get(leader.metrics_addr(), "/metrics").await?;
    let (_, follower_metrics) = http_get(follower.metrics_addr(), "/metrics").await?;
    assert_eq!(sample(&leader_metrics, "framework_leader"), Some(1.0));
    assert_eq!(sample(&follower_metrics, "framework_leader"), Some(0.0));
    // The follower's caches are warm although it does not reconcile.
    assert_eq!(follower.context().parents.state().len(), parents.len());
    Ok((leader, follower))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_leader_reconciles_and_a_graceful_shutdown_hands_over_at_once()
-> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-leader").await?;
    let (leader, follower) = elect(cp, &ns, &["p1", "p2", "p3"]).await?;
    let old_leader = leader.context().identity.clone();

    leader.shutdown().await?;
    let released_at = Instant::now();
    let lease = Api::<Lease>::namespaced(cp.client().await?, &ns)
        .get("runtime-test")
        .await?;
    assert_ne!(
        lease.spec.and_then(|s| s.holder_identity),
        Some(old_leader),
        "a gracefully stopped leader releases the Lease"
    );
    eventually("the follower takes over", LEASE_DURATION, || async {
        Ok(follower.is_leader())
    })
    .await?;
    assert!(
        released_at.elapsed() < LEASE_DURATION,
        "a released Lease is taken over without waiting for expiry"
    );

    // The new leader reconciles what exists and what comes next.
    create_parent(&cp.client().await?, &ns, "p4").await?;
    let want: BTreeSet<String> = ["p1", "p2", "p3", "p4"].map(String::from).into();
    eventually(
        "the new leader reconciles",
        Duration::from_secs(20),
        || async { Ok(follower.context().data.names() == want) },
    )
    .await?;
    follower.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_replaced_within_the_lease_duration() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-kill").await?;
    let (leader, follower) = elect(cp, &ns, &["k1"]).await?;
    let old_leader = leader.context().identity.clone();

    // Dropping the handle aborts the runtime like a crash: no release.
    drop(leader);
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lease = Api::<Lease>::namespaced(cp.client().await?, &ns)
        .get("runtime-test")
        .await?;
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        Some(old_leader),
        "a killed leader does not release the Lease"
    );
    // Expiry is judged from the last renewal the follower saw: at most one retry period
    // before the kill, plus one retry period until the follower's next poll.
    let bound = LEASE_DURATION + RETRY_PERIOD * 2 + Duration::from_secs(1);
    eventually("the follower takes over", bound, || async {
        Ok(follower.is_leader())
    })
    .await?;
    assert!(
        killed_at.elapsed() >= LEASE_DURATION - RETRY_PERIOD * 2,
        "an unreleased Lease is only taken after it expired ({:?})",
        killed_at.elapsed()
    );
    create_parent(&cp.client().await?, &ns, "k2").await?;
    let want: BTreeSet<String> = ["k1", "k2"].map(String::from).into();
    eventually(
        "the new leader reconciles",
        Duration::from_secs(20),
        || async { Ok(follower.context().data.names() == want) },
    )
    .await?;
    follower.shutdown().await?;
    Ok(())
}

/// Rewrites the Lease holder as another process would (retrying on conflicts with renewals).
async fn set_lease_holder(
    client: &Client,
    ns: &str,
    holder: Option<&str>,
    duration_seconds: i32,
) -> anyhow::Result<()> {
    let leases = Api::<Lease>::namespaced(client.clone(), ns);
    for _ in 0..10 {
        let mut lease = leases.get("runtime-test").await?;
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = holder.map(str::to_string);
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            jiff::Timestamp::now(),
        ));
        match leases
            .replace("runtime-test", &PostParams::default(), &lease)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the Lease kept changing")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_loses_the_lease_stops_reconciling_until_it_wins_it_back()
-> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-lost").await?;
    let client = cp.client().await?;
    let replica = start_replica(cp, &ns, "replica-a").await?;
    let ctx = replica.context().clone();
    create_parent(&client, &ns, "before").await?;
    eventually(
        "the replica leads and reconciles",
        Duration::from_secs(20),
        || async { Ok(replica.is_leader() && ctx.data.names().contains("before")) },
    )
    .await?;

    // Another process takes the Lease for a long time: the replica must step down.
    set_lease_holder(&client, &ns, Some("intruder"), 30).await?;
    eventually("the replica steps down", RETRY_PERIOD * 6, || async {
        Ok(!replica.is_leader())
    })
    .await?;
    create_parent(&client, &ns, "during").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !ctx.data.names().contains("during"),
        "a replica that lost the Lease must not reconcile"
    );
    assert!(!replica.is_leader());
    assert_eq!(ctx.metrics.leader.get(), 0);

    // The intruder releases it: the replica wins it back and catches up.
    set_lease_holder(&client, &ns, None, 1).await?;
    eventually("the replica leads again", RETRY_PERIOD * 6, || async {
        Ok(replica.is_leader())
    })
    .await?;
    eventually(
        "it reconciles what it missed",
        Duration::from_secs(20),
        || async { Ok(ctx.data.names().contains("during")) },
    )
    .await?;
    assert_eq!(ctx.metrics.leader.get(), 1);
    replica.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error boundary.

fn widget(name: &str, spec: serde_json::Value) -> DynamicObject {
    let resource = ApiResource::erase::<Widget>(&());
    let mut object = DynamicObject::new(name, &resource);
    object.metadata.labels = Some(BTreeMap::from([(PARENT_LABEL.into(), "true".into())]));
    object.data = json!({ "spec": spec });
    object
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_object_does_not_stop_reconciling_the_others() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    cp.install_crds(&[permissive_crd("Widget", "widgets")])
        .await?;
    let ns = cp.create_namespace("rt-decode").await?;
    let client = cp.client().await?;
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<Widget>(&()));
    let pp = PostParams::default();
    widgets
        .create(&pp, &widget("good-a", json!({"size": 1})))
        .await?;
    widgets
        .create(&pp, &widget("bad", json!({"size": "huge"})))
        .await?;

    let running = Operator::<Widget>::new(client.clone(), settings("decode-test"))
        .parents(parents_in(&ns))
        .start(record_widget, Seen::default())
        .await?;
    let ctx = running.context().clone();
    // Created after the bad one was seen: the watch keeps going.
    widgets
        .create(&pp, &widget("good-b", json!({"size": 2})))
        .await?;
    let want: BTreeSet<String> = ["good-a", "good-b"].map(String::from).into();
    eventually(
        "both good widgets reconciled",
        Duration::from_secs(20),
        || async { Ok(ctx.data.names() == want) },
    )
    .await?;
    assert_eq!(
        ctx.metrics.decode_errors.get(),
        1,
        "the bad widget is counted once"
    );
    eventually(
        "a DecodeFailed Warning on the bad widget",
        Duration::from_secs(10),
        || async {
            Ok(has_event(
                &events_about(&client, &ns, "bad").await?,
                "Warning",
                "DecodeFailed",
            ))
        },
    )
    .await?;
    let (_, metrics) = http_get(running.metrics_addr(), "/metrics").await?;
    assert_eq!(sample(&metrics, "framework_decode_errors_total"), Some(1.0));

    // Fixing the object makes it reconcilable ...
    widgets
        .patch(
            "bad",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 3}})),
        )
        .await?;
    eventually(
        "the fixed widget is reconciled",
        Duration::from_secs(20),
        || async { Ok(ctx.data.names().contains("bad")) },
    )
    .await?;
    // ... and breaking a cached one evicts it from the store instead of serving a stale copy.
    widgets
        .patch(
            "good-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": "x"}})),
        )
        .await?;
    eventually(
        "the broken widget leaves the cache",
        Duration::from_secs(20),
        || async { Ok(ctx.parents.state().iter().all(|w| w.name_any() != "good-a")) },
    )
    .await?;
    assert_eq!(ctx.metrics.decode_errors.get(), 2);
    assert_eq!(
        ctx.parents.state().len(),
        2,
        "bad (fixed) and good-b stay cached"
    );
    running.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Health, readiness and metrics.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_turns_ready_only_once_the_caches_synced() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-ready").await?;
    let client = cp.client().await?;
    // The Gadget CRD is not installed yet: its list fails, so the parent cache cannot sync.
    let running = Operator::<Gadget>::new(client.clone(), settings("ready-test"))
        .parents(parents_in(&ns))
        .children(children_in(ApiResource::erase::<ConfigMap>(&()), &ns))
        .start(record_gadget, Seen::default())
        .await?;
    for _ in 0..10 {
        assert_eq!(
            http_get(running.health_addr(), "/healthz").await?.0,
            200,
            "alive at once"
        );
        assert_eq!(
            http_get(running.health_addr(), "/readyz").await?.0,
            503,
            "not ready before sync"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!running.probes().is_synced());

    cp.install_crds(&[permissive_crd("Gadget", "gadgets")])
        .await?;
    eventually("/readyz turns 200", Duration::from_secs(60), || async {
        Ok(http_get(running.health_addr(), "/readyz").await?.0 == 200)
    })
    .await?;
    let gadgets: Api<DynamicObject> =
        Api::namespaced_with(client, &ns, &ApiResource::erase::<Gadget>(&()));
    let mut gadget = DynamicObject::new("g1", &ApiResource::erase::<Gadget>(&()));
    gadget.metadata.labels = Some(BTreeMap::from([(PARENT_LABEL.into(), "true".into())]));
    gadget.data = json!({"spec": {"color": "red"}});
    gadgets.create(&PostParams::default(), &gadget).await?;
    eventually(
        "the gadget is reconciled",
        Duration::from_secs(20),
        || async { Ok(running.context().data.names().contains("g1")) },
    )
    .await?;

    let shutdown = running.shutdown_token();
    let addr = running.health_addr();
    let stopped = tokio::spawn(running.wait());
    shutdown.cancel();
    stopped.await??;
    assert!(
        http_get(addr, "/healthz").await.is_err(),
        "the servers stop after shutdown"
    );
    Ok(())
}

/// Caches list in pages of `list_page_size`: with pages of 2, every one of 7 parents and 5
/// children present before the start is cached (the list follows each page's continue token) and
/// every parent is reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn caches_list_in_pages_and_every_page_is_cached() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;

    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-pages").await?;
    let client = cp.client().await?;
    let parents: Vec<String> = (0..7).map(|i| format!("p{i}")).collect();
    for name in &parents {
        create_parent(&client, &ns, name).await?;
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for name in &parents[..5] {
        let account: ServiceAccount = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-child"),
                         "labels": {PARENT_NAME: name, PARENT_NAMESPACE: ns}},
        }))?;
        accounts.create(&PostParams::default(), &account).await?;
    }
    let mut paged = settings("pages-test");
    paged.list_page_size = 2;
    let running = Operator::<ConfigMap>::new(client.clone(), paged)
        .parents(parents_in(&ns))
        .children(children_in(ApiResource::erase::<ServiceAccount>(&()), &ns))
        .start(record_configmap, Seen::default())
        .await?;
    eventually("the caches sync", Duration::from_secs(30), || async {
        Ok(running.probes().is_synced())
    })
    .await?;
    let context = running.context();
    assert_eq!(context.parents.state().len(), 7, "every page of parents");
    let mut children: Vec<String> = context
        .children
        .state()
        .iter()
        .map(|c| c.name_any())
        .collect();
    children.sort();
    let want: Vec<String> = parents[..5].iter().map(|p| format!("{p}-child")).collect();
    assert_eq!(children, want, "every page of children");
    eventually(
        "every parent is reconciled",
        Duration::from_secs(30),
        || async { Ok(context.data.names() == parents.iter().cloned().collect()) },
    )
    .await?;
    running.shutdown().await?;
    Ok(())
}

/// Grandchildren (objects the children create, carrying the parent labels) are cached, pruned,
/// and each change reconciles the parent, as a child's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grandchild_change_reconciles_its_parent_and_is_cached_pruned() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};

    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-grandchild").await?;
    let client = cp.client().await?;
    let watch = |resource: ApiResource| children_in(resource, &ns);
    // Parents: ConfigMaps; children: ServiceAccounts; grandchildren: Secrets.
    let running = Operator::<ConfigMap>::new(client.clone(), settings("grandchild-test"))
        .parents(parents_in(&ns))
        .children(watch(ApiResource::erase::<ServiceAccount>(&())))
        .grandchildren(watch(ApiResource::erase::<Secret>(&())), |secret| {
            if let Some(fields) = secret.data.as_object_mut() {
                fields.remove("data");
            }
        })
        .start(record_configmap, Seen::default())
        .await?;
    create_parent(&client, &ns, "g1").await?;
    let seen = &running.context().data;
    eventually(
        "the parent is reconciled",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("g1") >= 1) },
    )
    .await?;
    // Quiet: the parent waits for a change (`await_change`).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = seen.count_of("g1");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "g1-task", "labels": {PARENT_NAME: "g1", PARENT_NAMESPACE: ns}},
        "stringData": {"token": "not for the cache"},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    eventually(
        "the grandchild reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("g1") > before) },
    )
    .await?;
    let cached = running.context().grandchildren.state();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].name_any(), "g1-task");
    assert!(
        cached[0].data.get("data").is_none(),
        "pruned: {:?}",
        cached[0].data
    );

    // A change to it reconciles the parent again.
    let after_create = seen.count_of("g1");
    secrets
        .patch(
            "g1-task",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"changed": "yes"}}})),
        )
        .await?;
    eventually(
        "the grandchild's change reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("g1") > after_create) },
    )
    .await?;
    running.shutdown().await?;
    Ok(())
}

/// Children of two kinds (Secrets and Doohickeys, a custom kind whose CRD is installed late):
/// the runtime is ready only once both kinds' caches synced, each is cached in its own kind's
/// store, and a change to a child of either kind reconciles the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_of_two_kinds_are_cached_by_kind_and_each_reconciles_the_parent()
-> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Secret;

    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-two-kinds").await?;
    let client = cp.client().await?;
    let watch = |resource: ApiResource| children_in(resource, &ns);
    let (secrets_kind, doohickeys_kind) = (
        ApiResource::erase::<Secret>(&()),
        ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("runtime.kubernaut.test", "v1", "Doohickey"),
            "doohickeys",
        ),
    );
    let running = Operator::<ConfigMap>::new(client.clone(), settings("two-kinds-test"))
        .parents(parents_in(&ns))
        .children(watch(secrets_kind.clone()))
        .children(watch(doohickeys_kind.clone()))
        .start(record_configmap, Seen::default())
        .await?;
    let ctx = running.context().clone();
    let kinds: Vec<_> = ctx.children.kinds().cloned().collect();
    assert_eq!(kinds, [secrets_kind.clone(), doohickeys_kind.clone()]);
    // Parents and Secrets list at once; Doohickeys cannot be listed before their CRD exists.
    create_parent(&client, &ns, "p1").await?;
    let seen = &ctx.data;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..10 {
        assert_eq!(
            http_get(running.health_addr(), "/readyz").await?.0,
            503,
            "not ready while one child kind's cache has not synced"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!running.probes().is_synced());
    assert_eq!(seen.count(), 0, "no reconcile before every cache synced");
    cp.install_crds(&[permissive_crd("Doohickey", "doohickeys")])
        .await?;
    eventually("/readyz turns 200", Duration::from_secs(60), || async {
        Ok(http_get(running.health_addr(), "/readyz").await?.0 == 200)
    })
    .await?;

    eventually(
        "the parent is reconciled",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") >= 1) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One child of each kind, both named `p1-child`.
    let labels = json!({PARENT_NAME: "p1", PARENT_NAMESPACE: ns});
    let before = seen.count_of("p1");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "p1-child", "labels": labels},
        "stringData": {"k": "v"},
    }))?;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    eventually(
        "the Secret reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") > before) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = seen.count_of("p1");
    let doohickeys: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &doohickeys_kind);
    let mut doohickey = DynamicObject::new("p1-child", &doohickeys_kind);
    doohickey.metadata.labels = serde_json::from_value(labels)?;
    doohickey.data = json!({"spec": {"shape": "round"}});
    doohickeys
        .create(&PostParams::default(), &doohickey)
        .await?;
    eventually(
        "the Doohickey reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") > before) },
    )
    .await?;

    let reference = |kind: &ApiResource| {
        kube::runtime::reflector::ObjectRef::<DynamicObject>::new_with("p1-child", kind.clone())
            .within(&ns)
    };
    let cached_kind = |kind: &ApiResource| {
        ctx.children
            .get(&reference(kind))
            .and_then(|child| child.types.clone())
            .map(|types| types.kind)
    };
    assert_eq!(cached_kind(&secrets_kind).as_deref(), Some("Secret"));
    assert_eq!(cached_kind(&doohickeys_kind).as_deref(), Some("Doohickey"));
    assert_eq!(ctx.children.of(&secrets_kind).map(|s| s.len()), Some(1));
    assert_eq!(ctx.children.of(&doohickeys_kind).map(|s| s.len()), Some(1));
    assert_eq!(ctx.children.state().len(), 2);

    // A change to the Doohickey reconciles the parent again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = seen.count_of("p1");
    doohickeys
        .patch(
            "p1-child",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"shape": "square"}})),
        )
        .await?;
    eventually(
        "the Doohickey's change reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") > before) },
    )
    .await?;
    running.shutdown().await?;
    Ok(())
}

/// Grandchildren of two kinds (ServiceAccounts and Secrets), each with its own prune function:
/// both are cached by kind, pruned by their own function, and each reconciles the parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grandchildren_of_two_kinds_are_cached_by_kind_and_each_reconciles_the_parent()
-> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};

    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-two-grandkinds").await?;
    let client = cp.client().await?;
    let watch = |resource: ApiResource| children_in(resource, &ns);
    let (accounts_kind, secrets_kind) = (
        ApiResource::erase::<ServiceAccount>(&()),
        ApiResource::erase::<Secret>(&()),
    );
    let drop_annotations = |object: &mut DynamicObject| object.metadata.annotations = None;
    let running = Operator::<ConfigMap>::new(client.clone(), settings("two-grandkinds-test"))
        .parents(parents_in(&ns))
        .grandchildren(watch(accounts_kind.clone()), drop_annotations)
        .grandchildren(watch(secrets_kind.clone()), |secret| {
            if let Some(fields) = secret.data.as_object_mut() {
                fields.remove("data");
            }
        })
        .start(record_configmap, Seen::default())
        .await?;
    let ctx = running.context().clone();
    create_parent(&client, &ns, "p1").await?;
    let seen = &ctx.data;
    eventually(
        "the parent is reconciled",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") >= 1) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let metadata = json!({
        "name": "p1-grandchild",
        "labels": {PARENT_NAME: "p1", PARENT_NAMESPACE: ns},
        "annotations": {"kept": "by the Secret prune only"},
    });
    let before = seen.count_of("p1");
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": metadata}))?;
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await?;
    eventually(
        "the ServiceAccount reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") > before) },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = seen.count_of("p1");
    let secret: Secret =
        serde_json::from_value(json!({"metadata": metadata, "stringData": {"token": "x"}}))?;
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    eventually(
        "the Secret reconciles its parent",
        Duration::from_secs(20),
        || async { Ok(seen.count_of("p1") > before) },
    )
    .await?;

    let cached = |kind: &ApiResource| {
        ctx.grandchildren.get(
            &kube::runtime::reflector::ObjectRef::new_with("p1-grandchild", kind.clone())
                .within(&ns),
        )
    };
    let account = cached(&accounts_kind).ok_or_else(|| anyhow::anyhow!("no cached account"))?;
    let secret = cached(&secrets_kind).ok_or_else(|| anyhow::anyhow!("no cached secret"))?;
    assert!(
        account.metadata.annotations.is_none(),
        "pruned by its own function"
    );
    assert!(
        secret.metadata.annotations.is_some(),
        "not pruned by the other kind's function"
    );
    assert!(
        secret.data.get("data").is_none(),
        "pruned: {:?}",
        secret.data
    );
    assert_eq!(ctx.grandchildren.state().len(), 2);
    assert!(ctx.children.kinds().next().is_none(), "no child kind");
    running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_expose_the_framework_metrics_and_error_backoff() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-metrics").await?;
    let client = cp.client().await?;
    let operator = Operator::<ConfigMap>::new(client.clone(), settings("metrics-test"))
        .parents(parents_in(&ns));
    let own = prometheus_counter(operator.registry())?;
    let running = operator.start(record_configmap, Seen::default()).await?;

    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    configmaps
        .create(&PostParams::default(), &parent_configmap("ok", &[]))
        .await?;
    configmaps
        .create(
            &PostParams::default(),
            &parent_configmap("failing", &[("fail", "true")]),
        )
        .await?;
    let ctx = running.context().clone();
    eventually(
        "the failing object is retried",
        Duration::from_secs(20),
        || async { Ok(ctx.data.count() >= 3) },
    )
    .await?;
    own.inc();

    let (status, metrics) = http_get(running.metrics_addr(), "/metrics").await?;
    assert_eq!(status, 200);
    let at_least_one = |series: &str| sample(&metrics, series).is_some_and(|v| v >= 1.0);
    for series in [
        "framework_reconciles_total{result=\"success\"}",
        "framework_reconciles_total{result=\"error\"}",
        "framework_reconcile_errors_total{kind=\"asked_to_fail\"}",
        "framework_reconcile_duration_seconds_count",
        "framework_leader",
        "reconcile_error_backoff_objects",
        "runtime_test_operator_metric_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            at_least_one(series),
            "{series} missing or zero in\n{metrics}"
        );
    }
    for series in [
        "framework_template_reloads_total{outcome=\"loaded\"}",
        "framework_template_reloads_total{outcome=\"rejected\"}",
        "framework_decode_errors_total",
    ] {
        assert_eq!(
            sample(&metrics, series),
            Some(0.0),
            "{series} in\n{metrics}"
        );
    }

    // The failing object is in error backoff and its condition says so.
    let failing = ctx
        .parents
        .state()
        .into_iter()
        .find(|cm| cm.name_any() == "failing")
        .expect("cached");
    let condition = ctx.backoff_condition(&failing).expect("in backoff");
    assert_eq!(condition.type_, "ReconcileBackoff");
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.contains("asked to fail"),
        "{}",
        condition.message
    );
    let ok = ctx
        .parents
        .state()
        .into_iter()
        .find(|cm| cm.name_any() == "ok")
        .expect("cached");
    assert!(ctx.backoff_condition(&ok).is_none());

    // Success resets the backoff.
    configmaps
        .patch(
            "failing",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"fail": "false"}}})),
        )
        .await?;
    eventually("the backoff is reset", Duration::from_secs(20), || async {
        Ok(ctx.error_backoff.is_empty())
    })
    .await?;
    running.shutdown().await?;
    Ok(())
}

fn prometheus_counter(registry: &prometheus::Registry) -> anyhow::Result<prometheus::IntCounter> {
    let counter = prometheus::IntCounter::new(
        "runtime_test_operator_metric_total",
        "An operator's own metric.",
    )?;
    registry.register(Box::new(counter.clone()))?;
    Ok(counter)
}

// ---------------------------------------------------------------------------------------------
// Template hot reload.

const TEMPLATE: &str = "child.yaml.j2";

fn write_template(dir: &Path, body: &str) -> anyhow::Result<()> {
    // Write and rename, so a poll never sees half a file.
    let staging = dir.join(".staging");
    std::fs::write(&staging, body)?;
    std::fs::rename(staging, dir.join(TEMPLATE))?;
    Ok(())
}

struct ChildrenIn {
    namespace: String,
    seen: Seen,
}

async fn render_child(
    parent: Arc<ConfigMap>,
    ctx: Arc<Context<ConfigMap, ChildrenIn>>,
) -> Result<Action, TestError> {
    let templates = ctx
        .templates
        .as_ref()
        .ok_or_else(|| TestError::Template("no templates".into()))?
        .current();
    let mut child = templates
        .render(
            TEMPLATE,
            &json!({"parent": {"name": parent.name_any(), "namespace": parent.namespace()}}),
        )
        .map_err(|e| TestError::Template(e.to_string()))?;
    let identity = ChildIdentity {
        name: parent.name_any(),
        namespace: ctx.data.namespace.clone(),
        labels: BTreeMap::from([
            (PARENT_NAME.to_string(), parent.name_any()),
            (
                PARENT_NAMESPACE.to_string(),
                parent.namespace().unwrap_or_default(),
            ),
            (REVISION.to_string(), templates.revision().to_string()),
        ]),
        annotations: BTreeMap::new(),
    };
    apply_identity(&mut child, &identity);
    let child: ConfigMap =
        serde_json::from_value(child).map_err(|e| TestError::Template(e.to_string()))?;
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ctx.data.namespace)
        .patch(
            &parent.name_any(),
            &PatchParams::apply("runtime-test").force(),
            &Patch::Apply(&child),
        )
        .await?;
    ctx.data.seen.record(parent.name_any());
    Ok(Action::await_change())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_serves_new_templates_and_keeps_the_last_good_one() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let ns = cp.create_namespace("rt-reload").await?;
    let children_ns = cp.create_namespace("rt-reload-children").await?;
    let client = cp.client().await?;

    let dir = tempfile::tempdir()?;
    let v1 = "apiVersion: v1\nkind: ConfigMap\ndata:\n  greeting: {{ \"hello \" ~ parent.name }}\n";
    let v2 = "apiVersion: v1\nkind: ConfigMap\ndata:\n  greeting: {{ \"hi \" ~ parent.name }}\n";
    let broken = "apiVersion: v1\nkind: ConfigMap\ndata:\n  greeting: {{ parent.name \n";
    write_template(dir.path(), v1)?;
    let declarations = [TemplateDecl {
        file: TEMPLATE.into(),
        child: ChildKind {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        },
        sample: json!({"parent": {"name": "sample", "namespace": "default"}}),
    }];
    let store = Arc::new(TemplateStore::load(dir.path(), &declarations)?);
    let r1 = store.current().revision().to_string();

    // The Events about template reloads go to an object of the operator's choosing.
    let anchor = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("template-events".into()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await?;
    let running = Operator::<ConfigMap>::new(client.clone(), settings("reload-test"))
        .parents(parents_in(&ns))
        .children(children_in(
            ApiResource::erase::<ConfigMap>(&()),
            &children_ns,
        ))
        .templates(store.clone(), Some(anchor.object_ref(&())))
        .start(
            render_child,
            ChildrenIn {
                namespace: children_ns.clone(),
                seen: Seen::default(),
            },
        )
        .await?;
    let ctx = running.context().clone();
    let children: Api<ConfigMap> = Api::namespaced(client.clone(), &children_ns);
    let child_of = |name: &'static str| {
        let children = children.clone();
        async move {
            let child = children.get_opt(name).await?;
            Ok::<_, anyhow::Error>(child.map(|c| {
                (
                    c.labels().get(REVISION).cloned().unwrap_or_default(),
                    c.data
                        .unwrap_or_default()
                        .get("greeting")
                        .cloned()
                        .unwrap_or_default(),
                )
            }))
        }
    };

    create_parent(&client, &ns, "first").await?;
    eventually("the first child", Duration::from_secs(20), || async {
        Ok(child_of("first").await?.is_some())
    })
    .await?;
    assert_eq!(
        child_of("first").await?,
        Some((r1.clone(), "hello first".into()))
    );
    // The child store follows the children (read by the reconciler without API calls).
    eventually(
        "the child cache holds the child",
        Duration::from_secs(10),
        || async { Ok(ctx.children.state().iter().any(|c| c.name_any() == "first")) },
    )
    .await?;

    // A changed template is used for the next child, under a new revision.
    write_template(dir.path(), v2)?;
    eventually(
        "the new templates are loaded",
        Duration::from_secs(10),
        || async { Ok(store.current().revision() != r1) },
    )
    .await?;
    let r2 = store.current().revision().to_string();
    create_parent(&client, &ns, "second").await?;
    eventually("the second child", Duration::from_secs(20), || async {
        Ok(child_of("second").await?.is_some())
    })
    .await?;
    assert_eq!(
        child_of("second").await?,
        Some((r2.clone(), "hi second".into()))
    );
    eventually("the reload is counted", Duration::from_secs(10), || async {
        Ok(ctx
            .metrics
            .template_reloads
            .with_label_values(&["loaded"])
            .get()
            == 1)
    })
    .await?;

    // A broken template is rejected; the last good revision keeps serving.
    write_template(dir.path(), broken)?;
    eventually(
        "the rejection is counted",
        Duration::from_secs(10),
        || async {
            Ok(ctx
                .metrics
                .template_reloads
                .with_label_values(&["rejected"])
                .get()
                == 1)
        },
    )
    .await?;
    assert_eq!(store.current().revision(), r2);
    create_parent(&client, &ns, "third").await?;
    eventually("the third child", Duration::from_secs(20), || async {
        Ok(child_of("third").await?.is_some())
    })
    .await?;
    assert_eq!(
        child_of("third").await?,
        Some((r2.clone(), "hi third".into()))
    );
    let (_, metrics) = http_get(running.metrics_addr(), "/metrics").await?;
    assert_eq!(
        sample(
            &metrics,
            "framework_template_reloads_total{outcome=\"loaded\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "framework_template_reloads_total{outcome=\"rejected\"}"
        ),
        Some(1.0),
        "one broken edit is reported once"
    );
    eventually(
        "reload Events on the anchor",
        Duration::from_secs(10),
        || async {
            let events = events_about(&client, &ns, "template-events").await?;
            Ok(has_event(&events, "Normal", "TemplateReloaded")
                && has_event(&events, "Warning", "TemplateRejected"))
        },
    )
    .await?;
    assert_eq!(
        ctx.data.seen.names(),
        ["first", "second", "third"].map(String::from).into()
    );
    running.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The example operator (framework/examples/mirror.rs), run as its own process.

/// Builds the `mirror` example and returns its executable.
fn build_mirror_example() -> anyhow::Result<std::path::PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "-p", "kubernaut-framework", "--example", "mirror"])
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "building the mirror example failed"
    );
    String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| message["target"]["name"] == "mirror" && message["executable"].is_string())
        .and_then(|message| message["executable"].as_str().map(Into::into))
        .ok_or_else(|| anyhow::anyhow!("cargo reported no mirror executable"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mirror_example_copies_maps_status_and_cleans_up() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let binary = tokio::task::spawn_blocking(build_mirror_example).await??;
    let crd = std::process::Command::new(&binary).arg("crd").output()?;
    anyhow::ensure!(crd.status.success(), "mirror crd failed");
    let crd: CustomResourceDefinition = serde_yaml::from_slice(&crd.stdout)?;
    cp.install_crds(&[crd]).await?;
    let source_ns = cp.create_namespace("mirror-src").await?;
    let target_ns = cp.create_namespace("mirror-dst").await?;
    let client = cp.client().await?;
    let _operator = tokio::process::Command::new(&binary)
        .arg("run")
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("MIRROR_CONTROLLER__METRICSADDR", "127.0.0.1:0")
        .env("MIRROR_CONTROLLER__HEALTHADDR", "127.0.0.1:0")
        .kill_on_drop(true)
        .spawn()?;

    // Values that would break a naive template: quotes, a newline, Jinja and YAML syntax.
    let data = BTreeMap::from([
        ("plain".to_string(), "1".to_string()),
        ("tricky".to_string(), "a: \"b\"\n{{ x }} # c".to_string()),
    ]);
    Api::<ConfigMap>::namespaced(client.clone(), &source_ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("settings".into()),
                    ..ObjectMeta::default()
                },
                data: Some(data.clone()),
                ..ConfigMap::default()
            },
        )
        .await?;
    let mirror_resource = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "example.kubernaut.ai",
        "v1alpha1",
        "Mirror",
    ));
    let mirrors: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &source_ns, &mirror_resource);
    let mut mirror = DynamicObject::new("m1", &mirror_resource);
    mirror.data = json!({"spec": {"source": "settings", "targetNamespace": target_ns}});
    mirrors.create(&PostParams::default(), &mirror).await?;

    eventually(
        "the Mirror reports Mirrored",
        Duration::from_secs(60),
        || async {
            let status = &mirrors.get("m1").await?.data["status"];
            Ok(status["phase"] == "Mirrored" && status["keys"] == 2)
        },
    )
    .await?;
    let copies: Api<ConfigMap> = Api::namespaced(client.clone(), &target_ns);
    let copy = copies.list(&ListParams::default()).await?.items;
    assert_eq!(copy.len(), 1, "exactly one copy");
    let copy = &copy[0];
    assert!(
        copy.name_any().starts_with("mirror-"),
        "the lock name {}",
        copy.name_any()
    );
    assert_eq!(
        copy.data.as_ref(),
        Some(&data),
        "values come back byte for byte"
    );
    assert_eq!(
        copy.labels().get("example.kubernaut.ai/mirror-namespace"),
        Some(&source_ns)
    );
    let status = &mirrors.get("m1").await?.data["status"];
    assert_eq!(
        status["templateRevision"].as_str(),
        copy.labels()
            .get("example.kubernaut.ai/template-revision")
            .map(String::as_str),
        "the status maps the copy's revision"
    );

    // Deleting the Mirror deletes its copy in the other namespace, then the Mirror goes.
    mirrors.delete("m1", &Default::default()).await?;
    eventually(
        "the Mirror and its copy are gone",
        Duration::from_secs(30),
        || async {
            Ok(mirrors.get_opt("m1").await?.is_none()
                && copies.list(&ListParams::default()).await?.items.is_empty())
        },
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Error backoff: a failing object is retried on its schedule, and only real changes cut it short.

/// The annotation that makes [`fail_sprocket`] fail.
const FAIL: &str = "runtime.kubernaut.test/fail";

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug)]
#[kube(
    group = "runtime.kubernaut.test",
    version = "v1",
    kind = "Sprocket",
    namespaced,
    schema = "disabled",
    status = "SprocketStatus"
)]
struct SprocketSpec {
    #[serde(default)]
    teeth: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct SprocketStatus {
    #[serde(default)]
    conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// A CRD with a status subresource, so the runtime's condition writes are real status writes
/// whose watch events reach the controller.
fn sprocket_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "sprockets.runtime.kubernaut.test"},
        "spec": {
            "group": "runtime.kubernaut.test",
            "scope": "Namespaced",
            "names": {"plural": "sprockets", "singular": "sprocket", "kind": "Sprocket", "listKind": "SprocketList"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }
                }}
            }]
        }
    }))
    .expect("valid CRD")
}

/// Fails while the sprocket carries `FAIL: "true"` (always with the same error) or
/// `FAIL: "differently"` (with a new error each time); writes nothing itself.
async fn fail_sprocket(
    sprocket: Arc<Sprocket>,
    ctx: Arc<Context<Sprocket, Seen>>,
) -> Result<Action, TestError> {
    let count = ctx.data.record(sprocket.name_any());
    match sprocket.annotations().get(FAIL).map(String::as_str) {
        Some("true") => Err(TestError::AskedToFail),
        Some("differently") => Err(TestError::AskedToFailDifferently(count)),
        _ => Ok(Action::await_change()),
    }
}

fn sprocket(name: &str, fail: impl ToString) -> Sprocket {
    let mut sprocket = Sprocket::new(name, SprocketSpec { teeth: 12 });
    sprocket.metadata.labels = Some(BTreeMap::from([(
        PARENT_LABEL.to_string(),
        "true".to_string(),
    )]));
    sprocket.metadata.annotations = Some(BTreeMap::from([(FAIL.to_string(), fail.to_string())]));
    sprocket
}

fn backoff_condition(
    sprocket: &Sprocket,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    sprocket
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "ReconcileBackoff")
        .cloned()
}

/// The most attempts the schedule allows within `elapsed` of the first one.
fn attempts_allowed(schedule: &kubernaut_framework::backoff::Backoff, elapsed: Duration) -> usize {
    let mut attempts = 1;
    let mut at = Duration::ZERO;
    loop {
        at += schedule.delay(u32::try_from(attempts).unwrap_or(u32::MAX));
        if at > elapsed {
            return attempts;
        }
        attempts += 1;
    }
}

/// Two failing objects: `steady` fails with the same error every time (one condition write and
/// one Event in all), `restless` with a new error every time (a condition write and an Event per
/// attempt, each coming back as a watch event). Both are retried on the schedule alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_object_is_retried_on_its_schedule_and_its_own_failure_reports_trigger_nothing()
-> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    cp.install_crds(&[sprocket_crd()]).await?;
    let ns = cp.create_namespace("rt-backoff").await?;
    let admin = cp.client().await?;
    // Every request of the operator is recorded.
    let log = RequestLog::new();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(cp.kubeconfig_path())?,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    let mut settings = settings("backoff-schedule-test");
    settings.error_backoff.base = Duration::from_secs(1);
    settings.error_backoff.max = Duration::from_secs(4);
    let schedule = settings.error_backoff;
    let running = Operator::<Sprocket>::new(log.client(config)?, settings)
        .parents(parents_in(&ns))
        .start(fail_sprocket, Seen::default())
        .await?;
    let ctx = running.context().clone();
    let sprockets: Api<Sprocket> = Api::namespaced(admin.clone(), &ns);
    let started = Instant::now();
    sprockets
        .create(&PostParams::default(), &sprocket("steady", true))
        .await?;
    sprockets
        .create(&PostParams::default(), &sprocket("restless", "differently"))
        .await?;

    // The failures are reported on the objects …
    for (name, error) in [("steady", "asked to fail"), ("restless", "failure")] {
        eventually(
            &format!("ReconcileBackoff=True on {name}"),
            Duration::from_secs(20),
            || async {
                Ok(backoff_condition(&sprockets.get(name).await?)
                    .is_some_and(|c| c.status == "True" && c.message.contains(error)))
            },
        )
        .await?;
    }
    // … and the objects keep failing for a while.
    tokio::time::sleep_until((started + Duration::from_secs(20)).into()).await;
    let allowed = attempts_allowed(&schedule, started.elapsed());
    let writes: Vec<ApiRequest> = log
        .requests()
        .into_iter()
        .filter(ApiRequest::is_write)
        .collect();
    let described: Vec<String> = writes.iter().map(ApiRequest::describe).collect();
    let status_writes = |name: &str| {
        writes
            .iter()
            .filter(|r| {
                r.resource.as_deref() == Some("sprockets/status") && r.name.as_deref() == Some(name)
            })
            .count()
    };
    for name in ["steady", "restless"] {
        let attempts = ctx.data.count_of(name);
        assert!(
            (3..=allowed).contains(&attempts),
            "{name}: {attempts} attempts in {:?}; the schedule allows {allowed}",
            started.elapsed()
        );
    }
    // The reports' own status writes came back as watch events and were held back.
    assert!(ctx.metrics.reconciles_held.get() >= 2);
    let restless = ctx.data.count_of("restless");
    assert!(
        status_writes("restless") + 1 >= restless,
        "restless: a condition write per attempt ({restless}): {described:#?}"
    );
    // One condition write and one Event for the one error of `steady`, however many attempts.
    assert_eq!(status_writes("steady"), 1, "steady: {described:#?}");
    let events = Api::<K8sEvent>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items;
    let reported = |name: &str| {
        events
            .iter()
            .filter(|e| {
                e.reason.as_deref() == Some("ReconcileError")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            })
            .count()
    };
    assert_eq!(reported("steady"), 1, "{events:#?}");
    assert!(reported("restless") + 1 >= restless, "{events:#?}");
    let event_writes = writes
        .iter()
        .filter(|r| r.resource.as_deref() == Some("events"))
        .count();
    assert_eq!(
        writes.len(),
        status_writes("steady") + status_writes("restless") + event_writes,
        "nothing else is written: {described:#?}"
    );
    running.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_real_change_cuts_a_backoff_short_and_success_resolves_it() -> anyhow::Result<()> {
    init_tracing();
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    cp.install_crds(&[sprocket_crd()]).await?;
    let ns = cp.create_namespace("rt-backoff-change").await?;
    let client = cp.client().await?;
    // A schedule far longer than any wait below: every retry seen here was a reaction.
    let mut settings = settings("backoff-change-test");
    settings.error_backoff.base = Duration::from_secs(600);
    settings.error_backoff.max = Duration::from_secs(600);
    let running = Operator::<Sprocket>::new(client.clone(), settings)
        .parents(parents_in(&ns))
        .children(children_in(ApiResource::erase::<ConfigMap>(&()), &ns))
        .start(fail_sprocket, Seen::default())
        .await?;
    let ctx = running.context().clone();
    let sprockets: Api<Sprocket> = Api::namespaced(client.clone(), &ns);
    sprockets
        .create(&PostParams::default(), &sprocket("failing", true))
        .await?;
    let within = Duration::from_secs(60);
    let attempts = |n: usize| {
        let ctx = ctx.clone();
        move || {
            let ctx = ctx.clone();
            async move { Ok(ctx.data.count() >= n) }
        }
    };
    eventually("the first attempt", within, attempts(1)).await?;
    eventually("ReconcileBackoff=True", within, || async {
        Ok(backoff_condition(&sprockets.get("failing").await?).is_some_and(|c| c.status == "True"))
    })
    .await?;

    // A status-only change by someone else is not a reason to retry.
    let held = ctx.metrics.reconciles_held.get();
    sprockets
        .patch_status(
            "failing",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"note": "written by a user"}})),
        )
        .await?;
    eventually(
        "the status change reached the controller",
        within,
        || async { Ok(ctx.metrics.reconciles_held.get() > held) },
    )
    .await?;
    assert_eq!(ctx.data.count(), 1, "a status change cut the backoff short");

    // A child appearing is a real change: the parent is retried at once.
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("failing-child".into()),
                    labels: Some(BTreeMap::from([
                        (PARENT_NAME.to_string(), "failing".to_string()),
                        (PARENT_NAMESPACE.to_string(), ns.clone()),
                    ])),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await?;
    eventually("a retry after the child changed", within, attempts(2)).await?;

    // So is an annotation change by a user, even when it does not fix anything.
    sprockets
        .patch(
            "failing",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"touched-by": "a user"}}})),
        )
        .await?;
    eventually("a retry after the annotation changed", within, attempts(3)).await?;
    let key = kube::runtime::reflector::ObjectRef::<Sprocket>::new("failing").within(&ns);
    eventually("the third failure recorded", within, || async {
        Ok(ctx.error_backoff.get(&key).is_some_and(|a| a.attempt == 3))
    })
    .await?;

    // A fix: retried at once, succeeds, resets the backoff and resolves the condition.
    sprockets
        .patch(
            "failing",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {FAIL: "false"}}})),
        )
        .await?;
    eventually("the backoff is reset", within, || async {
        Ok(ctx.error_backoff.is_empty())
    })
    .await?;
    eventually("ReconcileBackoff=False", within, || async {
        Ok(backoff_condition(&sprockets.get("failing").await?)
            .is_some_and(|c| c.status == "False" && c.reason == "ReconcileSucceeded"))
    })
    .await?;
    running.shutdown().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reconcile order under saturation.

/// The order of first reconciles, and a gate that holds the reconcile of `blocker` until opened.
#[derive(Default)]
struct Ordered {
    first_reconciles: Mutex<Vec<String>>,
    all_reconciles: Mutex<Vec<String>>,
    gate: tokio::sync::Notify,
}

async fn record_in_order(
    cm: Arc<ConfigMap>,
    ctx: Arc<Context<ConfigMap, Ordered>>,
) -> Result<Action, TestError> {
    let name = cm.name_any();
    ctx.data.all_reconciles.lock().unwrap().push(name.clone());
    {
        let mut seen = ctx.data.first_reconciles.lock().unwrap();
        if !seen.contains(&name) {
            seen.push(name.clone());
        }
    }
    if name == "blocker" {
        ctx.data.gate.notified().await;
    }
    Ok(Action::await_change())
}

/// An operator with one reconcile slot over ConfigMap parents in a new namespace (and, with
/// `children`, Secret children), recording the order of its reconciles.
async fn one_slot_operator(
    prefix: &str,
    children: bool,
) -> anyhow::Result<(Running<ConfigMap, Ordered>, String, Client)> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace(prefix).await?;
    let client = cp.client().await?;
    let mut settings = settings(&format!("{prefix}-test"));
    settings.concurrency = 1;
    let mut operator =
        Operator::<ConfigMap>::new(client.clone(), settings).parents(parents_in(&ns));
    if children {
        operator = operator.children(children_in(
            ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
            &ns,
        ));
    }
    let running = operator.start(record_in_order, Ordered::default()).await?;
    Ok((running, ns, client))
}

/// Creates `blocker` (its reconcile holds the only slot until the gate opens), then `names`
/// one after the other, and waits until they all wait for the slot.
async fn queue_behind_blocker(
    client: &Client,
    ns: &str,
    ctx: &Context<ConfigMap, Ordered>,
    names: &[String],
) -> anyhow::Result<()> {
    let reconciled = ctx.data.first_reconciles.lock().unwrap().len();
    create_parent(client, ns, "blocker").await?;
    eventually(
        "the blocker holds the only slot",
        Duration::from_secs(20),
        || async { Ok(ctx.data.first_reconciles.lock().unwrap().len() == reconciled + 1) },
    )
    .await?;
    for name in names {
        create_parent(client, ns, name).await?;
        // Each trigger arrives on its own, after the one before it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually("all wait for the slot", Duration::from_secs(20), || async {
        Ok(ctx.metrics.reconciles_queued.get() == names.len() as i64)
    })
    .await
}

/// With every reconcile slot busy, objects triggered one after the other are reconciled in that
/// order, none overtaken by one triggered after it (kube's own limit parks due triggers in an
/// unordered set and picks from it in hash order).
#[tokio::test]
async fn reconciles_start_in_trigger_order_while_every_slot_is_busy() -> anyhow::Result<()> {
    init_tracing();
    let _logs = ControlPlane::shared().await?.logs_on_failure();
    let (running, ns, client) = one_slot_operator("rt-order", false).await?;
    let ctx = running.context().clone();
    let names: Vec<String> = (0..30).map(|i| format!("queued-{i:02}")).collect();
    queue_behind_blocker(&client, &ns, &ctx, &names).await?;
    ctx.data.gate.notify_one();
    eventually("all 30 reconciled", Duration::from_secs(20), || async {
        Ok(ctx.data.first_reconciles.lock().unwrap().len() == 31)
    })
    .await?;

    let order = ctx.data.first_reconciles.lock().unwrap().clone();
    assert_eq!(order[1..], names[..], "reconciled out of trigger order");
    running.shutdown().await?;
    Ok(())
}

/// With every reconcile slot busy, a parent whose child changed (a run that finished: what its
/// status must show, and what frees its lock) is reconciled before the parents queued ahead of
/// it, which still keep their order.
#[tokio::test]
async fn a_parent_whose_child_changed_is_reconciled_before_queued_new_parents() -> anyhow::Result<()>
{
    init_tracing();
    let _logs = ControlPlane::shared().await?.logs_on_failure();
    let (running, ns, client) = one_slot_operator("rt-urgent", true).await?;
    let ctx = running.context().clone();
    create_parent(&client, &ns, "changed").await?;
    eventually("`changed` reconciled", Duration::from_secs(20), || async {
        Ok(ctx.data.first_reconciles.lock().unwrap().len() == 1)
    })
    .await?;
    let names: Vec<String> = (0..10).map(|i| format!("queued-{i:02}")).collect();
    queue_behind_blocker(&client, &ns, &ctx, &names).await?;
    // A child of `changed` appears: its parent's reconcile queues behind the ten.
    let child: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "changed-run", "labels": {PARENT_NAME: "changed", PARENT_NAMESPACE: ns}},
        "stringData": {"k": "v"},
    }))?;
    Api::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &child)
        .await?;
    eventually("11 wait for the slot", Duration::from_secs(20), || async {
        Ok(ctx.metrics.reconciles_queued.get() == 11)
    })
    .await?;
    let before = ctx.data.all_reconciles.lock().unwrap().len();
    ctx.data.gate.notify_one();
    eventually("all reconciled", Duration::from_secs(20), || async {
        Ok(ctx.data.first_reconciles.lock().unwrap().len() == 12)
    })
    .await?;

    let after: Vec<String> = ctx.data.all_reconciles.lock().unwrap()[before..].to_vec();
    let mut expected = vec!["changed".to_string()];
    expected.extend(names.iter().cloned());
    assert_eq!(
        after[..expected.len()],
        expected[..],
        "the changed child's parent first, then the queue in order"
    );
    running.shutdown().await?;
    Ok(())
}

/// What the reconciles of [`record_timing`] saw: each reconcile's object, the `rev` label it was
/// handed and when it started; whether two reconciles of one object ever ran at once.
#[derive(Default)]
struct Timing {
    seen: Mutex<Vec<(String, Option<String>, Instant)>>,
    running: Mutex<BTreeSet<String>>,
    overlapped: std::sync::atomic::AtomicBool,
    /// Holds the first reconcile of `slow` until notified.
    gate: tokio::sync::Notify,
}

impl Timing {
    /// The reconciles of `name`: the `rev` each was handed and when it started.
    fn of(&self, name: &str) -> Vec<(Option<String>, Instant)> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, rev, at)| (rev.clone(), *at))
            .collect()
    }
}

/// Records each reconcile; `slow`'s first waits for the gate; `ticker` asks to be requeued
/// after 500 ms twice, `timer` after 3 s once; everything else waits for a change.
async fn record_timing(
    cm: Arc<ConfigMap>,
    ctx: Arc<Context<ConfigMap, Timing>>,
) -> Result<Action, TestError> {
    let name = cm.name_any();
    if !ctx.data.running.lock().unwrap().insert(name.clone()) {
        ctx.data.overlapped.store(true, Ordering::SeqCst);
    }
    let count = {
        let mut seen = ctx.data.seen.lock().unwrap();
        seen.push((
            name.clone(),
            cm.labels().get("rev").cloned(),
            Instant::now(),
        ));
        seen.iter().filter(|(n, _, _)| *n == name).count()
    };
    if name == "slow" && count == 1 {
        ctx.data.gate.notified().await;
    }
    ctx.data.running.lock().unwrap().remove(&name);
    Ok(match (name.as_str(), count) {
        ("ticker", 1 | 2) => Action::requeue(Duration::from_millis(500)),
        ("timer", 1) => Action::requeue(Duration::from_secs(3)),
        _ => Action::await_change(),
    })
}

async fn timing_operator(
    prefix: &str,
) -> anyhow::Result<(Running<ConfigMap, Timing>, String, Client)> {
    let cp = ControlPlane::shared().await?;
    let ns = cp.create_namespace(prefix).await?;
    let client = cp.client().await?;
    let running = Operator::<ConfigMap>::new(client.clone(), settings(&format!("{prefix}-test")))
        .parents(parents_in(&ns))
        .start(record_timing, Timing::default())
        .await?;
    Ok((running, ns, client))
}

async fn label_rev(client: &Client, ns: &str, name: &str, rev: &str) -> anyhow::Result<()> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"rev": rev}}})),
        )
        .await?;
    Ok(())
}

/// A parent changed while its reconcile runs is not reconciled beside it (free slots
/// notwithstanding) but again once it finished, on the changed version.
#[tokio::test]
async fn a_parent_changed_while_its_reconcile_runs_is_reconciled_again_after_it_never_beside_it()
-> anyhow::Result<()> {
    init_tracing();
    let _logs = ControlPlane::shared().await?.logs_on_failure();
    let (running, ns, client) = timing_operator("rt-again").await?;
    let ctx = running.context().clone();
    create_parent(&client, &ns, "slow").await?;
    eventually(
        "slow's first reconcile runs",
        Duration::from_secs(20),
        || async { Ok(ctx.data.of("slow").len() == 1) },
    )
    .await?;
    label_rev(&client, &ns, "slow", "2").await?;
    let reference = kube::runtime::reflector::ObjectRef::<ConfigMap>::new("slow").within(&ns);
    eventually(
        "the cache holds the change",
        Duration::from_secs(20),
        || async {
            Ok(ctx
                .parents
                .get(&reference)
                .is_some_and(|cm| cm.labels().get("rev").is_some_and(|rev| rev == "2")))
        },
    )
    .await?;
    // The change's trigger reached the controller while the first reconcile still runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ctx.data.of("slow").len(), 1, "not reconciled beside itself");
    ctx.data.gate.notify_one();
    eventually("slow reconciled again", Duration::from_secs(20), || async {
        Ok(ctx.data.of("slow").len() == 2)
    })
    .await?;
    assert_eq!(
        ctx.data.of("slow")[1].0.as_deref(),
        Some("2"),
        "on the changed version"
    );
    assert!(!ctx.data.overlapped.load(Ordering::SeqCst));
    running.shutdown().await?;
    Ok(())
}

/// A reconcile that asks for a requeue is reconciled again once its delay passed, not before; a
/// change before the delay passed reconciles at once and replaces the requeue (the reconcile it
/// starts asks for what comes next).
#[tokio::test]
async fn a_requeue_reconciles_after_its_delay_and_a_change_before_it_replaces_it()
-> anyhow::Result<()> {
    init_tracing();
    let _logs = ControlPlane::shared().await?.logs_on_failure();
    let (running, ns, client) = timing_operator("rt-requeue").await?;
    let ctx = running.context().clone();
    create_parent(&client, &ns, "ticker").await?;
    create_parent(&client, &ns, "timer").await?;
    eventually(
        "timer's first reconcile",
        Duration::from_secs(20),
        || async { Ok(!ctx.data.of("timer").is_empty()) },
    )
    .await?;
    label_rev(&client, &ns, "timer", "2").await?;
    eventually("ticker requeued twice", Duration::from_secs(20), || async {
        Ok(ctx.data.of("ticker").len() == 3)
    })
    .await?;
    let ticks = ctx.data.of("ticker");
    for pair in ticks.windows(2) {
        assert!(
            pair[1].1.duration_since(pair[0].1) >= Duration::from_millis(500),
            "a requeue ran before its delay"
        );
    }
    eventually(
        "timer reconciled on its change",
        Duration::from_secs(20),
        || async { Ok(ctx.data.of("timer").len() == 2) },
    )
    .await?;
    // Past the 3 s the first reconcile asked for: the change replaced that requeue.
    let first = ctx.data.of("timer")[0].1;
    tokio::time::sleep(
        (first + Duration::from_millis(4500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let timer = ctx.data.of("timer");
    assert_eq!(timer.len(), 2, "the replaced requeue still ran");
    assert_eq!(timer[1].0.as_deref(), Some("2"));
    assert_eq!(ctx.data.of("ticker").len(), 3, "asked for no more");
    running.shutdown().await?;
    Ok(())
}
