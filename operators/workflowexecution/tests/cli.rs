//! The command line as a user meets it: what `render`, `check-config` and `run` print on stdout
//! and stderr, and their exit codes. Runs the built binary with a clean environment.

#[path = "../../../framework/tests/support/yaml11.rs"]
mod yaml11;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn templates() -> PathBuf {
    repo().join("templates/workflowexecution")
}

/// Runs the binary with `args` and only the environment given (no stray `WFE_*` variables).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_workflowexecution-operator"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, content).unwrap();
    path
}

/// A copy of the shipped template directory with `edit` applied to `file`.
fn edited_templates(file: &str, edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["pipelinerun.yaml.j2", "status.yaml", "cancel.yaml"] {
        let text = std::fs::read_to_string(templates().join("tekton").join(name)).unwrap();
        let text = if name == file { edit(text) } else { text };
        write(dir.path(), &format!("tekton/{name}"), &text);
    }
    dir
}

fn wfe(parameters: &str) -> String {
    format!(
        "apiVersion: kubernaut.ai/v1alpha1\nkind: WorkflowExecution\nmetadata:\n  name: cli-test\nspec:\n  workflowRef:\n    workflowId: restart-deployment\n    version: 1.0.0\n    containerImage: registry.example.com/kubernaut-workflows/restart:v1\n  targetResource: default/deployment/nginx\n  parameters:\n{parameters}"
    )
}

/// Asserts a failure with exit code 1 whose stderr is one `error:` line containing each of
/// `fragments` exactly once.
fn assert_fails_once(out: &Output, fragments: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    for fragment in fragments {
        assert_eq!(
            err.matches(fragment).count(),
            1,
            "{fragment:?} once in: {err}"
        );
    }
}

#[test]
fn every_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.yaml", "cooldown:\n  period: 5 parsecs\n");
    let bad = bad.to_str().unwrap();
    let t = templates();
    let t = t.to_str().unwrap();
    let sample = repo().join("config/samples/namespaced-deployment.yaml");
    let sample = sample.to_str().unwrap();
    assert_fails_once(
        &run(&["check-config", "--config", bad, "--templates", t], &[]),
        &["invalid duration \"5 parsecs\"", bad],
    );
    assert_fails_once(
        &run(
            &["render", "--wfe", sample, "--config", bad, "--templates", t],
            &[],
        ),
        &["invalid duration \"5 parsecs\""],
    );
    assert_fails_once(
        &run(
            &["render", "--wfe", sample, "--templates", t],
            &[("WFE_COOLDOWN__PERIOD", "soon")],
        ),
        &["invalid duration \"soon\"", "WFE_COOLDOWN__PERIOD"],
    );
    let missing = dir.path().join("missing.yaml");
    assert_fails_once(
        &run(&["render", "--wfe", missing.to_str().unwrap()], &[]),
        &["No such file or directory", "missing.yaml"],
    );
    let broken = edited_templates("status.yaml", |t| t + "bogus: 1\n");
    let mapping = broken.path().join("tekton/status.yaml");
    assert_fails_once(
        &run(
            &[
                "check-config",
                "--templates",
                broken.path().to_str().unwrap(),
            ],
            &[],
        ),
        &[mapping.to_str().unwrap(), "unknown field `bogus`"],
    );
}

#[test]
fn check_config_refuses_a_status_mapping_without_the_fields_the_operator_reads() {
    for (from, to, fragments) in [
        (
            "  startTime:",
            "  starttime:",
            ["missing `startTime`", "`starttime` a misspelling"],
        ),
        (
            "  completionTime:",
            "  # completionTime:",
            ["missing `completionTime`", "the operator reads the fields"],
        ),
    ] {
        let dir = edited_templates("status.yaml", |t| t.replacen(from, to, 1));
        let out = run(
            &["check-config", "--templates", dir.path().to_str().unwrap()],
            &[],
        );
        assert_fails_once(&out, &fragments);
    }
}

#[test]
fn check_config_refuses_a_health_address_on_the_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let t = templates();
    for (metrics, health) in [
        ("0.0.0.0:9090", "127.0.0.1:9090"),
        ("127.0.0.1:9090", "0.0.0.0:9090"),
        ("0.0.0.0:9090", "0.0.0.0:9090"),
    ] {
        let file = write(
            dir.path(),
            "c.yaml",
            &format!("controller:\n  metricsAddr: {metrics}\n  healthAddr: {health}\n"),
        );
        let out = run(
            &[
                "check-config",
                "--config",
                file.to_str().unwrap(),
                "--templates",
                t.to_str().unwrap(),
            ],
            &[],
        );
        // The validation error names the key and the layer its value came from.
        assert_fails_once(
            &out,
            &[
                "`controller.healthAddr`",
                "binds the same port",
                "(from YAML file ",
            ],
        );
    }
    let out = run(
        &["check-config", "--templates", t.to_str().unwrap()],
        &[("WFE_CONTROLLER__HEALTHADDR", "127.0.0.1:9090")],
    );
    assert_fails_once(
        &out,
        &["(from environment variable WFE_CONTROLLER__HEALTHADDR)"],
    );
}

