//! `kubernaut_framework::lock` against a real API server, with the stand-in Tekton PipelineRuns as
//! lock children: one holder out of 20 concurrent acquirers, adoption by the holder, release
//! that deletes only the holder's child, and one child out of 20 concurrent claims of one name in
//! two kinds.

use std::collections::BTreeMap;

use kube::api::{DynamicObject, ListParams};
use kube::{Api, ResourceExt};
use kubernaut_framework::lock::{Acquisition, Owner, Release, acquire, lock_name, release};
use kubernaut_test_harness::{ControlPlane, tekton};
use serde_json::json;

const TARGET: &str = "default/deployment/nginx";

async fn setup(prefix: &str) -> anyhow::Result<(&'static ControlPlane, Api<DynamicObject>)> {
    let cp = ControlPlane::shared().await?;
    cp.install_crds(&tekton::crds()).await?;
    let ns = cp.create_namespace(prefix).await?;
    let api = Api::namespaced_with(cp.client().await?, &ns, &tekton::pipelinerun_resource());
    Ok((cp, api))
}

/// The owner labels of the WorkflowExecution `team-a/<name>`.
fn owner(name: &str) -> Owner {
    Owner {
        labels: BTreeMap::from([
            (
                "kubernaut.ai/workflow-execution".to_owned(),
                name.to_owned(),
            ),
            (
                "kubernaut.ai/source-namespace".to_owned(),
                "team-a".to_owned(),
            ),
        ]),
        uid: Some(format!("uid-{name}")),
        ..Owner::default()
    }
}

/// A PipelineRun named by the lock for `TARGET`, carrying `by` in an annotation so the test can
/// tell which acquirer's object was created.
fn child(by: &str) -> DynamicObject {
    let mut obj = DynamicObject::new(&lock_name("wfe-", TARGET), &tekton::pipelinerun_resource());
    obj.metadata.annotations = Some(BTreeMap::from([
        ("kubernaut.ai/target-resource".to_owned(), TARGET.to_owned()),
        ("test/created-by".to_owned(), by.to_owned()),
    ]));
    obj.data = json!({"spec": {"pipelineRef": {"resolver": "bundles"}}});
    obj
}

