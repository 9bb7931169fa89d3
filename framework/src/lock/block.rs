//! A held lock kept as a *block*: a record on the lock child (an annotation) that says why its key
//! must stay locked until a person clears it, whatever happens to the parent that held it.
//!
//! A controller whose failed work must not be retried automatically (a remediation that ran half
//! way, say) keeps the failed child in place as the key's lock and marks it with
//! [`BlockMarker::mark`]; the record (the controller's own type, stored as JSON) describes the
//! failure after the parent is gone. The controller's [`super::Tenancy::blocks`] reads it with
//! [`BlockMarker::read`], so [`super::Locks::claim`] never breaks a marked child as stale. Once a
//! person clears the block (the controller decides how, for example through an annotation on the
//! parent), [`BlockMarker::lift`] makes the child an ordinary lock again.
//!
//! A block whose parent is gone has nobody left to clear it on: another parent of the key asks
//! for it to be cleared, and [`BlockMarker::break_orphaned`] deletes the marked child.
//!
//! Guarantees:
//! 1. [`BlockMarker::mark`] writes once: a child that already carries a record is left as it is,
//!    so the first failure's description stays.
//! 2. Marking and lifting write only to the very child judged (its uid is in the patch): a child
//!    deleted or replaced meanwhile is left alone ([`Annotated::Gone`]).
//! 3. [`BlockMarker::break_orphaned`] deletes only a marked child whose holder
//!    ([`Tenancy::holder`]) is gone, and exactly the child it judged (uid precondition).
//! 4. An unreadable record still blocks: [`BlockMarker::read`] hands its raw text back as
//!    [`Marked::Unreadable`], so a hand-edited value never lifts a block by accident.
//!
//! Caveats:
//! 1. The record lives in the child's annotations: a prune function of the runtime's child cache
//!    must keep [`BlockMarker::key`], or the cache never shows a block.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, ResourceExt};
use serde::{Serialize, de::DeserializeOwned};

use super::{LockError, LockKind, Tenancy, break_stale_with_policy, object_path};
use crate::annotation::{Annotated, annotate_exact};

/// The annotation under which a lock child records that it holds a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockMarker {
    /// The annotation key (a qualified name such as `example.com/execution-block`).
    pub key: &'static str,
}

/// The block record a child carries, as [`BlockMarker::read`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked<T> {
    /// The record, as written by [`BlockMarker::mark`].
    Record(T),
    /// The annotation is there but is not a record: its raw text.
    Unreadable(String),
}

impl BlockMarker {
    /// The block `child` carries, if any.
    #[must_use]
    pub fn read<T: DeserializeOwned>(&self, child: &DynamicObject) -> Option<Marked<T>> {
        let raw = child.annotations().get(self.key)?;
        Some(
            serde_json::from_str(raw)
                .map_or_else(|_| Marked::Unreadable(raw.clone()), Marked::Record),
        )
    }

    /// Whether `child` carries a block.
    #[must_use]
    pub fn is_marked(&self, child: &DynamicObject) -> bool {
        child.annotations().contains_key(self.key)
    }

    /// Marks `child` (through `api`) as holding the block `record` describes, unless it already
    /// carries one. Returns whether it wrote the mark.
    ///
    /// # Errors
    ///
    /// The API error of the patch, unless the child is gone or replaced.
    pub async fn mark<T: Serialize>(
        &self,
        api: &Api<DynamicObject>,
        child: &DynamicObject,
        record: &T,
    ) -> kube::Result<bool> {
        if self.is_marked(child) {
            return Ok(false);
        }
        let value = serde_json::to_string(record).unwrap_or_default();
        let written = annotate_exact(api, child, self.key, Some(&value)).await?;
        Ok(written == Annotated::Written)
    }

    /// Removes the block of `child` (through `api`), if it carries one: the child is an ordinary
    /// lock again.
    ///
    /// # Errors
    ///
    /// The API error of the patch, unless the child is gone or replaced.
    pub async fn lift(&self, api: &Api<DynamicObject>, child: &DynamicObject) -> kube::Result<()> {
        if self.is_marked(child) {
            annotate_exact(api, child, self.key, None).await?;
        }
        Ok(())
    }

