use std::collections::{BTreeSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use prometheus::Registry;
use serde::Serialize;
use tokio::time::Instant;

use super::*;

const PREFIX: &str = "testop";

fn producer() -> Producer<'static> {
    Producer {
        metric_prefix: PREFIX,
        user_agent: "testop-controller/1.0",
    }
}

/// A record whose `seq` tells records apart in batches.
#[derive(Clone, Debug, Serialize)]
struct Note {
    seq: String,
    text: &'static str,
}

fn numbered(i: usize) -> Note {
    Note {
        seq: format!("e{i}"),
        text: "something happened",
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("e{i}")).collect()
}

fn start(settings: &AuditSettings, registry: &Registry) -> Result<Auditor<Note>, AuditError> {
    Auditor::new(settings, &producer(), registry)
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
        ..AuditSettings::default()
    }
}

/// A receiver answering `script`, and an `http` auditor sending to it with these sizes and an
/// hour-long flush interval, so that only the batch size and shutdown cut batches.
async fn hourly_pair(
    script: &[u16],
    buffer_size: usize,
    batch_size: usize,
) -> (Receiver, Registry, Auditor<Note>) {
    let (receiver, url) = Receiver::start(script).await;
    let registry = Registry::new();
    let settings = http_settings(&url, buffer_size, batch_size, Duration::from_secs(3600));
    let auditor = start(&settings, &registry).unwrap();
    (receiver, registry, auditor)
}

/// A counter or gauge from the registry; `reason` selects a dropped_total series.
fn metric(registry: &Registry, name: &str, reason: Option<&str>) -> f64 {
    let name = format!("{PREFIX}_{name}");
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
    metric(registry, "audit_events_written_total", None)
}

fn dropped(registry: &Registry, reason: DropReason) -> f64 {
    metric(
        registry,
        "audit_events_dropped_total",
        Some(reason.as_str()),
    )
}

fn dropped_total(registry: &Registry) -> f64 {
    DropReason::ALL.iter().map(|r| dropped(registry, *r)).sum()
}

fn buffered(registry: &Registry) -> f64 {
    metric(registry, "audit_events_buffered", None)
}

fn failed_batches(registry: &Registry) -> f64 {
    metric(registry, "audit_batches_failed_total", None)
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
    authorization: Option<String>,
    user_agent: Option<String>,
    body: serde_json::Value,
    answered: u16,
}

/// A stand-in for Data Storage's batch endpoint: answers from a script of status codes, then
/// 201, and keeps every request. An answer waits while a test holds `gate`. With `echo`, an
/// error answer's body repeats the request's `Authorization` header, as a careless server might.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<u16>>>,
    requests: Arc<Mutex<Vec<Received>>>,
    gate: Arc<tokio::sync::Mutex<()>>,
    echo: bool,
}

impl Receiver {
    fn new(script: &[u16]) -> Receiver {
        Receiver {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ..Receiver::default()
        }
    }

    fn app(&self) -> Router {
        Router::new()
            .route("/api/v1/audit/events/batch", post(Receiver::handle))
            .with_state(self.clone())
    }

