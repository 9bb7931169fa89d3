//! The operator runtime: a controller loop of its own for a parent kind `K` and its
//! label-selected children, of one or several kinds, over caches of its own, with leader
//! election, metrics, health probes, Events, template hot reload and graceful shutdown.
//!
//! An operator hands the runtime its settings, where its children live and one reconcile
//! function; everything else is here:
//!
//! ```no_run
//! # use std::{sync::Arc, time::Duration};
//! # use k8s_openapi::api::core::v1::ConfigMap;
//! # use kube::api::ApiResource;
//! use kubernaut_framework::runtime::{Action, ChildWatch, Context, Operator, RuntimeSettings};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("failed")]
//! struct Error;
//! impl kubernaut_framework::runtime::MetricLabel for Error {
//!     fn metric_label(&self) -> &'static str { "failed" }
//! }
//!
//! async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Context<ConfigMap, ()>>) -> Result<Action, Error> {
//!     let _cached_children = ctx.children.state(); // read from the cache, no API list call
//!     Ok(Action::requeue(Duration::from_secs(300)))
//! }
//!
//! # async fn main_(client: kube::Client) -> Result<(), Box<dyn std::error::Error>> {
//! Operator::<ConfigMap>::new(client, RuntimeSettings::new("mirror-operator"))
//!     .children(ChildWatch {
//!         resource: ApiResource::erase::<ConfigMap>(&()),
//!         namespace: Some("mirrors".into()),
//!         selector: "example.kubernaut.ai/parent-name".into(),
//!         parent_labels: ("example.kubernaut.ai/parent-name".into(), "example.kubernaut.ai/parent-namespace".into()),
//!         parent_name_annotation: None,
//!     })
//!     .run(reconcile, ())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # What runs where
//! * On **every** replica: the parent reflector and one reflector per child and grandchild kind
//!   (so caches are warm on standby; each is named after its kind, as in
//!   `child reflector (tekton.dev/v1 PipelineRun)`, when it is logged dying),
//!   `/healthz`, `/readyz`, `/metrics`, the template watcher and, if configured, the Lease
//!   elector.
//! * On the **leader** only: the controller loop and hence every reconcile. Each time this replica
//!   becomes leader a new controller *term* starts: it reconciles every cached parent once, then
//!   follows watch events; when leadership is lost or shutdown begins, the term stops taking new
//!   work and lets in-flight reconciles finish.
//!
//! # Guarantees
//! 1. Children are mapped to parents by two labels (parent name and namespace), never by
//!    ownerReferences, so children may live in another namespace than their parent. Children may
//!    be of several kinds ([`Operator::children`] once per kind, e.g. one per execution engine:
//!    Tekton `PipelineRun`, `batch/v1` `Job`): each kind has its own reflector and store (a
//!    store holds one kind, and each re-list swaps it whole), each with its own [`ChildWatch`]
//!    labels, and a change of any kind reconciles its parent. Grandchildren likewise.
//! 2. The reconcile [`Context`] carries the reflector stores: the operator makes decisions from
//!    memory (`ctx.parents`, `ctx.children`, `ctx.grandchildren`) instead of API list calls; the
//!    parent cache is a [`ParentStore`] (each parent kept as compact JSON text and thawed when
//!    read: [`frozen`]), the child and grandchild caches are [`KindStores`], one store per kind,
//!    looked up by the reference's kind. Cached objects have their `managedFields` stripped, and cached children
//!    (of every kind) whatever [`Operator::prune_children`] drops (a kind watched with
//!    [`Operator::children_pruned`]: whatever its own function drops). Grandchildren ([`Operator::grandchildren`]: objects the
//!    children create, carrying the same parent labels, e.g. a PipelineRun's TaskRuns) are watched
//!    the same way: a change to one reconciles its parent.
//! 3. Error boundary: a parent that fails to deserialize into `K` is logged, counted in
//!    `framework_decode_errors_total` and reported as a `Warning` Event (`DecodeFailed`) on the
//!    object, once per resourceVersion; it is kept out of the store and never reconciled, and the
//!    watch and every other object carry on. A panic in the reconcile function is caught and treated
//!    as a failed reconcile (error kind `panic`).
//! 4. Per-object error backoff: each failed reconcile records an attempt in
//!    [`Context::error_backoff`] and is retried when the backoff delay has passed — and before
//!    that only on a real change: the object changed in anything but status and bookkeeping
//!    (spec, labels, annotations, finalizers, deletion), or one of its children changed (a child
//!    watch event). A reconcile asked for by anything else (the object's own status writes, the
//!    failure report, a re-list) is held back and requeued for when the attempt is due
//!    (`framework_reconciles_held_total`). The failure is surfaced as a `ReconcileBackoff=True`
//!    condition, rewritten only when the error changes, and a `Warning ReconcileError` Event
//!    only when the error starts or changes; a successful reconcile resets the backoff and
//!    resolves the condition. `reconcile_error_backoff_objects` counts objects in backoff, and
//!    [`Context::backoff_condition`] gives the condition.
//! 5. At most [`RuntimeSettings::concurrency`] reconciles run at once, and never two for the same
//!    object; triggered reconciles wait for a slot first come, first served, those of a parent
//!    whose child changed (a run that finished) ahead of the others, and run on the object as
//!    cached when they get it (`framework_reconciles_queued`,
//!    `framework_reconcile_queue_seconds`).
//! 6. Graceful shutdown on SIGTERM/SIGINT ([`Operator::run`]) or on the [`CancellationToken`] from
//!    [`Operator::shutdown_token`]: `/readyz` turns 503, no new reconcile starts, in-flight ones
//!    finish, then the Lease is released, then the HTTP servers stop.
//! 7. No stand-aside tail: a reconcile the controller starts on a cached parent that this
//!    process's own write already replaced ([`Operator::own_writes`]) waits in its slot, at most
//!    5 s, for the watch event of that write, and then reconciles the newer version: it is run
//!    as soon as the cache catches up, never after a backoff or behind other queued objects.
//!    `framework_own_write_waits_total{outcome}` counts these waits.
//!
//! # Assumptions
//! 1. `K` is namespaced, and its `DynamicType` is `()` (any `#[derive(CustomResource)]` type or
//!    k8s-openapi type).
//! 2. Children carry both parent labels ([`ChildWatch::parent_labels`]); the framework's
//!    template identity (`template::apply_identity`) sets them.
//! 3. RBAC: list/watch on the parent kind and every child and grandchild kind, create/patch on `events.k8s.io` events,
//!    and get/create/update on the Lease when leader election is enabled.
//!
//! # Caveats
//! 1. Leadership is advisory (see [`leader`]): after leadership is lost, in-flight reconciles
//!    still finish and may overlap with the new leader's first reconciles; reconcilers must keep
//!    their writes conflict-safe.
//! 2. Only status-only changes wait for an object's backoff: a real change (guarantee 4)
//!    reconciles at once, so a reconciler that itself rewrites a child or the object's metadata on
//!    every failing attempt retries at the pace of its own writes. A status change by someone else
//!    waits for the next scheduled attempt too.
//! 3. Dropping a [`Running`] handle kills the runtime without releasing the Lease, as a crash
//!    would; standbys then take over after the lease duration.
//! 4. Every replica watches, so every replica reports an undecodable object (log, metric and its
//!    own Event, told apart by `reportingInstance`).
//! 5. Error backoff counters live in memory: a new leader starts every object at attempt 1.
//! 6. A reconcile waiting for the watch event of its own write (guarantee 7) holds its slot
//!    meanwhile, and a graceful shutdown waits for it as for any in-flight reconcile.
//! 7. The runtime reconciles (and turns ready) only after every cache — the parents' and each
//!    child and grandchild kind's — synced, so a reconciler never needs to wait on the stores
//!    itself.

