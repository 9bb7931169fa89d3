//! The deploy check: `deploy/` built by the real kustomize, checked object by object, and
//! server-side applied to the local control plane — twice, the second time changing nothing — then
//! deleted without a trace.
//!
//! What the manifest promises and how it is checked:
//! 1. One source of truth: the generated ConfigMaps hold exactly the bytes of
//!    `config/workflowexecution.yaml` and `templates/workflowexecution/{tekton,job}/*`, the CRD is
//!    the file in `crds/`, and the mounted layout loads in the operator's own `check-config` (and,
//!    with every shipped engine listed, as the engines `templates.dir/<engine>/`).
//! 2. Highly available and locked down: 2 replicas with leader election, probes on the health
//!    port, the metrics port behind a Service, a PodDisruptionBudget, the restricted Pod Security
//!    Standard enforced by the API server itself, no service links.
//! 3. RBAC without wildcards (what each verb is for is proven in `deploy_rbac.rs`).
//! 4. Hot reload through the mount: a kubelet-style `..data` symlink swap is picked up by the
//!    template store and the config loader.
//! 5. Audit to Data Storage (the `deploy/data-storage` component, off by default): a projected
//!    ServiceAccount token with its own audience, mounted read-only where `audit.tokenFile`
//!    points, admitted by the API server under the restricted standard.
//! 6. The Job engine (the `deploy/job-engine` component, off by default): the Job engine listed
//!    in the configuration the pod runs with, a Role on Jobs and (read-only) Pods in the execution
//!    namespace and nothing else; the pod is admitted as well. What the Role allows and refuses is
//!    proven under real RBAC in `deploy_rbac.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Container, Pod, Service},
        policy::v1::PodDisruptionBudget,
        rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding, Subject},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PostParams},
};
use kubernaut_framework::app::{self, AppConfig};
use kubernaut_framework::config::load_with_env;
use kubernaut_framework::template::ReloadOutcome;
use kubernaut_test_harness::{
    ControlPlane,
    deploy::{self, Manifest, describe, kind_of, repo_root},
};
use workflowexecution_operator::{
    app::WorkflowExecutionApp,
    config::{AuditSink, DEFAULT_CONFIG_FILE, DEFAULT_ENGINE, ENV_PREFIX, OperatorConfig},
    engine::Engines,
    testing::{self, CANCEL_SPEC, PIPELINERUN_TEMPLATE, STATUS_MAPPING},
};

const SYSTEM: &str = "kubernaut-system";
const WORKFLOWS: &str = "kubernaut-workflows";
const OPERATOR: &str = "workflowexecution-operator";
/// The Job engine's files in the template directory, and their keys in the templates ConfigMap.
const JOB_ENGINE_FILES: [(&str, &str); 3] = [
    ("job/job.yaml.j2", "job.yaml.j2"),
    ("job/status.yaml", "job.status.yaml"),
    ("job/cancel.yaml", "job.cancel.yaml"),
];
/// The Role and RoleBinding `deploy/job-engine` adds (both named so).
const JOB_ENGINE_RBAC: &str = "workflowexecution-operator-job-engine";

/// The tests that apply or delete `deploy/` on the shared control plane take turns.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn deployment(manifest: &Manifest) -> anyhow::Result<Deployment> {
    manifest.get("Deployment", Some(SYSTEM), OPERATOR)
}

fn operator_container(deployment: &Deployment) -> anyhow::Result<Container> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == "operator"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the Deployment has no container named operator"))
}

