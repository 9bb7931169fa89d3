//! A stand-in for Kubernaut Data Storage's audit batch API: an HTTP server on `127.0.0.1:0` that
//! accepts `POST /api/v1/audit/events/batch` (a JSON array of audit envelopes) and keeps every
//! event it received, in order.
//!
//! Caveats:
//! 1. Test code: everything is kept in memory; a body that is not a JSON array is answered 400
//!    and remembered as a bad request.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use serde_json::Value;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Received {
    events: Vec<Value>,
    batches: usize,
    bad_requests: Vec<String>,
}

/// A running receiver; stops when dropped.
pub struct AuditReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl Drop for AuditReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn batch(State(received): State<Arc<Mutex<Received>>>, body: Bytes) -> StatusCode {
    let mut received = received.lock().expect("receiver state");
    match serde_json::from_slice::<Vec<Value>>(&body) {
        Ok(events) => {
            received.batches += 1;
            received.events.extend(events);
            StatusCode::CREATED
        }
        Err(e) => {
            received
                .bad_requests
                .push(format!("{e}: {}", String::from_utf8_lossy(&body)));
            StatusCode::BAD_REQUEST
        }
    }
}

impl AuditReceiver {
    /// Start the receiver on a free loopback port.
    pub async fn start() -> anyhow::Result<AuditReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let received: Arc<Mutex<Received>> = Arc::default();
        let app = Router::new()
            .route("/api/v1/audit/events/batch", post(batch))
            .with_state(received.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(AuditReceiver {
            addr,
            received,
            task,
        })
    }

    /// The base URL to configure as `audit.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every event received so far.
    pub fn events(&self) -> Vec<Value> {
        self.received.lock().expect("receiver state").events.clone()
    }

    /// Requests whose body was not a JSON array.
    pub fn bad_requests(&self) -> Vec<String> {
        self.received
            .lock()
            .expect("receiver state")
            .bad_requests
            .clone()
    }

    /// Wait until an event of `event_type` about the WFE `name` arrived, returning it.
    pub async fn wait_event(&self, name: &str, event_type: &str) -> anyhow::Result<Value> {
        super::eventually(
            &format!("audit event {event_type} for {name}"),
            super::WAIT,
            || async {
                Ok(self
                    .events()
                    .into_iter()
                    .find(|e| e["resource_id"] == name && e["event_type"] == event_type))
            },
        )
        .await
    }
}

/// A base URL on which nothing listens (a port that was just free).
pub async fn unreachable_url() -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// Points `config`'s audit sink at `receiver` (HTTP, flushed every 200ms).
pub fn send_audit_to(
    config: &mut workflowexecution_operator::config::OperatorConfig,
    receiver: &AuditReceiver,
) {
    config.audit.sink = workflowexecution_operator::config::AuditSink::Http;
    config.audit.url = receiver.url();
    config.audit.flush_interval = std::time::Duration::from_millis(200);
}
