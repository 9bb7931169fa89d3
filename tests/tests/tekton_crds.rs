//! What the operator renders meets Tekton's own, structural PipelineRun CRD (`tests/crds/`) on the
//! API server: a field Tekton's schema does not declare is pruned silently, so a misspelt field in
//! the template would be lost without an error. Every sample's rendered PipelineRun must come back
//! from a create exactly as it was sent.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use kube::api::{Api, DynamicObject, PostParams};
use kubernaut_framework::app::load_config;
use kubernaut_test_harness::{ControlPlane, tekton};
use serde_json::Value;
use workflowexecution_operator::{cli, config::OperatorConfig};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The valid samples of `config/samples/`, as the golden test renders them.
fn samples() -> anyhow::Result<Vec<PathBuf>> {
    let mut samples: Vec<PathBuf> = std::fs::read_dir(repo().join("config/samples"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| {
            !p.file_stem()
                .is_some_and(|s| s.to_string_lossy().starts_with("invalid"))
        })
        .collect();
    samples.sort();
    Ok(samples)
}

/// `render --wfe sample --config config/workflowexecution.yaml --templates templates/workflowexecution`,
/// with `bundle_service_account` set as `execution.bundleServiceAccount`.
fn render(sample: &Path, bundle_service_account: Option<&str>) -> anyhow::Result<Value> {
    let mut config: OperatorConfig = load_config(
        Some(&repo().join("config/workflowexecution.yaml")),
        Some(&repo().join("templates/workflowexecution")),
    )?;
    config.execution.bundle_service_account = bundle_service_account.map(str::to_string);
    Ok(cli::render(sample, &config, None)?)
}

/// Creates `run` as `name` in `ns` and returns what the API server stored.
async fn create(
    api: &Api<DynamicObject>,
    run: &Value,
    name: &str,
    ns: &str,
) -> anyhow::Result<Value> {
    let mut obj: DynamicObject = serde_json::from_value(run.clone())?;
    obj.metadata.name = Some(name.to_string());
    obj.metadata.namespace = Some(ns.to_string());
    // The owner (a WorkflowExecution) does not exist here.
    obj.metadata.owner_references = None;
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .with_context(|| format!("creating {name}"))?;
    Ok(serde_json::to_value(created)?)
}

#[tokio::test]
async fn every_rendered_sample_survives_a_create_on_tektons_crd_unchanged() -> anyhow::Result<()> {
    let cp = ControlPlane::shared().await?;
    cp.install_crds(&tekton::crds()).await?;
    let ns = cp.create_namespace("tekton-crd").await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(cp.client().await?, &ns, &tekton::pipelinerun_resource());
    let samples = samples()?;
    assert!(samples.len() >= 4, "{samples:?}");
    let mut checked = 0;
    for sample in &samples {
        for bundle_sa in [None, Some("kubernaut-bundle-puller")] {
            let run = render(sample, bundle_sa)?;
            let name = format!("sample-{checked}");
            let stored = create(&api, &run, &name, &ns).await?;
            let context = format!("{} (bundleServiceAccount {bundle_sa:?})", sample.display());
            assert_eq!(
                stored["spec"], run["spec"],
                "{context}: the spec was pruned"
            );
            for key in ["labels", "annotations"] {
                assert_eq!(
                    stored["metadata"][key], run["metadata"][key],
                    "{context}: metadata.{key}"
                );
            }
            checked += 1;
        }
    }

    // The check can fail: a misspelt field is dropped by the same create.
    let mut misspelt = render(&samples[0], None)?;
    let template = misspelt["spec"]["taskRunTemplate"]
        .as_object_mut()
        .ok_or_else(|| anyhow!("the rendered run has no taskRunTemplate"))?;
    let account = template
        .remove("serviceAccountName")
        .ok_or_else(|| anyhow!("the rendered run names no service account"))?;
    template.insert("serviceAcountName".to_string(), account);
    let stored = create(&api, &misspelt, "misspelt", &ns).await?;
    assert_ne!(stored["spec"], misspelt["spec"]);
    assert!(
        stored["spec"]["taskRunTemplate"]
            .get("serviceAcountName")
            .is_none(),
        "Tekton's schema prunes an unknown field: {}",
        stored["spec"]
    );
    Ok(())
}
