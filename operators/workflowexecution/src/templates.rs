//! What every engine's files may rely on: the context a child template sees, and which values a
//! status mapping may produce.
//!
//! The files themselves live in one directory per engine under `templates/workflowexecution/`
//! (mounted from a ConfigMap in a cluster, see [`crate::engine`]):
//! 1. the child template (`*.yaml.j2`): what a WorkflowExecution runs as. It sees `wfe` (the
//!    WorkflowExecution: `apiVersion`, `kind`, `metadata`, `spec`), `config` (the `execution`
//!    settings, `defaultTimeout` as a Go duration) and `bundle` (the reference the bundles
//!    resolver pulls, [`crate::bundle`]) and nothing else ([`template_context`]).
//! 2. `status.yaml`: JSONPath rules from the child to a run phase ([`RUN_PHASES`]), the fields
//!    the operator copies into `status.pipelineRunStatus` ([`STATUS_FIELDS`]), and the ordered
//!    failure classification whose results are [`FailureReason`] names ([`mapping_rules`]).
//! 3. `cancel.yaml`: how a running child is cancelled ([`kubernaut_framework::cancel`]).
//!
//! Guarantees:
//! 1. Every engine's template is declared with a realistic sample context ([`sample_context`],
//!    built by [`template_context`] from a sample WorkflowExecution), so the framework's load-time
//!    test render exercises the same paths a real render does.
//! 2. [`mapping_rules`] accepts exactly the run phases the reconciler handles and exactly the
//!    contract's failure reasons, so a typo in `status.yaml` is refused when it is loaded, not
//!    when a run fails.
//!
//! Caveats:
//! 1. The template context deliberately omits `status` and `metadata.managedFields`: the rendered
//!    child depends on the spec and identity of the WorkflowExecution only.
use kubernaut_framework::status::MappingRules;
use serde_json::{Value, json};

use crate::bundle::pulled_reference;
use crate::config::{ExecutionSettings, OperatorConfig};
use crate::types::{FailureReason, WorkflowExecution};
use kubernaut_framework::duration::format_go_duration;

/// The `fields` of the status mapping the operator reads (`status.pipelineRunStatus`, the
/// failure details, the completion time): a mapping without one of them is refused at load.
pub const STATUS_FIELDS: [&str; 6] = [
    "status",
    "reason",
    "message",
    "startTime",
    "completionTime",
    "totalTasks",
];
/// The phases the status mapping may map a run to.
pub const RUN_PHASES: [&str; 4] = ["Pending", "Running", "Completed", "Failed"];

/// The context every engine's template is test-rendered with at load: [`template_context`] of
/// [`sample_workflow_execution`] under [`sample_config`].
pub fn sample_context() -> Value {
    template_context(&sample_workflow_execution(), &sample_config())
}

/// The configuration of the template's load-time render: the defaults, with the optional
/// settings the template reads set, so that their branches are rendered and checked too.
pub fn sample_config() -> OperatorConfig {
    let mut config = OperatorConfig::default();
    config.execution.bundle_service_account = Some("kubernaut-bundle-puller".to_owned());
    config
}

/// The values the status mapping may produce: run phases and failure reasons.
pub fn mapping_rules() -> MappingRules {
    MappingRules {
        phases: RUN_PHASES.iter().map(|p| (*p).to_owned()).collect(),
        results: FailureReason::ALL
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect(),
        // Optional: whether a step of the run ran is read from the grandchildren
        // (`wasExecutionFailure`) when the mapping has the section; an engine whose child has no
        // children of its own leaves it out, and a failed child of it is then an execution
        // failure ([`StatusMapping::work_ran`](kubernaut_framework::status::StatusMapping::work_ran)).
        require_grandchildren: false,
        required_fields: STATUS_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
    }
}

