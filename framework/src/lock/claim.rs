//! Taking a lock whose name several child kinds share, and deciding what a held one means.
//!
//! [`Locks::claim`] is the whole acquire decision of a controller: it checks the name in every
//! other kind, creates the child in its own kind ([`acquire`]), adopts a child that names this
//! owner, waits for one being deleted, breaks a stale one, and reports a busy or blocked name,
//! all under a per-name guard of this process. What is the controller's own comes in through
//! [`Tenancy`]: who the holder of a child is, whether a child blocks the key, and when a holder
//! is done with its lock. The decision itself is [`verdict`], a pure function of those facts.

use std::future::Future;

use kube::api::{ApiResource, PropagationPolicy};
use kube::core::DynamicObject;
use kube::{Api, Client, Resource, ResourceExt};

use super::{
    Acquisition, LockError, NameGuards, Owner, acquire, break_stale_with_policy, object_path,
};

/// How many stale children [`Locks::claim`] breaks in its own kind in one call: one is the normal
/// case; a second means the name is contended, and the caller decides again later.
const MAX_BREAKS: usize = 2;

/// One kind of child that can hold a lock name, and how a stale child of it is deleted.
#[derive(Debug, Clone)]
pub struct LockKind {
    /// The API resource of the kind.
    pub resource: ApiResource,
    /// The `propagationPolicy` a stale child of this kind is deleted with.
    pub propagation: PropagationPolicy,
}

/// What [`Locks::claim`] is asked to do: create `child` in `kind` for `owner`, unless the name
/// is held in any kind.
pub struct ClaimRequest<'a> {
    /// The client the children are read, created and deleted with.
    pub client: &'a Client,
    /// The namespace of the children.
    pub namespace: &'a str,
    /// The kind `child` is created in.
    pub kind: LockKind,
    /// Every kind whose child of the same name holds the lock too; `kind` and repeated kinds
    /// among them are ignored. Empty for a controller with one child kind.
    pub others: Vec<LockKind>,
    /// The child, named (normally with [`super::lock_name`]) and ready to create.
    pub child: DynamicObject,
    /// Whom the child is created for.
    pub owner: &'a Owner,
    /// The child of that name as the controller's cache holds it, if it does: one that is
    /// being deleted and does not name `owner` is waited for without an API call.
    pub cached: Option<&'a DynamicObject>,
}

/// The controller's own part of a lock: who holds a child, and what that means.
///
/// Implement it on the reconcile context (or a small struct borrowing it).
pub trait Tenancy: Sync {
    /// The parent a child names as its owner, as the controller reads it.
    type Holder: Send;

    /// The live parent *instance* `child` names as its owner; `None` when it is gone (deleted,
    /// or replaced by another object of the same name).
    fn holder(
        &self,
        child: &DynamicObject,
    ) -> impl Future<Output = Result<Option<Self::Holder>, LockError>> + Send;

    /// Whether `child` blocks its key for good (a record kept for a person to clear, say), so it
    /// is never broken as stale; `holder` is [`Tenancy::holder`]'s answer.
    fn blocks(&self, child: &DynamicObject, holder: Option<&Self::Holder>) -> bool;

    /// Whether `holder` is done with its lock (finished, and past any time it keeps it), so its
    /// child is stale.
    fn done_with(&self, holder: &Self::Holder) -> bool;
}

/// The outcome of [`Locks::claim`].
// One value per call, consumed at once: boxing the objects would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Claim<H> {
    /// The child was created: the lock is ours. Carries the object as created.
    Created(DynamicObject),
    /// The child already existed and names this owner. Carries the existing object.
    Adopted(DynamicObject),
    /// The child holding the name is being deleted: decide again once it is gone.
    Releasing(DynamicObject),
    /// The child holding the name blocks the key ([`Tenancy::blocks`]).
    Blocked {
        /// The child.
        child: DynamicObject,
        /// Its live holder, when there is one.
        holder: Option<H>,
    },
    /// A live holder that is not done with it holds the name.
    Busy {
        /// The child.
        child: DynamicObject,
        /// Its holder.
        holder: H,
    },
    /// A stale child of another kind held the name and was deleted: decide again shortly.
    BrokeStale {
        /// The kind it was of.
        kind: ApiResource,
        /// The child deleted.
        child: DynamicObject,
    },
    /// The name kept changing (a stale child broken twice): decide again shortly.
    Contended,
    /// The API server refused the create for good ([`Refusal`]): retrying cannot help.
    Refused {
        /// The child's API path.
        object: String,
        /// Why, in short.
        refusal: Refusal,
        /// The HTTP status code.
        code: u16,
        /// The API server's message.
        message: String,
    },
}

/// A create the API server refused for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A resource quota is exhausted.
    Quota,
    /// Not allowed (RBAC, an admission policy).
    Forbidden,
    /// The object is invalid or too large to store.
    Invalid,
}