#[test]
fn deploy_contains_exactly_the_operator_its_rbac_crd_config_and_execution_namespace()
-> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let got: BTreeSet<String> = manifest.objects.iter().map(describe).collect();
    let want: BTreeSet<String> = [
        "Namespace kubernaut-system",
        "Namespace kubernaut-workflows",
        "CustomResourceDefinition workflowexecutions.kubernaut.ai",
        "ServiceAccount kubernaut-system/workflowexecution-operator",
        "ServiceAccount kubernaut-workflows/kubernaut-workflow-runner",
        "ClusterRole kubernaut-workflowexecution-operator",
        "ClusterRoleBinding kubernaut-workflowexecution-operator",
        "Role kubernaut-system/workflowexecution-operator-leader-election",
        "RoleBinding kubernaut-system/workflowexecution-operator-leader-election",
        "Role kubernaut-workflows/workflowexecution-operator",
        "RoleBinding kubernaut-workflows/workflowexecution-operator",
        "ConfigMap kubernaut-system/workflowexecution-config",
        "ConfigMap kubernaut-system/workflowexecution-templates",
        "Deployment kubernaut-system/workflowexecution-operator",
        "Service kubernaut-system/workflowexecution-operator-metrics",
        "PodDisruptionBudget kubernaut-system/workflowexecution-operator",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), manifest.objects.len(), "an object appears twice");
    // Namespaces and the CRD come first, so a plain apply in this order never refers to
    // something that does not exist yet.
    let first: Vec<&str> = manifest.objects.iter().take(3).map(kind_of).collect();
    assert_eq!(
        first,
        ["Namespace", "Namespace", "CustomResourceDefinition"]
    );
    Ok(())
}

#[test]
fn crd_and_configmaps_are_the_repository_files_byte_for_byte() -> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let root = repo_root();

    let config: ConfigMap = manifest.get("ConfigMap", Some(SYSTEM), "workflowexecution-config")?;
    let want = BTreeMap::from([(
        "config.yaml".to_owned(),
        std::fs::read_to_string(root.join("config/workflowexecution.yaml"))?,
    )]);
    assert_eq!(config.data, Some(want));

    let templates: ConfigMap =
        manifest.get("ConfigMap", Some(SYSTEM), "workflowexecution-templates")?;
    let dir = root.join("templates/workflowexecution");
    let mut want = BTreeMap::from([
        (
            "pipelinerun.yaml.j2".to_owned(),
            std::fs::read_to_string(dir.join(PIPELINERUN_TEMPLATE))?,
        ),
        (
            "status.yaml".to_owned(),
            std::fs::read_to_string(dir.join(STATUS_MAPPING))?,
        ),
        (
            "cancel.yaml".to_owned(),
            std::fs::read_to_string(dir.join(CANCEL_SPEC))?,
        ),
    ]);
    for (file, key) in JOB_ENGINE_FILES {
        want.insert(key.to_owned(), std::fs::read_to_string(dir.join(file))?);
    }
    assert_eq!(templates.data, Some(want));

    let mut deployed: CustomResourceDefinition = manifest.get(
        "CustomResourceDefinition",
        None,
        "workflowexecutions.kubernaut.ai",
    )?;
    let file: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(
        root.join(workflowexecution_operator::types::CRD_FILE),
    )?)?;
    // kustomize adds the common label; everything else is the file.
    let labels = deployed.metadata.labels.take();
    assert_eq!(
        labels,
        Some(BTreeMap::from([(
            "app.kubernetes.io/part-of".to_owned(),
            "kubernaut".to_owned()
        )]))
    );
    assert_eq!(deployed, file);
    Ok(())
}

/// The configuration `container` runs with: the shipped file (its ConfigMap) under the
/// container's configuration environment variables.
fn config_of(container: &Container) -> anyhow::Result<OperatorConfig> {
    let env: Vec<(String, String)> = container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.name.starts_with(ENV_PREFIX))
        .filter_map(|e| Some((e.name, e.value?)))
        .collect();
    Ok(load_with_env(
        &OperatorConfig::default(),
        Some(&repo_root().join("config/workflowexecution.yaml")),
        ENV_PREFIX,
        env,
    )?)
}

