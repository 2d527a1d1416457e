//! The shipped Prometheus rules and Grafana dashboard, checked offline:
//! `promtool check rules` on the rules file, `promtool test rules` on the
//! unit tests in `tests/prometheus_rules/` (one file per rule group, every
//! alert both firing and quiet), the dashboard's JSON with each panel
//! expression parsed by promtool (wrapped as a recording rule), and every
//! metric name the rules and the dashboard use found in what milspecd
//! renders, or recorded by the rules.
//!
//! Needs `promtool` (Debian package `prometheus`); without it outside CI the
//! promtool tests say so and pass, in CI (`CI=true`) they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{full_snapshot, have};
use serde_json::Value;

const RULES: &str = "dist/etc/prometheus/rules/milspecd.rules.yml";
const DASHBOARD: &str = "dist/usr/share/grafana/dashboards/milspecd.json";
const UNIT_TESTS: &str = "tests/prometheus_rules";

fn here(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `promtool ARGS`: its output, `Err` when it fails.
fn promtool(args: &[&str], dir: &Path) -> Result<String, String> {
    let o = Command::new("promtool").args(args).current_dir(dir).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if o.status.success() {
        Ok(said)
    } else {
        Err(said)
    }
}

fn rules_text() -> String {
    fs::read_to_string(here(RULES)).unwrap()
}

/// The values of `key:` lines (`- name:`, `- alert:`, `- record:`).
fn values_of(yaml: &str, key: &str) -> Vec<String> {
    let prefix = format!("- {key}:");
    yaml.lines().filter_map(|l| l.trim_start().strip_prefix(prefix.as_str())).map(|v| v.trim().to_string()).collect()
}

/// Every `expr:` of a rules file, inline or a `|` block.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(rest) = l.trim_start().strip_prefix("expr:") else { continue };
        if rest.trim() != "|" {
            out.push(rest.trim().to_string());
            continue;
        }
        let indent = l.len() - l.trim_start().len();
        let block: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|b| b.trim().is_empty() || b.len() - b.trim_start().len() > indent)
            .map(|b| b.trim())
            .collect();
        out.push(block.join("\n"));
    }
    out
}