/// The context every child template renders with: `{wfe, config, bundle}`.
///
/// `wfe` is the WorkflowExecution's `apiVersion`, `kind`, `metadata` (without `managedFields`)
/// and `spec`; `config` is [`template_config`] of the `execution` settings; `bundle` is
/// [`template_bundle`].
pub fn template_context(wfe: &WorkflowExecution, config: &OperatorConfig) -> Value {
    let mut metadata = serde_json::to_value(&wfe.metadata).unwrap_or_else(|_| json!({}));
    if let Some(fields) = metadata.as_object_mut() {
        fields.remove("managedFields");
    }
    let spec = serde_json::to_value(&wfe.spec).unwrap_or_else(|_| json!({}));
    json!({
        "wfe": {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "WorkflowExecution",
            "metadata": metadata,
            "spec": spec,
        },
        "config": template_config(&config.execution),
        "bundle": template_bundle(wfe),
    })
}

/// The `bundle` the template sees: `reference`, what the bundles resolver is to pull
/// ([`pulled_reference`]: `containerImage`, or its repository `@containerDigest` when a digest is
/// set), and `digest` (the digest, or none).
///
/// The string work is done here rather than in a template filter so that the template and the
/// `execution.allowedBundles` check share one implementation. A spec whose digest is malformed
/// never reaches a render (validation refuses it first); for one that does, `reference` is left
/// out, so a template using it fails instead of pulling by tag.
pub fn template_bundle(wfe: &WorkflowExecution) -> Value {
    let workflow = &wfe.spec.workflow_ref;
    let digest = workflow.container_digest.as_deref();
    let mut bundle = json!({ "digest": digest });
    if let Ok(reference) = pulled_reference(&workflow.container_image, digest) {
        bundle["reference"] = Value::String(reference);
    }
    bundle
}

/// The `config` the template sees: the `execution` settings in the spelling of the config file,
/// with `defaultTimeout` written as a Go duration (`1h0m0s`) because it goes into the child
/// unchanged.
pub fn template_config(execution: &ExecutionSettings) -> Value {
    json!({
        "namespace": execution.namespace,
        "serviceAccountName": execution.service_account_name,
        "allowedServiceAccounts": execution.allowed_service_accounts,
        "defaultTimeout": format_go_duration(execution.default_timeout),
        "bundleServiceAccount": execution.bundle_service_account,
    })
}

/// The sample WorkflowExecution of the template's load-time render
/// (`data/sample-workflowexecution.yaml`, compiled in): every optional field set, parameter
/// values with quotes, newlines and non-ASCII text.
pub const SAMPLE_WORKFLOW_EXECUTION: &str = include_str!("../data/sample-workflowexecution.yaml");

