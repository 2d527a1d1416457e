//! The one narrow door to the kernel: load a module image, unload a module,
//! read the boot-time clock. Everything else reads files under the
//! configured `/proc` and `/sys` roots (see [`crate::kernel_paths`]).
//!
//! Loading goes through a sealed memfd: the slot file is copied into an
//! anonymous file while being hashed, the memfd is sealed against any
//! change, and that same file is what `finit_module` loads. The bytes
//! hashed are the bytes loaded.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use milspec_format::Sha256Digest;
use sha2::{Digest, Sha256};

use crate::kernel_paths::KernelPaths;
use crate::slots::{NoBuild, Slot};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("module {module} is in use (refcount {refcnt}{})", holders_text(holders))]
    Busy { module: String, refcnt: String, holders: Vec<String> },
    #[error("unloading {module} did not finish within {} (the module is stuck, probably after an oops)", humantime::format_duration(*timeout))]
    UnloadTimeout { module: String, timeout: Duration },
    #[error("cannot unload {module}: {detail}")]
    Unload { module: String, detail: String },
    #[error("the kernel refused to load the module: {detail}")]
    Load { errno: i32, detail: String },
    #[error("{}: does not match its manifest (sha256 {actual}, expected {expected}): the file changed on disk after it was verified (tampering or disk damage); not loaded: reinstall the package", path.display())]
    Hash { path: PathBuf, expected: Sha256Digest, actual: Sha256Digest },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    NoBuild(#[from] NoBuild),
}

fn holders_text(h: &[String]) -> String {
    if h.is_empty() {
        String::new()
    } else {
        format!(", held by {}", h.join(", "))
    }
}

/// The errno of a load the kernel refused for its module-signing or
/// lockdown policy (`EKEYREJECTED`, `ENOKEY`, `EPERM`), if `e` is one:
/// a host-policy refusal, not a fault of the module.
pub fn host_policy_refusal(e: &KernelError) -> Option<i32> {
    match e {
        KernelError::Load { errno, .. } if matches!(*errno, libc::EKEYREJECTED | libc::ENOKEY | libc::EPERM) => {
            Some(*errno)
        }
        _ => None,
    }
}

/// Describes a load errno the way an operator needs it.
pub fn load_errno_text(errno: i32) -> String {
    let what = match errno {
        libc::ENOEXEC => "bad module format: not built for this kernel (vermagic or ELF mismatch)",
        libc::EKEYREJECTED => "module signature rejected (the kernel enforces module signatures)",
        libc::ENOKEY => "module signed by a key the kernel does not hold (the kernel enforces module signatures)",
        libc::EEXIST => "a module with this name is already loaded",
        libc::ENODEV => "the module's init refused this hardware (ENODEV)",
        libc::EINVAL => "invalid module or parameters (EINVAL)",
        libc::EPERM => "not permitted (needs CAP_SYS_MODULE, or module loading is disabled)",
        libc::ENOSYS => "this kernel has no module support",
        libc::EBUSY => "the module's init reported busy",
        _ => "",
    };
    let e = nix::errno::Errno::from_raw(errno);
    if what.is_empty() {
        format!("{} ({e})", e.desc())
    } else {
        format!("{what} [{e}]")
    }
}

/// A module image in a sealed, read-only anonymous file.
#[derive(Debug)]
pub struct SealedModule {
    file: File,
    pub sha256: Sha256Digest,
    pub size: u64,
}

impl SealedModule {
    /// Copies `path` into a sealed memfd, hashing as it goes, and checks the
    /// result against `expected`. Reads at most `limit` bytes.
    pub fn from_file(path: &Path, expected: &Sha256Digest, limit: u64) -> Result<Self, KernelError> {
        let io_err = |source| KernelError::Io { path: path.to_path_buf(), source };
        let src = File::open(path).map_err(io_err)?;
        let sealed = seal(src, limit).map_err(io_err)?;
        if &sealed.sha256 != expected {
            return Err(KernelError::Hash { path: path.to_path_buf(), expected: *expected, actual: sealed.sha256 });
        }
        Ok(sealed)
    }

    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The image bytes (for fake kernels in tests).
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut f = File::open(format!("/proc/self/fd/{}", self.file.as_raw_fd()))?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)?;
        Ok(v)
    }
}

/// A slot's module made ready to load: its bytes sealed and hashed
/// against the slot's signed manifest, and its parameter string built
/// (the package's defaults, `carried` values over them). The one
/// "seal, build params, load" sequence: the engine's loads and
/// `milspecd load-committed` both go through it.
#[derive(Debug)]
pub struct ReadyModule {
    pub image: SealedModule,
    pub params: String,
}

impl ReadyModule {
    /// Seals the build of `slot` for the kernel it was read for (at most
    /// `limit` bytes) and checks its hash; [`KernelError::NoBuild`] if the
    /// slot holds no build for that kernel.
    pub fn from_slot(slot: &Slot, carried: &BTreeMap<String, String>, limit: u64) -> Result<Self, KernelError> {
        let build = slot.current()?;
        let image = SealedModule::from_file(&build.path, &build.payload.sha256, limit)?;
        Ok(ReadyModule { image, params: param_string(&slot.manifest.params, carried) })
    }

