//! Audit records of WorkflowExecution decisions, and the two sinks that carry them: `log` and
//! `http` (Kubernaut Data Storage's batch API).
//!
//! The reconciler builds one [`AuditEvent`] per audited step — a workflow started, completed,
//! failed or was skipped, or an execution block was cleared — and hands it to
//! [`Auditor::record`]. An event serializes to Kubernaut's audit envelope:
//!
//! | field | value |
//! |---|---|
//! | `event_type` | `workflowexecution.workflow.started` · `.completed` · `.failed` · `.skipped`, or `workflowexecution.block.cleared` |
//! | `event_timestamp` | RFC 3339 in UTC with exactly three fractional digits (milliseconds, truncated): `2025-03-01T12:00:00.250Z` |
//! | `event_category` | `workflow` |
//! | `event_action` | `started` · `completed` · `failed` · `skipped` · `cleared` |
//! | `outcome` | see [`AuditOutcome`]: started → `pending` (the run's result is not known yet), completed → `success`, failed → `failure`, skipped → `skipped`, cleared → `success` (the clearance took effect) |
//! | `actor_type`, `actor_id` | `service`, `workflowexecution-controller` |
//! | `resource_type`, `resource_id` | `WorkflowExecution`, the WFE's **name** (its namespace is the `namespace` field; Kubernaut's own controller and queries identify WFEs by name) |
//! | `namespace` | the WFE's namespace |
//! | `correlation_id` | `spec.remediationRequestRef.name`, or the WFE's name when that is unset or empty |
//! | `event_data` | [`AuditData`]: `workflow_id`, `target_resource`, `phase`, `container_image`, `execution_name`, `pipelinerun_name`, `started_at`, `completed_at`, `duration`, `failure_reason`, `failure_message`, `failed_task_name`, `skip_reason`, `skip_message`; a field without a value is **omitted**, never `null` |
//!
//! Sinks ([`AuditSink`] in `audit.sink`):
//! - `log` (the default): each event is one JSON line, emitted through `tracing` at `INFO` with
//!   the target [`LOG_TARGET`] (`audit`), so a log pipeline can route audit lines by target.
//! - `http`: events go into an in-memory buffer of `audit.bufferSize` events and a background
//!   task sends them as JSON arrays to `POST <audit.url>/api/v1/audit/events/batch` — a batch as
//!   soon as `audit.batchSize` events are waiting, and whatever is waiting every
//!   `audit.flushInterval`. A batch is tried [`HTTP_TRIES`] times, with backoff, on network errors
//!   and 5xx answers; a 4xx answer drops it at once. [`Auditor::shutdown`] sends what is buffered.
//!
//! Metrics, registered on the registry passed to [`Auditor::new`] (for either sink):
//! `workflowexecution_audit_events_buffered` (gauge: events accepted and not yet written or
//! dropped), `workflowexecution_audit_events_written_total` (events Data Storage accepted, or
//! lines logged), `workflowexecution_audit_events_dropped_total{reason}` (see [`DropReason`]),
//! `workflowexecution_audit_batches_failed_total` (batches that were not delivered).
//!
//! # Guarantees
//!
//! 1. [`Auditor::record`] never blocks and never waits for I/O: the `log` sink formats and emits
//!    one line; the `http` sink reserves a buffer slot with one atomic operation and
//!    `try_send`s into a bounded channel. Auditing can therefore never slow down or stall a
//!    reconcile, whatever Data Storage does.
//! 2. Memory is bounded: at most `audit.bufferSize` events are held, counting both the queue and
//!    the batch being sent. When the buffer is full the *newest* event (the one being recorded)
//!    is dropped; events already buffered keep their place.
//! 3. Every event handed to the `http` sink is accounted exactly once: it is counted as written
//!    when Data Storage answered 2xx to its batch, or as dropped with one [`DropReason`].
//!    `buffered` returns to 0 once everything is accounted.
//! 4. Batches hold at most `audit.batchSize` events, in the order they were recorded; a retry
//!    re-sends the identical body.
//! 5. [`Auditor::shutdown`] stops accepting events, sends everything buffered and returns within
//!    its timeout ([`SHUTDOWN_TIMEOUT`], or the one given to [`Auditor::shutdown_within`]); what
//!    could not be sent by then is counted as dropped (`shutdown`). Calling it again is a no-op.
//!
//! # Assumptions
//!
//! 1. An `http` [`Auditor`] is created inside a Tokio runtime (its sender task is spawned on
//!    it); otherwise [`Auditor::new`] returns [`AuditError::NoRuntime`].
//! 2. Data Storage stores a batch as a whole and answers 2xx only once it is stored; a 4xx means
//!    the batch will never be accepted, so retrying it would only delay the events behind it.
//! 3. The settings come from the operator's validated configuration; [`Auditor::new`] re-checks
//!    the ones the sender task depends on and the URL, so a hand-built [`AuditSettings`] cannot
//!    make it spin or panic.
//!
//! # Caveats
//!
//! 1. Delivery is at least once per attempt: if Data Storage stored a batch but its answer was
//!    lost or was a 5xx, the retry stores it again. The envelope has no event id to deduplicate.
//! 2. The buffer lives in memory: a crash loses it silently, and a shutdown that runs out of time
//!    drops (and counts) the rest.
//! 3. 408 and 429 are 4xx, so they drop the batch like any other 4xx.
//! 4. The `log` sink counts an event as written when it is handed to `tracing`; a subscriber
//!    filter that excludes the `audit` target discards audit lines without a trace.
//! 5. Drops are logged once per episode (the buffer filling up, a failed batch), not once per
//!    event, so a long Data Storage outage does not flood the operator's log; the counters carry
//!    the totals.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kubernaut_framework::backoff::Backoff;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

pub use crate::config::{AuditSettings, AuditSink};

/// The `tracing` target of the `log` sink's lines.
pub const LOG_TARGET: &str = "audit";
/// The path, below `audit.url`, that batches are posted to.
pub const BATCH_PATH: &str = "api/v1/audit/events/batch";
/// How often the `http` sink tries to send one batch before dropping it.
pub const HTTP_TRIES: u32 = 3;
/// How long [`Auditor::shutdown`] may take to send what is buffered.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The envelope's `event_category`.
pub const EVENT_CATEGORY: &str = "workflow";
/// The envelope's `actor_type`.
pub const ACTOR_TYPE: &str = "service";
/// The envelope's `actor_id`.
pub const ACTOR_ID: &str = "workflowexecution-controller";
/// The envelope's `resource_type`.
pub const RESOURCE_TYPE: &str = "WorkflowExecution";

/// Delays between tries of one batch: 250ms, then 500ms.
const RETRY_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    max: Duration::from_secs(2),
    max_exponent: 3,
};
/// The limit of one request, from connecting to the end of the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The limit of establishing a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long [`Auditor::shutdown_within`] waits past its deadline for the sender task to finish
/// its bookkeeping before giving up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Longest part of a rejecting answer's body quoted in the log.
const MAX_QUOTED_BODY: usize = 512;

