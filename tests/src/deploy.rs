//! The `deploy/` kustomize base as Kubernetes objects: built by kustomize, applied to a control
//! plane with server-side apply, deleted again, and its RBAC read as rules.
//!
//! kustomize is built from its Go module by `tests/kustomize/install.sh` into a cache outside the
//! clone; [`kustomize_binary`] finds it and fails with the command that builds it when it is
//! missing (the deploy tests never skip).
//!
//! Guarantees:
//! 1. [`Manifest::build`] runs the real kustomize on the real directory: what the tests apply is
//!    what `kubectl apply -k deploy/` would apply.
//! 2. [`apply`] is server-side apply with one field manager, in the manifest's order (kustomize
//!    puts namespaces and CRDs first), and waits for each CRD to be `Established` before going on,
//!    so later objects of the new kinds can be applied.
//! 3. [`delete`] deletes in reverse order and waits until every object is gone.
//!
//! Caveats:
//! 1. The local control plane runs no controller-manager, so no namespace controller: [`delete`]
//!    finalizes each deleted namespace itself (the namespace controller's last step) after the
//!    manifest's own objects in it are gone. Objects created later by others (PipelineRuns,
//!    Events, Leases) are not removed from it first, as a real cluster would.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::{
    api::{
        core::v1::Namespace,
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy},
    core::GroupVersionKind,
    discovery::{self, Scope},
};
use serde::de::DeserializeOwned;

use crate::requests::ApiRequest;

/// The command that builds kustomize; named in every "kustomize missing" error.
pub const KUSTOMIZE_INSTALL_COMMAND: &str = "make kustomize   (or: tests/kustomize/install.sh)";

/// The field manager of [`apply`].
pub const FIELD_MANAGER: &str = "kubernaut-deploy-check";

/// How long [`apply`] waits for a CRD and [`delete`] for an object to go.
const WAIT: Duration = Duration::from_secs(60);

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The kustomize binary: `KUBERNAUT_KUSTOMIZE`, else what the install script prints; an error
/// naming the build command when it is not there.
pub fn kustomize_binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var("KUBERNAUT_KUSTOMIZE") {
        Ok(path) => PathBuf::from(path),
        Err(_) => crate::controlplane::install_script_print("kustomize/install.sh")?,
    };
    let complete = PathBuf::from(format!("{}.complete", path.display()));
    if path.is_file() && complete.is_file() {
        Ok(path)
    } else {
        bail!(
            "kustomize is not installed: {} is missing.\n\
             The deploy tests build deploy/ with kustomize; build it with:\n    {}",
            path.display(),
            KUSTOMIZE_INSTALL_COMMAND
        )
    }
}