/// [`SAMPLE_WORKFLOW_EXECUTION`], parsed.
///
/// # Panics
///
/// Never at run time: the sample is compiled in, and a unit test parses it
/// (`the_compiled_in_sample_sets_every_optional_field`).
pub fn sample_workflow_execution() -> WorkflowExecution {
    serde_yaml::from_str(SAMPLE_WORKFLOW_EXECUTION)
        .expect("the compiled-in sample WorkflowExecution parses (a unit test pins it)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use kubernaut_framework::cancel::CancelSpec;
    use kubernaut_framework::status::StatusMapping;
    use kubernaut_framework::template::{ChildKind, TemplateSet};

    use crate::testing::{
        load_cancel_spec, load_status_mapping, load_templates, pipeline_run_kind,
        render_pipeline_run,
    };
    use crate::types::{ExecutionConfig, Phase};

    /// The compiled-in sample parses, sets every optional field of the spec and carries the
    /// parameter values the template must escape.
    #[test]
    fn the_compiled_in_sample_sets_every_optional_field() {
        let wfe = sample_workflow_execution();
        let spec = &wfe.spec;
        assert!(spec.workflow_ref.container_digest.is_some());
        assert!(spec.confidence.is_some() && spec.rationale.is_some());
        let reference = spec.remediation_request_ref.as_ref().unwrap();
        assert_eq!(reference.name.as_deref(), Some("rr-nginx-oom"));
        let timeout = spec
            .execution_config
            .as_ref()
            .and_then(|c| c.timeout.as_deref());
        assert_eq!(timeout, Some("30m"));
        assert_eq!(wfe.metadata.generation, Some(1));
        assert!(wfe.metadata.uid.is_some() && wfe.metadata.namespace.is_some());
        let reason = &spec.parameters["REASON"];
        assert!(reason.contains('"') && reason.contains('\n') && !reason.is_ascii());
    }

    fn template_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../templates/workflowexecution")
    }

    fn params(run: &Value) -> Vec<(String, String)> {
        name_values(&run["spec"]["params"])
    }

    fn resolver_params(run: &Value) -> Vec<(String, String)> {
        name_values(&run["spec"]["pipelineRef"]["params"])
    }

    /// A `[{name, value}]` list as pairs.
    fn name_values(list: &Value) -> Vec<(String, String)> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn job_kind() -> ChildKind {
        ChildKind {
            api_version: "batch/v1".to_owned(),
            kind: "Job".to_owned(),
        }
    }

    /// The Job engine's template rendered for `wfe` (identity not applied).
    fn render_job(wfe: &WorkflowExecution) -> Value {
        let set = TemplateSet::load(
            &template_dir(),
            &[crate::testing::template_decl("job/job.yaml.j2", job_kind())],
        )
        .unwrap();
        set.render(
            "job/job.yaml.j2",
            &template_context(wfe, &OperatorConfig::default()),
        )
        .unwrap()
    }

    /// The Job engine's files load as the operator loads Tekton's: the template with the same
    /// sample context, the mapping with the operator's rules, the cancel file for a Job.
    #[test]
    fn the_job_engine_files_load_with_the_operators_rules() {
        let dir = template_dir().join("job");
        let mapping = StatusMapping::load(&dir.join("status.yaml"), &mapping_rules()).unwrap();
        assert_eq!(mapping.child(), &job_kind());
        assert_eq!(
            mapping.grandchild_owner_label(),
            Some("batch.kubernetes.io/job-name")
        );
        let cancel = CancelSpec::load(&dir.join("cancel.yaml"), &job_kind()).unwrap();
        assert_eq!(cancel.patch(None), json!({"spec": {"suspend": true}}));
        assert!(cancel.is_cancelled(&json!({"spec": {"suspend": true}})));
        assert!(!cancel.is_cancelled(&json!({"spec": {"suspend": false}})));
        assert_eq!(
            cancel.delete_propagation(),
            kube::api::PropagationPolicy::Foreground,
            "a Job holds the target's lock until its pods are gone"
        );
    }

    /// The test engine whose child does the work itself (a ConfigMap, no grandchildren) loads
    /// with the operator's rules and renders the work into the ConfigMap's `data`.
    #[test]
    fn an_engine_without_grandchildren_loads_with_the_operators_rules() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engines");
        let kind = ChildKind {
            api_version: "v1".to_owned(),
            kind: "ConfigMap".to_owned(),
        };
        let mapping =
            StatusMapping::load(&dir.join("configmap/status.yaml"), &mapping_rules()).unwrap();
        assert_eq!(mapping.child(), &kind);
        assert!(!mapping.reads_grandchildren());
        assert_eq!(mapping.grandchild_kind(), None);
        CancelSpec::load(&dir.join("configmap/cancel.yaml"), &kind).unwrap();
        let file = "configmap/configmap.yaml.j2";
        let set = TemplateSet::load(&dir, &[crate::testing::template_decl(file, kind)]).unwrap();
        let wfe = sample_workflow_execution();
        let config_map = set
            .render(file, &template_context(&wfe, &OperatorConfig::default()))
            .unwrap();
        assert_eq!(config_map["data"]["workflowId"], "restart-deployment");
        assert_eq!(
            config_map["data"]["param.REASON"],
            wfe.spec.parameters["REASON"]
        );
        let phases = [
            (json!({}), "Pending"),
            (json!({"result": "started"}), "Running"),
            (json!({"result": "succeeded"}), "Completed"),
            (json!({"result": "failed"}), "Failed"),
        ];
        for (data, phase) in phases {
            let child = json!({"metadata": {"name": "wfe-1"}, "data": data});
            assert_eq!(mapping.phase(&child), Some(phase), "{data}");
        }
    }

    /// A suspended (cancelled) Job reads as Failed once no pod of it is active or terminating,
    /// so that the operator deletes it only after its pod is gone.
    #[test]
    fn a_suspended_job_is_failed_once_its_pods_are_gone() {
        let dir = template_dir().join("job");
        let mapping = StatusMapping::load(&dir.join("status.yaml"), &mapping_rules()).unwrap();
        let suspended = json!({"type": "Suspended", "status": "True", "reason": "JobSuspended"});
        let resumed = json!({"type": "Suspended", "status": "False", "reason": "JobResumed"});
        let start = "2025-06-01T11:50:00Z";
        let cases = [
            (json!({"startTime": start, "active": 1}), "Running"),
            (
                json!({"startTime": start, "conditions": [suspended], "active": 1}),
                "Running",
            ),
            (
                json!({"conditions": [suspended], "terminating": 1}),
                "Pending",
            ),
            (json!({"conditions": [suspended]}), "Failed"),
            (
                json!({"conditions": [suspended], "active": 0, "terminating": 0}),
                "Failed",
            ),
            (json!({"active": 1}), "Running"),
            (json!({"active": 0}), "Pending"),
            (
                json!({"startTime": start, "conditions": [resumed]}),
                "Running",
            ),
            (json!({}), "Pending"),
        ];
        for (status, phase) in cases {
            let job = json!({"metadata": {"name": "wfe-1"}, "status": status});
            assert_eq!(mapping.phase(&job), Some(phase), "{status}");
        }
        let failed = json!({"metadata": {"name": "wfe-1"}, "status": {"conditions": [suspended]}});
        let fields = mapping.fields(&failed);
        assert_eq!(fields["reason"], "JobSuspended");
        assert_eq!(fields["totalTasks"], 1);
    }

    #[test]
    fn the_job_runs_the_image_with_the_parameters_as_a_restricted_one_shot_pod() {
        let wfe = sample_workflow_execution();
        let job = render_job(&wfe);
        assert_eq!(job["apiVersion"], "batch/v1");
        assert_eq!(job["kind"], "Job");
        let spec = &job["spec"];
        assert_eq!(spec["backoffLimit"], 0);
        assert_eq!(spec["activeDeadlineSeconds"], 1800, "the sample's 30m");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        assert_eq!(pod["serviceAccountName"], "kubernaut-workflow-runner");
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert_eq!(
            pod["securityContext"],
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})
        );
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let container = &containers[0];
        assert_eq!(
            container["image"],
            "quay.io/kubernaut/workflows/restart-deployment@sha256:9b2f4c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c",
            "pinned by the digest"
        );
        assert_eq!(
            container["securityContext"],
            json!({
                "allowPrivilegeEscalation": false,
                "runAsNonRoot": true,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}
            })
        );
        let mut want: Vec<(String, String)> = wfe
            .spec
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        want.push((
            "TARGET_RESOURCE".to_owned(),
            "default/deployment/nginx".to_owned(),
        ));
        assert_eq!(name_values(&container["env"]), want, "byte for byte");
        // The pods carry the ownership the operator's watch maps back to the WorkflowExecution.
        let meta = &spec["template"]["metadata"];
        assert_eq!(
            meta["labels"]["kubernaut.ai/workflow-execution"],
            "restart-nginx-7f9c"
        );
        assert_eq!(
            meta["labels"]["kubernaut.ai/source-namespace"],
            "kubernaut-system"
        );
        assert_eq!(
            meta["labels"]["kubernaut.ai/workflow-execution-uid"],
            "4f2d7a3e-0c1b-4d5e-9f6a-8b7c6d5e4f3a"
        );
        assert_eq!(
            meta["annotations"]["kubernaut.ai/workflow-execution"],
            "restart-nginx-7f9c"
        );
    }

    #[test]
    fn the_job_deadline_is_the_timeout_in_whole_seconds_rounded_up() {
        let cases = [
            (None, 3600),
            (Some("1h0m0s"), 3600),
            (Some("30m"), 1800),
            (Some("1.5h"), 5400),
            (Some("2h45m10s"), 9910),
            (Some("90s"), 90),
            (Some("1m30.5s"), 91),
            (Some("+10s"), 10),
            (Some("500ms"), 1),
            (Some("1500us"), 1),
            (Some("1s999999999ns"), 2),
        ];
        for (timeout, seconds) in cases {
            let mut wfe = sample_workflow_execution();
            wfe.spec.execution_config = Some(Box::new(ExecutionConfig {
                timeout: timeout.map(str::to_owned),
                service_account_name: None,
            }));
            let job = render_job(&wfe);
            assert_eq!(job["spec"]["activeDeadlineSeconds"], seconds, "{timeout:?}");
        }
    }

    /// The documented switch: only `KUBERNAUT_MOUNT_SERVICE_ACCOUNT_TOKEN: "true"` mounts a token;
    /// a long name is cut to fit the pods' label; the runner is the WFE's when it names one.
    #[test]
    fn the_job_mounts_a_token_only_when_the_workflow_asks_for_one() {
        for (value, mounted) in [(Some("true"), true), (Some("yes"), false), (None, false)] {
            let mut wfe = sample_workflow_execution();
            wfe.metadata.name = Some(format!("{}-x", "a".repeat(62)));
            if let Some(value) = value {
                wfe.spec.parameters.insert(
                    "KUBERNAUT_MOUNT_SERVICE_ACCOUNT_TOKEN".to_owned(),
                    value.to_owned(),
                );
            }
            wfe.spec.execution_config = Some(Box::new(ExecutionConfig {
                timeout: None,
                service_account_name: Some("custom-runner".to_owned()),
            }));
            let job = render_job(&wfe);
            let pod = &job["spec"]["template"];
            assert_eq!(
                pod["spec"]["automountServiceAccountToken"], mounted,
                "{value:?}"
            );
            assert_eq!(pod["spec"]["serviceAccountName"], "custom-runner");
            assert_eq!(
                pod["metadata"]["labels"]["kubernaut.ai/workflow-execution"],
                "a".repeat(62),
                "63 characters, the trailing `-` dropped"
            );
        }
    }

    #[test]
    fn shipped_files_load() {
        let set = load_templates(&template_dir()).unwrap();
        assert_eq!(set.revision().len(), 16);
        let mapping = load_status_mapping(&template_dir()).unwrap();
        assert_eq!(mapping.child(), &pipeline_run_kind());
        load_cancel_spec(&template_dir()).unwrap();
    }

    #[test]
    fn renders_the_contracts_pipeline_run() {
        let set = load_templates(&template_dir()).unwrap();
        let wfe = sample_workflow_execution();
        let run = render_pipeline_run(&wfe, &OperatorConfig::default(), &set).unwrap();
        assert_eq!(run["apiVersion"], "tekton.dev/v1");
        assert_eq!(run["kind"], "PipelineRun");
        assert_eq!(run["metadata"]["name"], "wfe-f3457dcc8fbcb6d9");
        assert_eq!(run["metadata"]["namespace"], "kubernaut-workflows");
        assert_eq!(
            run["metadata"]["annotations"]["kubernaut.ai/template-revision"],
            set.revision()
        );
        let resolver = &run["spec"]["pipelineRef"];
        assert_eq!(resolver["resolver"], "bundles");
        assert_eq!(
            resolver["params"],
            json!([
                // The sample pins a digest: the bundle is pulled by it, not by the tag.
                {"name": "bundle", "value": "quay.io/kubernaut/workflows/restart-deployment@sha256:9b2f4c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"},
                {"name": "name", "value": "workflow"},
                {"name": "kind", "value": "pipeline"}
            ])
        );
        let mut want: Vec<(String, String)> = wfe
            .spec
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        want.push((
            "TARGET_RESOURCE".to_owned(),
            "default/deployment/nginx".to_owned(),
        ));
        assert_eq!(params(&run), want);
        assert_eq!(
            run["spec"]["taskRunTemplate"]["serviceAccountName"],
            "kubernaut-workflow-runner"
        );
        assert_eq!(run["spec"]["timeouts"]["pipeline"], "30m");
        assert!(run["metadata"].get("ownerReferences").is_none());
    }

    #[test]
    fn defaults_fill_what_the_spec_leaves_out() {
        let set = load_templates(&template_dir()).unwrap();
        let mut wfe = sample_workflow_execution();
        wfe.spec.execution_config = None;
        wfe.spec.parameters.clear();
        let mut config = OperatorConfig::default();
        config.execution.default_timeout = std::time::Duration::from_secs(5400);
        let run = render_pipeline_run(&wfe, &config, &set).unwrap();
        assert_eq!(run["spec"]["timeouts"]["pipeline"], "1h30m0s");
        assert_eq!(
            params(&run),
            [(
                "TARGET_RESOURCE".to_owned(),
                "default/deployment/nginx".to_owned()
            )]
        );

        wfe.spec.execution_config = Some(Box::new(ExecutionConfig {
            timeout: None,
            service_account_name: Some("remediator-elevated".to_owned()),
        }));
        let run = render_pipeline_run(&wfe, &config, &set).unwrap();
        assert_eq!(
            run["spec"]["taskRunTemplate"]["serviceAccountName"],
            "remediator-elevated"
        );
        assert_eq!(run["spec"]["timeouts"]["pipeline"], "1h30m0s");
    }

    #[test]
    fn the_bundle_is_pulled_by_digest_when_one_is_given() {
        let set = load_templates(&template_dir()).unwrap();
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            (
                "127.0.0.1:5000/wf/restart:v1",
                Some(digest),
                format!("127.0.0.1:5000/wf/restart@{digest}"),
            ),
            (
                "127.0.0.1:5000/wf/restart:v1",
                None,
                "127.0.0.1:5000/wf/restart:v1".to_owned(),
            ),
            (
                "r.example.com/wf/restart:v1@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                Some(digest),
                format!("r.example.com/wf/restart@{digest}"),
            ),
        ];
        for (image, digest, pulled) in cases {
            let mut wfe = sample_workflow_execution();
            wfe.spec.workflow_ref.container_image = image.to_owned();
            wfe.spec.workflow_ref.container_digest = digest.map(str::to_owned);
            let run = render_pipeline_run(&wfe, &OperatorConfig::default(), &set).unwrap();
            assert_eq!(
                resolver_params(&run)[0],
                ("bundle".to_owned(), pulled),
                "{image}"
            );
            let context = template_context(&wfe, &OperatorConfig::default());
            assert_eq!(context["bundle"]["digest"], json!(digest));
        }
    }

    #[test]
    fn a_malformed_digest_fails_the_render_instead_of_pulling_by_tag() {
        let set = load_templates(&template_dir()).unwrap();
        let mut wfe = sample_workflow_execution();
        wfe.spec.workflow_ref.container_digest = Some("sha256:short".to_owned());
        let err = render_pipeline_run(&wfe, &OperatorConfig::default(), &set).unwrap_err();
        assert!(err.to_string().contains("bundle.reference"), "{err}");
    }

    #[test]
    fn the_resolver_service_account_is_rendered_only_when_configured() {
        let set = load_templates(&template_dir()).unwrap();
        let wfe = sample_workflow_execution();
        let run = render_pipeline_run(&wfe, &OperatorConfig::default(), &set).unwrap();
        let names: Vec<String> = resolver_params(&run).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["bundle", "name", "kind"]);

        let mut config = OperatorConfig::default();
        config.execution.bundle_service_account = Some("registry-puller".to_owned());
        let run = render_pipeline_run(&wfe, &config, &set).unwrap();
        assert_eq!(
            resolver_params(&run)[3],
            ("serviceAccount".to_owned(), "registry-puller".to_owned())
        );
        // The runner is unchanged: the resolver's account pulls, the runner's runs the tasks.
        assert_eq!(
            run["spec"]["taskRunTemplate"]["serviceAccountName"],
            "kubernaut-workflow-runner"
        );
    }

    #[test]
    fn shipped_cancel_file_asks_for_finally_and_recognises_both_cancellations() {
        let cancel = load_cancel_spec(&template_dir()).unwrap();
        assert_eq!(
            cancel.patch(Some("42")),
            json!({"spec": {"status": "CancelledRunFinally"}, "metadata": {"resourceVersion": "42"}})
        );
        for value in ["Cancelled", "CancelledRunFinally"] {
            assert!(
                cancel.is_cancelled(&json!({"spec": {"status": value}})),
                "{value}"
            );
        }
        assert!(!cancel.is_cancelled(&json!({"spec": {}})));
        assert_eq!(
            cancel.finish_grace_period(),
            std::time::Duration::from_secs(300)
        );
        // Absent from the shipped file: a run's TaskRuns and pods go after it.
        assert_eq!(
            cancel.delete_propagation(),
            kube::api::PropagationPolicy::Background
        );
    }

    #[test]
    fn hostile_values_stay_values() {
        let set = load_templates(&template_dir()).unwrap();
        let mut wfe = sample_workflow_execution();
        let hostile = [
            "x\n  injected: true",
            "\"}, {\"name\": \"evil\"",
            "{{ config }}",
            "{% for x in range(9) %}",
            "- name: extra",
            "\u{0}\u{7f}\u{85}\u{2028}\u{feff}\u{ffff}",
            "\u{1f680} caf\u{e9} \u{202e}",
            "---\napiVersion: v1",
            "yes",
            "0x10",
            "",
        ];
        wfe.spec.parameters = hostile
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("P{i:02}"), (*v).to_owned()))
            .collect();
        let run = render_pipeline_run(&wfe, &OperatorConfig::default(), &set).unwrap();
        let got = params(&run);
        assert_eq!(got.len(), hostile.len() + 1);
        for (i, value) in hostile.iter().enumerate() {
            assert_eq!(got[i], (format!("P{i:02}"), (*value).to_owned()));
        }
    }

    #[test]
    fn mapping_rules_list_the_contracts_values() {
        let rules = mapping_rules();
        assert_eq!(rules.phases, ["Pending", "Running", "Completed", "Failed"]);
        assert_eq!(
            rules.results,
            [
                "OOMKilled",
                "DeadlineExceeded",
                "Forbidden",
                "ResourceExhausted",
                "ImagePullBackOff",
                "ConfigurationError",
                "TaskFailed",
                "Unknown"
            ]
        );
        // An engine without grandchildren loads: its failures count as execution failures.
        assert!(!rules.require_grandchildren);
        // Run phases are WorkflowExecution phases too, except the operator-only Skipped.
        for phase in RUN_PHASES {
            assert!(Phase::ALL.iter().any(|p| p.as_str() == phase), "{phase}");
        }
    }

    #[test]
    fn context_hides_status_and_managed_fields() {
        let mut wfe = sample_workflow_execution();
        wfe.metadata.managed_fields = Some(vec![Default::default()]);
        wfe.status = Some(Default::default());
        let context = template_context(&wfe, &OperatorConfig::default());
        assert!(context["wfe"]["metadata"].get("managedFields").is_none());
        assert!(context["wfe"].get("status").is_none());
        assert_eq!(context["wfe"]["metadata"]["name"], "restart-nginx-7f9c");
        assert_eq!(context["config"]["defaultTimeout"], "1h0m0s");
        assert_eq!(context["config"]["namespace"], "kubernaut-workflows");
    }
}