#[test]
fn check_config_takes_an_all_digit_environment_value_of_a_string_key_as_a_string() {
    let t = templates();
    let out = run(
        &["check-config", "--templates", t.to_str().unwrap()],
        &[("WFE_EXECUTION__SERVICEACCOUNTNAME", "1234")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.yaml", &wfe("    A: a\n"));
    let out = run(
        &[
            "render",
            "--wfe",
            file.to_str().unwrap(),
            "--templates",
            t.to_str().unwrap(),
            "-o",
            "json",
        ],
        &[("WFE_EXECUTION__SERVICEACCOUNTNAME", "1234")],
    );
    let run: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(run["spec"]["taskRunTemplate"]["serviceAccountName"], "1234");
}

#[test]
fn render_names_the_field_of_a_type_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.yaml", &wfe("    REPLICAS: 3\n"));
    let out = run(
        &[
            "render",
            "--wfe",
            file.to_str().unwrap(),
            "--templates",
            templates().to_str().unwrap(),
        ],
        &[],
    );
    assert_fails_once(
        &out,
        &["`spec.parameters.REPLICAS` must be of type string, not number 3"],
    );
}

#[test]
fn render_and_check_config_refuse_labels_the_api_server_would_refuse() {
    // The template copies a parameter into a label.
    let labelled = edited_templates("pipelinerun.yaml.j2", |t| {
        t.replacen(
            "  labels:\n",
            "  labels:\n    team: {{ (wfe.spec.parameters | default({})).TEAM | default(\"none\") }}\n",
            1,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let t = labelled.path().to_str().unwrap();
    let out = run(&["check-config", "--templates", t], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let good = write(dir.path(), "good.yaml", &wfe("    TEAM: payments\n"));
    let out = run(
        &[
            "render",
            "--wfe",
            good.to_str().unwrap(),
            "--templates",
            t,
            "-o",
            "json",
        ],
        &[],
    );
    let rendered: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", stderr(&out)));
    assert_eq!(rendered["metadata"]["labels"]["team"], "payments");
    let bad = write(dir.path(), "bad.yaml", &wfe("    TEAM: \"pay\\nments\"\n"));
    let out = run(
        &["render", "--wfe", bad.to_str().unwrap(), "--templates", t],
        &[],
    );
    assert_fails_once(
        &out,
        &[r#"metadata.labels["team"]: "pay\nments" is not a valid label value"#],
    );
    // A label the template always writes wrong is refused at load, by check-config.
    let constant = edited_templates("pipelinerun.yaml.j2", |t| {
        t.replacen("  labels:\n", "  labels:\n    team: \"pay ments\"\n", 1)
    });
    let out = run(
        &[
            "check-config",
            "--templates",
            constant.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_fails_once(
        &out,
        &["is not a valid label value", "the API server would refuse"],
    );
}

/// What `render -o yaml` prints reads back, with YAML 1.1 rules (kubectl's), as exactly what
/// `render -o json` prints — for the values a YAML 1.1 reader would otherwise turn into booleans,
/// numbers, timestamps or merge keys.
#[test]
fn render_yaml_reads_back_in_yaml_1_1_as_the_json_output() {
    let hostile = [
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "~",
        "1_000",
        "0x10",
        "1e3",
        ".inf",
        "2001-12-14",
        "<<",
        "=",
        "YES",
        "Off",
        "null",
        "",
        "017",
        "190:20:30",
        "1.0",
        "- x",
        "a: b",
        "#c",
        "tab\there",
        "nel\u{85}",
        "two\nlines",
    ];
    // The WorkflowExecution as JSON (which YAML readers read too): no YAML reading of the
    // input can alter the values before they reach the template.
    let parameters: serde_json::Map<String, Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, v)| (format!("P_{i}"), Value::from(*v)))
        .collect();
    let mut document: Value = serde_yaml::from_str(&wfe("    X: x\n")).unwrap();
    document["spec"]["parameters"] = Value::Object(parameters);
    // The annotation value of the template guide's example, `"yes"`, written by the template.
    let annotated = edited_templates("pipelinerun.yaml.j2", |t| {
        t.replacen(
            "metadata:\n",
            "metadata:\n  annotations:\n    example.com/flag: \"yes\"\n",
            1,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "w.json", &document.to_string());
    let args = |format: &'static str| {
        vec![
            "render".to_owned(),
            "--wfe".to_owned(),
            file.display().to_string(),
            "--templates".to_owned(),
            annotated.path().display().to_string(),
            "-o".to_owned(),
            format.to_owned(),
        ]
    };
    let render = |format: &'static str| {
        let args = args(format);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&render("json")).unwrap();
    let yaml = render("yaml");
    assert_eq!(json["metadata"]["annotations"]["example.com/flag"], "yes");
    let params = json["spec"]["params"].as_array().unwrap();
    for (i, value) in hostile.iter().enumerate() {
        let name = format!("P_{i}");
        let param = params.iter().find(|p| p["name"] == name.as_str()).unwrap();
        assert_eq!(param["value"], *value, "{name}");
    }
    assert_eq!(yaml11::read(&yaml), json, "YAML 1.1 reading of:\n{yaml}");
    let yaml12: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(yaml12, json, "YAML 1.2 reading");
}

/// `crd` prints YAML that reads back the same in YAML 1.1 as the CRD's JSON.
#[test]
fn crd_yaml_reads_back_in_yaml_1_1() {
    let out = run(&["crd"], &[]);
    let yaml = String::from_utf8(out.stdout).unwrap();
    let expected = serde_json::to_value(workflowexecution_operator::types::crd()).unwrap();
    assert_eq!(yaml11::read(&yaml), expected);
}

/// `run --templates DIR` reads the templates from DIR, like `render` and `check-config`: the
/// files are loaded before the cluster is contacted, so a wrong directory is reported as such.
#[test]
fn run_reads_the_templates_directory_given() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = write(
        dir.path(),
        "kubeconfig",
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\nusers: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    );
    let missing = dir.path().join("no-templates");
    let env = [
        ("KUBECONFIG", kubeconfig.to_str().unwrap()),
        ("WFE_CONTROLLER__METRICSADDR", "127.0.0.1:0"),
        ("WFE_CONTROLLER__HEALTHADDR", "127.0.0.1:0"),
    ];
    let out = run(&["run", "--templates", missing.to_str().unwrap()], &env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    // The engine directory of the default engine is looked for in the directory given.
    assert!(
        last.starts_with("error: engine \"tekton\": reading ")
            && last.contains(&missing.join("tekton").display().to_string()),
        "{err}"
    );
    // With the checkout's templates the files load and the next step is the cluster.
    let out = run(&["run", "--templates", templates().to_str().unwrap()], &env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not served by this cluster"), "{err}");
}

/// The `check-config` report is YAML that reads the same with YAML 1.1 rules, whatever the paths.
#[test]
fn check_config_report_reads_back_in_yaml_1_1() {
    let parent = tempfile::tempdir().unwrap();
    let odd = parent.path().join("yes: no #1");
    let copy = edited_templates("status.yaml", |t| t);
    std::fs::rename(copy.path(), &odd).unwrap();
    let out = run(&["check-config", "--templates", odd.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = yaml11::read(&String::from_utf8(out.stdout).unwrap());
    let templates = report["templates"].as_str().unwrap_or_default();
    assert!(
        templates.starts_with(&format!("ok ({}, revision ", odd.display())),
        "{report}"
    );
    assert_eq!(
        report["configuration"],
        "ok (compiled defaults and environment)"
    );
}

/// A template directory with three engines: the shipped `tekton/` and `job/`, and the test
/// engine `configmap/` (a ConfigMap child, no grandchildren); and a configuration listing them
/// with `default` as the default engine.
fn three_engines(default: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engines");
    for (from, engine) in [
        (self::templates(), "tekton"),
        (self::templates(), "job"),
        (fixture, "configmap"),
    ] {
        for entry in std::fs::read_dir(from.join(engine)).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            write(
                &templates.join(engine),
                entry.file_name().to_str().unwrap(),
                &text,
            );
        }
    }
    let config = write(
        dir.path(),
        "config.yaml",
        &format!("execution:\n  engines: [tekton, job, configmap]\n  defaultEngine: {default}\n"),
    );
    (dir, templates, config)
}

/// `check-config` loads every configured engine (and only those) and reports each: its child
/// kind, template, status mapping and cancel file; a fault in any engine's files fails it,
/// naming the file.
#[test]
fn check_config_loads_and_reports_every_configured_engine() {
    let (_dir, templates, config) = three_engines("job");
    let t = templates.to_str().unwrap();
    let c = config.to_str().unwrap();
    let out = run(&["check-config", "--config", c, "--templates", t], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = yaml11::read(&String::from_utf8(out.stdout).unwrap());
    for (engine, child, template) in [
        (
            "tekton",
            "tekton.dev/v1, Kind=PipelineRun",
            "pipelinerun.yaml.j2",
        ),
        ("job", "batch/v1, Kind=Job", "job.yaml.j2"),
        ("configmap", "v1, Kind=ConfigMap", "configmap.yaml.j2"),
    ] {
        assert_eq!(
            report[format!("engine {engine}").as_str()],
            format!(
                "ok ({child}: {engine}/{template}, {engine}/status.yaml, {engine}/cancel.yaml)"
            )
            .as_str(),
            "{report}"
        );
    }

    // Without the configuration only Tekton is configured: the other directories are not read.
    let out = run(&["check-config", "--templates", t], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = yaml11::read(&String::from_utf8(out.stdout).unwrap());
    assert!(report.get("engine tekton").is_some(), "{report}");
    assert!(report.get("engine job").is_none(), "{report}");
    assert!(report.get("engine configmap").is_none(), "{report}");

    // A fault in any configured engine fails the check, naming its file: (engine, file, edit,
    // what the error says).
    type Fault = (
        &'static str,
        &'static str,
        fn(String) -> String,
        &'static [&'static str],
    );
    let cases: [Fault; 3] = [
        (
            "configmap",
            "status.yaml",
            |t| t.replacen("  startTime:", "  # startTime:", 1),
            &["configmap/status.yaml", "missing `startTime`"],
        ),
        (
            "job",
            "cancel.yaml",
            |t| t.replacen("finishGracePeriod: 1m", "finishGracePeriod: soon", 1),
            &["job/cancel.yaml", "finishGracePeriod"],
        ),
        (
            "configmap",
            "configmap.yaml.j2",
            |t| t.replacen("wfe.spec.targetResource", "wfe.spec.target", 1),
            &["configmap/configmap.yaml.j2", "wfe.spec.target"],
        ),
    ];
    for (engine, file, edit, fragments) in cases {
        let (_dir, templates, config) = three_engines("tekton");
        let path = templates.join(engine).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
        let out = run(
            &[
                "check-config",
                "--config",
                config.to_str().unwrap(),
                "--templates",
                templates.to_str().unwrap(),
            ],
            &[],
        );
        assert_fails_once(&out, fragments);
    }

    // A configured engine without a directory.
    let out = run(
        &["check-config", "--templates", t],
        &[("WFE_EXECUTION__ENGINES", "[tekton, argo]")],
    );
    assert_fails_once(&out, &["engine \"argo\": reading ", "templates/argo:"]);
}

/// `render` renders with `--engine`, else the WorkflowExecution's `spec.executionEngine`, else
/// the default engine; every child gets the operator's identity (the same lock name, whatever
/// the engine) and the revision of the template set of every engine.
#[test]
fn render_uses_the_engine_asked_for_else_the_wfes_else_the_default() {
    let (dir, templates, config) = three_engines("tekton");
    let plain = write(dir.path(), "plain.yaml", &wfe("    A: a\n"));
    let asks = write(
        dir.path(),
        "asks.yaml",
        &(wfe("    A: a\n") + "  executionEngine: configmap\n"),
    );
    let render = |file: &Path, engine: Option<&str>| {
        let mut args = vec![
            "render",
            "--wfe",
            file.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--templates",
            templates.to_str().unwrap(),
            "-o",
            "json",
        ];
        args.extend(engine.iter().flat_map(|e| ["--engine", *e]));
        run(&args, &[])
    };
    let cases = [
        (&plain, None, "PipelineRun"),
        (&plain, Some("job"), "Job"),
        (&asks, None, "ConfigMap"),
        (&asks, Some("job"), "Job"),
        (&asks, Some("tekton"), "PipelineRun"),
    ];
    let mut revisions = Vec::new();
    for (file, engine, kind) in cases {
        let out = render(file, engine);
        let child: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{engine:?}: {}", stderr(&out)));
        assert_eq!(child["kind"], kind, "{file:?} {engine:?}");
        assert_eq!(child["metadata"]["name"], "wfe-f3457dcc8fbcb6d9");
        assert_eq!(child["metadata"]["namespace"], "kubernaut-workflows");
        assert_eq!(
            child["metadata"]["labels"]["kubernaut.ai/workflow-execution"],
            "cli-test"
        );
        revisions.push(child["metadata"]["annotations"]["kubernaut.ai/template-revision"].clone());
    }
    revisions.dedup();
    assert_eq!(revisions.len(), 1, "one template set: {revisions:?}");

    assert_fails_once(
        &render(&plain, Some("argo")),
        &[
            "engine \"argo\" is not configured",
            "execution.engines lists tekton, job, configmap",
        ],
    );
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        &(wfe("    A: a\n") + "  executionEngine: argo\n"),
    );
    assert_fails_once(
        &render(&unknown, None),
        &["spec.executionEngine", "\"argo\""],
    );
}