/// `kustomize build <dir>`: the YAML stream.
pub fn kustomize_build(dir: &Path) -> anyhow::Result<String> {
    let binary = kustomize_binary()?;
    let out = Command::new(&binary)
        .arg("build")
        .arg(dir)
        .output()
        .with_context(|| format!("running {} build {}", binary.display(), dir.display()))?;
    if !out.status.success() {
        bail!(
            "kustomize build {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("kustomize printed something that is not UTF-8")
}

/// The objects of a kustomization, in kustomize's order.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The objects.
    pub objects: Vec<DynamicObject>,
}

impl Manifest {
    /// Build `dir` with kustomize and parse the result.
    pub fn build(dir: &Path) -> anyhow::Result<Manifest> {
        Manifest::parse(&kustomize_build(dir)?)
    }

    /// The repository's `deploy/`.
    pub fn deploy() -> anyhow::Result<Manifest> {
        Manifest::build(&repo_root().join("deploy"))
    }

    /// The repository's `deploy/` with the components `deploy/<component>` enabled, as an admin
    /// enables them: an overlay listing `deploy/` as its resource and each one under
    /// `components:` (kustomize takes no absolute paths, so the overlay, in a temporary
    /// directory, names the repository relative to itself).
    pub fn deploy_with(components: &[&str]) -> anyhow::Result<Manifest> {
        let overlay = tempfile::tempdir()?;
        let up = "../".repeat(overlay.path().components().count().saturating_sub(1));
        let root = std::fs::canonicalize(repo_root())?;
        let root = root.strip_prefix("/")?.display();
        let mut kustomization = format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
             resources:\n  - {up}{root}/deploy\ncomponents:\n"
        );
        for component in components {
            kustomization.push_str(&format!("  - {up}{root}/deploy/{component}\n"));
        }
        std::fs::write(overlay.path().join("kustomization.yaml"), kustomization)?;
        Manifest::build(overlay.path())
    }

    /// Parse a multi-document YAML stream; every document must have `apiVersion`, `kind` and
    /// `metadata.name`.
    pub fn parse(yaml: &str) -> anyhow::Result<Manifest> {
        let mut objects = Vec::new();
        for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(document)
                .with_context(|| format!("document {index} is not YAML"))?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_json::from_value(value)
                .with_context(|| format!("document {index} is not a Kubernetes object"))?;
            if object.types.is_none() || object.metadata.name.is_none() {
                bail!("document {index} has no apiVersion, kind or metadata.name");
            }
            objects.push(object);
        }
        Ok(Manifest { objects })
    }

    /// The object of `kind` named `name` (in `namespace`, for namespaced kinds).
    pub fn find(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<&DynamicObject> {
        self.objects.iter().find(|o| {
            kind_of(o) == kind
                && o.metadata.namespace.as_deref() == namespace
                && o.name_any() == name
        })
    }

    /// The object of `kind` named `name`, converted to a typed object.
    pub fn get<K: DeserializeOwned>(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> anyhow::Result<K> {
        let object = self.find(kind, namespace, name).ok_or_else(|| {
            anyhow!(
                "deploy/ has no {kind} {}{name}",
                namespace.map(|ns| format!("{ns}/")).unwrap_or_default()
            )
        })?;
        typed(object)
    }

    /// Every object of `kind`, converted to a typed object.
    pub fn all<K: DeserializeOwned>(&self, kind: &str) -> anyhow::Result<Vec<K>> {
        self.objects
            .iter()
            .filter(|o| kind_of(o) == kind)
            .map(typed)
            .collect()
    }

    /// The rules granted to the ServiceAccount `namespace/name` by the manifest's bindings.
    pub fn rules_of(&self, namespace: &str, name: &str) -> anyhow::Result<Vec<GrantedRule>> {
        let names_sa = |subjects: &Option<Vec<k8s_openapi::api::rbac::v1::Subject>>| {
            subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == name
                    && s.namespace.as_deref() == Some(namespace)
            })
        };
        let mut granted = Vec::new();
        for binding in self.all::<ClusterRoleBinding>("ClusterRoleBinding")? {
            if names_sa(&binding.subjects) {
                let role: ClusterRole = self.get("ClusterRole", None, &binding.role_ref.name)?;
                granted.extend(role.rules.into_iter().flatten().map(|rule| GrantedRule {
                    role: format!("ClusterRole {}", binding.role_ref.name),
                    namespace: None,
                    rule,
                }));
            }
        }
        for binding in self.all::<RoleBinding>("RoleBinding")? {
            if !names_sa(&binding.subjects) {
                continue;
            }
            let scope = binding.metadata.namespace.clone();
            let rules = match binding.role_ref.kind.as_str() {
                "Role" => {
                    self.get::<Role>("Role", scope.as_deref(), &binding.role_ref.name)?
                        .rules
                }
                _ => {
                    self.get::<ClusterRole>("ClusterRole", None, &binding.role_ref.name)?
                        .rules
                }
            };
            granted.extend(rules.into_iter().flatten().map(|rule| GrantedRule {
                role: format!(
                    "{} {}/{}",
                    binding.role_ref.kind,
                    scope.as_deref().unwrap_or_default(),
                    binding.role_ref.name
                ),
                namespace: scope.clone(),
                rule,
            }));
        }
        Ok(granted)
    }
}

/// An object's kind.
pub fn kind_of(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

/// An object's `apiVersion`.
pub fn api_version_of(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.api_version.as_str())
}

/// `Kind namespace/name` for messages.
pub fn describe(object: &DynamicObject) -> String {
    format!(
        "{} {}{}",
        kind_of(object),
        object
            .metadata
            .namespace
            .as_deref()
            .map(|ns| format!("{ns}/"))
            .unwrap_or_default(),
        object.name_any()
    )
}

fn typed<K: DeserializeOwned>(object: &DynamicObject) -> anyhow::Result<K> {
    serde_json::to_value(object)
        .and_then(serde_json::from_value)
        .with_context(|| format!("{} does not match its kind's schema", describe(object)))
}

