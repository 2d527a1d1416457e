//! Evidence of a kernel panic that survives the reboot: the records the
//! kernel keeps in pstore (`/sys/fs/pstore`, backed by UEFI variables,
//! ramoops or a block device). A record counts against the module only
//! when a call-trace line names it as a frame (`func+0x1/0x2 [module]`);
//! the "Modules linked in:" list names every loaded module and proves
//! nothing. [`read`] touches the folder; [`frame_naming`] is pure.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

/// Most records looked at, and most bytes read of each.
const MAX_RECORDS: usize = 64;
const MAX_RECORD: u64 = 256 * 1024;

/// The first record in `dir` written at or after `since` with a frame
/// naming `module`, as `FILE: LINE` (escaped); `None` when there is none
/// or the folder cannot be read.
pub fn read(dir: &Path, module: &str, since: SystemTime) -> Option<String> {
    let mut entries: Vec<_> = fs::read_dir(dir).ok()?.filter_map(Result::ok).take(MAX_RECORDS).collect();
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().find_map(|e| {
        let meta = e.metadata().ok().filter(|m| m.is_file())?;
        if meta.modified().ok()? < since {
            return None;
        }
        let mut text = Vec::new();
        fs::File::open(e.path()).ok()?.take(MAX_RECORD).read_to_end(&mut text).ok()?;
        let text = String::from_utf8_lossy(&text);
        let line = frame_naming(&text, module)?;
        let name = e.file_name().to_string_lossy().into_owned();
        Some(milspec_format::text::sanitize(&format!("{name}: {line}")))
    })
}

/// The first call-trace line of `text` with a frame in `module`
/// (`[module]` after a symbol), trimmed; never the "Modules linked in"
/// line.
pub fn frame_naming<'a>(text: &'a str, module: &str) -> Option<&'a str> {
    let tag = format!("[{module}]");
    text.lines()
        .filter(|l| !l.contains("Modules linked in"))
        .find(|l| l.split_whitespace().any(|w| w == tag) && l.contains("+0x"))
        .map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const PANIC: &str = "\
Panic#1 Part1
<4>[   12.3] Modules linked in: dell_milspec(O) nvme
<4>[   12.3] CPU: 0 PID: 77 Comm: insmod Tainted: G O 6.12.113
<4>[   12.3] RIP: 0010:milspec_trip+0x15/0x30 [dell_milspec]
<4>[   12.3] Call Trace:
<4>[   12.3]  milspec_init+0x40/0x80 [dell_milspec]
<0>[   12.4] Kernel panic - not syncing: Fatal exception
";
    const OTHER: &str = "\
<4>[    9.1] Modules linked in: dell_milspec(O) nvme
<4>[    9.1] RIP: 0010:nvme_irq+0x15/0x30 [nvme]
<0>[    9.2] Kernel panic - not syncing: Fatal exception in interrupt
";

    #[test]
    fn a_frame_names_the_module_and_the_modules_list_does_not() {
        assert_eq!(
            frame_naming(PANIC, "dell_milspec"),
            Some("<4>[   12.3] RIP: 0010:milspec_trip+0x15/0x30 [dell_milspec]")
        );
        assert_eq!(frame_naming(OTHER, "dell_milspec"), None, "another driver's panic, the module only loaded");
        assert_eq!(frame_naming(PANIC, "milspec"), None);
    }

    #[test]
    fn only_a_record_since_the_trial_counts() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(&d.path().join("none"), "dell_milspec", SystemTime::UNIX_EPOCH), None);
        fs::write(d.path().join("dmesg-efi-1"), OTHER).unwrap();
        assert_eq!(read(d.path(), "dell_milspec", SystemTime::UNIX_EPOCH), None);
        fs::write(d.path().join("dmesg-efi-2"), PANIC).unwrap();
        let got = read(d.path(), "dell_milspec", SystemTime::UNIX_EPOCH).unwrap();
        assert!(got.starts_with("dmesg-efi-2: ") && got.ends_with("[dell_milspec]"), "{got}");
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(read(d.path(), "dell_milspec", later), None, "a record older than the trial is stale");
    }
}
