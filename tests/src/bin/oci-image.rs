//! `oci-image` (`make image`): assembles the operator's container image from the static operator
//! binary, without a container engine, as an OCI image layout directory and the same layout as
//! an `oci-archive` tarball (see `kubernaut_test_harness::image`). Prints where it wrote them,
//! the manifest digest and the sizes.
//!
//! ```text
//! oci-image --binary FILE --version VERSION --layout DIR --archive FILE [--tag TAG]
//! ```
//!
//! `--tag` (default: the version) is the name the layout gives the manifest, the `TAG` of
//! `oci:DIR:TAG` / `oci-archive:FILE:TAG` references.

use std::path::PathBuf;

use anyhow::Context;
use kubernaut_test_harness::image::{self, ImageOutput, ImageSpec};

const USAGE: &str =
    "usage: oci-image --binary FILE --version VERSION --layout DIR --archive FILE [--tag TAG]";

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() -> anyhow::Result<()> {
    let (mut binary, mut version, mut layout, mut archive, mut tag) =
        (None, None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--binary" => &mut binary,
            "--version" => &mut version,
            "--layout" => &mut layout,
            "--archive" => &mut archive,
            "--tag" => &mut tag,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        };
        *slot = Some(
            args.next()
                .with_context(|| format!("{flag} needs a value"))?,
        );
    }
    let missing = |name: &str| anyhow::anyhow!("{name} is required\n{USAGE}");
    let version = version.ok_or_else(|| missing("--version"))?;
    let spec = ImageSpec {
        binary: PathBuf::from(binary.ok_or_else(|| missing("--binary"))?),
        tag: tag.unwrap_or_else(|| version.clone()),
        version,
    };
    let output = ImageOutput {
        layout: PathBuf::from(layout.ok_or_else(|| missing("--layout"))?),
        archive: PathBuf::from(archive.ok_or_else(|| missing("--archive"))?),
    };
    let built = image::build(&spec, &output)?;
    println!(
        "image layout  {} (tag {})",
        output.layout.display(),
        spec.tag
    );
    println!("oci-archive   {}", output.archive.display());
    println!("digest        {}", built.digest);
    println!(
        "size          layer {} compressed ({} bytes), {} uncompressed; binary {}; archive {}",
        mib(built.layer_size),
        built.layer_size,
        mib(built.layer_tar_size),
        mib(built.binary_size),
        mib(built.archive_size)
    );
    Ok(())
}