impl Refusal {
    /// The refusal an API error with `code` and `message` is, or `None` when retrying may help.
    ///
    /// An object too large to store is refused with 500 although retrying cannot help: etcd's
    /// "request is too large" above its request limit (1.5 MiB by default), or the API server's
    /// own etcd client's "trying to send message larger than max" above 2 MiB.
    #[must_use]
    pub fn of(code: u16, message: &str) -> Option<Refusal> {
        let quota = message.to_lowercase().contains("exceeded quota");
        let too_large = ["request is too large", "message larger than max"]
            .iter()
            .any(|m| message.contains(m));
        match code {
            403 | 422 if quota => Some(Refusal::Quota),
            403 => Some(Refusal::Forbidden),
            400 | 413 | 422 => Some(Refusal::Invalid),
            _ if too_large => Some(Refusal::Invalid),
            _ => None,
        }
    }
}

/// Whether the holder of a child is still there and still needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolderState {
    /// The parent the child names is gone.
    Gone,
    /// The parent exists and still holds the lock.
    Holding,
    /// The parent exists and is done with the lock ([`Tenancy::done_with`]).
    Done,
}

/// What was observed about a child that holds a lock name for someone else and is not being
/// deleted (one being deleted is waited for, [`Claim::Releasing`], before anything is looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldFacts {
    /// The child blocks its key ([`Tenancy::blocks`]).
    pub blocks: bool,
    /// Its holder.
    pub holder: HolderState,
}

/// What a child held for someone else means, by [`verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key is blocked.
    Blocked,
    /// The key is busy.
    Busy,
    /// Break it: delete exactly this child, then take the name.
    Stale,
}

/// The decision about a held child, first rule wins: blocking → blocked (even when its holder
/// is gone: the block outlives it); holder gone or done → stale; otherwise busy.
#[must_use]
pub fn verdict(facts: &HeldFacts) -> Verdict {
    match facts {
        HeldFacts { blocks: true, .. } => Verdict::Blocked,
        HeldFacts {
            holder: HolderState::Gone | HolderState::Done,
            ..
        } => Verdict::Stale,
        HeldFacts {
            holder: HolderState::Holding,
            ..
        } => Verdict::Busy,
    }
}

/// Whether a hold of `hold` that began at `finished_at` is over at `now` (a start that is not
/// known counts as long past).
#[must_use]
pub fn hold_over(
    finished_at: Option<jiff::Timestamp>,
    hold: std::time::Duration,
    now: jiff::Timestamp,
) -> bool {
    finished_at.is_none_or(|done| crate::duration::duration_between(done, now) >= hold)
}

/// The locks a controller process takes: [`Locks::claim`], with one guard per lock name.
///
/// Keep one for the process (in the operator's state): the guard makes two reconciles of this
/// process that claim one name across several kinds take turns, so they never both find it free.
#[derive(Debug, Default)]
pub struct Locks {
    guards: NameGuards,
}

/// A held child judged: the claim it ends in, or stale (to be broken).
enum Judged<H> {
    Decided(Claim<H>),
    Stale(DynamicObject),
}

