//! Runtime validation of a WorkflowExecution spec (step 1 of the Pending decision chain).
//!
//! The API server already enforces the CRD's CEL rules at admission; this is the runtime copy of
//! the same rules, plus the checks only the operator can make (its config's bundle and
//! service-account allowlists, the timeout's syntax and maximum, the parameters' stored size). A
//! WFE that fails here ends `Failed` with reason `ConfigurationError`, pre-execution, before any
//! PipelineRun exists, and the message names the field.
//!
//! Guarantees:
//! 1. Every rule of the CRD ([`crate::types`]) is checked again: `targetResource` has 2 or 3
//!    non-empty `/`-separated parts and at most [`MAX_TARGET_RESOURCE_LENGTH`] characters,
//!    parameter names follow Tekton's rule, `workflowRef.workflowId` is not empty, `confidence`
//!    is within 0..1, no parameter is named [`TARGET_RESOURCE_PARAM`], and the parameters are
//!    bounded: at most [`MAX_PARAMETERS`] of them, names of at most [`MAX_PARAMETER_NAME_LENGTH`]
//!    characters, values of at most [`MAX_PARAMETER_VALUE_LENGTH`] characters, at most
//!    [`MAX_PARAMETERS_SIZE`] characters in all.
//! 2. The parameters fit the PipelineRun: their size *as the API server stores them*
//!    ([`json_stored_size`](kubernaut_framework::validate::json_stored_size): JSON with Go's escapes, where `"` takes 2 bytes and `<` or a control
//!    character 6) is at most [`MAX_STORED_PARAMETERS_BYTES`]. The shipped template adds a few
//!    hundred bytes to that, so the PipelineRun stays below etcd's request limit (1.5 MiB, the
//!    first size limit an object meets at the API server) with room for the status Tekton writes
//!    into it.
//! 3. `workflowRef.containerDigest`, when set, is `sha256:` and 64 lowercase hexadecimal
//!    characters, and the reference that is actually pulled ([`crate::bundle::pulled_reference`]:
//!    `containerImage`, or its repository `@` the digest) matches one of
//!    `execution.allowedBundles` (globs): an admin decides *what* may run, not only as whom.
//! 4. `executionConfig.timeout`, when set, is a positive Go duration (what Tekton accepts) and at
//!    most `execution.maxTimeout`.
//! 5. `executionConfig.serviceAccountName`, when set, is the configured default or listed in
//!    `execution.allowedServiceAccounts`: a WFE author cannot pick a more privileged account.
//! 6. All problems are reported, each naming its field in the spec's own spelling
//!    (`spec.parameters["1bad"]: ...`); user-supplied text is quoted with escapes (and a
//!    parameter name too long to show is shortened), so a hostile value cannot forge lines or
//!    fields in the message, nor make it huge.
//!
//! Caveats:
//! 1. `workflowRef.containerImage` must not be empty here although admission only requires the
//!    key: an empty bundle reference can only fail later, with a vaguer message.
//! 2. The size bound is on the spec, not on the rendered PipelineRun: a template that copies the
//!    parameters several times can still render a run the API server refuses; the reconciler
//!    maps that refusal (400/413/422, or a 500 saying the object is too large to store) to
//!    `ConfigurationError` too.
use crate::bundle::{BundleRefError, DIGEST_PATTERN, is_valid_digest, pulled_reference};
use crate::config::ExecutionSettings;
use crate::types::{
    MAX_PARAMETER_NAME_LENGTH, MAX_PARAMETER_VALUE_LENGTH, MAX_PARAMETERS, MAX_PARAMETERS_SIZE,
    MAX_TARGET_RESOURCE_LENGTH, WorkflowExecutionSpec,
};
use kubernaut_framework::validate::{
    FieldErrors, MapBounds, map_key_field, parse_bounded_go_duration,
};

