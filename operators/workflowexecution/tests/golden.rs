//! Golden tests: the `render` output of every sample WorkflowExecution in `config/samples/`, and
//! what the status mapping makes of every run real Tekton wrote in the end-to-end tier
//! (`tests/e2e/recorded/`, each stating the Tekton version that recorded it) and of the hand-written
//! fixtures of `tests/fixtures/pipelineruns/` for shapes no recording holds (each saying why).
//! The same per engine: the Job engine (`templates/workflowexecution/job/`) renders every sample
//! into `tests/golden/job/render/`, and maps every Job the real Job controller wrote in the
//! end-to-end tier (`tests/e2e/recorded/job/`) into `tests/golden/job/status/`.
//!
//! The expected outputs are checked in under `tests/golden/`; review changes to them in the diff.
//! Regenerate them with:
//!
//! ```text
//! UPDATE_GOLDEN=1 cargo test -p workflowexecution-operator --test golden
//! ```
#[path = "support/runs.rs"]
mod runs;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube::api::DynamicObject;
use kubernaut_framework::app::{AppConfig, OutputFormat, format_object};
use kubernaut_framework::status::StatusMapping;
use kubernaut_framework::status::grandchildren::whole;
use kubernaut_framework::template::{ChildKind, TemplateSet, apply_identity};
use serde_json::{Value, json};
use workflowexecution_operator::cli::read_workflow_execution;
use workflowexecution_operator::config::OperatorConfig;
use workflowexecution_operator::failure::{FailureContext, failure_details};
use workflowexecution_operator::pipelinerun::{pipeline_run_identity, project_cached};
use workflowexecution_operator::run_status::{RunPhase, observe_run};
use workflowexecution_operator::templates::{
    mapping_rules, sample_workflow_execution, template_context,
};
use workflowexecution_operator::testing::template_decl;
use workflowexecution_operator::types::{CRD_FILE, crd_yaml};
use workflowexecution_operator::validate::validate_spec;

use self::runs::{crate_dir, stem, yaml_files};

const REGENERATE: &str = "UPDATE_GOLDEN=1 cargo test -p workflowexecution-operator --test golden";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Compares `actual` with the golden file, or writes it when `UPDATE_GOLDEN` is set.
fn check_golden(golden: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(golden, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from the output:\n--- expected\n{expected}\n--- actual\n{actual}\n\
         If the change is intended, regenerate with\n  {REGENERATE}",
        golden.display()
    );
}

/// Runs the operator binary with no `WFE_…` variables from the caller's environment.
fn operator(args: &[&str]) -> Output {
    operator_with_env(args, &[])
}

/// Runs the operator binary with `env` as its only `WFE_…` variables.
fn operator_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_workflowexecution-operator"));
    command.args(args).current_dir(repo());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WFE_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn render(sample: &Path, format: &str) -> Output {
    operator(&[
        "render",
        "--wfe",
        sample.to_str().unwrap(),
        "--config",
        "config/workflowexecution.yaml",
        "--templates",
        "templates/workflowexecution",
        "-o",
        format,
    ])
}

fn is_invalid_sample(path: &Path) -> bool {
    stem(path).starts_with("invalid")
}

#[test]
fn render_samples_match_golden() {
    let samples = yaml_files(&repo().join("config/samples"));
    assert!(samples.iter().filter(|s| !is_invalid_sample(s)).count() >= 4);
    for sample in samples.iter().filter(|s| !is_invalid_sample(s)) {
        let out = render(sample, "yaml");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {stderr}", sample.display());
        let yaml = String::from_utf8(out.stdout).unwrap();
        check_golden(
            &crate_dir().join(format!("tests/golden/render/{}.yaml", stem(sample))),
            &yaml,
        );

        // JSON output is the same object.
        let out = render(sample, "json");
        assert!(out.status.success());
        let from_json: Value = serde_json::from_slice(&out.stdout).unwrap();
        let from_yaml: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(from_json, from_yaml, "{}", sample.display());
    }
}

