//! Nearest-rank percentiles and latency summaries, the same for every benchmark.

use std::time::Duration;

/// Latency distribution of a set of samples.
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
    /// Arithmetic mean.
    pub mean: Duration,
}

/// The nearest-rank percentile `p` (0–100] of `sorted` (ascending, not empty).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarizes latency samples in nanoseconds; `None` without samples.
pub fn latency(mut samples_ns: Vec<u64>) -> Option<Latency> {
    if samples_ns.is_empty() {
        return None;
    }
    samples_ns.sort_unstable();
    let sum: u128 = samples_ns.iter().map(|&s| u128::from(s)).sum();
    Some(Latency {
        count: samples_ns.len(),
        p50: Duration::from_nanos(percentile(&samples_ns, 50.0)),
        p99: Duration::from_nanos(percentile(&samples_ns, 99.0)),
        max: Duration::from_nanos(*samples_ns.last().unwrap_or(&0)),
        mean: Duration::from_nanos((sum / samples_ns.len() as u128) as u64),
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
        assert_eq!(l.mean, Duration::from_nanos(50));
    }

    #[test]
    fn p99_of_few_samples_is_the_largest() {
        let sorted = [10, 20, 30];
        assert_eq!(percentile(&sorted, 99.0), 30);
        assert_eq!(percentile(&sorted, 50.0), 20);
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_no_summary() {
        let l = latency(vec![7]).unwrap();
        let seven = Duration::from_nanos(7);
        assert_eq!((l.p50, l.p99, l.max, l.mean), (seven, seven, seven, seven));
        assert_eq!(latency(Vec::new()), None);
    }
}
