//! Replays fuzz inputs under plain `cargo test`: the regression tests
//! include this file with `#[path]`, next to the harness they replay into.

use std::fs;
use std::path::{Path, PathBuf};

/// The repository's `fuzz/` folder: the first `fuzz/` holding this file
/// above the including crate's manifest folder (`daemon/` or
/// `daemon/format/`).
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("fuzz"))
        .find(|f| f.join("src/replay.rs").is_file())
        .unwrap_or_else(|| panic!("no fuzz/src/replay.rs above {}", env!("CARGO_MANIFEST_DIR")))
}

/// Every file of `fuzz/<kind>/<target>/`, sorted by name; none if the
/// folder is absent.
pub fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
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
pub fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let seeds = inputs("seeds", target);
    for (path, bytes) in seeds.iter().chain(&inputs("regressions", target)) {
        eprintln!("{target}: {}", path.display());
        entry(bytes);
    }
    seeds.len()
}