/// The parameter the operator adds to every PipelineRun; a spec may not set it.
pub const TARGET_RESOURCE_PARAM: &str = "TARGET_RESOURCE";
/// The most bytes all parameter names and values may take as the API server stores them
/// ([`json_stored_size`](kubernaut_framework::validate::json_stored_size)): 1 MiB, a third below
/// etcd's default request limit of 1.5 MiB — the first limit a growing object meets (then the
/// API server's etcd client's 2 MiB send limit, then its 3 MiB request-body limit; see
/// docs/configuration.md).
pub const MAX_STORED_PARAMETERS_BYTES: usize = 1024 * 1024;

/// The bounds of `spec.parameters`.
pub const PARAMETER_BOUNDS: MapBounds = MapBounds {
    noun: "parameters",
    max_entries: MAX_PARAMETERS,
    max_key_length: MAX_PARAMETER_NAME_LENGTH,
    max_value_length: MAX_PARAMETER_VALUE_LENGTH,
    max_total_length: MAX_PARAMETERS_SIZE,
    max_stored_bytes: MAX_STORED_PARAMETERS_BYTES,
    too_large: "the PipelineRun would not fit the API server's request limit",
};

const WORKFLOW_ID: &str = "spec.workflowRef.workflowId";
const CONTAINER_IMAGE: &str = "spec.workflowRef.containerImage";
const TARGET_RESOURCE: &str = "spec.targetResource";
const PARAMETERS: &str = "spec.parameters";

/// Whether `target` is `namespace/kind/name` or `kind/name` with every part non-empty.
pub use kubernaut_framework::names::is_target_resource as is_valid_target_resource;

/// Whether `name` is a valid Tekton parameter name: ASCII letters, digits, `_`, `-`, `.`,
/// starting with a letter or `_`.
pub fn is_valid_param_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The bundle: a non-empty image, a well-formed digest if any, and the reference that will be
/// pulled allowed by `execution.allowedBundles`.
fn check_bundle(
    spec: &WorkflowExecutionSpec,
    execution: &ExecutionSettings,
    errors: &mut FieldErrors,
) {
    let image = &spec.workflow_ref.container_image;
    let digest = spec.workflow_ref.container_digest.as_deref();
    if let Some(value) = digest.filter(|d| !is_valid_digest(d)) {
        errors.push(
            "spec.workflowRef.containerDigest",
            format!("{value:?} is not a sha256 digest (must match {DIGEST_PATTERN})"),
        );
    }
    if image.is_empty() {
        errors.push(
            CONTAINER_IMAGE,
            "must not be empty (an OCI Tekton bundle reference)",
        );
        return;
    }
    match pulled_reference(image, digest) {
        Ok(pulled) if !execution.allows_bundle(&pulled) => errors.push(
            CONTAINER_IMAGE,
            format!(
                "{pulled:?} is not allowed (the operator config's execution.allowedBundles is {:?})",
                execution.allowed_bundles
            ),
        ),
        Ok(_) | Err(BundleRefError::Digest { .. }) => {}
        Err(BundleRefError::NoRepository { image }) => errors.push(
            CONTAINER_IMAGE,
            format!("{image:?} names no repository to pull spec.workflowRef.containerDigest from"),
        ),
    }
}

/// `targetResource`'s length and shape, and the parameters' names and bounds.
fn check_target_and_parameters(spec: &WorkflowExecutionSpec, errors: &mut FieldErrors) {
    let target = &spec.target_resource;
    let length = target.chars().count();
    if length > MAX_TARGET_RESOURCE_LENGTH {
        let message = format!("{length} characters, at most {MAX_TARGET_RESOURCE_LENGTH} allowed");
        errors.push(TARGET_RESOURCE, message);
    } else if !is_valid_target_resource(target) {
        errors.push(
            TARGET_RESOURCE,
            format!(
                "{target:?} must be namespace/kind/name or kind/name (2 or 3 non-empty '/'-separated parts)"
            ),
        );
    }
    for name in spec.parameters.keys() {
        if !is_valid_param_name(name) {
            errors.push(
                map_key_field(PARAMETERS, name),
                "invalid parameter name: must start with a letter or '_' and contain only letters, digits, '_', '-' and '.'",
            );
        } else if name == TARGET_RESOURCE_PARAM {
            errors.push(
                map_key_field(PARAMETERS, name),
                format!(
                    "reserved: the operator sets {TARGET_RESOURCE_PARAM} from spec.targetResource"
                ),
            );
        }
    }
    PARAMETER_BOUNDS.check(PARAMETERS, &spec.parameters, errors);
}