/// What happened to a WorkflowExecution: the audited steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// The PipelineRun was created (or adopted) and the WFE is `Running`.
    Started,
    /// The PipelineRun succeeded and the WFE is `Completed`.
    Completed,
    /// The WFE is `Failed` (before or during execution).
    Failed,
    /// The WFE is `Skipped` (lock held, cooldown, backoff, previous execution failure).
    Skipped,
    /// The execution block of a failed WFE was cleared by annotation.
    BlockCleared,
}

impl AuditAction {
    /// Every action, for tables and tests.
    pub const ALL: [AuditAction; 5] = [
        AuditAction::Started,
        AuditAction::Completed,
        AuditAction::Failed,
        AuditAction::Skipped,
        AuditAction::BlockCleared,
    ];

    /// The envelope's `event_type`, e.g. `workflowexecution.workflow.started`.
    pub fn event_type(self) -> &'static str {
        match self {
            AuditAction::Started => "workflowexecution.workflow.started",
            AuditAction::Completed => "workflowexecution.workflow.completed",
            AuditAction::Failed => "workflowexecution.workflow.failed",
            AuditAction::Skipped => "workflowexecution.workflow.skipped",
            AuditAction::BlockCleared => "workflowexecution.block.cleared",
        }
    }

    /// The envelope's `event_action`, e.g. `started`.
    pub fn event_action(self) -> &'static str {
        match self {
            AuditAction::Started => "started",
            AuditAction::Completed => "completed",
            AuditAction::Failed => "failed",
            AuditAction::Skipped => "skipped",
            AuditAction::BlockCleared => "cleared",
        }
    }

    /// The envelope's `outcome` for this action.
    pub fn outcome(self) -> AuditOutcome {
        match self {
            AuditAction::Started => AuditOutcome::Pending,
            AuditAction::Completed | AuditAction::BlockCleared => AuditOutcome::Success,
            AuditAction::Failed => AuditOutcome::Failure,
            AuditAction::Skipped => AuditOutcome::Skipped,
        }
    }
}

/// The envelope's `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    /// `success`: the workflow completed, or a block clearance took effect.
    Success,
    /// `failure`: the workflow failed.
    Failure,
    /// `skipped`: the workflow was not run.
    Skipped,
    /// `pending`: the workflow started; its result is not known yet.
    Pending,
}

impl AuditOutcome {
    /// The wire value: `success`, `failure`, `skipped` or `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Skipped => "skipped",
            AuditOutcome::Pending => "pending",
        }
    }
}

/// The envelope's `event_data`. Every field is optional; a `None` field is left out of the JSON.
/// Times are RFC 3339 strings as in the WFE's status, `duration` as in `status.duration`
/// (`2m30s`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AuditData {
    /// `spec.workflowRef.workflowId`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// `spec.targetResource`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_resource: Option<String>,
    /// The WFE's phase after the audited step (`Running`, `Completed`, `Failed`, `Skipped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `spec.workflowRef.containerImage` (the Tekton bundle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_image: Option<String>,
    /// The WFE's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_name: Option<String>,
    /// The PipelineRun's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipelinerun_name: Option<String>,
    /// `status.startTime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `status.completionTime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    /// `status.duration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// `status.failureDetails.reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// `status.failureDetails.message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    /// `status.failureDetails.failedTaskName`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_task_name: Option<String>,
    /// `status.skipDetails.reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// `status.skipDetails.message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_message: Option<String>,
}

/// One audit record about one WorkflowExecution. Serializes to the envelope described in the
/// [module documentation](self); the constant envelope fields are not stored, so they cannot be
/// set wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// What happened: `event_type`, `event_action` and `outcome`.
    pub action: AuditAction,
    /// When it happened: `event_timestamp`.
    pub timestamp: jiff::Timestamp,
    /// The WFE's namespace: `namespace`.
    pub namespace: String,
    /// The WFE's name: `resource_id`.
    pub name: String,
    /// `correlation_id`.
    pub correlation_id: String,
    /// `event_data`.
    pub data: AuditData,
}

impl AuditEvent {
    /// An event about the WFE `namespace/name`, stamped now. `remediation_request` is
    /// `spec.remediationRequestRef.name`; it becomes the correlation id, or the WFE's name does
    /// when it is `None` or empty.
    pub fn new(
        action: AuditAction,
        namespace: impl Into<String>,
        name: impl Into<String>,
        remediation_request: Option<&str>,
        data: AuditData,
    ) -> AuditEvent {
        let name = name.into();
        let correlation_id = match remediation_request {
            Some(request) if !request.is_empty() => request.to_owned(),
            _ => name.clone(),
        };
        AuditEvent {
            action,
            timestamp: jiff::Timestamp::now(),
            namespace: namespace.into(),
            name,
            correlation_id,
            data,
        }
    }

    /// The same event stamped `timestamp` instead (replays, tests).
    pub fn at(mut self, timestamp: jiff::Timestamp) -> AuditEvent {
        self.timestamp = timestamp;
        self
    }

    /// `event_timestamp`: RFC 3339, UTC, milliseconds (truncated), e.g. `2025-03-01T12:00:00.250Z`.
    pub fn event_timestamp(&self) -> String {
        format!("{:.3}", self.timestamp)
    }

    /// The event as one JSON line (the `log` sink's output and one element of an `http` batch).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// The wire form of an [`AuditEvent`]: field order and names are the envelope's.
#[derive(Serialize)]
struct Envelope<'a> {
    event_type: &'static str,
    event_timestamp: String,
    event_category: &'static str,
    event_action: &'static str,
    outcome: &'static str,
    actor_type: &'static str,
    actor_id: &'static str,
    resource_type: &'static str,
    resource_id: &'a str,
    namespace: &'a str,
    correlation_id: &'a str,
    event_data: &'a AuditData,
}

impl Serialize for AuditEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Envelope {
            event_type: self.action.event_type(),
            event_timestamp: self.event_timestamp(),
            event_category: EVENT_CATEGORY,
            event_action: self.action.event_action(),
            outcome: self.action.outcome().as_str(),
            actor_type: ACTOR_TYPE,
            actor_id: ACTOR_ID,
            resource_type: RESOURCE_TYPE,
            resource_id: &self.name,
            namespace: &self.namespace,
            correlation_id: &self.correlation_id,
            event_data: &self.data,
        }
        .serialize(serializer)
    }
}

/// Why audit events were dropped: the `reason` label of
/// `workflowexecution_audit_events_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// `buffer_full`: the buffer held `audit.bufferSize` events; the new one was dropped.
    BufferFull,
    /// `rejected`: Data Storage answered the batch with a 4xx (or another non-retryable status).
    Rejected,
    /// `undeliverable`: every try of the batch met a network error or a 5xx.
    Undeliverable,
    /// `shutdown`: recorded after shutdown began, or still buffered when its timeout ran out.
    Shutdown,
    /// `unencodable`: the batch could not be serialized to JSON.
    Unencodable,
}

impl DropReason {
    /// Every reason; all are exported at 0 from the start.
    pub const ALL: [DropReason; 5] = [
        DropReason::BufferFull,
        DropReason::Rejected,
        DropReason::Undeliverable,
        DropReason::Shutdown,
        DropReason::Unencodable,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::BufferFull => "buffer_full",
            DropReason::Rejected => "rejected",
            DropReason::Undeliverable => "undeliverable",
            DropReason::Shutdown => "shutdown",
            DropReason::Unencodable => "unencodable",
        }
    }
}

