//! `systemd/milspecd.catalog` documents every MESSAGE_ID the daemon logs,
//! and journalctl's own parser accepts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::Command;

use milspecd::journal;

fn catalog() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/milspecd.catalog")).unwrap()
}

#[test]
fn every_id_has_one_complete_entry() {
    let text = catalog();
    let entries: Vec<&str> = text.split("\n-- ").skip(1).collect();
    assert_eq!(entries.len(), journal::ALL.len(), "one entry per id");
    for (name, id) in journal::ALL {
        let found: Vec<_> = entries.iter().filter(|e| e.starts_with(id)).collect();
        assert_eq!(found.len(), 1, "{name} ({id})");
        for field in ["Subject: ", "Defined-By: milspecd", "Support: ", "Documentation: "] {
            assert!(found[0].lines().any(|l| l.starts_with(field)), "{name}: no {field}");
        }
        let body = found[0].split("\n\n").skip(1).collect::<Vec<_>>().join("\n\n");
        assert!(body.trim().len() > 80, "{name}: the body says what happened and what to do");
    }
}

#[test]
fn journalctl_indexes_the_catalog() {
    if Command::new("journalctl").arg("--version").output().is_err() {
        eprintln!("journalctl not installed: skipping the parser check (apt-get install systemd)");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/systemd/catalog");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(root.path().join("var/lib/systemd")).unwrap();
    fs::write(dir.join("milspecd.catalog"), catalog()).unwrap();
    let o = Command::new("journalctl").arg("--root").arg(root.path()).arg("--update-catalog").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "journalctl complained: {}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new("journalctl").arg("--root").arg(root.path()).arg("--list-catalog").output().unwrap();
    assert!(o.status.success());
    let listed = String::from_utf8_lossy(&o.stdout);
    for (name, id) in journal::ALL {
        assert!(
            listed.lines().any(|l| l.starts_with(&format!("{id} milspecd: "))),
            "{name} ({id}) not listed:\n{listed}"
        );
    }
}