/// Checks a spec against the admission rules and the operator's execution settings.
///
/// # Errors
/// Every problem, each naming its field.
pub fn validate_spec(
    spec: &WorkflowExecutionSpec,
    execution: &ExecutionSettings,
) -> Result<(), FieldErrors> {
    let mut errors = FieldErrors::new();
    if spec.workflow_ref.workflow_id.is_empty() {
        errors.push(WORKFLOW_ID, "must not be empty");
    }
    check_bundle(spec, execution, &mut errors);
    check_target_and_parameters(spec, &mut errors);
    if let Some(value) = spec.confidence
        && !(0.0..=1.0).contains(&value)
    {
        errors.push(
            "spec.confidence",
            format!("{value} must be between 0 and 1"),
        );
    }
    let config = spec.execution_config.as_ref();
    if let Some(timeout) = config.and_then(|c| c.timeout.as_deref())
        && let Err(reason) =
            parse_bounded_go_duration(timeout, execution.max_timeout, "execution.maxTimeout")
    {
        errors.push("spec.executionConfig.timeout", reason.to_string());
    }
    if let Some(account) = config.and_then(|c| c.service_account_name.as_ref())
        && account != &execution.service_account_name
        && !execution.allowed_service_accounts.contains(account)
    {
        errors.push(
            "spec.executionConfig.serviceAccountName",
            format!(
                "{account:?} is not allowed (the operator config's execution.allowedServiceAccounts does not list it)"
            ),
        );
    }
    if let Some(engine) = &spec.execution_engine
        && !execution.engines.contains(engine)
    {
        errors.push(
            "spec.executionEngine",
            format!(
                "{engine:?} is not a configured engine (the operator config's execution.engines lists {})",
                execution.engines.join(", ")
            ),
        );
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ExecutionConfig, WorkflowRef};
    use kubernaut_framework::validate::FieldError;
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
            execution_engine: None,
        }
    }

    #[test]
    fn an_engine_the_operator_does_not_run_is_refused_naming_the_field_and_the_engines() {
        let execution = ExecutionSettings {
            engines: vec!["tekton".to_owned(), "job".to_owned()],
            ..ExecutionSettings::default()
        };
        let ask = |engine: Option<&str>| WorkflowExecutionSpec {
            execution_engine: engine.map(str::to_owned),
            ..spec()
        };
        assert_eq!(validate_spec(&ask(None), &execution), Ok(()));
        assert_eq!(validate_spec(&ask(Some("job")), &execution), Ok(()));
        let errors = validate_spec(&ask(Some("argo")), &execution).unwrap_err();
        assert_eq!(errors.errors().len(), 1);
        assert_eq!(errors.errors()[0].field(), "spec.executionEngine");
        assert_eq!(
            errors.to_string(),
            "spec.executionEngine: \"argo\" is not a configured engine (the operator config's execution.engines lists tekton, job)"
        );
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
            execution_config: Some(Box::new(ExecutionConfig {
                timeout: timeout.map(str::to_owned),
                service_account_name: account.map(str::to_owned),
            })),
            ..spec()
        }
    }

    fn settings() -> ExecutionSettings {
        ExecutionSettings {
            allowed_service_accounts: vec!["remediator-elevated".to_owned()],
            ..ExecutionSettings::default()
        }
    }

    fn with_params(count: usize, value: &str) -> WorkflowExecutionSpec {
        let mut s = spec();
        for i in 0..count {
            s.parameters.insert(format!("p{i:03}"), value.to_owned());
        }
        s
    }

    fn with_bundle(image: &str) -> WorkflowExecutionSpec {
        WorkflowExecutionSpec {
            workflow_ref: WorkflowRef {
                container_image: image.to_owned(),
                ..spec().workflow_ref
            },
            ..spec()
        }
    }

    #[test]
    fn valid_specs_pass() {
        let long_value = "x".repeat(MAX_PARAMETER_VALUE_LENGTH);
        let long_name = format!("n{}", "x".repeat(MAX_PARAMETER_NAME_LENGTH - 1));
        let multibyte_value = "\u{1f680}".repeat(MAX_PARAMETER_VALUE_LENGTH);
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
            ("longest value", with_param("big", &long_value)),
            ("longest name", with_param(&long_name, "v")),
            ("most parameters", with_params(MAX_PARAMETERS, "v")),
            (
                "most characters in all",
                with_params(
                    MAX_PARAMETERS_SIZE / MAX_PARAMETER_VALUE_LENGTH - 1,
                    &long_value,
                ),
            ),
            (
                "multibyte characters count once (128 KiB of UTF-8)",
                with_param("emoji", &multibyte_value),
            ),
            ("timeout", with_exec(Some("1h30m"), None)),
            ("timeout at the maximum", with_exec(Some("24h"), None)),
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
                with_exec(Some("24h0m1s"), None),
                "spec.executionConfig.timeout",
                "24h0m1s is longer than the operator config's execution.maxTimeout (24h0m0s)",
            ),
            (
                with_exec(Some("1000h"), None),
                "spec.executionConfig.timeout",
                "execution.maxTimeout",
            ),
            (
                with_params(MAX_PARAMETERS + 1, "v"),
                "spec.parameters",
                "129 parameters, at most 128 allowed",
            ),
            (
                with_param(&format!("n{}", "x".repeat(MAX_PARAMETER_NAME_LENGTH)), "v"),
                "spec.parameters[\"nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…\"]",
                "the name has 129 characters, at most 128 allowed",
            ),
            (
                with_param("big", &"x".repeat(MAX_PARAMETER_VALUE_LENGTH + 1)),
                "spec.parameters[\"big\"]",
                "the value has 32769 characters, at most 32768 allowed",
            ),
            (
                with_params(
                    MAX_PARAMETERS_SIZE / MAX_PARAMETER_VALUE_LENGTH + 1,
                    &"x".repeat(MAX_PARAMETER_VALUE_LENGTH),
                ),
                "spec.parameters",
                "at most 1048576 allowed",
            ),
            (
                // 20 × 32768 quotes: 640 Ki characters, but 1.25 MiB JSON-escaped.
                with_params(20, &"\"".repeat(MAX_PARAMETER_VALUE_LENGTH)),
                "spec.parameters",
                "PipelineRun would not fit the API server's request limit",
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
    fn bundles_outside_the_allowlist_are_refused() {
        let restricted = ExecutionSettings {
            allowed_bundles: vec!["registry.example.com/kubernaut-workflows/*".to_owned()],
            ..ExecutionSettings::default()
        };
        let allowed = with_bundle("registry.example.com/kubernaut-workflows/restart:v1");
        assert_eq!(validate_spec(&allowed, &restricted), Ok(()));
        for image in [
            "registry.example.com/other/restart:v1",
            "evil.example.com/registry.example.com/kubernaut-workflows/x:v1",
            "registry.example.com/kubernaut-workflows",
        ] {
            let errors = validate_spec(&with_bundle(image), &restricted).expect_err(image);
            assert_eq!(errors.errors().len(), 1);
            let message = errors.to_string();
            assert_eq!(
                message,
                format!(
                    "spec.workflowRef.containerImage: {image:?} is not allowed (the operator config's execution.allowedBundles is {:?})",
                    restricted.allowed_bundles
                )
            );
            assert!(
                message.starts_with("spec.workflowRef.containerImage: "),
                "{message}"
            );
            assert!(message.contains("execution.allowedBundles"), "{message}");
            assert!(message.contains("kubernaut-workflows/*"), "{message}");
        }
    }

    fn with_digest(image: &str, digest: &str) -> WorkflowExecutionSpec {
        let mut s = with_bundle(image);
        s.workflow_ref.container_digest = Some(digest.to_owned());
        s
    }

    const DIGEST: &str = "sha256:9b2f4c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";

    #[test]
    fn the_allowlist_judges_the_reference_pulled_by_digest() {
        let restricted = ExecutionSettings {
            allowed_bundles: vec![
                "registry.example.com/kubernaut-workflows/*".to_owned(),
                "127.0.0.1:5000/pinned@sha256:*".to_owned(),
                "other.example.com/exact:v1".to_owned(),
            ],
            ..ExecutionSettings::default()
        };
        let cases = [
            // (image, pulled, allowed)
            (
                "registry.example.com/kubernaut-workflows/restart:v1",
                format!("registry.example.com/kubernaut-workflows/restart@{DIGEST}"),
                true,
            ),
            (
                "127.0.0.1:5000/pinned:v1",
                format!("127.0.0.1:5000/pinned@{DIGEST}"),
                true,
            ),
            // The tag is allowed, but with a digest the tag is not what runs.
            (
                "other.example.com/exact:v1",
                format!("other.example.com/exact@{DIGEST}"),
                false,
            ),
            (
                "registry.example.com/other/x:v1",
                format!("registry.example.com/other/x@{DIGEST}"),
                false,
            ),
        ];
        for (image, pulled, allowed) in cases {
            let result = validate_spec(&with_digest(image, DIGEST), &restricted);
            if allowed {
                assert_eq!(result, Ok(()), "{image}");
            } else {
                assert_eq!(
                    result.expect_err(image).to_string(),
                    format!(
                        "spec.workflowRef.containerImage: {pulled:?} is not allowed (the operator config's execution.allowedBundles is {:?})",
                        restricted.allowed_bundles
                    )
                );
            }
        }
        // Without a digest the image itself is judged.
        assert_eq!(
            validate_spec(&with_bundle("other.example.com/exact:v1"), &restricted),
            Ok(())
        );
        assert!(validate_spec(&with_bundle("127.0.0.1:5000/pinned:v1"), &restricted).is_err());
    }

    #[test]
    fn malformed_digests_and_repositoryless_images_name_their_field() {
        let defaults = ExecutionSettings::default();
        for digest in ["sha256:abc", &DIGEST.to_uppercase(), "md5:0", ""] {
            let errors = validate_spec(&with_digest("r.example.com/x:v1", digest), &defaults)
                .expect_err(digest);
            assert_eq!(errors.errors().len(), 1);
            let message = errors.to_string();
            assert_eq!(
                message,
                format!(
                    "spec.workflowRef.containerDigest: {digest:?} is not a sha256 digest (must match {DIGEST_PATTERN})"
                )
            );
            assert!(
                message.starts_with("spec.workflowRef.containerDigest: "),
                "{message}"
            );
            assert!(message.contains(DIGEST_PATTERN), "{message}");
        }
        let errors = validate_spec(&with_digest(":v1", DIGEST), &defaults).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "spec.workflowRef.containerImage: \":v1\" names no repository to pull spec.workflowRef.containerDigest from"
        );
        assert_eq!(
            errors.errors()[0].field(),
            "spec.workflowRef.containerImage"
        );
        let errors = validate_spec(&with_digest("", "bad"), &defaults).unwrap_err();
        let fields: Vec<&str> = errors.errors().iter().map(FieldError::field).collect();
        assert_eq!(
            fields,
            [
                "spec.workflowRef.containerDigest",
                "spec.workflowRef.containerImage"
            ]
        );
    }

    #[test]
    fn a_hostile_parameter_name_makes_no_huge_message() {
        let name = format!("1{}", "x".repeat(10_000));
        let errors = validate_spec(&with_param(&name, "v"), &settings()).unwrap_err();
        let message = errors.to_string();
        assert!(message.len() < 500, "{} bytes", message.len());
    }

    #[test]
    fn every_problem_is_reported() {
        let mut s = with_target("bad");
        s.parameters.insert("1bad".to_owned(), "v".to_owned());
        s.parameters.insert("2bad".to_owned(), "v".to_owned());
        s.confidence = Some(7.0);
        let errors = validate_spec(&s, &settings()).unwrap_err();
        let fields: Vec<&str> = errors.errors().iter().map(FieldError::field).collect();
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
        assert_eq!(
            crate::types::CONTAINER_DIGEST_RULE,
            format!("self.matches('{DIGEST_PATTERN}')")
        );
    }
}