/// Why an [`Auditor`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `audit.sink` is `http` but `audit.url` is empty.
    #[error("audit.url must be set when audit.sink is http")]
    MissingUrl,
    /// `audit.url` is not an absolute `http://` or `https://` URL.
    #[error("audit.url {url:?} is not an http:// or https:// base URL: {reason}")]
    InvalidUrl {
        /// The configured value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A batching setting the sender task cannot work with.
    #[error("audit.{key}: {reason}")]
    InvalidSettings {
        /// The key below `audit.` (camelCase, as in the config file).
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client of the `http` sink could not be built.
    #[error("building the HTTP client of the http audit sink failed: {0}")]
    Client(#[source] reqwest::Error),
    /// The `http` sink was created outside a Tokio runtime.
    #[error("the http audit sink must be created inside a Tokio runtime: {0}")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The audit metrics could not be registered (e.g. already registered on this registry).
    #[error("registering the audit metrics failed: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The sink's counters.
#[derive(Clone)]
struct AuditMetrics {
    buffered: IntGauge,
    written: IntCounter,
    dropped: IntCounterVec,
    batches_failed: IntCounter,
}

impl AuditMetrics {
    fn register(registry: &Registry) -> Result<AuditMetrics, prometheus::Error> {
        let metrics = AuditMetrics {
            buffered: IntGauge::with_opts(Opts::new(
                "workflowexecution_audit_events_buffered",
                "Audit events accepted by the sink and not yet written or dropped.",
            ))?,
            written: IntCounter::with_opts(Opts::new(
                "workflowexecution_audit_events_written_total",
                "Audit events written (accepted by Data Storage, or logged).",
            ))?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "workflowexecution_audit_events_dropped_total",
                    "Audit events dropped, by reason.",
                ),
                &["reason"],
            )?,
            batches_failed: IntCounter::with_opts(Opts::new(
                "workflowexecution_audit_batches_failed_total",
                "Audit batches that were not delivered (rejected, undeliverable, or cut off by shutdown).",
            ))?,
        };
        registry.register(Box::new(metrics.buffered.clone()))?;
        registry.register(Box::new(metrics.written.clone()))?;
        registry.register(Box::new(metrics.dropped.clone()))?;
        registry.register(Box::new(metrics.batches_failed.clone()))?;
        for reason in DropReason::ALL {
            metrics.dropped.with_label_values(&[reason.label()]);
        }
        Ok(metrics)
    }

    fn dropped(&self, reason: DropReason, events: usize) {
        self.dropped
            .with_label_values(&[reason.label()])
            .inc_by(events as u64);
    }
}

/// The audit sink the reconciler records to. Cheap to clone (one `Arc`); clones share the sink.
#[derive(Clone)]
pub struct Auditor {
    inner: Arc<Inner>,
}

struct Inner {
    metrics: AuditMetrics,
    sink: Sink,
}

enum Sink {
    Log,
    Http(HttpSink),
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = match &self.inner.sink {
            Sink::Log => "log".to_owned(),
            Sink::Http(http) => format!("http {}", http.shared.endpoint),
        };
        f.debug_struct("Auditor").field("sink", &sink).finish()
    }
}

impl Auditor {
    /// Builds the sink `settings.sink` names and registers its metrics on `registry`. For the
    /// `http` sink this checks the URL and batching settings, builds the HTTP client and spawns
    /// the sender task on the current Tokio runtime. Nothing is registered when it fails.
    pub fn new(settings: &AuditSettings, registry: &Registry) -> Result<Auditor, AuditError> {
        let sink = match settings.sink {
            AuditSink::Log => None,
            AuditSink::Http => Some(HttpPlan::prepare(settings)?),
        };
        let metrics = AuditMetrics::register(registry)?;
        let sink = match sink {
            None => Sink::Log,
            Some(plan) => Sink::Http(plan.start(metrics.clone())),
        };
        Ok(Auditor {
            inner: Arc::new(Inner { metrics, sink }),
        })
    }

    /// Records one event without blocking or awaiting anything: the `log` sink writes it now,
    /// the `http` sink buffers it (or drops it, counted, when the buffer is full or shutdown
    /// has begun).
    pub fn record(&self, event: AuditEvent) {
        match &self.inner.sink {
            Sink::Log => self.log(&event),
            Sink::Http(http) => http.enqueue(event),
        }
    }

    /// Stops the `http` sink: refuses new events, sends everything buffered and waits for it at
    /// most [`SHUTDOWN_TIMEOUT`]. A no-op for the `log` sink and on every call after the first.
    pub async fn shutdown(&self) {
        self.shutdown_within(SHUTDOWN_TIMEOUT).await;
    }

    /// [`Auditor::shutdown`] with its own time limit; what is still buffered when `timeout`
    /// runs out is dropped and counted (`shutdown`).
    pub async fn shutdown_within(&self, timeout: Duration) {
        if let Sink::Http(http) = &self.inner.sink {
            http.shutdown(timeout).await;
        }
    }

    fn log(&self, event: &AuditEvent) {
        match event.to_json() {
            Ok(line) => {
                tracing::info!(target: LOG_TARGET, "{line}");
                self.inner.metrics.written.inc();
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    event_type = event.action.event_type(),
                    namespace = %event.namespace,
                    name = %event.name,
                    "audit event could not be serialized; dropped"
                );
                self.inner.metrics.dropped(DropReason::Unencodable, 1);
            }
        }
    }
}

/// Everything the `http` sink needs, checked before anything is registered or spawned.
struct HttpPlan {
    endpoint: reqwest::Url,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    buffer_size: usize,
    batch_size: usize,
    flush_interval: Duration,
}

impl HttpPlan {
    fn prepare(settings: &AuditSettings) -> Result<HttpPlan, AuditError> {
        if settings.batch_size == 0 {
            return Err(AuditError::InvalidSettings {
                key: "batchSize",
                reason: "must be at least 1".to_owned(),
            });
        }
        if settings.buffer_size < settings.batch_size {
            return Err(AuditError::InvalidSettings {
                key: "bufferSize",
                reason: format!(
                    "{} is smaller than audit.batchSize ({})",
                    settings.buffer_size, settings.batch_size
                ),
            });
        }
        if settings.flush_interval.is_zero() {
            return Err(AuditError::InvalidSettings {
                key: "flushInterval",
                reason: "must be longer than 0s".to_owned(),
            });
        }
        let endpoint = batch_endpoint(&settings.url)?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!(
                "workflowexecution-controller/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(AuditError::Client)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(AuditError::NoRuntime)?;
        Ok(HttpPlan {
            endpoint,
            client,
            runtime,
            buffer_size: settings.buffer_size,
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
        })
    }

    fn start(self, metrics: AuditMetrics) -> HttpSink {
        let (tx, rx) = mpsc::channel(self.buffer_size);
        let (stop_tx, stop_rx) = watch::channel(None);
        let shared = Arc::new(Shared {
            endpoint: self.endpoint,
            capacity: self.buffer_size,
            pending: AtomicUsize::new(0),
            full_reported: AtomicBool::new(false),
            metrics,
        });
        let sender = Sender {
            rx,
            stop: stop_rx,
            client: self.client,
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            shared: shared.clone(),
        };
        let task = self.runtime.spawn(sender.run());
        HttpSink {
            tx,
            stop: stop_tx,
            closing: AtomicBool::new(false),
            task: Mutex::new(Some(task)),
            shared,
        }
    }
}

/// `<url>/api/v1/audit/events/batch`, keeping any path prefix of `url`.
fn batch_endpoint(url: &str) -> Result<reqwest::Url, AuditError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(AuditError::MissingUrl);
    }
    let invalid = |reason: String| AuditError::InvalidUrl {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = reqwest::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "the scheme is {:?}, not http or https",
            endpoint.scheme()
        )));
    }
    if endpoint.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host".to_owned()));
    }
    let path = format!("{}/{BATCH_PATH}", endpoint.path().trim_end_matches('/'));
    endpoint.set_path(&path);
    Ok(endpoint)
}

