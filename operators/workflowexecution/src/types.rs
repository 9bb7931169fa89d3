//! The `WorkflowExecution` custom resource (`kubernaut.ai/v1alpha1`).
//!
//! A WorkflowExecution (WFE) asks the operator to run one remediation workflow (a Tekton bundle)
//! against one target resource. This module is the API: the spec a producer writes, the status the
//! operator reports, and the admission rules the API server enforces.
//!
//! Guarantees:
//! 1. Field names, enum values and JSON shapes are exactly those of the behaviour contract
//!    (camelCase JSON); optional fields are omitted when unset, so a status patch never writes
//!    `null`s the contract does not mention.
//! 2. The generated CRD ([`crd`], [`crd_yaml`]) carries the admission rules as CEL
//!    `x-kubernetes-validations`: `targetResource` has 2 or 3 non-empty `/`-separated parts,
//!    parameter names follow Tekton's rule and none is `TARGET_RESOURCE` (the operator adds that
//!    one), `workflowRef.workflowId` is not empty, `workflowRef.containerDigest` is a sha256
//!    digest, `confidence` is within 0..1, and the spec is
//!    immutable (`self == oldSelf`). [`crate::validate`] holds the
//!    runtime copy of the same rules.
//! 3. `crds/kubernaut.ai_workflowexecutions.yaml` is the output of [`crd_yaml`]; a test fails when the
//!    checked-in file drifts.
//!
//! Assumptions:
//! 1. Only the operator writes `status` (status subresource); it is the single source of the
//!    decisions in [`crate::decide`], which are therefore reconstructible after a restart.
//!
//! Caveats:
//! 1. `targetResource` is limited to [`MAX_TARGET_RESOURCE_LENGTH`] characters: without a bound the
//!    API server's CEL cost estimate for the shape rule exceeds its budget. Real targets
//!    (namespace 63, kind, name 253) stay far below it.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use kubernaut_framework::crd::CrdYamlError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the resource.
pub const GROUP: &str = "kubernaut.ai";
/// The API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// The longest `targetResource` the API accepts (see the module caveats).
pub const MAX_TARGET_RESOURCE_LENGTH: usize = 1024;
/// The file the generated CRD is checked in as, relative to the repository root.
pub const CRD_FILE: &str = "crds/kubernaut.ai_workflowexecutions.yaml";

/// CEL rule: `targetResource` is `namespace/kind/name` or `kind/name`, every part non-empty.
pub const TARGET_RESOURCE_RULE: &str = "self.matches('^[^/]+/[^/]+(/[^/]+)?$')";
/// CEL rule: every parameter name is a valid Tekton parameter name.
pub const PARAMETER_NAMES_RULE: &str = "self.all(k, k.matches('^[a-zA-Z_][a-zA-Z0-9_.-]*$'))";
/// CEL rule: no parameter is named `TARGET_RESOURCE`, which the operator adds to every run.
pub const RESERVED_PARAMETER_RULE: &str = "!('TARGET_RESOURCE' in self)";
/// CEL rule: `workflowRef.containerDigest` is a sha256 digest
/// ([`crate::bundle::DIGEST_PATTERN`]).
pub const CONTAINER_DIGEST_RULE: &str = "self.matches('^sha256:[a-f0-9]{64}$')";
/// The most parameters a WorkflowExecution may carry (CRD `maxProperties`).
pub const MAX_PARAMETERS: usize = 128;
/// The longest parameter name, in characters.
pub const MAX_PARAMETER_NAME_LENGTH: usize = 128;
/// The longest parameter value, in characters (32 KiB of ASCII; CRD `maxLength`).
pub const MAX_PARAMETER_VALUE_LENGTH: usize = 32 * 1024;
/// The most characters all parameter names and values may hold together (1 Mi). Keeps a
/// WorkflowExecution, and the PipelineRun rendered from it, well below the API server's storage
/// limit (etcd's 1.5 MiB request limit), with room for both objects' status.
pub const MAX_PARAMETERS_SIZE: usize = 1024 * 1024;
/// CEL rule: every parameter name has at most [`MAX_PARAMETER_NAME_LENGTH`] characters.
pub const PARAMETER_NAME_LENGTH_RULE: &str = "self.all(k, size(k) <= 128)";
/// CEL rule: names and values together hold at most [`MAX_PARAMETERS_SIZE`] characters.
pub const PARAMETERS_SIZE_RULE: &str = "self.map(k, size(k) + size(self[k])).sum() <= 1048576";

