//! Lock-by-name: a child object whose *name* is the lock.
//!
//! Two parents that must never act on the same key at once (for example two remediations of the
//! same target resource) each try to create a child whose name is derived from the key
//! ([`lock_name`]). The API server admits exactly one `create` for a name, so the name is the lock
//! and the child is the lock holder's work item at the same time. Ownership is recorded in the
//! child's labels and annotations ([`Owner`]), because children may live in another namespace than
//! their parent and so cannot carry `ownerReferences`.
//!
//! # Flow
//!
//! 1. The caller renders the child, names it with [`lock_name`] and calls [`acquire`].
//! 2. [`acquire`] stamps the owner's labels and annotations on the child and creates it.
//!    - created → [`Acquisition::Acquired`];
//!    - the name exists and it names this owner *instance* → [`Acquisition::Adopted`] (for
//!      example after a restart between the create and the parent's status write);
//!    - the name exists and belongs to someone else — another parent, an earlier parent of the
//!      same name, or nobody any more → [`Acquisition::HeldBy`], carrying the existing child so
//!      the caller can describe the conflict or judge the lock stale.
//! 3. When the work is done (and any hold time has passed) the caller calls [`release`], which
//!    deletes the child only if it names this owner, with a `uid` precondition.
//! 4. A caller that has established that a held lock is stale (its owner is gone or done with it)
//!    calls [`break_stale`], which deletes exactly the child it judged, never a replacement.
//!
//! # One call for a controller: [`Locks::claim`]
//!
//! A controller whose children may be of several kinds under one name (a Tekton `PipelineRun`
//! or a `Job`, say) calls [`Locks::claim`] with every kind ([`ClaimRequest`]) and its own
//! [`Tenancy`] (who holds a child, whether a child blocks the key, when a holder is done). It
//! returns a typed [`Claim`]: created, adopted, being released, blocked, busy (with the holder),
//! a stale child of another kind broken, contended, or refused for good ([`Refusal`]). The
//! decision about a held child is [`verdict`], a pure function of [`HeldFacts`]; the controller
//! only turns the claim into its status.
//!
//! # Identity and blocks
//!
//! An operator declares once the keys under which a child names its parent ([`OwnerKeys`]):
//! they make its [`Owner`], the runtime's child watch, and the [`Holder`] read back from a
//! child found in the way ([`live_holder`]: the parent instance, if it still exists). A child
//! whose failure must stay locked until a person clears it is marked with a [`BlockMarker`].
//!
//! # Guarantees
//!
//! 1. At most one child exists per name, so at most one owner holds a key at any time; of any
//!    number of concurrent [`acquire`] calls for one name, exactly one returns `Acquired`.
//! 2. [`release`] never deletes an object that does not name the owner: it reads the object,
//!    checks [`Owner::owns`], and deletes with `Preconditions { uid }` of the object it checked, so
//!    an object that was replaced between the read and the delete (same name, new uid) is not
//!    deleted; the release then re-checks the replacement.
//! 3. Neither function retries forever: a name that keeps changing under us ends in
//!    [`LockError::Contended`] after a few attempts.
//! 4. With [`Owner::uid_label`] set, ownership is by parent *instance*: a parent deleted and
//!    re-created under the same name and namespace has another uid and does not adopt (or
//!    release) its predecessor's child.
//! 5. [`Locks::claim`] with several kinds checks and takes a name under one in-process guard per
//!    name, so two reconciles of one process never create children of two kinds under one name;
//!    it breaks only a child [`verdict`] judged stale, and never one that blocks its key.
//!
//! # Assumptions
//!
//! 1. The ownership labels identify the parent uniquely (its uid, or name *and* namespace) and
//!    nobody else writes them onto children.
//! 2. The caller has already set the child's `metadata.name` (normally with [`lock_name`]) and
//!    namespace; `generateName` would defeat the lock.
//!
//! # Caveats
//!
//! 1. An `Adopted` child may already carry a `deletionTimestamp` (it is being released); the
//!    caller decides what that means for it.
//! 2. Without [`Owner::uid_label`] ownership is decided by the name labels only, and a parent
//!    deleted and re-created with the same name and namespace adopts its predecessor's child.
//! 3. [`release`] and [`break_stale`] delete with `propagationPolicy: Background`: dependents of
//!    the child (for example a `PipelineRun`'s `TaskRuns`, a `Job`'s `Pods`) are removed by the
//!    garbage collector afterwards. [`release_with_policy`] and [`break_stale_with_policy`] take
//!    another policy (`Foreground` keeps the child until its dependents are gone; `Orphan` leaves
//!    them behind).
//! 4. The guard of [`Locks::claim`] is per process: two processes that claim one name in two
//!    different kinds at once may both create. Run one active replica (leader election).

