//! RBAC proven under real RBAC: with `deploy/` applied, the operator runs as the deployed
//! ServiceAccount through a TokenRequest token, with leader election on, through every phase.
//!
//! 1. `every_phase_runs_as_the_deployed_service_account_and_uses_every_granted_verb`: Completed,
//!    Failed (with TaskRun details), Skipped `ResourceBusy`, deletion while Running (cancel, then
//!    delete), lock release after the cooldown, a refused finalizer write (re-read), and repeated
//!    template reload Events. Every API request the operator made is recorded client-side; the test
//!    then shows that none was refused, each was allowed by a `deploy/` rule, and every verb of
//!    every rule bound to the ServiceAccount was used — so the RBAC is neither too narrow nor
//!    broader than the code.
//! 2. `a_missing_verb_is_reported_not_swallowed`: the same grants minus `create` on
//!    `pipelineruns`; the WorkflowExecution fails with reason `Forbidden`, a Warning Event says why,
//!    and no PipelineRun exists.
//!
//! 3. `the_job_engine_component_grants_jobs_and_read_only_pods_in_the_execution_namespace_only`:
//!    `deploy/` alone grants the ServiceAccount nothing on Jobs or Pods anywhere; with the
//!    `deploy/job-engine` component applied it may do exactly `get`, `list`, `watch`, `create`,
//!    `patch`, `delete` on Jobs and `get`, `list`, `watch` on Pods (the kinds the shipped Job
//!    engine creates and reads) in the execution namespace, and nothing on them elsewhere — asked
//!    of the API server's authorizer for every verb, and shown by requests made with the
//!    ServiceAccount's own token.
//!
//! The tests run against the shared `kubernaut-workflows` namespace and take turns.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::Context as _;
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    authentication::v1::SelfSubjectReview,
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
    batch::v1::Job,
    core::v1::Pod,
    events::v1::Event as EventV1,
    rbac::v1::{ClusterRoleBinding, Role, RoleBinding},
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{
        DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
        WatchParams,
    },
    config::{KubeConfigOptions, Kubeconfig},
    core::GroupVersionKind,
};
use kubernaut_framework::runtime::ParentWatch;
use kubernaut_framework::template::ChildKind;
use kubernaut_test_harness::{
    ControlPlane,
    deploy::{self, GrantedRule, Manifest},
    requests::{ApiRequest, RequestLog},
    simulator::Scenario,
    tekton,
};
use serde_json::json;
use support::{Env, OperatorSetup, WAIT, eventually, status_of, wfe};
use workflowexecution_operator::{
    config::{DEFAULT_ENGINE, OperatorConfig},
    controller::FINALIZER,
    engine::Engines,
    pipelinerun::pipeline_run_name,
    types::{FailureReason, Phase, SkipReason},
};

const SYSTEM: &str = "kubernaut-system";
const WORKFLOWS: &str = "kubernaut-workflows";
const OPERATOR_SA: &str = "workflowexecution-operator";
/// Marks the WorkflowExecution whose finalizer write an admission policy refuses.
const REFUSE_FINALIZER: &str = "test.kubernaut.ai/refuse-finalizer";

/// The tests share the execution namespace (one simulator at a time) and cluster-wide watches.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Install the Tekton stand-in CRDs (a real cluster has Tekton) and apply `deploy/`.
async fn deployed(cp: &ControlPlane) -> anyhow::Result<Manifest> {
    cp.install_crds(&tekton::crds()).await?;
    let manifest = Manifest::deploy()?;
    deploy::apply(&cp.client().await?, &manifest).await?;
    Ok(manifest)
}

/// A client authenticated as the ServiceAccount `namespace/name` with a TokenRequest token, whose
/// every request is recorded in `log`; checks the API server sees exactly that identity.
async fn service_account_client(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    log: &RequestLog,
) -> anyhow::Result<Client> {
    let token = cp.service_account_token(namespace, name).await?;
    let review: Api<SelfSubjectReview> = Api::all(cp.client_with_token(&token).await?);
    let me = review
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = me.status.and_then(|s| s.user_info).unwrap_or_default();
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{namespace}:{name}").as_str())
    );
    assert!(!user.groups.iter().flatten().any(|g| g == "system:masters"));
    let suffix: u32 = rand::random();
    let path = cp.write_kubeconfig(&format!("{name}-{suffix:08x}.kubeconfig"), &token)?;
    let config =
        Config::from_custom_kubeconfig(Kubeconfig::read_from(path)?, &KubeConfigOptions::default())
            .await?;
    log.client(config)
}

