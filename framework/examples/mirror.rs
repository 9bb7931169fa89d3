//! A complete operator on `kubernaut-framework`: a `Mirror` copies a ConfigMap, rendered from
//! `mirror/configmap.yaml.j2` (hot reloaded), to `spec.targetNamespace` and maps the copy back
//! into `status` with `mirror/status.yaml`. `cargo run -p kubernaut-framework --example mirror --
//! crd | kubectl apply -f -`, then `… -- run` (it uses the current kubeconfig and serves
//! `/metrics` on `$MIRROR_CONTROLLER__METRICSADDR`, default `0.0.0.0:9090`, and `/healthz`,
//! `/readyz` on `$MIRROR_CONTROLLER__HEALTHADDR`, default `0.0.0.0:8081`). The command line,
//! configuration (`MIRROR_…` environment, `--config FILE`) and signals are the framework's `app`
//! layer, as for every operator: `render --mirror FILE` prints the copy a Mirror would get (from
//! an empty source), `check-config` loads the templates and the status mapping.
use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, CustomResource, CustomResourceExt, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use kubernaut_framework::{
    app::{App, AppConfig, ControllerSettings, Started, TemplateSettings},
    config::{ConfigError, ConfigStore, Validate},
    finalizer::{self, Event, FinalizerError},
    lock::{self, LockError, Owner},
    runtime::{Action, ChildWatch, Context, MetricLabel, Operator, ParentWatch, RuntimeError},
    status::{MappingError, MappingRules, StatusMapping},
    template::{
        ChildIdentity, TemplateDecl, TemplateError, TemplateSet, TemplateStore, apply_identity,
    },
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Copy the ConfigMap `source` (in the Mirror's namespace) to `targetNamespace`.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "example.kubernaut.ai",
    version = "v1alpha1",
    kind = "Mirror",
    namespaced
)]
#[kube(status = "MirrorStatus")]
#[serde(rename_all = "camelCase")]
pub struct MirrorSpec {
    source: String,
    target_namespace: String,
}

/// The copy as `mirror/status.yaml` maps it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirrorStatus {
    phase: Option<String>,
    keys: Option<u64>,
    template_revision: Option<String>,
}

const FINALIZER: &str = "example.kubernaut.ai/mirror-cleanup";
const PARENT_NAME: &str = "example.kubernaut.ai/mirror";
const PARENT_NAMESPACE: &str = "example.kubernaut.ai/mirror-namespace";
const REVISION: &str = "example.kubernaut.ai/template-revision";

struct State {
    templates: Arc<TemplateStore>,
    mapping: StatusMapping,
}

/// A failed step; the kind is a bounded metric label.
#[derive(Debug, thiserror::Error)]
#[error("{0}: {1}")]
struct Error(&'static str, String);

impl MetricLabel for Error {
    fn metric_label(&self) -> &'static str {
        self.0
    }
}

macro_rules! error_kinds {
    ($($source:ty => $kind:literal),*) => {$(
        impl From<$source> for Error {
            fn from(e: $source) -> Self { Error($kind, e.to_string()) }
        }
    )*};
}
error_kinds!(kube::Error => "kube", FinalizerError => "finalizer", LockError => "lock",
    TemplateError => "template", serde_json::Error => "encoding", RuntimeError => "runtime",
    MappingError => "mapping", std::io::Error => "io", serde_yaml::Error => "yaml");

async fn reconcile(mirror: Arc<Mirror>, ctx: Arc<Context<Mirror, State>>) -> Result<Action, Error> {
    let (name, ns) = (mirror.name_any(), mirror.namespace().unwrap_or_default());
    let target = mirror.spec.target_namespace.clone();
    let configmaps = ApiResource::erase::<ConfigMap>(&());
    let mirrors: Api<Mirror> = Api::namespaced(ctx.client.clone(), &ns);
    let children = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &target, &configmaps);
    let (child_name, labels) = identity_of(&mirror);
    let owner = Owner {
        labels,
        uid: mirror.uid(),
        ..Owner::default()
    };
    let mirror = match finalizer::event(&mirrors, mirror, FINALIZER).await? {
        Event::Added(mirror) | Event::Apply(mirror) => mirror,
        Event::Cleanup(mirror) => {
            lock::release(&children, &child_name, &owner).await?; // deletes the copy if ours
            finalizer::remove_finalizer(&mirrors, &mirror, FINALIZER).await?;
            return Ok(Action::await_change());
        }
        Event::Done => return Ok(Action::await_change()),
    };

    // Render the copy from the current templates and apply it under the framework's identity.
    let sources = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns);
    let source = sources
        .get_opt(&mirror.spec.source)
        .await?
        .and_then(|s| s.data);
    let templates = ctx.data.templates.current();
    let child = copy_of(&mirror, &source.unwrap_or_default(), &templates)?;
    let child: DynamicObject = serde_json::from_value(child)?;
    let apply = PatchParams::apply("mirror-example").force();
    children
        .patch(&child_name, &apply, &Patch::Apply(&child))
        .await?;

    // Status from the cached copy (null until seen; its watch event then re-triggers us).
    let key = ObjectRef::new_with(&child_name, configmaps).within(&target);
    let child = serde_json::to_value(ctx.children.get(&key).as_deref())?;
    let (mapping, fields) = (&ctx.data.mapping, ctx.data.mapping.fields(&child));
    let status = MirrorStatus {
        phase: mapping.phase(&child).map(String::from),
        keys: fields.get("keys").and_then(Value::as_u64),
        template_revision: fields
            .get("revision")
            .and_then(Value::as_str)
            .map(String::from),
    };
    if mirror.status.as_ref() != Some(&status) {
        let patch = Patch::Merge(json!({ "status": status }));
        mirrors
            .patch_status(&name, &PatchParams::default(), &patch)
            .await?;
    }
    // The source is not watched: look at it again in a minute.
    Ok(Action::requeue(Duration::from_secs(60)))
}

