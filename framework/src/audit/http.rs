//! The `http` sink: the bounded buffer on the recording side and the sender task that batches,
//! posts, retries and accounts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::token::{BearerToken, TokenFile};
use super::{AuditError, AuditMetrics, AuditSettings, DropReason, HTTP_TRIES, Producer};
use crate::backoff::Backoff;

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
/// How long [`HttpSink::shutdown`] waits past its deadline for the sender task to finish its
/// bookkeeping before giving up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Longest part of a rejecting answer's body quoted in the log.
const MAX_QUOTED_BODY: usize = 512;

/// Everything the `http` sink needs, checked before anything is registered or spawned.
pub(super) struct HttpPlan {
    endpoint: reqwest::Url,
    client: reqwest::Client,
    token: Option<TokenFile>,
    runtime: tokio::runtime::Handle,
    buffer_size: usize,
    batch_size: usize,
    flush_interval: Duration,
}

impl HttpPlan {
    /// Checks `settings` (already validated) against the files they name and builds the client.
    pub(super) fn prepare(
        settings: &AuditSettings,
        producer: &Producer<'_>,
    ) -> Result<HttpPlan, AuditError> {
        let endpoint = settings.batch_endpoint()?;
        let mut client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(producer.user_agent);
        if let Some(path) = &settings.ca_file {
            // Only the configured CAs: a private Data Storage CA should not be widened to every
            // public root.
            client = client.tls_built_in_root_certs(false);
            for certificate in read_ca_file(path)? {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build().map_err(AuditError::Client)?;
        let token = settings.token_file.as_deref().map(TokenFile::new);
        if let Some(token) = &token {
            token.read_now().map_err(|source| AuditError::TokenFile {
                path: token.path().to_owned(),
                source,
            })?;
            if endpoint.scheme() == "http" {
                tracing::warn!(
                    %endpoint,
                    "audit.tokenFile is set but audit.url is http://: the bearer token is sent unencrypted"
                );
            }
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(AuditError::NoRuntime)?;
        Ok(HttpPlan {
            endpoint,
            client,
            token,
            runtime,
            buffer_size: settings.buffer_size,
            batch_size: settings.batch_size,
            flush_interval: settings.flush_interval,
        })
    }

    /// Spawns the sender task and returns the recording side.
    pub(super) fn start<E: Serialize + Send + 'static>(self, metrics: AuditMetrics) -> HttpSink<E> {
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
            token: self.token,
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

/// The certificates of the PEM bundle at `path`; at least one.
fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, AuditError> {
    let failed = |reason: String| AuditError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| failed(e.to_string()))?;
    if certificates.is_empty() {
        return Err(failed("holds no PEM certificate".to_owned()));
    }
    Ok(certificates)
}

/// State the recording side and the sender task share.
struct Shared {
    endpoint: reqwest::Url,
    capacity: usize,
    /// Records accepted and not yet written or dropped: queued plus the batch in flight.
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
                "audit buffer has room again; accepting records"
            );
        }
    }
}

/// The recording side of the `http` sink.
pub(super) struct HttpSink<E> {
    tx: mpsc::Sender<E>,
    /// `Some(deadline)` once shutdown began: the sender task must be done by then.
    stop: watch::Sender<Option<Instant>>,
    closing: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
    shared: Arc<Shared>,
}

impl<E> HttpSink<E> {
    /// Where batches are posted.
    pub(super) fn endpoint(&self) -> &reqwest::Url {
        &self.shared.endpoint
    }

    /// Buffers `record`, or counts it dropped; never waits.
    pub(super) fn enqueue(&self, record: E) {
        let shared = &self.shared;
        if self.closing.load(Ordering::Acquire) {
            shared.metrics.dropped(DropReason::Shutdown, 1);
            return;
        }
        if !shared.reserve() {
            shared.metrics.dropped(DropReason::BufferFull, 1);
            if !shared.full_reported.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    capacity = shared.capacity,
                    endpoint = %shared.endpoint,
                    "audit buffer is full; dropping new audit records until it drains"
                );
            }
            return;
        }
        if let Err(error) = self.tx.try_send(record) {
            shared.release(1);
            let reason = match error {
                // Unreachable while slots bound the queue, but never worth a panic.
                mpsc::error::TrySendError::Full(_) => DropReason::BufferFull,
                mpsc::error::TrySendError::Closed(_) => DropReason::Shutdown,
            };
            shared.metrics.dropped(reason, 1);
        }
    }

    /// Stops accepting, lets the sender task flush until `timeout`, then accounts the rest.
    pub(super) async fn shutdown(&self, timeout: Duration) {
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
            self.shared.metrics.dropped(DropReason::Shutdown, left);
            self.shared.release(left);
        }
    }
}

/// The sender task of the `http` sink: owns the queue's receiving end and the batching.
struct Sender<E> {
    rx: mpsc::Receiver<E>,
    stop: watch::Receiver<Option<Instant>>,
    client: reqwest::Client,
    token: Option<TokenFile>,
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

/// Why one try of a batch did not deliver it.
enum TryFailure {
    /// Worth another try: a network error, a 5xx, an unreadable token.
    Retry(String),
    /// Final: the batch is dropped for this reason.
    Drop(DropReason),
}

impl<E: Serialize + Send + 'static> Sender<E> {
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
        // Flush: refuse new records (record counts them as shutdown drops), send what is queued.
        self.rx.close();
        loop {
            while batch.len() < self.batch_size {
                match self.rx.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.deliver(&mut batch).await;
        }
    }

    /// Sends one batch and accounts every record in it; leaves `batch` empty.
    async fn deliver(&self, batch: &mut Vec<E>) {
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
                self.shared.metrics.dropped(reason, events);
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
            match self.try_once(&body, events).await {
                Ok(()) => return Ok(()),
                Err(TryFailure::Drop(reason)) => return Err(reason),
                Err(TryFailure::Retry(error)) => last_error = error,
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

    /// One request with the current token.
    async fn try_once(&self, body: &[u8], events: usize) -> Result<(), TryFailure> {
        let endpoint = &self.shared.endpoint;
        let token = match &self.token {
            None => None,
            Some(file) => Some(file.read().await.map_err(|error| {
                TryFailure::Retry(format!("{}: {error}", file.path().display()))
            })?),
        };
        let mut request = self
            .client
            .post(endpoint.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(token) = &token {
            let header = token
                .header()
                .map_err(|e| TryFailure::Retry(e.to_string()))?;
            request = request.header(reqwest::header::AUTHORIZATION, header);
        }
        let response = match request.send().await {
            Ok(response) => response,
            // reqwest's errors name the URL and the cause, never the request's headers.
            Err(error) => return Err(TryFailure::Retry(error.to_string())),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.is_server_error() {
            return Err(TryFailure::Retry(format!("Data Storage answered {status}")));
        }
        let answer = response.text().await.unwrap_or_default();
        let answer = quote(&answer, token.as_ref());
        tracing::warn!(
            %endpoint,
            %status,
            events,
            %answer,
            "Data Storage rejected an audit batch; dropped"
        );
        Err(TryFailure::Drop(DropReason::Rejected))
    }
}

/// At most [`MAX_QUOTED_BODY`] bytes of `answer`, cut at a character boundary, with the token
/// redacted (a server may echo the request's credentials in an error page).
fn quote(answer: &str, token: Option<&BearerToken>) -> String {
    let redacted = match token {
        Some(token) => token.redact(answer),
        None => answer.to_owned(),
    };
    let mut end = redacted.len().min(MAX_QUOTED_BODY);
    while !redacted.is_char_boundary(end) {
        end -= 1;
    }
    redacted[..end].to_owned()
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