use std::collections::BTreeMap;

use kube::api::{DeleteParams, PostParams, Preconditions, PropagationPolicy};
use kube::core::DynamicObject;
use kube::{Api, ResourceExt};
use sha2::{Digest, Sha256};

mod block;
mod claim;
mod identity;

pub use block::{BlockMarker, Marked};
pub use claim::{
    Claim, ClaimRequest, HeldFacts, HolderState, LockKind, Locks, Refusal, Tenancy, Verdict,
    hold_over, verdict,
};
pub use identity::{Holder, OwnerKeys, live_holder};

/// How many times [`acquire`] and [`release`] re-read an object that changed under them before
/// giving up with [`LockError::Contended`].
const MAX_ATTEMPTS: u32 = 5;

/// In-process guards, one per lock name: held while a lock is checked and taken in several
/// places at once (children of several kinds sharing one name), so that two reconciles of this
/// process never both find the name free. A guard no reconcile holds is dropped.
#[derive(Debug, Default)]
pub struct NameGuards {
    guards: std::sync::Mutex<
        std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>,
    >,
}

impl NameGuards {
    /// Waits for and takes the guard of `name`; it is released when the returned value drops.
    pub async fn hold(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let guard = {
            let mut guards = self
                .guards
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guards.retain(|_, weak| weak.strong_count() > 0);
            match guards.get(name).and_then(std::sync::Weak::upgrade) {
                Some(guard) => guard,
                None => {
                    let guard = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                    guards.insert(name.to_owned(), std::sync::Arc::downgrade(&guard));
                    guard
                }
            }
        };
        guard.lock_owned().await
    }
}

/// The lock name for `key`: `prefix` followed by the first 16 lowercase hex characters of the
/// SHA-256 of `key`.
///
/// ```
/// use kubernaut_framework::lock::lock_name;
/// assert_eq!(lock_name("wfe-", "default/deployment/nginx"), "wfe-f3457dcc8fbcb6d9");
/// ```
#[must_use]
pub fn lock_name(prefix: &str, key: &str) -> String {
    let digest = hex::encode(Sha256::digest(key.as_bytes()));
    format!("{prefix}{}", &digest[..16])
}

/// The parent a lock child belongs to, as recorded in the child's labels and annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// The labels that name the parent, for example `kubernaut.ai/workflow-execution=<name>` and
    /// `kubernaut.ai/source-namespace=<namespace>`. [`acquire`] writes them onto the child.
    pub labels: BTreeMap<String, String>,
    /// Annotations [`acquire`] writes onto the child besides the labels: what does not fit a
    /// label value (a parent name longer than 63 characters, say). Not compared by [`Owner::owns`].
    pub annotations: BTreeMap<String, String>,
    /// The parent's uid, when known.
    pub uid: Option<String>,
    /// The label key under which [`acquire`] records [`Owner::uid`]. When set, [`Owner::owns`]
    /// also requires that label to equal the uid: ownership by instance, not by name.
    pub uid_label: Option<String>,
}

impl Owner {
    /// Whether a child with `child_labels` belongs to this owner: every ownership label is present
    /// with an equal value and, with [`Owner::uid_label`] set, the child records this owner's uid.
    /// An owner without labels (or without a uid while it needs one) owns nothing, so a
    /// misconfigured owner can never release somebody else's child.
    #[must_use]
    pub fn owns(&self, child_labels: &BTreeMap<String, String>) -> bool {
        let instance = match &self.uid_label {
            None => true,
            Some(key) => self
                .uid
                .as_ref()
                .is_some_and(|uid| child_labels.get(key) == Some(uid)),
        };
        instance
            && !self.labels.is_empty()
            && self
                .labels
                .iter()
                .all(|(key, value)| child_labels.get(key) == Some(value))
    }

    /// Every label [`acquire`] writes onto the child: the ownership labels and the uid label.
    #[must_use]
    pub fn child_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.labels.clone();
        if let (Some(key), Some(uid)) = (&self.uid_label, &self.uid) {
            labels.insert(key.clone(), uid.clone());
        }
        labels
    }
}