/// State the recording side and the sender task share.
struct Shared {
    endpoint: reqwest::Url,
    capacity: usize,
    /// Events accepted and not yet written or dropped: queued plus the batch in flight.
    pending: AtomicUsize,
    /// Whether the current full-buffer episode was already logged.
    full_reported: AtomicBool,
    metrics: AuditMetrics,
}

impl Shared {
    /// Takes a buffer slot, unless all `capacity` are taken.
    fn reserve(&self) -> bool {
        let reserved = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if reserved {
            self.metrics.buffered.inc();
        }
        reserved
    }

    /// Gives back `events` slots.
    fn release(&self, events: usize) {
        // Saturating: a slot is never released twice, but an underflow must not wrap the gauge.
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(events))
            });
        self.metrics.buffered.sub(events as i64);
        if self.full_reported.swap(false, Ordering::AcqRel) {
            tracing::info!(
                capacity = self.capacity,
                "audit buffer has room again; accepting events"
            );
        }
    }

    fn drop_events(&self, reason: DropReason, events: usize) {
        self.metrics.dropped(reason, events);
    }
}

/// The recording side of the `http` sink.
struct HttpSink {
    tx: mpsc::Sender<AuditEvent>,
    /// `Some(deadline)` once shutdown began: the sender task must be done by then.
    stop: watch::Sender<Option<Instant>>,
    closing: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl HttpSink {
    fn enqueue(&self, event: AuditEvent) {
        let shared = &self.shared;
        if self.closing.load(Ordering::Acquire) {
            shared.drop_events(DropReason::Shutdown, 1);
            return;
        }
        if !shared.reserve() {
            shared.drop_events(DropReason::BufferFull, 1);
            if !shared.full_reported.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    capacity = shared.capacity,
                    endpoint = %shared.endpoint,
                    "audit buffer is full; dropping new audit events until it drains"
                );
            }
            return;
        }
        if let Err(error) = self.tx.try_send(event) {
            shared.release(1);
            let reason = match error {
                // Unreachable while slots bound the queue, but never worth a panic.
                mpsc::error::TrySendError::Full(_) => DropReason::BufferFull,
                mpsc::error::TrySendError::Closed(_) => DropReason::Shutdown,
            };
            shared.drop_events(reason, 1);
        }
    }

    async fn shutdown(&self, timeout: Duration) {
        self.closing.store(true, Ordering::Release);
        let now = Instant::now();
        // A timeout too large for the clock means "no limit" in practice: a year.
        let deadline = now
            .checked_add(timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        self.stop.send_if_modified(|stop| {
            if stop.is_none() {
                *stop = Some(deadline);
                true
            } else {
                false
            }
        });
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut task) = task else {
            return;
        };
        match tokio::time::timeout_at(deadline + SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::error!(%error, "the audit sender task ended abnormally");
                self.account_abandoned();
            }
            Err(_) => {
                task.abort();
                tracing::error!("the audit sender task did not stop in time; abandoned");
                self.account_abandoned();
            }
        }
    }

    /// Counts whatever a sender task that did not finish left behind as dropped.
    fn account_abandoned(&self) {
        let left = self.shared.pending.load(Ordering::Acquire);
        if left > 0 {
            self.shared.drop_events(DropReason::Shutdown, left);
            self.shared.release(left);
        }
    }
}

/// The sender task of the `http` sink: owns the queue's receiving end and the batching.
struct Sender {
    rx: mpsc::Receiver<AuditEvent>,
    stop: watch::Receiver<Option<Instant>>,
    client: reqwest::Client,
    batch_size: usize,
    flush_interval: Duration,
    shared: Arc<Shared>,
}

/// What woke the sender task.
enum Wake {
    Stop,
    Received(usize),
    Tick,
}

impl Sender {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut tick =
            tokio::time::interval_at(Instant::now() + self.flush_interval, self.flush_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let room = self.batch_size - batch.len();
            let wake = tokio::select! {
                biased;
                () = stop_requested(&mut self.stop) => Wake::Stop,
                received = self.rx.recv_many(&mut batch, room) => Wake::Received(received),
                _ = tick.tick() => Wake::Tick,
            };
            match wake {
                // No sender left (every Auditor dropped) also ends the loop: flush and stop.
                Wake::Stop | Wake::Received(0) => break,
                Wake::Received(_) if batch.len() >= self.batch_size => {
                    self.deliver(&mut batch).await;
                }
                Wake::Received(_) => {}
                Wake::Tick if !batch.is_empty() => self.deliver(&mut batch).await,
                Wake::Tick => {}
            }
        }
        // Flush: refuse new events (record counts them as shutdown drops), send what is queued.
        self.rx.close();
        loop {
            while batch.len() < self.batch_size {
                match self.rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.deliver(&mut batch).await;
        }
    }

    /// Sends one batch and accounts every event in it; leaves `batch` empty.
    async fn deliver(&self, batch: &mut Vec<AuditEvent>) {
        let events = batch.len();
        let result = match serde_json::to_vec(&*batch) {
            Ok(body) => {
                tokio::select! {
                    biased;
                    () = deadline_passed(self.stop.clone()) => Err(DropReason::Shutdown),
                    result = self.post(body, events) => result,
                }
            }
            Err(error) => {
                tracing::error!(%error, events, "audit batch could not be serialized; dropped");
                Err(DropReason::Unencodable)
            }
        };
        match result {
            Ok(()) => self.shared.metrics.written.inc_by(events as u64),
            Err(reason) => {
                if reason == DropReason::Shutdown {
                    tracing::warn!(
                        events,
                        "audit shutdown timeout reached; batch not delivered, dropped"
                    );
                }
                self.shared.drop_events(reason, events);
                self.shared.metrics.batches_failed.inc();
            }
        }
        batch.clear();
        self.shared.release(events);
    }

