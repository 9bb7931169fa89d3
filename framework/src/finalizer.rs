//! Finalizers: add on first sight, clean up on deletion, remove after cleanup succeeded.
//!
//! A finalizer keeps a deleted object visible until its controller has cleaned up what the object
//! caused to exist (for example a child in another namespace, which `ownerReferences` cannot
//! reach). This module follows the design of `kube::runtime::finalizer` but hands control back to
//! the caller at every step instead of owning the whole reconcile, so that an operator can write
//! its initial status in the same pass that added the finalizer ("finalizer added on first sight,
//! together with phase `Pending`").
//!
//! # Flow
//!
//! 1. The reconciler calls [`event`] with the object it received.
//! 2. No finalizer yet and not deleting: [`event`] adds it ([`ensure_finalizer`]) and returns
//!    [`Event::Added`] with the patched object; the caller writes its initial status (or simply
//!    proceeds as for `Apply`).
//! 3. Finalizer present, not deleting: [`Event::Apply`] — reconcile normally.
//! 4. Finalizer present, deleting: [`Event::Cleanup`] — the caller cleans up and, only once that
//!    succeeded, calls [`remove_finalizer`]; Kubernetes then completes the deletion.
//! 5. Deleting and our finalizer already gone (or the object vanished): [`Event::Done`].
//!
//! # Guarantees
//!
//! 1. No lost update, no clobbered finalizer list: every write is a JSON patch whose `test`
//!    operations pin exactly what the write depends on. Adding tests the whole
//!    `metadata.finalizers` list as read and appends to it; removing tests each index it removes
//!    to still hold our finalizer. A concurrent change to the list makes the patch fail (422) instead
//!    of overwriting it; the object is then re-read and the step re-decided. Writers touching other
//!    fields (labels, annotations, status, other finalizers at other indices when removing) never
//!    interfere.
//! 2. Idempotent: [`ensure_finalizer`] on an object that has the finalizer, and
//!    [`remove_finalizer`] on one that does not, send no write; the finalizer is never added twice
//!    (if another instance of the controller added it meanwhile, the re-read sees it), and a
//!    duplicated entry is removed completely.
//! 3. If `Event::Apply` (or `Event::Added`) was ever returned, the object cannot finish deleting
//!    before the caller called [`remove_finalizer`], which it should do only after cleanup succeeded.
//! 4. Retries are bounded: an object whose finalizer list keeps changing ends in
//!    [`FinalizerError::Contended`] and the reconcile is retried by the controller's error policy.
//!
//! # Assumptions
//!
//! 1. The finalizer name is unique to this controller and a valid qualified name
//!    (`domain/name`, e.g. `kubernaut.ai/workflowexecution-cleanup`); the API server rejects invalid
//!    ones, and that rejection is returned as an error.
//! 2. Cleanup is idempotent and tolerates `Apply` never having run or having run partially.
//!
//! # Caveats
//!
//! 1. Deleting objects get stuck while the controller is down or while cleanup keeps failing; that
//!    is the purpose of a finalizer.
//! 2. Kubernetes forbids adding finalizers to an object that is being deleted, so an object deleted
//!    before it was first seen gets no cleanup ([`Event::Done`]); it had no `Apply` either.
//! 3. A watch filtered by a generation predicate must let `deletionTimestamp` changes through
//!    (adding a finalizer does not bump the generation; marking for deletion does).
//! 4. Use the object carried by the [`Event`], not the one passed in: after [`Event::Added`] it is
//!    the patched object with a fresh `resourceVersion`.

use std::fmt::Debug;
use std::sync::Arc;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, TestOperation};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// How many times a finalizer write is re-decided after the list changed under it.
const MAX_ATTEMPTS: u32 = 8;

/// What the reconciler should do with an object, as decided by [`event`].
#[derive(Debug, Clone)]
pub enum Event<K> {
    /// First sight: the finalizer was just added; carries the object returned by that patch. Write
    /// the initial status here (or continue as for [`Event::Apply`]).
    Added(Arc<K>),
    /// The finalizer is in place and the object is live: reconcile it.
    Apply(Arc<K>),
    /// The object is being deleted and still carries our finalizer: clean up, then call
    /// [`remove_finalizer`].
    Cleanup(Arc<K>),
    /// Nothing to do: the object is being deleted without our finalizer, or it is gone.
    Done,
}