    /// Hands the sealed image to the kernel with its parameters.
    pub fn load(&self, kernel: &dyn Kernel) -> Result<(), KernelError> {
        kernel.load(&self.image, &self.params)
    }
}

fn seal(src: File, limit: u64) -> io::Result<SealedModule> {
    use nix::fcntl::{fcntl, FcntlArg, SealFlag};
    use nix::sys::memfd::{memfd_create, MFdFlags};

    let memfd: OwnedFd =
        memfd_create("milspec-module", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).map_err(io::Error::from)?;
    let mut rw = File::from(memfd);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut src = src.take(limit + 1);
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        if size > limit {
            return Err(io::Error::other(format!("module image is larger than {limit} bytes")));
        }
        hasher.update(&buf[..n]);
        rw.write_all(&buf[..n])?;
    }
    let seals = SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(&rw, FcntlArg::F_ADD_SEALS(seals)).map_err(io::Error::from)?;
    // finit_module refuses files open for writing: reopen read-only and
    // drop the writable descriptor. The seals make the content final.
    let ro = File::open(format!("/proc/self/fd/{}", rw.as_raw_fd()))?;
    drop(rw);
    Ok(SealedModule { file: ro, sha256: Sha256Digest(hasher.finalize().into()), size })
}

/// What is known about the loaded module from `/sys/module/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadedModule {
    pub version: Option<String>,
    pub srcversion: Option<String>,
    pub refcnt: Option<String>,
    pub holders: Vec<String>,
    /// The parameters named in `[kernel] carry_params` that could be read.
    pub params: BTreeMap<String, String>,
}

/// Longest `/sys/module` attribute read (sysfs gives at most a page).
const MAX_SYSFS_ATTR: u64 = 4096;

