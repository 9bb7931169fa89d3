//! The run of a WorkflowExecution (the child its engine creates: a PipelineRun for Tekton, a Job
//! for the Job engine): its identity (name, namespace, labels, annotations) and the rendering of
//! the engine's template into the object the operator creates.
//!
//! Guarantees:
//! 1. The name is the lock: `wfe-` + the first 16 lowercase hex characters of
//!    SHA-256(`targetResource`) ([`pipeline_run_name`]), so two WorkflowExecutions on one target
//!    can never both own a run.
//! 2. The namespace is config `execution.namespace`, never the WorkflowExecution's.
//! 3. The labels `kubernaut.ai/workflow-execution`, `kubernaut.ai/source-namespace`,
//!    `kubernaut.ai/workflow-id` and `kubernaut.ai/target-resource` and the annotations
//!    `kubernaut.ai/target-resource` (the raw target) and `kubernaut.ai/template-revision` are set
//!    by the framework after rendering ([`apply_identity`]): no template edit can break locking or
//!    cleanup.
//! 4. Every label value is a valid Kubernetes label value ([`label_value`]): `/` becomes `__`, and
//!    a value that needs more changes than that (or is longer than 63 characters) ends in a hash of
//!    the original, so distinct inputs stay distinct.
//!
//! 5. The operator's cache of runs holds only what the reconciler reads
//!    ([`project_cached`]): identity, the `kubernaut.ai/*` labels, the owner's full name and
//!    the block annotations, and what the engine's status mapping reads
//!    ([`kubernaut_framework::status::Projection`]).
//! 6. A run is owned by one WorkflowExecution *instance*: the label
//!    `kubernaut.ai/workflow-execution-uid` carries its uid and every ownership decision compares
//!    it ([`owner`]), so a WorkflowExecution deleted and re-created under the same name never
//!    adopts, cancels or deletes its predecessor's run.
//! 7. A run that ended in an execution failure is marked with the annotation
//!    `kubernaut.ai/execution-block` ([`ExecutionBlock`]) until the block is cleared: the run stays
//!    in place as the target's lock even when its WorkflowExecution is deleted, so the block holds
//!    whatever happens to the WorkflowExecutions of the target.
//!
//! Caveats:
//! 1. Rendering does not validate the spec; callers run [`crate::validate::validate_spec`] first
//!    (the reconciler's Pending step 1, the `render` command).
//! 2. A WorkflowExecution name longer than 63 characters does not fit a label value, so its
//!    `kubernaut.ai/workflow-execution` label carries a shortened, hashed form ([`label_value`]);
//!    the full name is in the annotation of the same key, which maps a run back to its
//!    WorkflowExecution (the runtime's `ChildWatch::parent_name_annotation`).
use kube::api::DynamicObject;
use kubernaut_framework::lock::{BlockMarker, Marked, Owner, OwnerKeys, lock_name};
use kubernaut_framework::names::LabelValue;
use kubernaut_framework::runtime::prune::project;
use kubernaut_framework::status::Projection;
use kubernaut_framework::template::{ChildIdentity, TemplateError, TemplateSet, apply_identity};
use serde_json::Value;

use crate::config::OperatorConfig;
use crate::templates::template_context;
use crate::types::WorkflowExecution;