/// Write the Deployment's projected config volume into `root` the way the kubelet does:
/// timestamped data directory, `..data` symlink, and one top-level symlink per entry.
fn materialize_volume(
    manifest: &Manifest,
    root: &Path,
    generation: &str,
    edit: impl Fn(&str, &str) -> String,
) -> anyhow::Result<()> {
    let deployment = deployment(manifest)?;
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .ok_or_else(|| anyhow::anyhow!("no pod spec"))?;
    let volume = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "config")
        .and_then(|v| v.projected)
        .ok_or_else(|| anyhow::anyhow!("no projected volume named config"))?;
    let data_dir = root.join(format!("..{generation}"));
    let mut top_level = BTreeSet::new();
    for source in volume.sources.unwrap_or_default() {
        let projection = source
            .config_map
            .ok_or_else(|| anyhow::anyhow!("a projected source that is not a ConfigMap"))?;
        let map: ConfigMap = manifest.get("ConfigMap", Some(SYSTEM), &projection.name)?;
        let data = map.data.unwrap_or_default();
        let items = projection.items.unwrap_or_default();
        // Every key is mounted: a key without an item would be silently missing in the Pod.
        let mounted: BTreeSet<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(
            mounted, keys,
            "ConfigMap {} keys vs volume items",
            projection.name
        );
        for item in items {
            let path = data_dir.join(&item.path);
            std::fs::create_dir_all(path.parent().unwrap_or(&data_dir))?;
            std::fs::write(&path, edit(&item.path, &data[&item.key]))?;
            let first = item.path.split('/').next().unwrap_or_default().to_owned();
            top_level.insert(first);
        }
    }
    let staged = root.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{generation}"), &staged)?;
    std::fs::rename(&staged, root.join("..data"))?;
    for entry in top_level {
        let link = root.join(&entry);
        if !link.exists() {
            std::os::unix::fs::symlink(format!("..data/{entry}"), link)?;
        }
    }
    Ok(())
}

fn mount_path(deployment: &Deployment) -> anyhow::Result<PathBuf> {
    let container = operator_container(deployment)?;
    let mounts = container.volume_mounts.unwrap_or_default();
    assert_eq!(mounts.len(), 1, "one mount: {mounts:?}");
    let mount = &mounts[0];
    assert_eq!(mount.name, "config");
    // A subPath mount is never updated by the kubelet: hot reload needs the whole directory.
    assert_eq!(mount.sub_path, None);
    assert_eq!(mount.sub_path_expr, None);
    assert_eq!(mount.read_only, Some(true));
    Ok(PathBuf::from(&mount.mount_path))
}

#[test]
fn mounted_config_and_templates_sit_where_the_operator_reads_them_and_load() -> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let mount = mount_path(&deployment(&manifest)?)?;
    let scratch = tempfile::tempdir()?;
    let root = scratch.path();
    materialize_volume(&manifest, root, "2025_01_01_00_00_00.1", |_, text| {
        text.to_owned()
    })?;

    // The config file is where the operator looks without --config.
    let config_file = root.join("config.yaml");
    assert_eq!(
        mount.join("config.yaml"),
        PathBuf::from(DEFAULT_CONFIG_FILE)
    );
    let config = OperatorConfig::load(Some(&config_file))?;
    // The templates are where templates.dir of the deployed config points.
    assert_eq!(config.templates.dir, mount.join("templates"));
    let in_volume = root.join("templates");
    assert!(in_volume.join(PIPELINERUN_TEMPLATE).is_file());
    assert!(in_volume.join(STATUS_MAPPING).is_file());
    assert!(in_volume.join(CANCEL_SPEC).is_file());
    // The Job engine's directory sits beside Tekton's, its files named as in the repository.
    for (file, _) in JOB_ENGINE_FILES {
        assert_eq!(
            std::fs::read_to_string(in_volume.join(file))?,
            std::fs::read_to_string(repo_root().join("templates/workflowexecution").join(file))?,
            "{file}"
        );
    }

    // The operator's own check accepts the mounted files.
    let check = app::check_config::<WorkflowExecutionApp>;
    let report = check(Some(&config_file), Some(&in_volume))?;
    let repo = check(
        Some(&repo_root().join("config/workflowexecution.yaml")),
        Some(&repo_root().join("templates/workflowexecution")),
    )?;
    assert_eq!(
        report.checked.template_revision,
        repo.checked.template_revision
    );
    Ok(())
}