kubernaut_framework::api_struct! {
    /// What a WorkflowExecution asks for. Immutable after creation.
    #[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
    #[kube(
        group = "kubernaut.ai",
        version = "v1alpha1",
        kind = "WorkflowExecution",
        plural = "workflowexecutions",
        shortname = "wfe",
        namespaced,
        status = "WorkflowExecutionStatus",
        derive = "PartialEq",
        doc = "Runs one remediation workflow against one target resource as a Tekton PipelineRun.",
        printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
        printcolumn = r#"{"name": "Workflow", "type": "string", "jsonPath": ".spec.workflowRef.workflowId"}"#,
        printcolumn = r#"{"name": "Target", "type": "string", "jsonPath": ".spec.targetResource"}"#,
        printcolumn = r#"{"name": "Engine", "type": "string", "jsonPath": ".status.executionEngine"}"#,
        printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].reason"}"#,
        printcolumn = r#"{"name": "Duration", "type": "string", "jsonPath": ".status.duration"}"#,
        printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
        selectable = ".spec.targetResource"
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable"))]
    #[serde(rename_all = "camelCase")]
    pub struct WorkflowExecutionSpec {
        /// The workflow to run.
        pub workflow_ref: WorkflowRef,
        /// The resource to remediate: `namespace/kind/name` (namespaced) or `kind/name`
        /// (cluster-scoped). At most one WorkflowExecution runs per target at a time.
        #[x_kube(validation = Rule::new(TARGET_RESOURCE_RULE).message(
            "must be namespace/kind/name or kind/name (2 or 3 non-empty '/'-separated parts)"
        ))]
        #[schemars(length(max = 1024))]
        pub target_resource: String,
        /// Workflow parameters, passed to the PipelineRun as string params byte-for-byte. Names must be
        /// valid Tekton parameter names (letters, digits, `_`, `-`, `.`; starting with a letter or `_`)
        /// of at most 128 characters. At most 128 parameters, each value at most 32768 characters,
        /// names and values together at most 1048576 characters.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        #[schemars(extend("maxProperties" = MAX_PARAMETERS))]
        #[schemars(extend("additionalProperties" = {"type": "string", "maxLength": MAX_PARAMETER_VALUE_LENGTH}))]
        #[x_kube(validation = Rule::new(PARAMETER_NAMES_RULE).message(
            "parameter names must start with a letter or '_' and contain only letters, digits, '_', '-' and '.'"
        ))]
        #[x_kube(validation = Rule::new(RESERVED_PARAMETER_RULE).message(
            "TARGET_RESOURCE is set by the operator from spec.targetResource and cannot be a parameter"
        ))]
        #[x_kube(validation = Rule::new(PARAMETER_NAME_LENGTH_RULE).message(
            "parameter names must be at most 128 characters long"
        ))]
        #[x_kube(validation = Rule::new(PARAMETERS_SIZE_RULE).message(
            "parameter names and values together must be at most 1048576 characters (1 Mi)"
        ))]
        pub parameters: BTreeMap<String, String>,
        /// How confident the producer is in this remediation (0..1); audit only.
        #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("must be between 0 and 1"))]
        pub confidence: Option<f64>,
        /// Why this remediation was chosen; audit only.
        pub rationale: Option<String>,
        /// The RemediationRequest this execution belongs to; its name is the audit correlation id.
        pub remediation_request_ref: Option<Box<ObjectReference>>,
        /// Per-execution overrides.
        pub execution_config: Option<Box<ExecutionConfig>>,
        /// The execution engine to run on: one of the operator configuration's `execution.engines`
        /// (`tekton`, `job` with the shipped configuration and templates); absent: the configured
        /// `execution.defaultEngine`. An engine the operator does not run fails the execution with
        /// `ConfigurationError` before anything runs.
        #[schemars(length(min = 1, max = 63))]
        #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
        pub execution_engine: Option<String>,
    }
}