/// The prefix of every run name.
pub const NAME_PREFIX: &str = "wfe-";
/// Label: the owning WorkflowExecution's name (shortened and hashed past 63 characters). The
/// annotation of the same key carries the full name.
pub const LABEL_WORKFLOW_EXECUTION: &str = "kubernaut.ai/workflow-execution";
/// Label: the owning WorkflowExecution's uid (ownership is by instance, not by name).
pub const LABEL_WORKFLOW_EXECUTION_UID: &str = "kubernaut.ai/workflow-execution-uid";
/// Annotation: the owning WorkflowExecution's full name.
pub const ANNOTATION_WORKFLOW_EXECUTION: &str = LABEL_WORKFLOW_EXECUTION;
/// Annotation: this run ended in an execution failure that blocks its target until cleared
/// (JSON of [`ExecutionBlock`]).
pub const ANNOTATION_EXECUTION_BLOCK: &str = "kubernaut.ai/execution-block";
/// Label: the owning WorkflowExecution's namespace.
pub const LABEL_SOURCE_NAMESPACE: &str = "kubernaut.ai/source-namespace";
/// Label: the workflow id.
pub const LABEL_WORKFLOW_ID: &str = "kubernaut.ai/workflow-id";
/// Label (target with `/` → `__`) and annotation (raw target): the target resource.
pub const TARGET_RESOURCE_KEY: &str = "kubernaut.ai/target-resource";
/// Annotation: the revision of the template set the run was rendered from.
pub const ANNOTATION_TEMPLATE_REVISION: &str = "kubernaut.ai/template-revision";

/// The run name (the lock) for a target: `wfe-` + 16 hex chars of SHA-256 of its
/// [`crate::types::target_key`] (the kind lower-cased, so `Deployment` and `deployment` share one lock).
pub fn pipeline_run_name(target_resource: &str) -> String {
    lock_name(NAME_PREFIX, &crate::types::target_key(target_resource))
}

/// A valid Kubernetes label value for `raw`.
///
/// `/` becomes `__`; if that alone yields a valid value it is the result. Otherwise
/// [`LabelValue::fitting`] shortens it and appends a hash of `raw`, so distinct inputs stay
/// distinct.
pub fn label_value(raw: &str) -> String {
    LabelValue::fitting(&raw.replace('/', "__"), raw).into_string()
}

/// The keys under which a run names its WorkflowExecution: name, namespace and uid labels, the
/// full name as the annotation of the name label's key.
pub const OWNER_KEYS: OwnerKeys = OwnerKeys {
    name: LABEL_WORKFLOW_EXECUTION,
    namespace: LABEL_SOURCE_NAMESPACE,
    uid: LABEL_WORKFLOW_EXECUTION_UID,
};

/// The mark of a run kept as its target's block (annotation [`ANNOTATION_EXECUTION_BLOCK`], JSON
/// of [`ExecutionBlock`]).
pub const BLOCK: BlockMarker = BlockMarker {
    key: ANNOTATION_EXECUTION_BLOCK,
};

/// The lock owner for `wfe`: its ownership labels, its full name as an annotation and its uid
/// (compared: ownership is by instance).
pub fn owner(wfe: &WorkflowExecution) -> Owner {
    OWNER_KEYS.owner(wfe)
}

/// The block an execution failure leaves on its run (annotation [`ANNOTATION_EXECUTION_BLOCK`]):
/// enough to describe it after the failed WorkflowExecution is gone.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionBlock {
    /// `namespace/name` of the WorkflowExecution that failed.
    pub workflow_execution: String,
    /// Its workflow id.
    pub workflow_id: String,
    /// The failure reason.
    pub reason: String,
    /// When it failed (RFC 3339).
    pub failed_at: String,
}

impl ExecutionBlock {
    /// The block recorded on `run`, if any (an unreadable annotation still blocks: it is kept
    /// as the reason, so a hand-edited value never lifts a block by accident).
    pub fn of(run: &DynamicObject) -> Option<ExecutionBlock> {
        Some(match BLOCK.read(run)? {
            Marked::Record(block) => block,
            Marked::Unreadable(reason) => ExecutionBlock {
                reason,
                ..ExecutionBlock::default()
            },
        })
    }
}

