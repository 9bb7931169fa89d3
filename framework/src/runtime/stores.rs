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
//! 2. Each store holds its objects frozen ([`FrozenObject`]: name, namespace, labels and
//!    resourceVersion as metadata, the rest one compact JSON text, compressed); [`KindStores::get`],
//!    [`KindStores::state`] and [`ChildStore`]'s readers hand them out thawed, as they were
//!    stored.
//! 3. [`KindStores::wait_until_ready`] returns once every kind's store completed its first list
//!    (at once when no kind is watched).

use std::{borrow::Cow, sync::Arc};

use kube::{
    Resource,
    api::{ApiResource, DynamicObject, ObjectMeta},
    core::DynamicResourceScope,
    runtime::{
        reflector::{ObjectRef, Store, store::Writer, store::WriterDropped},
        watcher::Event,
    },
};

use super::frozen::{frozen_event, pack, unpack};

/// A child or grandchild as its kind's cache holds it: its name, namespace, labels and
/// resourceVersion (what references, the parent mapping's fallback and label lookups read), and
/// everything else as compact JSON text, compressed when that is smaller.
///
/// Its kind is an `Arc<ApiResource>`, so each cache key shares its kind's description instead of
/// copying five strings.
#[derive(Clone, Debug)]
pub struct FrozenObject {
    metadata: ObjectMeta,
    /// The labels as `key=value` lines, when they are non-empty and each key is free of `=` and
    /// line breaks and each value of line breaks (always, for labels the API server accepted);
    /// otherwise they stay in `metadata`.
    labels: Option<Box<str>>,
    body: Body,
}

/// The rest of a frozen object.
#[derive(Clone, Debug)]
enum Body {
    /// Deflated text ([`pack`]).
    Packed(Box<[u8]>),
    /// The text itself, when compressing did not make it smaller.
    Text(Box<str>),
}

impl FrozenObject {
    /// `object` frozen.
    pub fn freeze(mut object: DynamicObject) -> Self {
        let kept = &mut object.metadata;
        let mut metadata = ObjectMeta {
            name: kept.name.take(),
            namespace: kept.namespace.take(),
            labels: kept.labels.take(),
            resource_version: kept.resource_version.take(),
            ..ObjectMeta::default()
        };
        let labels = metadata.labels.as_ref().and_then(label_lines);
        if labels.is_some() {
            metadata.labels = None;
        }
        // A JSON tree and typed metadata always serialize.
        let text = serde_json::to_string(&object).unwrap_or_default();
        let body = match pack(&text) {
            Some(packed) => Body::Packed(packed),
            None => Body::Text(text.into_boxed_str()),
        };
        FrozenObject {
            metadata,
            labels,
            body,
        }
    }

    /// The label `key`'s value, read without thawing.
    pub fn label(&self, key: &str) -> Option<&str> {
        match &self.labels {
            Some(lines) => lines.lines().find_map(|line| {
                let (k, v) = line.split_once('=')?;
                (k == key).then_some(v)
            }),
            None => self.metadata.labels.as_ref()?.get(key).map(String::as_str),
        }
    }

    /// The object as it was frozen. `None` only if its text no longer parsed, which cannot happen
    /// to text `freeze` wrote; it is logged.
    pub fn thaw(&self) -> Option<DynamicObject> {
        let text = match &self.body {
            Body::Packed(packed) => Cow::Owned(unpack(packed).unwrap_or_default()),
            Body::Text(text) => Cow::Borrowed(&**text),
        };
        let mut object: DynamicObject = match serde_json::from_str(&text) {
            Ok(object) => object,
            Err(error) => {
                tracing::error!(name = ?self.metadata.name, %error, "a cached object does not thaw");
                return None;
            }
        };
        let metadata = &mut object.metadata;
        metadata.name.clone_from(&self.metadata.name);
        metadata.namespace.clone_from(&self.metadata.namespace);
        metadata.labels = match &self.labels {
            Some(lines) => Some(
                lines
                    .lines()
                    .filter_map(|line| line.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            ),
            None => self.metadata.labels.clone(),
        };
        metadata
            .resource_version
            .clone_from(&self.metadata.resource_version);
        Some(object)
    }
}

impl Resource for FrozenObject {
    type DynamicType = Arc<ApiResource>;
    type Scope = DynamicResourceScope;

