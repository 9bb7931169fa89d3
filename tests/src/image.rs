//! The operator's container image, assembled without a container engine: an OCI image layout
//! (and the same layout as one `oci-archive` tarball) holding one layer with the static operator
//! binary at `/workflowexecution-operator`, on an empty base, run as the non-root user 65532.
//! `make image` (the `oci-image` binary) and `tests/tests/image.rs` build it with [`build`].
//!
//! Guarantees:
//! 1. Deterministic: the same binary and [`ImageSpec`] give byte-identical blobs, so the same
//!    manifest digest — every tar entry has mtime 0, owner 0:0 and no user or group name, the
//!    entries are in sorted order, the gzip header carries no time or file name, and the JSON
//!    documents have a fixed key order and no creation time.
//! 2. The layer holds exactly [`BINARY`] (mode 0755, owned by root): no shell, no `/bin`, no
//!    `/etc`. Configuration, templates and the API server's CA come from what `deploy/` mounts.
//! 3. The layout and the archive are replaced whole: a reader never sees half of a new image
//!    next to half of an old one (each is written beside its destination, then renamed over it).
//!
//! Assumptions:
//! 1. The binary is statically linked for `linux/amd64` (`make image` builds it so); this module
//!    does not look inside it.
//! 2. An existing layout directory is only replaced when it holds an `oci-layout` file: a
//!    directory that is not an image layout is never deleted.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use flate2::{Compression, GzBuilder};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The binary's path in the image (without the leading `/`, as tar entries are written).
pub const BINARY: &str = "workflowexecution-operator";
/// The user and group the image runs as: non-root, the conventional `nonroot` of empty-base
/// images (`deploy/` sets the same in the Pod's security context).
pub const USER: &str = "65532:65532";
/// The subcommand the entrypoint runs when the Pod gives no arguments.
pub const DEFAULT_COMMAND: &str = "run";

/// The target the static binary is built for: named explicitly so that `-C
/// target-feature=+crt-static` applies to the binary and not to build scripts and proc-macros.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// The OCI media type of an image index (`index.json`).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The OCI media type of an image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI media type of an image configuration.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI media type of a gzip-compressed layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The index annotation naming a manifest's tag in an image layout.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// What the image is built from.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The static operator binary.
    pub binary: PathBuf,
    /// The operator's version (`org.opencontainers.image.version`).
    pub version: String,
    /// The tag the layout's index gives the manifest (`org.opencontainers.image.ref.name`).
    pub tag: String,
}

/// Where [`build`] writes the image.
#[derive(Debug, Clone)]
pub struct ImageOutput {
    /// The OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
    pub layout: PathBuf,
    /// The same layout as one tar file (the `oci-archive` format).
    pub archive: PathBuf,
}

/// What [`build`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The manifest's digest (`sha256:…`): the image's identity in a registry.
    pub digest: String,
    /// The manifest's size in bytes.
    pub manifest_size: u64,
    /// The configuration's digest.
    pub config_digest: String,
    /// The layer's digest (of its compressed bytes).
    pub layer_digest: String,
    /// The layer's compressed size: what a registry stores and a node pulls.
    pub layer_size: u64,
    /// The layer's uncompressed (tar) size.
    pub layer_tar_size: u64,
    /// The binary's size.
    pub binary_size: u64,
    /// The `oci-archive` tarball's size.
    pub archive_size: u64,
}

/// One content-addressed blob of the layout.
struct Blob {
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(bytes: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn descriptor(&self, media_type: &str) -> Value {
        json!({"mediaType": media_type, "digest": self.digest, "size": self.bytes.len()})
    }

    /// The blob's path in a layout: `blobs/sha256/<hex>`.
    fn path(&self) -> String {
        format!("blobs/{}", self.digest.replacen(':', "/", 1))
    }
}

/// The static release operator binary `make image` builds
/// (`<target dir>/x86_64-unknown-linux-gnu/release/workflowexecution-operator`), found from the
/// running test binary's target directory.
///
/// # Errors
/// When the binary is missing, naming the command that builds it.
pub fn static_operator_binary() -> anyhow::Result<PathBuf> {
    let profile_dir = crate::checkout::profile_dir()?;
    let target_dir = profile_dir
        .parent()
        .with_context(|| format!("no target directory above {}", profile_dir.display()))?;
    let binary = target_dir.join(STATIC_TARGET).join("release").join(BINARY);
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `make image` (`make test` does)",
        binary.display()
    );
    Ok(binary)
}