/// The outcome of [`ensure_finalizer`].
#[derive(Debug, Clone)]
pub enum Ensure<K> {
    /// This call added the finalizer; carries the object returned by the patch.
    Added(K),
    /// The finalizer was already there; nothing was written.
    AlreadyPresent,
    /// The object is being deleted and has no finalizer of ours; Kubernetes forbids adding one.
    Deleting,
    /// The object no longer exists.
    Gone,
}

/// The outcome of [`remove_finalizer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// This call removed the finalizer (every occurrence of it).
    Removed,
    /// The finalizer was not there (any more); nothing was written.
    AlreadyAbsent,
    /// The object no longer exists.
    Gone,
}

/// Errors of the finalizer steps; each names the finalizer and the object by its API path.
#[derive(Debug, thiserror::Error)]
pub enum FinalizerError {
    /// The object has no `metadata.name`, so it cannot be patched.
    #[error("object under {resource} has no metadata.name")]
    Unnamed {
        /// The API path of the collection.
        resource: String,
    },
    /// The patch adding the finalizer failed.
    #[error("adding finalizer {finalizer} to {object}: {source}")]
    Add {
        /// The finalizer.
        finalizer: String,
        /// The object's API path.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The patch removing the finalizer failed.
    #[error("removing finalizer {finalizer} from {object}: {source}")]
    Remove {
        /// The finalizer.
        finalizer: String,
        /// The object's API path.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Re-reading the object after a failed `test` failed.
    #[error("re-reading {object}: {source}")]
    Read {
        /// The object's API path.
        object: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The finalizer list kept changing under us.
    #[error(
        "finalizer {finalizer} on {object}: the finalizer list kept changing; gave up after {attempts} attempts"
    )]
    Contended {
        /// The finalizer.
        finalizer: String,
        /// The object's API path.
        object: String,
        /// How many patches were tried.
        attempts: u32,
    },
}

/// Whether `obj` carries `finalizer`.
#[must_use]
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Whether `obj` is marked for deletion.
fn is_deleting<K: Resource>(obj: &K) -> bool {
    obj.meta().deletion_timestamp.is_some()
}

/// Decide what to do with `obj`, adding `finalizer` on first sight (see the module flow).
///
/// # Errors
///
/// Those of [`ensure_finalizer`], when the finalizer has to be added.
pub async fn event<K>(
    api: &Api<K>,
    obj: Arc<K>,
    finalizer: &str,
) -> Result<Event<K>, FinalizerError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    match (has_finalizer(&*obj, finalizer), is_deleting(&*obj)) {
        (true, false) => Ok(Event::Apply(obj)),
        (true, true) => Ok(Event::Cleanup(obj)),
        (false, true) => Ok(Event::Done),
        (false, false) => Ok(match ensure_finalizer(api, &*obj, finalizer).await? {
            Ensure::Added(patched) => Event::Added(Arc::new(patched)),
            // Another instance added it meanwhile: the object is ours to reconcile.
            Ensure::AlreadyPresent => Event::Apply(obj),
            Ensure::Deleting | Ensure::Gone => Event::Done,
        }),
    }
}

/// `/metadata/finalizers`, optionally followed by one more token (an index or `-`).
fn finalizers_pointer(last: Option<&str>) -> PointerBuf {
    let mut pointer = PointerBuf::from_tokens(["metadata", "finalizers"]);
    if let Some(last) = last {
        pointer.push_back(last);
    }
    pointer
}

/// The JSON patch appending `finalizer` to the list `current`, guarded by a test of that list.
fn add_patch(current: &[String], finalizer: &str) -> json_patch::Patch {
    json_patch::Patch(if current.is_empty() {
        // Kubernetes omits an empty list, so "no finalizers" reads as an absent field; a `test`
        // against `null` succeeds exactly when the field is still absent.
        vec![
            PatchOperation::Test(TestOperation {
                path: finalizers_pointer(None),
                value: serde_json::Value::Null,
            }),
            PatchOperation::Add(AddOperation {
                path: finalizers_pointer(None),
                value: serde_json::json!([finalizer]),
            }),
        ]
    } else {
        vec![
            PatchOperation::Test(TestOperation {
                path: finalizers_pointer(None),
                value: serde_json::json!(current),
            }),
            PatchOperation::Add(AddOperation {
                path: finalizers_pointer(Some("-")),
                value: serde_json::json!(finalizer),
            }),
        ]
    })
}