/// The workflow a WorkflowExecution runs: a Tekton bundle.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRef {
    /// The workflow's catalogue id; executions of the same workflow on a target share a cooldown.
    #[x_kube(validation = Rule::new("size(self) > 0").message("must not be empty"))]
    pub workflow_id: String,
    /// The workflow's version.
    pub version: String,
    /// The OCI Tekton bundle reference. Passed unchanged to the bundles resolver, unless
    /// `containerDigest` is set.
    pub container_image: String,
    /// The bundle's digest, `sha256:` and 64 lowercase hexadecimal characters. When set, the
    /// bundle is pulled by digest (`containerImage` without its tag, `@` this digest), so a tag
    /// moved later cannot change what runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(CONTAINER_DIGEST_RULE).message(
        "must be sha256: followed by 64 lowercase hexadecimal characters"
    ))]
    #[schemars(length(max = 71))]
    pub container_digest: Option<String>,
}

/// Per-execution overrides of the operator's execution settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionConfig {
    /// The PipelineRun timeout as a Go duration (`"30m"`, `"1h30m"`); default from the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The service account the workflow's tasks run as. Honoured only if the operator config lists
    /// it in `execution.allowedServiceAccounts`; otherwise the execution fails with
    /// `ConfigurationError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

kubernaut_framework::api_struct! {
    /// What the operator reports about a WorkflowExecution.
    #[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct WorkflowExecutionStatus {
        /// The lifecycle phase.
        pub phase: Option<Phase>,
        /// The `metadata.generation` this status was computed from.
        pub observed_generation: Option<i64>,
        /// When the PipelineRun was created (the execution started).
        pub start_time: Option<Time>,
        /// When the execution reached a terminal phase.
        pub completion_time: Option<Time>,
        /// Go-style duration from start to completion, rounded to seconds (`2m30s`).
        pub duration: Option<String>,
        /// The engine the execution runs on (set with `pipelineRunRef`): a later change of the
        /// configured default engine does not move a started execution.
        pub execution_engine: Option<String>,
        /// The PipelineRun this execution created.
        pub pipeline_run_ref: Option<PipelineRunRef>,
        /// The last observed state of the PipelineRun.
        pub pipeline_run_status: Option<PipelineRunStatusSummary>,
        /// Why the execution failed (phase `Failed`).
        pub failure_details: Option<Box<FailureDetails>>,
        /// Why the execution was skipped (phase `Skipped`).
        pub skip_details: Option<Box<SkipDetails>>,
        /// Consecutive pre-execution failures on this execution's target, this one included.
        pub consecutive_failures: Option<u32>,
        /// The earliest time the next execution on this target may start (pre-execution backoff).
        pub next_allowed_execution: Option<Time>,
        /// Set when an operator cleared the execution block this failure causes.
        pub block_clearance: Option<Box<BlockClearance>>,
        /// The revision of the template set the PipelineRun was rendered from.
        pub template_revision: Option<String>,
        /// `Ready`, `ExecutionCreated`, `ExecutionRunning`, `ExecutionComplete`; one per type.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
        pub conditions: Vec<Condition>,
    }
}

kubernaut_framework::string_enum! {
    serde;
    /// The lifecycle phase of a WorkflowExecution.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Phase {
        /// Accepted; validation, lock and cooldown decisions pending.
        Pending = "Pending",
        /// The PipelineRun exists and has not finished.
        Running = "Running",
        /// The PipelineRun succeeded.
        Completed = "Completed",
        /// Validation, creation or the PipelineRun failed.
        Failed = "Failed",
        /// Not run: the target was busy, cooling down or blocked.
        Skipped = "Skipped",
    }
}

impl kubernaut_framework::phase::Phase for Phase {
    /// `Pending` → `Running` | `Failed` | `Skipped`; `Running` → `Completed` | `Failed`.
    fn allowed_transitions(self) -> &'static [Phase] {
        match self {
            Phase::Pending => &[Phase::Running, Phase::Failed, Phase::Skipped],
            Phase::Running => &[Phase::Completed, Phase::Failed],
            Phase::Completed | Phase::Failed | Phase::Skipped => &[],
        }
    }

    /// `Completed`, `Failed`, `Skipped`.
    fn is_terminal(self) -> bool {
        matches!(self, Phase::Completed | Phase::Failed | Phase::Skipped)
    }

    /// Only `Pending`.
    fn is_initial(self) -> bool {
        self == Phase::Pending
    }
}