#[tokio::test]
async fn twenty_concurrent_acquires_give_exactly_one_holder() -> anyhow::Result<()> {
    let (cp, api) = setup("lock-race").await?;
    let _logs = cp.logs_on_failure();

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let api = api.clone();
            let name = format!("wfe-{i}");
            tokio::spawn(async move {
                let outcome = acquire(&api, child(&name), &owner(&name)).await;
                (name, outcome)
            })
        })
        .collect();
    let mut acquired = Vec::new();
    let mut held = Vec::new();
    for task in tasks {
        let (name, outcome) = task.await?;
        match outcome? {
            Acquisition::Acquired(obj) => acquired.push((name, obj)),
            Acquisition::HeldBy(existing) => held.push((
                name,
                existing.name_any(),
                existing.labels().clone(),
                existing.annotations().clone(),
            )),
            Acquisition::Adopted(obj) => panic!("{name} adopted {obj:?} it never created"),
        }
    }
    assert_eq!(acquired.len(), 1, "exactly one Acquired: {acquired:?}");
    assert_eq!(held.len(), 19, "all others HeldBy");

    let (winner, created) = &acquired[0];
    assert_eq!(created.name_any(), "wfe-f3457dcc8fbcb6d9");
    assert!(owner(winner).owns(created.labels()));
    for (loser, child_name, labels, annotations) in &held {
        assert_eq!(child_name, "wfe-f3457dcc8fbcb6d9");
        assert!(
            owner(winner).owns(labels),
            "{loser} sees the winner as holder"
        );
        assert!(!owner(loser).owns(labels));
        assert_eq!(annotations.get("test/created-by"), Some(winner));
    }

    let children = api.list(&ListParams::default()).await?;
    assert_eq!(children.items.len(), 1, "exactly one child exists");
    assert_eq!(children.items[0].uid(), created.uid());

    // The holder asking again (e.g. after a restart) adopts its own child.
    match acquire(&api, child(winner), &owner(winner)).await? {
        Acquisition::Adopted(obj) => assert_eq!(obj.uid(), created.uid()),
        other => panic!("re-acquire by the holder must adopt, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn release_deletes_only_the_holders_child() -> anyhow::Result<()> {
    let (cp, api) = setup("lock-release").await?;
    let _logs = cp.logs_on_failure();
    let name = lock_name("wfe-", TARGET);

    let Acquisition::Acquired(created) = acquire(&api, child("wfe-a"), &owner("wfe-a")).await?
    else {
        panic!("the first acquire creates the child");
    };

    assert_eq!(
        release(&api, &name, &owner("wfe-b")).await?,
        Release::NotOwned
    );
    let still_there = api.get(&name).await?;
    assert_eq!(
        still_there.uid(),
        created.uid(),
        "another parent's release touched nothing"
    );

    assert_eq!(
        release(&api, &name, &owner("wfe-a")).await?,
        Release::Released
    );
    assert!(
        api.get_opt(&name).await?.is_none(),
        "the holder's release deleted it"
    );
    assert_eq!(release(&api, &name, &owner("wfe-a")).await?, Release::Gone);

    // Once released the lock is free for the next parent.
    assert!(matches!(
        acquire(&api, child("wfe-b"), &owner("wfe-b")).await?,
        Acquisition::Acquired(_)
    ));
    Ok(())
}

/// Every holder is live and keeps its lock: whoever holds the name makes it busy.
struct LiveHolders;

impl kubernaut_framework::lock::Tenancy for LiveHolders {
    type Holder = String;

    async fn holder(
        &self,
        child: &DynamicObject,
    ) -> Result<Option<String>, kubernaut_framework::lock::LockError> {
        let label = child.labels().get("kubernaut.ai/workflow-execution");
        Ok(label.cloned())
    }

    fn blocks(&self, _: &DynamicObject, _: Option<&String>) -> bool {
        false
    }

    fn done_with(&self, _: &String) -> bool {
        false
    }
}

#[tokio::test]
async fn twenty_concurrent_claims_in_two_kinds_give_exactly_one_child() -> anyhow::Result<()> {
    use kubernaut_framework::lock::{Claim, ClaimRequest, LockKind, Locks};
    let (cp, runs) = setup("lock-kinds").await?;
    let _logs = cp.logs_on_failure();
    let client = cp.client().await?;
    let ns = runs.namespace().unwrap_or_default().to_owned();
    let kind = |resource| LockKind {
        resource,
        propagation: kube::api::PropagationPolicy::Background,
    };
    let (run_kind, map_kind) = (
        kind(tekton::pipelinerun_resource()),
        kind(kube::api::ApiResource::erase::<
            k8s_openapi::api::core::v1::ConfigMap,
        >(&())),
    );
    let locks = std::sync::Arc::new(Locks::default());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (locks, client, ns) = (locks.clone(), client.clone(), ns.clone());
            let (mine, other) = match i % 2 {
                0 => (run_kind.clone(), map_kind.clone()),
                _ => (map_kind.clone(), run_kind.clone()),
            };
            tokio::spawn(async move {
                let name = format!("wfe-{i}");
                let mut object = child(&name);
                object.types = Some(kube::api::TypeMeta {
                    api_version: mine.resource.api_version.clone(),
                    kind: mine.resource.kind.clone(),
                });
                if i % 2 == 1 {
                    object.data = json!({"data": {"created-by": name}});
                }
                let owner = owner(&name);
                let request = ClaimRequest {
                    client: &client,
                    namespace: &ns,
                    kind: mine,
                    others: vec![other],
                    child: object,
                    owner: &owner,
                    cached: None,
                };
                locks.claim(request, &LiveHolders).await
            })
        })
        .collect();
    let (mut created, mut busy) = (0, 0);
    for task in tasks {
        match task.await?? {
            Claim::Created(_) => created += 1,
            Claim::Busy { .. } => busy += 1,
            other => panic!("a claim neither created nor found the name busy: {other:?}"),
        }
    }
    assert_eq!((created, busy), (1, 19));
    let maps: Api<DynamicObject> = Api::namespaced_with(client, &ns, &map_kind.resource);
    let name = lock_name("wfe-", TARGET);
    let children = [
        runs.get_opt(&name).await?.is_some(),
        maps.get_opt(&name).await?.is_some(),
    ];
    assert_eq!(
        children.iter().filter(|c| **c).count(),
        1,
        "one child in one kind: {children:?}"
    );
    Ok(())
}