    /// A plain `http://` receiver on a free loopback port.
    async fn start(script: &[u16]) -> (Receiver, String) {
        let receiver = Receiver::new(script);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = receiver.app();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    /// An `https://` receiver serving `identity` (a certificate for `localhost`).
    async fn start_tls(receiver: Receiver, identity: &ServerIdentity) -> (Receiver, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let listener = TlsListener {
            tcp: listener,
            acceptor: identity.acceptor(),
        };
        let app = receiver.app();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    async fn handle(
        State(receiver): State<Receiver>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, String) {
        let answered = receiver.script.lock().unwrap().pop_front().unwrap_or(201);
        let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let authorization = header("authorization");
        receiver.requests.lock().unwrap().push(Received {
            content_type: header("content-type"),
            authorization: authorization.clone(),
            user_agent: header("user-agent"),
            body,
            answered,
        });
        let _open = receiver.gate.lock().await;
        let answer = if receiver.echo && answered >= 400 {
            format!(
                "not accepted: Authorization: {}",
                authorization.unwrap_or_default()
            )
        } else {
            String::new()
        };
        (StatusCode::from_u16(answered).unwrap(), answer)
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// The `seq`s of each batch, in order.
    fn batches(&self) -> Vec<Vec<String>> {
        self.requests()
            .iter()
            .map(|r| {
                r.body
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["seq"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }
}

/// A test CA and a `localhost` / `127.0.0.1` serving certificate it signed.
struct ServerIdentity {
    ca_pem: String,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl ServerIdentity {
    fn new(ca_name: &str) -> ServerIdentity {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &issuer).unwrap();
        ServerIdentity {
            ca_pem: ca.pem(),
            cert,
            key,
        }
    }

    fn write_ca(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.crt");
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(self.key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.der().clone()], key.into())
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A TLS listener for `axum::serve`: a failed handshake (an untrusting client) is skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A `tracing` writer that keeps everything written to it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything this test binary logs, at every level. One global subscriber rather than one per
/// test: a per-thread subscriber can miss lines whose callsite another test's thread cached as
/// disabled. Tests pick their own lines by a marker only they log.
fn logged() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_target(true)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    })
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `token` to `dir/token` the way the kubelet updates a projected volume: a new file in a
/// new directory, then an atomic swap of the `..data` symlink that `token` points through.
fn rotate_token(dir: &Path, generation: usize, token: &str) -> PathBuf {
    let data = dir.join(format!("..gen{generation}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("token"), token).unwrap();
    let next = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().unwrap(), &next).unwrap();
    std::fs::rename(&next, dir.join("..data")).unwrap();
    let link = dir.join("token");
    if !link.exists() {
        std::os::unix::fs::symlink("..data/token", &link).unwrap();
    }
    link
}

// ------------------------------------------------------------------------------ settings

#[test]
fn batch_endpoint_keeps_the_base_path() {
    let cases: [(&str, Result<&str, &str>); 9] = [
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
        (
            "https://user:secret@ds.example",
            Err("must not carry credentials"),
        ),
    ];
    for (url, expected) in cases {
        let settings = AuditSettings {
            sink: AuditSink::Http,
            url: url.to_owned(),
            ..AuditSettings::default()
        };
        match (settings.batch_endpoint(), expected) {
            (Ok(endpoint), Ok(expected)) => assert_eq!(endpoint.as_str(), expected, "{url:?}"),
            (Err(error), Err(fragment)) => {
                assert_eq!(error.key(), Some("audit.url"), "{url:?}");
                assert!(error.to_string().contains(fragment), "{url:?}: {error}")
            }
            (got, expected) => panic!("{url:?}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn settings_validation_errors_name_their_key() {
    let https = http_settings("https://ds.example", 100, 10, Duration::from_secs(1));
    let cases: Vec<(AuditSettings, &str, &str)> = vec![
        (
            AuditSettings {
                batch_size: 0,
                ..AuditSettings::default()
            },
            "audit.batchSize",
            "at least 1",
        ),
        (
            AuditSettings {
                buffer_size: 5,
                batch_size: 10,
                ..AuditSettings::default()
            },
            "audit.bufferSize",
            "smaller than audit.batchSize (10)",
        ),
        (
            AuditSettings {
                flush_interval: Duration::ZERO,
                ..AuditSettings::default()
            },
            "audit.flushInterval",
            "longer than 0s",
        ),
        (
            AuditSettings {
                url: String::new(),
                ..https.clone()
            },
            "audit.url",
            "must be set when audit.sink is http",
        ),
        (
            AuditSettings {
                url: "ftp://x".into(),
                ..https.clone()
            },
            "audit.url",
            "\"ftp://x\"",
        ),
        (
            AuditSettings {
                ca_file: Some(PathBuf::new()),
                ..https.clone()
            },
            "audit.caFile",
            "must not be empty",
        ),
        (
            AuditSettings {
                token_file: Some(PathBuf::new()),
                ..https.clone()
            },
            "audit.tokenFile",
            "must not be empty",
        ),
        (
            AuditSettings {
                url: "http://ds.example".into(),
                ca_file: Some("/etc/ca.crt".into()),
                ..https.clone()
            },
            "audit.caFile",
            "only used with an https://",
        ),
    ];
    for (settings, key, fragment) in cases {
        let error = settings.validate().unwrap_err();
        assert_eq!(error.key(), Some(key), "{settings:?}: {error}");
        assert!(
            error.to_string().contains(fragment),
            "{settings:?}: {error}"
        );
    }
    // The log sink ignores the http-only keys; a full https configuration is valid.
    let log = AuditSettings {
        url: "ftp://ignored".into(),
        ca_file: Some(PathBuf::new()),
        ..AuditSettings::default()
    };
    assert_eq!(log.validate(), Ok(()));
    let full = AuditSettings {
        ca_file: Some("/etc/ds/ca.crt".into()),
        token_file: Some("/var/run/secrets/ds/token".into()),
        ..https
    };
    assert_eq!(full.validate(), Ok(()));
}

#[test]
fn settings_use_camel_case_keys_and_name_the_optional_files() {
    let yaml = "sink: http\nurl: https://ds\nbufferSize: 20\nbatchSize: 5\nflushInterval: 2s\n\
                caFile: /ca.crt\ntokenFile: /token\n";
    let settings: AuditSettings = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(settings.flush_interval, Duration::from_secs(2));
    assert_eq!(settings.ca_file.as_deref(), Some(Path::new("/ca.crt")));
    assert_eq!(settings.token_file.as_deref(), Some(Path::new("/token")));
    // Unset files are serialized as null, so the environment layer learns their keys.
    let defaults = serde_json::to_value(AuditSettings::default()).unwrap();
    assert_eq!(defaults["caFile"], serde_json::Value::Null);
    assert!(defaults.as_object().unwrap().contains_key("tokenFile"));
    let unknown = serde_yaml::from_str::<AuditSettings>("sink: log\ntoken: x\n");
    assert!(
        unknown
            .unwrap_err()
            .to_string()
            .contains("unknown field `token`")
    );
}

#[tokio::test]
async fn invalid_settings_are_refused_and_register_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ok = http_settings("http://127.0.0.1:9", 100, 10, Duration::from_secs(1));
    let cases: Vec<(AuditSettings, &str)> = vec![
        (
            AuditSettings {
                url: String::new(),
                ..ok.clone()
            },
            "`audit.url`: must be set",
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
                url: "https://127.0.0.1:9".into(),
                ca_file: Some(dir.path().join("missing.crt")),
                ..ok.clone()
            },
            "audit.caFile",
        ),
        (
            AuditSettings {
                url: "https://127.0.0.1:9".into(),
                ca_file: Some({
                    let path = dir.path().join("not-pem.crt");
                    std::fs::write(&path, "not a certificate").unwrap();
                    path
                }),
                ..ok.clone()
            },
            "holds no PEM certificate",
        ),
        (
            AuditSettings {
                token_file: Some(dir.path().join("missing-token")),
                ..ok.clone()
            },
            "audit.tokenFile",
        ),
    ];
    for (settings, fragment) in cases {
        let registry = Registry::new();
        let error = start(&settings, &registry).unwrap_err();
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
    start(&AuditSettings::default(), &registry).unwrap();
    start(&ok, &Registry::new()).unwrap().shutdown().await;
    // The same registry twice is a metrics error, not a panic.
    let error = start(&AuditSettings::default(), &registry).unwrap_err();
    assert!(matches!(error, AuditError::Metrics(_)), "{error}");
}

#[test]
fn http_sink_needs_a_runtime_and_log_sink_does_not() {
    let settings = http_settings("http://127.0.0.1:9", 100, 10, Duration::from_secs(1));
    let error = start(&settings, &Registry::new()).unwrap_err();
    assert!(matches!(error, AuditError::NoRuntime(_)), "{error}");
    start(&AuditSettings::default(), &Registry::new()).unwrap();
}

#[test]
fn metrics_carry_the_producers_prefix_with_every_drop_reason_at_zero() {
    let registry = Registry::new();
    let _auditor = start(&AuditSettings::default(), &registry).unwrap();
    let names: BTreeSet<String> = registry
        .gather()
        .iter()
        .map(|f| f.name().to_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "testop_audit_batches_failed_total".to_owned(),
            "testop_audit_events_buffered".to_owned(),
            "testop_audit_events_dropped_total".to_owned(),
            "testop_audit_events_written_total".to_owned(),
        ])
    );
    for reason in DropReason::ALL {
        assert_eq!(dropped(&registry, reason), 0.0, "{reason:?}");
    }
    // Two producers share one registry under their own prefixes.
    let other = Producer {
        metric_prefix: "otherop",
        user_agent: "otherop/1",
    };
    Auditor::<Note>::new(&AuditSettings::default(), &other, &registry).unwrap();
    assert_eq!(registry.gather().len(), 8);
}

// ------------------------------------------------------------------------------ log sink

#[test]
fn log_sink_writes_one_json_line_per_record_at_info_on_the_audit_target() {
    let log = logged();
    let registry = Registry::new();
    let auditor = start(&AuditSettings::default(), &registry).unwrap();
    let records = [0, 1].map(|i| Note {
        seq: format!("log-{i}"),
        text: "written by the log sink test",
    });
    for record in &records {
        auditor.record(record.clone());
    }
    let output = log.text();
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("written by the log sink test"))
        .collect();
    assert_eq!(lines.len(), records.len(), "{output}");
    for (line, record) in lines.iter().zip(&records) {
        let (prefix, json) = line
            .split_once(" audit: ")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(prefix.contains("INFO"), "{line}");
        let logged: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(logged, serde_json::to_value(record).unwrap());
    }
    assert_eq!(written(&registry), 2.0);
    assert_eq!(buffered(&registry), 0.0);
}

// ------------------------------------------------------------------------------ http sink

#[tokio::test]
async fn http_sink_posts_json_arrays_with_the_producers_user_agent() {
    let (receiver, registry, auditor) = hourly_pair(&[], 100, 2).await;
    let records = [numbered(0), numbered(1)];
    for record in &records {
        auditor.record(record.clone());
    }
    eventually("one batch", || !receiver.requests().is_empty()).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        requests[0].user_agent.as_deref(),
        Some("testop-controller/1.0")
    );
    assert_eq!(requests[0].authorization, None);
    assert_eq!(
        requests[0].body,
        serde_json::to_value(&records[..]).unwrap()
    );
    eventually("written counted", || written(&registry) == 2.0).await;
    assert_eq!(buffered(&registry), 0.0);
    assert_eq!(dropped_total(&registry), 0.0);
    auditor.shutdown().await;
}

#[tokio::test]
async fn batches_are_cut_at_batch_size() {
    let (receiver, registry, auditor) = hourly_pair(&[], 100, 3).await;
    for i in 0..7 {
        auditor.record(numbered(i));
    }
    eventually("two full batches", || receiver.requests().len() == 2).await;
    // The seventh record waits: no size trigger, and the interval is an hour away.
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
    let auditor = start(&http_settings(&url, 10_000, 1_000, interval), &registry).unwrap();
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
    // The interval keeps going: a later record goes out on a later tick.
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
        let (receiver, registry, auditor) = hourly_pair(case.script, 100, 2).await;
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
async fn a_full_buffer_drops_the_newest_records() {
    let (receiver, registry, auditor) = hourly_pair(&[], 5, 5).await;
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
    // Room again: new records are accepted.
    auditor.record(numbered(8));
    auditor.shutdown().await;
    assert_eq!(receiver.batches(), vec![names(0..5), names(8..9)]);
    assert_eq!(dropped(&registry, DropReason::BufferFull), 3.0);
}

#[tokio::test]
async fn the_batch_in_flight_counts_against_the_buffer() {
    let (receiver, registry, auditor) = hourly_pair(&[], 5, 5).await;
    let held = receiver.gate.clone().lock_owned().await;
    for i in 0..5 {
        auditor.record(numbered(i));
    }
    eventually("the batch in flight", || !receiver.requests().is_empty()).await;
    // The queue is empty but the five records being sent still fill the buffer.
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
    let (receiver, registry, auditor) = hourly_pair(&[], 100, 2).await;
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
    let auditor = start(
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
async fn shutdown_flushes_then_refuses_new_records() {
    let (receiver, registry, auditor) = hourly_pair(&[], 100, 50).await;
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

// ------------------------------------------------------------------------------ TLS and auth

#[tokio::test]
async fn https_delivers_to_a_server_whose_certificate_chains_to_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ServerIdentity::new("data-storage-test-ca");
    let (receiver, url) = Receiver::start_tls(Receiver::new(&[]), &identity).await;
    let registry = Registry::new();
    let settings = AuditSettings {
        ca_file: Some(identity.write_ca(dir.path())),
        ..http_settings(&url, 100, 2, Duration::from_secs(3600))
    };
    let auditor = start(&settings, &registry).unwrap();
    auditor.record(numbered(0));
    auditor.record(numbered(1));
    eventually("written over https", || written(&registry) == 2.0).await;
    assert_eq!(receiver.batches(), vec![names(0..2)]);
    auditor.shutdown().await;
}

#[tokio::test]
async fn https_refuses_a_server_the_ca_file_does_not_vouch_for() {
    let dir = tempfile::tempdir().unwrap();
    let serving = ServerIdentity::new("data-storage-test-ca");
    let other = ServerIdentity::new("some-other-ca");
    let (receiver, url) = Receiver::start_tls(Receiver::new(&[]), &serving).await;
    // Trusting another CA, and trusting only the built-in public roots, both fail the handshake.
    for ca_file in [Some(other.write_ca(dir.path())), None] {
        let registry = Registry::new();
        let settings = AuditSettings {
            ca_file,
            ..http_settings(&url, 100, 2, Duration::from_secs(3600))
        };
        let auditor = start(&settings, &registry).unwrap();
        auditor.record(numbered(0));
        auditor.record(numbered(1));
        eventually("the batch undeliverable", || {
            dropped(&registry, DropReason::Undeliverable) == 2.0
        })
        .await;
        assert_eq!(written(&registry), 0.0);
        auditor.shutdown().await;
    }
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_reread_after_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let identity = ServerIdentity::new("data-storage-test-ca");
    let (receiver, url) = Receiver::start_tls(Receiver::new(&[]), &identity).await;
    let token_file = rotate_token(dir.path(), 1, "first-token\n");
    let registry = Registry::new();
    let settings = AuditSettings {
        ca_file: Some(identity.write_ca(dir.path())),
        token_file: Some(token_file.clone()),
        ..http_settings(&url, 100, 1, Duration::from_secs(3600))
    };
    let auditor = start(&settings, &registry).unwrap();
    auditor.record(numbered(0));
    eventually("the first batch", || written(&registry) == 1.0).await;
    // The kubelet rotates the projected token: a new file behind the swapped `..data` link.
    rotate_token(dir.path(), 2, "second-token");
    auditor.record(numbered(1));
    eventually("the second batch", || written(&registry) == 2.0).await;
    // An edit in place (same path, same inode) is picked up as well.
    std::fs::write(dir.path().join("..gen2/token"), "third-token").unwrap();
    auditor.record(numbered(2));
    eventually("the third batch", || written(&registry) == 3.0).await;
    let sent: Vec<Option<String>> = receiver
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(
        sent,
        [
            Some("Bearer first-token".to_owned()),
            Some("Bearer second-token".to_owned()),
            Some("Bearer third-token".to_owned()),
        ]
    );
    auditor.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_token_fails_the_try_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, url) = Receiver::start(&[]).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "a-token").unwrap();
    let registry = Registry::new();
    let settings = AuditSettings {
        token_file: Some(token_file.clone()),
        ..http_settings(&url, 100, 1, Duration::from_secs(3600))
    };
    let auditor = start(&settings, &registry).unwrap();
    // Gone between start-up and the batch (a rotation caught mid-swap, a broken mount).
    std::fs::remove_file(&token_file).unwrap();
    auditor.record(numbered(0));
    eventually("the batch undeliverable", || {
        dropped(&registry, DropReason::Undeliverable) == 1.0
    })
    .await;
    assert!(receiver.requests().is_empty(), "sent without its token");
    // Back again: the next batch carries it.
    std::fs::write(&token_file, "a-token").unwrap();
    auditor.record(numbered(1));
    eventually("the next batch", || written(&registry) == 1.0).await;
    assert_eq!(
        receiver.requests()[0].authorization.as_deref(),
        Some("Bearer a-token")
    );
    auditor.shutdown().await;
}

#[tokio::test]
async fn the_token_never_appears_in_logs_or_error_messages() {
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLXBheWxvYWQ.c2lnbmF0dXJl";
    let dir = tempfile::tempdir().unwrap();
    let log = logged();
    let identity = ServerIdentity::new("data-storage-test-ca");
    // A careless server that echoes the Authorization header in its 401 page, then answers 5xx.
    let receiver = Receiver {
        echo: true,
        ..Receiver::new(&[401, 503, 503, 503])
    };
    let (receiver, url) = Receiver::start_tls(receiver, &identity).await;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let registry = Registry::new();
    let settings = AuditSettings {
        ca_file: Some(identity.write_ca(dir.path())),
        token_file: Some(token_file.clone()),
        ..http_settings(&url, 100, 1, Duration::from_secs(3600))
    };
    let auditor = start(&settings, &registry).unwrap();
    assert!(!format!("{auditor:?}").contains(TOKEN));
    auditor.record(numbered(0));
    eventually("the rejected batch", || {
        dropped(&registry, DropReason::Rejected) == 1.0
    })
    .await;
    auditor.record(numbered(1));
    eventually("the undeliverable batch", || {
        dropped(&registry, DropReason::Undeliverable) == 1.0
    })
    .await;
    // The file goes bad: the failed tries name the file, not what it holds.
    std::fs::write(&token_file, format!("{TOKEN}\u{7}")).unwrap();
    auditor.record(numbered(2));
    eventually("the batch without a usable token", || {
        dropped(&registry, DropReason::Undeliverable) == 2.0
    })
    .await;
    auditor.shutdown().await;
    // The server did get the token and sent it back, so there was something to leak.
    assert_eq!(
        receiver.requests()[0].authorization,
        Some(format!("Bearer {TOKEN}"))
    );
    assert_eq!(receiver.requests().len(), 4);
    // This test's lines are the ones about its receiver's port.
    let port = url.rsplit(':').next().unwrap();
    let everything = log.text();
    assert!(!everything.contains(TOKEN), "{everything}");
    let log: Vec<String> = everything
        .lines()
        .filter(|l| l.contains(&format!("localhost:{port}")))
        .map(str::to_owned)
        .collect();
    let log = log.join("\n");
    assert!(log.contains("rejected an audit batch"), "{log}");
    assert!(log.contains("Authorization: Bearer [redacted]"), "{log}");
    assert!(log.contains("could not be delivered"), "{log}");
    assert!(!log.contains(TOKEN), "{log}");
    // Start-up errors about the token file do not quote it either.
    for content in [format!("{TOKEN}\u{7}"), "  \n".to_owned()] {
        std::fs::write(&token_file, &content).unwrap();
        let error = start(&settings, &Registry::new()).unwrap_err();
        let (shown, debugged) = (error.to_string(), format!("{error:?}"));
        assert!(shown.contains("audit.tokenFile"), "{shown}");
        assert!(
            !shown.contains(TOKEN) && !debugged.contains(TOKEN),
            "{debugged}"
        );
    }
}