/// Whether the API server's authorizer allows `verb` on `group/resource` in `namespace` to the
/// ServiceAccount `sa_namespace/sa_name`.
async fn allowed(
    admin: &Client,
    (sa_namespace, sa_name): (&str, &str),
    (group, resource, verb): (&str, &str, &str),
    namespace: Option<&str>,
) -> anyhow::Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((resource, sub)) => (resource, Some(sub.to_owned())),
        None => (resource, None),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{sa_namespace}:{sa_name}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{sa_namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                subresource,
                verb: Some(verb.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(admin.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Wait until the authorizer has caught up with freshly applied bindings: every permission of
/// `rules` is allowed to the ServiceAccount.
async fn wait_until_granted(
    admin: &Client,
    sa: (&str, &str),
    rules: &[GrantedRule],
) -> anyhow::Result<()> {
    for rule in rules {
        for (group, resource, verb) in rule.permissions() {
            let namespace = rule.namespace.as_deref().or(Some("default"));
            eventually(
                &format!("{verb} {group}/{resource} granted to {}", sa.1),
                WAIT,
                || async {
                    Ok(allowed(admin, sa, (&group, &resource, &verb), namespace)
                        .await?
                        .then_some(()))
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// The operator's config for these tests: leader election on (as deployed) with a Lease of its
/// own, templates from `templates` re-read every 200ms.
fn tune_for_rbac(
    templates: &Path,
    lease: &str,
) -> impl FnOnce(&mut workflowexecution_operator::config::OperatorConfig) {
    let templates = templates.to_path_buf();
    let lease = lease.to_owned();
    move |config| {
        config.controller.leader_election = true;
        config.controller.lease_name = lease;
        config.templates.dir = templates;
        config.templates.poll_interval = Duration::from_millis(200);
    }
}

/// Copy the repository's template directory into `to`.
fn copy_templates(to: &Path) -> anyhow::Result<()> {
    let from = support::templates_dir().join("tekton");
    std::fs::create_dir_all(to.join("tekton"))?;
    for file in ["pipelinerun.yaml.j2", "status.yaml", "cancel.yaml"] {
        std::fs::copy(from.join(file), to.join("tekton").join(file))?;
    }
    Ok(())
}

/// Append a comment to the PipelineRun template (a new revision), replacing it atomically.
fn edit_template(dir: &Path, marker: &str) -> anyhow::Result<()> {
    let file = dir.join("tekton/pipelinerun.yaml.j2");
    let text = std::fs::read_to_string(&file)?;
    let staged = dir.join("staged.j2");
    std::fs::write(&staged, format!("{text}\n{{# {marker} #}}\n"))?;
    std::fs::rename(staged, file)?;
    Ok(())
}

/// Requests matching `pred` so far.
fn recorded(log: &RequestLog, pred: impl Fn(&ApiRequest) -> bool) -> Vec<ApiRequest> {
    log.requests().into_iter().filter(|r| pred(r)).collect()
}

fn is(request: &ApiRequest, verb: &str, resource: &str, name: Option<&str>) -> bool {
    request.verb == verb
        && request.resource.as_deref() == Some(resource)
        && (name.is_none() || request.name.as_deref() == name)
}

/// An admission policy that refuses adding the operator's finalizer to WorkflowExecutions marked
/// with [`REFUSE_FINALIZER`] (HTTP 422, as a changed finalizer list would).
async fn refuse_marked_finalizers(admin: &Client, name: &str) -> anyhow::Result<()> {
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": ["kubernaut.ai"],
                "apiVersions": ["v1alpha1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["workflowexecutions"]
            }]},
            "matchConditions": [{
                "name": "marked",
                "expression": format!("has(object.metadata.annotations) && '{REFUSE_FINALIZER}' in object.metadata.annotations")
            }],
            "validations": [{
                "expression": format!("!has(object.metadata.finalizers) || !('{FINALIZER}' in object.metadata.finalizers)"),
                "message": "refused by the test's admission policy",
                "reason": "Invalid"
            }]
        }
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))?;
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

async fn remove_admission_policy(admin: &Client, name: &str) -> anyhow::Result<()> {
    Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Api::<ValidatingAdmissionPolicy>::all(admin.clone())
        .delete(name, &DeleteParams::default())
        .await?;
    Ok(())
}

/// Events about the Lease `name` in the operator's namespace with `reason`.
async fn lease_events(admin: &Client, lease: &str, reason: &str) -> anyhow::Result<Vec<EventV1>> {
    let api: Api<EventV1> = Api::namespaced(admin.clone(), SYSTEM);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(lease)
        })
        .collect())
}

#[tokio::test]
async fn every_phase_runs_as_the_deployed_service_account_and_uses_every_granted_verb()
-> anyhow::Result<()> {
    let _turn = TURN.lock().await;
    let cp = ControlPlane::shared().await?;
    let manifest = deployed(cp).await?;
    let admin = cp.client().await?;
    let rules = manifest.rules_of(SYSTEM, OPERATOR_SA)?;
    wait_until_granted(&admin, (SYSTEM, OPERATOR_SA), &rules).await?;

    let log = RequestLog::new();
    let client = service_account_client(cp, SYSTEM, OPERATOR_SA, &log).await?;
    let scratch = tempfile::tempdir()?;
    let templates = scratch.path().join("templates");
    copy_templates(&templates)?;
    let suffix: u32 = rand::random();
    let lease = format!("workflowexecution-operator-{suffix:08x}");
    let env = Env::with_operator(
        "rbac",
        OperatorSetup {
            client,
            exec_ns: Some(WORKFLOWS.to_owned()),
            // As deployed: WATCH_NAMESPACE unset, every namespace.
            parents: Some(ParentWatch::default()),
        },
        tune_for_rbac(&templates, &lease),
    )
    .await?;
    eventually("leadership", WAIT, || async {
        Ok(env.running().is_leader().then_some(()))
    })
    .await?;
    let target = |kind: &str| format!("{}/deployment/{kind}", env.ns);

    // Pending -> Running -> Completed.
    env.create("completed", "restart", &target("web"), Scenario::Success)
        .await?;
    let completed = env.wait_phase("completed", Phase::Completed).await?;
    let completed_run = status_of(&completed)
        .pipeline_run_ref
        .expect("a PipelineRun reference")
        .name;

    // Failed, with the failed TaskRun's details.
    env.create("failed", "restart", &target("db"), Scenario::TaskFailure)
        .await?;
    let failed = env.wait_phase("failed", Phase::Failed).await?;
    let details = status_of(&failed).failure_details.expect("failure details");
    assert_eq!(details.reason, FailureReason::TaskFailed);
    assert!(details.failed_task_name.is_some(), "{details:?}");

    // A run deleted behind the operator's back before any step ran: the TaskRuns it may have
    // left behind are listed (by label) to tell whether a step ran.
    env.create(
        "vanished",
        "restart",
        &target("vanishing"),
        Scenario::Resolving,
    )
    .await?;
    let resolving = env
        .wait_for("vanished", "Running while resolving", |w| {
            status_of(w)
                .pipeline_run_status
                .is_some_and(|s| s.reason.as_deref() == Some("ResolvingPipelineRef"))
        })
        .await?;
    let vanished_run = status_of(&resolving)
        .pipeline_run_ref
        .expect("a PipelineRun reference")
        .name;
    env.runs()
        .delete(&vanished_run, &DeleteParams::default())
        .await?;
    let vanished = env.wait_phase("vanished", Phase::Failed).await?;
    let details = status_of(&vanished)
        .failure_details
        .expect("failure details");
    assert!(!details.was_execution_failure, "{details:?}");

    // Skipped: ResourceBusy while another execution holds the target.
    env.create("holder", "scale", &target("api"), Scenario::Hang)
        .await?;
    env.wait_phase("holder", Phase::Running).await?;
    env.create("busy", "restart", &target("api"), Scenario::Success)
        .await?;
    let busy = env.wait_phase("busy", Phase::Skipped).await?;
    assert_eq!(
        status_of(&busy).skip_details.map(|d| d.reason),
        Some(SkipReason::ResourceBusy)
    );

    // Deletion while Running: the PipelineRun is cancelled, then deleted, then the WFE goes.
    let holder_run = pipeline_run_name(&target("api"));
    env.wfes()
        .delete("holder", &DeleteParams::default())
        .await?;
    env.wait_gone("holder").await?;
    env.wait_run_gone(&holder_run).await?;
    let on_holder_run = recorded(&log, |r| r.name.as_deref() == Some(holder_run.as_str()));
    let cancel = on_holder_run
        .iter()
        .position(|r| is(r, "patch", "pipelineruns", None))
        .expect("the running PipelineRun was cancelled");
    let delete = on_holder_run
        .iter()
        .position(|r| is(r, "delete", "pipelineruns", None))
        .expect("the PipelineRun was deleted");
    assert!(
        cancel < delete,
        "cancelled before deleted: {on_holder_run:?}"
    );

    // Lock release: after the cooldown the finished run is deleted.
    env.wait_run_gone(&completed_run).await?;
    env.wait_event("completed", "LockReleased").await?;

    // A refused finalizer write makes the operator re-read the object (`get`), and the failure is
    // retried, not lost: once the refusal is lifted the execution runs.
    let policy = format!("rbac-refuse-finalizer-{suffix:08x}");
    refuse_marked_finalizers(&admin, &policy).await?;
    let mut refused = wfe(
        "refused",
        "restart",
        &target("cache"),
        Scenario::Success,
        json!({}),
    );
    refused
        .annotations_mut()
        .insert(REFUSE_FINALIZER.to_owned(), "true".to_owned());
    let mut probe = refused.clone();
    probe.metadata.name = Some("policy-probe".to_owned());
    probe.finalizers_mut().push(FINALIZER.to_owned());
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually("the admission policy in force", WAIT, || async {
        Ok(match env.wfes().create(&dry_run, &probe).await {
            Err(kube::Error::Api(status)) if status.code == 422 => Some(()),
            _ => None,
        })
    })
    .await?;
    env.create_wfe(&refused).await?;
    eventually(
        "a re-read after the refused finalizer patch",
        WAIT,
        || async {
            Ok(recorded(&log, |r| {
                is(r, "get", "workflowexecutions", Some("refused")) && r.authorized()
            })
            .first()
            .cloned())
        },
    )
    .await?;
    let errors = env
        .scrape()
        .await?
        .count("framework_reconcile_errors_total", &[("kind", "finalizer")]);
    assert!(errors >= 1.0, "the refused write was not counted");
    env.wfes()
        .patch(
            "refused",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REFUSE_FINALIZER: null}}})),
        )
        .await?;
    env.wait_phase("refused", Phase::Completed).await?;
    remove_admission_policy(&admin, &policy).await?;

    // Template reloads are Events about the Lease; the second one repeats the first (a patch).
    edit_template(&templates, "first edit")?;
    eventually("a TemplateReloaded Event", WAIT, || async {
        Ok(lease_events(&admin, &lease, "TemplateReloaded")
            .await?
            .first()
            .cloned())
    })
    .await?;
    edit_template(&templates, "second edit")?;
    eventually("the TemplateReloaded Event repeated", WAIT, || async {
        Ok(lease_events(&admin, &lease, "TemplateReloaded")
            .await?
            .into_iter()
            .find(|e| e.series.as_ref().is_some_and(|s| s.count >= 2)))
    })
    .await?;

    // Clean up: every execution deleted (finalizers removed), then a graceful stop releases the
    // Lease.
    for name in ["completed", "failed", "vanished", "busy", "refused"] {
        env.wfes().delete(name, &DeleteParams::default()).await?;
    }
    for name in ["completed", "failed", "vanished", "busy", "refused"] {
        env.wait_gone(name).await?;
    }
    let mut env = env;
    env.stop_operator().await?;

    // Nothing was refused, and everything asked was granted by deploy/.
    let requests = log.requests();
    let refused: Vec<String> = requests
        .iter()
        .filter(|r| !r.authorized())
        .map(ApiRequest::describe)
        .collect();
    assert!(refused.is_empty(), "requests refused: {refused:#?}");
    let ungranted: Vec<String> = requests
        .iter()
        .filter(|r| r.resource.is_some() && !rules.iter().any(|rule| rule.permits(r)))
        .map(ApiRequest::describe)
        .collect();
    assert!(
        ungranted.is_empty(),
        "requests outside deploy/: {ungranted:#?}"
    );

    // Every verb of every rule was used, in the rule's namespace.
    let mut unused = Vec::new();
    let mut coverage = BTreeMap::new();
    for rule in &rules {
        for (group, resource, verb) in rule.permissions() {
            let example = requests.iter().find(|r| {
                r.authorized()
                    && r.verb == verb
                    && r.group.as_deref() == Some(group.as_str())
                    && r.resource.as_deref() == Some(resource.as_str())
                    && (rule.namespace.is_none() || r.namespace == rule.namespace)
            });
            let key = format!("{} {verb} {group}/{resource}", rule.role);
            match example {
                Some(request) => {
                    coverage.insert(key, request.describe());
                }
                None => unused.push(key),
            }
        }
    }
    for (permission, example) in &coverage {
        eprintln!("{permission:<90} e.g. {example}");
    }
    assert!(unused.is_empty(), "granted but never used: {unused:#?}");
    // The rules are those of deploy/: a ClusterRole and the two Roles.
    let roles: BTreeSet<&str> = rules.iter().map(|r| r.role.as_str()).collect();
    assert_eq!(roles.len(), 3, "{roles:?}");
    Ok(())
}

