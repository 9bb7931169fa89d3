//! Runtime validation of a WorkflowExecution spec (step 1 of the Pending decision chain).
//!
//! The API server already enforces the CRD's CEL rules at admission; this is the runtime copy of
//! the same rules, plus the checks only the operator can make (its config's service-account
//! allowlist, the timeout's syntax). A WFE that fails here ends `Failed` with reason
//! `ConfigurationError`, pre-execution, and the message names the field.
//!
//! Guarantees:
//! 1. Every rule of the CRD ([`crate::types`]) is checked again: `targetResource` has 2 or 3
//!    non-empty `/`-separated parts and at most [`MAX_TARGET_RESOURCE_LENGTH`] characters,
//!    parameter names follow Tekton's rule, `workflowRef.workflowId` is not empty, `confidence`
//!    is within 0..1, and no parameter is named [`TARGET_RESOURCE_PARAM`].
//! 2. `executionConfig.timeout`, when set, is a positive Go duration (what Tekton accepts).
//! 3. `executionConfig.serviceAccountName`, when set, is the configured default or listed in
//!    `execution.allowedServiceAccounts`: a WFE author cannot pick a more privileged account.
//! 4. All problems are reported, each naming its field in the spec's own spelling
//!    (`spec.parameters["1bad"]: ...`); user-supplied text is quoted with escapes, so a hostile
//!    value cannot forge lines or fields in the message.
//!
//! Caveats:
//! 1. `workflowRef.containerImage` must not be empty here although admission only requires the
//!    key: an empty bundle reference can only fail later, with a vaguer message.
use std::fmt;
use std::time::Duration;

use crate::config::ExecutionSettings;
use crate::duration::{GoDurationError, parse_go_duration};
use crate::types::{MAX_TARGET_RESOURCE_LENGTH, WorkflowExecutionSpec};

/// The parameter the operator adds to every PipelineRun; a spec may not set it.
pub const TARGET_RESOURCE_PARAM: &str = "TARGET_RESOURCE";

/// One problem with a spec.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// `workflowRef.workflowId` is empty.
    #[error("spec.workflowRef.workflowId: must not be empty")]
    EmptyWorkflowId,
    /// `workflowRef.containerImage` is empty.
    #[error("spec.workflowRef.containerImage: must not be empty (an OCI Tekton bundle reference)")]
    EmptyContainerImage,
    /// `targetResource` is not `namespace/kind/name` or `kind/name`.
    #[error(
        "spec.targetResource: {value:?} must be namespace/kind/name or kind/name (2 or 3 non-empty '/'-separated parts)"
    )]
    TargetResourceShape {
        /// The value given.
        value: String,
    },
    /// `targetResource` is longer than the CRD allows.
    #[error(
        "spec.targetResource: {length} characters, at most {MAX_TARGET_RESOURCE_LENGTH} allowed"
    )]
    TargetResourceTooLong {
        /// Its length in characters.
        length: usize,
    },
    /// A parameter name is not a valid Tekton parameter name.
    #[error(
        "spec.parameters[{name:?}]: invalid parameter name: must start with a letter or '_' and contain only letters, digits, '_', '-' and '.'"
    )]
    ParameterName {
        /// The name given.
        name: String,
    },
    /// A parameter uses the name the operator reserves.
    #[error(
        "spec.parameters[{name:?}]: reserved: the operator sets {TARGET_RESOURCE_PARAM} from spec.targetResource"
    )]
    ReservedParameter {
        /// The name given.
        name: String,
    },
    /// `confidence` is outside 0..1.
    #[error("spec.confidence: {value} must be between 0 and 1")]
    Confidence {
        /// The value given.
        value: f64,
    },
    /// `executionConfig.timeout` is not a positive Go duration.
    #[error("spec.executionConfig.timeout: {reason}")]
    Timeout {
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: TimeoutError,
    },
    /// `executionConfig.serviceAccountName` is not allowed by the operator's configuration.
    #[error(
        "spec.executionConfig.serviceAccountName: {name:?} is not allowed (the operator config's execution.allowedServiceAccounts does not list it)"
    )]
    ServiceAccountNotAllowed {
        /// The account requested.
        name: String,
    },
}

/// Why a timeout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeoutError {
    /// Not a Go duration.
    #[error(transparent)]
    Syntax(#[from] GoDurationError),
    /// Zero: Tekton would read it as "no timeout".
    #[error("must be longer than 0s")]
    Zero,
}

