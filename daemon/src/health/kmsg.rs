//! The kernel log (`/dev/kmsg`): records, a matcher that spots fault
//! reports naming the module, and a non-blocking reader.
//!
//! A record is `prio,seq,timestamp_us,flags[,...];message`, optionally
//! followed by continuation lines that start with a space (`\n KEY=VALUE`).
//! `/dev/kmsg` hands out one record per `read()`. A regular file or a FIFO
//! of newline-separated records is read line by line instead, so tests can
//! feed recorded fixtures.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Words that start a kernel fault report.
const HEADERS: [&str; 4] = ["BUG:", "Oops", "WARNING:", "Call Trace"];
/// Ends a report early.
const END_TRACE: &str = "---[ end trace";
/// How many records after a header still belong to its report.
const BLOCK_RECORDS: usize = 50;
/// Lines listing every loaded module; they name the module in any report.
const MODULE_LISTS: [&str; 2] = ["Modules linked in:", "Unloaded tainted modules:"];
/// Longest piece of a log line kept in a fault reason.
const LINE_MAX: usize = 300;
/// Read buffer: larger than the biggest record `/dev/kmsg` hands out (8 KiB).
const READ_BUF: usize = 16 * 1024;
/// A stream line longer than this is dropped (it is no kmsg record).
const MAX_LINE: usize = 64 * 1024;
/// Records returned by one [`KmsgReader::read_available`] call at most.
const MAX_BATCH: usize = 4096;

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    /// Log level, 0 (emerg) to 7 (debug).
    pub level: u8,
    pub seq: u64,
    /// Microseconds since boot.
    pub timestamp_us: u64,
    /// The text, without continuation lines.
    pub message: String,
}

/// Parses one record as `/dev/kmsg` returns it; `None` if it is not one.
pub fn parse_record(raw: &[u8]) -> Option<KmsgRecord> {
    let semi = raw.iter().position(|&b| b == b';')?;
    let header = std::str::from_utf8(&raw[..semi]).ok()?;
    let mut fields = header.split(',');
    let prio: u32 = fields.next()?.trim().parse().ok()?;
    let seq = fields.next()?.trim().parse().ok()?;
    let timestamp_us = fields.next()?.trim().parse().ok()?;
    let body = &raw[semi + 1..];
    let end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    Some(KmsgRecord {
        level: (prio & 7) as u8,
        seq,
        timestamp_us,
        message: String::from_utf8_lossy(&body[..end]).into_owned(),
    })
}

/// Spots kernel fault reports that involve one module.
///
/// A report spans several records: a header (`BUG:`, `Oops`, `WARNING:`,
/// `Call Trace`) opens a block of the next [`BLOCK_RECORDS`] records, or up
/// to `---[ end trace`; a record in the block naming the module makes the
/// report a fault. The `Modules linked in:` list does not count: it names
/// every loaded module in every report.
#[derive(Debug, Clone)]
pub struct FaultMatcher {
    /// Substrings that name the module.
    needles: Vec<String>,
    /// `(rest of the line == module)` word match, e.g. `... dell_milspec`.
    module: String,
    block: Option<Block>,
    /// Header of the newest report that did not name the module.
    foreign: Option<String>,
}

#[derive(Debug, Clone)]
struct Block {
    header: String,
    /// Records that may still belong to this report.
    left: usize,
    /// Whether this report has already been returned as a fault.
    reported: bool,
}

impl FaultMatcher {
    pub fn new(module: &str) -> Self {
        let mut needles = vec![format!("[{module}]"), format!("{module}("), format!(" {module} ")];
        let source = module.replace('_', "-");
        if source != module {
            needles.push(source);
        }
        FaultMatcher { needles, module: module.to_string(), block: None, foreign: None }
    }

    /// The header of the newest fault report fed so far that named
    /// another module or none (`None` once taken, or if there was none).
    pub fn take_foreign(&mut self) -> Option<String> {
        if self.block.as_ref().is_some_and(|b| !b.reported) {
            return self.block.as_ref().map(|b| b.header.clone());
        }
        self.foreign.take()
    }

    /// Feeds the next record; returns the reason when it completes a fault.
    /// A report is reported once, however many of its records name the module.
    pub fn feed(&mut self, record: &KmsgRecord) -> Option<String> {
        self.feed_line(&record.message)
    }