    /// Breaks a block nobody can clear any more: the child `name` in `namespace`, of the first of
    /// `kinds` that has one, if it carries a block and `tenancy` finds no live holder for it. Returns
    /// the kind of the child deleted, or `None` when there was no such child.
    ///
    /// # Errors
    ///
    /// [`LockError`] when a child cannot be read, its holder cannot be looked up, or it cannot be
    /// deleted.
    pub async fn break_orphaned<T: Tenancy>(
        &self,
        client: &Client,
        namespace: &str,
        name: &str,
        kinds: &[LockKind],
        tenancy: &T,
    ) -> Result<Option<ApiResource>, LockError> {
        for kind in kinds {
            let api = Api::namespaced_with(client.clone(), namespace, &kind.resource);
            let read = api.get_opt(name).await;
            let child = read.map_err(|source| LockError::Read {
                object: object_path(&api, name),
                source,
            })?;
            if let Some(child) = child
                && self.is_marked(&child)
                && tenancy.holder(&child).await?.is_none()
            {
                break_stale_with_policy(&api, &child, kind.propagation.clone()).await?;
                return Ok(Some(kind.resource.clone()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ApiResource;
    use serde_json::json;

    use super::*;
    use crate::testing::{Exchange, Scenario, status_body};

    /// A tenancy whose only live holder is `live`.
    struct Holders {
        live: &'static str,
    }

    impl Tenancy for Holders {
        type Holder = String;

        async fn holder(&self, child: &DynamicObject) -> Result<Option<String>, LockError> {
            let parent = child.labels().get("parent").cloned().unwrap_or_default();
            Ok((parent == self.live).then_some(parent))
        }

        fn blocks(&self, child: &DynamicObject, _: Option<&String>) -> bool {
            MARKER.is_marked(child)
        }

        fn done_with(&self, _: &String) -> bool {
            false
        }
    }

    const MARKER: BlockMarker = BlockMarker {
        key: "example.com/block",
    };

    fn child(annotations: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1", "annotations": annotations},
        }))
        .unwrap()
    }

    /// Runs `call` against a server expecting `patches` (each the annotation value sent); returns
    /// what `call` returned.
    async fn serve<F, T>(patches: &[Option<&str>], call: F) -> T
    where
        F: AsyncFnOnce(&Api<DynamicObject>) -> T,
    {
        let path = "/api/v1/namespaces/ns/configmaps/c";
        let script = patches
            .iter()
            .map(|_| Exchange::new("PATCH", path, 200, json!(child(json!({})))))
            .collect();
        let (client, scenario) = Scenario::start(script);
        let resource = ApiResource::erase::<ConfigMap>(&());
        let api = Api::namespaced_with(client, "ns", &resource);
        let result = call(&api).await;
        drop(api);
        let served = scenario.finish().await;
        let sent: Vec<serde_json::Value> = served
            .bodies
            .iter()
            .map(|b| b["metadata"]["annotations"][MARKER.key].clone())
            .collect();
        let expected: Vec<serde_json::Value> = patches.iter().map(|p| json!(p)).collect();
        assert_eq!(sent, expected);
        result
    }

    #[tokio::test]
    async fn a_mark_is_written_once_and_lifted_only_where_it_is() {
        let record = json!({"reason": "TaskFailed"});
        let text = record.to_string();
        let plain = child(json!({}));
        let marked = child(json!({MARKER.key: text}));
        let wrote = serve(&[Some(&text)], async |api| {
            MARKER.mark(api, &plain, &record).await
        })
        .await;
        assert!(wrote.unwrap(), "an unmarked child is marked");
        let again = serve(&[], async |api| {
            MARKER.mark(api, &marked, &json!("other")).await
        })
        .await;
        assert!(!again.unwrap(), "the first record stays");
        serve(&[None], async |api| MARKER.lift(api, &marked).await)
            .await
            .unwrap();
        serve(&[], async |api| MARKER.lift(api, &plain).await)
            .await
            .unwrap();
    }

    #[test]
    fn a_record_reads_back_and_an_unreadable_one_still_blocks() {
        let record = json!({"reason": "TaskFailed"});
        let marked = child(json!({MARKER.key: record.to_string()}));
        assert_eq!(MARKER.read(&marked), Some(Marked::Record(record)));
        let edited = child(json!({MARKER.key: "by hand"}));
        assert_eq!(
            MARKER.read::<serde_json::Value>(&edited),
            Some(Marked::Unreadable("by hand".to_owned()))
        );
        assert!(MARKER.is_marked(&edited));
        let plain = child(json!({"other": "x"}));
        assert_eq!(MARKER.read::<serde_json::Value>(&plain), None);
        assert!(!MARKER.is_marked(&plain));
    }

    /// A marked child of the second kind whose holder is gone is deleted (with its uid); one whose
    /// holder lives, or an unmarked one, is left.
    #[tokio::test]
    async fn only_a_marked_child_whose_holder_is_gone_is_broken() {
        let kinds = [
            LockKind {
                resource: ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
                propagation: kube::api::PropagationPolicy::Background,
            },
            LockKind {
                resource: ApiResource::erase::<ConfigMap>(&()),
                propagation: kube::api::PropagationPolicy::Foreground,
            },
        ];
        let secret = "/api/v1/namespaces/ns/secrets/c";
        let map = "/api/v1/namespaces/ns/configmaps/c";
        let marked = |parent: &str| {
            let mut child = child(json!({MARKER.key: "{}"}));
            child.metadata.labels = Some([("parent".to_owned(), parent.to_owned())].into());
            json!(child)
        };
        let cases = [
            ("holder gone", marked("gone"), true),
            ("holder lives", marked("live"), false),
            ("not marked", json!(child(json!({}))), false),
        ];
        for (case, found, broken) in cases {
            let mut script = vec![
                Exchange::new("GET", secret, 404, status_body(404, "NotFound")),
                Exchange::new("GET", map, 200, found.clone()),
            ];
            if broken {
                script.push(Exchange::new("DELETE", map, 200, found));
            }
            let (client, scenario) = Scenario::start(script);
            let holders = Holders { live: "live" };
            let result = MARKER
                .break_orphaned(&client, "ns", "c", &kinds, &holders)
                .await
                .unwrap();
            drop(client);
            let served = scenario.finish().await;
            assert_eq!(result.is_some(), broken, "{case}");
            if broken {
                assert_eq!(served.bodies[2]["preconditions"]["uid"], "u1", "{case}");
                assert_eq!(
                    served.bodies[2]["propagationPolicy"], "Foreground",
                    "{case}"
                );
            }
        }
    }
}