#[test]
fn template_and_config_edits_reach_the_operator_through_a_configmap_volume_swap()
-> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let scratch = tempfile::tempdir()?;
    let root = scratch.path();
    materialize_volume(&manifest, root, "2025_01_01_00_00_00.1", |_, text| {
        text.to_owned()
    })?;
    let store = testing::load_template_store(&root.join("templates"))?;
    let before = store.current().revision().to_owned();
    assert!(matches!(store.reload(), ReloadOutcome::Unchanged));

    // The kubelet writes a new generation and swaps `..data`; the old one is removed.
    materialize_volume(
        &manifest,
        root,
        "2025_01_01_00_05_00.2",
        |path, text| match path {
            "config.yaml" => text.replace("period: 5m", "period: 7m"),
            "templates/tekton/pipelinerun.yaml.j2" => {
                format!("{text}\n{{# edited through the ConfigMap #}}\n")
            }
            _ => text.to_owned(),
        },
    )?;
    std::fs::remove_dir_all(root.join("..2025_01_01_00_00_00.1"))?;

    match store.reload() {
        ReloadOutcome::Loaded { revision } => assert_ne!(revision, before),
        other => panic!("the swapped template was not loaded: {other:?}"),
    }
    let config = OperatorConfig::load(Some(&root.join("config.yaml")))?;
    assert_eq!(config.cooldown.period, Duration::from_secs(420));
    Ok(())
}

#[test]
fn deployment_is_highly_available_probed_and_locked_down() -> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let deployment = deployment(&manifest)?;
    let spec = deployment.spec.clone().unwrap_or_default();
    let pod = spec.template.spec.clone().unwrap_or_default();
    let container = operator_container(&deployment)?;
    let config: ConfigMap = manifest.get("ConfigMap", Some(SYSTEM), "workflowexecution-config")?;
    let config: OperatorConfig =
        serde_yaml::from_str(&config.data.unwrap_or_default()["config.yaml"])?;

    // Two replicas, of which only the Lease holder reconciles.
    assert_eq!(spec.replicas, Some(2));
    assert!(config.controller.leader_election);
    assert_eq!(pod.service_account_name.as_deref(), Some(OPERATOR));
    assert_eq!(container.args, Some(vec!["run".to_owned()]));

    // Ports: the config's listeners are the container's named ports.
    let port = |name: &str| {
        container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    assert_eq!(
        port("metrics"),
        Some(i32::from(config.controller.metrics_addr.port()))
    );
    assert_eq!(
        port("health"),
        Some(i32::from(config.controller.health_addr.port()))
    );
    assert_eq!(port("metrics"), Some(9090));
    assert_eq!(port("health"), Some(8081));
    for (probe, path) in [
        (container.liveness_probe.clone(), "/healthz"),
        (container.readiness_probe.clone(), "/readyz"),
    ] {
        let get = probe.and_then(|p| p.http_get).expect("an HTTP probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("health".into())
        );
    }

    // Downward API: the Lease namespace and the Pod that template Events are about.
    let env: BTreeMap<String, String> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| {
            let field = e.value_from.as_ref()?.field_ref.as_ref()?;
            Some((e.name.clone(), field.field_path.clone()))
        })
        .collect();
    assert_eq!(
        env.get("POD_NAME").map(String::as_str),
        Some("metadata.name")
    );
    assert_eq!(
        env.get("POD_NAMESPACE").map(String::as_str),
        Some("metadata.namespace")
    );
    assert!(
        container
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("WFE_")),
        "configuration belongs in the ConfigMap"
    );
    assert_eq!(pod.enable_service_links, Some(false));

    // Restricted security context.
    let pod_security = pod.security_context.clone().unwrap_or_default();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    let security = container.security_context.clone().unwrap_or_default();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(
        security.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_owned()])
    );
    assert_eq!(
        security.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".to_owned())
    );

    // Resources: requests for scheduling, a memory limit.
    let resources = container.resources.clone().unwrap_or_default();
    let requests = resources.requests.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    assert_eq!(requests.get("cpu").map(|q| q.0.as_str()), Some("100m"));
    assert_eq!(requests.get("memory").map(|q| q.0.as_str()), Some("96Mi"));
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("384Mi"));

    // The Service and the PodDisruptionBudget select exactly these pods.
    let pod_labels = spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let selects = |selector: &BTreeMap<String, String>| {
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
    };
    let service: Service = manifest.get(
        "Service",
        Some(SYSTEM),
        "workflowexecution-operator-metrics",
    )?;
    let service_spec = service.spec.unwrap_or_default();
    assert!(selects(&service_spec.selector.unwrap_or_default()));
    let service_port = &service_spec.ports.unwrap_or_default()[0];
    assert_eq!(service_port.port, 9090);
    assert_eq!(
        service_port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("metrics".into()))
    );
    let pdb: PodDisruptionBudget = manifest.get("PodDisruptionBudget", Some(SYSTEM), OPERATOR)?;
    let pdb_spec = pdb.spec.unwrap_or_default();
    assert!(selects(
        &pdb_spec
            .selector
            .and_then(|s| s.match_labels)
            .unwrap_or_default()
    ));
    assert_eq!(
        pdb_spec.min_available,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    assert!(selects(&spec.selector.match_labels.unwrap_or_default()));
    Ok(())
}

