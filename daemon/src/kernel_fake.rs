//! A fake [`Kernel`] for tests of the real daemon binary on a host that
//! cannot load modules: "loading" writes the files the real module would
//! make in a fake `/proc`,`/sys` tree (the `[kernel]` paths), "unloading"
//! removes them. Compiled only with the `fake-kernel` feature, and used by
//! `milspecd` only when `MILSPECD_FAKE_KERNEL=1` is set as well.
//!
//! `MILSPECD_FAKE_FAULTS="1.2.0=warn,1.3.0=noload,1.4.0=busy"` makes
//! versions misbehave: `warn` logs a WARNING report naming the module and
//! raises `warn_count` when loaded, `warn-elsewhere` does the same for a
//! report naming another driver, `noload` fails to load, `busy` refuses to
//! unload.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use milspec_format::ModInfo;

use crate::kernel::{Kernel, KernelError, SealedModule};
use crate::kernel_paths::KernelPaths;

/// Selects the fake kernel in a `fake-kernel` build.
pub const ENABLE_VAR: &str = "MILSPECD_FAKE_KERNEL";
/// Per-version faults, `VERSION=warn|warn-elsewhere|noload|busy` comma separated.
pub const FAULTS_VAR: &str = "MILSPECD_FAKE_FAULTS";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    Warn,
    WarnElsewhere,
    Busy,
    NoLoad,
}

#[derive(Debug)]
pub struct FakeKernel {
    paths: KernelPaths,
    faults: BTreeMap<String, Fault>,
    start: Instant,
}

fn write(p: &Path, s: &str) -> Result<(), KernelError> {
    let io = |source| KernelError::Io { path: p.to_path_buf(), source };
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    fs::write(p, s).map_err(io)
}

/// Appends `s` to `p` (the fake kernel log), making it if missing.
fn append(p: &Path, s: &str) -> Result<(), KernelError> {
    use std::io::Write;
    let io = |source| KernelError::Io { path: p.to_path_buf(), source };
    fs::OpenOptions::new().create(true).append(true).open(p).and_then(|mut f| f.write_all(s.as_bytes())).map_err(io)
}

/// Parses `MILSPECD_FAKE_FAULTS`; unknown words are ignored.
pub fn parse_faults(spec: &str) -> BTreeMap<String, Fault> {
    spec.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(v, f)| {
            let fault = match f.trim() {
                "warn" => Fault::Warn,
                "warn-elsewhere" => Fault::WarnElsewhere,
                "busy" => Fault::Busy,
                "noload" => Fault::NoLoad,
                _ => return None,
            };
            Some((v.trim().to_string(), fault))
        })
        .collect()
}

impl FakeKernel {
    /// A fake kernel over `paths` with `faults`; makes the files a booted
    /// host has (release, boot id, counters) if they are missing.
    pub fn new(paths: KernelPaths, release: &str, faults: BTreeMap<String, Fault>) -> Result<Self, KernelError> {
        let defaults = [
            (paths.osrelease(), format!("{release}\n")),
            (paths.boot_id(), "boot-1\n".to_string()),
            (paths.dmi_sys_vendor(), "Dell Inc.\n".to_string()),
            (paths.oops_count(), "0\n".to_string()),
            (paths.warn_count(), "0\n".to_string()),
            (paths.tainted(), "0\n".to_string()),
            (paths.kmsg.clone(), String::new()),
        ];
        for (p, text) in defaults {
            if !p.exists() {
                write(&p, &text)?;
            }
        }
        Ok(FakeKernel { paths, faults, start: Instant::now() })
    }

    /// From the environment: `MILSPECD_FAKE_FAULTS`.
    pub fn from_env(paths: KernelPaths, release: &str) -> Result<Self, KernelError> {
        Self::new(paths, release, parse_faults(&std::env::var(FAULTS_VAR).unwrap_or_default()))
    }

    fn live_version(&self) -> Option<String> {
        fs::read_to_string(self.paths.module_dir().join("version")).ok().map(|s| s.trim().to_string())
    }

    fn fault_of(&self, v: &str) -> Option<Fault> {
        self.faults.get(v).copied()
    }
}

impl Kernel for FakeKernel {
    fn load(&self, image: &SealedModule, params: &str) -> Result<(), KernelError> {
        let bytes = image.read_all().map_err(|source| KernelError::Io { path: "sealed module".into(), source })?;
        let info = ModInfo::parse(&bytes)
            .map_err(|e| KernelError::Load { errno: libc::ENOEXEC, detail: format!("not a module: {e}") })?;
        let version = info.version.unwrap_or_default();
        if self.live_version().is_some() {
            return Err(KernelError::Load { errno: libc::EEXIST, detail: "already loaded".into() });
        }
        if self.fault_of(&version) == Some(Fault::NoLoad) {
            return Err(KernelError::Load { errno: libc::ENOEXEC, detail: "bad module format".into() });
        }
        let dir = self.paths.module_dir();
        write(&dir.join("initstate"), "live\n")?;
        write(&dir.join("version"), &format!("{version}\n"))?;
        write(&dir.join("refcnt"), "0\n")?;
        let mode5 = params.split_whitespace().find_map(|kv| kv.strip_prefix("mode5_level=")).unwrap_or("0");
        write(&dir.join("parameters/mode5_level"), &format!("{mode5}\n"))?;
        write(
            &self.paths.milspec_status(),
            &format!(
                "version: {version}\nstate: ok\nselftest: pass\nmode5_level: {mode5}\nerrors: 0\nloaded_at: {}\n",
                self.boottime().as_nanos()
            ),
        )?;
        let culprit = match self.fault_of(&version) {
            Some(Fault::Warn) => Some(self.paths.module.as_str()),
            Some(Fault::WarnElsewhere) => Some("other_driver"),
            _ => None,
        };
        if let Some(culprit) = culprit {
            // A real WARN: the report is logged, then the kernel counts it.
            let us = self.boottime().as_micros();
            append(
                &self.paths.kmsg,
                &format!(
                    "4,900,{us},-;------------[ cut here ]------------\n\
                     4,901,{us},-;WARNING: CPU: 0 PID: 1 at {culprit}.c:80 {culprit}_init+0x1a/0x40 [{culprit}]\n\
                     4,902,{us},-;---[ end trace 0000000000000000 ]---\n"
                ),
            )?;
            let n: u64 = fs::read_to_string(self.paths.warn_count())
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_default();
            write(&self.paths.warn_count(), &format!("{}\n", n + 1))?;
        }
        Ok(())
    }

    fn unload(&self, paths: &KernelPaths, _timeout: Duration) -> Result<(), KernelError> {
        let v = self.live_version().unwrap_or_default();
        if self.fault_of(&v) == Some(Fault::Busy) {
            return Err(KernelError::Busy { module: paths.module.clone(), refcnt: "1".into(), holders: vec![] });
        }
        for dir in [paths.module_dir(), paths.milspec_dir()] {
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(KernelError::Io { path: dir, source }),
            }
        }
        Ok(())
    }

    fn boottime(&self) -> Duration {
        self.start.elapsed() + Duration::from_secs(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse() {
        let f = parse_faults("1.2.0=warn, 1.3.0=noload,1.4.0=busy,x=y,junk");
        assert_eq!(f.len(), 3);
        assert_eq!(f.get("1.2.0"), Some(&Fault::Warn));
        assert_eq!(f.get("1.3.0"), Some(&Fault::NoLoad));
        assert_eq!(f.get("1.4.0"), Some(&Fault::Busy));
    }
}
