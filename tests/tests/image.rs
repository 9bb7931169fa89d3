//! The operator's container image (`make image`, `kubernaut_test_harness::image`), read back as a
//! container runtime would: `index.json` → manifest → configuration and layer, every blob checked
//! against its digest; the layer holds the static operator binary and nothing else, and that
//! binary, extracted from the layer, runs `version`, `crd` and `check-config` with no environment,
//! and `run` against the local control plane, sending its audit records over TLS to a host name
//! (the statically linked C library resolves names without loading anything).
//!
//! The static binary is the one `make image` builds (`make test` does, before the tests); the test
//! fails, naming that command, when it is missing.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use anyhow::Context;
use kube::{Api, api::PostParams};
use kubernaut_test_harness::{
    ControlPlane,
    checkout::{self, OperatorProcess},
    image::{self, BuiltImage, ImageOutput, ImageSpec, static_operator_binary},
};
use serde_json::{Value, json};
use support::audit_receiver::AuditReceiver;
use workflowexecution_operator::types::WorkflowExecution;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the image of the static binary into `dir` (`layout/` and `image.tar`).
fn build_into(dir: &Path) -> anyhow::Result<(BuiltImage, ImageOutput)> {
    let spec = ImageSpec {
        binary: static_operator_binary()?,
        version: VERSION.to_owned(),
        tag: VERSION.to_owned(),
    };
    let output = ImageOutput {
        layout: dir.join("layout"),
        archive: dir.join("image.tar"),
    };
    let built = image::build(&spec, &output)?;
    Ok((built, output))
}

/// A blob of the layout, checked against its digest and size.
fn blob(layout: &Path, descriptor: &Value) -> anyhow::Result<Vec<u8>> {
    let digest = descriptor["digest"]
        .as_str()
        .context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .with_context(|| format!("{digest} is not a sha256 digest"))?;
    let bytes = std::fs::read(layout.join("blobs/sha256").join(hex))?;
    assert_eq!(
        image::sha256_digest(&bytes),
        digest,
        "blob content vs digest"
    );
    assert_eq!(
        Some(bytes.len() as u64),
        descriptor["size"].as_u64(),
        "blob size of {digest}"
    );
    Ok(bytes)
}

/// The entries of a tar: path → (mode, uid, gid, content).
type Entries = BTreeMap<String, (u32, u64, u64, Vec<u8>)>;

fn tar_entries(tar: impl Read) -> anyhow::Result<(Vec<String>, Entries)> {
    let mut archive = tar::Archive::new(tar);
    let (mut order, mut entries) = (Vec::new(), Entries::new());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let header = entry.header();
        let meta = (
            header.mode()?,
            header.uid()?,
            header.gid()?,
            header.mtime()?,
        );
        assert_eq!(meta.3, 0, "{path}: mtime");
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        order.push(path.clone());
        entries.insert(path, (meta.0, meta.1, meta.2, content));
    }
    Ok((order, entries))
}

