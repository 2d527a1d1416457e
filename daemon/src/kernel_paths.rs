//! Where the kernel's files are. The roots are inputs (config `[kernel]`),
//! so tests point them at a fake tree in a temporary folder.

use std::path::{Path, PathBuf};

use crate::config::KernelConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub kmsg: PathBuf,
    /// The managed module's name, e.g. `dell_milspec`.
    pub module: String,
}

impl KernelPaths {
    pub fn from_config(k: &KernelConfig) -> Self {
        KernelPaths { proc: k.proc.clone(), sys: k.sys.clone(), kmsg: k.kmsg.clone(), module: k.module.clone() }
    }

    /// A layout rooted at `root`: `root/proc`, `root/sys`, `root/kmsg`.
    pub fn under(root: &Path, module: &str) -> Self {
        KernelPaths { proc: root.join("proc"), sys: root.join("sys"), kmsg: root.join("kmsg"), module: module.into() }
    }

    /// `/proc/milspec/status`, written by the module.
    pub fn milspec_status(&self) -> PathBuf {
        self.proc.join("milspec/status")
    }

    pub fn milspec_dir(&self) -> PathBuf {
        self.proc.join("milspec")
    }

    pub fn oops_count(&self) -> PathBuf {
        self.sys.join("kernel/oops_count")
    }

    pub fn warn_count(&self) -> PathBuf {
        self.sys.join("kernel/warn_count")
    }

    /// `/proc/sys/kernel/tainted`: the taint bit mask in decimal.
    pub fn tainted(&self) -> PathBuf {
        self.proc.join("sys/kernel/tainted")
    }

    pub fn boot_id(&self) -> PathBuf {
        self.proc.join("sys/kernel/random/boot_id")
    }

    /// `/proc/sys/kernel/osrelease`: what `uname -r` says.
    pub fn osrelease(&self) -> PathBuf {
        self.proc.join("sys/kernel/osrelease")
    }

    /// `/sys/module/<name>`: present while the module is loaded.
    pub fn module_dir(&self) -> PathBuf {
        self.sys.join("module").join(&self.module)
    }

    pub fn module_param(&self, param: &str) -> PathBuf {
        self.module_dir().join("parameters").join(param)
    }

    pub fn module_refcnt(&self) -> PathBuf {
        self.module_dir().join("refcnt")
    }

    pub fn module_holders(&self) -> PathBuf {
        self.module_dir().join("holders")
    }

    pub fn dmi_sys_vendor(&self) -> PathBuf {
        self.sys.join("class/dmi/id/sys_vendor")
    }

    /// `/sys/class/dmi/id/product_name`: the machine's model.
    pub fn dmi_product_name(&self) -> PathBuf {
        self.sys.join("class/dmi/id/product_name")
    }

    /// `/sys/kernel/security/lockdown`: `none [integrity] confidentiality`.
    pub fn lockdown(&self) -> PathBuf {
        self.sys.join("kernel/security/lockdown")
    }

    /// `/sys/module/module/parameters/sig_enforce`: `Y` or `N`.
    pub fn sig_enforce(&self) -> PathBuf {
        self.sys.join("module/module/parameters/sig_enforce")
    }

    /// The UEFI `SecureBoot` variable (EFI global variable GUID).
    pub fn efi_secure_boot(&self) -> PathBuf {
        self.sys.join("firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c")
    }

    /// `/sys/fs/pstore`: records of the last crashes, kept across a reboot.
    pub fn pstore(&self) -> PathBuf {
        self.sys.join("fs/pstore")
    }

    /// `/sys/firmware/efi`: present when the kernel was booted by UEFI.
    pub fn efi_dir(&self) -> PathBuf {
        self.sys.join("firmware/efi")
    }

    /// `/proc/keys`: the keys (and keyrings) this process may view.
    pub fn proc_keys(&self) -> PathBuf {
        self.proc.join("keys")
    }
}
