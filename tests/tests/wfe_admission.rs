//! The WorkflowExecution CRD's admission rules (CEL `x-kubernetes-validations`) at a real API
//! server: the CRD is accepted (its rules compile within the CEL cost budget), valid objects are
//! admitted, each invalid shape is refused with the rule's message naming the field (parameters
//! included: count, name and value lengths, total size), and the spec cannot change after creation
//! while the status can.

use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};
use kubernaut_test_harness::ControlPlane;
use serde_json::{Value, json};
use workflowexecution_operator::types::{self, WorkflowExecution};

fn object(name: &str, spec: Value) -> WorkflowExecution {
    serde_json::from_value(json!({
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a WorkflowExecution")
}

fn spec(target: &str) -> Value {
    json!({
        "workflowRef": {
            "workflowId": "restart-deployment",
            "version": "1.0.0",
            "containerImage": "registry.example/kubernaut/workflows/success:v1"
        },
        "targetResource": target,
    })
}

/// `count` parameters `p000`, `p001`, … each holding `value`.
fn parameters(count: usize, value: &str) -> Value {
    Value::Object(
        (0..count)
            .map(|i| (format!("p{i:03}"), Value::from(value)))
            .collect(),
    )
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

#[tokio::test]
async fn admission_rules_hold_at_the_api_server() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    cp.install_crds(&[types::crd()]).await?;
    let ns = cp.create_namespace("wfe-admission").await?;
    let api: Api<WorkflowExecution> = Api::namespaced(cp.client().await?, &ns);
    let post = PostParams::default();

    let valid = [
        ("namespaced", spec("default/deployment/nginx")),
        ("cluster-scoped", spec("node/worker-node-1")),
        (
            "params",
            with(
                spec("default/deployment/nginx"),
                "parameters",
                json!({"_a": "x", "B.c-d_9": "caf\u{e9} \u{1f680}\n{{ x }}", "EMPTY": ""}),
            ),
        ),
        (
            "confidence-bounds",
            with(spec("a/b"), "confidence", json!(1)),
        ),
        (
            "confidence-zero",
            with(spec("a/b"), "confidence", json!(0.0)),
        ),
        (
            "most-parameters",
            with(spec("a/b"), "parameters", parameters(128, "v")),
        ),
        (
            "longest-name-and-value",
            with(
                spec("a/b"),
                "parameters",
                json!({format!("n{}", "x".repeat(127)): "v".repeat(32768)}),
            ),
        ),
        (
            "most-characters-in-all",
            with(
                spec("a/b"),
                "parameters",
                parameters(31, &"v".repeat(32768)),
            ),
        ),
    ];
    for (name, spec) in valid {
        api.create(&post, &object(name, spec))
            .await
            .map_err(|e| anyhow::anyhow!("{name} was refused: {e}"))?;
    }

    let long_target = format!("ns/deployment/{}", "n".repeat(1100));
    let invalid: Vec<(&str, Value, &str)> = vec![
        ("one-part", spec("nginx"), "spec.targetResource"),
        ("four-parts", spec("a/b/c/d"), "spec.targetResource"),
        ("empty-part", spec("default//nginx"), "spec.targetResource"),
        (
            "leading-slash",
            spec("/deployment/nginx"),
            "spec.targetResource",
        ),
        ("too-long", spec(&long_target), "spec.targetResource"),
        (
            "bad-param",
            with(spec("a/b"), "parameters", json!({"1bad": "v"})),
            "spec.parameters",
        ),
        (
            "unicode-param",
            with(spec("a/b"), "parameters", json!({"caf\u{e9}": "v"})),
            "spec.parameters",
        ),
        (
            "reserved-param",
            with(spec("a/b"), "parameters", json!({"TARGET_RESOURCE": "v"})),
            "spec.parameters",
        ),
        (
            "too-many-params",
            with(spec("a/b"), "parameters", parameters(129, "v")),
            "spec.parameters",
        ),
        (
            "too-long-param-name",
            with(
                spec("a/b"),
                "parameters",
                json!({format!("n{}", "x".repeat(128)): "v"}),
            ),
            "at most 128 characters",
        ),
        (
            "too-long-param-value",
            with(spec("a/b"), "parameters", json!({"v": "v".repeat(32769)})),
            "spec.parameters.v",
        ),
        (
            "too-many-characters-in-all",
            with(
                spec("a/b"),
                "parameters",
                parameters(33, &"v".repeat(32768)),
            ),
            "at most 1048576 characters",
        ),
        (
            "confidence-high",
            with(spec("a/b"), "confidence", json!(1.5)),
            "spec.confidence",
        ),
        (
            "confidence-low",
            with(spec("a/b"), "confidence", json!(-0.1)),
            "spec.confidence",
        ),
        (
            "empty-workflow",
            with(
                spec("a/b"),
                "workflowRef",
                json!({"workflowId": "", "version": "1", "containerImage": "x"}),
            ),
            "spec.workflowRef.workflowId",
        ),
    ];
    for (name, spec, field) in invalid {
        match api.create(&post, &object(name, spec)).await {
            Ok(_) => anyhow::bail!("{name} was admitted"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(field),
                    "{name}: {} does not name {field}",
                    status.message
                );
            }
            Err(e) => anyhow::bail!("{name}: unexpected error {e}"),
        }
    }

    // The spec is immutable; the status is not.
    let patch = PatchParams::default();
    let changed = api
        .patch(
            "namespaced",
            &patch,
            &Patch::Merge(json!({"spec": {"targetResource": "default/deployment/other"}})),
        )
        .await;
    match changed {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("spec is immutable"),
                "{}",
                status.message
            );
        }
        other => anyhow::bail!("changing the spec was not refused: {other:?}"),
    }
    api.patch_status(
        "namespaced",
        &patch,
        &Patch::Merge(json!({"status": {"phase": "Pending"}})),
    )
    .await?;
    // Metadata stays editable (labels, annotations such as the block clearance).
    api.patch(
        "namespaced",
        &patch,
        &Patch::Merge(
            json!({"metadata": {"annotations": {"kubernaut.ai/clear-execution-block": "checked"}}}),
        ),
    )
    .await?;
    Ok(())
}