/// The identity the framework stamps on the run of `wfe`.
pub fn pipeline_run_identity(
    wfe: &WorkflowExecution,
    config: &OperatorConfig,
    template_revision: &str,
) -> ChildIdentity {
    let target = &wfe.spec.target_resource;
    let owner = owner(wfe);
    let mut labels = owner.child_labels();
    labels.insert(
        LABEL_WORKFLOW_ID.to_owned(),
        label_value(&wfe.spec.workflow_ref.workflow_id),
    );
    labels.insert(TARGET_RESOURCE_KEY.to_owned(), label_value(target));
    let mut annotations = owner.annotations;
    annotations.extend([
        (TARGET_RESOURCE_KEY.to_owned(), target.clone()),
        (
            ANNOTATION_TEMPLATE_REVISION.to_owned(),
            template_revision.to_owned(),
        ),
    ]);
    ChildIdentity {
        name: pipeline_run_name(target),
        namespace: config.execution.namespace.clone(),
        labels,
        annotations,
    }
}

/// Renders the child of `wfe` from `template` (an engine's child template, relative to the
/// template directory): the template with [`template_context`], then the framework-owned
/// identity. The result is the object the operator creates.
pub fn render_child(
    wfe: &WorkflowExecution,
    config: &OperatorConfig,
    templates: &TemplateSet,
    template: &str,
) -> Result<Value, TemplateError> {
    let mut run = templates.render(template, &template_context(wfe, config))?;
    apply_identity(
        &mut run,
        &pipeline_run_identity(wfe, config, templates.revision()),
    );
    Ok(run)
}

/// Whether the operator reads the label `key` of a cached run (or of what carries its failure
/// facts): its own, `kubernaut.ai/*` (ownership: the owner's name, namespace and uid; the
/// selector the runtime watches by).
pub fn keeps_label(key: &str) -> bool {
    key.starts_with("kubernaut.ai/")
}

/// Whether the operator reads the annotation `key` of a cached run: the owner's full name and
/// the execution block.
pub fn keeps_annotation(key: &str) -> bool {
    key == ANNOTATION_WORKFLOW_EXECUTION || key == ANNOTATION_EXECUTION_BLOCK
}