mod catch_up;
mod events;
pub mod frozen;
mod health;
pub mod index;
pub mod leader;
mod lookup;
pub mod metrics;
mod packed;
pub mod prune;
mod reflect;
mod schedule;
mod slots;
mod stores;
mod surface;
mod terms;

use std::{
    fmt::Debug, future::Future, marker::PhantomData, net::SocketAddr, sync::Arc, time::Duration,
};

use futures::{FutureExt as _, future::BoxFuture};
use k8s_openapi::{
    NamespaceResourceScope, api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    core::DeserializeGuard,
    runtime::{
        events::{Event, Recorder, Reporter},
        reflector::ObjectRef,
        watcher,
    },
};
use prometheus::Registry;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
    task::{JoinHandle, JoinSet},
};
pub use tokio_util::sync::CancellationToken;

pub use self::{
    events::pod_reference_from_env,
    frozen::{ParentStore, ParentWriter},
    health::Probes,
    index::ParentIndex,
    leader::{LeaderElectionError, LeaderElectionSettings, LeaderElector, default_identity},
    lookup::GrandchildrenOf,
    metrics::{FrameworkMetrics, MetricLabel},
    schedule::Action,
    stores::{CacheWriterDropped, ChildStore, ChildWriter, FrozenObject, KindStores},
};
use self::{
    events::{publish_event, report_invalid, watch_templates},
    terms::ControllerTerms,
};
use crate::{
    backoff::{Backoff, ErrorBackoff},
    engine::Engines,
    own_writes::OwnWrites,
    status::Projection,
    template::{ChildKind, TemplateStore},
};
/// The Prometheus crate the runtime's registry comes from, for operators registering their own
/// metrics with the same version.
pub use prometheus;

/// How many watch events a controller term may fall behind before it re-triggers everything.
const TRIGGER_BUFFER: usize = 1024;

/// What the runtime needs of a parent kind: a namespaced object whose `DynamicType` is `()` (any
/// `#[derive(CustomResource)]` or k8s-openapi type), cloned into the cache, decoded from and
/// encoded to JSON, and shared between tasks. Implemented for every such type.
pub trait ParentResource:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> ParentResource for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + Debug
        + Send
        + Sync
        + 'static
{
}

/// Process-level settings of the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// Name of the controller: the Events' `reportingController` and the log/metrics identity.
    pub controller_name: String,
    /// Where `/metrics` is served (`0.0.0.0:8080`); port 0 picks a free port, see
    /// [`Running::metrics_addr`]. Equal to `health_addr` = one listener serves all endpoints.
    pub metrics_addr: SocketAddr,
    /// Where `/healthz` and `/readyz` are served (`0.0.0.0:8081`).
    pub health_addr: SocketAddr,
    /// Lease-based leader election; `None` = this replica always reconciles.
    pub leader_election: Option<LeaderElectionSettings>,
    /// Maximum number of reconciles running at once (0 = unbounded).
    pub concurrency: u16,
    /// Per-object retry delays after failed reconciles.
    pub error_backoff: Backoff,
    /// How often the template directory is checked for changes.
    pub template_poll: Duration,
    /// Objects per page of a cache's (re)list. A page is decoded whole, every object complete
    /// (spec, status, `managedFields`) before it is pruned for the cache, so the page size bounds
    /// the memory a list needs on top of the caches: 500 objects of a few tens of KiB each (kube's
    /// default) leave tens of MiB behind in the allocator; a smaller page costs more requests.
    pub list_page_size: u32,
}

impl RuntimeSettings {
    /// Defaults: metrics on `0.0.0.0:8080`, health on `0.0.0.0:8081`, no leader election,
    /// concurrency 8, error backoff 2s doubling up to 5m, template poll every 5s, lists in pages
    /// of [`LIST_PAGE_SIZE`].
    pub fn new(controller_name: impl Into<String>) -> Self {
        Self {
            controller_name: controller_name.into(),
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            health_addr: SocketAddr::from(([0, 0, 0, 0], 8081)),
            leader_election: None,
            concurrency: 8,
            error_backoff: Backoff {
                base: Duration::from_secs(2),
                max: Duration::from_secs(300),
                max_exponent: 8,
            },
            template_poll: Duration::from_secs(5),
            list_page_size: LIST_PAGE_SIZE,
        }
    }
}

/// The default [`RuntimeSettings::list_page_size`]: at 10 000 WorkflowExecutions and 10 000
/// PipelineRuns, pages of 50 instead of 500 left the operator 111 MiB resident instead of 153
/// (`loadbench --only-scale`, both in one run).
pub const LIST_PAGE_SIZE: u32 = 50;

/// Which parents are watched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParentWatch {
    /// One namespace, or `None` for all namespaces.
    pub namespace: Option<String>,
    /// A label selector (`app=x,tier!=y`), or `None` for every object.
    pub selector: Option<String>,
}

