//! Reusable building blocks for Kubernetes reconcilers with declarative resource templates.
//!
//! An operator built on this crate is a *declaration*: its CRD types, one handler per phase, a
//! template directory for the child resource, a status mapping file and a config struct. The
//! primitives below carry everything else.
//!
//! # Start here
//!
//! * [`runtime::Operator`]: the process around one parent kind — watches, caches, leader election,
//!   error backoff, metrics, probes, Events, template hot reload, graceful shutdown. Its module
//!   doc has a complete minimal operator.
//! * [`app`]: the operator process around it — one `main` call for the command line (`run`,
//!   `render`, `crd`, `check-config`, `version`), layered configuration with live reload,
//!   logging and signals; the operator implements [`app::App`].
//! * `framework/examples/mirror.rs`: a whole operator (a ConfigMap mirror) on these primitives,
//!   run as a process by the integration tests; the worked example of `docs/architecture.md`.
//!
//! # The map
//!
//! | module | what it guarantees | entry point |
//! |---|---|---|
//! | [`app`] | one command line for every operator binary with fixed exit codes; configuration validated before anything runs and reloaded live, restart-only keys held back and named | [`app::main`], [`app::App`], [`app::AppConfig`], [`app::StartError`], [`app::OfflineError`] |
//! | [`runtime`] | one reconcile per object at a time, on the leader only; decisions from caches of parents, children and grandchildren; a failing object retried on its backoff schedule, not in a hot loop | [`runtime::Operator`] (`engine_kinds` watches every engine's kinds), [`runtime::Context`] (its lookups: `child_api`, `cached_child`, `owned_child`, `peers`, an engine's grandchildren) |
//! | [`template`] | child objects rendered from minijinja files that cannot read files or the environment, whose values can never change the YAML structure; hot reload keeps the last good revision | [`template::TemplateStore`], [`template::TemplateSet`] |
//! | [`status`] | a child's status read through declared JSONPath rules (phase, fields, classification, grandchildren), validated at load; evaluated once per reconcile into a reading that names the first failed and the first held grandchild, deserialized into the operator's types | [`status::StatusMapping`], [`status::Reading`], [`status::grandchildren`] |
//! | [`engine`] | pluggable child kinds as directories (a template, its status mapping, its cancel file), each loaded whole or refused naming engine and file; a started parent keeps its engine | [`engine::Engines`] |
//! | [`lock`] | one child per key at a time: the child's deterministic name is the lock; release and stale-lock breaking delete exactly the child judged; ownership by parent instance from declared keys; a failed child kept as a block until cleared | [`lock::Locks::claim`] (the whole acquire decision, across child kinds), [`lock::acquire`], [`lock::release`], [`lock::break_stale`], [`lock::OwnerKeys`], [`lock::BlockMarker`] |
//! | [`cancel`] | a running child cancelled on its parent's deletion by a declared merge patch, never twice; deletion waits a bounded grace period, then deletes with the declared propagation policy | [`cancel::CancelSpec`] |
//! | [`finalizer`] | cleanup runs before an object goes, once, idempotently under concurrent writers | [`finalizer::event`] |
//! | [`phase`] | a status enum with declared legal transitions; illegal ones are refused and counted | [`phase::Phase`], [`phase::transition`] |
//! | [`lifecycle`] | a handler's outcome committed by one status write (only when changed, with the resourceVersion read, phase change checked); its effects applied only after that write; the whole own-write check → finalizer → initial status → dispatch → commit pass, the initial status skipped when the first outcome can replace it | [`lifecycle::reconcile`], [`lifecycle::write_status`], [`lifecycle::Outcome`], [`lifecycle::ReconcileError`] |
//! | [`effect`] | a handler's Events, log lines, audit records and metric updates listed in its outcome and applied once, after its write, each through its sink (recorder, `tracing`, [`audit::Auditor`], the operator's metrics) | [`effect::Effect`], [`effect::Reporter`] |
//! | [`condition`] | `metav1.Condition` semantics: transition times kept while the status stays | [`condition::Conditions`] |
//! | [`own_writes`] | a reconcile handed a cache copy older than this process's own write waits for the newer one (in the runtime) or stands aside | [`own_writes::OwnWrites`] |
//! | [`pace`] | a child's progress mirrored into its parent at most once per interval, the latest progress written when the interval ends, a held status decided from by every later pass until written; everything else written at once | [`pace::Pace`], [`lifecycle::Outcome::progress`] |
//! | [`object_records`] | one record per object, changed atomically, pruned whenever the set doubles (the table under `own_writes` and `pace`) | [`object_records::ObjectRecords`] |
//! | [`backoff`] | exponential delays with jitter bounds; per-object error backoff | [`backoff::Backoff`], [`backoff::ErrorBackoff`] |
//! | [`config`] | layered configuration (defaults, file, environment) with errors naming key and layer; live reload keeping the last good value | [`config::load`], [`config::ConfigStore`] |
//! | [`audit`] | a bounded, batching audit sink (log or https with a bearer token) that never blocks a reconcile and counts what it drops | [`audit::Auditor`] |
//! | [`metrics`] | one call per metric, prefixed, with typed errors | [`metrics::Registrar`] |
//! | [`crd`] | an object's value types checked against its CRD's schema, the error naming the field; a custom object read from a file as `kubectl apply` takes it; the CRD printed as checked in | [`crd::read_object`], [`crd::crd_yaml`] |
//! | [`names`] | Kubernetes names and label values valid by construction, refused in the API server's words; Kubernaut's remediation target and its key | [`names::DnsSubdomain`], [`names::LabelValue`], [`names::target_key`] |
//! | [`duration`] | Go durations as Kubernetes writes them, and the configuration's human notation | [`duration::parse_go_duration`], [`duration::format_go_duration`] |
//! | [`string_enum`](mod@string_enum) | closed sets of wire names declared once | [`string_enum!`](macro@string_enum) |
//! | [`api_struct`](mod@api_struct) | API structs whose unset optional fields are left out, not written as `null` | [`api_struct!`](macro@api_struct) |
//! | [`validate`] | a spec checked at run time with every problem named by its field, hostile text quoted and shortened; bounded maps, stored sizes, bounded Go durations | [`validate::FieldErrors`], [`validate::MapBounds`] |
//! | [`yaml`] | YAML that YAML 1.1 (kubectl) and 1.2 readers read back as the same value | [`yaml::to_string`] |
//! | `testing` (feature `testing`) | call-sequence tests: a client over a scripted mock API server that checks each request's method and path and returns the bodies sent | `testing::Scenario` |
//! | [`annotation`] | one annotation set or removed on exactly the object read, never on a replacement of the same name | [`annotation::annotate_exact`] |
//! | [`image`] | OCI references pulled by digest: the tag (never a registry port) replaced, malformed digests refused | [`image::pulled_reference`] |
//! | [`glob`] | the one-wildcard patterns of classification rules and allowlists | [`glob::Glob`] |
//!
//! Every module's own documentation lists its guarantees, assumptions and caveats.
#![deny(missing_docs)]

pub mod annotation;
pub mod api_struct;
pub mod app;
pub mod audit;
pub mod backoff;
pub mod cancel;
pub mod condition;
pub mod config;
pub mod crd;
pub mod duration;
pub mod effect;
pub mod engine;
pub mod finalizer;
pub mod glob;
pub mod image;
pub mod lifecycle;
pub mod lock;
pub mod metrics;
pub mod names;
pub mod object_records;
pub mod own_writes;
pub mod pace;
pub mod phase;
pub mod runtime;
pub mod status;
pub mod string_enum;
pub mod template;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod validate;
pub mod yaml;
