use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::core::GroupVersionKind;
use serde_json::{Value, json};

use super::*;
use crate::testing::{Exchange, Scenario, Served, status_body};

#[test]
fn verdict_blocks_before_anything_and_breaks_only_a_gone_or_done_holder() {
    use HolderState::{Done, Gone, Holding};
    let cases = [
        (true, Gone, Verdict::Blocked, "a block outlives its holder"),
        (true, Done, Verdict::Blocked, "a done holder's block"),
        (true, Holding, Verdict::Blocked, "a holding holder's block"),
        (false, Gone, Verdict::Stale, "the holder is gone"),
        (false, Done, Verdict::Stale, "the holder is done"),
        (false, Holding, Verdict::Busy, "the holder holds it"),
    ];
    for (blocks, holder, expected, case) in cases {
        assert_eq!(verdict(&HeldFacts { blocks, holder }), expected, "{case}");
    }
}

#[test]
fn a_refusal_is_only_what_retrying_cannot_help() {
    let cases = [
        (403, "exceeded quota: compute", Some(Refusal::Quota)),
        (422, "Exceeded Quota: pods", Some(Refusal::Quota)),
        (403, "forbidden", Some(Refusal::Forbidden)),
        (400, "bad request", Some(Refusal::Invalid)),
        (413, "too large", Some(Refusal::Invalid)),
        (422, "invalid", Some(Refusal::Invalid)),
        (
            500,
            "etcdserver: request is too large",
            Some(Refusal::Invalid),
        ),
        (
            500,
            "trying to send message larger than max (2097152 vs. 2097152)",
            Some(Refusal::Invalid),
        ),
        (500, "internal error", None),
        (429, "too many requests", None),
        (409, "conflict", None),
    ];
    for (code, message, expected) in cases {
        assert_eq!(Refusal::of(code, message), expected, "{code} {message}");
    }
}

#[test]
fn a_hold_is_over_once_its_time_has_passed_or_its_start_is_unknown() {
    let now = jiff::Timestamp::from_second(1_000).unwrap();
    let at = |s| Some(jiff::Timestamp::from_second(s).unwrap());
    let hold = Duration::from_secs(300);
    assert!(!hold_over(at(900), hold, now), "100s of 300s");
    assert!(hold_over(at(700), hold, now), "exactly 300s");
    assert!(hold_over(at(100), hold, now), "900s");
    assert!(hold_over(None, hold, now), "unknown start");
}

const NS: &str = "work";
const NAME: &str = "lock-0123456789abcdef";
const RUNS: &str = "/apis/tekton.dev/v1/namespaces/work/pipelineruns";
const JOBS: &str = "/apis/batch/v1/namespaces/work/jobs";

fn lock_kind(group: &str, kind: &str, plural: &str, propagation: PropagationPolicy) -> LockKind {
    let gvk = GroupVersionKind::gvk(group, "v1", kind);
    LockKind {
        resource: ApiResource::from_gvk_with_plural(&gvk, plural),
        propagation,
    }
}

fn run_kind() -> LockKind {
    lock_kind(
        "tekton.dev",
        "PipelineRun",
        "pipelineruns",
        PropagationPolicy::Background,
    )
}

fn job_kind() -> LockKind {
    lock_kind("batch", "Job", "jobs", PropagationPolicy::Foreground)
}

fn item(collection: &str) -> String {
    format!("{collection}/{NAME}")
}

fn owner(parent: &str) -> Owner {
    Owner {
        labels: BTreeMap::from([("parent".to_owned(), parent.to_owned())]),
        ..Owner::default()
    }
}

/// A child of `kind` named [`NAME`] labelled for `parent`, with `annotations`.
fn child(kind: &str, parent: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": {
            "name": NAME, "namespace": NS, "uid": format!("uid-{parent}"),
            "labels": {"parent": parent}, "annotations": annotations,
        },
    })
}