    /// [`Self::feed`] on bare message text.
    pub fn feed_line(&mut self, line: &str) -> Option<String> {
        let names = self.names_module(line);
        let Some(block) = &mut self.block else {
            if !is_header(line) {
                return None;
            }
            self.block = Some(Block { header: bounded(line), left: BLOCK_RECORDS, reported: names });
            return names.then(|| bounded(line));
        };
        let foreign = (!block.reported).then(|| block.header.clone());
        let mut reason = None;
        if names && !block.reported {
            block.reported = true;
            reason = Some(format!("{}; {}", block.header, bounded(line)));
        }
        block.left -= 1;
        if block.left == 0 || line.contains(END_TRACE) {
            if !block.reported {
                self.foreign = foreign;
            }
            self.block = None;
        }
        reason
    }

    /// Whether a line names the module, other than in a list of all modules.
    fn names_module(&self, line: &str) -> bool {
        let trimmed = line.trim_start();
        if MODULE_LISTS.iter().any(|l| trimmed.starts_with(l)) {
            return false;
        }
        self.needles.iter().any(|n| line.contains(n.as_str()))
            || line.strip_suffix(self.module.as_str()).is_some_and(|s| s.ends_with(' '))
    }
}

fn is_header(line: &str) -> bool {
    HEADERS.iter().any(|h| line.contains(h))
}

/// A bounded copy of a log line for a reason string.
fn bounded(line: &str) -> String {
    let line = line.trim();
    match line.char_indices().nth(LINE_MAX) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `/dev/kmsg`: one record per `read()`.
    Device,
    /// A regular file: newline-separated records, seekable.
    File,
    /// A FIFO: newline-separated records, not seekable.
    Fifo,
}

/// Reads new kernel log records without blocking.
#[derive(Debug)]
pub struct KmsgReader {
    file: File,
    path: PathBuf,
    source: Source,
    /// Incomplete trailing line of a file or FIFO.
    pending: Vec<u8>,
    buf: Vec<u8>,
    /// Set once a read error has been logged, so it is logged only once.
    error_logged: bool,
    /// Records stamped earlier than this (µs since boot) are skipped.
    since_us: u64,
}

impl KmsgReader {
    /// Opens `path` non-blocking, positioned at its end: only records
    /// written from now on will be returned.
    pub fn open_at_end(path: &Path) -> io::Result<Self> {
        Self::open(path, None)
    }

    /// Opens `path` at its oldest record, returning only records stamped
    /// at or after `since` (time since boot): a resumed trial reads what the
    /// kernel logged while no watcher was there.
    pub fn open_since(path: &Path, since: Duration) -> io::Result<Self> {
        Self::open(path, Some(since))
    }