/// Every rule of every ClusterRole and Role of `manifest`.
fn every_rule(manifest: &Manifest) -> anyhow::Result<Vec<PolicyRule>> {
    let mut rules = Vec::new();
    for role in manifest.all::<ClusterRole>("ClusterRole")? {
        assert!(role.aggregation_rule.is_none());
        rules.extend(role.rules.unwrap_or_default());
    }
    for role in manifest.all::<Role>("Role")? {
        rules.extend(role.rules.unwrap_or_default());
    }
    Ok(rules)
}

/// `(apiGroup, resource, verb)` of every permission of `rules`.
fn permissions(rules: &[PolicyRule]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

/// No rule of `rules` carries a wildcard.
fn assert_no_wildcards(rules: &[PolicyRule]) {
    for rule in rules {
        let fields = [
            rule.api_groups.clone().unwrap_or_default(),
            rule.resources.clone().unwrap_or_default(),
            rule.verbs.clone(),
            rule.resource_names.clone().unwrap_or_default(),
            rule.non_resource_urls.clone().unwrap_or_default(),
        ];
        for value in fields.iter().flatten() {
            assert!(!value.contains('*'), "wildcard {value:?} in {rule:?}");
        }
    }
}

#[test]
fn rbac_has_no_wildcards_and_no_secret_or_configmap_access() -> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let rules = every_rule(&manifest)?;
    assert!(!rules.is_empty());
    assert_no_wildcards(&rules);
    for rule in &rules {
        let resources = rule.resources.clone().unwrap_or_default();
        for forbidden in ["secrets", "configmaps", "pods", "serviceaccounts"] {
            assert!(
                !resources.iter().any(|r| r == forbidden),
                "the operator never reads {forbidden} through the API: {rule:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn image_tag_is_the_release_version() -> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let container = operator_container(&deployment(&manifest)?)?;
    assert_eq!(
        container.image,
        Some(format!(
            "kubernaut/workflowexecution-operator:{}",
            env!("CARGO_PKG_VERSION")
        ))
    );
    Ok(())
}

/// Every object, read back: `Kind namespace/name` → resourceVersion.
async fn resource_versions(
    client: &kube::Client,
    manifest: &Manifest,
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let mut out = BTreeMap::new();
    for object in &manifest.objects {
        let api = deploy::api_for(client, object).await?;
        let live = api.get_opt(&object.name_any()).await?;
        out.insert(describe(object), live.and_then(|o| o.resource_version()));
    }
    Ok(out)
}

#[tokio::test]
async fn applying_twice_changes_nothing_and_deleting_removes_everything() -> anyhow::Result<()> {
    let _turn = CLUSTER.lock().await;
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let client = cp.client().await?;
    let manifest = Manifest::deploy()?;

    // Nothing of it exists before: everything below was created by the apply.
    let before = resource_versions(&client, &manifest).await?;
    assert!(
        before.values().all(Option::is_none),
        "already present: {before:?}"
    );

    let first = deploy::apply(&client, &manifest).await?;
    assert_eq!(first.len(), manifest.objects.len());
    // Read back once everything settled (the CRD's status is written after the apply returned).
    let after_first = resource_versions(&client, &manifest).await?;
    assert!(after_first.values().all(Option::is_some));

    let second = deploy::apply(&client, &manifest).await?;
    for two in &second {
        assert_eq!(
            after_first[&describe(two)],
            two.resource_version(),
            "the second apply changed {}",
            describe(two)
        );
    }
    assert_eq!(resource_versions(&client, &manifest).await?, after_first);

    deploy::delete(&client, &manifest).await?;
    let after_delete = resource_versions(&client, &manifest).await?;
    let left: Vec<&String> = after_delete
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

fn operator_pod(manifest: &Manifest, edit: impl FnOnce(&mut Pod)) -> anyhow::Result<Pod> {
    let template = deployment(manifest)?
        .spec
        .map(|s| s.template)
        .ok_or_else(|| anyhow::anyhow!("no pod template"))?;
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some("pod-security-check".to_owned()),
            namespace: Some(SYSTEM.to_owned()),
            labels: template.metadata.and_then(|m| m.labels),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    };
    edit(&mut pod);
    Ok(pod)
}

#[tokio::test]
async fn operator_pods_are_admitted_under_the_enforced_restricted_pod_security_standard()
-> anyhow::Result<()> {
    let _turn = CLUSTER.lock().await;
    let cp = ControlPlane::shared().await?;
    let _logs = cp.logs_on_failure();
    let client = cp.client().await?;
    let manifest = Manifest::deploy()?;
    deploy::apply(&client, &manifest).await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // The Deployment's pod as the API server's PodSecurity admission sees it.
    pods.create(&dry_run, &operator_pod(&manifest, |_| {})?)
        .await?;

    // Control: the namespace really enforces the standard, so the admission above means something.
    let escalating = operator_pod(&manifest, |pod| {
        if let Some(spec) = pod.spec.as_mut()
            && let Some(security) = spec.containers[0].security_context.as_mut()
        {
            security.allow_privilege_escalation = Some(true);
        }
    })?;
    match pods.create(&dry_run, &escalating).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(
                status.message.contains("restricted"),
                "unexpected refusal: {}",
                status.message
            );
        }
        other => panic!("a privilege-escalating pod was admitted: {other:?}"),
    }
    // With Data Storage's projected token (deploy/data-storage), the pod is admitted as well, and
    // so is the pod with the Job engine listed (deploy/job-engine).
    pods.create(
        &dry_run,
        &operator_pod(&Manifest::deploy_with(&["data-storage"])?, |_| {})?,
    )
    .await?;
    pods.create(
        &dry_run,
        &operator_pod(&Manifest::deploy_with(&["job-engine"])?, |_| {})?,
    )
    .await?;
    // Leave the control plane as found: the apply-twice test starts from nothing.
    deploy::delete(&client, &manifest).await?;
    Ok(())
}

#[test]
fn the_data_storage_component_mounts_a_projected_token_where_the_audit_config_reads_it()
-> anyhow::Result<()> {
    let manifest = Manifest::deploy_with(&["data-storage"])?;
    assert_eq!(manifest.objects.len(), Manifest::deploy()?.objects.len());
    let deployment = deployment(&manifest)?;
    let original = serde_json::to_value(manifest.find("Deployment", Some(SYSTEM), OPERATOR))?;
    assert_eq!(
        serde_json::to_value(&deployment)?,
        original,
        "unknown fields"
    );
    let container = operator_container(&deployment)?;

    let config = config_of(&container)?;
    assert_eq!(config.audit.sink, AuditSink::Http);
    assert!(
        config.audit.url.starts_with("https://"),
        "{}",
        config.audit.url
    );
    let token_file = config
        .audit
        .token_file
        .context("audit.tokenFile is not set")?;
    let ca_file = config.audit.ca_file.context("audit.caFile is not set")?;

    // Both files come from one read-only mount of a projected volume, at the paths it projects.
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| token_file.starts_with(&m.mount_path))
        .context("no volume mount holds audit.tokenFile")?;
    assert_eq!(mount.read_only, Some(true));
    let mount_path = Path::new(&mount.mount_path);
    let sources = deployment
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.volumes)
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == mount.name)
        .and_then(|v| v.projected)
        .and_then(|p| p.sources)
        .context("the mounted volume is not a projected one")?;
    let token = sources
        .iter()
        .find_map(|s| s.service_account_token.as_ref())
        .context("no serviceAccountToken source")?;
    assert_eq!(mount_path.join(&token.path), token_file);
    // A token of its own audience (Data Storage's): useless against the API server.
    let audience = token.audience.as_deref().unwrap_or_default();
    assert!(
        !audience.is_empty() && !audience.contains("kubernetes.default"),
        "audience {audience:?}"
    );
    // The API server's floor for projected tokens is 10 minutes.
    assert!(token.expiration_seconds.is_some_and(|s| s >= 600));
    let ca_paths: Vec<PathBuf> = sources
        .iter()
        .filter_map(|s| s.config_map.as_ref())
        .flat_map(|c| c.items.iter().flatten())
        .map(|item| mount_path.join(&item.path))
        .collect();
    assert!(
        ca_paths.contains(&ca_file),
        "{ca_file:?} not in {ca_paths:?}"
    );
    Ok(())
}

