//! What a reconcile looks up through its [`Context`]: the API and the cache of a child kind, and
//! the parents that share an object's index key ([`Operator::index_parents`]).
//!
//! # Guarantees
//! 1. [`Context::cached_child`] reads only the cache of the kind asked for: no API call.
//! 2. [`Context::same_key`] and [`Context::peers`] read the parent cache through the index, and
//!    return only objects that, as cached, still have the key of the object asked about.
//!
//! # Caveats
//! 1. Lookups are as fresh as the caches: a child created or a parent written a moment ago may not
//!    be there yet; decide on a miss only after asking the API server where that matters.
//!
//! [`Operator::index_parents`]: super::Operator::index_parents

use std::sync::Arc;

use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject},
    runtime::reflector::ObjectRef,
};

use super::Context;

impl<K, D> Context<K, D>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
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
    use kube::{
        api::ObjectMeta,
        runtime::{reflector::store::Writer, watcher::Event},
    };

    use super::*;
    use crate::{
        runtime::{KindStores, index::ParentIndex},
        testing::Scenario,
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
        let mut writer = Writer::<ConfigMap>::default();
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
        let mut writer = Writer::<DynamicObject>::new(kind.clone());
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
}
