//! What a reconcile looks up through its [`Context`]: the API and the cache of a child kind, and
//! the parents that share an object's index key ([`Operator::index_parents`]).
//!
//! It also reads an engine's children and grandchildren ([`Engine`]): the child a parent owns,
//! from the cache or on a miss from the API server ([`Context::owned_child`]), and the child's
//! grandchildren as its status mapping finds them ([`Context::cached_grandchildren`],
//! [`Context::read_grandchildren`]).
//!
//! # Guarantees
//! 1. [`Context::cached_child`] reads only the cache of the kind asked for: no API call.
//! 2. [`Context::same_key`] and [`Context::peers`] read the parent cache through the index, and
//!    return only objects that, as cached, still have the key of the object asked about.
//! 3. [`Context::owned_child`] returns only a child its `owns` accepts, cached or read; it asks
//!    the API server (one GET) only on a cache miss, and not at all when told the cache is enough.
//! 4. An engine without grandchildren has none to find: the grandchild lookups return an empty
//!    map and make no API call. [`Context::cached_grandchildren`] never makes one.
//!
//! # Caveats
//! 1. Lookups are as fresh as the caches: a child created or a parent written a moment ago may not
//!    be there yet; decide on a miss only after asking the API server where that matters.
//!
//! [`Operator::index_parents`]: super::Operator::index_parents

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::reflector::ObjectRef,
};
use serde_json::Value;

use super::Context;
use crate::engine::Engine;
use crate::status::grandchildren;

