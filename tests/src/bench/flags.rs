//! The benchmarks' command lines: switches (`--skip-scale`) and options with a value
//! (`--n 100`).
//!
//! Guarantees:
//! 1. `--help` or `-h` prints the usage and exits 0; an option without its value is an error
//!    naming it and the usage.

use std::{fmt::Display, str::FromStr};

use anyhow::anyhow;

/// The flags of this process's command line, in order: each of `switches` alone (value `None`),
/// every other flag with the argument that follows it.
///
/// # Errors
///
/// When an option is last, without its value.
pub fn flags(switches: &[&str], usage: &str) -> anyhow::Result<Vec<(String, Option<String>)>> {
    let mut flags = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            println!("{usage}");
            std::process::exit(0);
        }
        if switches.contains(&flag.as_str()) {
            flags.push((flag, None));
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\nusage: {usage}"))?;
        flags.push((flag, Some(value)));
    }
    Ok(flags)
}

/// The `value` of option `flag`, parsed.
///
/// # Errors
///
/// When it does not parse, naming the flag and the value.
pub fn parse<T>(flag: &str, value: &str) -> anyhow::Result<T>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse().map_err(|e| anyhow!("{flag} {value}: {e}"))
}
