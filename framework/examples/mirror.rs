//! A complete operator on `kubernaut-framework`: a `Mirror` copies a ConfigMap, rendered from
//! `mirror/configmap.yaml.j2` (hot reloaded), to `spec.targetNamespace` and maps the copy back
//! into `status` with `mirror/status.yaml`. `cargo run -p kubernaut-framework --example mirror --
//! crd | kubectl apply -f -`, then run it without arguments (it uses the current kubeconfig and
//! serves `/metrics`, `/healthz`, `/readyz` on `$MIRROR_LISTEN`, default `0.0.0.0:8080`).
use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client, CustomResource, CustomResourceExt, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::reflector::ObjectRef,
};
use kubernaut_framework::{
    finalizer::{self, Event, FinalizerError},
    lock::{self, LockError, Owner},
    runtime::{Action, ChildWatch, Context, MetricLabel, Operator, RuntimeSettings},
    status::{MappingRules, StatusMapping},
    template::{ChildIdentity, TemplateDecl, TemplateError, TemplateStore, apply_identity},
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
    TemplateError => "template", serde_json::Error => "encoding");

async fn reconcile(mirror: Arc<Mirror>, ctx: Arc<Context<Mirror, State>>) -> Result<Action, Error> {
    let (name, ns) = (mirror.name_any(), mirror.namespace().unwrap_or_default());
    let target = mirror.spec.target_namespace.clone();
    let configmaps = ApiResource::erase::<ConfigMap>(&());
    let mirrors: Api<Mirror> = Api::namespaced(ctx.client.clone(), &ns);
    let children = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &target, &configmaps);
    let child_name = lock::lock_name("mirror-", &format!("{ns}/{name}"));
    let labels = [(PARENT_NAME, &name), (PARENT_NAMESPACE, &ns)];
    let labels: BTreeMap<_, _> = labels.map(|(k, v)| (k.to_string(), v.clone())).into();
    let owner = Owner {
        labels: labels.clone(),
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
    let context = json!({"mirror": &*mirror, "source": source.unwrap_or_default()});
    let mut child = templates.render("configmap.yaml.j2", &context)?;
    let mut identity = ChildIdentity {
        name: child_name.clone(),
        namespace: target.clone(),
        labels,
        ..Default::default()
    };
    identity
        .labels
        .insert(REVISION.into(), templates.revision().into());
    apply_identity(&mut child, &identity);
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().nth(1).as_deref() == Some("crd") {
        // Quoted for YAML 1.1 readers (kubectl) too.
        let crd = serde_json::to_value(Mirror::crd())?;
        print!("{}", kubernaut_framework::yaml::to_string(&crd));
        return Ok(());
    }
    tracing_subscriber::fmt().with_env_filter("info").init();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mirror");
    let decls: Vec<TemplateDecl> =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("templates.yaml"))?)?;
    let templates = Arc::new(TemplateStore::load(&dir, &decls)?);
    let phases = vec!["Mirrored".into(), "Pending".into()];
    let rules = MappingRules {
        phases,
        results: vec![],
        require_grandchildren: false,
        required_fields: vec![],
    };
    let mapping = StatusMapping::load(&dir.join("status.yaml"), &rules)?;
    let mut settings = RuntimeSettings::new("mirror-example");
    let listen = std::env::var("MIRROR_LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    // One address: /metrics, /healthz and /readyz share the listener.
    (settings.metrics_addr, settings.health_addr) = (listen.parse()?, listen.parse()?);
    Operator::<Mirror>::new(Client::try_default().await?, settings)
        .children(ChildWatch {
            resource: ApiResource::erase::<ConfigMap>(&()),
            namespace: None, // each Mirror names its own target namespace
            selector: PARENT_NAME.into(),
            parent_labels: (PARENT_NAME.into(), PARENT_NAMESPACE.into()),
            parent_name_annotation: None,
        })
        .templates(templates.clone(), None)
        .run(reconcile, State { templates, mapping })
        .await?;
    Ok(())
}
