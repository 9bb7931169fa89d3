//! The runs the unit tests map: every run real Tekton wrote in the end-to-end tier
//! (`tests/e2e/recorded/`) and the hand-written fixtures of `tests/fixtures/pipelineruns/` for
//! shapes no recording holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One run: a PipelineRun, its TaskRuns and what the mapping should make of them.
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

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
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

fn stem(path: &Path) -> String {
    path.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The runs real Tekton wrote in the end-to-end tier (`tests/e2e/recorded/`: the PipelineRun,
/// then its TaskRuns), each expected to classify as its reviewed golden status output says,
/// and the hand-written fixtures for shapes no recording holds, each with its `expect`.
pub fn fixtures() -> Vec<Fixture> {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let recorded = yaml_files(&crate_dir.join("../../tests/e2e/recorded"))
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
                .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
                .filter(|v| !v.is_null())
                .collect();
            let name = stem(&path);
            let golden: Value = serde_yaml::from_str(
                &std::fs::read_to_string(
                    crate_dir.join(format!("tests/golden/status/{name}.yaml")),
                )
                .unwrap(),
            )
            .unwrap();
            let details = &golden["failureDetails"];
            Fixture {
                name,
                run: docs[0].clone(),
                task_runs: by_name(&docs[1..]),
                expect: serde_json::json!({
                    "phase": golden["phase"],
                    "reason": details["reason"],
                    "wasExecutionFailure": details["wasExecutionFailure"],
                    "failedTaskIndex": details["failedTaskIndex"],
                    "exitCode": details["exitCode"],
                }),
            }
        });
    let hand_written = yaml_files(&crate_dir.join("tests/fixtures/pipelineruns"))
        .into_iter()
        .map(|path| {
            let doc: Value =
                serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            Fixture {
                name: stem(&path),
                run: doc["pipelineRun"].clone(),
                task_runs: by_name(doc["taskRuns"].as_array().unwrap()),
                expect: doc["expect"].clone(),
            }
        });
    recorded.chain(hand_written).collect()
}
