//! A record of every Kubernetes API request a client makes, in RBAC terms: verb, API group,
//! resource (with subresource), namespace and name, with the HTTP status of the answer.
//!
//! [`RequestLog::client`] builds a `kube::Client` whose every request passes through a recording
//! tower layer. A test hands that client to an operator, drives it, and then asks which RBAC
//! permissions the operator actually used ([`RequestLog::requests`]) — for example to show that
//! every rule of a Role was exercised, or that a request was refused.
//!
//! Guarantees:
//! 1. Requests are classified like the API server's request-info resolver: `GET` on a collection
//!    is `list` (`watch` with `watch=true`), on a named object `get`; `POST` is `create`, `PUT`
//!    `update`, `PATCH` `patch`, `DELETE` `delete` (`deletecollection` on a collection). Paths
//!    that name no resource (discovery, `/version`, `/readyz`) are non-resource requests.
//! 2. Every request is recorded exactly once, when its answer (or failure) arrives; a request whose
//!    connection failed has status 0.
//!
//! Caveats:
//! 1. Test code: the log grows without bound while the client lives.
//! 2. The deprecated `/api/v1/watch/...` paths are not classified (kube-rs does not use them).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use http::{Method, Request, Response};
use kube::{Client, Config, client::ClientBuilder};
use tower::{Layer, Service};

/// One API request in RBAC terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiRequest {
    /// The RBAC verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`); for non-resource requests the lowercased HTTP method.
    pub verb: String,
    /// The API group (`""` for the core group); `None` for a non-resource request.
    pub group: Option<String>,
    /// The resource, with its subresource as `resource/subresource` (`workflowexecutions/status`);
    /// `None` for a non-resource request.
    pub resource: Option<String>,
    /// The namespace of a namespaced request.
    pub namespace: Option<String>,
    /// The object's name, for requests on one object.
    pub name: Option<String>,
    /// The request path (without the query).
    pub path: String,
    /// The HTTP status of the answer; 0 when no answer arrived.
    pub status: u16,
}

impl ApiRequest {
    /// Whether authorization let the request through (any answer but 401 and 403).
    pub fn authorized(&self) -> bool {
        self.status != 0 && self.status != 401 && self.status != 403
    }

    /// Whether the request asks to change something (`create`, `update`, `patch`, `delete`,
    /// `deletecollection`), whatever the answer.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        )
    }

    /// `verb group/resource [namespace/name] -> status`, for messages.
    pub fn describe(&self) -> String {
        match (&self.group, &self.resource) {
            (Some(group), Some(resource)) => format!(
                "{} {}{} in {} ({}) -> {}",
                self.verb,
                if group.is_empty() {
                    String::new()
                } else {
                    format!("{group}/")
                },
                resource,
                self.namespace.as_deref().unwrap_or("<cluster>"),
                self.name.as_deref().unwrap_or("<collection>"),
                self.status
            ),
            _ => format!("{} {} -> {}", self.verb, self.path, self.status),
        }
    }
}

/// Classifies a request the way the API server's request-info resolver does; the status is 0
/// (not answered yet).
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> ApiRequest {
    let mut request = ApiRequest {
        verb: method.as_str().to_lowercase(),
        group: None,
        resource: None,
        namespace: None,
        name: None,
        path: path.to_owned(),
        status: 0,
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/<rest> or /apis/<group>/<version>/<rest>; anything else names no resource.
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => (String::new(), rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => ((*group).to_owned(), rest),
        _ => return request,
    };
    // namespaces/<ns>/<resource>... is namespaced; namespaces[/<name>[/<sub>]] is the namespace
    // resource itself.
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [resource] => ((*resource).to_owned(), None),
        [resource, name] => ((*resource).to_owned(), Some((*name).to_owned())),
        [resource, name, sub, ..] => (format!("{resource}/{sub}"), Some((*name).to_owned())),
        [] => return request,
    };
    let watch = query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match (method.as_str(), name.is_some()) {
        ("GET" | "HEAD", _) if watch => "watch",
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => request.verb.as_str(),
    };
    request.verb = verb.to_owned();
    request.group = Some(group);
    request.resource = Some(resource);
    request.namespace = namespace;
    request.name = name;
    request
}

/// A shared, growing list of the requests made through its clients.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<ApiRequest>>>);

impl RequestLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A client for `config` whose requests are all recorded in this log.
    pub fn client(&self, config: Config) -> anyhow::Result<Client> {
        Ok(ClientBuilder::try_from(config)?
            .with_layer(&RecordLayer { log: self.clone() })
            .build())
    }

    /// Every request recorded so far, oldest first.
    pub fn requests(&self) -> Vec<ApiRequest> {
        match self.0.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn push(&self, request: ApiRequest) {
        match self.0.lock() {
            Ok(mut guard) => guard.push(request),
            Err(poisoned) => poisoned.into_inner().push(request),
        }
    }
}