kubernaut_framework::string_enum! {
    serde;
    /// Why an execution failed.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub enum FailureReason {
        /// A step ran out of memory.
        OomKilled = "OOMKilled",
        /// The PipelineRun or a TaskRun timed out.
        DeadlineExceeded = "DeadlineExceeded",
        /// The workflow lacked permissions.
        Forbidden = "Forbidden",
        /// A quota or node capacity was exhausted.
        ResourceExhausted = "ResourceExhausted",
        /// A step image could not be pulled.
        ImagePullBackOff = "ImagePullBackOff",
        /// The execution was misconfigured (invalid spec, unresolvable pipeline, bad parameters).
        ConfigurationError = "ConfigurationError",
        /// A task failed.
        TaskFailed = "TaskFailed",
        /// Anything else (the default).
        #[default]
        Unknown = "Unknown",
    }
}

kubernaut_framework::string_enum! {
    serde;
    /// Why an execution was skipped.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum SkipReason {
        /// Another execution holds the target.
        ResourceBusy = "ResourceBusy",
        /// The target was remediated (or failed before executing) too recently.
        RecentlyRemediated = "RecentlyRemediated",
        /// Too many consecutive pre-execution failures on the target.
        ExhaustedRetries = "ExhaustedRetries",
        /// The previous execution on the target failed while executing; manual intervention required.
        PreviousExecutionFailed = "PreviousExecutionFailed",
    }
}

/// Names the PipelineRun of an execution.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PipelineRunRef {
    /// The PipelineRun's name (the lock name).
    pub name: String,
    /// The PipelineRun's namespace (config `execution.namespace`).
    pub namespace: String,
}

kubernaut_framework::api_struct! {
    /// The last observed state of the PipelineRun.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct PipelineRunStatusSummary {
        /// The `Succeeded` condition's status (`True`, `False`, `Unknown`).
        pub status: Option<String>,
        /// The `Succeeded` condition's reason.
        pub reason: Option<String>,
        /// The `Succeeded` condition's message.
        pub message: Option<String>,
        /// Tasks that finished (succeeded or failed), when known.
        pub completed_tasks: Option<u32>,
        /// Tasks started so far (TaskRuns among the run's children).
        pub total_tasks: Option<u32>,
        /// `true` once a step of the run has been seen running (read from its TaskRuns through the
        /// status mapping's `grandchildren.ran`). Remembered so that a run deleted later, with its
        /// TaskRuns, still counts as an execution failure; never cleared.
        pub execution_started: Option<bool>,
    }
}

kubernaut_framework::api_struct! {
    /// Why an execution failed, in enough detail for an analysis step to decide what to do next.
    #[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
    #[serde(rename_all = "camelCase")]
    pub struct FailureDetails {
        /// The classified reason.
        pub reason: FailureReason,
        /// The error message (Tekton's, or the operator's for pre-execution failures).
        pub message: String,
        /// The failed TaskRun's name.
        pub failed_task_name: Option<String>,
        /// The failed TaskRun's index in the PipelineRun's `childReferences`.
        pub failed_task_index: Option<u32>,
        /// The failed step's name.
        pub failed_step_name: Option<String>,
        /// The exit code of the first step that terminated with a non-zero code.
        pub exit_code: Option<i32>,
        /// When the failure happened.
        pub failed_at: Option<Time>,
        /// Go-style duration the run executed before failing.
        pub execution_time_before_failure: Option<String>,
        /// Whether workflow code ran (true) or the failure happened before execution (false).
        pub was_execution_failure: bool,
        /// A multi-line, human- and model-readable account of the failure with a recommendation.
        pub natural_language_summary: String,
    }
}