/// Which children are watched and how a child names its parent.
#[derive(Clone, Debug)]
pub struct ChildWatch {
    /// The child kind, e.g. `tekton.dev/v1` `PipelineRun` (`ApiResource::from_gvk` or `erase`).
    pub resource: ApiResource,
    /// The namespace the children live in, or `None` for all namespaces.
    pub namespace: Option<String>,
    /// A label selector that matches exactly this operator's children.
    pub selector: String,
    /// The label keys holding the parent's name and namespace.
    pub parent_labels: (String, String),
    /// An annotation key holding the parent's full name, read before the name label. Object names
    /// may be up to 253 characters and a label value only 63, so a parent with a long name can be
    /// found only through an annotation (its label then carries a shortened form). A prune
    /// function ([`Operator::prune_children`]) must keep this annotation.
    pub parent_name_annotation: Option<String>,
}

impl ChildWatch {
    /// The parent a child belongs to: its name from [`ChildWatch::parent_name_annotation`] when
    /// present, else from the name label, and its namespace from the namespace label; `None` when
    /// either is missing or empty.
    pub fn parent_of<K>(&self, child: &DynamicObject) -> Option<ObjectRef<K>>
    where
        K: Resource<DynamicType = ()>,
    {
        let labels = child.labels();
        let annotated = self
            .parent_name_annotation
            .as_ref()
            .and_then(|key| child.annotations().get(key))
            .filter(|v| !v.is_empty());
        let name =
            annotated.or_else(|| labels.get(&self.parent_labels.0).filter(|v| !v.is_empty()))?;
        let namespace = labels
            .get(&self.parent_labels.1)
            .filter(|v| !v.is_empty())?;
        Some(ObjectRef::new(name).within(namespace))
    }
}

/// Everything a reconcile call gets besides the object itself.
pub struct Context<K, D = ()>
where
    K: Resource<DynamicType = ()> + 'static,
{
    /// An API client.
    pub client: Client,
    /// The parent cache (every watched, decodable parent).
    pub parents: ParentStore<K>,
    /// The child caches, one per kind given to [`Operator::children`] (no kind when none was).
    pub children: KindStores,
    /// The grandchild caches, one per kind given to [`Operator::grandchildren`] (no kind when
    /// none was).
    pub grandchildren: KindStores,
    /// Publishes Events as this controller and replica.
    pub recorder: Recorder,
    /// The registry behind `/metrics`; register operator metrics here.
    pub registry: Registry,
    /// The framework's own metrics.
    pub metrics: FrameworkMetrics,
    /// Per-object error backoff, keyed by the parent's reference.
    pub error_backoff: ErrorBackoff<ObjectRef<K>>,
    /// The parents grouped by the key given to [`Operator::index_parents`] (empty when none was).
    pub parent_index: Arc<ParentIndex<K>>,
    /// The hot-reloaded templates, when configured with [`Operator::templates`].
    pub templates: Option<Arc<TemplateStore>>,
    /// This replica's identity (the Lease holder identity when leader election is on).
    pub identity: String,
    /// The operator's own state.
    pub data: D,
    leading: watch::Receiver<bool>,
    /// The failed-reconcile Events, aggregated per object and error.
    error_events: events::ErrorEvents,
}

impl<K, D> Context<K, D>
where
    K: Resource<DynamicType = ()> + 'static,
{
    /// The `ReconcileBackoff` condition of `object` while its reconciles are failing (the last
    /// error, failing since when), as the runtime writes it; `None` when the last reconcile
    /// succeeded. The counter is reset after a reconcile returns `Ok`.
    pub fn backoff_condition(&self, object: &K) -> Option<Condition> {
        self.error_backoff
            .get(&ObjectRef::from_obj(object))
            .map(|attempt| attempt.condition(object.meta().generation))
    }

    /// Whether this replica currently holds leadership (always `true` without leader election).
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Publishes an Event about `reference`, logging (not returning) a failure: Events are
    /// best-effort and must not fail a reconcile.
    pub async fn publish(&self, reference: &ObjectReference, event: Event) {
        publish_event(&self.recorder, reference, event).await;
    }

    /// Publishes an Event about `object` beside the reconcile, without waiting for the API
    /// server: Events are best-effort, and a reconcile slot is not held for another round trip.
    /// A failure is logged, as by [`Context::publish`].
    pub fn publish_detached(self: &Arc<Self>, object: &K, event: Event)
    where
        K: Send + Sync,
        D: Send + Sync + 'static,
    {
        let (context, reference) = (self.clone(), object.object_ref(&()));
        tokio::spawn(async move { context.publish(&reference, event).await });
    }

    /// A context for tests of reconcile functions, outside a running operator: `client` (a mock
    /// service, typically), `data`, empty caches and parent index, no templates, a fresh metrics
    /// registry, leadership held. The public fields can be replaced to fill a cache.
    ///
    /// # Errors
    ///
    /// A [`crate::metrics::MetricError`] when the framework metrics cannot be registered on the
    /// fresh registry (not expected).
    pub fn for_tests(client: Client, data: D) -> Result<Self, crate::metrics::MetricError>
    where
        K: Clone + serde::Serialize + DeserializeOwned,
    {
        let registry = Registry::new();
        let metrics = FrameworkMetrics::register(&registry)?;
        let identity = "test".to_owned();
        let controller = "test-controller".to_owned();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: controller.clone(),
                instance: Some(identity.clone()),
            },
        );
        let (_, leading) = watch::channel(true);
        Ok(Self {
            parents: ParentWriter::<K>::default().as_reader(),
            children: KindStores::default(),
            grandchildren: KindStores::default(),
            recorder,
            registry,
            metrics,
            error_backoff: ErrorBackoff::new(RuntimeSettings::new(&controller).error_backoff),
            parent_index: Arc::new(ParentIndex::disabled()),
            templates: None,
            error_events: events::ErrorEvents::new(client.clone(), controller, identity.clone()),
            client,
            identity,
            data,
            leading,
        })
    }
}