impl SpecError {
    /// The field the error is about, in the spec's own spelling.
    pub fn field(&self) -> String {
        match self {
            SpecError::EmptyWorkflowId => "spec.workflowRef.workflowId".to_owned(),
            SpecError::EmptyContainerImage => "spec.workflowRef.containerImage".to_owned(),
            SpecError::TargetResourceShape { .. } | SpecError::TargetResourceTooLong { .. } => {
                "spec.targetResource".to_owned()
            }
            SpecError::ParameterName { name } | SpecError::ReservedParameter { name } => {
                format!("spec.parameters[{name:?}]")
            }
            SpecError::Confidence { .. } => "spec.confidence".to_owned(),
            SpecError::Timeout { .. } => "spec.executionConfig.timeout".to_owned(),
            SpecError::ServiceAccountNotAllowed { .. } => {
                "spec.executionConfig.serviceAccountName".to_owned()
            }
        }
    }
}

/// Every problem found in a spec (never empty).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationErrors(pub Vec<SpecError>);

impl ValidationErrors {
    /// The problems, in field order.
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Whether `target` is `namespace/kind/name` or `kind/name` with every part non-empty.
pub fn is_valid_target_resource(target: &str) -> bool {
    let parts: Vec<&str> = target.split('/').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty())
}

/// Whether `name` is a valid Tekton parameter name: ASCII letters, digits, `_`, `-`, `.`,
/// starting with a letter or `_`.
pub fn is_valid_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Parses a WFE timeout: a positive Go duration.
pub fn parse_timeout(value: &str) -> Result<Duration, TimeoutError> {
    let timeout = parse_go_duration(value)?;
    if timeout.is_zero() {
        return Err(TimeoutError::Zero);
    }
    Ok(timeout)
}

