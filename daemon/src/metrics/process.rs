//! The daemon's own `process_*` metrics, read from `/proc/self` with the
//! `procfs` crate the way the Prometheus client libraries read them
//! (`stat` for CPU, memory and start time, `fd/` and `limits` for file
//! descriptors).

/// One look at this process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub open_fds: u64,
    /// The soft limit on open files; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// Unix time the process started.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self`; `None` if any part cannot be read (the metrics
    /// are then left out rather than written wrong).
    pub fn read() -> Option<Self> {
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = procfs::ticks_per_second().max(1) as f64;
        let boot = procfs::boot_time_secs().ok()? as f64;
        let open_fds = me.fd_count().ok()? as u64;
        let max_fds = match me.limits().ok()?.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(v) => Some(v),
            procfs::process::LimitValue::Unlimited => None,
        };
        Some(ProcessStats {
            resident_memory_bytes: stat.rss.saturating_mul(procfs::page_size()),
            virtual_memory_bytes: stat.vsize,
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            open_fds,
            max_fds,
            start_time_seconds: boot + stat.starttime as f64 / ticks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let Some(p) = ProcessStats::read() else {
            panic!("/proc/self must be readable on Linux");
        };
        assert!(p.resident_memory_bytes > 0 && p.virtual_memory_bytes >= p.resident_memory_bytes, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        assert!(p.start_time_seconds > 1.0e9 && p.start_time_seconds <= now + 1.0, "{p:?}");
        assert!(p.cpu_seconds >= 0.0);
    }
}