/// One RBAC rule and where it applies.
#[derive(Clone, Debug)]
pub struct GrantedRule {
    /// `ClusterRole name` or `Role namespace/name`, for messages.
    pub role: String,
    /// The namespace a Role (or a RoleBinding) limits the rule to; `None` = every namespace.
    pub namespace: Option<String>,
    /// The rule.
    pub rule: PolicyRule,
}

impl GrantedRule {
    /// Every `(group, resource, verb)` the rule grants.
    pub fn permissions(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for group in self.rule.api_groups.iter().flatten() {
            for resource in self.rule.resources.iter().flatten() {
                for verb in &self.rule.verbs {
                    out.push((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
        out
    }

    /// Whether the rule permits `request` (exact matches only: the rules carry no wildcards).
    pub fn permits(&self, request: &ApiRequest) -> bool {
        let (Some(group), Some(resource)) = (&request.group, &request.resource) else {
            return false;
        };
        let in_scope = self.namespace.is_none() || self.namespace == request.namespace;
        let names_ok = match &self.rule.resource_names {
            Some(names) if !names.is_empty() => request
                .name
                .as_ref()
                .is_some_and(|n| names.iter().any(|x| x == n)),
            _ => true,
        };
        in_scope
            && names_ok
            && self.rule.api_groups.iter().flatten().any(|g| g == group)
            && self.rule.resources.iter().flatten().any(|r| r == resource)
            && self.rule.verbs.contains(&request.verb)
    }
}

/// Server-side apply every object of `manifest` (see the module guarantees); returns the objects
/// as the API server answered, in the same order.
pub async fn apply(client: &Client, manifest: &Manifest) -> anyhow::Result<Vec<DynamicObject>> {
    let params = PatchParams::apply(FIELD_MANAGER);
    let mut applied = Vec::with_capacity(manifest.objects.len());
    for object in &manifest.objects {
        let api = api_for(client, object).await?;
        let result = api
            .patch(&object.name_any(), &params, &Patch::Apply(object))
            .await
            .with_context(|| format!("applying {}", describe(object)))?;
        if kind_of(object) == "CustomResourceDefinition" {
            wait_established(client, &object.name_any()).await?;
        }
        applied.push(result);
    }
    Ok(applied)
}

/// Delete every object of `manifest`, last first, and wait until all are gone (see the module
/// caveat about namespaces).
pub async fn delete(client: &Client, manifest: &Manifest) -> anyhow::Result<()> {
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for object in manifest.objects.iter().rev() {
        let api = api_for(client, object).await?;
        match api.delete(&object.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting {}", describe(object))),
        }
    }
    for object in manifest.objects.iter().rev() {
        let api = api_for(client, object).await?;
        let deadline = Instant::now() + WAIT;
        loop {
            if api.get_opt(&object.name_any()).await?.is_none() {
                break;
            }
            if kind_of(object) == "Namespace" {
                finalize_namespace(client, &object.name_any()).await?;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} still exists {WAIT:?} after it was deleted",
                    describe(object)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The namespace controller's last step: empty `spec.finalizers` of a terminating namespace.
async fn finalize_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let Some(mut namespace) = api.get_opt(name).await? else {
        return Ok(());
    };
    if namespace.metadata.deletion_timestamp.is_none() {
        bail!("namespace {name} was deleted but is not terminating");
    }
    if let Some(spec) = namespace.spec.as_mut() {
        spec.finalizers = Some(Vec::new());
    }
    match api
        .replace_subresource("finalize", name, &PostParams::default(), &namespace)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("finalizing namespace {name}")),
    }
}

/// The API of `object`'s kind, in its namespace when the kind is namespaced.
pub async fn api_for(
    client: &Client,
    object: &DynamicObject,
) -> anyhow::Result<Api<DynamicObject>> {
    let types = object
        .types
        .as_ref()
        .ok_or_else(|| anyhow!("{} has no apiVersion/kind", describe(object)))?;
    let (group, version) = match types.api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", types.api_version.as_str()),
    };
    let gvk = GroupVersionKind::gvk(group, version, &types.kind);
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {}", types.api_version))?;
    Ok(match (capabilities.scope, &object.metadata.namespace) {
        (Scope::Namespaced, Some(namespace)) => {
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        (Scope::Namespaced, None) => {
            bail!("{} is namespaced but names no namespace", describe(object))
        }
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    })
}

async fn wait_established(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = Instant::now() + WAIT;
    loop {
        let established = api
            .get(name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("CRD {name} not Established after {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