/// Why an execution was skipped, and what it was skipped for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SkipDetails {
    /// The skip reason.
    pub reason: SkipReason,
    /// A human-readable explanation.
    pub message: String,
    /// When the decision was made.
    pub skipped_at: Time,
    /// The execution holding the target (`ResourceBusy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicting_workflow: Option<ConflictingWorkflow>,
    /// The execution that caused the cooldown or block (the other reasons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent_remediation: Option<RecentRemediation>,
}

/// The execution holding a target.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConflictingWorkflow {
    /// Its name.
    pub name: String,
    /// Its workflow id.
    pub workflow_id: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The contested target.
    pub target_resource: String,
}

/// The finished execution that causes a cooldown, backoff or block.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecentRemediation {
    /// Its name.
    pub name: String,
    /// Its workflow id.
    pub workflow_id: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
    /// Its phase (`Completed` or `Failed`).
    pub outcome: String,
    /// The target.
    pub target_resource: String,
    /// Go-style time left until the target may be remediated again, when time-bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_remaining: Option<String>,
}

/// Records that an operator lifted the block a failed execution causes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockClearance {
    /// When the block was cleared.
    pub cleared_at: Time,
    /// The reason given in the `kubernaut.ai/clear-execution-block` annotation.
    pub clear_reason: String,
}

/// The `WorkflowExecution` CustomResourceDefinition, with its admission rules.
pub fn crd() -> CustomResourceDefinition {
    WorkflowExecution::crd()
}

/// The CRD as the YAML document checked in as [`CRD_FILE`]; every string reads back the same
/// in YAML 1.1 (kubectl) and 1.2 readers ([`kubernaut_framework::yaml`]).
///
/// # Errors
/// [`CrdYamlError`] when the CRD cannot be serialised.
pub fn crd_yaml() -> Result<String, CrdYamlError> {
    kubernaut_framework::crd::crd_yaml(&crd(), "workflowexecution-operator crd")
}

/// The identity of a target for locking, cooldown and every "same target" comparison:
/// `targetResource` with its kind part lower-cased (the framework's Kubernaut vocabulary).
pub use kubernaut_framework::names::target_key;

impl WorkflowExecution {
    /// The phase, `None` before the operator first wrote status.
    pub fn phase(&self) -> Option<Phase> {
        self.status.as_ref().and_then(|s| s.phase)
    }

