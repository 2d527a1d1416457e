//! Append-only, hash-chained event history: one JSON object per line in
//! `history.jsonl`, fsynced per event. The live file is rotated to
//! `history.jsonl.K` (a higher K is newer) when it grows past a limit; the
//! chain goes on across files, and `[history]` retention decides which
//! rotated files are dropped. The record type is in [`event`], the chain
//! and its verification in [`chain`], the retention decision in
//! [`retention`]; this module does the file I/O.

pub mod chain;
pub mod event;
pub mod retention;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use chain::{Anchor, Break, Broken, ChainVerifier, Verdict, Verified, GENESIS};
pub use event::{now_rfc3339, Actor, Authorized, Event, EventKind, Origin, MAX_LINE};
pub use retention::Retention;

/// The live file is rotated past this many bytes.
pub const ROTATE_BYTES: u64 = 512 * 1024;

/// Where a record went in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub n: u64,
    /// The record's hash (of its line).
    pub hash: String,
    /// The previous record's hash.
    pub prev: String,
}

/// The newest record: its number and hash.
#[derive(Debug, Clone)]
struct Tail {
    n: u64,
    hash: String,
}

#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
    rotate_at: u64,
    retention: Retention,
    /// Read from the files at the first append, then kept: the engine
    /// holds the state lock, so no one else appends.
    tail: Arc<Mutex<Option<Tail>>>,
}

impl History {
    pub fn new(state_dir: &Path) -> Self {
        History {
            path: state_dir.join("history.jsonl"),
            rotate_at: ROTATE_BYTES,
            retention: Retention::default(),
            tail: Arc::new(Mutex::new(None)),
        }
    }

    /// Keeps rotated files as `retention` says.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Rotates the live file past `bytes` (for tests; the default is [`ROTATE_BYTES`]).
    pub fn with_rotate_at(mut self, bytes: u64) -> Self {
        self.rotate_at = bytes.max(1);
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn rotated_path(&self, k: u64) -> PathBuf {
        self.path.with_extension(format!("jsonl.{k}"))
    }

    /// The rotated files, oldest (lowest K) first.
    pub fn rotated(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let prefix = format!("{}.", self.path.file_name().and_then(|n| n.to_str()).unwrap_or("history.jsonl"));
        let mut out = Vec::new();
        let entries = match fs::read_dir(self.dir()) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(k) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) {
                if let Ok(k) = k.parse::<u64>() {
                    out.push((k, entry.path()));
                }
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// Every file, oldest first: the rotated ones, then the live one.
    fn files(&self) -> io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = self.rotated()?.into_iter().map(|(_, p)| p).collect();
        files.push(self.path.clone());
        Ok(files)
    }

    /// Appends one event (numbered and chained to the one before) and
    /// fsyncs it; returns its place in the chain.
    pub fn append(&self, event: &Event) -> io::Result<Appended> {
        let mut guard = self.tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tail = match guard.take() {
            Some(t) => t,
            None => self.read_tail()?,
        };
        if fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) >= self.rotate_at {
            self.rotate()?;
        }
        let mut ev = event.clone();
        let n = tail.n.saturating_add(1);
        ev.n = Some(n);
        ev.prev = Some(tail.hash.clone());
        let mut line = serde_json::to_vec(&ev).map_err(io::Error::other)?;
        if line.len() > MAX_LINE {
            // A line longer than the reader takes would stop every later
            // append (its tail unreadable): the reason, the one free text
            // of any length, is cut to fit.
            let over = line.len() - MAX_LINE;
            let reason = ev.reason.take().unwrap_or_default();
            let keep = reason.len().saturating_sub(over + 64);
            let cut = reason.char_indices().map(|(i, _)| i).take_while(|i| *i <= keep).last().unwrap_or(0);
            ev.reason = Some(format!("{}…", &reason[..cut]));
            line = serde_json::to_vec(&ev).map_err(io::Error::other)?;
        }
        let hash = chain::line_hash(&line);
        line.push(b'\n');
        let mut f = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()?;
        milspec_format::atomic::sync_dir(self.dir())?;
        *guard = Some(Tail { n, hash: hash.clone() });
        Ok(Appended { n, hash, prev: tail.hash })
    }

    /// Moves the live file to the next `history.jsonl.K`, then drops the
    /// rotated files retention no longer keeps.
    fn rotate(&self) -> io::Result<()> {
        let rotated = self.rotated()?;
        let next = rotated.last().map_or(1, |(k, _)| k.saturating_add(1));
        fs::rename(&self.path, self.rotated_path(next))?;
        milspec_format::atomic::sync_dir(self.dir())?;
        let mut files = Vec::new();
        for (k, p) in self.rotated()? {
            let m = fs::metadata(&p)?;
            files.push(retention::Rotated { k, size: m.len(), modified: m.modified()? });
        }
        let drop = retention::to_drop(&files, 0, std::time::SystemTime::now(), self.retention);
        for k in &drop {
            // The record is still written: a file that cannot be dropped
            // now is dropped at the next rotation.
            if let Err(e) = fs::remove_file(self.rotated_path(*k)) {
                tracing::warn!(
                    "history: cannot drop {} past [history] retention: {e}",
                    self.rotated_path(*k).display()
                );
            }
        }
        if !drop.is_empty() {
            tracing::info!(dropped = drop.len(), "history: rotated files past [history] retention dropped");
            milspec_format::atomic::sync_dir(self.dir())?;
        }
        Ok(())
    }

