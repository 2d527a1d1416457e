//! The history's hash chain on real files: it survives rotation and
//! retention, and an edited, a deleted and a reordered record are each
//! found, in a rotated file or across the boundary between two files; the
//! offline `milspecd history --verify` says the same.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod schema_support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use milspecd::history::{Actor, Anchor, Break, Event, EventKind, History, Origin, Retention, Verdict};

/// A history of `count` records over several files (rotated every ~1 KiB).
fn written(dir: &Path, count: u64) -> History {
    let h = History::new(dir).with_rotate_at(1024);
    for i in 0..count {
        let ev = Event::new(if i % 2 == 0 { EventKind::Staged } else { EventKind::Committed })
            .version(format!("1.{i}.0"))
            .reason("r".repeat(200))
            .actor(Actor::Timer)
            .origin(Origin::Mirror { mirror: "https://mirror.example/".into(), index_version: i });
        h.append(&ev).unwrap();
    }
    h
}

fn lines(p: &Path) -> Vec<String> {
    fs::read_to_string(p).unwrap().lines().map(str::to_string).collect()
}

fn put(p: &Path, lines: &[String]) {
    fs::write(p, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn broken(h: &History) -> milspecd::history::Broken {
    match h.verify().unwrap() {
        Verdict::Broken(b) => b,
        Verdict::Ok(v) => panic!("verified: {v:?}"),
    }
}

/// A fresh copy of `src` to tamper with.
fn copy(src: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    d
}

#[test]
fn the_chain_survives_rotation() {
    let d = tempfile::tempdir().unwrap();
    let h = written(d.path(), 30);
    let rotated = h.rotated().unwrap();
    assert!(rotated.len() >= 3, "{rotated:?}");
    let Verdict::Ok(v) = h.verify().unwrap() else { panic!("{:?}", h.verify()) };
    assert_eq!((v.records, v.first_n, v.last_n, v.anchor), (30, Some(1), Some(30), Anchor::Genesis));
    // The first record of each file chains to the last of the file before.
    let first_live: Event = serde_json::from_str(&lines(h.path())[0]).unwrap();
    let last_rotated = lines(&rotated.last().unwrap().1).pop().unwrap();
    assert_eq!(first_live.prev, Some(milspecd::history::chain::line_hash(last_rotated.as_bytes())));
    assert_eq!(h.read(1000).unwrap().len(), 30);
}

#[test]
fn an_edited_record_is_found() {
    let d = tempfile::tempdir().unwrap();
    let h = written(d.path(), 30);
    let (_, oldest) = h.rotated().unwrap().remove(0);
    let t = copy(d.path());
    let name = oldest.file_name().unwrap().to_str().unwrap().to_string();
    let p = t.path().join(&name);
    let mut l = lines(&p);
    l[0] = l[0].replace("\"staged\"", "\"rolled-back\"");
    put(&p, &l);
    let b = broken(&History::new(t.path()));
    assert_eq!((b.file.as_str(), b.line, b.n), (name.as_str(), 2, Some(2)), "{b:?}");
    assert!(matches!(b.what, Break::BadPrev { .. }), "{b:?}");

    // The last record of a rotated file: the next file's first record names it.
    let t = copy(d.path());
    let rotated = History::new(t.path()).rotated().unwrap();
    let (_, second) = &rotated[1];
    let mut l = lines(second);
    let last = l.len() - 1;
    l[last] = l[last].replace("1024", "1025").replace("\"r", "\"x");
    put(second, &l);
    let b = broken(&History::new(t.path()));
    assert_eq!(b.line, 1, "{b:?}");
    assert_eq!(b.file, rotated[2].1.file_name().unwrap().to_str().unwrap());
}

#[test]
fn a_deleted_record_is_found_within_and_across_files() {
    let d = tempfile::tempdir().unwrap();
    let h = written(d.path(), 30);
    let t = copy(d.path());
    let (_, oldest) = History::new(t.path()).rotated().unwrap().remove(0);
    let mut l = lines(&oldest);
    assert!(l.len() >= 2);
    l.remove(1);
    put(&oldest, &l);
    let b = broken(&History::new(t.path()));
    assert_eq!((b.line, &b.what), (2, &Break::Gap { expected: 2, found: 3 }), "{b:?}");

    // The live file's first record: the gap is at the boundary.
    let t = copy(d.path());
    let live = t.path().join("history.jsonl");
    let mut l = lines(&live);
    let gone: Event = serde_json::from_str(&l.remove(0)).unwrap();
    put(&live, &l);
    let b = broken(&History::new(t.path()));
    let n = gone.n.unwrap();
    assert_eq!((b.file.as_str(), &b.what), ("history.jsonl", &Break::Gap { expected: n, found: n + 1 }), "{b:?}");
    drop(h);
}

#[test]
fn a_reordered_record_is_found_across_files() {
    let d = tempfile::tempdir().unwrap();
    written(d.path(), 30);
    let t = copy(d.path());
    let h = History::new(t.path());
    let (_, newest) = h.rotated().unwrap().pop().unwrap();
    let live = t.path().join("history.jsonl");
    let (mut a, mut b) = (lines(&newest), lines(&live));
    let moved = a.pop().unwrap();
    let first = b.remove(0);
    a.push(first);
    b.insert(0, moved);
    put(&newest, &a);
    put(&live, &b);
    let br = broken(&h);
    assert!(matches!(br.what, Break::Reordered { .. }), "{br:?}");
    assert_eq!(br.file, newest.file_name().unwrap().to_str().unwrap());
}

#[test]
fn retention_drops_the_oldest_files_and_the_oldest_kept_record_anchors_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let h = History::new(d.path())
        .with_rotate_at(1024)
        .with_retention(Retention { period: Duration::from_secs(3600), max_size: 3 * 1024 });
    for i in 0..40 {
        h.append(&Event::new(EventKind::Rejected).reason(format!("{i} {}", "r".repeat(200)))).unwrap();
    }
    let rotated = h.rotated().unwrap();
    assert!(rotated.len() <= 3, "{rotated:?}");
    assert!(rotated[0].0 > 1, "the oldest files were dropped: {rotated:?}");
    let Verdict::Ok(v) = h.verify().unwrap() else { panic!("{:?}", h.verify()) };
    let first = v.first_n.unwrap();
    assert!(first > 1, "{v:?}");
    assert_eq!((v.anchor, v.last_n), (Anchor::Retained { n: first }, Some(40)));
}

#[test]
fn milspecd_history_verify_reads_the_files_and_exits_2_when_broken() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    fs::create_dir(&state).unwrap();
    written(&state, 12);
    let cfg = d.path().join("milspecd.toml");
    fs::write(&cfg, format!("[paths]\nstate_dir = \"{}\"\n", state.display())).unwrap();
    let run = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_milspecd"));
        c.args(["history", "--verify", "--config"]).arg(&cfg);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let o = run(true);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    schema_support::assert_valid("history-verify", &v, "milspecd history --verify --json");
    assert_eq!((v["result"].as_str(), v["records"].as_u64()), (Some("ok"), Some(12)), "{v}");
    assert_eq!(v["last_hash"].as_str().map(str::len), Some(64), "{v}");

    let live = state.join("history.jsonl");
    let mut l = lines(&live);
    l.swap(0, 1);
    put(&live, &l);
    let o = run(true);
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    schema_support::assert_valid("history-verify", &v, "milspecd history --verify --json (broken)");
    assert_eq!((v["result"].as_str(), v["broken"]["file"].as_str()), (Some("broken"), Some("history.jsonl")), "{v}");
    assert_eq!(v["broken"]["what"]["kind"], "reordered", "{v}");
    let o = run(false);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.starts_with("history chain broken at history.jsonl line 1"), "{text}");
}