    fn kind(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &Arc<ApiResource>) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// `labels` as `key=value` lines, when that is unambiguous (see [`FrozenObject`]).
fn label_lines(labels: &std::collections::BTreeMap<String, String>) -> Option<Box<str>> {
    let plain = |text: &str| !text.contains(['\n', '\r']);
    if labels.is_empty()
        || !labels
            .iter()
            .all(|(k, v)| plain(k) && plain(v) && !k.contains('='))
    {
        return None;
    }
    let lines: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(lines.join("\n").into_boxed_str())
}

/// One kind's cache: kube's reflector store of [`FrozenObject`]s, read as dynamic objects.
#[derive(Clone)]
pub struct ChildStore {
    resource: Arc<ApiResource>,
    store: Store<FrozenObject>,
}

impl ChildStore {
    /// The cached object of this kind named `name` in `namespace`, thawed.
    pub fn get(&self, name: &str, namespace: Option<&str>) -> Option<Arc<DynamicObject>> {
        let reference = ObjectRef::new_with(name, self.resource.clone());
        let reference = match namespace {
            Some(namespace) => reference.within(namespace),
            None => reference,
        };
        self.store.get(&reference)?.thaw().map(Arc::new)
    }

    /// Every cached object of this kind, thawed.
    pub fn state(&self) -> Vec<Arc<DynamicObject>> {
        self.matching(|_| true)
    }

    /// The cached objects `keep` accepts, thawed; `keep` reads what a frozen object keeps
    /// outside its text (name, namespace, labels, resourceVersion), and the others are not
    /// thawed.
    pub fn matching(&self, keep: impl Fn(&FrozenObject) -> bool) -> Vec<Arc<DynamicObject>> {
        self.store
            .state()
            .iter()
            .filter(|frozen| keep(frozen))
            .filter_map(|frozen| frozen.thaw().map(Arc::new))
            .collect()
    }

    /// Every cached object of this kind, as cached (frozen).
    pub(crate) fn frozen_state(&self) -> Vec<Arc<FrozenObject>> {
        self.store.state()
    }

    super::frozen::store_size!("objects of this kind", "object of this kind");
}

/// Fills a [`ChildStore`] from watch events of one kind, freezing each object.
pub struct ChildWriter {
    resource: Arc<ApiResource>,
    writer: Writer<FrozenObject>,
}

impl ChildWriter {
    /// A writer of `resource`'s cache.
    pub fn new(resource: ApiResource) -> Self {
        let resource = Arc::new(resource);
        ChildWriter {
            writer: Writer::new(resource.clone()),
            resource,
        }
    }

    /// Applies one watch event as kube's reflector would (a re-list swaps the whole store at its
    /// end), freezing the objects it carries.
    pub fn apply_watcher_event(&mut self, event: &Event<DynamicObject>) {
        self.writer
            .apply_watcher_event(&frozen_event(event, FrozenObject::freeze));
    }

    /// A reader of the store this writer fills.
    pub fn as_reader(&self) -> ChildStore {
        ChildStore {
            resource: self.resource.clone(),
            store: self.writer.as_reader(),
        }
    }
}

/// The caches of several kinds, one per kind, such as [`Context::children`] and
/// [`Context::grandchildren`].
///
/// [`Context::children`]: super::Context::children
/// [`Context::grandchildren`]: super::Context::grandchildren
#[derive(Clone, Default)]
pub struct KindStores {
    stores: Vec<(ApiResource, ChildStore)>,
}

impl KindStores {
    /// Stores of the given kinds; a kind given twice keeps its last store.
    pub fn new(stores: impl IntoIterator<Item = (ApiResource, ChildStore)>) -> Self {
        let mut this = Self::default();
        for (resource, store) in stores {
            this.insert(resource, store);
        }
        this
    }