fn held(parent: &str) -> Value {
    child("PipelineRun", parent, json!({}))
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// The create then read of a name another parent holds.
fn conflict(collection: &str, existing: Value) -> [Exchange; 2] {
    [
        Exchange::new("POST", collection, 409, status_body(409, "AlreadyExists")),
        Exchange::new("GET", item(collection), 200, existing),
    ]
}

fn deleted(collection: &str) -> Exchange {
    Exchange::new("DELETE", item(collection), 200, status_body(200, "Success"))
}

/// Parents `holding` hold their locks, parents `done` are done with them, any other is gone;
/// a child annotated `block` blocks. Counts the holder look-ups.
#[derive(Default)]
struct Parents {
    holding: Vec<&'static str>,
    done: Vec<&'static str>,
    lookups: AtomicUsize,
}

impl Tenancy for Parents {
    type Holder = String;

    async fn holder(&self, child: &DynamicObject) -> Result<Option<String>, LockError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let parent = child.labels().get("parent").cloned().unwrap_or_default();
        let live = self.holding.contains(&parent.as_str()) || self.done.contains(&parent.as_str());
        Ok(live.then_some(parent))
    }

    fn blocks(&self, child: &DynamicObject, _: Option<&String>) -> bool {
        child.annotations().contains_key("block")
    }

    fn done_with(&self, holder: &String) -> bool {
        self.done.contains(&holder.as_str())
    }
}

/// Claims [`NAME`] for parent `me` in PipelineRuns (with `others`) against `script`.
async fn claim(
    parents: &Parents,
    others: Vec<LockKind>,
    cached: Option<&DynamicObject>,
    script: Vec<Exchange>,
) -> (Result<Claim<String>, LockError>, Served) {
    let (client, scenario) = Scenario::start(script);
    let me = owner("me");
    let request = ClaimRequest {
        client: &client,
        namespace: NS,
        kind: run_kind(),
        others,
        child: dynamic(json!({
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": NAME, "namespace": NS},
        })),
        owner: &me,
        cached,
    };
    let result = Locks::default().claim(request, parents).await;
    drop(client);
    (result, scenario.finish().await)
}

#[tokio::test]
async fn a_free_name_is_created_and_labelled_for_its_owner() {
    let script = vec![Exchange::new("POST", RUNS, 201, held("me"))];
    let (result, served) = claim(&Parents::default(), Vec::new(), None, script).await;
    assert!(matches!(result, Ok(Claim::Created(_))), "{result:?}");
    assert_eq!(served.bodies[0]["metadata"]["labels"]["parent"], "me");
}

