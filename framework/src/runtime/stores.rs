//! The child and grandchild caches: one reflector store per watched kind.
//!
//! A kube reflector store holds objects of one kind (its `Writer` has one `ApiResource`, and the
//! end of each (re)list swaps the whole store), so children of several kinds (say a Tekton
//! `PipelineRun` and a `batch/v1` `Job`) are cached in one store each. [`KindStores`] puts them
//! behind one reader that picks the store by the kind a reference names.
//!
//! # Guarantees
//! 1. [`KindStores::get`] looks only in the store of the reference's kind (its `dyntype`); a kind
//!    that is not watched holds nothing.
//! 2. [`KindStores::get`] and [`KindStores::state`] hand out objects with their fields as a JSON
//!    tree ([`thaw`]), whether or not the store holds them frozen.
//! 3. [`KindStores::wait_until_ready`] returns once every kind's store completed its first list
//!    (at once when no kind is watched).

use std::sync::Arc;

use super::prune::thaw;
use kube::{
    api::{ApiResource, DynamicObject},
    runtime::reflector::{ObjectRef, Store, store::WriterDropped},
};

/// Reflector stores of dynamic objects, one per kind, such as [`Context::children`] and
/// [`Context::grandchildren`].
///
/// [`Context::children`]: super::Context::children
/// [`Context::grandchildren`]: super::Context::grandchildren
#[derive(Clone, Default)]
pub struct KindStores {
    stores: Vec<(ApiResource, Store<DynamicObject>)>,
}

impl KindStores {
    /// Stores of the given kinds; a kind given twice keeps its last store.
    pub fn new(stores: impl IntoIterator<Item = (ApiResource, Store<DynamicObject>)>) -> Self {
        let mut this = Self::default();
        for (resource, store) in stores {
            this.insert(resource, store);
        }
        this
    }

    /// Sets the store of `resource`'s kind, replacing the one it had.
    pub fn insert(&mut self, resource: ApiResource, store: Store<DynamicObject>) {
        match self.stores.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, existing)) => *existing = store,
            None => self.stores.push((resource, store)),
        }
    }

    /// The cached object `reference` names, looked up in the store of its kind (its `dyntype`).
    pub fn get(&self, reference: &ObjectRef<DynamicObject>) -> Option<Arc<DynamicObject>> {
        self.of(&reference.dyntype)?.get(reference).map(thaw)
    }

    /// Every cached object, of every kind (kinds in the order they were watched).
    pub fn state(&self) -> Vec<Arc<DynamicObject>> {
        self.stores
            .iter()
            .flat_map(|(_, store)| store.state())
            .map(thaw)
            .collect()
    }

    /// The store of `resource`'s kind, when that kind is watched. Its objects are as cached: the
    /// runtime keeps their fields frozen ([`thaw`] them to read more than the metadata).
    pub fn of(&self, resource: &ApiResource) -> Option<&Store<DynamicObject>> {
        self.stores
            .iter()
            .find(|(r, _)| r == resource)
            .map(|(_, store)| store)
    }

    /// The watched kinds, in the order they were watched.
    pub fn kinds(&self) -> impl Iterator<Item = &ApiResource> {
        self.stores.iter().map(|(resource, _)| resource)
    }

    /// Waits until every kind's store completed its first list.
    ///
    /// kube wakes only the most recent of several concurrent waiters on one store (a later
    /// waiter, even one dropped unfinished, leaves an earlier one asleep): the runtime waits
    /// itself and reconciles only after every cache synced, so neither a reconciler nor anything
    /// else beside a running operator should wait here ([`super::Probes::is_synced`] tells).
    ///
    /// # Errors
    /// [`WriterDropped`] when a store's reflector went away before its first list completed.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        for (_, store) in &self.stores {
            store.wait_until_ready().await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for KindStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.stores
                    .iter()
                    .map(|(resource, store)| (&resource.kind, store.len())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::runtime::{reflector::store::Writer, watcher};

    fn object(resource: &ApiResource, name: &str) -> DynamicObject {
        DynamicObject::new(name, resource).within("ns")
    }

    /// Two kinds with an object of the same name each: a reference finds the one of its kind,
    /// `state` holds both, and the stores are ready only when both listed.
    #[test]
    fn each_kind_is_looked_up_in_its_own_store_and_all_must_be_ready() {
        let (configmaps, secrets) = (
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<Secret>(&()),
        );
        let mut cm_writer = Writer::<DynamicObject>::new(configmaps.clone());
        let mut secret_writer = Writer::<DynamicObject>::new(secrets.clone());
        let stores = KindStores::new([
            (configmaps.clone(), cm_writer.as_reader()),
            (secrets.clone(), secret_writer.as_reader()),
        ]);
        // Only this test waits on these stores, so polling a fresh waiter each time is safe.
        let is_ready = |stores: &KindStores| stores.wait_until_ready().now_or_never().is_some();
        assert!(!is_ready(&stores), "nothing listed yet");
        cm_writer.apply_watcher_event(&watcher::Event::Init);
        cm_writer.apply_watcher_event(&watcher::Event::InitApply(object(&configmaps, "same")));
        cm_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(!is_ready(&stores), "the Secrets have not listed yet");
        secret_writer.apply_watcher_event(&watcher::Event::InitDone);
        assert!(is_ready(&stores));
        let reference = |resource: &ApiResource| {
            ObjectRef::<DynamicObject>::new_with("same", resource.clone()).within("ns")
        };
        assert!(stores.get(&reference(&configmaps)).is_some());
        assert!(stores.get(&reference(&secrets)).is_none(), "no such Secret");
        secret_writer.apply_watcher_event(&watcher::Event::Apply(object(&secrets, "same")));
        let found = stores.get(&reference(&secrets));
        assert_eq!(
            found.and_then(|s| s.types.clone()).map(|t| t.kind),
            Some("Secret".into())
        );
        assert_eq!(stores.state().len(), 2);
        assert_eq!(stores.of(&secrets).map(Store::len), Some(1));
        let pods = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        assert!(stores.of(&pods).is_none());
        assert!(stores.get(&reference(&pods)).is_none());
        assert!(is_ready(&KindStores::default()), "no kind: ready at once");
    }
}
