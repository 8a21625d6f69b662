//! The machine the run happened on and processes' resident memory (shared with the other
//! benchmarks in `bench-common`), and the open-files limit that thousands of connections need.

pub use bench_common::machine::{Machine, cpu_ticks, rss_kib};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

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