#[test]
fn manifest_objects_parse_as_their_kinds() -> anyhow::Result<()> {
    // A typo in a field name is dropped silently by kubectl's client-side apply of untyped YAML;
    // parsing each object into its typed struct and back shows every field is known.
    let manifest = Manifest::deploy()?;
    for object in &manifest.objects {
        let original = serde_json::to_value(object)?;
        let round_trip = match kind_of(object) {
            "Deployment" => {
                serde_json::to_value(serde_json::from_value::<Deployment>(original.clone())?)?
            }
            "Service" => {
                serde_json::to_value(serde_json::from_value::<Service>(original.clone())?)?
            }
            "PodDisruptionBudget" => serde_json::to_value(serde_json::from_value::<
                PodDisruptionBudget,
            >(original.clone())?)?,
            "ClusterRole" => {
                serde_json::to_value(serde_json::from_value::<ClusterRole>(original.clone())?)?
            }
            "Role" => serde_json::to_value(serde_json::from_value::<Role>(original.clone())?)?,
            "ConfigMap" => {
                serde_json::to_value(serde_json::from_value::<ConfigMap>(original.clone())?)?
            }
            _ => continue,
        };
        assert_eq!(
            round_trip,
            original,
            "{} has unknown fields",
            describe(object)
        );
    }
    Ok(())
}