    /// Posts `body` up to [`HTTP_TRIES`] times; `Err` names why the batch is dropped.
    async fn post(&self, body: Vec<u8>, events: usize) -> Result<(), DropReason> {
        let endpoint = &self.shared.endpoint;
        let mut last_error = String::new();
        for attempt in 1..=HTTP_TRIES {
            let response = self
                .client
                .post(endpoint.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) if response.status().is_server_error() => {
                    last_error = format!("Data Storage answered {}", response.status());
                }
                Ok(response) => {
                    let status = response.status();
                    let answer = response.text().await.unwrap_or_default();
                    tracing::warn!(
                        %endpoint,
                        %status,
                        events,
                        answer = %truncate(&answer, MAX_QUOTED_BODY),
                        "Data Storage rejected an audit batch; dropped"
                    );
                    return Err(DropReason::Rejected);
                }
                Err(error) => last_error = error.to_string(),
            }
            if attempt < HTTP_TRIES {
                tracing::debug!(%endpoint, attempt, error = %last_error, "audit batch not delivered; retrying");
                tokio::time::sleep(RETRY_BACKOFF.delay(attempt)).await;
            }
        }
        tracing::warn!(
            %endpoint,
            events,
            tries = HTTP_TRIES,
            error = %last_error,
            "audit batch could not be delivered; dropped"
        );
        Err(DropReason::Undeliverable)
    }
}