/// Whose grandchildren [`Context::read_grandchildren`] reads.
#[derive(Debug, Clone, Copy)]
pub enum GrandchildrenOf<'a> {
    /// Those of this child (a whole object, [`grandchildren::whole`]), as its status mapping
    /// finds them ([`grandchildren::read`]).
    Child(&'a Value),
    /// Those still present of a child of this name that is gone, found by the mapping's
    /// `grandchildren.ownerLabel` ([`grandchildren::read_of_deleted`]).
    Deleted(&'a str),
}

impl<K, D> Context<K, D>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static,
{
    /// The API of the children of `resource`'s kind in `namespace`.
    pub fn child_api(&self, resource: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, resource)
    }

    /// The cached child of `resource`'s kind named `namespace/name`.
    pub fn cached_child(
        &self,
        resource: &ApiResource,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<DynamicObject>> {
        self.children
            .get(&ObjectRef::new_with(name, resource.clone()).within(namespace))
    }

    /// The child of `engine`'s kind named `namespace/name` if `owns` accepts it: from the cache,
    /// and on a miss from the API server — unless `cache_is_enough` (the cache, synced before
    /// any reconcile, covers the namespace, so a miss needs no request).
    ///
    /// # Errors
    /// The API server's, when it was asked.
    pub async fn owned_child(
        &self,
        engine: &Engine,
        namespace: &str,
        name: &str,
        owns: impl Fn(&DynamicObject) -> bool,
        cache_is_enough: bool,
    ) -> kube::Result<Option<Arc<DynamicObject>>> {
        let resource = &engine.child_resource;
        let cached = self
            .cached_child(resource, namespace, name)
            .filter(|c| owns(c));
        if cached.is_some() || cache_is_enough {
            return Ok(cached);
        }
        let read = self.child_api(resource, namespace).get_opt(name).await?;
        Ok(read.filter(|c| owns(c)).map(Arc::new))
    }

    /// The grandchildren of `child` (a whole object, [`grandchildren::whole`]) in `namespace` as
    /// the grandchild cache holds them ([`grandchildren::cached`]); none for an engine without
    /// grandchildren.
    pub fn cached_grandchildren(
        &self,
        engine: &Engine,
        namespace: &str,
        child: &Value,
    ) -> BTreeMap<String, Value> {
        let Some(resource) = &engine.grandchild_resource else {
            return BTreeMap::new();
        };
        let stores = &self.grandchildren;
        grandchildren::cached(stores, resource, namespace, &engine.mapping, child)
    }

    /// The grandchildren in `namespace` read from the API server, of a child or of one that is
    /// gone ([`GrandchildrenOf`]); none for an engine without grandchildren.
    ///
    /// # Errors
    /// An API error (other than not-found for a child's own grandchildren).
    pub async fn read_grandchildren(
        &self,
        engine: &Engine,
        namespace: &str,
        of: GrandchildrenOf<'_>,
    ) -> kube::Result<BTreeMap<String, Value>> {
        let Some(api) = self.grandchild_api(engine, namespace) else {
            return Ok(BTreeMap::new());
        };
        let mapping = &engine.mapping;
        match of {
            GrandchildrenOf::Child(child) => grandchildren::read(&api, mapping, child).await,
            GrandchildrenOf::Deleted(name) => {
                grandchildren::read_of_deleted(&api, mapping, name).await
            }
        }
    }

    /// The API of `engine`'s grandchildren in `namespace`, when it has any.
    fn grandchild_api(&self, engine: &Engine, namespace: &str) -> Option<Api<DynamicObject>> {
        let resource = engine.grandchild_resource.as_ref()?;
        Some(self.child_api(resource, namespace))
    }

    /// The cached parents with `object`'s index key, `object` itself (as cached) included.
    pub fn same_key(&self, object: &K) -> Vec<Arc<K>> {
        self.parent_index.same_key(object, &self.parents)
    }

    /// The cached parents with `object`'s index key but another uid: the objects it shares its
    /// key with.
    pub fn peers(&self, object: &K) -> Vec<Arc<K>> {
        let uid = object.uid();
        let mut peers = self.same_key(object);
        peers.retain(|other| other.uid() != uid);
        peers
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::{api::ObjectMeta, runtime::watcher::Event};

    use super::*;
    use crate::{
        runtime::{KindStores, index::ParentIndex},
        testing::{Exchange, Scenario, status_body},
    };

    fn cm(name: &str, uid: &str, target: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            data: Some([("target".to_owned(), target.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn peers_share_the_key_and_exclude_the_object_itself() {
        let (client, scenario) = Scenario::start(Vec::new());
        let mut context = Context::<ConfigMap>::for_tests(client, ()).unwrap();
        let index = ParentIndex::new(|cm: &ConfigMap| cm.data.as_ref()?.get("target").cloned());
        let mut writer = crate::runtime::ParentWriter::<ConfigMap>::default();
        for object in [cm("a", "1", "t"), cm("b", "2", "t"), cm("c", "3", "u")] {
            writer.apply_watcher_event(&Event::Apply(object.clone()));
            index.apply(&Event::Apply(object));
        }
        context.parents = writer.as_reader();
        context.parent_index = Arc::new(index);
        let names = |objects: Vec<Arc<ConfigMap>>| {
            let mut names: Vec<String> = objects.iter().map(|o| o.name_any()).collect();
            names.sort();
            names
        };
        let a = cm("a", "1", "t");
        assert_eq!(names(context.same_key(&a)), ["a", "b"]);
        assert_eq!(names(context.peers(&a)), ["b"]);
        drop(context);
        scenario.finish().await;
    }

    #[tokio::test]
    async fn a_cached_child_is_looked_up_in_the_store_of_its_kind() {
        let (client, scenario) = Scenario::start(Vec::new());
        let mut context = Context::<ConfigMap>::for_tests(client, ()).unwrap();
        let kind = ApiResource::erase::<ConfigMap>(&());
        let mut writer = crate::runtime::ChildWriter::new(kind.clone());
        let child = DynamicObject::new("child", &kind).within("ns");
        writer.apply_watcher_event(&Event::Apply(child));
        context.children = KindStores::new([(kind.clone(), writer.as_reader())]);
        assert!(context.cached_child(&kind, "ns", "child").is_some());
        assert!(context.cached_child(&kind, "other", "child").is_none());
        let secrets = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        assert!(context.cached_child(&secrets, "ns", "child").is_none());
        assert_eq!(
            context.child_api(&kind, "ns").resource_url(),
            "/api/v1/namespaces/ns/configmaps"
        );
        drop(context);
        scenario.finish().await;
    }

    /// An engine whose child is a ConfigMap and which has no grandchildren.
    fn config_map_engine(dir: &std::path::Path) -> Engine {
        let engine = dir.join("cm");
        std::fs::create_dir(&engine).unwrap();
        std::fs::write(engine.join("configmap.yaml.j2"), "").unwrap();
        let status = "child: {apiVersion: v1, kind: ConfigMap}\nphase:\n  - then: Ready\n";
        std::fs::write(engine.join(crate::engine::STATUS_FILE), status).unwrap();
        let cancel = "child: {apiVersion: v1, kind: ConfigMap}\npatch: {data: {cancelled: \"true\"}}\n\
                      alreadyCancelled: {path: \"$.data.cancelled\", values: [\"true\"]}\nfinishGracePeriod: 1m\n";
        std::fs::write(engine.join(crate::engine::CANCEL_FILE), cancel).unwrap();
        let rules = crate::status::MappingRules {
            phases: vec!["Ready".to_owned()],
            results: vec![],
            require_grandchildren: false,
            required_fields: vec![],
        };
        Engine::load(dir, "cm", &rules).unwrap()
    }

    /// The owned child comes from the cache when it is there and owned, from one GET on a miss
    /// unless the cache is enough; a child `owns` refuses is never returned; an engine without
    /// grandchildren has none, without a request.
    #[tokio::test]
    async fn an_owned_child_is_read_from_the_cache_then_the_api_server() {
        let dir = tempfile::tempdir().unwrap();
        let engine = config_map_engine(dir.path());
        let owned = |name: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "ns", "labels": {"owner": "me"}}})
        };
        let path = "/api/v1/namespaces/ns/configmaps";
        let (client, scenario) = Scenario::start(vec![
            Exchange::new(
                "GET",
                format!("{path}/missing"),
                404,
                status_body(404, "NotFound"),
            ),
            Exchange::new("GET", format!("{path}/elsewhere"), 200, owned("elsewhere")),
        ]);
        let mut context = Context::<ConfigMap>::for_tests(client, ()).unwrap();
        let mut writer = crate::runtime::ChildWriter::new(engine.child_resource.clone());
        let cached: DynamicObject = serde_json::from_value(owned("cached")).unwrap();
        writer.apply_watcher_event(&Event::Apply(cached));
        context.children = KindStores::new([(engine.child_resource.clone(), writer.as_reader())]);
        let mine = |c: &DynamicObject| c.labels().get("owner").map(String::as_str) == Some("me");
        let name = |c: Option<Arc<DynamicObject>>| c.map(|c| c.name_any());
        let (ctx, engine_ref) = (&context, &engine);
        let cm = |n: &'static str, mine_only: bool, enough: bool| {
            let owns = move |c: &DynamicObject| mine(c) == mine_only;
            async move {
                name(
                    ctx.owned_child(engine_ref, "ns", n, owns, enough)
                        .await
                        .unwrap(),
                )
            }
        };
        assert_eq!(cm("cached", true, true).await, Some("cached".into()));
        assert_eq!(cm("missing", true, true).await, None, "no request");
        assert_eq!(cm("missing", true, false).await, None);
        assert_eq!(cm("elsewhere", true, false).await, Some("elsewhere".into()));
        assert_eq!(cm("cached", false, true).await, None, "not owned");
        let child = serde_json::json!({});
        assert!(
            context
                .cached_grandchildren(&engine, "ns", &child)
                .is_empty()
        );
        let of_child = context.read_grandchildren(&engine, "ns", GrandchildrenOf::Child(&child));
        assert!(of_child.await.unwrap().is_empty());
        let gone = context.read_grandchildren(&engine, "ns", GrandchildrenOf::Deleted("gone"));
        assert!(gone.await.unwrap().is_empty());
        drop(context);
        scenario.finish().await;
    }
}