/// `execution.bundleServiceAccount` adds the resolver's `serviceAccount` param; the sample pins a
/// digest, so its bundle is pulled by digest.
#[test]
fn render_with_a_bundle_service_account_matches_golden() {
    let sample = repo().join("config/samples/namespaced-deployment.yaml");
    let out = operator_with_env(
        &[
            "render",
            "--wfe",
            sample.to_str().unwrap(),
            "--config",
            "config/workflowexecution.yaml",
            "--templates",
            "templates/workflowexecution",
        ],
        &[(
            "WFE_EXECUTION__BUNDLESERVICEACCOUNT",
            "kubernaut-bundle-puller",
        )],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    check_golden(
        &crate_dir().join("tests/golden/render/bundle-service-account/namespaced-deployment.yaml"),
        &yaml,
    );
    let run: Value = serde_yaml::from_str(&yaml).unwrap();
    let params = &run["spec"]["pipelineRef"]["params"];
    assert_eq!(
        params[0]["value"],
        "registry.example.com/kubernaut-workflows/restart-deployment@sha256:9b2f4c1d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c"
    );
    assert_eq!(
        params[3],
        json!({"name": "serviceAccount", "value": "kubernaut-bundle-puller"})
    );
}

#[test]
fn rendered_parameters_are_byte_for_byte() {
    let sample = repo().join("config/samples/unicode-parameters.yaml");
    let wfe: Value = serde_yaml::from_str(&std::fs::read_to_string(&sample).unwrap()).unwrap();
    let out = render(&sample, "json");
    assert!(out.status.success());
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    let params: BTreeMap<String, Value> = run["spec"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["value"].clone()))
        .collect();
    for (name, value) in wfe["spec"]["parameters"].as_object().unwrap() {
        assert_eq!(params.get(name), Some(value), "parameter {name}");
    }
    assert_eq!(
        params.get("TARGET_RESOURCE"),
        Some(&json!("payment/deployment/payment-api"))
    );
}

#[test]
fn invalid_sample_is_refused_naming_every_field() {
    let samples = yaml_files(&repo().join("config/samples"));
    let invalid: Vec<&PathBuf> = samples.iter().filter(|s| is_invalid_sample(s)).collect();
    assert!(!invalid.is_empty());
    for sample in invalid {
        let out = render(sample, "yaml");
        assert_eq!(out.status.code(), Some(1), "{}", sample.display());
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        for field in [
            "spec.targetResource",
            "spec.parameters[\"1bad\"]",
            "spec.confidence",
            "spec.executionConfig.timeout",
        ] {
            assert!(
                stderr.contains(field),
                "{}: {stderr} lacks {field}",
                sample.display()
            );
        }
    }
}

#[test]
fn crd_command_prints_the_checked_in_crd() {
    let out = operator(&["crd"]);
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed, crd_yaml().unwrap());
    let checked_in = std::fs::read_to_string(repo().join(CRD_FILE)).unwrap();
    assert!(
        printed == checked_in,
        "{CRD_FILE} is stale; regenerate it with\n  \
         cargo run -p workflowexecution-operator -- crd > {CRD_FILE}"
    );
}