    /// The newest record's number and hash, from the tail of the live file
    /// or else of the newest rotated file. A last line cut short by a
    /// crash (no newline) is removed first: its append never returned.
    fn read_tail(&self) -> io::Result<Tail> {
        cut_torn_line(&self.path)?;
        let mut files = self.files()?;
        files.reverse();
        for p in files {
            if let Some(line) = last_line(&p)? {
                #[derive(serde::Deserialize)]
                struct Link {
                    n: Option<u64>,
                }
                let n = serde_json::from_slice::<Link>(&line).ok().and_then(|l| l.n);
                // An unchained (older) record: the chain starts after it.
                let Some(n) = n else {
                    return Ok(Tail { n: 0, hash: GENESIS.into() });
                };
                return Ok(Tail { n, hash: chain::line_hash(&line) });
            }
        }
        Ok(Tail { n: 0, hash: GENESIS.into() })
    }

    /// The newest `limit` events, oldest first. Unreadable lines are skipped.
    pub fn read(&self, limit: usize) -> io::Result<Vec<Event>> {
        let mut files = self.files()?;
        files.reverse();
        let mut chunks = Vec::new();
        let mut count = 0usize;
        for p in files {
            if count >= limit {
                break;
            }
            let mut events = Vec::new();
            for_each_line(&p, |_, line, _| {
                if let Some(ev) = Event::parse_line(line) {
                    events.push(ev);
                }
            })?;
            count += events.len();
            chunks.push(events);
        }
        let mut out: Vec<Event> = chunks.into_iter().rev().flatten().collect();
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    /// Checks the whole chain, oldest file first: the first broken record,
    /// or what verified. It may run while the daemon appends: a last line
    /// of the live file still being written (or left by a crash, cut at
    /// the next append) is not a record yet, and a chain found broken is
    /// read once more, so a rotation between listing the files and reading
    /// them is not taken for a deletion. A record really edited, deleted
    /// or moved is broken both times.
    pub fn verify(&self) -> io::Result<Verdict> {
        match self.verify_once()? {
            Verdict::Broken(_) => self.verify_once(),
            ok => Ok(ok),
        }
    }

    fn verify_once(&self) -> io::Result<Verdict> {
        let mut v = ChainVerifier::new();
        for p in self.files()? {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let live = p == self.path;
            for_each_line(&p, |i, line, complete| {
                if complete || !live {
                    v.feed(&name, i, line);
                }
            })?;
            if v.is_broken() {
                break;
            }
        }
        Ok(v.finish())
    }
}

/// Calls `f` with each line of `path` (numbered from 1, without its
/// newline, and whether it had one); a missing file has none.
fn for_each_line(path: &Path, mut f: impl FnMut(u64, &[u8], bool)) -> io::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut n = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        n = n.saturating_add(1);
        // The third argument: whether the line ended with its newline.
        let complete = line.last() == Some(&b'\n');
        if complete {
            line.pop();
        }
        f(n, &line, complete);
    }
}

/// The last complete line of `path`, without its newline.
fn last_line(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let window = len.min(MAX_LINE as u64 + 2);
    f.seek(SeekFrom::Start(len - window))?;
    let mut buf = Vec::with_capacity(usize::try_from(window).unwrap_or(0));
    f.read_to_end(&mut buf)?;
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    if body.is_empty() {
        return Ok(None);
    }
    match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => Ok(Some(body[i + 1..].to_vec())),
        None if window == len => Ok(Some(body.to_vec())),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the last line of {} is longer than any history record; move the file aside to start a new chain",
                path.display()
            ),
        )),
    }
}

