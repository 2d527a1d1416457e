//! One fake kernel for the in-process tests: a temporary /proc and /sys
//! tree that "loading" fills with the files the real module makes and
//! "unloading" removes, with per-version faults and a record of loads.
//! (`milspecd`'s own `kernel_fake.rs` is the same idea for the binary,
//! behind the `fake-kernel` feature; the tests also run without it.)
//! Included by `common/mod.rs` and, by path, by `mirror_support/mod.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use milspec_format::ModInfo;
use milspecd::kernel::{Kernel, KernelError, SealedModule};
use milspecd::kernel_paths::KernelPaths;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// WARNs at load: a report naming the module, then `warn_count` rises.
    Warn,
    /// Another driver WARNs while it loads: a report naming that driver.
    WarnElsewhere,
    Busy,
    NoLoad,
}

/// The records of a WARNING report in `[module]`, stamped `us` after
/// boot, as `/dev/kmsg` lines.
pub fn warn_report(module: &str, us: u128) -> String {
    format!(
        "4,900,{us},-;------------[ cut here ]------------\n\
         4,901,{us},-;WARNING: CPU: 0 PID: 1 at {module}.c:80 {module}_init+0x1a/0x40 [{module}]\n\
         4,902,{us},-;Modules linked in: dell_milspec(OE)\n\
         4,903,{us},-;---[ end trace 0000000000000000 ]---\n"
    )
}

/// A fake kernel over `root`'s /proc and /sys; `faults` make versions
/// misbehave, `loads` lists the versions loaded, oldest first.
pub struct FakeKernel {
    pub paths: KernelPaths,
    pub faults: BTreeMap<String, Fault>,
    start: Instant,
    pub loads: RefCell<Vec<String>>,
}

/// Writes `s` to `p`, making its folder.
pub fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

impl FakeKernel {
    /// A booted host running `release`: release, boot id, vendor, counters.
    pub fn new(root: &Path, release: &str) -> Self {
        let paths = KernelPaths::under(root, "dell_milspec");
        write(&paths.osrelease(), &format!("{release}\n"));
        write(&paths.boot_id(), "boot-1\n");
        write(&paths.dmi_sys_vendor(), "Dell Inc.\n");
        write(&paths.oops_count(), "0\n");
        write(&paths.warn_count(), "0\n");
        write(&paths.tainted(), "0\n");
        write(&paths.kmsg, "");
        FakeKernel { paths, faults: BTreeMap::new(), start: Instant::now(), loads: RefCell::new(Vec::new()) }
    }

    pub fn live_version(&self) -> Option<String> {
        fs::read_to_string(self.paths.module_dir().join("version")).ok().map(|s| s.trim().to_string())
    }

    pub fn param(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.paths.module_param(name)).ok().map(|s| s.trim().to_string())
    }

    fn fault_of(&self, v: &str) -> Option<Fault> {
        self.faults.get(v).copied()
    }
}

impl Kernel for FakeKernel {
    fn load(&self, image: &SealedModule, params: &str) -> Result<(), KernelError> {
        let bytes = image.read_all().unwrap();
        let info = ModInfo::parse(&bytes).unwrap();
        let version = info.version.unwrap();
        if self.live_version().is_some() {
            return Err(KernelError::Load { errno: 17, detail: "already loaded".into() });
        }
        if self.fault_of(&version) == Some(Fault::NoLoad) {
            return Err(KernelError::Load { errno: 8, detail: "bad module format".into() });
        }
        let dir = self.paths.module_dir();
        write(&dir.join("initstate"), "live\n");
        write(&dir.join("version"), &format!("{version}\n"));
        write(&dir.join("refcnt"), "0\n");
        let mut mode5 = "0".to_string();
        for kv in params.split_whitespace() {
            if let Some(v) = kv.strip_prefix("mode5_level=") {
                mode5 = v.to_string();
            }
        }
        write(&dir.join("parameters/mode5_level"), &format!("{mode5}\n"));
        write(
            &self.paths.milspec_status(),
            &format!(
                "version: {version}\nstate: ok\nselftest: pass\nmode5_level: {mode5}\nerrors: 0\nloaded_at: {}\n",
                self.boottime().as_nanos()
            ),
        );
        let culprit = match self.fault_of(&version) {
            Some(Fault::Warn) => Some("dell_milspec"),
            Some(Fault::WarnElsewhere) => Some("other_driver"),
            _ => None,
        };
        if let Some(culprit) = culprit {
            use std::io::Write;
            let mut log = fs::OpenOptions::new().append(true).open(&self.paths.kmsg).unwrap();
            log.write_all(warn_report(culprit, self.boottime().as_micros()).as_bytes()).unwrap();
            let n: u64 = fs::read_to_string(self.paths.warn_count()).unwrap().trim().parse().unwrap();
            write(&self.paths.warn_count(), &format!("{}\n", n + 1));
        }
        self.loads.borrow_mut().push(version);
        Ok(())
    }

    fn unload(&self, paths: &KernelPaths, _timeout: Duration) -> Result<(), KernelError> {
        let v = self.live_version().unwrap_or_default();
        if self.fault_of(&v) == Some(Fault::Busy) {
            return Err(KernelError::Busy { module: paths.module.clone(), refcnt: "1".into(), holders: vec![] });
        }
        fs::remove_dir_all(paths.module_dir()).unwrap();
        fs::remove_dir_all(paths.milspec_dir()).unwrap();
        Ok(())
    }

    fn boottime(&self) -> Duration {
        self.start.elapsed() + Duration::from_secs(100)
    }
}