    /// `status.completionTime`, if set.
    pub fn completion_time(&self) -> Option<jiff::Timestamp> {
        Some(self.status.as_ref()?.completion_time.as_ref()?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubernaut_framework::phase::Phase as _;
    use serde_json::json;

    fn spec_schema() -> serde_json::Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    }

    fn rules(schema: &serde_json::Value) -> Vec<String> {
        schema["x-kubernetes-validations"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| r["rule"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn crd_identity_matches_the_contract() {
        let crd = crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("workflowexecutions.kubernaut.ai")
        );
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "WorkflowExecution");
        assert_eq!(crd.spec.names.plural, "workflowexecutions");
        assert_eq!(crd.spec.names.short_names, Some(vec!["wfe".to_owned()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let columns: Vec<(String, String)> = version
            .additional_printer_columns
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|c| (c.name, c.json_path))
            .collect();
        let want = [
            ("Phase", ".status.phase"),
            ("Workflow", ".spec.workflowRef.workflowId"),
            ("Target", ".spec.targetResource"),
            ("Engine", ".status.executionEngine"),
            ("Reason", ".status.conditions[?(@.type==\"Ready\")].reason"),
            ("Duration", ".status.duration"),
            ("Age", ".metadata.creationTimestamp"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, p)| ((*n).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(columns, want);
    }

    #[test]
    fn crd_carries_the_admission_rules() {
        let spec = spec_schema();
        assert_eq!(rules(&spec), vec!["self == oldSelf"]);
        let props = &spec["properties"];
        assert_eq!(rules(&props["targetResource"]), vec![TARGET_RESOURCE_RULE]);
        assert_eq!(props["targetResource"]["maxLength"], json!(1024));
        assert_eq!(
            rules(&props["parameters"]),
            vec![
                PARAMETER_NAMES_RULE,
                RESERVED_PARAMETER_RULE,
                PARAMETER_NAME_LENGTH_RULE,
                PARAMETERS_SIZE_RULE
            ]
        );
        assert_eq!(props["parameters"]["maxProperties"], json!(MAX_PARAMETERS));
        assert_eq!(
            props["executionEngine"]["pattern"],
            json!("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        );
        assert_eq!(props["executionEngine"]["maxLength"], json!(63));
        assert_eq!(
            props["parameters"]["additionalProperties"],
            json!({"type": "string", "maxLength": MAX_PARAMETER_VALUE_LENGTH})
        );
        // The CEL rules spell the bounds out; they must be the constants' values.
        assert!(PARAMETER_NAME_LENGTH_RULE.ends_with(&format!("<= {MAX_PARAMETER_NAME_LENGTH})")));
        assert!(PARAMETERS_SIZE_RULE.ends_with(&format!("<= {MAX_PARAMETERS_SIZE}")));
        assert_eq!(
            rules(&props["confidence"]),
            vec!["self >= 0.0 && self <= 1.0"]
        );
        assert_eq!(
            rules(&props["workflowRef"]["properties"]["workflowId"]),
            vec!["size(self) > 0"]
        );
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(required, vec!["targetResource", "workflowRef"]);
    }

    #[test]
    fn conditions_are_a_list_map_keyed_by_type() {
        let crd = serde_json::to_value(crd()).unwrap();
        let conditions = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], json!("map"));
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }

    #[test]
    fn enums_serialise_as_the_contract_spells_them() {
        let phases: Vec<String> = Phase::ALL
            .iter()
            .map(|p| {
                serde_json::to_value(p)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            phases,
            ["Pending", "Running", "Completed", "Failed", "Skipped"]
        );
        for reason in FailureReason::ALL {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
            assert_eq!(FailureReason::from_name(reason.as_str()), Some(reason));
        }
        for reason in SkipReason::ALL {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
        }
        assert_eq!(FailureReason::from_name("oomkilled"), None);
    }

    #[test]
    fn status_round_trips_in_camel_case() {
        let status = json!({
            "phase": "Failed",
            "observedGeneration": 1,
            "startTime": "2025-01-01T00:00:00Z",
            "completionTime": "2025-01-01T00:02:30Z",
            "duration": "2m30s",
            "pipelineRunRef": {"name": "wfe-f3457dcc8fbcb6d9", "namespace": "kubernaut-workflows"},
            "pipelineRunStatus": {"status": "False", "reason": "Failed", "message": "m", "completedTasks": 1, "totalTasks": 1},
            "failureDetails": {
                "reason": "OOMKilled", "message": "m", "failedTaskName": "t", "failedTaskIndex": 0,
                "failedStepName": "s", "exitCode": 137, "failedAt": "2025-01-01T00:02:30Z",
                "executionTimeBeforeFailure": "2m30s", "wasExecutionFailure": true,
                "naturalLanguageSummary": "x"
            },
            "consecutiveFailures": 0,
            "blockClearance": {"clearedAt": "2025-01-01T01:00:00Z", "clearReason": "fixed"},
            "templateRevision": "0123456789abcdef"
        });
        let parsed: WorkflowExecutionStatus = serde_json::from_value(status.clone()).unwrap();
        assert_eq!(parsed.phase, Some(Phase::Failed));
        assert_eq!(
            parsed.failure_details.as_ref().map(|d| d.reason),
            Some(FailureReason::OomKilled)
        );
        assert_eq!(serde_json::to_value(&parsed).unwrap(), status);
    }

    #[test]
    fn phase_transitions_only_move_forward() {
        for phase in Phase::ALL {
            assert_eq!(
                phase.is_terminal(),
                phase.allowed_transitions().is_empty(),
                "{phase}"
            );
            assert!(
                !phase.allowed_transitions().contains(&Phase::Pending),
                "{phase}"
            );
        }
    }

    #[test]
    fn checked_in_crd_is_up_to_date() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(CRD_FILE);
        let generated = crd_yaml().unwrap();
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "{CRD_FILE} differs from the CRD generated from src/types.rs; regenerate it with\n  \
             cargo run -p workflowexecution-operator -- crd > {CRD_FILE}\n\
             (or UPDATE_GOLDEN=1 cargo test -p workflowexecution-operator)"
        );
    }
}
