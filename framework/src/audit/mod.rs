//! Audit transport: a bounded, batching sink that carries an operator's audit records to its
//! log or to Kubernaut Data Storage, without ever holding up a reconcile.
//!
//! An operator defines what its records *say* (a type that implements [`serde::Serialize`],
//! usually an [`AuditRecord`] in Kubernaut's envelope, with its own [`Action`]s and
//! `event_data`); this module carries them. It embeds [`AuditSettings`] as the `audit`
//! section of its configuration (validated by [`AuditSettings::validate`], which names the
//! offending key), starts one [`Auditor`] with [`Auditor::new`], hands it records with
//! [`Auditor::record`] and calls [`Auditor::shutdown`] when the process stops.
//!
//! Sinks ([`AuditSink`], the `audit.sink` key):
//! - `log` (the default): each record is one JSON line, emitted through `tracing` at `INFO` with
//!   the target [`LOG_TARGET`] (`audit`), so a log pipeline can route audit lines by target.
//! - `http`: records go into an in-memory buffer of `audit.bufferSize` records and a background
//!   task sends them as JSON arrays to `POST <audit.url>/api/v1/audit/events/batch` — a batch as
//!   soon as `audit.batchSize` records are waiting, and whatever is waiting every
//!   `audit.flushInterval`. A batch is tried [`HTTP_TRIES`] times, with backoff, on network
//!   errors and 5xx answers; a 4xx answer drops it at once. For a real cluster the sink trusts
//!   the CAs of `audit.caFile` for an `https` URL and sends the token of `audit.tokenFile` (a
//!   projected ServiceAccount token with Data Storage's audience) as `Authorization: Bearer`.
//!
//! Metrics, registered on the registry passed to [`Auditor::new`] (for either sink) with the
//! caller's [`Producer::metric_prefix`] (`workflowexecution` below):
//! `workflowexecution_audit_events_buffered` (gauge: records accepted and not yet written or
//! dropped), `workflowexecution_audit_events_written_total` (records Data Storage accepted, or
//! lines logged), `workflowexecution_audit_events_dropped_total{reason}` (see [`DropReason`]),
//! `workflowexecution_audit_batches_failed_total` (batches that were not delivered).
//!
//! # Guarantees
//!
//! 1. [`Auditor::record`] never blocks and never waits for I/O: the `log` sink formats and emits
//!    one line; the `http` sink reserves a buffer slot with one atomic operation and
//!    `try_send`s into a bounded channel. Auditing can therefore never slow down or stall a
//!    reconcile, whatever Data Storage does.
//! 2. Memory is bounded: at most `audit.bufferSize` records are held, counting both the queue and
//!    the batch being sent. When the buffer is full the *newest* record (the one being recorded)
//!    is dropped; records already buffered keep their place.
//! 3. Every record handed to the `http` sink is accounted exactly once: it is counted as written
//!    when Data Storage answered 2xx to its batch, or as dropped with one [`DropReason`].
//!    `buffered` returns to 0 once everything is accounted.
//! 4. Batches hold at most `audit.batchSize` records, in the order they were recorded; a retry
//!    re-sends the identical body.
//! 5. [`Auditor::shutdown`] stops accepting records, sends everything buffered and returns within
//!    its timeout ([`SHUTDOWN_TIMEOUT`], or the one given to [`Auditor::shutdown_within`]); what
//!    could not be sent by then is counted as dropped (`shutdown`). Calling it again is a no-op.
//! 6. The settings are checked by one function, [`AuditSettings::validate`]: the operator's
//!    configuration validation calls it, and [`Auditor::new`] calls it again, so a hand-built
//!    [`AuditSettings`] can neither make the sender spin nor panic.
//! 7. The bearer token is read from `audit.tokenFile` for every request, so a token the kubelet
//!    rotated is used from the next request on. It is never logged: it is kept in a type whose
//!    `Debug` prints `[redacted]`, sent in a header marked sensitive, no error message contains
//!    it, and an answer body quoted in the log has it replaced by `[redacted]`.
//! 8. With `audit.caFile` set, an `https` server's certificate must chain to one of the file's
//!    CAs; the built-in public roots are not trusted then.
//!
//! # Assumptions
//!
//! 1. An `http` [`Auditor`] is created inside a Tokio runtime (its sender task is spawned on
//!    it); otherwise [`Auditor::new`] returns [`AuditError::NoRuntime`].
//! 2. Data Storage stores a batch as a whole and answers 2xx only once it is stored; a 4xx means
//!    the batch will never be accepted, so retrying it would only delay the records behind it.
//! 3. The operator's configuration puts these settings under the key [`SECTION`] (`audit`), as
//!    the error messages name them.
//! 4. `audit.caFile` and `audit.tokenFile` exist when the sink starts (a mounted volume);
//!    [`Auditor::new`] refuses to start without them.
//!
//! # Caveats
//!
//! 1. Delivery is at least once per attempt: if Data Storage stored a batch but its answer was
//!    lost or was a 5xx, the retry stores it again. The envelope has no record id to deduplicate.
//! 2. The buffer lives in memory: a crash loses it silently, and a shutdown that runs out of time
//!    drops (and counts) the rest.
//! 3. 401, 403, 408 and 429 are 4xx, so they drop the batch like any other 4xx. A token that
//!    cannot be read (the file is gone or empty) fails the try like a network error: it is
//!    retried, then the batch counts as `undeliverable`.
//! 4. The `log` sink counts a record as written when it is handed to `tracing`; a subscriber
//!    filter that excludes the `audit` target discards audit lines without a trace.
//! 5. Drops are logged once per episode (the buffer filling up, a failed batch), not once per
//!    record, so a long Data Storage outage does not flood the log; the counters carry the
//!    totals.
//! 6. The CA file is read once, when the sink starts: a renewed CA needs a restart. A token file
//!    on an `http://` URL is sent unencrypted; the sink warns about it at start-up.