#[test]
fn the_default_deploy_runs_tekton_only_and_grants_nothing_on_jobs_or_pods() -> anyhow::Result<()> {
    let manifest = Manifest::deploy()?;
    let config = config_of(&operator_container(&deployment(&manifest)?)?)?;
    assert_eq!(config.execution.engines, [DEFAULT_ENGINE]);
    assert_eq!(config.execution.default_engine, DEFAULT_ENGINE);
    let granted = permissions(&every_rule(&manifest)?);
    let on_jobs_or_pods: Vec<_> = granted
        .iter()
        .filter(|(group, resource, _)| {
            group == "batch" || resource == "jobs" || resource.starts_with("pods")
        })
        .collect();
    assert!(on_jobs_or_pods.is_empty(), "{on_jobs_or_pods:?}");
    Ok(())
}

#[test]
fn the_job_engine_component_lists_the_job_engine_and_adds_only_a_role_in_the_execution_namespace()
-> anyhow::Result<()> {
    let manifest = Manifest::deploy_with(&["job-engine"])?;
    let default = Manifest::deploy()?;

    // Two objects more, the Role and its RoleBinding; nothing cluster-wide.
    let got: BTreeSet<String> = manifest.objects.iter().map(describe).collect();
    let before: BTreeSet<String> = default.objects.iter().map(describe).collect();
    let added: BTreeSet<String> = got.difference(&before).cloned().collect();
    assert_eq!(
        added,
        BTreeSet::from([
            format!("Role {WORKFLOWS}/{JOB_ENGINE_RBAC}"),
            format!("RoleBinding {WORKFLOWS}/{JOB_ENGINE_RBAC}"),
        ])
    );
    assert!(before.is_subset(&got));
    assert_eq!(manifest.objects.len(), default.objects.len() + 2);
    for name in &added {
        let object = manifest
            .objects
            .iter()
            .find(|o| &describe(o) == name)
            .context("added object")?;
        let labels = object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("kubernaut"),
            "{name}"
        );
        assert_eq!(
            labels.get("app.kubernetes.io/name").map(String::as_str),
            Some(OPERATOR),
            "{name}"
        );
    }

    // Every object of deploy/ but the Deployment is unchanged, and the Deployment only gains the
    // engine list in its environment.
    let mut deployment = deployment(&manifest)?;
    for object in &default.objects {
        if kind_of(object) == "Deployment" {
            continue;
        }
        let same = manifest
            .find(
                kind_of(object),
                object.metadata.namespace.as_deref(),
                &object.name_any(),
            )
            .with_context(|| describe(object))?;
        assert_eq!(
            serde_json::to_value(same)?,
            serde_json::to_value(object)?,
            "{}",
            describe(object)
        );
    }
    let container = operator_container(&deployment)?;
    let config = config_of(&container)?;
    assert_eq!(config.execution.engines, [DEFAULT_ENGINE, "job"]);
    assert_eq!(config.execution.default_engine, DEFAULT_ENGINE);
    let configured: Vec<&str> = container
        .env
        .iter()
        .flatten()
        .filter(|e| e.name.starts_with(ENV_PREFIX))
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(configured, ["WFE_EXECUTION__ENGINES"]);
    if let Some(pod) = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
    {
        for container in &mut pod.containers {
            if let Some(env) = container.env.as_mut() {
                env.retain(|e| !e.name.starts_with(ENV_PREFIX));
            }
        }
    }
    assert_eq!(
        serde_json::to_value(&deployment)?,
        serde_json::to_value(default.find("Deployment", Some(SYSTEM), OPERATOR))?
    );

    // The Role: Jobs (the Job engine's child) and, read-only, Pods (its grandchildren), in the
    // namespace the configuration creates them in, bound to the operator's ServiceAccount only.
    assert_eq!(config.execution.namespace, WORKFLOWS);
    let role: Role = manifest.get("Role", Some(WORKFLOWS), JOB_ENGINE_RBAC)?;
    let rules = role.rules.clone().unwrap_or_default();
    assert_no_wildcards(&rules);
    for rule in &rules {
        assert_eq!(rule.resource_names, None, "{rule:?}");
        assert_eq!(rule.non_resource_urls, None, "{rule:?}");
    }
    let grant = |group: &str, resource: &str, verbs: &[&str]| {
        verbs
            .iter()
            .map(|verb| (group.to_owned(), resource.to_owned(), (*verb).to_owned()))
            .collect::<Vec<_>>()
    };
    let want: BTreeSet<(String, String, String)> = [
        grant(
            "batch",
            "jobs",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        grant("", "pods", &["get", "list", "watch"]),
    ]
    .concat()
    .into_iter()
    .collect();
    assert_eq!(permissions(&rules), want);
    let binding: RoleBinding = manifest.get("RoleBinding", Some(WORKFLOWS), JOB_ENGINE_RBAC)?;
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, JOB_ENGINE_RBAC);
    assert_eq!(
        binding.subjects,
        Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: OPERATOR.to_owned(),
            namespace: Some(SYSTEM.to_owned()),
            api_group: None,
        }])
    );

    // The mounted template directory holds both engines, and they load with this configuration:
    // the Job engine creates Jobs and reads their Pods, the kinds the Role is about.
    let scratch = tempfile::tempdir()?;
    materialize_volume(
        &manifest,
        scratch.path(),
        "2025_01_01_00_00_00.1",
        |_, text| text.to_owned(),
    )?;
    let mut config = config;
    config.templates.dir = scratch.path().join("templates");
    let engines = Engines::load(&config)?;
    let job = engines.get("job").context("the job engine is not loaded")?;
    assert_eq!(
        (job.child().api_version.as_str(), job.child().kind.as_str()),
        ("batch/v1", "Job")
    );
    let pods = job
        .mapping
        .grandchild_kind()
        .context("the job engine reads no grandchildren")?;
    assert_eq!(
        (pods.api_version.as_str(), pods.kind.as_str()),
        ("v1", "Pod")
    );
    assert!(engines.get(DEFAULT_ENGINE).is_some());
    Ok(())
}

#[test]
fn the_job_engine_component_has_no_wildcards_and_reads_pods_only() -> anyhow::Result<()> {
    let manifest = Manifest::deploy_with(&["job-engine"])?;
    let rules = every_rule(&manifest)?;
    assert_no_wildcards(&rules);
    for (group, resource, verb) in permissions(&rules) {
        for forbidden in ["secrets", "configmaps", "serviceaccounts"] {
            assert_ne!(resource, forbidden, "{group}/{resource} {verb}");
        }
        if resource.starts_with("pods") {
            assert_eq!(resource, "pods", "a pod subresource: {verb}");
            assert!(
                ["get", "list", "watch"].contains(&verb.as_str()),
                "pods {verb}"
            );
        }
    }
    Ok(())
}
