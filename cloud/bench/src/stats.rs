//! Time stamps and latency percentiles (the percentiles shared with the other benchmarks in
//! `bench-common`). Publishers and subscribers live in this one process, so a monotonic clock
//! shared by both measures latency without any clock synchronisation.

use std::time::Instant;

pub use bench_common::stats::{Latency, latency};

/// Nanoseconds since the start of the run, monotonic.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock { epoch: Instant::now() }
    }

    /// Nanoseconds since the clock started.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic() {
        let c = Clock::new();
        let a = c.now_ns();
        assert!(c.now_ns() >= a);
    }
}
