//! The machine a run happened on, and a process's memory and CPU time, read from `/proc`.

/// What a report says about the machine.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub nproc: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, KiB.
    pub mem_total_kib: u64,
    /// Kernel release.
    pub kernel: String,
    /// `/proc/loadavg` when the run started: shows other work on the machine.
    pub loadavg_at_start: String,
}

impl Machine {
    /// Reads `/proc`; unknown values are left empty or zero.
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            mem_total_kib: field(&meminfo, "MemTotal").and_then(|v| kib(&v)).unwrap_or(0),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            loadavg_at_start: read_trimmed("/proc/loadavg"),
        }
    }

    /// `2 × CPU model, 23.6 GiB RAM, Linux 6.1; load average at start `…``: the start of a
    /// report's machine line, to which each report adds what shares the machine in its run.
    pub fn summary(&self) -> String {
        format!(
            "{} × {}, {:.1} GiB RAM, Linux {}; load average at start `{}`",
            self.nproc,
            self.cpu_model,
            self.mem_total_kib as f64 / 1024.0 / 1024.0,
            self.kernel,
            self.loadavg_at_start
        )
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The value of the first `key: value` line of a `/proc` file.
pub fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// `"123 kB"` → 123.
fn kib(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// A `… kB` line of `/proc/{pid}/status` (`VmRSS`, `VmHWM`, …), KiB; `None` once the process
/// has exited or if the line is missing.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field(&status, key).and_then(|v| kib(&v))
}

/// Resident set size of a process (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Peak resident set size of a process so far (`VmHWM`), KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// CPU time (user + system) a process has used so far, in clock ticks of 10 ms.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_are_read_by_key() {
        let text = "Name:\tx\nVmPeak:\t  2000 kB\nVmRSS:\t  1234 kB\n";
        assert_eq!(field(text, "VmRSS").and_then(|v| kib(&v)), Some(1234));
        assert_eq!(field(text, "VmSwap"), None);
    }

    #[test]
    fn own_memory_and_cpu_time_are_readable_and_peak_is_at_least_current() {
        let me = std::process::id();
        let rss = rss_kib(me).unwrap();
        assert!(rss > 0);
        assert!(hwm_kib(me).unwrap() >= rss);
        assert!(cpu_ticks(me).is_some());
    }

    #[test]
    fn a_process_that_is_gone_has_no_figures() {
        // Pids are at most 2^22 on Linux, so this one never exists.
        assert_eq!(rss_kib(u32::MAX), None);
        assert_eq!(cpu_ticks(u32::MAX), None);
    }

    #[test]
    fn summary_names_cores_memory_kernel_and_load() {
        let m = Machine {
            nproc: 2,
            cpu_model: "Test CPU".into(),
            mem_total_kib: 2 * 1024 * 1024,
            kernel: "6.1.0".into(),
            loadavg_at_start: "0.50 0.40 0.30 1/100 42".into(),
        };
        assert_eq!(
            m.summary(),
            "2 × Test CPU, 2.0 GiB RAM, Linux 6.1.0; load average at start `0.50 0.40 0.30 1/100 42`"
        );
    }
}