/// The outcome of [`acquire`].
#[derive(Debug, Clone)]
pub enum Acquisition {
    /// This call created the child: the lock is ours. Carries the object as created.
    Acquired(DynamicObject),
    /// The child already existed and its labels name this owner: the lock was already ours.
    /// Carries the existing object.
    Adopted(DynamicObject),
    /// The child exists and does not name this owner: another parent holds the lock, or held it
    /// (the caller may judge it stale and [`break_stale`] it). Carries the existing object; its
    /// labels and annotations name the holder, its `deletionTimestamp` says whether it is going.
    HeldBy(DynamicObject),
}

/// The outcome of [`release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// The child was ours and is now deleted (or being deleted).
    Released,
    /// The child exists but its labels do not name this owner; nothing was deleted.
    NotOwned,
    /// No child with that name exists.
    Gone,
}

/// Errors from [`acquire`] and [`release`]; each names the object concerned by its API path.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The child handed to [`acquire`] has no `metadata.name`.
    #[error("lock child under {resource} has no metadata.name")]
    Unnamed {
        /// The API path of the collection the child was meant for.
        resource: String,
    },
    /// Creating the child failed for another reason than `AlreadyExists`.
    #[error("creating lock child {object}: {source}")]
    Create {
        /// The child's API path.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Reading the child failed.
    #[error("reading lock child {object}: {source}")]
    Read {
        /// The child's API path.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting the child failed for another reason than not-found or a precondition conflict.
    #[error("deleting lock child {object}: {source}")]
    Delete {
        /// The child's API path.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The child read back has no `metadata.uid`, so it cannot be deleted safely.
    #[error(
        "lock child {object} has no metadata.uid; refusing to delete it without a uid precondition"
    )]
    MissingUid {
        /// The child's API path.
        object: String,
    },
    /// The object kept appearing, disappearing or being replaced while we looked at it.
    #[error("lock child {object} kept changing; gave up after {attempts} attempts")]
    Contended {
        /// The child's API path.
        object: String,
        /// How many attempts were made.
        attempts: u32,
    },
}

/// The API path of `name` in `api`, used to name objects in errors and logs.
fn object_path(api: &Api<DynamicObject>, name: &str) -> String {
    format!("{}/{name}", api.resource_url())
}

/// Whether `error` is an API response with the given HTTP status code.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// Acquire the lock `child.metadata.name` for `owner` by creating `child`.
///
/// The owner's labels and annotations are written onto the child first (overwriting equal keys),
/// so the created child always names its owner. On `409 AlreadyExists` the existing object is
/// read: naming `owner` → [`Acquisition::Adopted`], otherwise [`Acquisition::HeldBy`]. If the
/// existing object
/// vanishes between the failed create and the read, the create is retried.
///
/// # Errors
///
/// [`LockError::Unnamed`] without a name, [`LockError::Create`] / [`LockError::Read`] when the
/// API call fails, [`LockError::Contended`] when the name keeps flipping between existing and not.
pub async fn acquire(
    api: &Api<DynamicObject>,
    mut child: DynamicObject,
    owner: &Owner,
) -> Result<Acquisition, LockError> {
    let Some(name) = child.metadata.name.clone() else {
        return Err(LockError::Unnamed {
            resource: api.resource_url().to_owned(),
        });
    };
    let object = object_path(api, &name);
    child.labels_mut().extend(owner.child_labels());
    child.annotations_mut().extend(
        owner
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );

    for _ in 0..MAX_ATTEMPTS {
        match api.create(&PostParams::default(), &child).await {
            Ok(created) => {
                tracing::debug!(%object, owner_uid = ?owner.uid, "lock acquired");
                return Ok(Acquisition::Acquired(created));
            }
            Err(error) if is_status(&error, 409) => {}
            Err(source) => return Err(LockError::Create { object, source }),
        }
        let existing = api.get_opt(&name).await.map_err(|source| LockError::Read {
            object: object.clone(),
            source,
        })?;
        let Some(existing) = existing else {
            // Released between our create and our read: try to take it again.
            continue;
        };
        if owner.owns(existing.labels()) {
            tracing::debug!(%object, owner_uid = ?owner.uid, "lock adopted");
            return Ok(Acquisition::Adopted(existing));
        }
        tracing::debug!(%object, holder = ?existing.labels(), "lock held by another owner");
        return Ok(Acquisition::HeldBy(existing));
    }
    Err(LockError::Contended {
        object,
        attempts: MAX_ATTEMPTS,
    })
}