/// The JSON patch removing every occurrence of `finalizer` from `current`, each guarded by a test
/// that its index still holds it. Indices go from last to first so earlier ones stay valid.
fn remove_patch(current: &[String], finalizer: &str) -> json_patch::Patch {
    let ops = current
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, f)| *f == finalizer)
        .flat_map(|(index, _)| {
            let index = index.to_string();
            [
                PatchOperation::Test(TestOperation {
                    path: finalizers_pointer(Some(&index)),
                    value: serde_json::json!(finalizer),
                }),
                PatchOperation::Remove(RemoveOperation {
                    path: finalizers_pointer(Some(&index)),
                }),
            ]
        })
        .collect();
    json_patch::Patch(ops)
}

/// Whether a failed patch may have been refused because its `test` no longer held (422) or the
/// server ran out of conflict retries (409); both call for a re-read.
fn is_retryable(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 422 || status.code == 409)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The name of `obj` and its API path for messages.
fn identify<K: Resource>(api: &Api<K>, obj: &K) -> Result<(String, String), FinalizerError> {
    let Some(name) = obj.meta().name.clone() else {
        return Err(FinalizerError::Unnamed {
            resource: api.resource_url().to_owned(),
        });
    };
    let object = format!("{}/{name}", api.resource_url());
    Ok((name, object))
}

/// Add `finalizer` to `obj` unless it is already there (see the module guarantees).
///
/// Nothing is written when the object already carries the finalizer or is being deleted. After a
/// refused patch the object is re-read and the decision taken again.
///
/// # Errors
///
/// [`FinalizerError::Unnamed`], [`FinalizerError::Add`] when the API refuses the patch for
/// another reason than a changed list, [`FinalizerError::Read`], [`FinalizerError::Contended`].
pub async fn ensure_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> Result<Ensure<K>, FinalizerError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let add = Edit {
        settled: |current: &K, finalizer: &str| {
            if has_finalizer(current, finalizer) {
                Some(Ensure::AlreadyPresent)
            } else if is_deleting(current) {
                Some(Ensure::Deleting)
            } else {
                None
            }
        },
        patch: add_patch,
        patched: Ensure::Added,
        gone: || Ensure::Gone,
        refused: |finalizer, object, source| FinalizerError::Add {
            finalizer,
            object,
            source,
        },
        done: "finalizer added",
    };
    add.apply(api, obj, finalizer).await
}

/// Remove every occurrence of `finalizer` from `obj` (see the module guarantees). Call it only
/// after cleanup succeeded.
///
/// # Errors
///
/// [`FinalizerError::Unnamed`], [`FinalizerError::Remove`] when the API refuses the patch for
/// another reason than a changed list, [`FinalizerError::Read`], [`FinalizerError::Contended`].
pub async fn remove_finalizer<K>(
    api: &Api<K>,
    obj: &K,
    finalizer: &str,
) -> Result<Removal, FinalizerError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    let remove = Edit {
        settled: |current: &K, finalizer: &str| {
            (!has_finalizer(current, finalizer)).then_some(Removal::AlreadyAbsent)
        },
        patch: remove_patch,
        patched: |_| Removal::Removed,
        gone: || Removal::Gone,
        refused: |finalizer, object, source| FinalizerError::Remove {
            finalizer,
            object,
            source,
        },
        done: "finalizer removed",
    };
    remove.apply(api, obj, finalizer).await
}

/// One edit of an object's finalizer list with outcome `T`: adding or removing a finalizer.
struct Edit<K, T> {
    /// The outcome without a write, when `current` needs none.
    settled: fn(&K, &str) -> Option<T>,
    /// The JSON patch that makes the edit, testing the list it was computed from.
    patch: fn(&[String], &str) -> json_patch::Patch,
    /// The outcome of a successful patch, given the patched object.
    patched: fn(K) -> T,
    /// The outcome when the object is gone.
    gone: fn() -> T,
    /// The error for a patch refused for another reason than a changed list.
    refused: fn(String, String, kube::Error) -> FinalizerError,
    /// What the debug log says after a successful patch.
    done: &'static str,
}

