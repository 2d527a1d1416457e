//! Replays fuzz inputs under plain `cargo test`: the regression tests
//! include this file with `#[path]`, next to the harness they replay into.

use std::fs;
use std::path::{Path, PathBuf};

/// Every file of `<fuzz>/<kind>/<target>/`, sorted by name; none if the
/// folder is absent.
pub fn inputs(fuzz: &Path, kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz.join(kind).join(target);
    let Ok(rd) = fs::read_dir(&dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs every seed and every regression of `target` through `entry`;
/// returns how many seeds there were, so a test can insist on some.
pub fn replay(fuzz: &Path, target: &str, entry: fn(&[u8])) -> usize {
    let seeds = inputs(fuzz, "seeds", target);
    for (path, bytes) in seeds.iter().chain(&inputs(fuzz, "regressions", target)) {
        eprintln!("{target}: {}", path.display());
        entry(bytes);
    }
    seeds.len()
}
