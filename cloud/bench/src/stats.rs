//! Time stamps and latency percentiles. Publishers and subscribers live in
//! this one process, so a monotonic clock shared by both measures latency
//! without any clock synchronisation.

use std::time::{Duration, Instant};

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

/// Latency distribution of one phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

/// The nearest-rank percentile `p` (0–100] of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarizes latency samples in nanoseconds; `None` without samples.
pub fn latency(mut samples_ns: Vec<u64>) -> Option<Latency> {
    if samples_ns.is_empty() {
        return None;
    }
    samples_ns.sort_unstable();
    Some(Latency {
        count: samples_ns.len(),
        p50: Duration::from_nanos(percentile(&samples_ns, 50.0)),
        p99: Duration::from_nanos(percentile(&samples_ns, 99.0)),
        max: Duration::from_nanos(*samples_ns.last().unwrap_or(&0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u64> = (1..=100).rev().collect();
        let l = latency(samples).unwrap();
        assert_eq!(l.count, 100);
        assert_eq!(l.p50, Duration::from_nanos(50));
        assert_eq!(l.p99, Duration::from_nanos(99));
        assert_eq!(l.max, Duration::from_nanos(100));
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_no_summary() {
        let l = latency(vec![7]).unwrap();
        assert_eq!((l.p50, l.p99, l.max), (Duration::from_nanos(7), Duration::from_nanos(7), Duration::from_nanos(7)));
        assert_eq!(latency(Vec::new()), None);
    }

    #[test]
    fn clock_is_monotonic() {
        let c = Clock::new();
        let a = c.now_ns();
        assert!(c.now_ns() >= a);
    }
}