/// What can stop the runtime from starting or running.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// An HTTP endpoint could not listen.
    #[error("binding the {endpoint} endpoint to {addr} failed: {source}")]
    Bind {
        /// `health` or `metrics`.
        endpoint: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The framework metrics could not be registered.
    #[error("registering the framework metrics failed: {0}")]
    Metrics(#[from] crate::metrics::MetricError),
    /// Leader election is misconfigured.
    #[error(transparent)]
    LeaderElection(#[from] LeaderElectionError),
    /// The runtime's supervisor task panicked or was cancelled.
    #[error("the runtime task ended abnormally: {0}")]
    Task(String),
}

/// Builder of an operator process around a parent kind `K`; see the [module docs](self).
pub struct Operator<K: Resource<DynamicType = ()> + 'static> {
    client: Client,
    settings: RuntimeSettings,
    parents: ParentWatch,
    children: Vec<ChildWatch>,
    grandchildren: Vec<(ChildWatch, Arc<reflect::PruneFn>)>,
    templates: Option<(Arc<TemplateStore>, Option<ObjectReference>)>,
    index: Option<Arc<index::IndexKeyFn<K>>>,
    prune: Option<Arc<reflect::PruneFn>>,
    kind_prunes: Vec<(ApiResource, Arc<reflect::PruneFn>)>,
    own_writes: OwnWrites<K>,
    registry: Registry,
    shutdown: CancellationToken,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Operator<K>
where
    K: ParentResource,
{
    /// A runtime for parents of kind `K` in all namespaces, without children or templates.
    pub fn new(client: Client, settings: RuntimeSettings) -> Self {
        Self {
            client,
            settings,
            parents: ParentWatch::default(),
            children: Vec::new(),
            grandchildren: Vec::new(),
            templates: None,
            index: None,
            prune: None,
            kind_prunes: Vec::new(),
            own_writes: OwnWrites::new(),
            registry: Registry::new(),
            shutdown: CancellationToken::new(),
            _kind: PhantomData,
        }
    }

    /// Keeps a [`ParentIndex`] of the cached parents by `key_of` (e.g. a target field), updated
    /// from the same watch events as the cache and available as [`Context::parent_index`]: a
    /// decision over "the parents with this key" then never scans the whole cache.
    #[must_use]
    pub fn index_parents(
        mut self,
        key_of: impl Fn(&K) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        self.index = Some(Arc::new(key_of));
        self
    }

    /// Drops what the operator never reads from every cached child, of every child kind (for
    /// example `spec` and annotations) before it enters [`Context::children`]: with thousands of children the cache
    /// is most of the process's memory. `prune` must keep `metadata.name`, `metadata.namespace`
    /// and the [parent labels](ChildWatch::parent_labels), and everything the reconciler (or a
    /// status mapping) reads from the cache; reconcilers that need a whole child read it from
    /// the API server.
    #[must_use]
    pub fn prune_children(
        mut self,
        prune: impl Fn(&mut DynamicObject) + Send + Sync + 'static,
    ) -> Self {
        self.prune = Some(Arc::new(prune));
        self
    }

    /// The versions of parents this operator replaced by its own writes (a clone of the set its
    /// reconciler records into, e.g. through [`crate::lifecycle`]). A reconcile the controller
    /// starts on a cached copy that one of them replaced waits in its slot for the watch event of
    /// that write and reconciles the newer version, instead of standing aside and waiting for a
    /// later trigger behind every other queued object (guarantee 7 of the [module docs](self)).
    #[must_use]
    pub fn own_writes(mut self, own_writes: OwnWrites<K>) -> Self {
        self.own_writes = own_writes;
        self
    }

    /// Restricts the parent watch to a namespace and/or label selector.
    #[must_use]
    pub fn parents(mut self, watch: ParentWatch) -> Self {
        self.parents = watch;
        self
    }

    /// Watches children of one kind and maps them to their parents by label. Called once per
    /// child kind, it watches several kinds, each with its own reflector and store in
    /// [`Context::children`]; a change to a child of any of them reconciles its parent. A kind
    /// is watched once: a later watch of the same [`ChildWatch::resource`] replaces the earlier.
    #[must_use]
    pub fn children(mut self, watch: ChildWatch) -> Self {
        match self
            .children
            .iter_mut()
            .find(|w| w.resource == watch.resource)
        {
            Some(existing) => *existing = watch,
            None => self.children.push(watch),
        }
        self
    }

    /// Watches children of one kind as [`Self::children`] does, and drops from each cached one
    /// what `prune` drops (for that kind only; it replaces [`Self::prune_children`]'s function
    /// there, same rules). An operator whose kinds are read differently (one status mapping per
    /// kind, say) prunes each by what is read of it.
    #[must_use]
    pub fn children_pruned(
        mut self,
        watch: ChildWatch,
        prune: impl Fn(&mut DynamicObject) + Send + Sync + 'static,
    ) -> Self {
        self.kind_prunes.retain(|(kind, _)| *kind != watch.resource);
        let prune = Arc::new(prune) as Arc<reflect::PruneFn>;
        self.kind_prunes.push((watch.resource.clone(), prune));
        self.children(watch)
    }

    /// Watches the children and the grandchildren of every engine of `engines` ([`Self::children_pruned`],
    /// [`Self::grandchildren`]; `watch_of` says how a kind is watched), each cached object
    /// reduced by `project` to what the engines' status mappings read of its kind
    /// ([`Engines::child_projection`], [`Engines::grandchild_projection`]) — `project` adds the
    /// labels and annotations the operator reads itself, typically through [`prune::project`].
    #[must_use]
    pub fn engine_kinds(
        mut self,
        engines: &Engines,
        watch_of: impl Fn(&ChildKind) -> ChildWatch,
        project: fn(&mut DynamicObject, &Projection),
    ) -> Self {
        for kind in engines.child_kinds() {
            let projection = engines.child_projection(&kind);
            self = self.children_pruned(watch_of(&kind), move |child| project(child, &projection));
        }
        for kind in engines.grandchild_kinds() {
            let projection = engines.grandchild_projection(&kind);
            self = self.grandchildren(watch_of(&kind), move |object| project(object, &projection));
        }
        self
    }

    /// The prune function of the children of `resource`'s kind: its own, else the common one.
    fn child_prune(&self, resource: &ApiResource) -> Option<Arc<reflect::PruneFn>> {
        (self.kind_prunes.iter())
            .find(|(kind, _)| kind == resource)
            .map(|(_, prune)| prune.clone())
            .or_else(|| self.prune.clone())
    }

    /// Also watches grandchildren: objects of another kind that the children create and that
    /// carry the same parent labels (or annotation), such as the TaskRuns of a PipelineRun. They
    /// are cached in [`Context::grandchildren`], pruned by `prune` (same rules as
    /// [`Self::prune_children`]), and each change reconciles the parent, as a child's does.
    /// Like [`Self::children`], it may be called once per grandchild kind (each kind its own
    /// reflector, store and prune function); a later watch of the same kind replaces the
    /// earlier.
    #[must_use]
    pub fn grandchildren(
        mut self,
        watch: ChildWatch,
        prune: impl Fn(&mut DynamicObject) + Send + Sync + 'static,
    ) -> Self {
        let entry = (watch, Arc::new(prune) as Arc<reflect::PruneFn>);
        match self
            .grandchildren
            .iter_mut()
            .find(|(w, _)| w.resource == entry.0.resource)
        {
            Some(existing) => *existing = entry,
            None => self.grandchildren.push(entry),
        }
        self
    }

    /// Hot-reloads `store` every [`RuntimeSettings::template_poll`]: each reload is logged,
    /// counted in `framework_template_reloads_total{outcome}` and published as an Event
    /// (`Normal TemplateReloaded` / `Warning TemplateRejected`) on `event_reference` — or, when
    /// `None`, on this Pod (`POD_NAME`/`POD_NAMESPACE`), else on the Lease.
    #[must_use]
    pub fn templates(
        mut self,
        store: Arc<TemplateStore>,
        event_reference: Option<ObjectReference>,
    ) -> Self {
        self.templates = Some((store, event_reference));
        self
    }

    /// The registry `/metrics` will serve; register operator metrics before or after starting.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A token whose cancellation starts a graceful shutdown (what SIGTERM does in [`Self::run`]).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts the runtime in the background and returns once the HTTP endpoints listen.
    ///
    /// # Errors
    /// [`RuntimeError`] when a listener cannot bind, the metrics cannot be registered or the
    /// leader election settings are invalid.
    pub async fn start<D, E, F, Fut>(
        self,
        reconcile: F,
        data: D,
    ) -> Result<Running<K, D>, RuntimeError>
    where
        D: Send + Sync + 'static,
        E: std::error::Error + MetricLabel + Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<Context<K, D>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        if let Some(election) = &self.settings.leader_election {
            election.validate()?;
        }
        let (metrics, error_backoff) = register_metrics(&self.registry, &self.settings)?;
        let endpoints = Endpoints::bind(&self.settings).await?;
        let (health_addr, metrics_addr) = (endpoints.health_addr, endpoints.metrics_addr);
        let writers = Writers::new(&self.children, self.grandchildren.iter().map(|(w, _)| w));
        let (leading_tx, leading_rx) = watch::channel(self.settings.leader_election.is_none());
        let context =
            Arc::new(self.context(&writers, metrics, error_backoff, leading_rx.clone(), data));
        let probes = Arc::new(Probes::default());
        let triggers = Triggers::new(self.children.len(), self.grandchildren.len());
        let synced = CancellationToken::new();
        let background = self.spawn_background(writers, &triggers, &context, &probes, &synced);
        // The Lease: stopped (and released) only after the last reconcile finished.
        let election = start_election(&self.client, &self.settings, leading_tx, probes.clone());
        // The HTTP servers: stopped last.
        let servers = endpoints.serve(&self.registry, &probes);
        let shutdown = self.shutdown.clone();
        let terms = self.terms(context.clone(), reconcile, leading_rx, synced, triggers);
        let task = tokio::spawn(supervise(
            terms.run(),
            probes.clone(),
            election,
            servers,
            background,
        ));
        Ok(Running {
            context,
            probes,
            health_addr,
            metrics_addr,
            shutdown,
            task: Some(task),
        })
    }

    /// The context every reconcile receives, reading the caches `writers` fill.
    fn context<D>(
        &self,
        writers: &Writers<K>,
        metrics: FrameworkMetrics,
        error_backoff: ErrorBackoff<ObjectRef<K>>,
        leading: watch::Receiver<bool>,
        data: D,
    ) -> Context<K, D> {
        let settings = &self.settings;
        let identity = settings
            .leader_election
            .as_ref()
            .map_or_else(default_identity, |election| election.identity.clone());
        let reporter = Reporter {
            controller: settings.controller_name.clone(),
            instance: Some(identity.clone()),
        };
        let parent_index = match self.index.clone() {
            Some(key_of) => ParentIndex::new(move |object: &K| key_of(object)),
            None => ParentIndex::disabled(),
        };
        Context {
            client: self.client.clone(),
            parents: writers.parents.as_reader(),
            children: kind_stores(&writers.children),
            grandchildren: kind_stores(&writers.grandchildren),
            recorder: Recorder::new(self.client.clone(), reporter),
            registry: self.registry.clone(),
            metrics,
            error_backoff,
            templates: self.templates.as_ref().map(|(store, _)| store.clone()),
            parent_index: Arc::new(parent_index),
            error_events: events::ErrorEvents::new(
                self.client.clone(),
                settings.controller_name.clone(),
                identity.clone(),
            ),
            identity,
            data,
            leading,
        }
    }

    /// Spawns the tasks that run on every replica and simply stop with the runtime: the
    /// reflectors filling `writers`, the sync waiter cancelling `synced`, the leadership gauge
    /// and the template watcher.
    fn spawn_background<D>(
        &self,
        writers: Writers<K>,
        triggers: &Triggers<K>,
        context: &Arc<Context<K, D>>,
        probes: &Arc<Probes>,
        synced: &CancellationToken,
    ) -> JoinSet<()>
    where
        D: Send + Sync + 'static,
    {
        let mut background = JoinSet::new();
        background.spawn(critical(
            "parent reflector",
            probes.clone(),
            parent_reflector(
                &self.parents,
                self.settings.list_page_size,
                writers.parents,
                &triggers.parents,
                context,
            ),
        ));
        let children =
            (self.children.iter()).map(|watch| (watch, self.child_prune(&watch.resource)));
        let grandchildren =
            (self.grandchildren.iter()).map(|(watch, prune)| (watch, Some(prune.clone())));
        let reflectors = [
            (
                "child",
                children
                    .zip(writers.children)
                    .zip(&triggers.children)
                    .collect::<Vec<_>>(),
            ),
            (
                "grandchild",
                grandchildren
                    .zip(writers.grandchildren)
                    .zip(&triggers.grandchildren)
                    .collect(),
            ),
        ];
        let page_size = self.settings.list_page_size;
        for (role, kinds) in reflectors {
            for (((watch, prune), (_, writer)), sender) in kinds {
                let name = format!("{role} reflector ({})", reflector_kind(&watch.resource));
                background.spawn(critical(
                    name,
                    probes.clone(),
                    child_reflector(&self.client, watch, page_size, prune, writer, sender),
                ));
            }
        }
        background.spawn(wait_for_sync(context, probes.clone(), synced.clone()));
        background.spawn(follow_leadership(
            context.leading.clone(),
            context.metrics.leader.clone(),
        ));
        if let Some(watcher) = self.template_watcher(context) {
            background.spawn(watcher);
        }
        background
    }

    /// The template hot reload, when templates are configured; its Events go to the given
    /// object, else this Pod, else the Lease.
    fn template_watcher<D>(
        &self,
        context: &Context<K, D>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let (store, reference) = self.templates.as_ref()?;
        let reference = reference
            .clone()
            .or_else(pod_reference_from_env)
            .or_else(|| {
                self.settings
                    .leader_election
                    .as_ref()
                    .map(LeaderElectionSettings::lease_reference)
            });
        Some(watch_templates(
            store.clone(),
            self.settings.template_poll,
            reference,
            context.recorder.clone(),
            context.metrics.clone(),
        ))
    }

    /// The leader-only part: controller terms over `context`, started by `triggers`.
    fn terms<D, E, F, Fut>(
        self,
        context: Arc<Context<K, D>>,
        reconcile: F,
        leading: watch::Receiver<bool>,
        synced: CancellationToken,
        triggers: Triggers<K>,
    ) -> ControllerTerms<K, D, E, F>
    where
        D: Send + Sync + 'static,
        E: std::error::Error + MetricLabel + Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<Context<K, D>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let children = (self.children.into_iter().zip(triggers.children))
            .map(|(watch, sender)| (watch, sender, &context.children));
        let grandchildren = (self.grandchildren.into_iter().map(|(watch, _)| watch))
            .zip(triggers.grandchildren)
            .map(|(watch, sender)| (watch, sender, &context.grandchildren));
        // Every kind has its store: the stores were made from the same watches.
        let kinds = children
            .chain(grandchildren)
            .filter_map(|(watch, sender, stores)| {
                let store = stores.of(&watch.resource)?.clone();
                Some(terms::KindTrigger {
                    watch,
                    sender,
                    store,
                })
            })
            .collect();
        let catch_up = Arc::new(catch_up::CatchUp {
            own_writes: self.own_writes,
            store: context.parents.clone(),
            events: triggers.parents.clone(),
            within: catch_up::OWN_WRITE_WAIT,
        });
        ControllerTerms {
            context,
            reconcile: Arc::new(reconcile),
            catch_up,
            leading,
            shutdown: self.shutdown,
            synced,
            parent_tx: triggers.parents,
            kinds,
            concurrency: self.settings.concurrency,
            _error: PhantomData,
        }
    }

    /// Starts the runtime and runs it until SIGTERM, SIGINT or the [shutdown
    /// token](Self::shutdown_token), then shuts down gracefully.
    ///
    /// # Errors
    /// See [`Self::start`]; [`RuntimeError::Task`] if the runtime task panicked.
    pub async fn run<D, E, F, Fut>(self, reconcile: F, data: D) -> Result<(), RuntimeError>
    where
        D: Send + Sync + 'static,
        E: std::error::Error + MetricLabel + Send + Sync + 'static,
        F: Fn(Arc<K>, Arc<Context<K, D>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let running = self.start(reconcile, data).await?;
        let signals = tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received; finishing in-flight reconciles");
            shutdown.cancel();
        });
        let result = running.wait().await;
        signals.abort();
        result
    }
}