/// `sha256:<64 lowercase hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar entry with everything but the content fixed: regular file, mtime 0, owner 0:0.
fn tar_header(path: &str, mode: u32, size: u64) -> anyhow::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_entry_type(if path.ends_with('/') {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    Ok(header)
}

/// A deterministic tar of `entries` (path, mode, content), in the order given; a path ending in
/// `/` is a directory.
fn tar_of(entries: &[(&str, u32, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, mode, content) in entries {
        let header = tar_header(path, *mode, content.len() as u64)?;
        builder.append(&header, *content)?;
    }
    Ok(builder.into_inner()?)
}

/// gzip at the best compression, with no time and no file name in its header.
fn gzip(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Compact JSON, keys in a fixed order (serde_json's maps are ordered).
fn json_bytes(value: &Value) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

/// The image configuration: platform, user, entrypoint, labels and the layer's diff id.
fn config(spec: &ImageSpec, diff_id: &str) -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "User": USER,
            "Entrypoint": [format!("/{BINARY}")],
            "Cmd": [DEFAULT_COMMAND],
            "Labels": {
                "org.opencontainers.image.title": "workflowexecution-operator",
                "org.opencontainers.image.description":
                    "The Kubernaut WorkflowExecution operator: runs remediation workflows as Tekton PipelineRuns",
                "org.opencontainers.image.version": spec.version,
                "org.opencontainers.image.licenses": "Apache-2.0",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": format!("the static {BINARY} {} binary at /{BINARY}", spec.version)}],
    })
}

/// Builds the image of `spec` into `output`, replacing what an earlier build wrote there.
///
/// # Errors
/// When the binary cannot be read, an output cannot be written, or `output.layout` exists and is
/// not an OCI image layout.
pub fn build(spec: &ImageSpec, output: &ImageOutput) -> anyhow::Result<BuiltImage> {
    let binary = fs::read(&spec.binary)
        .with_context(|| format!("reading the operator binary {}", spec.binary.display()))?;
    let layer_tar = tar_of(&[(BINARY, 0o755, &binary)])?;
    let diff_id = sha256_digest(&layer_tar);
    let layer = Blob::new(gzip(&layer_tar)?);
    let config = Blob::new(json_bytes(&config(spec, &diff_id))?);
    let manifest = Blob::new(json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.descriptor(CONFIG_MEDIA_TYPE),
        "layers": [layer.descriptor(LAYER_MEDIA_TYPE)],
    }))?);
    let mut manifest_descriptor = manifest.descriptor(MANIFEST_MEDIA_TYPE);
    manifest_descriptor["platform"] = json!({"architecture": "amd64", "os": "linux"});
    manifest_descriptor["annotations"] = json!({REF_NAME_ANNOTATION: spec.tag});
    let index = json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest_descriptor],
    }))?;
    let oci_layout = json_bytes(&json!({"imageLayoutVersion": "1.0.0"}))?;

    // The layout's files, sorted by path (the archive's order).
    let mut blobs = [&config, &layer, &manifest];
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    let blob_paths: Vec<String> = blobs.iter().map(|b| b.path()).collect();
    let mut files: Vec<(&str, u32, &[u8])> =
        vec![("blobs/", 0o755, &[]), ("blobs/sha256/", 0o755, &[])];
    files.extend(
        blob_paths
            .iter()
            .zip(&blobs)
            .map(|(path, blob)| (path.as_str(), 0o644, blob.bytes.as_slice())),
    );
    files.push(("index.json", 0o644, &index));
    files.push(("oci-layout", 0o644, &oci_layout));

    write_layout(&output.layout, &files)?;
    let archive = tar_of(&files)?;
    replace_file(&output.archive, &archive)?;

    Ok(BuiltImage {
        digest: manifest.digest.clone(),
        manifest_size: manifest.bytes.len() as u64,
        config_digest: config.digest.clone(),
        layer_digest: layer.digest.clone(),
        layer_size: layer.bytes.len() as u64,
        layer_tar_size: layer_tar.len() as u64,
        binary_size: binary.len() as u64,
        archive_size: archive.len() as u64,
    })
}

/// A sibling of `path` to write into before renaming over it.
fn staging_path(path: &Path) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut staging = name.to_os_string();
    staging.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(staging))
}

/// Writes `files` as the layout directory `layout`, replacing an earlier layout there.
fn write_layout(layout: &Path, files: &[(&str, u32, &[u8])]) -> anyhow::Result<()> {
    if layout.exists() && !layout.join("oci-layout").is_file() {
        anyhow::bail!(
            "{} exists and is not an OCI image layout (no oci-layout file): not replacing it",
            layout.display()
        );
    }
    if let Some(parent) = layout.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let staging = staging_path(layout)?;
    if staging.exists() {
        fs::remove_dir_all(&staging)?;
    }
    for (path, _, content) in files {
        let target = staging.join(path);
        if path.ends_with('/') {
            fs::create_dir_all(&target)
        } else {
            fs::write(&target, content)
        }
        .with_context(|| format!("writing {}", target.display()))?;
    }
    if layout.exists() {
        fs::remove_dir_all(layout).with_context(|| format!("removing {}", layout.display()))?;
    }
    fs::rename(&staging, layout).with_context(|| format!("writing {}", layout.display()))?;
    Ok(())
}

/// Writes `bytes` to `path` through a sibling file renamed over it.
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let staging = staging_path(path)?;
    fs::write(&staging, bytes).with_context(|| format!("writing {}", staging.display()))?;
    fs::rename(&staging, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