impl<K, T> Edit<K, T>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    /// Patches `obj` unless it is settled; after a refused patch, re-reads it and decides again,
    /// at most [`MAX_ATTEMPTS`] times.
    async fn apply(&self, api: &Api<K>, obj: &K, finalizer: &str) -> Result<T, FinalizerError> {
        let (name, object) = identify(api, obj)?;
        let mut current = obj.clone();
        for _ in 0..MAX_ATTEMPTS {
            if let Some(outcome) = (self.settled)(&current, finalizer) {
                return Ok(outcome);
            }
            let tested = current.finalizers().to_vec();
            let patch = Patch::Json::<()>((self.patch)(&tested, finalizer));
            let error = match api.patch(&name, &PatchParams::default(), &patch).await {
                Ok(patched) => {
                    tracing::debug!(%object, finalizer, "{}", self.done);
                    return Ok((self.patched)(patched));
                }
                Err(error) if is_not_found(&error) => return Ok((self.gone)()),
                Err(error) if is_retryable(&error) => error,
                Err(source) => return Err((self.refused)(finalizer.to_owned(), object, source)),
            };
            let Some(fresh) = reread(api, &name, &object).await? else {
                return Ok((self.gone)());
            };
            if fresh.finalizers() == tested.as_slice()
                && (self.settled)(&fresh, finalizer).is_none()
            {
                // The list is what we tested (and the object still needs the edit), so the
                // refusal was about something else (for example an invalid finalizer name):
                // report it rather than retrying.
                return Err((self.refused)(finalizer.to_owned(), object, error));
            }
            current = fresh;
        }
        Err(FinalizerError::Contended {
            finalizer: finalizer.to_owned(),
            object,
            attempts: MAX_ATTEMPTS,
        })
    }
}