/// Whether an ELF file asks for a program interpreter (`PT_INTERP`): a dynamically linked
/// binary does, and cannot start on an empty base.
fn has_interpreter(elf: &[u8]) -> anyhow::Result<bool> {
    anyhow::ensure!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a little-endian 64-bit ELF file"
    );
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let phoff = elf
        .get(0x20..0x28)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .context("truncated ELF header")? as usize;
    let (entsize, count) = (
        u16_at(0x36).context("truncated ELF header")? as usize,
        u16_at(0x38).context("truncated ELF header")? as usize,
    );
    const PT_INTERP: u32 = 3;
    for i in 0..count {
        let at = phoff + i * entsize;
        let kind = elf
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .context("truncated program header")?;
        if kind == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes `binary` as `dir/workflowexecution-operator`, mode 0755.
fn write_executable(dir: &Path, binary: &[u8]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(image::BINARY);
    std::fs::write(&path, binary)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// The one file of the image's layer (checked by the test above), as bytes.
fn binary_from_layer(layout: &Path) -> anyhow::Result<Vec<u8>> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest: Value = serde_json::from_slice(&blob(layout, &index["manifests"][0])?)?;
    let layer = blob(layout, &manifest["layers"][0])?;
    let (_, mut entries) = tar_entries(flate2::read::GzDecoder::new(layer.as_slice()))?;
    let (_, _, _, binary) = entries
        .remove(image::BINARY)
        .context("the layer has no operator binary")?;
    Ok(binary)
}

/// Runs `binary` with `args`, no environment and an empty working directory, as in the image.
fn run(binary: &Path, cwd: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(binary)
        .args(args)
        .env_clear()
        .current_dir(cwd)
        .output()?;
    assert!(
        output.status.success(),
        "{} {args:?}: {}\n{}",
        binary.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output)
}

#[test]
fn the_image_runs_the_static_operator_as_65532_on_an_empty_base() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (built, output) = build_into(dir.path())?;
    let layout = &output.layout;
    println!(
        "image {}: layer {} bytes compressed, binary {} bytes",
        built.digest, built.layer_size, built.binary_size
    );

    let oci_layout: Value = serde_json::from_slice(&std::fs::read(layout.join("oci-layout"))?)?;
    assert_eq!(oci_layout, json!({"imageLayoutVersion": "1.0.0"}));
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], image::INDEX_MEDIA_TYPE);
    let manifests = index["manifests"]
        .as_array()
        .context("index without manifests")?;
    assert_eq!(manifests.len(), 1, "one manifest: {index}");
    let descriptor = &manifests[0];
    assert_eq!(descriptor["mediaType"], image::MANIFEST_MEDIA_TYPE);
    assert_eq!(descriptor["digest"], built.digest.as_str());
    assert_eq!(
        descriptor["annotations"][image::REF_NAME_ANNOTATION],
        VERSION
    );
    assert_eq!(
        descriptor["platform"],
        json!({"architecture": "amd64", "os": "linux"})
    );

    let manifest: Value = serde_json::from_slice(&blob(layout, descriptor)?)?;
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], image::MANIFEST_MEDIA_TYPE);
    assert_eq!(manifest["config"]["mediaType"], image::CONFIG_MEDIA_TYPE);
    let layers = manifest["layers"]
        .as_array()
        .context("manifest without layers")?;
    assert_eq!(layers.len(), 1, "one layer on an empty base: {manifest}");
    assert_eq!(layers[0]["mediaType"], image::LAYER_MEDIA_TYPE);

    let config: Value = serde_json::from_slice(&blob(layout, &manifest["config"])?)?;
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let run_config = &config["config"];
    assert_eq!(run_config["User"], "65532:65532");
    assert_eq!(
        run_config["Entrypoint"],
        json!(["/workflowexecution-operator"])
    );
    assert_eq!(run_config["Cmd"], json!(["run"]));
    assert_eq!(
        run_config["Labels"]["org.opencontainers.image.version"],
        VERSION
    );
    assert_eq!(
        run_config["Labels"]["org.opencontainers.image.title"],
        "workflowexecution-operator"
    );
    assert!(
        run_config.get("Env").is_none() && run_config.get("WorkingDir").is_none(),
        "nothing but user, entrypoint, command and labels: {run_config}"
    );

    let layer = blob(layout, &layers[0])?;
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(layer.as_slice()).read_to_end(&mut layer_tar)?;
    assert_eq!(
        config["rootfs"],
        json!({"type": "layers", "diff_ids": [image::sha256_digest(&layer_tar)]})
    );
    let (_, entries) = tar_entries(layer_tar.as_slice())?;
    assert_eq!(
        entries.keys().collect::<Vec<_>>(),
        ["workflowexecution-operator"],
        "the binary and nothing else: no shell, no /bin, no /etc"
    );
    let (mode, uid, gid, binary) = &entries["workflowexecution-operator"];
    assert_eq!((*mode, *uid, *gid), (0o755, 0, 0), "mode and owner");
    assert!(
        !has_interpreter(binary)?,
        "the binary is dynamically linked: it cannot start on an empty base"
    );

    // The binary taken out of the layer runs with no environment and nothing around it.
    let extracted = dir.path().join("extracted");
    let operator = write_executable(&extracted, binary)?;
    let version = run(&operator, &extracted, &["version"])?;
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("workflowexecution-operator {VERSION}")
    );
    let crd = run(&operator, &extracted, &["crd"])?;
    assert_eq!(
        String::from_utf8_lossy(&crd.stdout),
        std::fs::read_to_string(repo().join("crds/kubernaut.ai_workflowexecutions.yaml"))?,
        "the image's crd is the committed one"
    );
    let config_file = repo().join("config/workflowexecution.yaml");
    let templates = repo().join("templates/workflowexecution");
    run(
        &operator,
        &extracted,
        &[
            "check-config",
            "--config",
            &config_file.to_string_lossy(),
            "--templates",
            &templates.to_string_lossy(),
        ],
    )?;
    Ok(())
}

