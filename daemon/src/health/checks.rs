//! Operator-supplied health checks, run at the end of probation.
//!
//! Executables in `<checks_dir>/required.d/` must all exit 0 within the
//! timeout or the module is unhealthy; those in `<checks_dir>/wanted.d/`
//! are only logged when they fail. Each directory runs in name order;
//! hidden and non-executable files are skipped, a missing directory is
//! an empty one.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::Unhealthy;

/// Output kept per stream: the last this many bytes.
const OUTPUT_TAIL: usize = 4096;
/// Longest last line quoted in a failure.
const LINE_MAX: usize = 200;
/// Longest single wait between looks at a running check.
const POLL_STEP: Duration = Duration::from_millis(20);

/// The two kinds of check directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// `required.d`: a failure makes the module unhealthy.
    Required,
    /// `wanted.d`: a failure is logged.
    Wanted,
}

impl CheckKind {
    pub fn dir_name(self) -> &'static str {
        match self {
            CheckKind::Required => "required.d",
            CheckKind::Wanted => "wanted.d",
        }
    }
}

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// `required.d/10-name`.
    pub name: String,
    /// `None` when it passed; otherwise what went wrong, with its last output line.
    pub failure: Option<String>,
}

/// Runs the required checks, stopping at the first failure, then the
/// wanted ones. Returns why the module is unhealthy, if a required check failed.
pub fn run_checks(checks_dir: &Path, timeout: Duration) -> Option<Unhealthy> {
    if let Some(bad) = run_kind(checks_dir, CheckKind::Required, timeout) {
        return Some(bad);
    }
    run_kind(checks_dir, CheckKind::Wanted, timeout);
    None
}

/// Runs the checks of one kind; the first required failure, if any.
fn run_kind(checks_dir: &Path, kind: CheckKind, timeout: Duration) -> Option<Unhealthy> {
    let dir = checks_dir.join(kind.dir_name());
    let checks = match list_checks(&dir) {
        Ok(checks) => checks,
        Err(e) => {
            let why = format!("cannot list {}: {e}", dir.display());
            return failed(kind, kind.dir_name().to_string(), why);
        }
    };
    for path in checks {
        let result = run_check(&path, kind, timeout);
        match result.failure {
            None => tracing::debug!(check = %result.name, "health check passed"),
            Some(why) => {
                if let Some(bad) = failed(kind, result.name, why) {
                    return Some(bad);
                }
            }
        }
    }
    None
}

/// Logs a failure; for a required check, turns it into the verdict.
fn failed(kind: CheckKind, name: String, why: String) -> Option<Unhealthy> {
    match kind {
        CheckKind::Required => Some(Unhealthy::CheckFailed { name, why }),
        CheckKind::Wanted => {
            tracing::warn!(check = %name, "wanted health check failed: {why}");
            None
        }
    }
}

/// The executables in `dir`, in name order. A missing `dir` is empty.
pub fn list_checks(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut checks = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, so a link to an executable counts.
        match fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => checks.push(path),
            _ => tracing::debug!(path = %path.display(), "not an executable file, skipped"),
        }
    }
    checks.sort();
    Ok(checks)
}

/// Runs one check with a deadline; on timeout its whole process group is killed.
pub fn run_check(path: &Path, kind: CheckKind, timeout: Duration) -> CheckResult {
    let file_name = path.file_name().unwrap_or(path.as_os_str()).to_string_lossy();
    let name = format!("{}/{file_name}", kind.dir_name());
    let failure = match spawn_retrying(path, &[]) {
        Ok(running) => running.finish(timeout),
        Err(e) => Some(format!("cannot run {}: {e}", path.display())),
    };
    CheckResult { name, failure }
}

/// Tries of a check whose file is busy (`ETXTBSY`), and the pause between.
const BUSY_TRIES: u32 = 5;
const BUSY_PAUSE: Duration = Duration::from_millis(20);

