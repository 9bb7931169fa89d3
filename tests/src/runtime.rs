//! The set-up the framework runtime's integration tests share: an operator on loopback ports
//! with short test schedules, watching parents and children marked by the test labels.
//!
//! A parent is any object labelled [`PARENT_LABEL`]`=true`; a child names its parent with
//! [`PARENT_NAME`] and [`PARENT_NAMESPACE`].

use std::{net::SocketAddr, time::Duration};

use kube::api::ApiResource;
use kubernaut_framework::runtime::{ChildWatch, ParentWatch, RuntimeSettings};

/// Label (`true`) of the test operators' parents.
pub const PARENT_LABEL: &str = "runtime.kubernaut.test/parent";
/// Label of a child: its parent's name.
pub const PARENT_NAME: &str = "runtime.kubernaut.test/parent-name";
/// Label of a child: its parent's namespace.
pub const PARENT_NAMESPACE: &str = "runtime.kubernaut.test/parent-namespace";

/// Runtime settings for a test operator `name`: metrics and health on free loopback ports, four
/// reconciles at once, templates polled every 200 ms, error backoff from 0.5 s to 5 s.
pub fn settings(name: &str) -> RuntimeSettings {
    let mut settings = RuntimeSettings::new(name);
    settings.metrics_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.health_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.concurrency = 4;
    settings.template_poll = Duration::from_millis(200);
    settings.error_backoff.base = Duration::from_millis(500);
    settings.error_backoff.max = Duration::from_secs(5);
    settings
}

/// The parents in `ns`: objects labelled [`PARENT_LABEL`]`=true`.
pub fn parents_in(ns: &str) -> ParentWatch {
    ParentWatch {
        namespace: Some(ns.to_string()),
        selector: Some(format!("{PARENT_LABEL}=true")),
    }
}

/// The children of kind `resource` in `ns`, mapped to their parents by [`PARENT_NAME`] and
/// [`PARENT_NAMESPACE`].
pub fn children_in(resource: ApiResource, ns: &str) -> ChildWatch {
    ChildWatch {
        resource,
        namespace: Some(ns.to_string()),
        selector: PARENT_NAME.into(),
        parent_labels: (PARENT_NAME.into(), PARENT_NAMESPACE.into()),
        parent_name_annotation: None,
    }
}