/// The metric and recording-rule names in a PromQL expression: identifiers
/// outside string literals, numbers and durations skipped; those naming
/// milspecd's own series (`milspecd_*`, `process_*`) or a recorded one
/// (`level:metric:operation`).
fn names_in(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            if word.contains(':') || word.starts_with("milspecd_") || word.starts_with("process_") {
                out.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// The metric names milspecd writes, every optional series included.
fn rendered_names() -> BTreeSet<String> {
    let text = milspecd::metrics::render(&full_snapshot());
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// The names in `expr` neither rendered nor recorded.
fn unknown_names(expr: &str, rendered: &BTreeSet<String>, recorded: &BTreeSet<String>) -> Vec<String> {
    names_in(expr).into_iter().filter(|n| !rendered.contains(n) && !recorded.contains(n)).collect()
}

fn recorded() -> BTreeSet<String> {
    values_of(&rules_text(), "record").into_iter().collect()
}

#[test]
fn promtool_accepts_the_shipped_rules_and_refuses_a_broken_file() {
    if !have("promtool", "prometheus") {
        return;
    }
    let said = promtool(&["check", "rules", RULES], &here("")).unwrap_or_else(|e| panic!("promtool check rules:\n{e}"));
    assert!(said.contains("SUCCESS"), "{said}");
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.yml");
    fs::write(&broken, "groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: rate(milspecd_up[5m]\n")
        .unwrap();
    assert!(promtool(&["check", "rules", broken.to_str().unwrap()], tmp.path()).is_err());
}

#[test]
fn every_group_has_a_passing_unit_test_file_naming_each_alert() {
    if !have("promtool", "prometheus") {
        return;
    }
    let rules = rules_text();
    let dir = here(UNIT_TESTS);
    let mut tested = String::new();
    for group in values_of(&rules, "name") {
        let file = format!("{}.test.yml", group.strip_prefix("milspecd.").expect("groups are named milspecd.*"));
        let text = fs::read_to_string(dir.join(&file)).unwrap_or_else(|e| panic!("{file} tests group {group}: {e}"));
        tested.push_str(&text);
        promtool(&["test", "rules", &file], &dir).unwrap_or_else(|e| panic!("promtool test rules {file}:\n{e}"));
    }
    for alert in values_of(&rules, "alert") {
        // At least once quiet and once firing.
        let quiet = format!("alertname: {alert}\n        exp_alerts: []\n");
        let firing = format!("alertname: {alert}\n        exp_alerts:\n          - exp_labels:");
        assert!(tested.contains(&quiet), "{UNIT_TESTS} never expects {alert} quiet");
        assert!(tested.contains(&firing), "{UNIT_TESTS} never expects {alert} firing");
    }
    // A wrong expectation fails (the unit tests can fail).
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong.test.yml");
    fs::write(
        &wrong,
        format!(
            "rule_files: ['{}']\ntests:\n  - interval: 1m\n    input_series:\n      - series: 'milspecd_reboot_required{{instance=\"a\",job=\"node\"}}'\n        values: '1x30'\n    alert_rule_test:\n      - eval_time: 20m\n        alertname: MilspecdRebootRequired\n        exp_alerts: []\n",
            here(RULES).display()
        ),
    )
    .unwrap();
    assert!(promtool(&["test", "rules", "wrong.test.yml"], tmp.path()).is_err());
}

#[test]
fn the_rules_use_only_metrics_milspecd_writes() {
    let (rendered, recorded) = (rendered_names(), recorded());
    assert!(
        rendered.contains("milspecd_rollbacks_total") && rendered.contains("milspecd_available_info"),
        "{rendered:?}"
    );
    let exprs = rule_exprs(&rules_text());
    assert_eq!(exprs.len(), values_of(&rules_text(), "alert").len() + recorded.len());
    for e in &exprs {
        assert!(
            unknown_names(e, &rendered, &recorded).is_empty(),
            "{:?} in {e}",
            unknown_names(e, &rendered, &recorded)
        );
    }
    // The check sees a name that does not exist, and nothing in quotes.
    assert_eq!(unknown_names("rate(milspecd_swap_total[5m]) > 0", &rendered, &recorded), ["milspecd_swap_total"]);
    assert_eq!(unknown_names("x:y:z or milspecd_up", &rendered, &recorded), ["x:y:z"]);
    assert!(
        unknown_names(r#"label_replace(milspecd_up, "a", "milspecd_nope", "", "")"#, &rendered, &recorded).is_empty()
    );
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Grafana's interval variables, as promtool cannot parse them.
fn offline(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")
}

#[test]
fn the_dashboard_is_valid_and_each_panel_expression_parses_and_uses_written_metrics() {
    let d: Value = serde_json::from_str(&fs::read_to_string(here(DASHBOARD)).unwrap()).expect("the dashboard is JSON");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "a recent schema");
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(d["templating"]["list"][0]["name"], "DS_PROMETHEUS", "resolves when provisioned from a file too");
    let (rendered, recorded) = (rendered_names(), recorded());
    let mut exprs = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel ids are unique");
        assert!(!p["title"].as_str().unwrap().is_empty());
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{} has targets", p["title"]));
        assert!(!targets.is_empty());
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}");
            let e = t["expr"].as_str().unwrap().to_string();
            let unknown = unknown_names(&e, &rendered, &recorded);
            assert!(unknown.is_empty(), "panel {}: {unknown:?} are neither written nor recorded: {e}", p["title"]);
            exprs.push(offline(&e));
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    if !have("promtool", "prometheus") {
        return;
    }
    // Each expression wrapped as a recording rule: promtool parses them all.
    let wrap = |list: &[String]| {
        let mut y = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, e) in list.iter().enumerate() {
            // A JSON string is a YAML double-quoted scalar.
            y.push_str(&format!(
                "      - record: dashboard:panel_{i}:expr\n        expr: {}\n",
                Value::from(e.as_str())
            ));
        }
        y
    };
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("dashboard.yml"), wrap(&exprs)).unwrap();
    promtool(&["check", "rules", "dashboard.yml"], tmp.path()).unwrap_or_else(|e| panic!("panel expressions:\n{e}"));
    // And a broken expression is refused.
    fs::write(tmp.path().join("broken.yml"), wrap(&["sum by (version (milspecd_up)".to_string()])).unwrap();
    assert!(promtool(&["check", "rules", "broken.yml"], tmp.path()).is_err());
}
