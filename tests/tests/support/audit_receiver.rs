//! A stand-in for Kubernaut Data Storage's audit batch API: an HTTP server on `127.0.0.1:0` that
//! accepts `POST /api/v1/audit/events/batch` (a JSON array of audit envelopes) and keeps every
//! event it received, in order, with the `Authorization` header of the request that carried it.
//! [`AuditReceiver::start_https`] serves it over TLS with a certificate of a test CA.
//!
//! Caveats:
//! 1. Test code: everything is kept in memory; a body that is not a JSON array is answered 400
//!    and remembered as a bad request.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::Value;
use tokio::task::JoinHandle;

#[derive(Default)]
struct Received {
    events: Vec<Value>,
    /// The `Authorization` header that came with each of `events`.
    authorizations: Vec<Option<String>>,
    batches: usize,
    bad_requests: Vec<String>,
}

/// A running receiver; stops when dropped.
pub struct AuditReceiver {
    addr: SocketAddr,
    /// `Some(the test CA's PEM file)` when served over TLS.
    ca_file: Option<PathBuf>,
    received: Arc<Mutex<Received>>,
    task: JoinHandle<()>,
}

impl Drop for AuditReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn batch(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut received = received.lock().expect("receiver state");
    match serde_json::from_slice::<Vec<Value>>(&body) {
        Ok(events) => {
            received.batches += 1;
            let count = events.len();
            received.events.extend(events);
            received
                .authorizations
                .extend(std::iter::repeat_n(authorization, count));
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
        let (received, app) = app();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(AuditReceiver {
            addr,
            ca_file: None,
            received,
            task,
        })
    }

    /// Start the receiver over TLS on a free loopback port, with a serving certificate for
    /// `localhost` signed by a fresh test CA written to `dir` ([`AuditReceiver::ca_file`]).
    pub async fn start_https(dir: &Path) -> anyhow::Result<AuditReceiver> {
        let (ca_pem, acceptor) = test_ca_acceptor()?;
        let ca_file = dir.join("data-storage-ca.crt");
        std::fs::write(&ca_file, ca_pem)?;
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = tcp.local_addr()?;
        let (received, app) = app();
        let task = tokio::spawn(async move {
            let _ = axum::serve(TlsListener { tcp, acceptor }, app).await;
        });
        Ok(AuditReceiver {
            addr,
            ca_file: Some(ca_file),
            received,
            task,
        })
    }

    /// The base URL to configure as `audit.url`.
    pub fn url(&self) -> String {
        match self.ca_file {
            None => format!("http://{}", self.addr),
            // The serving certificate names localhost.
            Some(_) => format!("https://localhost:{}", self.addr.port()),
        }
    }

    /// The test CA's PEM file, for `audit.caFile` (TLS receivers only).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca_file.clone()
    }

    /// The `Authorization` header of the request that carried the event of `event_type` about
    /// the WFE `name`, if it arrived.
    pub fn authorization_of(&self, name: &str, event_type: &str) -> Option<Option<String>> {
        let received = self.received.lock().expect("receiver state");
        received
            .events
            .iter()
            .zip(&received.authorizations)
            .find(|(e, _)| e["resource_id"] == name && e["event_type"] == event_type)
            .map(|(_, authorization)| authorization.clone())
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

/// The receiver's state and its routes.
fn app() -> (Arc<Mutex<Received>>, Router) {
    let received: Arc<Mutex<Received>> = Arc::default();
    let app = Router::new()
        .route("/api/v1/audit/events/batch", post(batch))
        .with_state(received.clone());
    (received, app)
}

/// A fresh CA's PEM and a TLS acceptor serving a `localhost` certificate it signed.
fn test_ca_acceptor() -> anyhow::Result<(String, tokio_rustls::TlsAcceptor)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio_rustls::rustls;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate()?;
    let serving = CertificateParams::new(vec!["localhost".to_owned()])?.signed_by(&key, &issuer)?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![serving.der().clone()],
        rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
    )?;
    Ok((ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// TLS over a TCP listener for `axum::serve`; a connection whose handshake fails is skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            if let Ok((stream, addr)) = self.tcp.accept().await
                && let Ok(tls) = self.acceptor.accept(stream).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
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
