//! Proof that the local control plane is a real Kubernetes API server: CRDs install and serve,
//! names are unique, status writes reach watchers, and RBAC is enforced.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::{
    Api, ResourceExt,
    api::{DynamicObject, ObjectMeta, Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kubernaut_test_harness::{ControlPlane, tekton};
use serde_json::json;

async fn setup(prefix: &str) -> anyhow::Result<(&'static ControlPlane, String)> {
    let cp = ControlPlane::shared().await?;
    cp.install_crds(&tekton::crds()).await?;
    let ns = cp.create_namespace(prefix).await?;
    Ok((cp, ns))
}

fn pipelinerun(name: &str) -> DynamicObject {
    let mut obj = DynamicObject::new(name, &tekton::pipelinerun_resource());
    obj.data = json!({
        "spec": {
            "pipelineRef": {"resolver": "bundles", "params": [
                {"name": "bundle", "value": "registry.example/workflows/restart:v1"},
                {"name": "name", "value": "workflow"},
                {"name": "kind", "value": "pipeline"}
            ]},
            "params": [{"name": "TARGET_RESOURCE", "value": "default/deployment/nginx"}]
        }
    });
    obj
}

#[tokio::test]
async fn reports_the_real_kubernetes_version() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    let version = cp.client().await?.apiserver_version().await?;
    assert!(
        version.git_version.starts_with("v1.34."),
        "unexpected version {}",
        version.git_version
    );
    assert_eq!(version.major, "1");
    assert_eq!(version.minor, "34");
    Ok(())
}

#[tokio::test]
async fn pipelinerun_names_are_unique() -> anyhow::Result<()> {
    let (cp, ns) = setup("proof-unique").await?;
    let _logs = cp.logs_on_failure();
    let api: Api<DynamicObject> =
        Api::namespaced_with(cp.client().await?, &ns, &tekton::pipelinerun_resource());

    let created = api
        .create(&PostParams::default(), &pipelinerun("wfe-f3457dcc8fbcb6d9"))
        .await?;
    assert_eq!(created.name_any(), "wfe-f3457dcc8fbcb6d9");
    assert!(created.uid().is_some());

    match api
        .create(&PostParams::default(), &pipelinerun("wfe-f3457dcc8fbcb6d9"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 409);
            assert_eq!(status.reason, "AlreadyExists");
        }
        other => panic!("second create of the same name must fail with AlreadyExists: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn status_patches_are_seen_by_a_watch() -> anyhow::Result<()> {
    let (cp, ns) = setup("proof-watch").await?;
    let _logs = cp.logs_on_failure();
    let api: Api<DynamicObject> =
        Api::namespaced_with(cp.client().await?, &ns, &tekton::pipelinerun_resource());
    api.create(&PostParams::default(), &pipelinerun("watched"))
        .await?;

    let stream = watcher(api.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();

    let status = json!({"status": {
        "startTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded",
                        "message": "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0"}]
    }});
    api.patch_status("watched", &PatchParams::default(), &Patch::Merge(&status))
        .await?;

    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        stream
            .try_filter(|obj| {
                let succeeded = obj.data["status"]["conditions"][0]["status"] == "True";
                futures::future::ready(succeeded)
            })
            .try_next(),
    )
    .await??;
    let obj = seen.ok_or_else(|| anyhow::anyhow!("watch ended before the status change"))?;
    assert_eq!(obj.data["status"]["conditions"][0]["reason"], "Succeeded");
    // The status subresource is real: the spec is untouched by a status write.
    assert_eq!(
        obj.data["spec"]["pipelineRef"]["resolver"], "bundles",
        "spec must survive"
    );
    Ok(())
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() -> anyhow::Result<()> {
    let (cp, ns) = setup("proof-rbac").await?;
    let _logs = cp.logs_on_failure();
    let sa_client = cp.service_account_client(&ns, "runner").await?;
    let as_sa: Api<DynamicObject> =
        Api::namespaced_with(sa_client, &ns, &tekton::pipelinerun_resource());

    match as_sa
        .create(&PostParams::default(), &pipelinerun("denied"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains(&format!("system:serviceaccount:{ns}:runner")),
                "the denial names the ServiceAccount: {}",
                status.message
            );
        }
        other => panic!("a ServiceAccount without RBAC must be forbidden: {other:?}"),
    }

    let admin = cp.client().await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("pipelinerun-creator".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["tekton.dev".into()]),
            resources: Some(vec!["pipelineruns".into()]),
            verbs: vec!["create".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("runner-creates-pipelineruns".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "pipelinerun-creator".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "runner".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &ns)
        .create(&PostParams::default(), &binding)
        .await?;

    // The authorizer reads RBAC objects from its informer cache: allow it a moment to catch up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match as_sa
            .create(&PostParams::default(), &pipelinerun("allowed"))
            .await
        {
            Ok(created) => {
                assert_eq!(created.name_any(), "allowed");
                break;
            }
            Err(kube::Error::Api(status))
                if status.code == 403 && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }

    // The Role grants create only: reading is still forbidden.
    match as_sa.get("allowed").await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403),
        other => panic!("get must stay forbidden with a create-only Role: {other:?}"),
    }
    Ok(())
}
