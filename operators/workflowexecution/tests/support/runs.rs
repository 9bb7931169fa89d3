//! The runs the status tests map: every run real Tekton wrote in the end-to-end tier
//! (`tests/e2e/recorded/`, each stating the Tekton version that recorded it), the hand-written
//! fixtures of `tests/fixtures/pipelineruns/` for shapes no recording holds (each saying why), and
//! every Job the real Job controller wrote (`tests/e2e/recorded/job/`).
//!
//! Test support only, shared by the golden test (`tests/golden.rs`) and the crate's unit tests
//! (`src/lib.rs`), both through `#[path]`: it panics on a missing or malformed file.
// Each includer uses a part: the golden test the provenance, the unit tests the expectations.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One run, where it comes from and what the mapping should make of it.
pub struct Source {
    /// The recording's or fixture's file stem (its golden file's stem).
    pub name: String,
    /// Its path from the repository root.
    pub path: String,
    /// `recorded from tekton-pipelines vX.Y.Z`, or `hand-written: <why>`.
    pub provenance: String,
    /// The PipelineRun.
    pub run: Value,
    /// Its TaskRuns by name.
    pub task_runs: BTreeMap<String, Value>,
    /// A hand-written fixture's `expect`; `null` for a recording, whose expectation is its
    /// reviewed golden status output ([`fixtures`]).
    pub expect: Value,
}

/// One run and what the mapping should make of it.
pub struct Fixture {
    /// The recording's or fixture's file stem.
    pub name: String,
    /// The PipelineRun.
    pub run: Value,
    /// Its TaskRuns by name.
    pub task_runs: BTreeMap<String, Value>,
    /// `phase`, `reason`, `wasExecutionFailure`, `failedTaskIndex`, `exitCode`.
    pub expect: Value,
}

/// This crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `.yaml` files of `dir`, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The file name of `path` without its extension.
pub fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

fn by_name(task_runs: &[Value]) -> BTreeMap<String, Value> {
    task_runs
        .iter()
        .map(|tr| {
            (
                tr["metadata"]["name"].as_str().unwrap().to_owned(),
                tr.clone(),
            )
        })
        .collect()
}

/// Every recording of `tests/e2e/recorded/` (the PipelineRun, then its TaskRuns), each stating the
/// Tekton version that recorded it on its first line.
pub fn recorded() -> Vec<Source> {
    recordings("", "tekton-pipelines v", "Tekton", "TaskRun")
        .into_iter()
        .inspect(|source| assert_eq!(source.run["kind"], "PipelineRun", "{}", source.path))
        .collect()
}

/// Every recording of the real Job controller in `tests/e2e/recorded/job/` (the Job, then its
/// pods), each stating the Kubernetes version that recorded it on its first line.
pub fn recorded_jobs() -> Vec<Source> {
    recordings("job/", "kube-controller-manager v", "Kubernetes", "Pod")
        .into_iter()
        .inspect(|source| assert_eq!(source.run["kind"], "Job", "{}", source.path))
        .collect()
}

/// The recordings in `tests/e2e/recorded/<subdir>` (the run, then its `grandchild_kind` objects),
/// each stating on its first line the version of the `recorder` (e.g. `tekton-pipelines v`) of
/// the `product` that recorded it.
fn recordings(subdir: &str, recorder: &str, product: &str, grandchild_kind: &str) -> Vec<Source> {
    yaml_files(&crate_dir().join(format!("../../tests/e2e/recorded/{subdir}")))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let version = first
                .strip_prefix("# Recorded from ")
                .and_then(|rest| rest.split(" by ").next())
                .filter(|v| v.starts_with(recorder))
                .unwrap_or_else(|| {
                    panic!(
                        "{} does not state the {product} version that recorded it: {first}",
                        path.display()
                    )
                });
            let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
                .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
                .filter(|v| !v.is_null())
                .collect();
            assert!(
                docs[1..].iter().all(|d| d["kind"] == grandchild_kind),
                "{}",
                path.display()
            );
            Source {
                name: stem(&path),
                path: format!("tests/e2e/recorded/{subdir}{}.yaml", stem(&path)),
                provenance: format!("recorded from {version}"),
                run: docs[0].clone(),
                task_runs: by_name(&docs[1..]),
                expect: Value::Null,
            }
        })
        .collect()
}

/// The hand-written fixtures of `tests/fixtures/pipelineruns/`: each says why at its top (`#
/// hand-written: <why>`); a shape a recording holds is read from the recording instead.
pub fn hand_written() -> Vec<Source> {
    yaml_files(&crate_dir().join("tests/fixtures/pipelineruns"))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let why = first
                .strip_prefix("# hand-written: ")
                .filter(|why| !why.trim().is_empty())
                .unwrap_or_else(|| {
                    panic!(
                        "{} must say why it is hand-written (`# hand-written: <why>`)",
                        path.display()
                    )
                });
            let doc: Value = serde_yaml::from_str(&text).unwrap();
            Source {
                name: stem(&path),
                path: format!(
                    "operators/workflowexecution/tests/fixtures/pipelineruns/{}.yaml",
                    stem(&path)
                ),
                provenance: format!("hand-written: {}", why.trim()),
                run: doc["pipelineRun"].clone(),
                task_runs: by_name(doc["taskRuns"].as_array().unwrap()),
                expect: doc["expect"].clone(),
            }
        })
        .collect()
}

/// Every recording, expected to classify as its reviewed golden status output
/// (`tests/golden/status/<name>.yaml`) says, and every hand-written fixture with its `expect`.
pub fn fixtures() -> Vec<Fixture> {
    let recorded = recorded().into_iter().map(|source| {
        let golden = crate_dir().join(format!("tests/golden/status/{}.yaml", source.name));
        let golden: Value =
            serde_yaml::from_str(&std::fs::read_to_string(golden).unwrap()).unwrap();
        let details = &golden["failureDetails"];
        Fixture {
            expect: serde_json::json!({
                "phase": golden["phase"],
                "reason": details["reason"],
                "wasExecutionFailure": details["wasExecutionFailure"],
                "failedTaskIndex": details["failedTaskIndex"],
                "exitCode": details["exitCode"],
            }),
            ..Fixture::from(source)
        }
    });
    recorded
        .chain(hand_written().into_iter().map(Fixture::from))
        .collect()
}

impl From<Source> for Fixture {
    fn from(source: Source) -> Fixture {
        Fixture {
            name: source.name,
            run: source.run,
            task_runs: source.task_runs,
            expect: source.expect,
        }
    }
}
