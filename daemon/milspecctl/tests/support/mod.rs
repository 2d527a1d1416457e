//! For the `milspecctl` binary tests: a private system-type bus (the real
//! `dbus-daemon` on daemon/tests/fixtures/system-bus.conf with the policy
//! milspecd ships, as daemon/tests/common/bus.rs starts it), a child whose
//! output lines are read as they come, and a folder listing to compare.
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `dbus-daemon` of its own; killed on drop.
pub struct Bus {
    child: Child,
    _dir: tempfile::TempDir,
    pub address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bus {
    pub fn start() -> Bus {
        let daemon_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("system_bus_socket");
        let conf = dir.path().join("bus.conf");
        let template = fs::read_to_string(daemon_dir.join("tests/fixtures/system-bus.conf")).unwrap();
        let policy = daemon_dir.join("dist/usr/share/dbus-1/system.d");
        fs::write(
            &conf,
            template
                .replace("@SOCKET@", &socket.display().to_string())
                .replace("@POLICY_DIR@", &policy.display().to_string()),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile"])
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon is missing: apt-get install dbus");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Bus { child, _dir: dir, address: format!("unix:path={}", socket.display()) }
    }

    /// `milspecctl ARGS` on this bus.
    pub fn ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_milspecctl"));
        c.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &self.address);
        c
    }
}

/// A child whose stdout and stderr lines arrive as they are written;
/// killed on drop.
pub struct Lines {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Lines {
    pub fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let pipe = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        };
        let out = pipe(Box::new(child.stdout.take().unwrap()));
        let err = pipe(Box::new(child.stderr.take().unwrap()));
        Lines { child, out, err }
    }

    /// The next stdout line, if one comes within `within`.
    pub fn out(&self, within: Duration) -> Option<String> {
        self.out.recv_timeout(within).ok()
    }

    /// The next stderr line, if one comes within `within`.
    pub fn err(&self, within: Duration) -> Option<String> {
        self.err.recv_timeout(within).ok()
    }

    /// Stdout lines until one contains `what`; all of them, that one last.
    pub fn out_until(&self, what: &str, within: Duration) -> Vec<String> {
        Self::until(&self.out, what, within, "stdout")
    }

    /// Stderr lines until one contains `what`; all of them, that one last.
    pub fn err_until(&self, what: &str, within: Duration) -> Vec<String> {
        Self::until(&self.err, what, within, "stderr")
    }

    fn until(rx: &mpsc::Receiver<String>, what: &str, within: Duration, name: &str) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains(what);
                    seen.push(l);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no {name} line with {what:?} within {within:?}; saw {seen:?}"),
            }
        }
    }

    /// Whether the child is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Its exit status, if it exits within `within`.
    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Every path below `dir` with its type, mode, size, modification time
/// and content (files), sorted: equal listings mean nothing changed.
pub fn listing(dir: &Path) -> Vec<(PathBuf, u32, u64, i64, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let data = if m.is_file() { fs::read(e.path()).unwrap() } else { Vec::new() };
            if m.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), m.mode(), m.len(), m.mtime(), m.mtime_nsec(), data));
        }
    }
    out.sort();
    out
}