#[tokio::test]
async fn a_child_naming_this_owner_is_adopted_without_a_holder_lookup() {
    let parents = Parents::default();
    let (result, _) = claim(
        &parents,
        Vec::new(),
        None,
        conflict(RUNS, held("me")).into(),
    )
    .await;
    assert!(matches!(result, Ok(Claim::Adopted(_))), "{result:?}");
    assert_eq!(parents.lookups.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_child_being_deleted_is_waited_for_without_a_holder_lookup() {
    let mut going = held("other");
    going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    for existing in [going.clone(), {
        let mut ours = going.clone();
        ours["metadata"]["labels"]["parent"] = json!("me");
        ours
    }] {
        let parents = Parents::default();
        let (result, _) = claim(&parents, Vec::new(), None, conflict(RUNS, existing).into()).await;
        assert!(matches!(result, Ok(Claim::Releasing(_))), "{result:?}");
        assert_eq!(parents.lookups.load(Ordering::SeqCst), 0);
    }
    // From the cache: no request at all.
    let cached = dynamic(going);
    let (result, served) = claim(&Parents::default(), Vec::new(), Some(&cached), vec![]).await;
    assert!(matches!(result, Ok(Claim::Releasing(_))), "{result:?}");
    assert!(served.bodies.is_empty());
}

#[tokio::test]
async fn a_live_holder_makes_the_name_busy_and_a_block_blocked_without_a_delete() {
    let parents = Parents {
        holding: vec!["other"],
        ..Parents::default()
    };
    let (result, _) = claim(
        &parents,
        Vec::new(),
        None,
        conflict(RUNS, held("other")).into(),
    )
    .await;
    assert!(
        matches!(result, Ok(Claim::Busy { ref holder, .. }) if holder == "other"),
        "{result:?}"
    );
    // A block of a parent that is gone is kept.
    let blocking = child("PipelineRun", "gone", json!({"block": "x"}));
    let (result, _) = claim(&parents, Vec::new(), None, conflict(RUNS, blocking).into()).await;
    assert!(
        matches!(result, Ok(Claim::Blocked { holder: None, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stale_child_is_deleted_exactly_and_the_create_tried_again() {
    let parents = Parents {
        done: vec!["finished"],
        ..Parents::default()
    };
    for stale in ["gone", "finished"] {
        let mut script: Vec<Exchange> = conflict(RUNS, held(stale)).into();
        script.push(deleted(RUNS));
        script.push(Exchange::new("POST", RUNS, 201, held("me")));
        let (result, served) = claim(&parents, Vec::new(), None, script).await;
        assert!(
            matches!(result, Ok(Claim::Created(_))),
            "{stale}: {result:?}"
        );
        let delete = &served.bodies[2];
        assert_eq!(delete["preconditions"]["uid"], format!("uid-{stale}"));
        assert_eq!(delete["propagationPolicy"], "Background");
    }
}

#[tokio::test]
async fn a_name_that_keeps_turning_stale_is_contended_after_two_breaks() {
    let mut script: Vec<Exchange> = conflict(RUNS, held("gone")).into();
    script.push(deleted(RUNS));
    script.extend(conflict(RUNS, held("gone-too")));
    script.push(deleted(RUNS));
    let (result, _) = claim(&Parents::default(), Vec::new(), None, script).await;
    assert!(matches!(result, Ok(Claim::Contended)), "{result:?}");
}

#[tokio::test]
async fn a_create_refused_for_good_is_a_claim_and_any_other_failure_an_error() {
    let script = vec![Exchange::new(
        "POST",
        RUNS,
        403,
        status_body(403, "forbidden"),
    )];
    let (result, _) = claim(&Parents::default(), Vec::new(), None, script).await;
    match result {
        Ok(Claim::Refused {
            object,
            refusal,
            code,
            message,
        }) => {
            assert_eq!(object, item(RUNS));
            assert_eq!(
                (refusal, code, message.as_str()),
                (Refusal::Forbidden, 403, "forbidden")
            );
        }
        other => panic!("{other:?}"),
    }
    let script = vec![Exchange::new(
        "POST",
        RUNS,
        500,
        status_body(500, "etcd down"),
    )];
    let (result, _) = claim(&Parents::default(), Vec::new(), None, script).await;
    assert!(
        matches!(result, Err(LockError::Create { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn another_kind_is_checked_first_and_its_stale_child_broken_with_its_policy() {
    let others = || vec![run_kind(), job_kind(), job_kind()];
    // Free in the other kind: created in our own (our kind and repeats are checked once).
    let script = vec![
        Exchange::new("GET", item(JOBS), 404, status_body(404, "NotFound")),
        Exchange::new("POST", RUNS, 201, held("me")),
    ];
    let (result, _) = claim(&Parents::default(), others(), None, script).await;
    assert!(matches!(result, Ok(Claim::Created(_))), "{result:?}");
    // A live holder's Job: busy, nothing created.
    let parents = Parents {
        holding: vec!["other"],
        ..Parents::default()
    };
    let job = child("Job", "other", json!({}));
    let script = vec![Exchange::new("GET", item(JOBS), 200, job)];
    let (result, _) = claim(&parents, others(), None, script).await;
    assert!(matches!(result, Ok(Claim::Busy { .. })), "{result:?}");
    // A stale Job: deleted with the Job kind's policy, and decided again later.
    let job = child("Job", "gone", json!({}));
    let script = vec![Exchange::new("GET", item(JOBS), 200, job), deleted(JOBS)];
    let (result, served) = claim(&parents, others(), None, script).await;
    assert!(
        matches!(result, Ok(Claim::BrokeStale { ref kind, .. }) if kind.kind == "Job"),
        "{result:?}"
    );
    assert_eq!(served.bodies[1]["propagationPolicy"], "Foreground");
    assert_eq!(served.bodies[1]["preconditions"]["uid"], "uid-gone");
}
