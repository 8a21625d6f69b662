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

/// `VmRSS` and `VmHWM` of a process from one read of `/proc/{pid}/status`, KiB (two reads may
/// see the resident set change in between, and the peak then look lower than the current).
pub fn rss_and_hwm_kib(pid: u32) -> (Option<u64>, Option<u64>) {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return (None, None) };
    let get = |key| field(&status, key).and_then(|v| kib(&v));
    (get("VmRSS"), get("VmHWM"))
}

/// Resident set size of a process (`VmRSS`), KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Proportional set size of a process (`Pss` of `/proc/{pid}/smaps_rollup`), KiB: its resident
/// pages with each shared page divided among the processes that map it, so many processes of one
/// binary are not each charged its whole text.
pub fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    field(&rollup, "Pss").and_then(|v| kib(&v))
}

/// How many file descriptors a process has open (entries of `/proc/{pid}/fd`).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Peak resident set size of a process so far (`VmHWM`), KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

/// CPU time (user + system) a process has used so far, in clock ticks of 10 ms.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|s| s.utime + s.stime)
}

/// Clock ticks per second of `/proc/{pid}/stat`'s times (`USER_HZ`, 100 on every Linux
/// architecture the project builds for).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/{pid}/stat` a report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The parent's pid.
    pub ppid: u32,
    /// User CPU time, clock ticks.
    pub utime: u64,
    /// System CPU time, clock ticks.
    pub stime: u64,
}

/// `/proc/{pid}/stat` of a process; `None` once it has exited.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses the text of a `/proc/{pid}/stat` file.
pub fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may contain spaces and parentheses; the fields after its last `)` are fixed.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        ppid: fields.get(1)?.parse().ok()?,
        utime: fields.get(11)?.parse().ok()?,
        stime: fields.get(12)?.parse().ok()?,
    })
}

/// Every process descended from `root` (children, their children, …), from one walk of `/proc`.
/// A process that exits during the walk is left out.
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?.ppid)))
        .collect();
    descendants_in(root, &parents)
}

/// The descendants of `root` among `(pid, ppid)` pairs, parents before their children.
pub fn descendants_in(root: u32, parents: &[(u32, u32)]) -> Vec<u32> {
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|&&(pid, ppid)| ppid == parent && pid != parent).map(|&(pid, _)| pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// The arguments a process was started with (`/proc/{pid}/cmdline`); empty once it has exited.
pub fn cmdline(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    bytes.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
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
        assert!(rss_kib(me).unwrap() > 0 && hwm_kib(me).unwrap() > 0);
        // One read of /proc: two reads may see the resident set shrink in between (other test
        // threads free memory), and the kernel's counters are approximate across reads.
        let (rss, hwm) = rss_and_hwm_kib(me);
        assert!(hwm.unwrap() >= rss.unwrap(), "{rss:?} {hwm:?}");
        assert!(cpu_ticks(me).is_some());
    }

    #[test]
    fn stat_fields_are_read_after_the_command_name_even_with_spaces_and_parentheses() {
        let text = "4242 (pump (x) 1) S 17 4242 4242 0 -1 4194560 120 0 0 0 250 31 0 0 20 0 3 0 99 0 0";
        assert_eq!(parse_stat(text), Some(Stat { ppid: 17, utime: 250, stime: 31 }));
        assert_eq!(parse_stat("4242 (cut) S 17"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn descendants_are_children_and_their_children_not_siblings() {
        // 1 → 10 → 11 → 12; 1 → 20 (a sibling of 10); 10 → 13.
        let parents = [(10, 1), (11, 10), (12, 11), (20, 1), (13, 10)];
        assert_eq!(descendants_in(10, &parents), vec![11, 13, 12]);
        assert_eq!(descendants_in(12, &parents), Vec::<u32>::new());
    }

    #[test]
    fn a_child_process_is_found_with_its_command_line() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let found = descendants(std::process::id());
        // The kernel lets the parent go on during exec before the new image's arguments are in
        // place: until then /proc/PID/cmdline reads empty.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let args = loop {
            let args = cmdline(child.id());
            if !args.is_empty() || std::time::Instant::now() > deadline {
                break args;
            }
            std::thread::yield_now();
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(found.contains(&child.id()), "{found:?}");
        assert_eq!(args, vec!["sleep", "30"]);
        assert_eq!(stat(child.id()).map(|s| s.ppid), None, "reaped: gone from /proc");
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