/// [`Running::spawn`], tried again while the file is busy being written:
/// a check replaced at that moment (configuration management), or a
/// write descriptor held for an instant by a child forked elsewhere in
/// the process before its exec closes it.
/// Runs `argv` (an absolute program path and its arguments) with a
/// deadline, as an executable check is run; why it failed, if it did.
pub fn run_command(argv: &[String], timeout: Duration) -> Option<String> {
    let Some((program, args)) = argv.split_first() else {
        return Some("no command given".into());
    };
    match spawn_retrying(Path::new(program), args) {
        Ok(running) => running.finish(timeout),
        Err(e) => Some(format!("cannot run {program}: {e}")),
    }
}

fn spawn_retrying(path: &Path, args: &[String]) -> io::Result<Running> {
    let mut tries = 1;
    loop {
        match Running::spawn(path, args) {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < BUSY_TRIES => {
                tries += 1;
                std::thread::sleep(BUSY_PAUSE);
            }
            other => return other,
        }
    }
}

/// A started check and the tails of its output.
struct Running {
    child: Child,
    stdout: Tail,
    stderr: Tail,
}

impl Running {
    fn spawn(path: &Path, args: &[String]) -> io::Result<Running> {
        let mut child = Command::new(path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()?;
        let stdout = child.stdout.take().map(|p| File::from(std::os::fd::OwnedFd::from(p)));
        let stderr = child.stderr.take().map(|p| File::from(std::os::fd::OwnedFd::from(p)));
        Ok(Running { child, stdout: Tail::new(stdout)?, stderr: Tail::new(stderr)? })
    }

    /// Waits for the check to end or the deadline; `None` when it passed.
    fn finish(mut self, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            self.drain();
            match self.child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(format!("cannot wait for it: {e}")),
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                break Err(format!("timed out after {}, killed", humantime::format_duration(timeout)));
            }
            self.wait_output((deadline - now).min(POLL_STEP));
        };
        self.drain();
        let why = match status {
            Ok(status) if status.success() => return None,
            Ok(status) => describe(status),
            Err(why) => why,
        };
        match self.stderr.last_line().or_else(|| self.stdout.last_line()) {
            Some(line) => Some(format!("{why}: {line}")),
            None => Some(why),
        }
    }

    fn drain(&mut self) {
        self.stdout.drain();
        self.stderr.drain();
    }

    /// Kills the check and anything it started, then reaps it.
    fn kill(&mut self) {
        let group = i32::try_from(self.child.id()).ok().map(Pid::from_raw);
        if group.and_then(|g| killpg(g, Signal::SIGKILL).ok()).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Sleeps until output arrives or `step` passes.
    fn wait_output(&self, step: Duration) {
        let open: Vec<&File> = [&self.stdout, &self.stderr].iter().filter_map(|t| t.open_pipe()).collect();
        if open.is_empty() {
            std::thread::sleep(step);
            return;
        }
        let mut fds: Vec<PollFd> = open.iter().map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN)).collect();
        let ms = step.as_micros().div_ceil(1000);
        let _ = nix::poll::poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX));
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with {status}"),
    }
}

/// The last [`OUTPUT_TAIL`] bytes of one output pipe, read without blocking.
struct Tail {
    pipe: Option<File>,
    bytes: Vec<u8>,
}

