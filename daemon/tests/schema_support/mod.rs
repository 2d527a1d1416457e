//! The JSON Schemas of `docs/schema/` for the binary tests: each `--json`
//! output is validated against the schema of its object.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

/// The schema `docs/schema/<name>.schema.json`, compiled.
pub fn validator(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../docs/schema/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{}: not a valid schema: {e}", path.display()))
}

/// Panics with every violation if `v` does not follow schema `name`.
pub fn assert_valid(name: &str, v: &serde_json::Value, what: &str) {
    let errors: Vec<String> =
        validator(name).iter_errors(v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what}: does not follow {name}.schema.json:\n  {}\n{v:#}", errors.join("\n  "));
}

/// Each line of `text` is one object following schema `name`.
pub fn assert_valid_lines(name: &str, text: &str, what: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}"));
            assert_valid(name, &v, what);
            v
        })
        .collect()
}

/// `v` (an object, or a list of objects) follows the schema its own
/// `"schema"` key names (`milspec.<kind>/1` is `docs/schema/<kind>.schema.json`).
pub fn assert_follows(v: &serde_json::Value, what: &str) {
    if let Some(items) = v.as_array() {
        for item in items {
            assert_follows(item, what);
        }
        return;
    }
    let name = v["schema"].as_str().unwrap_or_else(|| panic!("{what}: no \"schema\" key: {v}"));
    let kind = name
        .strip_prefix("milspec.")
        .and_then(|k| k.strip_suffix("/1"))
        .unwrap_or_else(|| panic!("{what}: unknown schema {name}"));
    assert_valid(kind, v, what);
}