/// Resolves once shutdown was requested, or once no one can request it any more.
async fn stop_requested(stop: &mut watch::Receiver<Option<Instant>>) {
    loop {
        if stop.borrow_and_update().is_some() || stop.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves when the shutdown deadline has passed; never when no shutdown was requested.
async fn deadline_passed(mut stop: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *stop.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if stop.changed().await.is_err() {
            // Every Auditor is gone without a shutdown: flush without a deadline.
            std::future::pending::<()>().await;
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, VecDeque};
    use std::io::Write;

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    fn ts(second: i64, nanosecond: i32) -> jiff::Timestamp {
        jiff::Timestamp::new(second, nanosecond).unwrap()
    }

    fn full_data() -> AuditData {
        AuditData {
            workflow_id: Some("restart-deployment".into()),
            target_resource: Some("payment/deployment/payment-api".into()),
            phase: Some("Failed".into()),
            container_image: Some("registry.example/kubernaut/workflows:restart@sha256:abc".into()),
            execution_name: Some("wfe-1".into()),
            pipelinerun_name: Some("wfe-cf0cc089293b1165".into()),
            started_at: Some("2025-03-01T12:00:00Z".into()),
            completed_at: Some("2025-03-01T12:02:30Z".into()),
            duration: Some("2m30s".into()),
            failure_reason: Some("OOMKilled".into()),
            failure_message: Some("step \"restart\" was OOM killed".into()),
            failed_task_name: Some("wfe-cf0cc089293b1165-restart".into()),
            skip_reason: Some("ResourceBusy".into()),
            skip_message: Some("another workflow runs on the target".into()),
        }
    }

    /// An event whose `execution_name` tells events apart in batches.
    fn numbered(i: usize) -> AuditEvent {
        AuditEvent::new(
            AuditAction::Started,
            "payment",
            format!("wfe-{i}"),
            Some("rr-1"),
            AuditData {
                execution_name: Some(format!("e{i}")),
                ..AuditData::default()
            },
        )
    }

    fn http_settings(
        url: &str,
        buffer_size: usize,
        batch_size: usize,
        flush: Duration,
    ) -> AuditSettings {
        AuditSettings {
            sink: AuditSink::Http,
            url: url.to_owned(),
            buffer_size,
            batch_size,
            flush_interval: flush,
        }
    }

    /// A counter or gauge from the registry; `reason` selects a dropped_total series.
    fn metric(registry: &Registry, name: &str, reason: Option<&str>) -> f64 {
        let family = registry
            .gather()
            .into_iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("metric {name} is not registered"));
        let series = family
            .get_metric()
            .iter()
            .find(|m| {
                reason.is_none_or(|r| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == "reason" && l.value() == r)
                })
            })
            .unwrap_or_else(|| panic!("metric {name} has no series {reason:?}"));
        if name.ends_with("_total") {
            series.get_counter().value()
        } else {
            series.get_gauge().value()
        }
    }

    fn written(registry: &Registry) -> f64 {
        metric(
            registry,
            "workflowexecution_audit_events_written_total",
            None,
        )
    }

    fn dropped(registry: &Registry, reason: DropReason) -> f64 {
        metric(
            registry,
            "workflowexecution_audit_events_dropped_total",
            Some(reason.label()),
        )
    }

    fn dropped_total(registry: &Registry) -> f64 {
        DropReason::ALL.iter().map(|r| dropped(registry, *r)).sum()
    }

    fn buffered(registry: &Registry) -> f64 {
        metric(registry, "workflowexecution_audit_events_buffered", None)
    }

    fn failed_batches(registry: &Registry) -> f64 {
        metric(
            registry,
            "workflowexecution_audit_batches_failed_total",
            None,
        )
    }

    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// One request as Data Storage saw it.
    #[derive(Clone, Debug)]
    struct Received {
        content_type: Option<String>,
        body: serde_json::Value,
        answered: u16,
    }

    /// A stand-in for Data Storage's batch endpoint: answers from a script of status codes,
    /// then 201, and keeps every request. An answer waits while a test holds `gate`.
    #[derive(Clone, Default)]
    struct Receiver {
        script: Arc<Mutex<VecDeque<u16>>>,
        requests: Arc<Mutex<Vec<Received>>>,
        gate: Arc<tokio::sync::Mutex<()>>,
    }

    impl Receiver {
        async fn start(script: &[u16]) -> (Receiver, String) {
            let receiver = Receiver {
                script: Arc::new(Mutex::new(script.iter().copied().collect())),
                ..Receiver::default()
            };
            let app = Router::new()
                .route("/api/v1/audit/events/batch", post(Receiver::handle))
                .with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (receiver, url)
        }

        async fn handle(
            State(receiver): State<Receiver>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let answered = receiver.script.lock().unwrap().pop_front().unwrap_or(201);
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            receiver.requests.lock().unwrap().push(Received {
                content_type,
                body,
                answered,
            });
            let _open = receiver.gate.lock().await;
            StatusCode::from_u16(answered).unwrap()
        }

        fn requests(&self) -> Vec<Received> {
            self.requests.lock().unwrap().clone()
        }

        /// The `execution_name`s of each batch, in order.
        fn batches(&self) -> Vec<Vec<String>> {
            self.requests()
                .iter()
                .map(|r| {
                    r.body
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| {
                            e["event_data"]["execution_name"]
                                .as_str()
                                .unwrap()
                                .to_owned()
                        })
                        .collect()
                })
                .collect()
        }
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("e{i}")).collect()
    }

    #[test]
    fn envelope_golden() {
        let event = AuditEvent::new(
            AuditAction::Failed,
            "payment",
            "wfe-1",
            Some("rr-42"),
            full_data(),
        )
        .at(ts(1_740_830_550, 250_999_999));
        let golden = r#"{
  "event_type": "workflowexecution.workflow.failed",
  "event_timestamp": "2025-03-01T12:02:30.250Z",
  "event_category": "workflow",
  "event_action": "failed",
  "outcome": "failure",
  "actor_type": "service",
  "actor_id": "workflowexecution-controller",
  "resource_type": "WorkflowExecution",
  "resource_id": "wfe-1",
  "namespace": "payment",
  "correlation_id": "rr-42",
  "event_data": {
    "workflow_id": "restart-deployment",
    "target_resource": "payment/deployment/payment-api",
    "phase": "Failed",
    "container_image": "registry.example/kubernaut/workflows:restart@sha256:abc",
    "execution_name": "wfe-1",
    "pipelinerun_name": "wfe-cf0cc089293b1165",
    "started_at": "2025-03-01T12:00:00Z",
    "completed_at": "2025-03-01T12:02:30Z",
    "duration": "2m30s",
    "failure_reason": "OOMKilled",
    "failure_message": "step \"restart\" was OOM killed",
    "failed_task_name": "wfe-cf0cc089293b1165-restart",
    "skip_reason": "ResourceBusy",
    "skip_message": "another workflow runs on the target"
  }
}"#;
        assert_eq!(serde_json::to_string_pretty(&event).unwrap(), golden);
        // The log line is the same document on one line.
        let line = event.to_json().unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap(),
            serde_json::from_str::<serde_json::Value>(golden).unwrap()
        );
    }

    #[test]
    fn actions_map_to_type_action_and_outcome() {
        let cases = [
            (
                AuditAction::Started,
                "workflowexecution.workflow.started",
                "started",
                "pending",
            ),
            (
                AuditAction::Completed,
                "workflowexecution.workflow.completed",
                "completed",
                "success",
            ),
            (
                AuditAction::Failed,
                "workflowexecution.workflow.failed",
                "failed",
                "failure",
            ),
            (
                AuditAction::Skipped,
                "workflowexecution.workflow.skipped",
                "skipped",
                "skipped",
            ),
            (
                AuditAction::BlockCleared,
                "workflowexecution.block.cleared",
                "cleared",
                "success",
            ),
        ];
        assert_eq!(cases.len(), AuditAction::ALL.len());
        for (action, event_type, event_action, outcome) in cases {
            let json = serde_json::to_value(AuditEvent::new(
                action,
                "ns",
                "wfe",
                None,
                AuditData::default(),
            ))
            .unwrap();
            assert_eq!(json["event_type"], event_type, "{action:?}");
            assert_eq!(json["event_action"], event_action, "{action:?}");
            assert_eq!(json["outcome"], outcome, "{action:?}");
            assert_eq!(json["event_category"], "workflow", "{action:?}");
        }
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let cases = [
            (ts(1_740_830_400, 0), "2025-03-01T12:00:00.000Z"),
            (ts(1_740_830_400, 1_000_000), "2025-03-01T12:00:00.001Z"),
            (ts(1_740_830_400, 123_456_789), "2025-03-01T12:00:00.123Z"),
            (ts(1_740_830_400, 999_999_999), "2025-03-01T12:00:00.999Z"),
            (ts(0, 0), "1970-01-01T00:00:00.000Z"),
        ];
        for (timestamp, expected) in cases {
            let event = numbered(0).at(timestamp);
            assert_eq!(event.event_timestamp(), expected);
            assert_eq!(
                serde_json::to_value(&event).unwrap()["event_timestamp"],
                expected
            );
        }
        // A fresh event is stamped now and parses back as RFC 3339.
        let before = jiff::Timestamp::now();
        let stamped: jiff::Timestamp = numbered(0).event_timestamp().parse().unwrap();
        assert!(stamped.as_millisecond() >= before.as_millisecond());
    }

    #[test]
    fn correlation_id_falls_back_to_the_wfe_name() {
        let cases = [(Some("rr-7"), "rr-7"), (None, "wfe-9"), (Some(""), "wfe-9")];
        for (request, expected) in cases {
            let event = AuditEvent::new(
                AuditAction::Started,
                "ns",
                "wfe-9",
                request,
                AuditData::default(),
            );
            assert_eq!(event.correlation_id, expected, "{request:?}");
            let json = serde_json::to_value(&event).unwrap();
            assert_eq!(json["correlation_id"], expected);
            assert_eq!(json["resource_id"], "wfe-9");
        }
    }

    #[test]
    fn absent_event_data_fields_are_omitted() {
        let event = AuditEvent::new(
            AuditAction::Skipped,
            "ns",
            "wfe",
            None,
            AuditData {
                workflow_id: Some("w".into()),
                skip_reason: Some("ResourceBusy".into()),
                ..AuditData::default()
            },
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json["event_data"],
            serde_json::json!({"workflow_id": "w", "skip_reason": "ResourceBusy"})
        );
        let empty = serde_json::to_value(AuditEvent::new(
            AuditAction::Started,
            "ns",
            "wfe",
            None,
            AuditData::default(),
        ))
        .unwrap();
        assert_eq!(empty["event_data"], serde_json::json!({}));
    }

    #[test]
    fn batch_endpoint_keeps_the_base_path() {
        let cases: [(&str, Result<&str, &str>); 8] = [
            (
                "http://data-storage:8080",
                Ok("http://data-storage:8080/api/v1/audit/events/batch"),
            ),
            (
                "http://data-storage:8080/",
                Ok("http://data-storage:8080/api/v1/audit/events/batch"),
            ),
            (
                "  https://ds.example/storage/ ",
                Ok("https://ds.example/storage/api/v1/audit/events/batch"),
            ),
            ("", Err("must be set")),
            ("   ", Err("must be set")),
            ("ftp://ds", Err("not http or https")),
            ("data-storage:8080", Err("not http or https")),
            ("not a url", Err("relative URL")),
        ];
        for (url, expected) in cases {
            match (batch_endpoint(url), expected) {
                (Ok(endpoint), Ok(expected)) => assert_eq!(endpoint.as_str(), expected, "{url:?}"),
                (Err(error), Err(fragment)) => {
                    assert!(error.to_string().contains(fragment), "{url:?}: {error}")
                }
                (got, expected) => panic!("{url:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[tokio::test]
    async fn invalid_settings_are_refused_and_register_nothing() {
        let ok = http_settings("http://127.0.0.1:9", 100, 10, Duration::from_secs(1));
        let cases: Vec<(AuditSettings, &str)> = vec![
            (
                AuditSettings {
                    url: String::new(),
                    ..ok.clone()
                },
                "audit.url must be set",
            ),
            (
                AuditSettings {
                    url: "ftp://x".into(),
                    ..ok.clone()
                },
                "audit.url \"ftp://x\"",
            ),
            (
                AuditSettings {
                    batch_size: 0,
                    ..ok.clone()
                },
                "audit.batchSize",
            ),
            (
                AuditSettings {
                    buffer_size: 5,
                    ..ok.clone()
                },
                "audit.bufferSize",
            ),
            (
                AuditSettings {
                    flush_interval: Duration::ZERO,
                    ..ok.clone()
                },
                "audit.flushInterval",
            ),
        ];
        for (settings, fragment) in cases {
            let registry = Registry::new();
            let error = Auditor::new(&settings, &registry).unwrap_err();
            assert!(
                error.to_string().contains(fragment),
                "{settings:?}: {error}"
            );
            assert!(
                registry.gather().is_empty(),
                "{settings:?} registered metrics"
            );
        }
        // A log sink needs no URL; an http one is fine with one.
        let registry = Registry::new();
        Auditor::new(&AuditSettings::default(), &registry).unwrap();
        Auditor::new(&ok, &Registry::new())
            .unwrap()
            .shutdown()
            .await;
        // The same registry twice is a metrics error, not a panic.
        let error = Auditor::new(&AuditSettings::default(), &registry).unwrap_err();
        assert!(matches!(error, AuditError::Metrics(_)), "{error}");
    }

    #[test]
    fn http_sink_needs_a_runtime_and_log_sink_does_not() {
        let settings = http_settings("http://127.0.0.1:9", 100, 10, Duration::from_secs(1));
        let error = Auditor::new(&settings, &Registry::new()).unwrap_err();
        assert!(matches!(error, AuditError::NoRuntime(_)), "{error}");
        Auditor::new(&AuditSettings::default(), &Registry::new()).unwrap();
    }

    #[test]
    fn metrics_are_registered_with_every_drop_reason_at_zero() {
        let registry = Registry::new();
        let _auditor = Auditor::new(&AuditSettings::default(), &registry).unwrap();
        let names: BTreeSet<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert_eq!(
            names,
            BTreeSet::from([
                "workflowexecution_audit_batches_failed_total".to_owned(),
                "workflowexecution_audit_events_buffered".to_owned(),
                "workflowexecution_audit_events_dropped_total".to_owned(),
                "workflowexecution_audit_events_written_total".to_owned(),
            ])
        );
        for reason in DropReason::ALL {
            assert_eq!(dropped(&registry, reason), 0.0, "{reason:?}");
        }
    }

    /// A `tracing` writer that keeps everything written to it.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn log_sink_writes_one_json_line_per_event_at_info_on_the_audit_target() {
        let registry = Registry::new();
        let auditor = Auditor::new(&AuditSettings::default(), &registry).unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(true)
            .with_max_level(tracing::Level::INFO)
            .finish();
        let events = [
            AuditEvent::new(
                AuditAction::Started,
                "payment",
                "wfe-1",
                Some("rr-1"),
                full_data(),
            ),
            AuditEvent::new(
                AuditAction::Completed,
                "payment",
                "wfe-1",
                Some("rr-1"),
                AuditData::default(),
            ),
        ];
        tracing::subscriber::with_default(subscriber, || {
            for event in &events {
                auditor.record(event.clone());
            }
        });
        let output = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.len(), events.len(), "{output}");
        for (line, event) in lines.iter().zip(&events) {
            let (prefix, json) = line
                .split_once(" audit: ")
                .unwrap_or_else(|| panic!("{line}"));
            assert!(prefix.contains("INFO"), "{line}");
            let logged: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(logged, serde_json::to_value(event).unwrap());
        }
        assert_eq!(written(&registry), 2.0);
        assert_eq!(buffered(&registry), 0.0);
    }

    #[tokio::test]
    async fn http_sink_delivers_started_and_completed_with_every_envelope_field() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 100, 2, Duration::from_secs(3600)),
            &registry,
        )
        .unwrap();
        let events = [
            AuditEvent::new(
                AuditAction::Started,
                "payment",
                "wfe-1",
                Some("rr-1"),
                full_data(),
            ),
            AuditEvent::new(
                AuditAction::Completed,
                "payment",
                "wfe-1",
                Some("rr-1"),
                full_data(),
            ),
        ];
        for event in &events {
            auditor.record(event.clone());
        }
        eventually("one batch", || !receiver.requests().is_empty()).await;
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            requests[0].content_type.as_deref(),
            Some("application/json")
        );
        let batch = requests[0].body.as_array().unwrap();
        assert_eq!(batch.len(), 2);
        let envelope_keys = BTreeSet::from([
            "event_type",
            "event_timestamp",
            "event_category",
            "event_action",
            "outcome",
            "actor_type",
            "actor_id",
            "resource_type",
            "resource_id",
            "namespace",
            "correlation_id",
            "event_data",
        ]);
        for (sent, event) in batch.iter().zip(&events) {
            let keys: BTreeSet<&str> = sent
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, envelope_keys);
            assert_eq!(sent["event_data"].as_object().unwrap().len(), 14);
            assert_eq!(*sent, serde_json::to_value(event).unwrap());
        }
        assert_eq!(batch[0]["event_type"], "workflowexecution.workflow.started");
        assert_eq!(
            batch[1]["event_type"],
            "workflowexecution.workflow.completed"
        );
        eventually("written counted", || written(&registry) == 2.0).await;
        assert_eq!(buffered(&registry), 0.0);
        assert_eq!(dropped_total(&registry), 0.0);
        auditor.shutdown().await;
    }

    #[tokio::test]
    async fn batches_are_cut_at_batch_size() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 100, 3, Duration::from_secs(3600)),
            &registry,
        )
        .unwrap();
        for i in 0..7 {
            auditor.record(numbered(i));
        }
        eventually("two full batches", || receiver.requests().len() == 2).await;
        // The seventh event waits: no size trigger, and the interval is an hour away.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.batches(), vec![names(0..3), names(3..6)]);
        assert_eq!(buffered(&registry), 1.0);
        auditor.shutdown().await;
        assert_eq!(
            receiver.batches(),
            vec![names(0..3), names(3..6), names(6..7)]
        );
        assert_eq!(written(&registry), 7.0);
        assert_eq!(buffered(&registry), 0.0);
    }

    #[tokio::test]
    async fn a_partial_batch_is_sent_at_the_flush_interval() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let interval = Duration::from_millis(400);
        let auditor =
            Auditor::new(&http_settings(&url, 10_000, 1_000, interval), &registry).unwrap();
        let recorded = Instant::now();
        auditor.record(numbered(0));
        auditor.record(numbered(1));
        eventually("the interval's batch", || !receiver.requests().is_empty()).await;
        // Far below batchSize, so only the interval can have sent it, and not before it elapsed.
        assert!(
            recorded.elapsed() >= interval / 2,
            "sent after {:?}",
            recorded.elapsed()
        );
        assert_eq!(receiver.batches(), vec![names(0..2)]);
        // The interval keeps going: a later event goes out on a later tick.
        auditor.record(numbered(2));
        eventually("the next tick's batch", || receiver.requests().len() == 2).await;
        assert_eq!(receiver.batches()[1], names(2..3));
        auditor.shutdown().await;
    }

    #[tokio::test]
    async fn answers_decide_retry_write_or_drop() {
        struct Case {
            script: &'static [u16],
            requests: usize,
            written: f64,
            dropped: Option<DropReason>,
        }
        let cases = [
            Case {
                script: &[],
                requests: 1,
                written: 2.0,
                dropped: None,
            },
            Case {
                script: &[503],
                requests: 2,
                written: 2.0,
                dropped: None,
            },
            Case {
                script: &[500, 502],
                requests: 3,
                written: 2.0,
                dropped: None,
            },
            Case {
                script: &[500, 503, 504],
                requests: 3,
                written: 0.0,
                dropped: Some(DropReason::Undeliverable),
            },
            Case {
                script: &[400],
                requests: 1,
                written: 0.0,
                dropped: Some(DropReason::Rejected),
            },
            Case {
                script: &[422],
                requests: 1,
                written: 0.0,
                dropped: Some(DropReason::Rejected),
            },
            Case {
                script: &[503, 404],
                requests: 2,
                written: 0.0,
                dropped: Some(DropReason::Rejected),
            },
        ];
        for case in cases {
            let (receiver, url) = Receiver::start(case.script).await;
            let registry = Registry::new();
            let auditor = Auditor::new(
                &http_settings(&url, 100, 2, Duration::from_secs(3600)),
                &registry,
            )
            .unwrap();
            auditor.record(numbered(0));
            auditor.record(numbered(1));
            eventually("the batch accounted", || {
                written(&registry) + dropped_total(&registry) == 2.0
            })
            .await;
            let requests = receiver.requests();
            assert_eq!(requests.len(), case.requests, "{:?}", case.script);
            // Every try carries the identical batch.
            assert!(
                requests.iter().all(|r| r.body == requests[0].body),
                "{:?}",
                case.script
            );
            assert_eq!(receiver.batches()[0], names(0..2));
            assert_eq!(written(&registry), case.written, "{:?}", case.script);
            for reason in DropReason::ALL {
                let expected = if case.dropped == Some(reason) {
                    2.0
                } else {
                    0.0
                };
                assert_eq!(
                    dropped(&registry, reason),
                    expected,
                    "{:?} {reason:?}",
                    case.script
                );
            }
            let failed = if case.dropped.is_some() { 1.0 } else { 0.0 };
            assert_eq!(failed_batches(&registry), failed, "{:?}", case.script);
            assert_eq!(buffered(&registry), 0.0);
            if case.written > 0.0 {
                assert!(requests.last().is_some_and(|r| r.answered < 300));
            }
            auditor.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_full_buffer_drops_the_newest_events() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 5, 5, Duration::from_secs(3600)),
            &registry,
        )
        .unwrap();
        // The sender task cannot run during this synchronous loop (single-threaded runtime).
        for i in 0..8 {
            auditor.record(numbered(i));
        }
        assert_eq!(buffered(&registry), 5.0);
        assert_eq!(dropped(&registry, DropReason::BufferFull), 3.0);
        eventually("the buffered batch", || !receiver.requests().is_empty()).await;
        assert_eq!(receiver.batches(), vec![names(0..5)]);
        eventually("written counted", || written(&registry) == 5.0).await;
        assert_eq!(buffered(&registry), 0.0);
        // Room again: new events are accepted.
        auditor.record(numbered(8));
        auditor.shutdown().await;
        assert_eq!(receiver.batches(), vec![names(0..5), names(8..9)]);
        assert_eq!(dropped(&registry, DropReason::BufferFull), 3.0);
    }

    #[tokio::test]
    async fn the_batch_in_flight_counts_against_the_buffer() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 5, 5, Duration::from_secs(3600)),
            &registry,
        )
        .unwrap();
        let held = receiver.gate.clone().lock_owned().await;
        for i in 0..5 {
            auditor.record(numbered(i));
        }
        eventually("the batch in flight", || !receiver.requests().is_empty()).await;
        // The queue is empty but the five events being sent still fill the buffer.
        auditor.record(numbered(5));
        assert_eq!(dropped(&registry, DropReason::BufferFull), 1.0);
        assert_eq!(buffered(&registry), 5.0);
        drop(held);
        eventually("written counted", || written(&registry) == 5.0).await;
        assert_eq!(buffered(&registry), 0.0);
        auditor.record(numbered(6));
        auditor.shutdown().await;
        assert_eq!(receiver.batches(), vec![names(0..5), names(6..7)]);
    }

    #[tokio::test]
    async fn shutdown_gives_up_on_a_hanging_receiver_at_its_timeout() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 100, 2, Duration::from_secs(3600)),
            &registry,
        )
        .unwrap();
        let _held = receiver.gate.clone().lock_owned().await;
        for i in 0..3 {
            auditor.record(numbered(i));
        }
        eventually("the first batch hanging", || {
            !receiver.requests().is_empty()
        })
        .await;
        let stopping = Instant::now();
        auditor.shutdown_within(Duration::from_millis(300)).await;
        let took = stopping.elapsed();
        assert!(took >= Duration::from_millis(250), "shutdown took {took:?}");
        assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
        // The hanging batch and the one never sent are both counted.
        assert_eq!(dropped(&registry, DropReason::Shutdown), 3.0);
        assert_eq!(failed_batches(&registry), 2.0);
        assert_eq!(written(&registry), 0.0);
        assert_eq!(buffered(&registry), 0.0);
        assert_eq!(receiver.requests().len(), 1);
    }

    #[tokio::test]
    async fn receiver_down_never_blocks_record_and_counts_the_losses() {
        // A port nothing listens on: connections are refused.
        let url = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 1_000, 100, Duration::from_millis(20)),
            &registry,
        )
        .unwrap();
        let started = std::time::Instant::now();
        for i in 0..20_000 {
            auditor.record(numbered(i));
        }
        let elapsed = started.elapsed();
        // 20 000 synchronous calls with nothing awaited; a call that waited on the network even
        // once would take longer than this alone (the connect timeout is seconds).
        assert!(
            elapsed < Duration::from_secs(2),
            "20 000 records took {elapsed:?}"
        );
        assert_eq!(dropped(&registry, DropReason::BufferFull), 19_000.0);
        assert_eq!(buffered(&registry), 1_000.0);
        eventually("a failed batch", || failed_batches(&registry) >= 1.0).await;
        assert!(dropped(&registry, DropReason::Undeliverable) >= 100.0);
        // Shutdown is bounded even though nothing can be delivered; the rest is counted.
        let stopping = Instant::now();
        auditor.shutdown_within(Duration::from_millis(300)).await;
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "shutdown took {:?}",
            stopping.elapsed()
        );
        assert_eq!(written(&registry), 0.0);
        assert_eq!(dropped_total(&registry), 20_000.0);
        assert_eq!(buffered(&registry), 0.0);
    }

    #[tokio::test]
    async fn shutdown_flushes_then_refuses_new_events() {
        let (receiver, url) = Receiver::start(&[]).await;
        let registry = Registry::new();
        let auditor = Auditor::new(
            &http_settings(&url, 100, 50, Duration::from_secs(3600)),
            &registry,
        )
        .unwrap();
        let clone = auditor.clone();
        for i in 0..3 {
            clone.record(numbered(i));
        }
        assert!(receiver.requests().is_empty());
        auditor.shutdown().await;
        // Delivered before shutdown returned.
        assert_eq!(receiver.batches(), vec![names(0..3)]);
        assert_eq!(written(&registry), 3.0);
        assert_eq!(buffered(&registry), 0.0);
        clone.record(numbered(3));
        assert_eq!(dropped(&registry, DropReason::Shutdown), 1.0);
        // A second shutdown, from any clone, returns at once.
        tokio::time::timeout(Duration::from_secs(1), clone.shutdown())
            .await
            .unwrap();
        assert_eq!(receiver.requests().len(), 1);
    }
}