mod envelope;
mod http;
mod metrics;
mod settings;
mod token;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use prometheus::Registry;
use serde::Serialize;

pub use envelope::{Action, AuditOutcome, AuditRecord};
pub use settings::{AuditSettings, AuditSink, SECTION};
pub use token::TokenError;

use http::HttpSink;
use metrics::AuditMetrics;

/// The `tracing` target of the `log` sink's lines.
pub const LOG_TARGET: &str = "audit";
/// The path, below `audit.url`, that batches are posted to (Data Storage's batch API).
pub const BATCH_PATH: &str = "api/v1/audit/events/batch";
/// How often the `http` sink tries to send one batch before dropping it.
pub const HTTP_TRIES: u32 = 3;
/// How long [`Auditor::shutdown`] may take to send what is buffered.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Who records: names the sink's metrics and identifies its requests.
#[derive(Clone, Copy, Debug)]
pub struct Producer<'a> {
    /// The first part of every metric name, e.g. `workflowexecution` for
    /// `workflowexecution_audit_events_written_total`.
    pub metric_prefix: &'a str,
    /// The `User-Agent` of the `http` sink's requests, e.g. `workflowexecution-controller/0.1.0`.
    pub user_agent: &'a str,
}

crate::string_enum! {
    /// Why audit records were dropped: the `reason` label of `<prefix>_audit_events_dropped_total`.
    /// `ALL` holds every reason; all are exported at 0 from the start.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum DropReason {
        /// `buffer_full`: the buffer held `audit.bufferSize` records; the new one was dropped.
        BufferFull = "buffer_full",
        /// `rejected`: Data Storage answered the batch with a 4xx (or another non-retryable status).
        Rejected = "rejected",
        /// `undeliverable`: every try of the batch met a network error, a 5xx or an unreadable
        /// token file.
        Undeliverable = "undeliverable",
        /// `shutdown`: recorded after shutdown began, or still buffered when its timeout ran out.
        Shutdown = "shutdown",
        /// `unencodable`: the record or batch could not be serialized to JSON.
        Unencodable = "unencodable",
    }
}

