//! The kernels a host has and which of them the committed version covers:
//! the installed kernels are read from `[kernel] modules_dir` (one folder
//! per release, as the kernel packages leave them); the verdict is pure.

use std::path::Path;

use serde::Serialize;

use milspec_format::manifest::valid_release;

/// Most installed kernels read (a host keeps a handful).
pub const MAX_INSTALLED: usize = 256;

/// Whether the committed version has a build for the running kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelBuild {
    /// The committed slot holds a build for the running kernel.
    Ready,
    /// A version is committed, but it has no build for the running kernel:
    /// nothing of it is loaded until one is published.
    NoBuild,
    /// Nothing is committed yet.
    NoVersion,
}

impl KernelBuild {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelBuild::Ready => "ready",
            KernelBuild::NoBuild => "no-build",
            KernelBuild::NoVersion => "no-version",
        }
    }
}

/// The host's kernels against the committed version's builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelView {
    /// The running kernel's release.
    pub release: String,
    pub build: KernelBuild,
    /// The kernel releases the committed slot holds builds for.
    pub committed_kernels: Vec<String>,
    /// Installed kernels (the running one included) the committed version
    /// has no build for: booting one of them starts without the module.
    pub without_build: Vec<String>,
}

/// The verdict (pure): `committed` is the committed slot's kernels, if a
/// version is committed.
pub fn view(release: &str, committed: Option<&[String]>, installed: &[String]) -> KernelView {
    let covers = |r: &str| committed.is_some_and(|k| k.iter().any(|c| c == r));
    let build = match committed {
        None => KernelBuild::NoVersion,
        Some(_) if covers(release) => KernelBuild::Ready,
        Some(_) => KernelBuild::NoBuild,
    };
    let mut without_build: Vec<String> = Vec::new();
    if committed.is_some() {
        for r in installed.iter().map(String::as_str).chain(std::iter::once(release)) {
            if !covers(r) && !without_build.iter().any(|w| w == r) {
                without_build.push(r.to_string());
            }
        }
        without_build.sort();
    }
    KernelView {
        release: release.to_string(),
        build,
        committed_kernels: committed.map(<[String]>::to_vec).unwrap_or_default(),
        without_build,
    }
}

/// The installed kernels: the folders of `modules_dir` whose name is a
/// valid kernel release, sorted, at most [`MAX_INSTALLED`]. A missing or
/// unreadable folder is no kernel (a chroot, a test guest).
pub fn installed(modules_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(modules_dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .take(MAX_INSTALLED * 4)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| valid_release(n))
        .collect();
    out.sort();
    out.truncate(MAX_INSTALLED);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_running_kernel_and_every_installed_one_are_judged() {
        let k = s(&["6.12.111", "6.12.113"]);
        let v = view("6.12.113", Some(&k), &s(&["6.12.111", "6.12.113", "6.12.115"]));
        assert_eq!(v.build, KernelBuild::Ready);
        assert_eq!(v.without_build, s(&["6.12.115"]));
        let v = view("6.12.115", Some(&s(&["6.12.111"])), &[]);
        assert_eq!((v.build, v.without_build), (KernelBuild::NoBuild, s(&["6.12.115"])));
        let v = view("6.12.115", None, &s(&["6.12.111"]));
        assert_eq!((v.build, v.without_build.len()), (KernelBuild::NoVersion, 0));
    }

    #[test]
    fn installed_lists_release_folders_only() {
        let d = tempfile::tempdir().unwrap();
        for n in ["6.12.113+deb12-cloud-amd64", "6.1.0-28-amd64", "bad name", ".."] {
            let _ = std::fs::create_dir(d.path().join(n));
        }
        std::fs::write(d.path().join("6.12.99"), b"a file").unwrap();
        assert_eq!(installed(d.path()), s(&["6.1.0-28-amd64", "6.12.113+deb12-cloud-amd64"]));
        assert!(installed(&d.path().join("missing")).is_empty());
    }
}
