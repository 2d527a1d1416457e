//! Reads a kernel module's `.modinfo` ELF section: vermagic, name,
//! srcversion and version, so a publisher never types a kernel release by hand.

use object::{Object, ObjectSection};

#[derive(Debug, thiserror::Error)]
pub enum ModInfoError {
    #[error("not a kernel module: not an ELF object ({0})")]
    NotElf(String),
    #[error("not a kernel module: no .modinfo section")]
    NoModinfo,
    #[error("the module has no vermagic in .modinfo (was it built with kbuild?)")]
    NoVermagic,
    #[error("the module has no name in .modinfo")]
    NoName,
    #[error("the module's vermagic `{0}` does not start with a valid kernel release")]
    BadRelease(String),
    #[error("the module name `{0}` is not a valid kernel module name")]
    BadName(String),
}

/// What a `.ko` says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    pub name: String,
    /// The whole vermagic string, e.g. `6.12.113+deb12-cloud-amd64 SMP preempt mod_unload modversions`.
    pub vermagic: String,
    /// The first word of vermagic: the `uname -r` the module was built for.
    pub kernel_release: String,
    pub srcversion: Option<String>,
    pub version: Option<String>,
}

impl ModInfo {
    pub fn parse(elf: &[u8]) -> Result<Self, ModInfoError> {
        let file = object::File::parse(elf).map_err(|e| ModInfoError::NotElf(e.to_string()))?;
        let section = file.section_by_name(".modinfo").ok_or(ModInfoError::NoModinfo)?;
        let data = section.data().map_err(|_| ModInfoError::NoModinfo)?;
        Self::from_section(data)
    }

    /// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
    pub fn from_section(data: &[u8]) -> Result<Self, ModInfoError> {
        let (mut name, mut vermagic, mut srcversion, mut version) = (None, None, None, None);
        for item in data.split(|&b| b == 0) {
            let Ok(item) = std::str::from_utf8(item) else { continue };
            let Some((k, v)) = item.split_once('=') else { continue };
            let slot = match k {
                "name" => &mut name,
                "vermagic" => &mut vermagic,
                "srcversion" => &mut srcversion,
                "version" => &mut version,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.to_string());
        }
        let vermagic: String = vermagic.ok_or(ModInfoError::NoVermagic)?;
        let kernel_release = vermagic.split_whitespace().next().unwrap_or_default().to_string();
        if !crate::manifest::valid_release(&kernel_release) {
            return Err(ModInfoError::BadRelease(vermagic.chars().take(120).collect()));
        }
        let name = name.ok_or(ModInfoError::NoName)?;
        if !crate::manifest::valid_module_name(&name) {
            return Err(ModInfoError::BadName(name.chars().take(80).collect()));
        }
        Ok(ModInfo { name, vermagic, kernel_release, srcversion, version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_parse() {
        let sec = b"version=1.1.0\0license=GPL\0srcversion=ABCDEF\0name=dell_milspec\0vermagic=6.12.113+deb12-cloud-amd64 SMP preempt mod_unload modversions \0";
        let mi = ModInfo::from_section(sec).unwrap();
        assert_eq!(mi.kernel_release, "6.12.113+deb12-cloud-amd64");
        assert_eq!(mi.name, "dell_milspec");
        assert_eq!(mi.srcversion.as_deref(), Some("ABCDEF"));
        assert_eq!(mi.version.as_deref(), Some("1.1.0"));
    }

    #[test]
    fn missing_fields() {
        assert!(matches!(ModInfo::from_section(b"name=x\0"), Err(ModInfoError::NoVermagic)));
        assert!(matches!(ModInfo::from_section(b"vermagic=6.1 SMP\0"), Err(ModInfoError::NoName)));
        assert!(matches!(ModInfo::from_section(b"vermagic=../x\0name=a\0"), Err(ModInfoError::BadRelease(_))));
        assert!(matches!(ModInfo::parse(b"hello"), Err(ModInfoError::NotElf(_))));
    }
}