    fn open(path: &Path, since: Option<Duration>) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).custom_flags(OFlag::O_NONBLOCK.bits()).open(path)?;
        let file_type = file.metadata()?.file_type();
        let source = if file_type.is_char_device() {
            Source::Device
        } else if file_type.is_fifo() {
            Source::Fifo
        } else {
            Source::File
        };
        let mut reader = KmsgReader {
            file,
            path: path.to_path_buf(),
            source,
            pending: Vec::new(),
            buf: vec![0; READ_BUF],
            error_logged: false,
            since_us: since.map_or(0, |s| s.as_micros().try_into().unwrap_or(u64::MAX)),
        };
        if source != Source::Fifo && since.is_none() {
            reader.file.seek(SeekFrom::End(0))?;
        }
        Ok(reader)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for new records (a plain file just sleeps).
    pub fn wait(&self, timeout: Duration) {
        if self.source == Source::File {
            std::thread::sleep(timeout);
            return;
        }
        let ms = timeout.as_micros().div_ceil(1000);
        let poll_timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
        let ready = nix::poll::poll(&mut fds, poll_timeout);
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        // A FIFO whose writer left reports POLLHUP at once, forever: sleep instead.
        if ready.is_ok() && revents.contains(PollFlags::POLLHUP) && !revents.contains(PollFlags::POLLIN) {
            std::thread::sleep(timeout);
        }
    }

    /// Returns every record that can be read now (up to a bounded batch).
    pub fn read_available(&mut self) -> Vec<KmsgRecord> {
        let mut records = match self.source {
            Source::Device => self.read_device(),
            Source::File | Source::Fifo => self.read_stream(),
        };
        if self.since_us > 0 {
            records.retain(|r| r.timestamp_us >= self.since_us);
        }
        records
    }

    fn read_device(&mut self) -> Vec<KmsgRecord> {
        let mut records = Vec::new();
        while records.len() < MAX_BATCH {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => records.extend(parse_record(&self.buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(Errno::EPIPE as i32) => {
                    tracing::warn!(path = %self.path.display(), "kernel log records were overwritten before they were read");
                }
                Err(e) => {
                    self.log_error(&e);
                    break;
                }
            }
        }
        records
    }

    fn read_stream(&mut self) -> Vec<KmsgRecord> {
        loop {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.extend_from_slice(&self.buf[..n]);
                    if self.pending.len() >= MAX_BATCH * 256 {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    self.log_error(&e);
                    break;
                }
            }
        }
        self.take_lines()
    }

    /// Parses the complete lines in `pending`, keeping an unfinished tail.
    fn take_lines(&mut self) -> Vec<KmsgRecord> {
        let Some(last_nl) = self.pending.iter().rposition(|&b| b == b'\n') else {
            if self.pending.len() > MAX_LINE {
                self.pending.clear();
            }
            return Vec::new();
        };
        let records = self.pending[..last_nl]
            .split(|&b| b == b'\n')
            .filter(|line| !line.starts_with(b" "))
            .filter_map(parse_record)
            .collect();
        self.pending.drain(..=last_nl);
        records
    }

    fn log_error(&mut self, e: &io::Error) {
        if !self.error_logged {
            self.error_logged = true;
            tracing::warn!(path = %self.path.display(), "cannot read the kernel log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fixture(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Feeds a fixture of records, returning every fault reason.
    fn faults(text: &str) -> Vec<String> {
        let mut m = FaultMatcher::new("dell_milspec");
        text.lines()
            .filter(|l| !l.starts_with(' '))
            .map(|l| parse_record(l.as_bytes()).unwrap_or_else(|| panic!("not a record: {l}")))
            .filter_map(|r| m.feed(&r))
            .collect()
    }

    #[test]
    fn parses_a_record() {
        let r = parse_record(b"4,1522,5123401050,-,caller=T312;hello world\n SUBSYSTEM=acpi\n").unwrap();
        assert_eq!(r, KmsgRecord { level: 4, seq: 1522, timestamp_us: 5123401050, message: "hello world".into() });
        // Facility 3 (daemon), level 6.
        assert_eq!(parse_record(b"30,7,100,c;x").unwrap().level, 6);
        assert_eq!(parse_record(b"6,1,2,-;").unwrap().message, "");
        for bad in [&b"no header"[..], b"a,b,c,-;x", b"6,1;x", b""] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn warn_report_matches() {
        let f = faults(&fixture("kmsg-warn.txt"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("WARNING: CPU: 0 PID: 312 at"), "{f:?}");
        assert!(f[0].contains("[dell_milspec]"), "{f:?}");
    }

    #[test]
    fn oops_report_matches_on_a_later_record() {
        let f = faults(&fixture("kmsg-oops.txt"));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].starts_with("BUG: kernel NULL pointer dereference"), "{f:?}");
        assert!(f[0].contains("milspec_oops_fn"), "{f:?}");
    }

    #[test]
    fn other_module_report_does_not_match() {
        assert_eq!(faults(&fixture("kmsg-other-module.txt")), Vec::<String>::new());
    }

    #[test]
    fn another_module_report_is_kept_as_foreign() {
        let mut m = FaultMatcher::new("dell_milspec");
        assert_eq!(m.take_foreign(), None);
        for l in fixture("kmsg-other-module.txt").lines().filter(|l| !l.starts_with(' ')) {
            assert_eq!(m.feed(&parse_record(l.as_bytes()).unwrap()), None);
        }
        let foreign = m.take_foreign().expect("a foreign report");
        assert!(foreign.contains("WARNING") || foreign.contains("BUG"), "{foreign}");
        assert_eq!(m.take_foreign(), None);
        // A report that names the module is not foreign.
        for l in fixture("kmsg-warn.txt").lines().filter(|l| !l.starts_with(' ')) {
            m.feed(&parse_record(l.as_bytes()).unwrap());
        }
        assert_eq!(m.take_foreign(), None);
    }

    #[test]
    fn a_reader_since_a_time_replays_only_later_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        std::fs::write(&path, "4,1,1000000,-;early\n4,2,2000000,-;at two\n4,3,3500000,-;later\n").unwrap();
        let mut r = KmsgReader::open_since(&path, Duration::from_secs(2)).unwrap();
        let got: Vec<String> = r.read_available().into_iter().map(|r| r.message).collect();
        assert_eq!(got, ["at two", "later"]);
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"4,4,1,-;stamped early\n4,5,4000000,-;new\n")
            .unwrap();
        let got: Vec<String> = r.read_available().into_iter().map(|r| r.message).collect();
        assert_eq!(got, ["new"]);
    }

    #[test]
    fn benign_lines_do_not_match() {
        assert_eq!(faults(&fixture("kmsg-benign.txt")), Vec::<String>::new());
    }

    #[test]
    fn block_ends_at_end_trace_and_after_its_budget() {
        let mut m = FaultMatcher::new("dell_milspec");
        assert_eq!(m.feed_line("WARNING: CPU: 1 PID: 9 at fs/x.c:1 f+0x1/0x2"), None);
        assert_eq!(m.feed_line("---[ end trace 0000000000000000 ]---"), None);
        assert_eq!(m.feed_line(" milspec_fn+0x1/0x2 [dell_milspec]"), None);

        assert_eq!(m.feed_line("BUG: soft lockup - CPU#0 stuck for 22s!"), None);
        for _ in 0..BLOCK_RECORDS {
            assert_eq!(m.feed_line("filler"), None);
        }
        assert_eq!(m.feed_line(" milspec_fn+0x1/0x2 [dell_milspec]"), None);
    }

    #[test]
    fn naming_forms() {
        for line in [
            "WARNING: CPU: 0 PID: 1 at /build/kmod/dell-milspec.c:80 f+0x1/0x2",
            "BUG: unable to handle page fault in dell_milspec",
            "Call Trace: x [dell_milspec]",
        ] {
            assert!(FaultMatcher::new("dell_milspec").feed_line(line).is_some(), "{line}");
        }
        let mut m = FaultMatcher::new("dell_milspec");
        assert!(m.feed_line("BUG: scheduling while atomic: insmod/312/0x00000002").is_none());
        assert!(m.feed_line("Modules linked in: dell_milspec(OE) dell_milspec").is_none());
        assert!(m.feed_line("Unloaded tainted modules: dell_milspec(OE):1").is_none());
    }

    #[test]
    fn each_report_is_reported_once() {
        let warn = fixture("kmsg-warn.txt");
        let f = faults(&format!("{warn}{warn}"));
        assert_eq!(f.len(), 2, "{f:?}");
    }

    #[test]
    fn long_reasons_are_bounded() {
        let mut m = FaultMatcher::new("dell_milspec");
        let line = format!("WARNING: {} [dell_milspec]", "x".repeat(5000));
        assert!(m.feed_line(&line).unwrap().chars().count() <= LINE_MAX + 1);
    }

    #[test]
    fn file_reader_starts_at_end_and_keeps_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        std::fs::write(&path, "6,1,1,-;old record\n").unwrap();
        let mut r = KmsgReader::open_at_end(&path).unwrap();
        assert_eq!(r.read_available(), vec![]);

        let mut w = OpenOptions::new().append(true).open(&path).unwrap();
        w.write_all(b"4,2,2,-;first\n SUBSYSTEM=x\n4,3,3,-;sec").unwrap();
        let got: Vec<_> = r.read_available().into_iter().map(|r| r.message).collect();
        assert_eq!(got, ["first"]);
        w.write_all(b"ond\nnot a record\n").unwrap();
        let got: Vec<_> = r.read_available().into_iter().map(|r| r.seq).collect();
        assert_eq!(got, [3]);
        r.wait(Duration::from_millis(1));
    }

    #[test]
    fn fifo_reader_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let mut r = KmsgReader::open_at_end(&path).unwrap();
        assert_eq!(r.read_available(), vec![]);
        // No writer yet, then a writer that leaves: neither may spin or block.
        r.wait(Duration::from_millis(10));
        {
            let mut w = OpenOptions::new().write(true).open(&path).unwrap();
            w.write_all(b"4,9,9,-;through a fifo\n").unwrap();
        }
        r.wait(Duration::from_millis(500));
        let got: Vec<_> = r.read_available().into_iter().map(|r| r.message).collect();
        assert_eq!(got, ["through a fifo"]);
        let t = std::time::Instant::now();
        r.wait(Duration::from_millis(50));
        assert!(t.elapsed() >= Duration::from_millis(40));
    }
}