/// A started runtime. Dropping it kills the runtime at once, without releasing the Lease (like a
/// crash); call [`Running::shutdown`] for a graceful stop.
pub struct Running<K, D = ()>
where
    K: Resource<DynamicType = ()> + 'static,
{
    context: Arc<Context<K, D>>,
    probes: Arc<Probes>,
    health_addr: SocketAddr,
    metrics_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), RuntimeError>>>,
}

impl<K, D> Running<K, D>
where
    K: Resource<DynamicType = ()> + 'static,
{
    /// The context every reconcile receives (stores, metrics, operator data).
    pub fn context(&self) -> &Arc<Context<K, D>> {
        &self.context
    }

    /// The address `/healthz` and `/readyz` are served on.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The address `/metrics` is served on.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The probe state behind `/healthz` and `/readyz`.
    pub fn probes(&self) -> &Probes {
        &self.probes
    }

    /// Whether this replica currently leads.
    pub fn is_leader(&self) -> bool {
        self.context.is_leader()
    }

    /// The token that starts a graceful shutdown when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts a graceful shutdown and waits until it completed.
    ///
    /// # Errors
    /// [`RuntimeError::Task`] if the runtime task panicked.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the runtime stopped (after the shutdown token was cancelled).
    ///
    /// # Errors
    /// [`RuntimeError::Task`] if the runtime task panicked.
    pub async fn wait(mut self) -> Result<(), RuntimeError> {
        match self.task.take() {
            Some(task) => task
                .await
                .map_err(|error| RuntimeError::Task(error.to_string()))?,
            None => Ok(()),
        }
    }
}

