//! Call-sequence tests of reconcile code without an API server: a [`kube::Client`] over a mock
//! service that answers a script of expected requests (method and path, in order) with canned
//! responses, and returns the bodies sent so a test can assert them.
//!
//! Events (`events.k8s.io`) are published beside a reconcile, at no fixed point of its sequence:
//! they are answered and collected apart from the script.
//!
//! ```
//! use kubernaut_framework::testing::{Exchange, Scenario};
//! use serde_json::json;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let (client, scenario) = Scenario::start(vec![Exchange::new(
//!     "GET",
//!     "/api/v1/namespaces/ns/configmaps/a",
//!     404,
//!     kubernaut_framework::testing::status_body(404, "NotFound"),
//! )]);
//! let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = kube::Api::namespaced(client, "ns");
//! assert!(api.get_opt("a").await.unwrap().is_none());
//! drop(api);
//! let served = scenario.finish().await;
//! assert_eq!(served.bodies, [json!(null)]);
//! # });
//! ```
//!
//! # Guarantees
//!
//! 1. A request that is not the next one of the script (method or path), a request after the
//!    script is exhausted, or a script left unfinished fails the test at [`Scenario::finish`].
//!
//! # Assumptions
//!
//! 1. The test drops every clone of the client (and whatever holds one, such as a runtime
//!    `Context`) before [`Scenario::finish`]: the scenario ends when the last one is gone.

use std::pin::pin;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::{Client, client::Body};
use serde_json::{Value, json};
use tower_test::mock;

/// One expected request and the response to it.
#[derive(Debug)]
pub struct Exchange {
    method: Method,
    path: String,
    status: StatusCode,
    body: Value,
}

impl Exchange {
    /// Expect `method` (`"GET"`, `"PUT"`, ...) on `path` (without query) and answer `status`
    /// with `body`.
    ///
    /// # Panics
    ///
    /// On an invalid method or status code (a mistake in the test).
    pub fn new(method: &str, path: impl Into<String>, status: u16, body: Value) -> Self {
        #[allow(clippy::expect_used)]
        Self {
            method: Method::from_bytes(method.as_bytes()).expect("an HTTP method"),
            path: path.into(),
            status: StatusCode::from_u16(status).expect("an HTTP status code"),
            body,
        }
    }
}

/// A `metav1.Status` failure body with `code` and `reason` (also its message).
pub fn status_body(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": reason, "reason": reason, "code": code,
    })
}

/// What a scenario saw.
#[derive(Debug)]
pub struct Served {
    /// The body of each scripted request, in order (`null` when it had none).
    pub bodies: Vec<Value>,
    /// The query string of each scripted request, in order (empty when it had none).
    pub queries: Vec<String>,
    /// The Events published, in the order they arrived.
    pub events: Vec<Value>,
}

impl Served {
    /// The `reason`s of the Events published.
    pub fn event_reasons(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// A running script of exchanges behind a client.
#[derive(Debug)]
pub struct Scenario {
    server: tokio::task::JoinHandle<Served>,
}

impl Scenario {
    /// A client (default namespace `default`) whose requests are answered by `script`, in order.
    /// Must be called within a Tokio runtime.
    pub fn start(script: Vec<Exchange>) -> (Client, Scenario) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(serve(handle, script));
        (Client::new(service, "default"), Scenario { server })
    }

    /// Waits until every client is dropped and returns what was served.
    ///
    /// # Panics
    ///
    /// When the requests differed from the script (see the module's guarantees).
    pub async fn finish(self) -> Served {
        match self.server.await {
            Ok(served) => served,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

async fn serve(
    handle: mock::Handle<Request<Body>, Response<Body>>,
    script: Vec<Exchange>,
) -> Served {
    let mut handle = pin!(handle);
    let mut script = script.into_iter();
    let mut served = Served {
        bodies: Vec::new(),
        queries: Vec::new(),
        events: Vec::new(),
    };
    while let Some((request, send)) = handle.next_request().await {
        let (method, uri) = (request.method().clone(), request.uri().clone());
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if uri.path().starts_with("/apis/events.k8s.io/") {
            let answer = if method == Method::POST {
                served.events.push(body.clone());
                (StatusCode::CREATED, body)
            } else {
                (StatusCode::OK, body)
            };
            send.send_response(respond(answer.0, &answer.1));
            continue;
        }
        let Some(expected) = script.next() else {
            panic!("unexpected request after the script: {method} {uri}");
        };
        assert_eq!(
            (&method, uri.path()),
            (&expected.method, expected.path.as_str()),
            "request {} of the script",
            served.bodies.len() + 1
        );
        served.bodies.push(body);
        served
            .queries
            .push(uri.query().unwrap_or_default().to_owned());
        send.send_response(respond(expected.status, &expected.body));
    }
    let left: Vec<String> = script.map(|e| format!("{} {}", e.method, e.path)).collect();
    assert!(left.is_empty(), "requests never made: {left:?}");
    served
}

fn respond(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::from(body.to_string().into_bytes()));
    *response.status_mut() = status;
    response
}

/// A ConfigMap `name` in namespace `ns` at resource version `resource_version`: the object of
/// the runtime's cache and store tests.
#[must_use]
pub fn config_map(name: &str, resource_version: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            resource_version: Some(resource_version.into()),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}