#[test]
fn check_config_exit_code_says() {
    let ok = operator(&[
        "check-config",
        "--config",
        "config/workflowexecution.yaml",
        "--templates",
        "templates/workflowexecution",
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let report = String::from_utf8_lossy(&ok.stdout);
    assert!(report.contains("templates: ok"), "{report}");
    // Every configured engine is loaded: its template, status mapping and cancel file.
    assert!(
        report.contains(
            "engine tekton: 'ok (tekton.dev/v1, Kind=PipelineRun: tekton/pipelinerun.yaml.j2, tekton/status.yaml, tekton/cancel.yaml)'"
        ),
        "{report}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad_config = dir.path().join("config.yaml");
    std::fs::write(&bad_config, "cooldown:\n  period: 5 parsecs\n").unwrap();
    let broken_templates = dir.path().join("templates");
    std::fs::create_dir_all(broken_templates.join("tekton")).unwrap();
    std::fs::write(
        broken_templates.join("tekton/pipelinerun.yaml.j2"),
        "apiVersion: tekton.dev/v1\nkind: PipelineRun\nspec: {{ wfe.spec.nope }}\n",
    )
    .unwrap();
    for file in ["status.yaml", "cancel.yaml"] {
        std::fs::copy(
            repo().join("templates/workflowexecution/tekton").join(file),
            broken_templates.join("tekton").join(file),
        )
        .unwrap();
    }
    let broken_mapping = dir.path().join("mapping");
    std::fs::create_dir_all(broken_mapping.join("tekton")).unwrap();
    std::fs::copy(
        repo().join("templates/workflowexecution/tekton/pipelinerun.yaml.j2"),
        broken_mapping.join("tekton/pipelinerun.yaml.j2"),
    )
    .unwrap();
    std::fs::write(
        broken_mapping.join("tekton/status.yaml"),
        "child: {apiVersion: tekton.dev/v1, kind: PipelineRun}\nphase:\n  - then: Exploded\n",
    )
    .unwrap();

    let broken_cancel = dir.path().join("cancel");
    std::fs::create_dir_all(broken_cancel.join("tekton")).unwrap();
    for file in ["pipelinerun.yaml.j2", "status.yaml"] {
        std::fs::copy(
            repo().join("templates/workflowexecution/tekton").join(file),
            broken_cancel.join("tekton").join(file),
        )
        .unwrap();
    }
    // Without a cancel file the operator refuses to start, as with any other missing file.
    let missing_cancel = dir.path().join("no-cancel");
    std::fs::create_dir_all(missing_cancel.join("tekton")).unwrap();
    for file in ["pipelinerun.yaml.j2", "status.yaml"] {
        std::fs::copy(
            broken_cancel.join("tekton").join(file),
            missing_cancel.join("tekton").join(file),
        )
        .unwrap();
    }
    let cancel =
        std::fs::read_to_string(repo().join("templates/workflowexecution/tekton/cancel.yaml"))
            .unwrap()
            .replace("status: CancelledRunFinally", "status: StoppedRunFinally");
    std::fs::write(broken_cancel.join("tekton/cancel.yaml"), cancel).unwrap();

    let cases: [(&[&str], &str); 6] = [
        (
            &[
                "check-config",
                "--config",
                bad_config.to_str().unwrap(),
                "--templates",
                "templates/workflowexecution",
            ],
            "cooldown.period",
        ),
        (
            &[
                "check-config",
                "--config",
                "config/workflowexecution.yaml",
                "--templates",
                broken_templates.to_str().unwrap(),
            ],
            "pipelinerun.yaml.j2",
        ),
        (
            &[
                "check-config",
                "--config",
                "config/workflowexecution.yaml",
                "--templates",
                broken_mapping.to_str().unwrap(),
            ],
            "status.yaml",
        ),
        (
            &[
                "check-config",
                "--config",
                "config/workflowexecution.yaml",
                "--templates",
                broken_cancel.to_str().unwrap(),
            ],
            "cancel.yaml: `alreadyCancelled`",
        ),
        (
            &[
                "check-config",
                "--config",
                "config/workflowexecution.yaml",
                "--templates",
                missing_cancel.to_str().unwrap(),
            ],
            "cancel.yaml: cannot read",
        ),
        (
            &[
                "check-config",
                "--config",
                "does/not/exist.yaml",
                "--templates",
                "templates/workflowexecution",
            ],
            "does/not/exist.yaml",
        ),
    ];
    for (args, mention) in cases {
        let out = operator(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(mention),
            "{args:?}: {stderr} lacks {mention}"
        );
    }
}

#[test]
fn version_names_the_program() {
    let out = operator(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        format!("workflowexecution-operator {}", env!("CARGO_PKG_VERSION"))
    );
}

/// One engine's status goldens: the runs its mapping is checked against and where their
/// goldens are.
struct StatusGoldens {
    /// The engine (its directory under `templates/workflowexecution/`).
    engine: &'static str,
    /// The runs (each with its grandchildren) read through the mapping.
    sources: Vec<runs::Source>,
    /// How many sources there are at least.
    at_least: usize,
    /// Where the goldens are, relative to the crate.
    golden_dir: &'static str,
    /// Whether the output says what holds the run back while it runs.
    held: bool,
}

/// What each engine's status mapping (loaded with the operator's rules) makes of every run
/// recorded from the real controller in the end-to-end tier (`make record-tekton`, the Job
/// recordings) and of every hand-written fixture matches its golden file: the phase, the
/// summary, for the Job engine what holds the run back while it runs, and the failure details
/// of a failed run (from the run and its grandchildren alone: nothing remembered). No golden
/// file is left without its source.
#[test]
fn status_mapping_of_recorded_and_hand_written_runs_matches_golden() {
    let engines = [
        StatusGoldens {
            engine: "tekton",
            sources: runs::recorded()
                .into_iter()
                .chain(runs::hand_written())
                .collect(),
            at_least: 12,
            golden_dir: "tests/golden/status",
            held: false,
        },
        StatusGoldens {
            engine: "job",
            sources: runs::recorded_jobs(),
            at_least: 6,
            golden_dir: "tests/golden/job/status",
            held: true,
        },
    ];
    for engine in engines {
        check_status_goldens(&engine);
    }
}

fn check_status_goldens(engine: &StatusGoldens) {
    let file = repo().join(format!(
        "templates/workflowexecution/{}/status.yaml",
        engine.engine
    ));
    let mapping = StatusMapping::load(&file, &mapping_rules()).unwrap();
    let context = FailureContext::new(
        &sample_workflow_execution(),
        &OperatorConfig::default().execution,
    );
    let now: jiff::Timestamp = "2025-06-01T12:00:00Z".parse().unwrap();
    let sources = &engine.sources;
    assert!(
        sources.len() >= engine.at_least,
        "{}: {} sources",
        engine.engine,
        sources.len()
    );
    let golden_dir = crate_dir().join(engine.golden_dir);
    let mut names = std::collections::BTreeSet::new();
    for source in sources {
        assert!(
            names.insert(source.name.clone()),
            "two sources named {}",
            source.name
        );
        let read = |run: &Value, task_runs: &BTreeMap<String, Value>| {
            let observed = observe_run(&mapping, run, Some(task_runs));
            let mut out = json!({
                "phase": observed.phase.as_str(),
                "pipelineRunStatus": observed.summary,
                "startTime": observed.start_time.map(|t| t.to_string()),
                "completionTime": observed.completion_time.map(|t| t.to_string()),
            });
            if engine.held
                && let Some(held) = mapping.first_held(run, task_runs)
            {
                out["held"] = json!({"result": held.result, "message": held.message});
            }
            if observed.phase == RunPhase::Failed {
                let details = failure_details(&mapping, &context, run, task_runs, now);
                out["failureDetails"] = serde_json::to_value(details).unwrap();
            }
            out
        };
        let out = read(&source.run, &source.task_runs);
        // The caches hold runs and their grandchildren projected on what the mapping reads: the
        // reading is the same.
        let (run, task_runs) = projected(&mapping, &source.run, &source.task_runs);
        assert_eq!(read(&run, &task_runs), out, "{}: projected", source.name);
        let text = format!(
            "# Generated from {} ({}); regenerate with {REGENERATE}\n{}",
            source.path,
            source.provenance,
            serde_yaml::to_string(&out).unwrap()
        );
        check_golden(&golden_dir.join(format!("{}.yaml", source.name)), &text);
    }
    for golden in yaml_files(&golden_dir) {
        if names.contains(&stem(&golden)) {
            continue;
        }
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::remove_file(&golden).unwrap();
        } else {
            panic!(
                "{} has no recording or fixture any more; regenerate with\n  {REGENERATE}",
                golden.display()
            );
        }
    }
}

/// `run` and its grandchildren as the operator's caches hold them: each projected on what
/// `mapping` reads, with its identity and the operator's labels and annotations.
fn projected(
    mapping: &StatusMapping,
    run: &Value,
    grandchildren: &BTreeMap<String, Value>,
) -> (Value, BTreeMap<String, Value>) {
    let decoded =
        |object: &Value| -> DynamicObject { serde_json::from_value(object.clone()).unwrap() };
    let mut child = decoded(run);
    project_cached(&mut child, &mapping.child_projection());
    let projection = mapping.grandchild_projection().unwrap_or_default();
    let grandchildren = grandchildren
        .iter()
        .map(|(name, object)| {
            let mut object = decoded(object);
            project_cached(&mut object, &projection);
            (name.clone(), whole(&object))
        })
        .collect();
    (whole(&child), grandchildren)
}

// ---------------------------------------------------------------------------------- Job engine

/// The Job engine's files (`templates/workflowexecution/job/`).
const JOB_TEMPLATE: &str = "job/job.yaml.j2";

fn job_kind() -> ChildKind {
    ChildKind {
        api_version: "batch/v1".to_owned(),
        kind: "Job".to_owned(),
    }
}

/// The Job engine's rendering of every valid sample in `config/samples/` under
/// `config/workflowexecution.yaml` matches `tests/golden/job/render/<sample>.yaml`: the template
/// with the operator's context, then the identity the operator stamps on every child.
#[test]
fn job_engine_render_of_samples_matches_golden() {
    let config = OperatorConfig::load(Some(&repo().join("config/workflowexecution.yaml"))).unwrap();
    let templates = TemplateSet::load(
        &repo().join("templates/workflowexecution"),
        &[template_decl(JOB_TEMPLATE, job_kind())],
    )
    .unwrap();
    let samples = yaml_files(&repo().join("config/samples"));
    let mut rendered = 0;
    for sample in samples.iter().filter(|s| !is_invalid_sample(s)) {
        let wfe = read_workflow_execution(sample).unwrap();
        validate_spec(&wfe.spec, &config.execution).unwrap();
        let mut job = templates
            .render(JOB_TEMPLATE, &template_context(&wfe, &config))
            .unwrap();
        apply_identity(
            &mut job,
            &pipeline_run_identity(&wfe, &config, templates.revision()),
        );
        check_golden(
            &crate_dir().join(format!("tests/golden/job/render/{}.yaml", stem(sample))),
            &format_object(&job, OutputFormat::Yaml).unwrap(),
        );
        rendered += 1;
    }
    assert!(rendered >= 4, "{rendered} samples");
}