/// Removes a last line that has no newline (a write cut short by a crash).
fn cut_torn_line(path: &Path) -> io::Result<()> {
    let mut f = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let window = len.min(MAX_LINE as u64 + 2);
    f.seek(SeekFrom::Start(len - window))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    if buf.ends_with(b"\n") {
        return Ok(());
    }
    let keep = buf.iter().rposition(|&b| b == b'\n').map_or(len - window, |i| len - window + i as u64 + 1);
    tracing::warn!(path = %path.display(), bytes = len - keep, "history: a record cut short by a crash was removed");
    f.set_len(keep)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_being_written_is_not_taken_for_tampering() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path());
        h.append(&Event::new(EventKind::Staged)).unwrap();
        // Half a line at the end of the live file: a write in progress.
        let mut f = OpenOptions::new().append(true).open(h.path()).unwrap();
        f.write_all(b"{\"n\":2,\"prev\":\"ab").unwrap();
        assert!(matches!(h.verify().unwrap(), Verdict::Ok(v) if v.records == 1));
        // The same half line in a rotated file is broken.
        fs::rename(h.path(), d.path().join("history.jsonl.1")).unwrap();
        let v = History::new(d.path()).verify().unwrap();
        assert!(matches!(&v, Verdict::Broken(b) if b.what == Break::BadJson), "{v:?}");
    }

    #[test]
    fn an_overlong_reason_is_cut_so_the_chain_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path());
        h.append(&Event::new(EventKind::Rejected).reason("é".repeat(MAX_LINE))).unwrap();
        h.append(&Event::new(EventKind::Staged)).unwrap();
        let text = fs::read_to_string(h.path()).unwrap();
        assert!(text.lines().all(|l| l.len() <= MAX_LINE), "every line fits");
        assert!(matches!(h.verify().unwrap(), Verdict::Ok(v) if v.records == 2));
        let back = History::new(d.path());
        back.append(&Event::new(EventKind::Committed)).unwrap();
        assert_eq!(back.read(10).unwrap().len(), 3);
    }

    #[test]
    fn append_read_rotate() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path()).with_rotate_at(64 * 1024);
        h.append(&Event::new(EventKind::Staged).version("1.0.0").slot("a")).unwrap();
        h.append(&Event::new(EventKind::Committed).version("1.0.0")).unwrap();
        let ev = h.read(10).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].event, EventKind::Committed);
        assert_eq!((ev[0].n, ev[1].n), (Some(1), Some(2)));
        assert_eq!(ev[0].prev.as_deref(), Some(GENESIS));
        assert_eq!(h.read(1).unwrap().len(), 1);
        let big = Event::new(EventKind::Rejected).reason("x".repeat(10_000));
        for _ in 0..120 {
            h.append(&big).unwrap();
        }
        assert!(h.rotated().unwrap().len() >= 2, "rotated");
        let all = h.read(1000).unwrap();
        assert_eq!(all.len(), 122);
        assert_eq!(all.last().unwrap().n, Some(122));
        assert_eq!(h.read(5).unwrap()[0].n, Some(118));
    }

    #[test]
    fn reasons_are_escaped_on_write_and_on_read() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path());
        h.append(&Event::new(EventKind::Rejected).reason("bad\0sig\x1b[2J\u{202e}")).unwrap();
        // A record written raw (by an older build) is escaped when read.
        let raw = r#"{"at":"2026-01-01T00:00:00Z","event":"rejected","reason":"x\u0000\u001b\u009b"}"#;
        let mut f = OpenOptions::new().append(true).open(h.path()).unwrap();
        writeln!(f, "{raw}").unwrap();
        let ev = h.read(10).unwrap();
        assert_eq!(ev[0].reason.as_deref(), Some("bad\\x00sig\\x1b[2J\\u{202e}"));
        assert_eq!(ev[1].reason.as_deref(), Some("x\\x00\\x1b\\x9b"));
        let text = fs::read_to_string(h.path()).unwrap();
        assert!(!text.lines().next().unwrap().contains("\\u0000"), "{text}");
    }

    #[test]
    fn the_chain_continues_from_the_files_after_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path()).with_rotate_at(300);
        for _ in 0..4 {
            h.append(&Event::new(EventKind::Staged).reason("r".repeat(200))).unwrap();
        }
        // A new process: the tail is read back from the files.
        let again = History::new(d.path()).with_rotate_at(300);
        let a = again.append(&Event::new(EventKind::Committed)).unwrap();
        assert_eq!(a.n, 5);
        let Verdict::Ok(v) = again.verify().unwrap() else { panic!("{:?}", again.verify()) };
        assert_eq!((v.records, v.last_n, v.anchor), (5, Some(5), Anchor::Genesis));
        assert_eq!(v.last_hash, Some(a.hash));
        // The live file empty just after a rotation: the tail is the newest rotated file's.
        fs::write(h.path(), b"").unwrap();
        let third = History::new(d.path());
        assert_eq!(third.append(&Event::new(EventKind::Drift)).unwrap().n, 5, "record 5 was emptied away");
    }

    #[test]
    fn a_torn_last_line_is_cut_before_appending() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path());
        h.append(&Event::new(EventKind::Staged)).unwrap();
        let mut f = OpenOptions::new().append(true).open(h.path()).unwrap();
        f.write_all(br#"{"n":2,"prev":"ab"#).unwrap();
        let again = History::new(d.path());
        assert_eq!(again.append(&Event::new(EventKind::Committed)).unwrap().n, 2);
        assert!(matches!(again.verify().unwrap(), Verdict::Ok(Verified { records: 2, .. })));
    }

    #[test]
    fn unchained_records_are_followed_by_a_new_chain() {
        let d = tempfile::tempdir().unwrap();
        let old = "{\"at\":\"2025-01-01T00:00:00Z\",\"event\":\"committed\",\"version\":\"1.0.0\"}\n";
        fs::write(d.path().join("history.jsonl"), old.repeat(3)).unwrap();
        let h = History::new(d.path());
        assert_eq!(h.append(&Event::new(EventKind::Staged)).unwrap().n, 1);
        let Verdict::Ok(v) = h.verify().unwrap() else { panic!() };
        assert_eq!((v.unchained, v.records, v.anchor), (3, 1, Anchor::Genesis));
        assert_eq!(h.read(10).unwrap().len(), 4);
    }
}