/// Why an [`Auditor`] could not be started.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A setting is invalid; the error names its key (`audit.url`).
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
    /// `audit.caFile` could not be read or holds no PEM certificate.
    #[error("audit.caFile {}: {reason}", path.display())]
    CaFile {
        /// The configured path.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `audit.tokenFile` gives no usable token at start-up.
    #[error("audit.tokenFile {}: {source}", path.display())]
    TokenFile {
        /// The configured path.
        path: std::path::PathBuf,
        /// What went wrong (never the file's content).
        #[source]
        source: TokenError,
    },
    /// The HTTP client of the `http` sink could not be built.
    #[error("building the HTTP client of the http audit sink failed: {0}")]
    Client(#[source] reqwest::Error),
    /// The `http` sink was created outside a Tokio runtime.
    #[error("the http audit sink must be created inside a Tokio runtime: {0}")]
    NoRuntime(#[source] tokio::runtime::TryCurrentError),
    /// The audit metrics could not be registered (e.g. already registered on this registry, or
    /// the prefix makes an invalid metric name).
    #[error("registering the audit metrics failed: {0}")]
    Metrics(#[from] crate::metrics::MetricError),
}

/// The audit sink an operator records to. Cheap to clone (one `Arc`); clones share the sink.
pub struct Auditor<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Auditor<E> {
    fn clone(&self) -> Self {
        Auditor {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E> {
    metrics: AuditMetrics,
    sink: Sink<E>,
}

enum Sink<E> {
    Log,
    Http(HttpSink<E>),
}

impl<E> std::fmt::Debug for Auditor<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sink = match &self.inner.sink {
            Sink::Log => "log".to_owned(),
            Sink::Http(http) => format!("http {}", http.endpoint()),
        };
        f.debug_struct("Auditor").field("sink", &sink).finish()
    }
}

impl<E: Serialize + Send + 'static> Auditor<E> {
    /// Starts the sink `settings.sink` names and registers its metrics on `registry`. For the
    /// `http` sink this validates the settings, reads the CA and token files, builds the HTTP
    /// client and spawns the sender task on the current Tokio runtime. Nothing is registered
    /// when it fails.
    pub fn new(
        settings: &AuditSettings,
        producer: &Producer<'_>,
        registry: &Registry,
    ) -> Result<Auditor<E>, AuditError> {
        settings.validate()?;
        let plan = match settings.sink {
            AuditSink::Log => None,
            AuditSink::Http => Some(http::HttpPlan::prepare(settings, producer)?),
        };
        let metrics = AuditMetrics::register(producer.metric_prefix, registry)?;
        let sink = match plan {
            None => Sink::Log,
            Some(plan) => Sink::Http(plan.start(metrics.clone())),
        };
        Ok(Auditor {
            inner: Arc::new(Inner { metrics, sink }),
        })
    }

    /// Records one record without blocking or awaiting anything: the `log` sink writes it now,
    /// the `http` sink buffers it (or drops it, counted, when the buffer is full or shutdown
    /// has begun).
    pub fn record(&self, record: E) {
        match &self.inner.sink {
            Sink::Log => self.log(&record),
            Sink::Http(http) => http.enqueue(record),
        }
    }

    /// Stops the `http` sink: refuses new records, sends everything buffered and waits for it
    /// at most [`SHUTDOWN_TIMEOUT`]. A no-op for the `log` sink and on every call after the
    /// first.
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

    fn log(&self, record: &E) {
        match serde_json::to_string(record) {
            Ok(line) => {
                tracing::info!(target: LOG_TARGET, "{line}");
                self.inner.metrics.written.inc();
            }
            Err(error) => {
                tracing::error!(%error, "audit record could not be serialized; dropped");
                self.inner.metrics.dropped(DropReason::Unencodable, 1);
            }
        }
    }
}