impl<K, D> Drop for Running<K, D>
where
    K: Resource<DynamicType = ()> + 'static,
{
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Registers the framework's metrics and the error backoff's in `registry`.
fn register_metrics<K>(
    registry: &Registry,
    settings: &RuntimeSettings,
) -> Result<(FrameworkMetrics, ErrorBackoff<ObjectRef<K>>), RuntimeError>
where
    K: Resource<DynamicType = ()> + 'static,
{
    let metrics = FrameworkMetrics::register(registry)?;
    let error_backoff = ErrorBackoff::new(settings.error_backoff);
    error_backoff.register_metrics(registry)?;
    crate::phase::register_metrics(registry).map_err(|source| {
        crate::metrics::MetricError::new("framework_illegal_phase_transitions_total", source)
    })?;
    Ok((metrics, error_backoff))
}

/// The runtime's life once started: controller `terms` until shutdown, then the ordered stop —
/// reconciles have finished, then the Lease is released, then the HTTP servers stop.
async fn supervise(
    terms: impl Future<Output = ()>,
    probes: Arc<Probes>,
    (mut election, lease_stop): (JoinSet<()>, CancellationToken),
    (mut servers, servers_stop): (JoinSet<()>, CancellationToken),
    mut background: JoinSet<()>,
) -> Result<(), RuntimeError> {
    terms.await;
    probes.mark_stopping();
    tracing::info!("reconciles finished; releasing leadership");
    stop(lease_stop, &mut election).await;
    tracing::info!("stopping HTTP servers");
    stop(servers_stop, &mut servers).await;
    background.shutdown().await;
    tracing::info!("runtime stopped");
    Ok(())
}

/// The writers of the parent cache and of each child and grandchild kind's cache, filled by the
/// reflectors (kinds in the order of the operator's watches).
struct Writers<K: ParentResource> {
    parents: ParentWriter<K>,
    children: Vec<(ApiResource, ChildWriter)>,
    grandchildren: Vec<(ApiResource, ChildWriter)>,
}

impl<K: ParentResource> Writers<K> {
    fn new<'a>(
        children: impl IntoIterator<Item = &'a ChildWatch>,
        grandchildren: impl IntoIterator<Item = &'a ChildWatch>,
    ) -> Self {
        let writer = |watch: &ChildWatch| {
            let resource = watch.resource.clone();
            (resource.clone(), ChildWriter::new(resource))
        };
        Writers {
            parents: ParentWriter::default(),
            children: children.into_iter().map(writer).collect(),
            grandchildren: grandchildren.into_iter().map(writer).collect(),
        }
    }
}