impl Locks {
    /// Takes the lock `request.child`'s name for `request.owner`, or says why not.
    ///
    /// In order: a cached child of that name being deleted by someone else → [`Claim::Releasing`]
    /// (no API call). With other kinds, under this process's guard of the name: a child of that
    /// name in another kind is judged ([`verdict`]), and broken when stale
    /// ([`Claim::BrokeStale`]). Then [`acquire`] in `request.kind`: created →
    /// [`Claim::Created`]; ours and not being deleted → [`Claim::Adopted`]; otherwise judged, and
    /// a stale child broken and the create tried again ([`Claim::Contended`] after two breaks).
    ///
    /// ```no_run
    /// use kube::api::{ApiResource, DynamicObject, PropagationPolicy};
    /// use kubernaut_framework::lock::{Claim, ClaimRequest, LockError, LockKind, Locks, Owner, Tenancy};
    ///
    /// /// Holders are looked up by the name label; a holder is never done.
    /// struct Parents;
    /// impl Tenancy for Parents {
    ///     type Holder = String;
    ///     async fn holder(&self, child: &DynamicObject) -> Result<Option<String>, LockError> {
    ///         Ok(child.metadata.labels.as_ref().and_then(|l| l.get("parent").cloned()))
    ///     }
    ///     fn blocks(&self, _: &DynamicObject, _: Option<&String>) -> bool { false }
    ///     fn done_with(&self, _: &String) -> bool { false }
    /// }
    ///
    /// # async fn run(client: kube::Client, child: DynamicObject, owner: Owner, jobs: ApiResource, runs: ApiResource) -> Result<(), LockError> {
    /// let locks = Locks::default(); // one per process
    /// let kind = |resource| LockKind { resource, propagation: PropagationPolicy::Background };
    /// let request = ClaimRequest {
    ///     client: &client,
    ///     namespace: "work",
    ///     kind: kind(jobs),
    ///     others: vec![kind(runs)],
    ///     child,
    ///     owner: &owner,
    ///     cached: None,
    /// };
    /// match locks.claim(request, &Parents).await? {
    ///     Claim::Created(_) | Claim::Adopted(_) => { /* running */ }
    ///     Claim::Busy { holder, .. } => println!("busy: {holder}"),
    ///     _ => { /* wait, skip or fail */ }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`LockError::Unnamed`] when the child has no name, and the errors of [`acquire`],
    /// [`break_stale_with_policy`] and [`Tenancy::holder`]; a create refused for good is
    /// [`Claim::Refused`], not an error.
    pub async fn claim<T: Tenancy>(
        &self,
        request: ClaimRequest<'_>,
        tenancy: &T,
    ) -> Result<Claim<T::Holder>, LockError> {
        let api = |kind: &LockKind| {
            Api::<DynamicObject>::namespaced_with(
                request.client.clone(),
                request.namespace,
                &kind.resource,
            )
        };
        let own = api(&request.kind);
        let Some(name) = request.child.metadata.name.clone() else {
            return Err(LockError::Unnamed {
                resource: own.resource_url().to_owned(),
            });
        };
        if let Some(cached) = request.cached
            && cached.meta().deletion_timestamp.is_some()
            && !request.owner.owns(cached.labels())
        {
            return Ok(Claim::Releasing(cached.clone()));
        }
        let others = distinct_others(&request.kind, request.others);
        let _guard = match others.is_empty() {
            true => None,
            false => Some(self.guards.hold(&name).await),
        };
        for kind in &others {
            let Some(existing) = read(&api(kind), &name).await? else {
                continue;
            };
            return match judge(tenancy, existing).await? {
                Judged::Decided(claim) => Ok(claim),
                Judged::Stale(child) => {
                    break_stale_with_policy(&api(kind), &child, kind.propagation.clone()).await?;
                    Ok(Claim::BrokeStale {
                        kind: kind.resource.clone(),
                        child,
                    })
                }
            };
        }
        for _ in 0..MAX_BREAKS {
            let existing = match acquire(&own, request.child.clone(), request.owner).await {
                Ok(Acquisition::Acquired(child)) => return Ok(Claim::Created(child)),
                Ok(Acquisition::Adopted(child)) if child.meta().deletion_timestamp.is_none() => {
                    return Ok(Claim::Adopted(child));
                }
                Ok(Acquisition::Adopted(child) | Acquisition::HeldBy(child)) => child,
                Err(error) => return refused(error),
            };
            match judge(tenancy, existing).await? {
                Judged::Decided(claim) => return Ok(claim),
                Judged::Stale(child) => {
                    let propagation = request.kind.propagation.clone();
                    break_stale_with_policy(&own, &child, propagation).await?;
                }
            }
        }
        Ok(Claim::Contended)
    }
}

/// `others` without `own`'s resource and without repeats, in their order.
fn distinct_others(own: &LockKind, others: Vec<LockKind>) -> Vec<LockKind> {
    let mut distinct: Vec<LockKind> = Vec::new();
    for kind in others {
        let seen =
            kind.resource == own.resource || distinct.iter().any(|k| k.resource == kind.resource);
        if !seen {
            distinct.push(kind);
        }
    }
    distinct
}

/// The child `name` read from the API server (a cache may not hold one created a moment ago).
async fn read(api: &Api<DynamicObject>, name: &str) -> Result<Option<DynamicObject>, LockError> {
    api.get_opt(name).await.map_err(|source| LockError::Read {
        object: object_path(api, name),
        source,
    })
}

/// [`Claim::Refused`] for a create refused for good, else the error.
fn refused<H>(error: LockError) -> Result<Claim<H>, LockError> {
    match error {
        LockError::Create {
            object,
            source: kube::Error::Api(status),
        } => match Refusal::of(status.code, &status.message) {
            Some(refusal) => Ok(Claim::Refused {
                object,
                refusal,
                code: status.code,
                message: status.message,
            }),
            None => Err(LockError::Create {
                object,
                source: kube::Error::Api(status),
            }),
        },
        other => Err(other),
    }
}

/// What `child`, held for someone else, means ([`verdict`] of what `tenancy` observes).
async fn judge<T: Tenancy>(
    tenancy: &T,
    child: DynamicObject,
) -> Result<Judged<T::Holder>, LockError> {
    if child.meta().deletion_timestamp.is_some() {
        // Whatever its holder: no need to look it up.
        return Ok(Judged::Decided(Claim::Releasing(child)));
    }
    let holder = tenancy.holder(&child).await?;
    let facts = HeldFacts {
        blocks: tenancy.blocks(&child, holder.as_ref()),
        holder: match &holder {
            None => HolderState::Gone,
            Some(h) if tenancy.done_with(h) => HolderState::Done,
            Some(_) => HolderState::Holding,
        },
    };
    Ok(match (verdict(&facts), holder) {
        (Verdict::Blocked, holder) => Judged::Decided(Claim::Blocked { child, holder }),
        (Verdict::Busy, Some(holder)) => Judged::Decided(Claim::Busy { child, holder }),
        (Verdict::Busy | Verdict::Stale, _) => {
            tracing::info!(
                child = %child.name_any(),
                holder = ?child.labels(),
                "releasing a stale lock: its owner is gone or done with it"
            );
            Judged::Stale(child)
        }
    })
}

#[cfg(test)]
mod tests;
