//! Who a lock child belongs to: the label and annotation keys under which it names its parent
//! ([`OwnerKeys`]), the [`Owner`] they make for a parent, and the parent a child names read back
//! ([`Holder`], [`live_holder`]).
//!
//! Children may live in another namespace than their parent, so they cannot carry
//! `ownerReferences`; an operator declares its keys once and every piece of ownership follows
//! from them: what [`super::acquire`] stamps, what [`Owner::owns`] compares, what the runtime's
//! [`ChildWatch`] maps back to the parent, and who holds a child found in the way.
//!
//! Guarantees:
//! 1. [`OwnerKeys::owner`] names the parent by name and namespace labels (each a valid label
//!    value, [`LabelValue::fitting`]: a value longer than 63 characters is shortened and ends in
//!    a hash of the original), its full name as the annotation of the name label's key, and its
//!    uid under [`OwnerKeys::uid`]: ownership is by parent *instance*.
//! 2. [`OwnerKeys::holder`] reads the full name from the annotation, and falls back to the
//!    label when the annotation is missing or empty.
//! 3. [`live_holder`] answers `Some` only for the very instance the child names (same uid), from
//!    the cache when it has it and from the API server otherwise (a cache can lag a create).
//!
//! Assumptions:
//! 1. Parent names and namespaces contain no `/` (Kubernetes names never do), so the label value
//!    is the name itself whenever it fits.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::ApiResource;
use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

use crate::runtime::ParentStore;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{LockError, Owner};
use crate::names::LabelValue;
use crate::runtime::ChildWatch;

/// The keys under which a lock child names its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerKeys {
    /// Label: the parent's name (shortened and hashed past 63 characters). The annotation of the
    /// same key carries the full name.
    pub name: &'static str,
    /// Label: the parent's namespace.
    pub namespace: &'static str,
    /// Label: the parent's uid (ownership is by instance, not by name).
    pub uid: &'static str,
}

impl OwnerKeys {
    /// The lock owner `parent` is: its name and namespace labels, its full name as an
    /// annotation, and its uid (compared).
    #[must_use]
    pub fn owner<K: Resource>(&self, parent: &K) -> Owner {
        let name = parent.name_any();
        let namespace = parent.namespace().unwrap_or_default();
        let label = |value: &str| LabelValue::fitting(value, value).into_string();
        Owner {
            labels: BTreeMap::from([
                (self.name.to_owned(), label(&name)),
                (self.namespace.to_owned(), label(&namespace)),
            ]),
            annotations: BTreeMap::from([(self.name.to_owned(), name)]),
            uid: parent.uid(),
            uid_label: Some(self.uid.to_owned()),
        }
    }

    /// The parent `child` names (each part empty when the child does not say).
    #[must_use]
    pub fn holder(&self, child: &DynamicObject) -> Holder {
        let labels = child.labels();
        let label = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let name = child
            .annotations()
            .get(self.name)
            .filter(|n| !n.is_empty())
            .cloned()
            .unwrap_or_else(|| label(self.name));
        Holder {
            namespace: label(self.namespace),
            name,
            uid: label(self.uid),
        }
    }

    /// The runtime's watch of the children of kind `resource` in `namespace` (every namespace
    /// when `None`) that carry these keys, mapped back to the parent they name.
    #[must_use]
    pub fn child_watch(&self, resource: ApiResource, namespace: Option<String>) -> ChildWatch {
        ChildWatch {
            resource,
            namespace,
            selector: self.name.to_owned(),
            parent_labels: (self.name.to_owned(), self.namespace.to_owned()),
            // Names may be 253 characters long; the label carries a shortened form.
            parent_name_annotation: Some(self.name.to_owned()),
        }
    }
}

/// The parent a lock child names as its owner: namespace, full name and uid (each empty when the
/// child does not say).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Holder {
    /// The parent's namespace.
    pub namespace: String,
    /// The parent's full name (from the annotation, else the label).
    pub name: String,
    /// The parent's uid.
    pub uid: String,
}

/// The parent `holder` names, if it still exists *as that instance* (same uid): `parents` (the
/// cache) answers, and a miss is confirmed with the API server, since the cache can lag.
///
/// # Errors
///
/// [`LockError::Read`] when the API server cannot be asked.
pub async fn live_holder<K>(
    parents: &ParentStore<K>,
    client: &Client,
    holder: &Holder,
) -> Result<Option<Arc<K>>, LockError>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + 'static,
{
    if holder.name.is_empty() || holder.namespace.is_empty() {
        return Ok(None);
    }
    let same_instance = |p: &K| p.uid().as_deref() == Some(holder.uid.as_str());
    let reference = ObjectRef::new(&holder.name).within(&holder.namespace);
    if let Some(cached) = parents.get(&reference)
        && same_instance(&cached)
    {
        return Ok(Some(cached));
    }
    let api: Api<K> = Api::namespaced(client.clone(), &holder.namespace);
    let live = api
        .get_opt(&holder.name)
        .await
        .map_err(|source| LockError::Read {
            object: format!("{} {}/{}", K::kind(&()), holder.namespace, holder.name),
            source,
        })?;
    Ok(live.filter(|p| same_instance(p)).map(Arc::new))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    const KEYS: OwnerKeys = OwnerKeys {
        name: "example.com/parent",
        namespace: "example.com/parent-namespace",
        uid: "example.com/parent-uid",
    };

    fn parent(name: &str) -> ConfigMap {
        let mut parent = ConfigMap::default();
        parent.metadata.name = Some(name.to_owned());
        parent.metadata.namespace = Some("ns".to_owned());
        parent.metadata.uid = Some("u1".to_owned());
        parent
    }

    fn child(labels: serde_json::Value, annotations: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": labels, "annotations": annotations},
        }))
        .unwrap()
    }

    #[test]
    fn an_owner_owns_what_it_stamps_and_reads_back_as_its_holder() {
        let long = "p".repeat(80);
        for name in ["p", long.as_str()] {
            let owner = KEYS.owner(&parent(name));
            let stamped = child(json!(owner.child_labels()), json!(owner.annotations));
            assert!(owner.owns(stamped.labels()), "{name}");
            assert!(
                LabelValue::check(&stamped.labels()[KEYS.name]).is_ok(),
                "{name}"
            );
            let holder = Holder {
                namespace: "ns".into(),
                name: name.into(),
                uid: "u1".into(),
            };
            assert_eq!(KEYS.holder(&stamped), holder);
        }
        let mut other = parent("p");
        other.metadata.uid = Some("u2".to_owned());
        let stamped = child(json!(KEYS.owner(&parent("p")).child_labels()), json!({}));
        assert!(
            !KEYS.owner(&other).owns(stamped.labels()),
            "another instance"
        );
    }

    #[test]
    fn a_holder_without_the_annotation_is_named_by_its_label_and_parts_missing_are_empty() {
        let labelled = child(json!({KEYS.name: "short"}), json!({KEYS.name: ""}));
        let holder = KEYS.holder(&labelled);
        assert_eq!(
            (holder.name.as_str(), holder.namespace.as_str()),
            ("short", "")
        );
        assert_eq!(holder.uid, "");
    }
}