fn read_trimmed(p: &Path) -> Option<String> {
    let mut s = String::new();
    File::open(p).ok()?.take(MAX_SYSFS_ATTR).read_to_string(&mut s).ok()?;
    Some(s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Reads the loaded module's facts, or `None` when it is not loaded.
pub fn loaded_module(paths: &KernelPaths, carry: &[String]) -> Option<LoadedModule> {
    let dir = paths.module_dir();
    // Built-in modules have a /sys/module entry too but no initstate.
    let state = read_trimmed(&dir.join("initstate"))?;
    if state == "going" {
        return None;
    }
    let mut holders: Vec<String> = fs::read_dir(paths.module_holders())
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    holders.sort();
    let params = carry.iter().filter_map(|p| read_trimmed(&paths.module_param(p)).map(|v| (p.clone(), v))).collect();
    Some(LoadedModule {
        version: read_trimmed(&dir.join("version")),
        srcversion: read_trimmed(&dir.join("srcversion")),
        refcnt: read_trimmed(&paths.module_refcnt()),
        holders,
        params,
    })
}

/// Kernel actions. The real one makes syscalls; tests use a fake that
/// edits a fake `/sys` tree.
pub trait Kernel {
    fn load(&self, image: &SealedModule, params: &str) -> Result<(), KernelError>;
    /// Unloads without waiting for users (`O_NONBLOCK`), giving up after
    /// `timeout`. Never forces.
    fn unload(&self, paths: &KernelPaths, timeout: Duration) -> Result<(), KernelError>;
    /// CLOCK_BOOTTIME: monotonic within a boot, counting suspend.
    fn boottime(&self) -> Duration;
}

/// The real kernel. Unloads run in a forked child that makes the one
/// `delete_module` syscall, because an unload can block forever in the
/// module's exit path after an oops; the daemon waits a bounded time and
/// leaves a stuck child behind rather than hang itself.
#[derive(Debug, Clone, Default)]
pub struct SysKernel;

impl SysKernel {
    pub fn new() -> io::Result<Self> {
        Ok(SysKernel)
    }
}

/// `delete_module(name, O_NONBLOCK)`; the errno on failure.
fn delete_module_nonblock(name: &CStr) -> i32 {
    match nix::kmod::delete_module(name, nix::kmod::DeleteModuleFlags::O_NONBLOCK) {
        Ok(()) => 0,
        Err(e) => e as i32,
    }
}

/// Forks a child that unloads `name` and exits with the errno (0: done).
#[allow(unsafe_code)]
fn fork_unload(name: &CStr) -> io::Result<nix::unistd::Pid> {
    use nix::unistd::{fork, ForkResult};
    // SAFETY: after fork the child only makes the delete_module syscall and
    // calls _exit; both are async-signal-safe and touch no lock, allocator
    // or other state another thread of the parent may have held.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            let code = delete_module_nonblock(name);
            // SAFETY: _exit ends the child at once, running no destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok(child),
    }
}

impl Kernel for SysKernel {
    fn load(&self, image: &SealedModule, params: &str) -> Result<(), KernelError> {
        let params = CString::new(params)
            .map_err(|_| KernelError::Load { errno: libc::EINVAL, detail: "parameters hold a NUL byte".into() })?;
        nix::kmod::finit_module(image.fd(), &params, nix::kmod::ModuleInitFlags::empty()).map_err(|e| {
            let errno = e as i32;
            KernelError::Load { errno, detail: load_errno_text(errno) }
        })
    }

    fn unload(&self, paths: &KernelPaths, timeout: Duration) -> Result<(), KernelError> {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let module = paths.module.clone();
        let name = CString::new(module.as_str())
            .map_err(|_| KernelError::Unload { module: module.clone(), detail: "name holds a NUL byte".into() })?;
        let io_err = |source: io::Error| KernelError::Io { path: PathBuf::from("fork"), source };
        let child = fork_unload(&name).map_err(io_err)?;
        let start = Instant::now();
        let code = loop {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break Some(code),
                Ok(WaitStatus::Signaled(..)) => break None,
                Ok(_) if start.elapsed() >= timeout => {
                    // The child stays blocked in the kernel; nothing can
                    // kill it. Leave it and report.
                    tracing::error!(module, pid = child.as_raw(), "unload is stuck in the kernel");
                    return Err(KernelError::UnloadTimeout { module, timeout });
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(io_err(io::Error::from(e))),
            }
        };
        match code {
            Some(0) => Ok(()),
            Some(c) if c == libc::EBUSY || c == libc::EAGAIN => {
                let lm = loaded_module(paths, &[]);
                Err(KernelError::Busy {
                    module,
                    refcnt: lm.as_ref().and_then(|m| m.refcnt.clone()).unwrap_or_else(|| "?".into()),
                    holders: lm.map(|m| m.holders).unwrap_or_default(),
                })
            }
            Some(c) => {
                let e = nix::errno::Errno::from_raw(c);
                Err(KernelError::Unload { module, detail: format!("{} ({e})", e.desc()) })
            }
            None => Err(KernelError::Unload { module, detail: "the unload child was killed by a signal".into() }),
        }
    }

    fn boottime(&self) -> Duration {
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map(Duration::from).unwrap_or_default()
    }
}

/// Parameters for a load: the package's defaults, overridden by the
/// checkpointed runtime values, as `k=v k=v`.
pub fn param_string(defaults: &BTreeMap<String, String>, carried: &BTreeMap<String, String>) -> String {
    let mut all = defaults.clone();
    for (k, v) in carried {
        if milspec_format::manifest::check_param(k, v).is_ok() {
            all.insert(k.clone(), v.clone());
        }
    }
    all.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_hashes_and_refuses_writes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.ko");
        fs::write(&p, b"module bytes").unwrap();
        let want = Sha256Digest::of(b"module bytes");
        let s = SealedModule::from_file(&p, &want, 1024).unwrap();
        assert_eq!(s.size, 12);
        assert_eq!(s.read_all().unwrap(), b"module bytes");
        // Sealed: even a fresh writable open cannot change it.
        let w = fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", s.fd().as_raw_fd()));
        if let Ok(mut w) = w {
            assert!(w.write_all(b"x").is_err());
        }
        let e = SealedModule::from_file(&p, &Sha256Digest::of(b"other"), 1024).unwrap_err();
        assert!(e.to_string().contains("does not match its manifest"), "{e}");
        assert!(SealedModule::from_file(&p, &want, 4).is_err());
    }

    #[test]
    fn params_merge() {
        let d: BTreeMap<_, _> = [("mode5_level".to_string(), "1".to_string()), ("x".into(), "y".into())].into();
        let c: BTreeMap<_, _> = [("mode5_level".to_string(), "3".to_string()), ("bad".into(), "a b".into())].into();
        assert_eq!(param_string(&d, &c), "mode5_level=3 x=y");
    }

    #[test]
    fn loaded_module_from_fake_sys() {
        let d = tempfile::tempdir().unwrap();
        let paths = KernelPaths::under(d.path(), "dell_milspec");
        assert!(loaded_module(&paths, &[]).is_none());
        let m = paths.module_dir();
        fs::create_dir_all(m.join("parameters")).unwrap();
        fs::create_dir_all(m.join("holders/other_mod")).unwrap();
        fs::write(m.join("initstate"), "live\n").unwrap();
        fs::write(m.join("version"), "1.1.0\n").unwrap();
        fs::write(m.join("refcnt"), "1\n").unwrap();
        fs::write(m.join("parameters/mode5_level"), "2\n").unwrap();
        let lm = loaded_module(&paths, &["mode5_level".into(), "absent".into()]).unwrap();
        assert_eq!(lm.version.as_deref(), Some("1.1.0"));
        assert_eq!(lm.holders, vec!["other_mod"]);
        assert_eq!(lm.params.get("mode5_level").map(String::as_str), Some("2"));
        assert_eq!(lm.params.len(), 1);
    }

    #[test]
    fn errno_texts() {
        assert!(load_errno_text(libc::ENOEXEC).contains("not built for this kernel"));
        assert!(load_errno_text(libc::EKEYREJECTED).contains("signature"));
        assert!(load_errno_text(libc::ENOENT).contains("ENOENT"));
    }
}
