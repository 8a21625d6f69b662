//! The machine the run happened on, processes' resident memory, and the
//! open-files limit that thousands of connections need.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// What the report says about the machine.
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
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The value of the first `key: value` line of a `/proc` file.
fn field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// `"123 kB"` → 123.
fn kib(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

/// Resident set size of a process (`VmRSS`), KiB; `None` once it has exited.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    field(&status, "VmRSS").and_then(|v| kib(&v))
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

/// Raises this process's open-files limit (inherited by the brokers it
/// starts) so that `connections` sockets fit, with room to spare. Root may
/// raise the hard limit too; others get at most the hard limit and a clear
/// error if that is too low. Returns the limit now in force.
pub fn raise_open_files_limit(connections: usize) -> anyhow::Result<u64> {
    let needed = connections as u64 + 1_024;
    let now = getrlimit(Resource::Nofile);
    let (soft, hard) = (now.current.unwrap_or(u64::MAX), now.maximum.unwrap_or(u64::MAX));
    if soft >= needed {
        return Ok(soft);
    }
    let wanted = needed.max(soft);
    if setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: Some(hard.max(wanted)) }).is_ok() {
        return Ok(wanted);
    }
    // Not root (or no CAP_SYS_RESOURCE): go as far as the hard limit allows.
    let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) });
    let got = getrlimit(Resource::Nofile).current.unwrap_or(0);
    anyhow::ensure!(
        got >= needed,
        "{connections} connections need an open-files limit of at least {needed}, but the hard limit is {hard}: \
         raise it (e.g. `ulimit -Hn {needed}` as root, or /etc/security/limits.conf) or run with --quick"
    );
    Ok(got)
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
    fn own_rss_and_cpu_time_are_readable() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(cpu_ticks(me).is_some());
    }
}