/// Release the lock `name` held by `owner`: delete the child if, and only if, it names `owner`.
///
/// The child is read, checked with [`Owner::owns`], and deleted with a `uid` precondition equal to
/// the uid just read. A `409` (the object was replaced by one with another uid) starts over with a
/// fresh read; a `404` at any point means [`Release::Gone`]. Releasing a child that is already
/// being deleted returns [`Release::Released`] again.
///
/// # Errors
///
/// [`LockError::Read`] / [`LockError::Delete`] when an API call fails, [`LockError::MissingUid`]
/// when the object read has no uid, [`LockError::Contended`] when the object keeps being replaced.
pub async fn release(
    api: &Api<DynamicObject>,
    name: &str,
    owner: &Owner,
) -> Result<Release, LockError> {
    release_with_policy(api, name, owner, PropagationPolicy::Background).await
}

/// [`release`], deleting the child with `propagation` as its `propagationPolicy`.
///
/// # Errors
///
/// As [`release`].
pub async fn release_with_policy(
    api: &Api<DynamicObject>,
    name: &str,
    owner: &Owner,
    propagation: PropagationPolicy,
) -> Result<Release, LockError> {
    let object = object_path(api, name);
    for _ in 0..MAX_ATTEMPTS {
        let existing = api.get_opt(name).await.map_err(|source| LockError::Read {
            object: object.clone(),
            source,
        })?;
        let Some(existing) = existing else {
            return Ok(Release::Gone);
        };
        if !owner.owns(existing.labels()) {
            tracing::debug!(%object, holder = ?existing.labels(), "lock not ours; not releasing");
            return Ok(Release::NotOwned);
        }
        match delete_exactly(api, &existing, &object, propagation.clone()).await? {
            Release::Released => {
                tracing::debug!(%object, owner_uid = ?owner.uid, "lock released");
                return Ok(Release::Released);
            }
            Release::Gone => return Ok(Release::Gone),
            // uid precondition failed: the name now belongs to a new object; check it again.
            Release::NotOwned => {}
        }
    }
    Err(LockError::Contended {
        object,
        attempts: MAX_ATTEMPTS,
    })
}

/// Break a stale lock: delete exactly `stale` (a child [`acquire`] returned as
/// [`Acquisition::HeldBy`]), with a `uid` precondition, so that a replacement created meanwhile
/// under the same name is never deleted.
///
/// Whether the lock is stale — its owner is gone, or is done with it — is the caller's judgement;
/// this function only guarantees that the object judged is the one deleted. Returns
/// [`Release::Released`] when it was deleted (or was already being deleted), [`Release::Gone`]
/// when no object of that name exists, and [`Release::NotOwned`] when the name now belongs to
/// another object (the caller acquires again and judges that one).
///
/// # Errors
///
/// [`LockError::Unnamed`] / [`LockError::MissingUid`] when `stale` lacks a name or uid,
/// [`LockError::Delete`] when the API call fails.
pub async fn break_stale(
    api: &Api<DynamicObject>,
    stale: &DynamicObject,
) -> Result<Release, LockError> {
    break_stale_with_policy(api, stale, PropagationPolicy::Background).await
}

/// [`break_stale`], deleting the child with `propagation` as its `propagationPolicy`.
///
/// # Errors
///
/// As [`break_stale`].
pub async fn break_stale_with_policy(
    api: &Api<DynamicObject>,
    stale: &DynamicObject,
    propagation: PropagationPolicy,
) -> Result<Release, LockError> {
    let Some(name) = stale.metadata.name.as_deref() else {
        return Err(LockError::Unnamed {
            resource: api.resource_url().to_owned(),
        });
    };
    let object = object_path(api, name);
    let outcome = delete_exactly(api, stale, &object, propagation).await?;
    if outcome == Release::Released {
        tracing::debug!(%object, holder = ?stale.labels(), "stale lock broken");
    }
    Ok(outcome)
}