/// Read `name` again after a refused patch; `None` when it is gone.
async fn reread<K>(api: &Api<K>, name: &str, object: &str) -> Result<Option<K>, FinalizerError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    api.get_opt(name)
        .await
        .map_err(|source| FinalizerError::Read {
            object: object.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use http::{Method, Request, Response, StatusCode};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Client;
    use kube::client::Body;
    use serde_json::{Value, json};
    use tower_test::mock;

    use super::*;

    const FIN: &str = "kubernaut.ai/test-cleanup";
    const PATH: &str = "/api/v1/namespaces/ns/configmaps/cm";

    fn configmap(finalizers: &[&str], deleting: bool) -> ConfigMap {
        let mut value = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "ns", "resourceVersion": "1"},
        });
        if !finalizers.is_empty() {
            value["metadata"]["finalizers"] = json!(finalizers);
        }
        if deleting {
            value["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(value).unwrap()
    }

    fn ok(body: &ConfigMap) -> Response<Body> {
        Response::builder()
            .status(StatusCode::OK)
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap()
    }

    fn failure(code: u16) -> Response<Body> {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "refused", "reason": if code == 404 { "NotFound" } else { "Invalid" }, "code": code,
        });
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap()
    }

    /// Serve the scripted responses in order; returns each request's method and JSON body (`Null`
    /// when empty). Panics on a request beyond the script.
    fn serve(
        handle: mock::Handle<Request<Body>, Response<Body>>,
        script: Vec<Response<Body>>,
    ) -> tokio::task::JoinHandle<Vec<(Method, Value)>> {
        tokio::spawn(async move {
            let mut handle = pin!(handle);
            let mut seen = Vec::new();
            for response in script {
                let (request, send) = handle.next_request().await.expect("expected a request");
                assert_eq!(request.uri().path(), PATH);
                let method = request.method().clone();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                };
                seen.push((method, body));
                send.send_response(response);
            }
            assert!(
                handle.next_request().await.is_none(),
                "unexpected extra request"
            );
            seen
        })
    }

    fn mock_api() -> (Api<ConfigMap>, mock::Handle<Request<Body>, Response<Body>>) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (
            Api::namespaced(Client::new(service, "default"), "ns"),
            handle,
        )
    }

    #[test]
    fn patches_test_what_they_depend_on() {
        let cases: [(&str, json_patch::Patch, Value); 4] = [
            (
                "add to an absent list",
                add_patch(&[], FIN),
                json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": null},
                    {"op": "add", "path": "/metadata/finalizers", "value": [FIN]},
                ]),
            ),
            (
                "append to an existing list",
                add_patch(&["other/x".to_owned()], FIN),
                json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": ["other/x"]},
                    {"op": "add", "path": "/metadata/finalizers/-", "value": FIN},
                ]),
            ),
            (
                "remove by index",
                remove_patch(&["other/x".to_owned(), FIN.to_owned()], FIN),
                json!([
                    {"op": "test", "path": "/metadata/finalizers/1", "value": FIN},
                    {"op": "remove", "path": "/metadata/finalizers/1"},
                ]),
            ),
            (
                "remove duplicates from the back",
                remove_patch(&[FIN.to_owned(), "other/x".to_owned(), FIN.to_owned()], FIN),
                json!([
                    {"op": "test", "path": "/metadata/finalizers/2", "value": FIN},
                    {"op": "remove", "path": "/metadata/finalizers/2"},
                    {"op": "test", "path": "/metadata/finalizers/0", "value": FIN},
                    {"op": "remove", "path": "/metadata/finalizers/0"},
                ]),
            ),
        ];
        for (case, patch, expected) in cases {
            assert_eq!(serde_json::to_value(&patch).unwrap(), expected, "{case}");
        }
    }

    #[test]
    fn remove_patch_applied_locally_keeps_other_finalizers() {
        let mut doc = json!({"metadata": {"finalizers": [FIN, "a/b", FIN, "c/d"]}});
        let current: Vec<String> =
            serde_json::from_value(doc["metadata"]["finalizers"].clone()).unwrap();
        json_patch::patch(&mut doc, &remove_patch(&current, FIN)).unwrap();
        assert_eq!(doc["metadata"]["finalizers"], json!(["a/b", "c/d"]));
    }

    #[tokio::test]
    async fn event_decides_without_writing_when_nothing_to_add() {
        let cases = [
            ("present, live", configmap(&[FIN], false), "apply"),
            (
                "present, deleting",
                configmap(&["a/b", FIN], true),
                "cleanup",
            ),
            ("absent, deleting", configmap(&["a/b"], true), "done"),
        ];
        for (case, obj, expected) in cases {
            let (api, handle) = mock_api();
            let server = serve(handle, vec![]);
            let got = match event(&api, Arc::new(obj), FIN).await.unwrap() {
                Event::Apply(_) => "apply",
                Event::Cleanup(_) => "cleanup",
                Event::Done => "done",
                Event::Added(_) => "added",
            };
            drop(api);
            server.await.unwrap();
            assert_eq!(got, expected, "{case}");
        }
    }

    #[tokio::test]
    async fn first_sight_adds_the_finalizer_with_a_test_of_the_list() {
        let (api, handle) = mock_api();
        let server = serve(handle, vec![ok(&configmap(&["a/b", FIN], false))]);
        let outcome = event(&api, Arc::new(configmap(&["a/b"], false)), FIN)
            .await
            .unwrap();
        drop(api);
        let seen = server.await.unwrap();
        let Event::Added(patched) = outcome else {
            panic!("expected Added, got {outcome:?}");
        };
        assert!(has_finalizer(&*patched, FIN));
        assert_eq!(seen[0].0, Method::PATCH);
        assert_eq!(
            seen[0].1,
            serde_json::to_value(add_patch(&["a/b".into()], FIN)).unwrap()
        );
    }

    #[tokio::test]
    async fn ensure_rereads_after_a_failed_test_and_adapts() {
        // 422 because another writer appended "c/d"; the re-read shows it; the second patch tests
        // the new list.
        let (api, handle) = mock_api();
        let server = serve(
            handle,
            vec![
                failure(422),
                ok(&configmap(&["a/b", "c/d"], false)),
                ok(&configmap(&["a/b", "c/d", FIN], false)),
            ],
        );
        let outcome = ensure_finalizer(&api, &configmap(&["a/b"], false), FIN)
            .await
            .unwrap();
        drop(api);
        let seen = server.await.unwrap();
        assert!(matches!(outcome, Ensure::Added(_)), "{outcome:?}");
        let methods: Vec<_> = seen.iter().map(|(m, _)| m.clone()).collect();
        assert_eq!(methods, vec![Method::PATCH, Method::GET, Method::PATCH]);
        assert_eq!(
            seen[2].1,
            serde_json::to_value(add_patch(&["a/b".into(), "c/d".into()], FIN)).unwrap()
        );
    }

    #[tokio::test]
    async fn ensure_stops_when_the_reread_shows_it_present_deleting_or_gone() {
        let cases = [
            (
                "added by someone else",
                ok(&configmap(&["a/b", FIN], false)),
                "present",
            ),
            (
                "deletion started",
                ok(&configmap(&["a/b", "c/d"], true)),
                "deleting",
            ),
            ("object gone", failure(404), "gone"),
        ];
        for (case, reread, expected) in cases {
            let (api, handle) = mock_api();
            let server = serve(handle, vec![failure(422), reread]);
            let outcome = ensure_finalizer(&api, &configmap(&["a/b"], false), FIN)
                .await
                .unwrap();
            drop(api);
            server.await.unwrap();
            let got = match outcome {
                Ensure::AlreadyPresent => "present",
                Ensure::Deleting => "deleting",
                Ensure::Gone => "gone",
                Ensure::Added(_) => "added",
            };
            assert_eq!(got, expected, "{case}");
        }
    }

    #[tokio::test]
    async fn ensure_reports_a_refusal_that_is_not_about_the_list() {
        let (api, handle) = mock_api();
        // 422 but the list is unchanged: the name itself was refused.
        let server = serve(handle, vec![failure(422), ok(&configmap(&["a/b"], false))]);
        let error = ensure_finalizer(&api, &configmap(&["a/b"], false), "bad name")
            .await
            .unwrap_err();
        drop(api);
        server.await.unwrap();
        assert!(matches!(error, FinalizerError::Add { .. }), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("bad name") && message.contains(PATH),
            "{message}"
        );
    }

    #[tokio::test]
    async fn ensure_gives_up_when_the_list_keeps_changing() {
        let (api, handle) = mock_api();
        let mut script = Vec::new();
        for i in 0..MAX_ATTEMPTS {
            script.push(failure(422));
            let other = format!("writer/{i}");
            script.push(ok(&configmap(&[other.as_str()], false)));
        }
        let server = serve(handle, script);
        let error = ensure_finalizer(&api, &configmap(&[], false), FIN)
            .await
            .unwrap_err();
        drop(api);
        server.await.unwrap();
        assert!(
            matches!(error, FinalizerError::Contended { attempts, .. } if attempts == MAX_ATTEMPTS),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn remove_tests_the_index_and_rereads_when_it_moved() {
        let (api, handle) = mock_api();
        let server = serve(
            handle,
            vec![
                failure(422),
                // "a/b" was removed by someone else: ours moved from index 1 to 0.
                ok(&configmap(&[FIN, "c/d"], true)),
                ok(&configmap(&["c/d"], true)),
            ],
        );
        let outcome = remove_finalizer(&api, &configmap(&["a/b", FIN, "c/d"], true), FIN)
            .await
            .unwrap();
        drop(api);
        let seen = server.await.unwrap();
        assert_eq!(outcome, Removal::Removed);
        assert_eq!(
            seen[0].1,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": FIN},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
        assert_eq!(
            seen[2].1,
            json!([
                {"op": "test", "path": "/metadata/finalizers/0", "value": FIN},
                {"op": "remove", "path": "/metadata/finalizers/0"},
            ])
        );
    }

    #[tokio::test]
    async fn remove_is_a_no_op_when_absent_and_reports_gone() {
        let (api, handle) = mock_api();
        let server = serve(handle, vec![]);
        let outcome = remove_finalizer(&api, &configmap(&["a/b"], true), FIN)
            .await
            .unwrap();
        assert_eq!(outcome, Removal::AlreadyAbsent);
        drop(api);
        server.await.unwrap();

        let (api, handle) = mock_api();
        let server = serve(handle, vec![failure(404)]);
        let outcome = remove_finalizer(&api, &configmap(&[FIN], true), FIN)
            .await
            .unwrap();
        assert_eq!(outcome, Removal::Gone);
        drop(api);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unnamed_objects_are_refused_without_a_request() {
        let (api, handle) = mock_api();
        let server = serve(handle, vec![]);
        let mut obj = configmap(&[], false);
        obj.metadata.name = None;
        let error = ensure_finalizer(&api, &obj, FIN).await.unwrap_err();
        assert!(matches!(error, FinalizerError::Unnamed { .. }), "{error:?}");
        drop(api);
        server.await.unwrap();
    }
}
