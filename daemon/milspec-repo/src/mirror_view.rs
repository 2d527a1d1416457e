//! `milspec-repo kernels`: which kernel releases each release on a mirror
//! has builds for, read from the mirror's index.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use milspec_format::index::{read_unverified, Index, INDEX_FILE, MAX_INDEX_FILE};
use milspec_format::{read_regular, sanitize, OpenPolicy};

/// One line per release, `VERSION sequence N: K kernel(s): R1 R2 ...`, in
/// the index's order (by sequence), or one JSON document with `json`.
/// Every string is escaped: the index is read, not trusted.
pub fn kernels(mirror: &Path, json: bool) -> anyhow::Result<String> {
    let path = mirror.join(INDEX_FILE);
    let bytes = read_regular(&path, OpenPolicy::no_follow(MAX_INDEX_FILE))
        .with_context(|| format!("{}: cannot read the index", path.display()))?;
    let index = read_unverified(&bytes).with_context(|| format!("{}: cannot read the index", path.display()))?;
    Ok(if json { as_json(&index) } else { as_lines(&index) })
}

fn as_lines(index: &Index) -> String {
    let mut out = String::new();
    for e in &index.packages {
        let releases: Vec<String> = e.kernel_releases.iter().map(|r| sanitize(r)).collect();
        let _ = writeln!(
            out,
            "{} sequence {}{}: {} kernel(s): {}",
            sanitize(&e.version.to_string()),
            e.sequence,
            if index.is_revoked(&e.version) { " (revoked)" } else { "" },
            releases.len(),
            releases.join(" ")
        );
    }
    out
}

fn as_json(index: &Index) -> String {
    let releases: Vec<serde_json::Value> = index
        .packages
        .iter()
        .map(|e| {
            serde_json::json!({
                "version": sanitize(&e.version.to_string()),
                "sequence": e.sequence,
                "revoked": index.is_revoked(&e.version),
                "kernel_releases": e.kernel_releases.iter().map(|r| sanitize(r)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let doc = serde_json::json!({
        "schema": "milspec.mirror-kernels/1",
        "index_version": index.version,
        "releases": releases,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}