/// Deletes `child` (by name, with `propagation`) only if the name still holds that very object:
/// a `uid` precondition. `Gone` on 404, `NotOwned` when the name now holds another object.
async fn delete_exactly(
    api: &Api<DynamicObject>,
    child: &DynamicObject,
    object: &str,
    propagation: PropagationPolicy,
) -> Result<Release, LockError> {
    let (Some(name), Some(uid)) = (child.metadata.name.as_deref(), child.metadata.uid.clone())
    else {
        return Err(LockError::MissingUid {
            object: object.to_owned(),
        });
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        propagation_policy: Some(propagation),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(Release::Released),
        Err(error) if is_status(&error, 404) => Ok(Release::Gone),
        Err(error) if is_status(&error, 409) => Ok(Release::NotOwned),
        Err(source) => Err(LockError::Delete {
            object: object.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use http::{Method, Request, Response, StatusCode};
    use kube::Client;
    use kube::client::Body;
    use kube::core::{ApiResource, GroupVersionKind};
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use tower_test::mock;

    use super::*;

    #[test]
    fn lock_names_match_the_contract_vectors() {
        let cases = [
            ("default/deployment/nginx", "wfe-f3457dcc8fbcb6d9"),
            ("payment/deployment/payment-api", "wfe-cf0cc089293b1165"),
            ("node/worker-node-1", "wfe-ac45b7d6911e97a5"),
        ];
        for (key, expected) in cases {
            assert_eq!(lock_name("wfe-", key), expected, "key {key}");
        }
    }

    proptest! {
        #[test]
        fn lock_names_are_20_chars_of_dns_label_alphabet(key in any::<String>()) {
            let name = lock_name("wfe-", &key);
            prop_assert_eq!(name.len(), 20);
            prop_assert!(name.starts_with("wfe-"));
            prop_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{}", name);
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn owner(name: &str) -> Owner {
        Owner {
            labels: labels(&[
                ("kubernaut.ai/workflow-execution", name),
                ("kubernaut.ai/source-namespace", "team-a"),
            ]),
            uid: Some(format!("uid-of-{name}")),
            ..Owner::default()
        }
    }

    /// `owner(name)` that owns by instance: its uid under `kubernaut.ai/workflow-execution-uid`.
    fn instance_owner(name: &str, uid: &str) -> Owner {
        Owner {
            uid: Some(uid.to_owned()),
            uid_label: Some("kubernaut.ai/workflow-execution-uid".to_owned()),
            ..owner(name)
        }
    }

    #[test]
    fn an_instance_owner_owns_only_children_recording_its_uid() {
        let ours = instance_owner("wfe-1", "u-new");
        let names = [
            ("kubernaut.ai/workflow-execution", "wfe-1"),
            ("kubernaut.ai/source-namespace", "team-a"),
        ];
        let with_uid = |uid: &str| {
            let mut l = labels(&names);
            l.insert("kubernaut.ai/workflow-execution-uid".into(), uid.into());
            l
        };
        assert!(ours.owns(&with_uid("u-new")));
        assert!(
            !ours.owns(&with_uid("u-old")),
            "a predecessor of the same name does not own"
        );
        assert!(!ours.owns(&labels(&names)), "a child without a uid label");
        let no_uid = Owner {
            uid: None,
            ..ours.clone()
        };
        assert!(!no_uid.owns(&with_uid("u-new")), "an owner without a uid");
        assert_eq!(ours.child_labels(), with_uid("u-new"));
    }

    #[test]
    fn owns_requires_every_label_present_and_equal() {
        let ours = owner("wfe-1");
        let cases = [
            (
                "exact",
                labels(&[
                    ("kubernaut.ai/workflow-execution", "wfe-1"),
                    ("kubernaut.ai/source-namespace", "team-a"),
                ]),
                true,
            ),
            (
                "extra labels",
                labels(&[
                    ("kubernaut.ai/workflow-execution", "wfe-1"),
                    ("kubernaut.ai/source-namespace", "team-a"),
                    ("app", "x"),
                ]),
                true,
            ),
            (
                "other name",
                labels(&[
                    ("kubernaut.ai/workflow-execution", "wfe-2"),
                    ("kubernaut.ai/source-namespace", "team-a"),
                ]),
                false,
            ),
            (
                "other namespace",
                labels(&[
                    ("kubernaut.ai/workflow-execution", "wfe-1"),
                    ("kubernaut.ai/source-namespace", "team-b"),
                ]),
                false,
            ),
            (
                "missing label",
                labels(&[("kubernaut.ai/workflow-execution", "wfe-1")]),
                false,
            ),
            ("no labels", BTreeMap::new(), false),
        ];
        for (case, child, expected) in cases {
            assert_eq!(ours.owns(&child), expected, "case {case}");
        }
        let nobody = Owner::default();
        assert!(
            !nobody.owns(&labels(&[("app", "x")])),
            "an empty owner owns nothing"
        );
    }

    const NS: &str = "kubernaut-workflows";
    const NAME: &str = "wfe-f3457dcc8fbcb6d9";
    const COLLECTION: &str = "/apis/tekton.dev/v1/namespaces/kubernaut-workflows/pipelineruns";

    fn pipelineruns(client: Client) -> Api<DynamicObject> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun"),
            "pipelineruns",
        );
        Api::namespaced_with(client, NS, &resource)
    }

    fn child_json(owner_labels: &BTreeMap<String, String>, uid: &str) -> Value {
        json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {
                "name": NAME,
                "namespace": NS,
                "uid": uid,
                "labels": owner_labels,
                "annotations": {"kubernaut.ai/target-resource": "default/deployment/nginx"},
            },
            "spec": {},
        })
    }

    fn new_child() -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "tekton.dev/v1",
            "kind": "PipelineRun",
            "metadata": {"name": NAME, "namespace": NS, "labels": {"app": "kept"}},
            "spec": {},
        }))
        .unwrap()
    }

    fn respond(code: StatusCode, body: &Value) -> Response<Body> {
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": reason, "reason": reason, "code": code,
        })
    }

    /// One expected request: method, path, and the response to send; the request body is returned
    /// to the test so it can be inspected.
    struct Exchange {
        method: Method,
        path: String,
        response: Response<Body>,
    }

    /// Serve `script` in order and fail if a request differs; returns every request body.
    fn serve(
        handle: mock::Handle<Request<Body>, Response<Body>>,
        script: Vec<Exchange>,
    ) -> tokio::task::JoinHandle<Vec<Value>> {
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            let mut bodies = Vec::new();
            for exchange in script {
                let (request, send) = handle.next_request().await.expect("expected a request");
                assert_eq!(request.method(), exchange.method);
                assert_eq!(request.uri().path(), exchange.path);
                let bytes = request.into_body().collect_bytes().await.unwrap();
                bodies.push(if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                });
                send.send_response(exchange.response);
            }
            bodies
        })
    }

    fn mock_api() -> (
        Api<DynamicObject>,
        mock::Handle<Request<Body>, Response<Body>>,
    ) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (pipelineruns(Client::new(service, "default")), handle)
    }

    fn item_path() -> String {
        format!("{COLLECTION}/{NAME}")
    }

    #[tokio::test]
    async fn acquire_created_is_acquired_and_carries_owner_labels() {
        let (api, handle) = mock_api();
        let ours = owner("wfe-1");
        let mut created_labels = ours.labels.clone();
        created_labels.insert("app".into(), "kept".into());
        let server = serve(
            handle,
            vec![Exchange {
                method: Method::POST,
                path: COLLECTION.into(),
                response: respond(StatusCode::CREATED, &child_json(&created_labels, "u1")),
            }],
        );
        let outcome = acquire(&api, new_child(), &ours).await.unwrap();
        let bodies = server.await.unwrap();
        assert!(
            matches!(outcome, Acquisition::Acquired(ref o) if o.metadata.uid.as_deref() == Some("u1"))
        );
        let sent_labels = &bodies[0]["metadata"]["labels"];
        assert_eq!(sent_labels["kubernaut.ai/workflow-execution"], "wfe-1");
        assert_eq!(sent_labels["kubernaut.ai/source-namespace"], "team-a");
        assert_eq!(sent_labels["app"], "kept", "template labels survive");
    }

    #[tokio::test]
    async fn acquire_conflict_reads_existing_and_decides_adopted_or_held() {
        let cases = [
            ("existing is ours", owner("wfe-1").labels, true),
            ("existing is another parent's", owner("wfe-2").labels, false),
        ];
        for (case, existing_labels, adopted) in cases {
            let (api, handle) = mock_api();
            let server = serve(
                handle,
                vec![
                    Exchange {
                        method: Method::POST,
                        path: COLLECTION.into(),
                        response: respond(StatusCode::CONFLICT, &status(409, "AlreadyExists")),
                    },
                    Exchange {
                        method: Method::GET,
                        path: item_path(),
                        response: respond(StatusCode::OK, &child_json(&existing_labels, "u9")),
                    },
                ],
            );
            let outcome = acquire(&api, new_child(), &owner("wfe-1")).await.unwrap();
            server.await.unwrap();
            match outcome {
                Acquisition::Adopted(existing) => {
                    assert!(adopted, "case {case}: adopted unexpectedly");
                    assert_eq!(existing.metadata.uid.as_deref(), Some("u9"));
                }
                Acquisition::HeldBy(existing) => {
                    assert!(!adopted, "case {case}: held unexpectedly");
                    assert_eq!(existing.name_any(), NAME);
                    assert_eq!(existing.labels(), &existing_labels);
                    assert_eq!(
                        existing.annotations()["kubernaut.ai/target-resource"],
                        "default/deployment/nginx"
                    );
                }
                Acquisition::Acquired(_) => panic!("case {case}: acquired after a 409"),
            }
        }
    }

    #[tokio::test]
    async fn acquire_retries_create_when_existing_vanished() {
        let (api, handle) = mock_api();
        let ours = owner("wfe-1");
        let server = serve(
            handle,
            vec![
                Exchange {
                    method: Method::POST,
                    path: COLLECTION.into(),
                    response: respond(StatusCode::CONFLICT, &status(409, "AlreadyExists")),
                },
                Exchange {
                    method: Method::GET,
                    path: item_path(),
                    response: respond(StatusCode::NOT_FOUND, &status(404, "NotFound")),
                },
                Exchange {
                    method: Method::POST,
                    path: COLLECTION.into(),
                    response: respond(StatusCode::CREATED, &child_json(&ours.labels, "u2")),
                },
            ],
        );
        let outcome = acquire(&api, new_child(), &ours).await.unwrap();
        server.await.unwrap();
        assert!(matches!(outcome, Acquisition::Acquired(_)));
    }

    #[tokio::test]
    async fn acquire_reports_other_errors_naming_the_object() {
        let (api, handle) = mock_api();
        let server = serve(
            handle,
            vec![Exchange {
                method: Method::POST,
                path: COLLECTION.into(),
                response: respond(StatusCode::FORBIDDEN, &status(403, "Forbidden")),
            }],
        );
        let error = acquire(&api, new_child(), &owner("wfe-1"))
            .await
            .unwrap_err();
        server.await.unwrap();
        assert!(matches!(error, LockError::Create { .. }), "{error:?}");
        assert!(error.to_string().contains(&item_path()), "{error}");
    }

    #[tokio::test]
    async fn acquire_without_name_sends_nothing() {
        let (api, handle) = mock_api();
        let mut child = new_child();
        child.metadata.name = None;
        let error = acquire(&api, child, &owner("wfe-1")).await.unwrap_err();
        assert!(matches!(error, LockError::Unnamed { .. }), "{error:?}");
        drop(api);
        let mut handle = pin!(handle);
        assert!(handle.next_request().await.is_none(), "no request was sent");
    }

    #[tokio::test]
    async fn release_not_owned_never_sends_delete() {
        let (api, handle) = mock_api();
        let reader = tokio::spawn(async move {
            let mut handle = pin!(handle);
            let mut methods = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                methods.push(request.method().clone());
                send.send_response(respond(
                    StatusCode::OK,
                    &child_json(&owner("wfe-2").labels, "u3"),
                ));
            }
            methods
        });
        let outcome = release(&api, NAME, &owner("wfe-1")).await.unwrap();
        drop(api);
        let methods = reader.await.unwrap();
        assert_eq!(outcome, Release::NotOwned);
        assert_eq!(methods, vec![Method::GET]);
    }

    #[tokio::test]
    async fn release_ours_deletes_with_uid_precondition() {
        let (api, handle) = mock_api();
        let ours = owner("wfe-1");
        let server = serve(
            handle,
            vec![
                Exchange {
                    method: Method::GET,
                    path: item_path(),
                    response: respond(StatusCode::OK, &child_json(&ours.labels, "u4")),
                },
                Exchange {
                    method: Method::DELETE,
                    path: item_path(),
                    response: respond(StatusCode::OK, &child_json(&ours.labels, "u4")),
                },
            ],
        );
        let outcome = release(&api, NAME, &ours).await.unwrap();
        let bodies = server.await.unwrap();
        assert_eq!(outcome, Release::Released);
        assert_eq!(bodies[1]["preconditions"]["uid"], "u4");
        assert_eq!(bodies[1]["propagationPolicy"], "Background");
    }

    #[tokio::test]
    async fn release_and_break_stale_delete_with_the_given_propagation_policy() {
        let cases = [
            (PropagationPolicy::Foreground, "Foreground"),
            (PropagationPolicy::Background, "Background"),
            (PropagationPolicy::Orphan, "Orphan"),
        ];
        for (policy, wire) in cases {
            let ours = owner("wfe-1");
            let deleted = || respond(StatusCode::OK, &child_json(&ours.labels, "u6"));
            let (api, handle) = mock_api();
            let server = serve(
                handle,
                vec![
                    Exchange {
                        method: Method::GET,
                        path: item_path(),
                        response: deleted(),
                    },
                    Exchange {
                        method: Method::DELETE,
                        path: item_path(),
                        response: deleted(),
                    },
                ],
            );
            let outcome = release_with_policy(&api, NAME, &ours, policy.clone())
                .await
                .unwrap();
            let bodies = server.await.unwrap();
            assert_eq!(outcome, Release::Released, "{wire}");
            assert_eq!(bodies[1]["propagationPolicy"], wire, "release");

            let (api, handle) = mock_api();
            let server = serve(
                handle,
                vec![Exchange {
                    method: Method::DELETE,
                    path: item_path(),
                    response: deleted(),
                }],
            );
            let stale: DynamicObject =
                serde_json::from_value(child_json(&ours.labels, "u6")).unwrap();
            let outcome = break_stale_with_policy(&api, &stale, policy).await.unwrap();
            let bodies = server.await.unwrap();
            assert_eq!(outcome, Release::Released, "{wire}");
            assert_eq!(bodies[0]["propagationPolicy"], wire, "break_stale");
            assert_eq!(bodies[0]["preconditions"]["uid"], "u6", "break_stale");
        }
    }

    #[tokio::test]
    async fn release_rechecks_after_a_uid_precondition_conflict() {
        let (api, handle) = mock_api();
        let ours = owner("wfe-1");
        let server = serve(
            handle,
            vec![
                Exchange {
                    method: Method::GET,
                    path: item_path(),
                    response: respond(StatusCode::OK, &child_json(&ours.labels, "old")),
                },
                Exchange {
                    method: Method::DELETE,
                    path: item_path(),
                    response: respond(StatusCode::CONFLICT, &status(409, "Conflict")),
                },
                // Replaced meanwhile by another parent's child: must not be deleted.
                Exchange {
                    method: Method::GET,
                    path: item_path(),
                    response: respond(StatusCode::OK, &child_json(&owner("wfe-2").labels, "new")),
                },
            ],
        );
        let outcome = release(&api, NAME, &ours).await.unwrap();
        drop(api);
        let bodies = server.await.unwrap();
        assert_eq!(outcome, Release::NotOwned);
        assert_eq!(bodies[1]["preconditions"]["uid"], "old");
    }

    #[tokio::test]
    async fn break_stale_deletes_exactly_the_judged_child() {
        let cases = [
            ("deleted", StatusCode::OK, Release::Released),
            ("already gone", StatusCode::NOT_FOUND, Release::Gone),
            (
                "replaced meanwhile",
                StatusCode::CONFLICT,
                Release::NotOwned,
            ),
        ];
        for (case, code, expected) in cases {
            let (api, handle) = mock_api();
            let stale: DynamicObject =
                serde_json::from_value(child_json(&owner("wfe-old").labels, "u-stale")).unwrap();
            let response = if code == StatusCode::OK {
                respond(code, &child_json(&owner("wfe-old").labels, "u-stale"))
            } else {
                respond(code, &status(code.as_u16(), case))
            };
            let server = serve(
                handle,
                vec![Exchange {
                    method: Method::DELETE,
                    path: item_path(),
                    response,
                }],
            );
            let outcome = break_stale(&api, &stale).await.unwrap();
            drop(api);
            let bodies = server.await.unwrap();
            assert_eq!(outcome, expected, "case {case}");
            assert_eq!(bodies[0]["preconditions"]["uid"], "u-stale", "case {case}");
        }
    }

    #[tokio::test]
    async fn release_reports_gone_on_404() {
        let cases = ["on read", "on delete"];
        for case in cases {
            let (api, handle) = mock_api();
            let ours = owner("wfe-1");
            let mut script = vec![Exchange {
                method: Method::GET,
                path: item_path(),
                response: if case == "on read" {
                    respond(StatusCode::NOT_FOUND, &status(404, "NotFound"))
                } else {
                    respond(StatusCode::OK, &child_json(&ours.labels, "u5"))
                },
            }];
            if case == "on delete" {
                script.push(Exchange {
                    method: Method::DELETE,
                    path: item_path(),
                    response: respond(StatusCode::NOT_FOUND, &status(404, "NotFound")),
                });
            }
            let server = serve(handle, script);
            let outcome = release(&api, NAME, &ours).await.unwrap();
            server.await.unwrap();
            assert_eq!(outcome, Release::Gone, "case {case}");
        }
    }

    #[tokio::test]
    async fn a_name_guard_is_held_by_one_holder_at_a_time_and_names_are_independent() {
        let guards = NameGuards::default();
        let first = guards.hold("wfe-a").await;
        // Another name is free at once.
        let _other = guards.hold("wfe-b").await;
        // The same name waits until the first holder lets go.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), guards.hold("wfe-a"));
        assert!(waiting.await.is_err(), "the guard of wfe-a was taken twice");
        drop(first);
        let again = tokio::time::timeout(std::time::Duration::from_secs(5), guards.hold("wfe-a"));
        assert!(again.await.is_ok(), "the guard of wfe-a was not released");
    }
}