/// Checks a spec against the admission rules and the operator's execution settings.
pub fn validate_spec(
    spec: &WorkflowExecutionSpec,
    execution: &ExecutionSettings,
) -> Result<(), ValidationErrors> {
    let mut errors = Vec::new();
    if spec.workflow_ref.workflow_id.is_empty() {
        errors.push(SpecError::EmptyWorkflowId);
    }
    if spec.workflow_ref.container_image.is_empty() {
        errors.push(SpecError::EmptyContainerImage);
    }
    let target = &spec.target_resource;
    let length = target.chars().count();
    if length > MAX_TARGET_RESOURCE_LENGTH {
        errors.push(SpecError::TargetResourceTooLong { length });
    } else if !is_valid_target_resource(target) {
        errors.push(SpecError::TargetResourceShape {
            value: target.clone(),
        });
    }
    for name in spec.parameters.keys() {
        if !is_valid_param_name(name) {
            errors.push(SpecError::ParameterName { name: name.clone() });
        } else if name == TARGET_RESOURCE_PARAM {
            errors.push(SpecError::ReservedParameter { name: name.clone() });
        }
    }
    if let Some(value) = spec.confidence
        && !(0.0..=1.0).contains(&value)
    {
        errors.push(SpecError::Confidence { value });
    }
    if let Some(config) = &spec.execution_config {
        if let Some(timeout) = &config.timeout
            && let Err(reason) = parse_timeout(timeout)
        {
            errors.push(SpecError::Timeout {
                value: timeout.clone(),
                reason,
            });
        }
        if let Some(account) = &config.service_account_name
            && account != &execution.service_account_name
            && !execution.allowed_service_accounts.contains(account)
        {
            errors.push(SpecError::ServiceAccountNotAllowed {
                name: account.clone(),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExecutionConfig, WorkflowRef};
    use std::collections::BTreeMap;

    fn spec() -> WorkflowExecutionSpec {
        WorkflowExecutionSpec {
            workflow_ref: WorkflowRef {
                workflow_id: "restart-pod".to_owned(),
                version: "1.0.0".to_owned(),
                container_image: "quay.io/kubernaut/workflows:restart-pod-v1".to_owned(),
                container_digest: None,
            },
            target_resource: "default/deployment/nginx".to_owned(),
            parameters: BTreeMap::new(),
            confidence: Some(0.9),
            rationale: None,
            remediation_request_ref: None,
            execution_config: None,
        }
    }

    fn with_target(target: &str) -> WorkflowExecutionSpec {
        WorkflowExecutionSpec {
            target_resource: target.to_owned(),
            ..spec()
        }
    }

    fn with_param(name: &str, value: &str) -> WorkflowExecutionSpec {
        let mut s = spec();
        s.parameters.insert(name.to_owned(), value.to_owned());
        s
    }

    fn with_exec(timeout: Option<&str>, account: Option<&str>) -> WorkflowExecutionSpec {
        WorkflowExecutionSpec {
            execution_config: Some(ExecutionConfig {
                timeout: timeout.map(str::to_owned),
                service_account_name: account.map(str::to_owned),
            }),
            ..spec()
        }
    }

    fn settings() -> ExecutionSettings {
        ExecutionSettings {
            allowed_service_accounts: vec!["remediator-elevated".to_owned()],
            ..ExecutionSettings::default()
        }
    }

    #[test]
    fn valid_specs_pass() {
        let long_value = "x".repeat(100_000);
        let cases: Vec<(&str, WorkflowExecutionSpec)> = vec![
            ("namespaced target", spec()),
            ("cluster-scoped target", with_target("node/worker-node-1")),
            ("spaces are parts too", with_target(" / / ")),
            (
                "unicode target",
                with_target("d\u{e9}faut/deployment/\u{1f680}"),
            ),
            ("underscore param", with_param("_x", "1")),
            ("dotted param", with_param("a.b-c_D9", "v")),
            (
                "unicode value",
                with_param("msg", "h\u{e9}llo \u{202e} \u{0}\n{{ x }}"),
            ),
            ("long value", with_param("big", &long_value)),
            ("timeout", with_exec(Some("1h30m"), None)),
            ("fractional timeout", with_exec(Some("1.5h"), None)),
            (
                "allowed account",
                with_exec(None, Some("remediator-elevated")),
            ),
            (
                "default account",
                with_exec(None, Some("kubernaut-workflow-runner")),
            ),
            (
                "no confidence",
                WorkflowExecutionSpec {
                    confidence: None,
                    ..spec()
                },
            ),
            (
                "confidence 0",
                WorkflowExecutionSpec {
                    confidence: Some(0.0),
                    ..spec()
                },
            ),
            (
                "confidence 1",
                WorkflowExecutionSpec {
                    confidence: Some(1.0),
                    ..spec()
                },
            ),
        ];
        for (name, spec) in cases {
            assert_eq!(validate_spec(&spec, &settings()), Ok(()), "{name}");
        }
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let long_target = format!("ns/kind/{}", "n".repeat(MAX_TARGET_RESOURCE_LENGTH));
        let cases: Vec<(WorkflowExecutionSpec, &str, &str)> = vec![
            (with_target(""), "spec.targetResource", "\"\""),
            (with_target("nginx"), "spec.targetResource", "\"nginx\""),
            (with_target("a/b/c/d"), "spec.targetResource", "2 or 3"),
            (
                with_target("/deployment/nginx"),
                "spec.targetResource",
                "non-empty",
            ),
            (
                with_target("default//nginx"),
                "spec.targetResource",
                "non-empty",
            ),
            (
                with_target("default/deployment/"),
                "spec.targetResource",
                "non-empty",
            ),
            (
                with_target("../../etc/passwd"),
                "spec.targetResource",
                "passwd",
            ),
            (with_target("a/b\n/c/d"), "spec.targetResource", "\\n"),
            (
                with_target(&long_target),
                "spec.targetResource",
                "at most 1024",
            ),
            (
                with_param("1bad", "v"),
                "spec.parameters[\"1bad\"]",
                "invalid parameter name",
            ),
            (
                with_param("", "v"),
                "spec.parameters[\"\"]",
                "invalid parameter name",
            ),
            (
                with_param("-x", "v"),
                "spec.parameters[\"-x\"]",
                "invalid parameter name",
            ),
            (
                with_param("a b", "v"),
                "spec.parameters[\"a b\"]",
                "invalid parameter name",
            ),
            (
                with_param("a/b", "v"),
                "spec.parameters[\"a/b\"]",
                "invalid parameter name",
            ),
            (
                with_param("caf\u{e9}", "v"),
                "spec.parameters[\"caf\u{e9}\"]",
                "invalid",
            ),
            (
                with_param("a\nkey: injected", "v"),
                "spec.parameters[\"a\\nkey: injected\"]",
                "invalid parameter name",
            ),
            (
                with_param("{{x}}", "v"),
                "spec.parameters[\"{{x}}\"]",
                "invalid parameter name",
            ),
            (
                with_param("TARGET_RESOURCE", "v"),
                "spec.parameters[\"TARGET_RESOURCE\"]",
                "reserved",
            ),
            (
                WorkflowExecutionSpec {
                    confidence: Some(1.5),
                    ..spec()
                },
                "spec.confidence",
                "between 0 and 1",
            ),
            (
                WorkflowExecutionSpec {
                    confidence: Some(-0.1),
                    ..spec()
                },
                "spec.confidence",
                "between 0 and 1",
            ),
            (
                WorkflowExecutionSpec {
                    confidence: Some(f64::NAN),
                    ..spec()
                },
                "spec.confidence",
                "between 0 and 1",
            ),
            (
                with_exec(Some("5 minutes"), None),
                "spec.executionConfig.timeout",
                "unit",
            ),
            (
                with_exec(Some("-5m"), None),
                "spec.executionConfig.timeout",
                "negative",
            ),
            (
                with_exec(Some("0"), None),
                "spec.executionConfig.timeout",
                "longer than 0s",
            ),
            (
                with_exec(Some(""), None),
                "spec.executionConfig.timeout",
                "empty",
            ),
            (
                with_exec(None, Some("cluster-admin")),
                "spec.executionConfig.serviceAccountName",
                "\"cluster-admin\" is not allowed",
            ),
            (
                WorkflowExecutionSpec {
                    workflow_ref: WorkflowRef {
                        workflow_id: String::new(),
                        ..spec().workflow_ref
                    },
                    ..spec()
                },
                "spec.workflowRef.workflowId",
                "must not be empty",
            ),
            (
                WorkflowExecutionSpec {
                    workflow_ref: WorkflowRef {
                        container_image: String::new(),
                        ..spec().workflow_ref
                    },
                    ..spec()
                },
                "spec.workflowRef.containerImage",
                "must not be empty",
            ),
        ];
        for (spec, field, fragment) in cases {
            let errors = validate_spec(&spec, &settings()).expect_err(field);
            assert_eq!(errors.errors().len(), 1, "{errors}");
            let error = &errors.errors()[0];
            assert_eq!(error.field(), field);
            let message = error.to_string();
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
            assert!(message.contains(fragment), "{message} lacks {fragment}");
            assert!(!message.contains('\n'), "{message:?} spans lines");
        }
    }

    #[test]
    fn every_problem_is_reported() {
        let mut s = with_target("bad");
        s.parameters.insert("1bad".to_owned(), "v".to_owned());
        s.parameters.insert("2bad".to_owned(), "v".to_owned());
        s.confidence = Some(7.0);
        let errors = validate_spec(&s, &settings()).unwrap_err();
        let fields: Vec<String> = errors.errors().iter().map(SpecError::field).collect();
        assert_eq!(
            fields,
            [
                "spec.targetResource",
                "spec.parameters[\"1bad\"]",
                "spec.parameters[\"2bad\"]",
                "spec.confidence"
            ]
        );
        assert_eq!(errors.to_string().matches("; ").count(), 3);
    }

    #[test]
    fn empty_allowlist_allows_only_the_default_account() {
        let defaults = ExecutionSettings::default();
        assert!(validate_spec(&with_exec(None, Some("remediator-elevated")), &defaults).is_err());
        assert!(
            validate_spec(
                &with_exec(None, Some("kubernaut-workflow-runner")),
                &defaults
            )
            .is_ok()
        );
    }

    #[test]
    fn runtime_rules_agree_with_the_cel_regexes() {
        // The CEL rules use RE2 regexes; these cases pin the Rust copies to the same language.
        let targets: &[(&str, bool)] = &[
            ("a/b", true),
            ("a/b/c", true),
            ("a", false),
            ("a/b/c/d", false),
            ("a//c", false),
            ("/b", false),
            ("b/", false),
        ];
        for (target, valid) in targets {
            assert_eq!(is_valid_target_resource(target), *valid, "{target:?}");
        }
        let params: &[(&str, bool)] = &[
            ("a", true),
            ("_", true),
            ("A1.b-c_", true),
            ("1", false),
            (".a", false),
            ("a!", false),
            ("\u{e9}", false),
        ];
        for (name, valid) in params {
            assert_eq!(is_valid_param_name(name), *valid, "{name:?}");
        }
    }
}