/// The readers of `writers`, by kind.
fn kind_stores(writers: &[(ApiResource, ChildWriter)]) -> KindStores {
    KindStores::new(
        writers
            .iter()
            .map(|(resource, writer)| (resource.clone(), writer.as_reader())),
    )
}

/// The watch events the reflectors pass on to the controller terms: one channel for the parents
/// and one per child and grandchild kind.
struct Triggers<K> {
    parents: broadcast::Sender<Arc<frozen::Frozen<K>>>,
    children: Vec<broadcast::Sender<Arc<DynamicObject>>>,
    grandchildren: Vec<broadcast::Sender<Arc<DynamicObject>>>,
}

impl<K> Triggers<K> {
    fn new(children: usize, grandchildren: usize) -> Self {
        let channels = |n: usize| {
            (0..n)
                .map(|_| broadcast::channel(TRIGGER_BUFFER).0)
                .collect()
        };
        Triggers {
            parents: broadcast::channel(TRIGGER_BUFFER).0,
            children: channels(children),
            grandchildren: channels(grandchildren),
        }
    }
}

/// The bound health and metrics listeners (one, when both addresses are the same fixed one).
struct Endpoints {
    health: TcpListener,
    health_addr: SocketAddr,
    metrics: Option<TcpListener>,
    metrics_addr: SocketAddr,
}