/// The tower layer behind [`RequestLog::client`].
#[derive(Clone)]
struct RecordLayer {
    log: RequestLog,
}

impl<S> Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Record {
            inner,
            log: self.log.clone(),
        }
    }
}

/// Records each request with the status of its answer.
#[derive(Clone)]
struct Record<S> {
    inner: S,
    log: RequestLog,
}

impl<S, B, R> Service<Request<B>> for Record<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut record = classify(
            request.method(),
            request.uri().path(),
            request.uri().query(),
        );
        let log = self.log.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            record.status = result.as_ref().map_or(0, |r| r.status().as_u16());
            log.push(record);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_classified_like_the_api_server_does() {
        type Want = (
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
            Option<&'static str>,
        );
        let cases: [(&str, &str, Option<&str>, Want); 14] = [
            (
                "GET",
                "/apis/kubernaut.ai/v1alpha1/workflowexecutions",
                None,
                (
                    "list",
                    Some("kubernaut.ai"),
                    Some("workflowexecutions"),
                    None,
                    None,
                ),
            ),
            (
                "GET",
                "/apis/kubernaut.ai/v1alpha1/workflowexecutions",
                Some("watch=true&resourceVersion=1"),
                (
                    "watch",
                    Some("kubernaut.ai"),
                    Some("workflowexecutions"),
                    None,
                    None,
                ),
            ),
            (
                "GET",
                "/apis/tekton.dev/v1/namespaces/w/pipelineruns/run-1",
                None,
                (
                    "get",
                    Some("tekton.dev"),
                    Some("pipelineruns"),
                    Some("w"),
                    Some("run-1"),
                ),
            ),
            (
                "GET",
                "/apis/tekton.dev/v1/namespaces/w/pipelineruns",
                Some("labelSelector=a&watch=1"),
                (
                    "watch",
                    Some("tekton.dev"),
                    Some("pipelineruns"),
                    Some("w"),
                    None,
                ),
            ),
            (
                "POST",
                "/apis/tekton.dev/v1/namespaces/w/pipelineruns",
                None,
                (
                    "create",
                    Some("tekton.dev"),
                    Some("pipelineruns"),
                    Some("w"),
                    None,
                ),
            ),
            (
                "PUT",
                "/apis/kubernaut.ai/v1alpha1/namespaces/n/workflowexecutions/x/status",
                None,
                (
                    "update",
                    Some("kubernaut.ai"),
                    Some("workflowexecutions/status"),
                    Some("n"),
                    Some("x"),
                ),
            ),
            (
                "PATCH",
                "/apis/kubernaut.ai/v1alpha1/namespaces/n/workflowexecutions/x",
                None,
                (
                    "patch",
                    Some("kubernaut.ai"),
                    Some("workflowexecutions"),
                    Some("n"),
                    Some("x"),
                ),
            ),
            (
                "DELETE",
                "/apis/tekton.dev/v1/namespaces/w/pipelineruns/run-1",
                None,
                (
                    "delete",
                    Some("tekton.dev"),
                    Some("pipelineruns"),
                    Some("w"),
                    Some("run-1"),
                ),
            ),
            (
                "DELETE",
                "/apis/tekton.dev/v1/namespaces/w/pipelineruns",
                None,
                (
                    "deletecollection",
                    Some("tekton.dev"),
                    Some("pipelineruns"),
                    Some("w"),
                    None,
                ),
            ),
            (
                "GET",
                "/api/v1/namespaces/kube-system",
                None,
                (
                    "get",
                    Some(""),
                    Some("namespaces"),
                    None,
                    Some("kube-system"),
                ),
            ),
            (
                "POST",
                "/api/v1/namespaces/s/serviceaccounts/op/token",
                None,
                (
                    "create",
                    Some(""),
                    Some("serviceaccounts/token"),
                    Some("s"),
                    Some("op"),
                ),
            ),
            (
                "GET",
                "/apis/tekton.dev/v1",
                None,
                ("get", None, None, None, None),
            ),
            ("GET", "/version", None, ("get", None, None, None, None)),
            ("GET", "/apis", None, ("get", None, None, None, None)),
        ];
        for (method, path, query, want) in cases {
            let method: Method = method.parse().unwrap();
            let got = classify(&method, path, query);
            let got = (
                got.verb.as_str(),
                got.group.as_deref(),
                got.resource.as_deref(),
                got.namespace.as_deref(),
                got.name.as_deref(),
            );
            assert_eq!(got, want, "{method} {path}?{query:?}");
        }
    }
}
