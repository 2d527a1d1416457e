//! Builders for tests and benchmarks: minimal ELF objects that look like
//! kernel modules to [`crate::ModInfo`].

use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionKind};

/// What to put in a fake module's `.modinfo`.
#[derive(Debug, Clone)]
pub struct FakeKo<'a> {
    pub name: &'a str,
    pub kernel_release: &'a str,
    pub version: &'a str,
    /// Omit the vermagic entry entirely.
    pub no_vermagic: bool,
    /// Extra bytes of section data, to make large payloads.
    pub padding: usize,
}

impl Default for FakeKo<'_> {
    fn default() -> Self {
        FakeKo {
            name: "dell_milspec",
            kernel_release: "6.12.113+deb12-cloud-amd64",
            version: "1.0.0",
            no_vermagic: false,
            padding: 0,
        }
    }
}

impl FakeKo<'_> {
    pub fn build(&self) -> Vec<u8> {
        let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
        let mut info =
            format!("version={}\0license=GPL\0srcversion=F{:0>22}\0", self.version, self.version.replace('.', ""));
        info += &format!("name={}\0", self.name);
        if !self.no_vermagic {
            info += &format!("vermagic={} SMP preempt mod_unload modversions \0", self.kernel_release);
        }
        let sec = obj.add_section(Vec::new(), b".modinfo".to_vec(), SectionKind::ReadOnlyData);
        obj.append_section_data(sec, info.as_bytes(), 1);
        let text = obj.add_section(Vec::new(), b".text".to_vec(), SectionKind::Text);
        obj.append_section_data(text, &[0xc3], 16);
        if self.padding > 0 {
            let data = obj.add_section(Vec::new(), b".data.pad".to_vec(), SectionKind::Data);
            // Not all-zero, so the payload does not compress to nothing.
            let pad: Vec<u8> = (0..self.padding).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            obj.append_section_data(data, &pad, 1);
        }
        obj.write().unwrap_or_default()
    }
}
