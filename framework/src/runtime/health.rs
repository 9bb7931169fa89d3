//! The HTTP endpoints: `/healthz` and `/readyz` on the health address, `/metrics` on the metrics
//! address (both on one listener when the two addresses are equal).
//!
//! # Guarantees
//! 1. `/readyz` answers 200 only once the parent cache and every child and grandchild kind's
//!    cache have completed their first list (reflector `Store::wait_until_ready`), on the leader and on standby replicas alike,
//!    and 503 again once shutdown has begun (so traffic drains before the process exits).
//! 2. `/healthz` answers 200 while the runtime's tasks are alive and 503 after one of them died.
//! 3. `/metrics` serves the operator's whole [`prometheus::Registry`] in the text format.
//!
//! # Caveats
//! 1. Plain HTTP without authentication: bind to a pod-local address and protect the metrics
//!    port with a NetworkPolicy if scrapes must be restricted.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus::Registry;

use super::metrics::{TEXT_CONTENT_TYPE, encode_text};

/// The probe state shared by the runtime's tasks and the health endpoints.
#[derive(Debug)]
pub struct Probes {
    synced: AtomicBool,
    stopping: AtomicBool,
    failed: AtomicBool,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            synced: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        }
    }
}

impl Probes {
    /// Whether `/readyz` answers 200: caches synced and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.synced.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }

    /// Whether `/healthz` answers 200: no runtime task has died.
    pub fn is_alive(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    /// Whether the caches have completed their first list.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    pub(crate) fn mark_synced(&self) {
        self.synced.store(true, Ordering::Release);
    }

    pub(crate) fn mark_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub(crate) fn mark_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }
}

fn probe(ok: bool, what: &'static str) -> Response {
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, what).into_response()
    }
}

/// `/healthz` and `/readyz`.
pub(crate) fn health_router(probes: Arc<Probes>) -> Router {
    let live = probes.clone();
    Router::new()
        .route(
            "/healthz",
            get(move || {
                let ok = live.is_alive();
                async move { probe(ok, "a runtime task failed\n") }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ok = probes.is_ready();
                async move { probe(ok, "caches not synced or shutting down\n") }
            }),
        )
}

/// `/metrics`.
pub(crate) fn metrics_router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let encoded = encode_text(&registry);
            async move {
                match encoded {
                    Ok(text) => ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], text).into_response(),
                    Err(error) => {
                        tracing::warn!(%error, "encoding metrics failed");
                        (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
                    }
                }
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_sync_and_shutdown() {
        let probes = Probes::default();
        type Step = (&'static str, fn(&Probes), bool, bool);
        let steps: [Step; 4] = [
            ("fresh", |_| {}, false, true),
            ("synced", Probes::mark_synced, true, true),
            ("stopping", Probes::mark_stopping, false, true),
            ("failed", Probes::mark_failed, false, false),
        ];
        for (name, step, ready, alive) in steps {
            step(&probes);
            assert_eq!(probes.is_ready(), ready, "{name}: ready");
            assert_eq!(probes.is_alive(), alive, "{name}: alive");
        }
    }
}