/// The copy's name (the lock) and the labels naming its Mirror.
fn identity_of(mirror: &Mirror) -> (String, BTreeMap<String, String>) {
    let (name, ns) = (mirror.name_any(), mirror.namespace().unwrap_or_default());
    let child_name = lock::lock_name("mirror-", &format!("{ns}/{name}"));
    let labels = [(PARENT_NAME, name), (PARENT_NAMESPACE, ns)];
    (child_name, labels.map(|(k, v)| (k.to_string(), v)).into())
}

/// The copy of `source`'s data the Mirror gets, under the framework's identity: its lock name in
/// the target namespace, labelled with its Mirror and the template revision.
fn copy_of(
    mirror: &Mirror,
    source: &BTreeMap<String, String>,
    templates: &TemplateSet,
) -> Result<Value, Error> {
    let context = json!({"mirror": mirror, "source": source});
    let mut child = templates.render("configmap.yaml.j2", &context)?;
    let (name, mut labels) = identity_of(mirror);
    labels.insert(REVISION.into(), templates.revision().into());
    let identity = ChildIdentity {
        name,
        namespace: mirror.spec.target_namespace.clone(),
        labels,
        ..Default::default()
    };
    apply_identity(&mut child, &identity);
    Ok(child)
}

/// The example's configuration: the framework's `controller` and `templates` sections.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MirrorConfig {
    controller: ControllerSettings,
    templates: TemplateSettings,
}

impl Default for MirrorConfig {
    /// One replica (no leader election); the templates next to this file.
    fn default() -> Self {
        let mut controller = ControllerSettings::new("mirror-example");
        controller.leader_election = false;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mirror");
        let templates = TemplateSettings::new(dir);
        MirrorConfig {
            controller,
            templates,
        }
    }
}

impl Validate for MirrorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.controller.validate()?;
        self.templates.validate()
    }
}

impl AppConfig for MirrorConfig {
    const ENV_PREFIX: &'static str = "MIRROR_";
    const DEFAULT_FILE: &'static str = "/etc/kubernaut/mirror/config.yaml";
    const RESTART_ONLY: &'static [&'static str] = &["controller", "templates"];
    fn templates_mut(&mut self) -> &mut TemplateSettings {
        &mut self.templates
    }
    fn keep_restart_only(&mut self, running: &Self) {
        *self = running.clone();
    }
}

/// The templates and the status mapping of `dir`, checked as they load.
fn load(dir: &Path) -> Result<(TemplateStore, StatusMapping), Error> {
    let decls: Vec<TemplateDecl> =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("templates.yaml"))?)?;
    let phases = vec!["Mirrored".into(), "Pending".into()];
    let rules = MappingRules {
        phases,
        results: vec![],
        require_grandchildren: false,
        required_fields: vec![],
    };
    let mapping = StatusMapping::load(&dir.join("status.yaml"), &rules)?;
    Ok((TemplateStore::load(dir, &decls)?, mapping))
}

struct MirrorApp;

impl App for MirrorApp {
    type Config = MirrorConfig;
    type Report = String;
    type Error = Error;
    type StartError = Error;
    const NAME: &'static str = "mirror";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const ABOUT: &'static str = "Copies ConfigMaps across namespaces (Mirrors)";
    const RENDER_ABOUT: &'static str = "Print the copy a Mirror would get from an empty source";
    const RENDER_INPUT: &'static str = "mirror";
    const RENDER_INPUT_HELP: &'static str = "The Mirror (YAML or JSON)";

    fn crd_yaml() -> Result<String, Error> {
        Ok(kubernaut_framework::yaml::to_string(&serde_json::to_value(
            Mirror::crd(),
        )?))
    }

    fn render(input: &Path, config: &MirrorConfig) -> Result<Value, Error> {
        let mirror: Mirror = serde_yaml::from_str(&std::fs::read_to_string(input)?)?;
        let (templates, _) = load(&config.templates.dir)?;
        copy_of(&mirror, &BTreeMap::new(), &templates.current())
    }

    fn check(config: &MirrorConfig) -> Result<String, Error> {
        let (templates, _) = load(&config.templates.dir)?;
        Ok(format!(
            "templates: ok (revision {})\n",
            templates.current().revision()
        ))
    }

    async fn start(
        client: Client,
        config: Arc<ConfigStore<MirrorConfig>>,
        parents: ParentWatch,
    ) -> Result<Started<Error>, Error> {
        let config = config.current();
        let (templates, mapping) = load(&config.templates.dir)?;
        let templates = Arc::new(templates);
        let settings = config
            .controller
            .runtime_settings("mirror-example", &config.templates);
        let running = Operator::<Mirror>::new(client, settings)
            .parents(parents)
            .children(ChildWatch {
                resource: ApiResource::erase::<ConfigMap>(&()),
                namespace: None, // each Mirror names its own target namespace
                selector: PARENT_NAME.into(),
                parent_labels: (PARENT_NAME.into(), PARENT_NAMESPACE.into()),
                parent_name_annotation: None,
            })
            .templates(templates.clone(), None)
            .start(reconcile, State { templates, mapping })
            .await?;
        Ok(Started::runtime(running))
    }
}

fn main() -> std::process::ExitCode {
    kubernaut_framework::app::main::<MirrorApp>()
}