impl Tail {
    fn new(pipe: Option<File>) -> io::Result<Tail> {
        if let Some(p) = &pipe {
            fcntl(p, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
        }
        Ok(Tail { pipe, bytes: Vec::new() })
    }

    fn open_pipe(&self) -> Option<&File> {
        self.pipe.as_ref()
    }

    /// Reads what is available now; closes the pipe at its end.
    fn drain(&mut self) {
        let Some(pipe) = &mut self.pipe else { return };
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => {
                    self.pipe = None;
                    break;
                }
                Ok(n) => {
                    self.bytes.extend_from_slice(&buf[..n]);
                    let excess = self.bytes.len().saturating_sub(OUTPUT_TAIL);
                    self.bytes.drain(..excess);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.pipe = None;
                    break;
                }
            }
        }
    }

    /// The last non-blank line, bounded.
    fn last_line(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.bytes);
        let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
        let mut out: String = line.chars().take(LINE_MAX).collect();
        if line.chars().count() > LINE_MAX {
            out.push('…');
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(dir: &Path, kind: CheckKind, name: &str, body: &str) -> PathBuf {
        let d = dir.join(kind.dir_name());
        fs::create_dir_all(&d).unwrap();
        let path = d.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    const TIMEOUT: Duration = Duration::from_millis(300);

    #[test]
    fn missing_dirs_pass() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_checks(&dir.path().join("nope"), TIMEOUT), None);
        assert_eq!(run_checks(dir.path(), TIMEOUT), None);
    }

    #[test]
    fn required_pass() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), CheckKind::Required, "10-ok", "echo fine; exit 0");
        assert_eq!(run_checks(dir.path(), TIMEOUT), None);
    }

    #[test]
    fn required_fail_is_named_with_stderr() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), CheckKind::Required, "10-ok", "exit 0");
        script(dir.path(), CheckKind::Required, "20-dev", "echo progress\necho 'no /dev/milspec node' >&2\nexit 3");
        script(dir.path(), CheckKind::Required, "30-never", "touch \"$0.ran\"");
        let bad = run_checks(dir.path(), TIMEOUT).unwrap();
        assert_eq!(
            bad,
            Unhealthy::CheckFailed {
                name: "required.d/20-dev".into(),
                why: "exit status 3: no /dev/milspec node".into()
            }
        );
        // Stops at the first failure.
        assert!(!dir.path().join("required.d/30-never.ran").exists());
    }

    #[test]
    fn stdout_used_without_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), CheckKind::Required, "c", "echo first\necho last line\nexit 1");
        let r = run_check(&p, CheckKind::Required, TIMEOUT);
        assert_eq!(r.failure.as_deref(), Some("exit status 1: last line"));
    }

    #[test]
    fn required_timeout_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // The child `sleep` holds the pipes too: the whole group must die.
        script(dir.path(), CheckKind::Required, "10-hang", "echo waiting >&2\nsleep 30");
        let t = Instant::now();
        let bad = run_checks(dir.path(), TIMEOUT).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(t.elapsed() >= TIMEOUT);
        let Unhealthy::CheckFailed { name, why } = bad else { panic!("{bad:?}") };
        assert_eq!(name, "required.d/10-hang");
        assert_eq!(why, "timed out after 300ms, killed: waiting");
    }

    #[test]
    fn wanted_failure_is_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), CheckKind::Required, "10-ok", "exit 0");
        script(dir.path(), CheckKind::Wanted, "10-bad", "echo meh >&2; exit 1");
        let later = script(dir.path(), CheckKind::Wanted, "20-runs", "touch \"$0.ran\"");
        assert_eq!(run_checks(dir.path(), TIMEOUT), None);
        assert!(later.with_extension("ran").exists());
    }

    #[test]
    fn skips_hidden_and_non_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bad = script(dir.path(), CheckKind::Required, "10-plain", "exit 1");
        fs::set_permissions(&bad, fs::Permissions::from_mode(0o644)).unwrap();
        script(dir.path(), CheckKind::Required, ".20-hidden", "exit 1");
        fs::create_dir(dir.path().join("required.d/30-dir")).unwrap();
        let ok = script(dir.path(), CheckKind::Required, "40-ok", "exit 0");
        assert_eq!(list_checks(&dir.path().join("required.d")).unwrap(), vec![ok]);
        assert_eq!(run_checks(dir.path(), TIMEOUT), None);
    }

    #[test]
    fn output_is_bounded_and_signals_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = script(
            dir.path(),
            CheckKind::Required,
            "big",
            "i=0; while [ $i -lt 2000 ]; do echo line $i >&2; i=$((i+1)); done; kill -TERM $$",
        );
        let mut running = Running::spawn(&p, &[]).unwrap();
        while running.child.try_wait().unwrap().is_none() {
            running.drain();
            running.wait_output(POLL_STEP);
        }
        running.drain();
        assert!(running.stderr.bytes.len() <= OUTPUT_TAIL);
        assert_eq!(running.stderr.last_line().as_deref(), Some("line 1999"));
        let r = run_check(&p, CheckKind::Required, Duration::from_secs(10));
        assert_eq!(r.failure.as_deref(), Some("killed by signal 15: line 1999"));
    }
}