impl Endpoints {
    async fn bind(settings: &RuntimeSettings) -> Result<Self, RuntimeError> {
        let health = bind("health", settings.health_addr).await?;
        let health_addr = local_addr("health", &health, settings.health_addr)?;
        let shared =
            settings.metrics_addr == settings.health_addr && settings.health_addr.port() != 0;
        if shared {
            return Ok(Endpoints {
                health,
                health_addr,
                metrics: None,
                metrics_addr: health_addr,
            });
        }
        let metrics = bind("metrics", settings.metrics_addr).await?;
        let metrics_addr = local_addr("metrics", &metrics, settings.metrics_addr)?;
        Ok(Endpoints {
            health,
            health_addr,
            metrics: Some(metrics),
            metrics_addr,
        })
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` until the returned token is cancelled.
    fn serve(self, registry: &Registry, probes: &Arc<Probes>) -> (JoinSet<()>, CancellationToken) {
        let stop = CancellationToken::new();
        let mut servers = JoinSet::new();
        let mut health_app = health::health_router(probes.clone());
        if let Some(listener) = self.metrics {
            servers.spawn(serve(
                "metrics",
                listener,
                health::metrics_router(registry.clone()),
                stop.clone(),
                probes.clone(),
            ));
        } else {
            health_app = health_app.merge(health::metrics_router(registry.clone()));
        }
        servers.spawn(serve(
            "health",
            self.health,
            health_app,
            stop.clone(),
            probes.clone(),
        ));
        (servers, stop)
    }
}

/// How a reflector's name shows a kind: `tekton.dev/v1 PipelineRun`, `v1 Pod`.
fn reflector_kind(resource: &ApiResource) -> String {
    format!("{} {}", resource.api_version, resource.kind)
}

/// The parent reflector: fills `writer` and the parent index, triggers reconciles, reports
/// undecodable objects and forgets the error backoff of parents that left.
fn parent_reflector<K, D>(
    watch: &ParentWatch,
    page_size: u32,
    writer: ParentWriter<K>,
    sender: &broadcast::Sender<Arc<frozen::Frozen<K>>>,
    context: &Arc<Context<K, D>>,
) -> impl Future<Output = ()> + Send + 'static
where
    K: ParentResource,
    D: Send + Sync + 'static,
{
    let api: Api<DeserializeGuard<K>> = match &watch.namespace {
        Some(namespace) => Api::namespaced(context.client.clone(), namespace),
        None => Api::all(context.client.clone()),
    };
    let config = list_config(watch.selector.as_deref(), page_size);
    let (report_ctx, forget_ctx) = (context.clone(), context.clone());
    reflect::reflect_parents(
        api,
        config,
        writer,
        context.parent_index.clone(),
        sender.clone(),
        move |object| report_invalid(&report_ctx, object),
        move |object: &K| {
            forget_ctx.error_backoff.reset(&ObjectRef::from_obj(object));
        },
    )
}

/// How a reflector watches: objects matching `selector` (every object when `None`), listed in
/// pages of `page_size`.
fn list_config(selector: Option<&str>, page_size: u32) -> watcher::Config {
    let config = watcher::Config::default().page_size(page_size);
    match selector {
        Some(selector) => config.labels(selector),
        None => config,
    }
}

/// The reflector of one child (or grandchild) kind.
fn child_reflector(
    client: &Client,
    watch: &ChildWatch,
    page_size: u32,
    prune: Option<Arc<reflect::PruneFn>>,
    writer: ChildWriter,
    sender: &broadcast::Sender<Arc<DynamicObject>>,
) -> BoxFuture<'static, ()> {
    let api: Api<DynamicObject> = match &watch.namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, &watch.resource),
        None => Api::all_with(client.clone(), &watch.resource),
    };
    let config = list_config(Some(&watch.selector), page_size);
    reflect::reflect_children(
        api,
        config,
        watch.resource.clone(),
        writer,
        sender.clone(),
        prune,
    )
    .boxed()
}

/// The one waiter on store readiness: everyone else waits on `synced`, cancelled once every
/// cache (the parents' and every child and grandchild kind's) completed its first list.
fn wait_for_sync<K, D>(
    context: &Arc<Context<K, D>>,
    probes: Arc<Probes>,
    synced: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let (parents, children, grandchildren) = (
        context.parents.clone(),
        context.children.clone(),
        context.grandchildren.clone(),
    );
    async move {
        if parents.wait_until_ready().await.is_ok()
            && children.wait_until_ready().await.is_ok()
            && grandchildren.wait_until_ready().await.is_ok()
        {
            tracing::info!("caches synced");
            probes.mark_synced();
            synced.cancel();
        }
    }
}

/// Cancels `token` and waits for every task of `tasks` to end.
async fn stop(token: CancellationToken, tasks: &mut JoinSet<()>) {
    token.cancel();
    while tasks.join_next().await.is_some() {}
}

/// Mirrors leadership into the `leader` gauge.
async fn follow_leadership(mut leading: watch::Receiver<bool>, gauge: prometheus::IntGauge) {
    loop {
        gauge.set(i64::from(*leading.borrow_and_update()));
        if leading.changed().await.is_err() {
            break;
        }
    }
}

/// Runs the Lease elector (or, without leader election, keeps `leading` at `true`) until the
/// returned token is cancelled.
fn start_election(
    client: &Client,
    settings: &RuntimeSettings,
    leading: watch::Sender<bool>,
    probes: Arc<Probes>,
) -> (JoinSet<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let mut election = JoinSet::new();
    if let Some(election_settings) = settings.leader_election.clone() {
        let elector = LeaderElector::new(client.clone(), election_settings);
        let stop = stop.clone();
        election.spawn(async move {
            if let Err(error) = elector.run(&leading, &stop).await {
                tracing::error!(%error, "leader election stopped");
                probes.mark_failed();
            }
        });
    } else {
        // Keep the sender alive: a closed channel would read as "not leading".
        let stop = stop.clone();
        election.spawn(async move {
            stop.cancelled().await;
            drop(leading);
        });
    }
    (election, stop)
}

/// Runs `task`; if it ever returns, the runtime is broken: log and fail `/healthz`.
async fn critical(name: impl Into<String>, probes: Arc<Probes>, task: impl Future<Output = ()>) {
    let name = name.into();
    task.await;
    tracing::error!(task = %name, "a runtime task ended unexpectedly");
    probes.mark_failed();
}

async fn bind(endpoint: &'static str, addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind {
            endpoint,
            addr,
            source,
        })
}

fn local_addr(
    endpoint: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, RuntimeError> {
    listener.local_addr().map_err(|source| RuntimeError::Bind {
        endpoint,
        addr,
        source,
    })
}

async fn serve(
    endpoint: &'static str,
    listener: TcpListener,
    app: axum::Router,
    stop: CancellationToken,
    probes: Arc<Probes>,
) {
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(endpoint, %error, "HTTP server failed");
        probes.mark_failed();
    }
}

/// Completes on SIGTERM or SIGINT (only SIGINT where SIGTERM cannot be listened for).
pub async fn shutdown_signal() {
    async fn ctrl_c() {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    () = ctrl_c() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT shuts down");
                ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::core::ObjectMeta;

    fn child(labels: &[(&str, &str)]) -> DynamicObject {
        let resource = ApiResource::erase::<ConfigMap>(&());
        let mut object = DynamicObject::new("c", &resource);
        object.metadata = ObjectMeta {
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        };
        object
    }

    #[test]
    fn children_map_to_parents_by_label() {
        let watch = ChildWatch {
            resource: ApiResource::erase::<ConfigMap>(&()),
            namespace: Some("children".into()),
            selector: "p/name".into(),
            parent_labels: ("p/name".into(), "p/namespace".into()),
            parent_name_annotation: None,
        };
        type Labels = &'static [(&'static str, &'static str)];
        type Case = (&'static str, Labels, Option<(&'static str, &'static str)>);
        let cases: [Case; 5] = [
            (
                "both labels",
                &[("p/name", "a"), ("p/namespace", "ns")],
                Some(("a", "ns")),
            ),
            ("name missing", &[("p/namespace", "ns")], None),
            ("namespace missing", &[("p/name", "a")], None),
            ("empty name", &[("p/name", ""), ("p/namespace", "ns")], None),
            ("unrelated labels", &[("app", "x")], None),
        ];
        for (name, labels, want) in cases {
            let got = watch.parent_of::<ConfigMap>(&child(labels));
            let want = want.map(|(n, ns)| ObjectRef::<ConfigMap>::new(n).within(ns));
            assert_eq!(got, want, "{name}");
        }
    }

    /// Both reflectors' watches carry the page size and the selector; the default page is the
    /// runtime's, not kube's 500.
    #[test]
    fn reflectors_list_in_pages_of_the_configured_size() {
        let config = list_config(Some("a=b"), 20);
        assert_eq!(config.page_size, Some(20));
        assert_eq!(config.label_selector.as_deref(), Some("a=b"));
        assert_eq!(list_config(None, 7).label_selector, None);
        assert_eq!(
            RuntimeSettings::new("x").list_page_size,
            LIST_PAGE_SIZE,
            "not kube's 500"
        );
    }

    #[test]
    fn each_kind_reflector_is_named_after_its_kind() {
        let pipelinerun = ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
            "tekton.dev",
            "v1",
            "PipelineRun",
        ));
        let pod = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        assert_eq!(reflector_kind(&pipelinerun), "tekton.dev/v1 PipelineRun");
        assert_eq!(reflector_kind(&pod), "v1 Pod");
    }

    #[test]
    fn a_parent_name_annotation_wins_over_the_shortened_name_label() {
        let watch = ChildWatch {
            resource: ApiResource::erase::<ConfigMap>(&()),
            namespace: Some("children".into()),
            selector: "p/name".into(),
            parent_labels: ("p/name".into(), "p/namespace".into()),
            parent_name_annotation: Some("p/name".into()),
        };
        let long = "a".repeat(200);
        let mut object = child(&[("p/name", "aaaa-0123456789abcdef"), ("p/namespace", "ns")]);
        object
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("p/name".into(), long.clone());
        assert_eq!(
            watch.parent_of::<ConfigMap>(&object),
            Some(ObjectRef::new(&long).within("ns"))
        );
        let unannotated = child(&[("p/name", "short"), ("p/namespace", "ns")]);
        assert_eq!(
            watch.parent_of::<ConfigMap>(&unannotated),
            Some(ObjectRef::new("short").within("ns")),
            "without the annotation the label is used"
        );
    }
}