/// Keeps of a cached run (or of a cached object carrying its failure facts) what the reconciler
/// reads from the cache: identity, the labels and annotations it reads ([`keeps_label`],
/// [`keeps_annotation`]: the owner's full name is how the runtime maps a grandchild to its
/// WorkflowExecution) and what the engine's status mapping reads (`projection`:
/// [`StatusMapping::child_projection`], e.g. of a PipelineRun the `Succeeded` condition, the
/// start and completion times, the TaskRun names and the number of tasks, not the tasks;
/// [`StatusMapping::grandchild_projection`], e.g. of a TaskRun its `Succeeded` condition, its
/// steps' states and its completion time). Everything else (the spec, the resolved pipeline,
/// provenance) is read from the API server by the rare reconcile that needs it (a cancel). With
/// 10 000 runs cached this is most of the operator's memory.
///
/// [`StatusMapping::child_projection`]: kubernaut_framework::status::StatusMapping::child_projection
/// [`StatusMapping::grandchild_projection`]: kubernaut_framework::status::StatusMapping::grandchild_projection
pub fn project_cached(object: &mut DynamicObject, projection: &Projection) {
    project(object, projection, keeps_label, keeps_annotation);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::ResourceExt;
    use kubernaut_framework::names::QualifiedName;

    use super::*;
    use crate::templates::sample_workflow_execution;

    /// Every PipelineRun fixture, with its TaskRuns, reads the same through the shipped status
    /// mapping, and gives the same failure details, after projection as before; the spec, the
    /// resolved pipeline's tasks and Tekton's labels and annotations are gone.
    #[test]
    fn projected_runs_map_and_classify_like_whole_ones() {
        use crate::{
            config::OperatorConfig,
            failure::{FailureContext, failure_details},
            run_status::observe_run,
            testing::load_status_mapping,
        };
        use kubernaut_framework::status::grandchildren::whole;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mapping = load_status_mapping(&root.join("../../templates/workflowexecution")).unwrap();
        let projection = mapping.child_projection();
        let task_run_projection = mapping.grandchild_projection().unwrap();
        let config = OperatorConfig::default();
        let wfe = sample_workflow_execution();
        let context = FailureContext::new(&wfe, &config.execution);
        let now = jiff::Timestamp::now();
        let mut seen = 0;
        for fixture in crate::test_runs::fixtures() {
            let task_runs = fixture.task_runs;
            let projected_task_runs: BTreeMap<String, Value> = (task_runs.iter())
                .map(|(name, task_run)| {
                    let mut object: DynamicObject =
                        serde_json::from_value(task_run.clone()).unwrap();
                    project_cached(&mut object, &task_run_projection);
                    (name.clone(), whole(&object))
                })
                .collect();
            let whole_run: DynamicObject = serde_json::from_value(fixture.run).unwrap();
            let mut projected = whole_run.clone();
            project_cached(&mut projected, &projection);
            let name = &fixture.name;
            assert!(projected.data.get("spec").is_none(), "{name}: spec dropped");
            let kept_tasks = projected.data.pointer("/status/pipelineSpec/tasks/0");
            assert!(
                kept_tasks.is_none_or(|task| task == &serde_json::json!({})),
                "{name}: tasks only counted"
            );
            let labels = projected.labels();
            assert!(labels.keys().all(|k| keeps_label(k)), "{name}: {labels:?}");
            let ours = |run: &DynamicObject| {
                let mut labels = run.labels().clone();
                labels.retain(|k, _| keeps_label(k));
                labels
            };
            assert_eq!(
                ours(&projected),
                ours(&whole_run),
                "{name}: our labels kept"
            );
            assert_eq!(
                OWNER_KEYS.holder(&projected),
                OWNER_KEYS.holder(&whole_run),
                "{name}: owner"
            );
            assert_eq!(
                ExecutionBlock::of(&projected),
                ExecutionBlock::of(&whole_run),
                "{name}: block"
            );
            assert_eq!(
                observe_run(&mapping, &projected.data, Some(&projected_task_runs)),
                observe_run(&mapping, &whole_run.data, Some(&task_runs)),
                "{name}: observation"
            );
            assert_eq!(
                mapping.grandchild_lookup(&whole(&projected)),
                mapping.grandchild_lookup(&whole(&whole_run)),
                "{name}: grandchildren"
            );
            assert_eq!(
                failure_details(
                    &mapping,
                    &context,
                    &projected.data,
                    &projected_task_runs,
                    now
                ),
                failure_details(&mapping, &context, &whole_run.data, &task_runs, now),
                "{name}: failure details"
            );
            seen += 1;
        }
        assert!(seen >= 10, "only {seen} fixtures read");
    }

    #[test]
    fn names_match_the_contract_vectors() {
        let cases = [
            ("default/deployment/nginx", "wfe-f3457dcc8fbcb6d9"),
            ("payment/deployment/payment-api", "wfe-cf0cc089293b1165"),
            ("node/worker-node-1", "wfe-ac45b7d6911e97a5"),
        ];
        for (target, name) in cases {
            assert_eq!(pipeline_run_name(target), name, "{target}");
        }
        assert_eq!(
            pipeline_run_name("default/Deployment/nginx"),
            "wfe-f3457dcc8fbcb6d9"
        );
        assert_eq!(
            pipeline_run_name("Node/worker-node-1"),
            "wfe-ac45b7d6911e97a5"
        );
    }

    #[test]
    fn label_values_are_valid_and_distinct() {
        let long = "n".repeat(80);
        let cases: Vec<(&str, Option<&str>)> = vec![
            (
                "default/deployment/nginx",
                Some("default__deployment__nginx"),
            ),
            ("node/worker-node-1", Some("node__worker-node-1")),
            ("restart-pod", Some("restart-pod")),
            ("", Some("")),
            ("ns/Deployment.apps/web", Some("ns__Deployment.apps__web")),
            ("ns/deployment/caf\u{e9}", None),
            ("ns/deployment/a b", None),
            ("-leading/x", None),
            ("x/trailing-", None),
            (&long, None),
            ("\u{1f680}/\u{1f680}", None),
            ("a\n/b", None),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (raw, exact) in &cases {
            let value = label_value(raw);
            assert!(LabelValue::check(&value).is_ok(), "{raw:?} -> {value:?}");
            if let Some(exact) = exact {
                assert_eq!(value, *exact, "{raw:?}");
            } else {
                assert!(value.ends_with(&lock_name("", raw)), "{raw:?} -> {value:?}");
            }
            assert!(seen.insert(value.clone()), "{raw:?} collides as {value:?}");
        }
        // Two inputs that clean to the same text stay distinct.
        assert_ne!(label_value("ns/d/caf\u{e9}"), label_value("ns/d/caf\u{e8}"));
    }

    #[test]
    fn label_and_annotation_keys_are_qualified_names() {
        for key in [
            LABEL_WORKFLOW_EXECUTION,
            LABEL_WORKFLOW_EXECUTION_UID,
            ANNOTATION_EXECUTION_BLOCK,
            LABEL_SOURCE_NAMESPACE,
            LABEL_WORKFLOW_ID,
            TARGET_RESOURCE_KEY,
            ANNOTATION_TEMPLATE_REVISION,
        ] {
            assert_eq!(QualifiedName::check(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn identity_is_the_contracts() {
        let wfe = sample_workflow_execution();
        let identity = pipeline_run_identity(&wfe, &OperatorConfig::default(), "0123456789abcdef");
        assert_eq!(identity.name, "wfe-f3457dcc8fbcb6d9");
        assert_eq!(identity.namespace, "kubernaut-workflows");
        let labels: Vec<(&str, &str)> = identity
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("kubernaut.ai/source-namespace", "kubernaut-system"),
                ("kubernaut.ai/target-resource", "default__deployment__nginx"),
                ("kubernaut.ai/workflow-execution", "restart-nginx-7f9c"),
                (
                    "kubernaut.ai/workflow-execution-uid",
                    "4f2d7a3e-0c1b-4d5e-9f6a-8b7c6d5e4f3a"
                ),
                ("kubernaut.ai/workflow-id", "restart-deployment"),
            ]
        );
        assert_eq!(
            identity.annotations.get(ANNOTATION_WORKFLOW_EXECUTION),
            Some(&"restart-nginx-7f9c".to_owned())
        );
        assert_eq!(
            identity
                .annotations
                .get(TARGET_RESOURCE_KEY)
                .map(String::as_str),
            Some("default/deployment/nginx")
        );
        assert_eq!(
            identity
                .annotations
                .get(ANNOTATION_TEMPLATE_REVISION)
                .map(String::as_str),
            Some("0123456789abcdef")
        );
        let owner = owner(&wfe);
        assert!(owner.owns(&identity.labels));
        assert_eq!(
            owner.uid.as_deref(),
            Some("4f2d7a3e-0c1b-4d5e-9f6a-8b7c6d5e4f3a")
        );
    }

    #[test]
    fn another_wfe_does_not_own_the_run() {
        let wfe = sample_workflow_execution();
        let identity = pipeline_run_identity(&wfe, &OperatorConfig::default(), "r");
        let mut other = sample_workflow_execution();
        other.metadata.name = Some("restart-nginx-other".to_owned());
        assert!(!owner(&other).owns(&identity.labels));
        let mut elsewhere = sample_workflow_execution();
        elsewhere.metadata.namespace = Some("team-b".to_owned());
        assert!(!owner(&elsewhere).owns(&identity.labels));
    }

    #[test]
    fn a_recreated_wfe_of_the_same_name_does_not_own_its_predecessors_run() {
        let wfe = sample_workflow_execution();
        let identity = pipeline_run_identity(&wfe, &OperatorConfig::default(), "r");
        let mut successor = sample_workflow_execution();
        successor.metadata.uid = Some("another-uid".to_owned());
        assert!(!owner(&successor).owns(&identity.labels));
    }

    #[test]
    fn a_run_names_its_owner_by_full_name_even_past_63_characters() {
        let mut wfe = sample_workflow_execution();
        let long = format!("restart-{}", "n".repeat(190));
        wfe.metadata.name = Some(long.clone());
        let identity = pipeline_run_identity(&wfe, &OperatorConfig::default(), "r");
        assert!(LabelValue::check(&identity.labels[LABEL_WORKFLOW_EXECUTION]).is_ok());
        let mut run = DynamicObject::new(&identity.name, &crate::testing::pipelinerun_resource());
        run.metadata.labels = Some(identity.labels.clone());
        run.metadata.annotations = Some(identity.annotations.clone());
        project_cached(&mut run, &Projection::default());
        let named = OWNER_KEYS.holder(&run);
        assert_eq!(named.name, long);
        assert_eq!(named.namespace, "kubernaut-system");
        assert_eq!(named.uid, "4f2d7a3e-0c1b-4d5e-9f6a-8b7c6d5e4f3a");
    }

    #[test]
    fn an_execution_block_round_trips_and_an_unreadable_one_still_blocks() {
        let block = ExecutionBlock {
            workflow_execution: "team-a/restart".into(),
            workflow_id: "restart-deployment".into(),
            reason: "TaskFailed".into(),
            failed_at: "2026-01-01T00:00:00Z".into(),
        };
        let mut run = DynamicObject::new("wfe-x", &crate::testing::pipelinerun_resource());
        run.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_EXECUTION_BLOCK.to_owned(),
            serde_json::to_string(&block).unwrap(),
        )]));
        assert_eq!(ExecutionBlock::of(&run), Some(block));
        run.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_EXECUTION_BLOCK.to_owned(),
            "hand written".to_owned(),
        )]));
        assert_eq!(
            ExecutionBlock::of(&run).map(|b| b.reason),
            Some("hand written".to_owned())
        );
    }

    /// A cached grandchild keeps what the mapping reads, the operator's labels and the owner's
    /// name, nothing else.
    #[test]
    fn a_cached_grandchild_keeps_what_the_mapping_reads() {
        let mapping = crate::testing::load_status_mapping(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../templates/workflowexecution"),
        )
        .unwrap();
        let projection = mapping.grandchild_projection().unwrap();
        let mut task_run: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "metadata": {"name": "t", "labels": {"kubernaut.ai/workflow-execution": "w",
                                                 "tekton.dev/pipelineRun": "r",
                                                 "tekton.dev/task": "x"},
                         "annotations": {ANNOTATION_WORKFLOW_EXECUTION: "wfe", "other": "x"}},
            "spec": {"params": []},
            "status": {"conditions": [{"type": "Succeeded", "status": "True",
                                       "reason": "Succeeded", "lastTransitionTime": "t"}],
                       "steps": [{"name": "s", "container": "step-s",
                                  "terminated": {"reason": "Completed", "exitCode": 0,
                                                 "startedAt": "a", "finishedAt": "b"}}],
                       "podName": "p", "results": [], "taskSpec": {}},
        }))
        .unwrap();
        project_cached(&mut task_run, &projection);
        assert_eq!(
            task_run.data,
            serde_json::json!({"status": {
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
                "steps": [{"name": "s", "terminated": {"reason": "Completed", "exitCode": 0,
                                                       "startedAt": "a"}}]
            }})
        );
        assert_eq!(
            task_run.metadata.labels.unwrap().keys().collect::<Vec<_>>(),
            ["kubernaut.ai/workflow-execution", "tekton.dev/pipelineRun"]
        );
        assert_eq!(
            task_run
                .metadata
                .annotations
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            [ANNOTATION_WORKFLOW_EXECUTION]
        );
    }
}