#[test]
fn the_image_and_its_archive_are_reproducible() -> anyhow::Result<()> {
    let (first_dir, second_dir) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (first, first_output) = build_into(first_dir.path())?;
    let (second, second_output) = build_into(second_dir.path())?;
    assert_eq!(first, second, "same binary, same image");
    let archive = std::fs::read(&first_output.archive)?;
    assert_eq!(
        archive,
        std::fs::read(&second_output.archive)?,
        "byte-identical archives"
    );

    // The archive is the layout: the same files, in sorted order, directories first.
    let (order, entries) = tar_entries(archive.as_slice())?;
    let mut expected = vec!["blobs/".to_owned(), "blobs/sha256/".to_owned()];
    for entry in std::fs::read_dir(first_output.layout.join("blobs/sha256"))? {
        expected.push(format!(
            "blobs/sha256/{}",
            entry?.file_name().to_string_lossy()
        ));
    }
    expected.extend(["index.json".to_owned(), "oci-layout".to_owned()]);
    expected.sort();
    assert_eq!(
        expected.len(),
        7,
        "manifest, config and layer: {expected:?}"
    );
    assert_eq!(order, expected, "the layout's files, sorted");
    for (path, (_, uid, gid, content)) in &entries {
        assert_eq!((*uid, *gid), (0, 0), "{path}: owner");
        if !path.ends_with('/') {
            assert_eq!(
                content,
                &std::fs::read(first_output.layout.join(path))?,
                "{path}: archive vs layout"
            );
        }
    }

    // A second build over the first replaces it.
    let (again, _) = build_into(first_dir.path())?;
    assert_eq!(again, first);
    Ok(())
}

#[tokio::test]
async fn the_operator_from_the_image_completes_a_sample_and_audits_to_a_host_name_over_tls()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_, output) = build_into(dir.path())?;
    let workdir = dir.path().join("run");
    let operator = write_executable(&workdir, &binary_from_layer(&output.layout)?)?;

    let cp = ControlPlane::start().await?;
    let _simulator = checkout::prepare(&cp, true).await?;
    // `https://localhost:<port>`: a host name the operator resolves itself, and a certificate
    // for that name from a CA given as audit.caFile.
    let receiver = AuditReceiver::start_https(dir.path()).await?;
    let ca_file = receiver.ca_file().context("a TLS receiver has a CA file")?;
    assert!(receiver.url().starts_with("https://localhost:"));
    let mut command = Command::new(&operator);
    command
        .args(["run", "--config"])
        .arg(repo().join("config/workflowexecution.yaml"))
        .arg("--templates")
        .arg(repo().join("templates/workflowexecution"))
        .current_dir(&workdir)
        .env_clear()
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env("WFE_CONTROLLER__METRICSADDR", "127.0.0.1:0")
        .env("WFE_CONTROLLER__HEALTHADDR", "127.0.0.1:0")
        .env("WFE_AUDIT__SINK", "http")
        .env("WFE_AUDIT__URL", receiver.url())
        .env("WFE_AUDIT__CAFILE", &ca_file);
    let mut process = OperatorProcess::spawn(command, &dir.path().join("operator.log"))?;

    let sample = std::fs::read_to_string(repo().join("config/samples/namespaced-deployment.yaml"))?;
    let wfe: WorkflowExecution = serde_yaml::from_str(&sample)?;
    let namespace = wfe.metadata.namespace.clone().unwrap_or("default".into());
    let name = wfe.metadata.name.clone().unwrap_or_default();
    Api::<WorkflowExecution>::namespaced(cp.client().await?, &namespace)
        .create(&PostParams::default(), &wfe)
        .await?;
    let completed = receiver
        .wait_event(&name, "workflowexecution.workflow.completed")
        .await;
    assert!(
        process.exited()?.is_none(),
        "the operator exited:\n{}",
        process.log()
    );
    completed.with_context(|| format!("operator log:\n{}", process.log()))?;
    Ok(())
}
