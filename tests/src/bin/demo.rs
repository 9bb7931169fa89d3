//! `make demo`: a local control plane, the CRDs, the WorkflowExecution operator, the Tekton
//! simulator and the sample WorkflowExecutions, with a live table until every WFE is final.
//!
//! Everything runs on this machine: the control plane binaries are the ones `make controlplane`
//! built; Tekton is simulated (scripted by the bundle name, see `tests/src/simulator.rs`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use kube::{
    Api, ResourceExt,
    api::{ListParams, PostParams},
};
use kubernaut_framework::{config::ConfigStore, phase::Phase as _, runtime::ParentWatch};
use kubernaut_test_harness::{
    ControlPlane,
    simulator::{Scenario, Simulator, SimulatorConfig},
    tekton,
};
use workflowexecution_operator::{
    config::OperatorConfig,
    operator::{self, runtime_settings},
    types::{self, WorkflowExecution},
};

const DEMO_NAMESPACE: &str = "kubernaut-demo";
const EXEC_NAMESPACE: &str = "kubernaut-workflows";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn samples() -> anyhow::Result<Vec<(String, Result<WorkflowExecution, String>)>> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(repo().join("config/samples"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        out.push((
            name,
            serde_yaml::from_str::<WorkflowExecution>(&text).map_err(|e| e.to_string()),
        ));
    }
    Ok(out)
}

fn extra(name: &str, workflow: &str, target: &str, scenario: Scenario) -> WorkflowExecution {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kubernaut.ai/v1alpha1", "kind": "WorkflowExecution",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"workflowId": workflow, "version": "v1", "containerImage": scenario.bundle()},
                 "targetResource": target}
    }))
    .unwrap_or_else(|e| panic!("demo object {name}: {e}"))
}

fn age(wfe: &WorkflowExecution) -> String {
    wfe.creation_timestamp()
        .map(|t| {
            let secs = jiff::Timestamp::now().duration_since(t.0).as_secs().max(0);
            format!("{secs}s")
        })
        .unwrap_or_default()
}

fn reason(wfe: &WorkflowExecution) -> String {
    wfe.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .init();
    println!("starting a local control plane …");
    let mut cp = ControlPlane::start().await?;
    let mut crds = tekton::crds();
    crds.push(types::crd());
    cp.install_crds(&crds).await?;
    let client = cp.client().await?;
    for ns in [DEMO_NAMESPACE, EXEC_NAMESPACE] {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let obj = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        api.create(&PostParams::default(), &obj).await?;
    }
    println!("control plane {} at {}", cp.version(), cp.server_url());
    println!("  export KUBECONFIG={}", cp.kubeconfig_path().display());

    let _simulator = Simulator::start(
        client.clone(),
        SimulatorConfig {
            namespace: Some(EXEC_NAMESPACE.into()),
            run_time: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let mut config = OperatorConfig::default();
    config.templates.dir = repo().join("templates/workflowexecution");
    config.controller.metrics_addr = "127.0.0.1:0".parse()?;
    config.controller.health_addr = "127.0.0.1:0".parse()?;
    config.controller.leader_election = false;
    config.cooldown.period = Duration::from_secs(20);
    let settings = runtime_settings(&config);
    let store = Arc::new(ConfigStore::new(config));
    let parents = ParentWatch {
        namespace: Some(DEMO_NAMESPACE.into()),
        selector: None,
    };
    let (running, auditor) = operator::start(client.clone(), store, settings, parents).await?;
    println!(
        "operator running: metrics http://{}/metrics, health http://{}/readyz",
        running.metrics_addr(),
        running.health_addr()
    );

    let wfes: Api<WorkflowExecution> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    for (file, sample) in samples()? {
        match sample {
            Ok(mut wfe) => {
                wfe.metadata.namespace = Some(DEMO_NAMESPACE.into());
                match wfes.create(&PostParams::default(), &wfe).await {
                    Ok(created) => {
                        println!("created {} from config/samples/{file}", created.name_any())
                    }
                    Err(kube::Error::Api(status)) => {
                        println!(
                            "config/samples/{file} refused by the API server: {}",
                            status.message
                        )
                    }
                    Err(e) => println!("config/samples/{file} could not be created: {e}"),
                }
            }
            Err(e) => println!("config/samples/{file} does not parse: {e}"),
        }
    }
    for wfe in [
        extra(
            "restart-nginx-again",
            "restart-deployment",
            "default/deployment/nginx",
            Scenario::Success,
        ),
        extra(
            "oom-on-cache",
            "restart-deployment",
            "cache/statefulset/redis",
            Scenario::OomKilled,
        ),
    ] {
        wfes.create(&PostParams::default(), &wfe).await?;
        println!(
            "created {} (simulated bundle {})",
            wfe.name_any(),
            wfe.spec.workflow_ref.container_image
        );
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = wfes.list(&ListParams::default()).await?;
        print!("\x1b[2J\x1b[H");
        println!(
            "{:<24} {:<10} {:<20} {:<32} {:<24} {:>5}",
            "NAME", "PHASE", "WORKFLOW", "TARGET", "REASON", "AGE"
        );
        let mut all_final = true;
        for wfe in &list.items {
            let phase = wfe.phase();
            all_final &= phase.is_some_and(|p| p.is_terminal());
            println!(
                "{:<24} {:<10} {:<20} {:<32} {:<24} {:>5}",
                wfe.name_any(),
                phase.map(|p| p.as_str()).unwrap_or("-"),
                wfe.spec.workflow_ref.workflow_id,
                wfe.spec.target_resource,
                reason(wfe),
                age(wfe)
            );
        }
        if all_final && !list.items.is_empty() {
            println!("\nall WorkflowExecutions are final.");
            break;
        }
        if tokio::time::Instant::now() > deadline {
            println!("\nstopped waiting after 120s");
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("Press Ctrl-C to stop (the control plane stays up until then).");
    tokio::signal::ctrl_c().await?;
    running.shutdown().await?;
    auditor.shutdown().await;
    cp.stop();
    Ok(())
}