/// A copy of `object` named `name`, binding or granting to the ServiceAccount `sa` instead.
fn renamed<K: serde::Serialize + serde::de::DeserializeOwned>(
    object: &K,
    name: &str,
    sa: &str,
) -> anyhow::Result<K> {
    let mut value = serde_json::to_value(object)?;
    value["metadata"]["name"] = json!(name);
    if let Some(subjects) = value.get_mut("subjects").and_then(|s| s.as_array_mut()) {
        for subject in subjects {
            subject["name"] = json!(sa);
        }
    }
    Ok(serde_json::from_value(value)?)
}

#[tokio::test]
async fn a_missing_verb_is_reported_not_swallowed() -> anyhow::Result<()> {
    let _turn = TURN.lock().await;
    let cp = ControlPlane::shared().await?;
    let manifest = deployed(cp).await?;
    let admin = cp.client().await?;

    // deploy/'s grants, bound to another ServiceAccount, with `create` on pipelineruns removed
    // from the Tekton Role.
    let sa = "workflowexecution-operator-without-create";
    let tekton_role: Role = manifest.get("Role", Some(WORKFLOWS), OPERATOR_SA)?;
    let mut reduced: Role = renamed(&tekton_role, sa, sa)?;
    for rule in reduced.rules.iter_mut().flatten() {
        if rule.resources.iter().flatten().any(|r| r == "pipelineruns") {
            rule.verbs.retain(|v| v != "create");
        }
    }
    let tekton_binding: RoleBinding = manifest.get("RoleBinding", Some(WORKFLOWS), OPERATOR_SA)?;
    let mut tekton_binding = renamed(&tekton_binding, sa, sa)?;
    tekton_binding.role_ref.name = sa.to_owned();
    let lease_binding: RoleBinding = manifest.get(
        "RoleBinding",
        Some(SYSTEM),
        "workflowexecution-operator-leader-election",
    )?;
    let lease_binding = renamed(&lease_binding, sa, sa)?;
    let cluster_binding: ClusterRoleBinding = manifest.get(
        "ClusterRoleBinding",
        None,
        "kubernaut-workflowexecution-operator",
    )?;
    let cluster_binding = renamed(&cluster_binding, sa, sa)?;
    let mut objects = Vec::new();
    for value in [
        serde_json::to_value(&reduced)?,
        serde_json::to_value(&tekton_binding)?,
        serde_json::to_value(&lease_binding)?,
        serde_json::to_value(&cluster_binding)?,
    ] {
        objects.push(serde_json::from_value::<DynamicObject>(value)?);
    }
    let reduced_manifest = Manifest { objects };
    deploy::apply(&admin, &reduced_manifest).await?;
    cp.service_account_token(SYSTEM, sa).await?;

    // Exactly one permission less than deploy/ grants.
    let full: BTreeSet<(Option<String>, (String, String, String))> = manifest
        .rules_of(SYSTEM, OPERATOR_SA)?
        .iter()
        .flat_map(|r| {
            r.permissions()
                .into_iter()
                .map(|p| (r.namespace.clone(), p))
        })
        .collect();
    // The reduced bindings still refer to deploy/'s ClusterRole and Lease Role.
    let lookup = Manifest {
        objects: [reduced_manifest.objects.clone(), manifest.objects.clone()].concat(),
    };
    let rules = lookup.rules_of(SYSTEM, sa)?;
    let less: BTreeSet<_> = rules
        .iter()
        .flat_map(|r| {
            r.permissions()
                .into_iter()
                .map(|p| (r.namespace.clone(), p))
        })
        .collect();
    let missing: Vec<_> = full.difference(&less).collect();
    assert_eq!(
        missing,
        vec![&(
            Some(WORKFLOWS.to_owned()),
            ("tekton.dev".into(), "pipelineruns".into(), "create".into())
        )]
    );
    assert!(less.is_subset(&full));
    wait_until_granted(&admin, (SYSTEM, sa), &rules).await?;
    assert!(
        !allowed(
            &admin,
            (SYSTEM, sa),
            ("tekton.dev", "pipelineruns", "create"),
            Some(WORKFLOWS)
        )
        .await?
    );

    let log = RequestLog::new();
    let client = service_account_client(cp, SYSTEM, sa, &log).await?;
    let scratch = tempfile::tempdir()?;
    copy_templates(&scratch.path().join("templates"))?;
    let suffix: u32 = rand::random();
    let lease = format!("workflowexecution-operator-{suffix:08x}");
    let mut env = Env::with_operator(
        "rbac-denied",
        OperatorSetup {
            client,
            exec_ns: Some(WORKFLOWS.to_owned()),
            parents: None,
        },
        tune_for_rbac(&scratch.path().join("templates"), &lease),
    )
    .await?;
    let target = format!("{}/deployment/web", env.ns);
    env.create("denied", "restart", &target, Scenario::Success)
        .await?;

    // Reported on the object: Failed, reason Forbidden, the API server's refusal in the message.
    let failed = env.wait_phase("denied", Phase::Failed).await?;
    let details = status_of(&failed).failure_details.expect("failure details");
    assert_eq!(details.reason, FailureReason::Forbidden);
    assert!(!details.was_execution_failure);
    assert!(
        details.message.contains("forbidden") && details.message.contains("pipelineruns"),
        "{}",
        details.message
    );
    // ... as a Warning Event ...
    let event = env.wait_event("denied", "WorkflowFailed").await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    // ... and in the metrics.
    let metrics = env.scrape().await?;
    assert!(
        metrics.series("workflowexecution_total").iter().any(|s| s
            .labels
            .values()
            .any(|v| v == "Failed")
            && s.value >= 1.0),
        "no failed execution counted"
    );
    // The refusal really came from RBAC, and nothing ran.
    let denied = recorded(&log, |r| is(r, "create", "pipelineruns", None));
    assert!(
        !denied.is_empty() && denied.iter().all(|r| r.status == 403),
        "{denied:?}"
    );
    assert!(
        env.runs()
            .get_opt(&pipeline_run_name(&target))
            .await?
            .is_none()
    );

    env.wfes()
        .delete("denied", &DeleteParams::default())
        .await?;
    env.wait_gone("denied").await?;
    env.stop_operator().await?;
    deploy::delete(&admin, &reduced_manifest).await?;
    Ok(())
}