    /// Sets the store of `resource`'s kind, replacing the one it had.
    pub fn insert(&mut self, resource: ApiResource, store: ChildStore) {
        match self.stores.iter_mut().find(|(r, _)| *r == resource) {
            Some((_, existing)) => *existing = store,
            None => self.stores.push((resource, store)),
        }
    }

    /// The cached object `reference` names, looked up in the store of its kind (its `dyntype`).
    pub fn get(&self, reference: &ObjectRef<DynamicObject>) -> Option<Arc<DynamicObject>> {
        self.of(&reference.dyntype)?
            .get(&reference.name, reference.namespace.as_deref())
    }

    /// Every cached object, of every kind (kinds in the order they were watched).
    pub fn state(&self) -> Vec<Arc<DynamicObject>> {
        self.stores
            .iter()
            .flat_map(|(_, store)| store.state())
            .collect()
    }

    /// The store of `resource`'s kind, when that kind is watched.
    pub fn of(&self, resource: &ApiResource) -> Option<&ChildStore> {
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
    use kube::runtime::watcher;

    fn object(resource: &ApiResource, name: &str) -> DynamicObject {
        DynamicObject::new(name, resource).within("ns")
    }

    /// A frozen object keeps its name, namespace, labels and resourceVersion as metadata and
    /// thaws to what it was.
    #[test]
    fn a_frozen_object_thaws_to_what_it_was() {
        let object: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "ns", "labels": {"a": "b"}, "uid": "u",
                         "resourceVersion": "7", "annotations": {"x": "y"},
                         "creationTimestamp": "2025-06-01T11:50:02Z"},
            "status": {"conditions": [{"type": "Succeeded", "status": "True"}],
                       "startTime": "2025-06-01T11:50:02Z", "ratio": 0.1, "n": 3}
        }))
        .unwrap();
        let frozen = FrozenObject::freeze(object.clone());
        let kept = frozen.meta();
        assert_eq!(
            (kept.name.as_deref(), kept.namespace.as_deref()),
            (Some("r"), Some("ns"))
        );
        assert_eq!(kept.labels, None, "as lines");
        assert_eq!(frozen.label("a"), Some("b"));
        assert_eq!(frozen.label("b"), None);
        assert_eq!(kept.resource_version.as_deref(), Some("7"));
        assert_eq!(
            (&kept.uid, &kept.annotations),
            (&None, &None),
            "in the text"
        );
        assert_eq!(frozen.thaw(), Some(object.clone()));
        // Labels lines could not carry stay in the metadata (the API server accepts none).
        let mut odd = object;
        odd.metadata.labels = Some([("k=1".to_string(), "v\nw".to_string())].into());
        let frozen = FrozenObject::freeze(odd.clone());
        assert_eq!(frozen.meta().labels, odd.metadata.labels);
        assert_eq!(frozen.label("k=1"), Some("v\nw"));
        assert_eq!(frozen.thaw(), Some(odd));
    }

    /// Two kinds with an object of the same name each: a reference finds the one of its kind,
    /// `state` holds both, and the stores are ready only when both listed.
    #[test]
    fn each_kind_is_looked_up_in_its_own_store_and_all_must_be_ready() {
        let (configmaps, secrets) = (
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<Secret>(&()),
        );
        let mut cm_writer = ChildWriter::new(configmaps.clone());
        let mut secret_writer = ChildWriter::new(secrets.clone());
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
        assert_eq!(stores.of(&secrets).map(ChildStore::len), Some(1));
        let pods = ApiResource::erase::<k8s_openapi::api::core::v1::Pod>(&());
        assert!(stores.of(&pods).is_none());
        assert!(stores.get(&reference(&pods)).is_none());
        assert!(is_ready(&KindStores::default()), "no kind: ready at once");
    }
}