/// Every verb of the API server's authorizer on resources.
const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The verbs of [`VERBS`] the authorizer allows the ServiceAccount `sa` on `group/resource` in
/// `namespace` (`None`: cluster-wide).
async fn allowed_verbs(
    admin: &Client,
    sa: (&str, &str),
    (group, resource): (&str, &str),
    namespace: Option<&str>,
) -> anyhow::Result<BTreeSet<&'static str>> {
    let mut out = BTreeSet::new();
    for verb in VERBS {
        if allowed(admin, sa, (group, resource, verb), namespace).await? {
            out.insert(verb);
        }
    }
    Ok(out)
}

/// `(group, plural)` of `kind`, as the API server serves it.
async fn resource_of(admin: &Client, kind: &ChildKind) -> anyhow::Result<(String, String)> {
    let (group, version) = kind
        .api_version
        .split_once('/')
        .unwrap_or(("", kind.api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
    let (resource, _) = kube::discovery::pinned_kind(admin, &gvk)
        .await
        .with_context(|| format!("discovering {kind}"))?;
    Ok((resource.group, resource.plural))
}

/// The HTTP status of a request's outcome: 200 when it succeeded, the API server's code when it
/// refused.
fn code<T>(result: Result<T, kube::Error>) -> anyhow::Result<u16> {
    match result {
        Ok(_) => Ok(200),
        Err(kube::Error::Api(status)) => Ok(status.code),
        Err(e) => Err(e.into()),
    }
}

/// A Job that never starts a pod (suspended), for the requests made as the ServiceAccount.
fn probe_job(name: &str) -> anyhow::Result<Job> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "suspend": true,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "probe", "image": "registry.example.com/probe:1"}]
            }}
        }
    }))?)
}

/// A Pod, for the creations refused to the ServiceAccount.
fn probe_pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "probe", "image": "registry.example.com/probe:1"}]}
    }))?)
}

#[tokio::test]
async fn the_job_engine_component_grants_jobs_and_read_only_pods_in_the_execution_namespace_only()
-> anyhow::Result<()> {
    let _turn = TURN.lock().await;
    let cp = ControlPlane::shared().await?;
    let admin = cp.client().await?;
    let sa = (SYSTEM, OPERATOR_SA);
    let elsewhere = [Some(SYSTEM), Some("default"), None];

    // The kinds the shipped Job engine creates (its child) and reads (its grandchildren), as
    // resources.
    let mut config = OperatorConfig::default();
    config.templates.dir = support::templates_dir();
    config.execution.engines = vec![DEFAULT_ENGINE.to_owned(), "job".to_owned()];
    let engines = Engines::load(&config)?;
    let job_engine = engines.get("job").context("the job engine")?;
    let jobs = resource_of(&admin, job_engine.child()).await?;
    let pods = resource_of(
        &admin,
        job_engine
            .mapping
            .grandchild_kind()
            .context("the job engine reads no grandchildren")?,
    )
    .await?;
    assert_eq!(jobs, ("batch".to_owned(), "jobs".to_owned()));
    assert_eq!(pods, (String::new(), "pods".to_owned()));
    let jobs = (jobs.0.as_str(), jobs.1.as_str());
    let pods = (pods.0.as_str(), pods.1.as_str());

    // deploy/ alone: nothing on Jobs or Pods, anywhere (asked once its own grants are in force).
    let manifest = deployed(cp).await?;
    wait_until_granted(&admin, sa, &manifest.rules_of(SYSTEM, OPERATOR_SA)?).await?;
    for namespace in [Some(WORKFLOWS)].into_iter().chain(elsewhere) {
        for resource in [jobs, pods] {
            let verbs = allowed_verbs(&admin, sa, resource, namespace).await?;
            assert!(
                verbs.is_empty(),
                "deploy/ alone allows {verbs:?} on {resource:?} in {namespace:?}"
            );
        }
    }
    let log = RequestLog::new();
    let client = service_account_client(cp, SYSTEM, OPERATOR_SA, &log).await?;
    let job_api: Api<Job> = Api::namespaced(client.clone(), WORKFLOWS);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), WORKFLOWS);
    assert_eq!(code(job_api.list(&ListParams::default()).await)?, 403);
    assert_eq!(code(pod_api.list(&ListParams::default()).await)?, 403);

    // With deploy/job-engine: exactly the engine's verbs, in the execution namespace.
    let with_jobs = Manifest::deploy_with(&["job-engine"])?;
    deploy::apply(&admin, &with_jobs).await?;
    wait_until_granted(&admin, sa, &with_jobs.rules_of(SYSTEM, OPERATOR_SA)?).await?;
    assert_eq!(
        allowed_verbs(&admin, sa, jobs, Some(WORKFLOWS)).await?,
        BTreeSet::from(["get", "list", "watch", "create", "patch", "delete"])
    );
    assert_eq!(
        allowed_verbs(&admin, sa, pods, Some(WORKFLOWS)).await?,
        BTreeSet::from(["get", "list", "watch"])
    );
    // No subresource: not the Job's status, not the pods' logs, exec, eviction or status.
    for resource in [
        ("batch", "jobs/status"),
        ("", "pods/log"),
        ("", "pods/exec"),
        ("", "pods/attach"),
        ("", "pods/eviction"),
        ("", "pods/status"),
    ] {
        let verbs = allowed_verbs(&admin, sa, resource, Some(WORKFLOWS)).await?;
        assert!(verbs.is_empty(), "{verbs:?} on {resource:?}");
    }
    // Nothing on them in another namespace or cluster-wide.
    for namespace in elsewhere {
        for resource in [jobs, pods] {
            let verbs = allowed_verbs(&admin, sa, resource, namespace).await?;
            assert!(
                verbs.is_empty(),
                "the component allows {verbs:?} on {resource:?} in {namespace:?}"
            );
        }
    }

    // The same through requests made with the ServiceAccount's token: a Job's whole life in the
    // execution namespace, as the engine lives it ...
    let suffix: u32 = rand::random();
    let name = format!("rbac-job-engine-{suffix:08x}");
    assert_eq!(
        code(
            job_api
                .create(&PostParams::default(), &probe_job(&name)?)
                .await
        )?,
        200
    );
    assert_eq!(code(job_api.get(&name).await)?, 200);
    assert_eq!(code(job_api.list(&ListParams::default()).await)?, 200);
    assert_eq!(
        code(job_api.watch(&WatchParams::default().timeout(1), "0").await)?,
        200
    );
    assert_eq!(
        code(
            job_api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"suspend": true}})),
                )
                .await
        )?,
        200
    );
    // ... Pods read (a missing one is looked up, not refused), never created or deleted ...
    assert_eq!(code(pod_api.get(&name).await)?, 404);
    assert_eq!(code(pod_api.list(&ListParams::default()).await)?, 200);
    assert_eq!(
        code(pod_api.watch(&WatchParams::default().timeout(1), "0").await)?,
        200
    );
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    assert_eq!(
        code(pod_api.create(&dry_run, &probe_pod(&name)?).await)?,
        403
    );
    assert_eq!(
        code(pod_api.delete(&name, &DeleteParams::default()).await)?,
        403
    );
    // ... and nothing outside the execution namespace.
    let system_jobs: Api<Job> = Api::namespaced(client.clone(), SYSTEM);
    assert_eq!(code(system_jobs.list(&ListParams::default()).await)?, 403);
    assert_eq!(
        code(system_jobs.create(&dry_run, &probe_job(&name)?).await)?,
        403
    );
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    assert_eq!(code(system_pods.list(&ListParams::default()).await)?, 403);
    assert_eq!(
        code(
            Api::<Job>::all(client.clone())
                .list(&ListParams::default())
                .await
        )?,
        403
    );
    assert_eq!(
        code(
            Api::<Pod>::all(client.clone())
                .list(&ListParams::default())
                .await
        )?,
        403
    );
    // Background: the local control plane runs no garbage collector to finish a Foreground one.
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    assert_eq!(code(job_api.delete(&name, &background).await)?, 200);

    // Every request the ServiceAccount made was answered by the component's grants as asserted:
    // each one allowed is permitted by a rule of deploy/ with the component.
    let rules = with_jobs.rules_of(SYSTEM, OPERATOR_SA)?;
    let outside: Vec<String> = log
        .requests()
        .iter()
        .filter(|r| r.authorized() && r.resource.is_some())
        .filter(|r| !rules.iter().any(|rule| rule.permits(r)))
        .map(ApiRequest::describe)
        .collect();
    assert!(
        outside.is_empty(),
        "allowed outside the rules: {outside:#?}"
    );

    // Leave deploy/ as the other tests expect it: without the component.
    deploy::apply(&admin, &manifest).await?;
    let added = Manifest {
        objects: with_jobs
            .objects
            .iter()
            .filter(|o| {
                manifest
                    .find(
                        deploy::kind_of(o),
                        o.metadata.namespace.as_deref(),
                        &o.name_any(),
                    )
                    .is_none()
            })
            .cloned()
            .collect(),
    };
    assert_eq!(
        added.objects.len(),
        2,
        "the component's Role and RoleBinding"
    );
    deploy::delete(&admin, &added).await?;
    Ok(())
}
