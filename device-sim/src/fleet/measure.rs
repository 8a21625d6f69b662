//! The fleet's figures, the arithmetic part (pure): a site's memory and CPU from what `/proc`
//! said of its processes at the start and the end of a measured window, percentiles of the
//! times cores took, and the lines `device-sim fleet --measure` prints.

use std::collections::BTreeMap;
use std::time::Duration;

/// One process of a site, read at the start and at the end of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessReading {
    /// CPU ticks (user + system) at the start.
    pub ticks_start: u64,
    /// CPU ticks at the end.
    pub ticks_end: u64,
    /// Resident set at the end, KiB.
    pub rss_kib: u64,
    /// Proportional set at the end (shared pages divided among their processes), KiB.
    pub pss_kib: u64,
}

/// A site's cost over the window: the sum over its processes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteCost {
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Proportional memory, MiB.
    pub pss_mib: f64,
    /// CPU, percent of one core.
    pub cpu_percent: f64,
}

/// The sum over `processes` (those alive at both ends of the window) over a `window` at
/// `ticks_per_second`. A process whose counter went backwards (its pid reused) counts no CPU.
pub fn site_cost(processes: &[ProcessReading], window: Duration, ticks_per_second: f64) -> SiteCost {
    let rss_kib: u64 = processes.iter().map(|p| p.rss_kib).sum();
    let pss_kib: u64 = processes.iter().map(|p| p.pss_kib).sum();
    let ticks: u64 = processes.iter().map(|p| p.ticks_end.saturating_sub(p.ticks_start)).sum();
    let seconds = window.as_secs_f64();
    let cpu_percent = if seconds > 0.0 { ticks as f64 / ticks_per_second / seconds * 100.0 } else { 0.0 };
    SiteCost { rss_mib: rss_kib as f64 / 1024.0, pss_mib: pss_kib as f64 / 1024.0, cpu_percent }
}

/// Mean, and the largest, of each figure over the sites.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FleetCost {
    /// Sites measured.
    pub sites: usize,
    /// Mean resident memory per site, MiB.
    pub rss_mean_mib: f64,
    /// Largest resident memory of a site, MiB.
    pub rss_max_mib: f64,
    /// Mean proportional memory per site, MiB.
    pub pss_mean_mib: f64,
    /// Mean CPU per site, percent of one core.
    pub cpu_mean_percent: f64,
    /// Largest CPU of a site.
    pub cpu_max_percent: f64,
}

/// The fleet's summary of `sites`; `None` for none.
pub fn fleet_cost(sites: &[SiteCost]) -> Option<FleetCost> {
    if sites.is_empty() {
        return None;
    }
    let n = sites.len() as f64;
    let max = |f: fn(&SiteCost) -> f64| sites.iter().map(f).fold(f64::MIN, f64::max);
    Some(FleetCost {
        sites: sites.len(),
        rss_mean_mib: sites.iter().map(|s| s.rss_mib).sum::<f64>() / n,
        rss_max_mib: max(|s| s.rss_mib),
        pss_mean_mib: sites.iter().map(|s| s.pss_mib).sum::<f64>() / n,
        cpu_mean_percent: sites.iter().map(|s| s.cpu_percent).sum::<f64>() / n,
        cpu_max_percent: max(|s| s.cpu_percent),
    })
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank; `None` for none.
pub fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// How a campaign (a deployment, a rotation) reached the fleet: per core, the time to its
/// terminal status, and the statuses counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Campaign {
    /// Cores that reported a terminal status, with the time it took.
    pub times: Vec<Duration>,
    /// Terminal statuses, counted.
    pub statuses: BTreeMap<String, usize>,
    /// Cores the campaign targeted.
    pub targeted: usize,
}

impl Campaign {
    /// `reached N/M, SUCCEEDED n, FAILED f; p50 …, p99 …, last …`.
    pub fn line(&self) -> String {
        let statuses: Vec<String> = self.statuses.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let ms = |d: Option<Duration>| d.map_or("–".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        format!(
            "{}/{} cores ({}); per core p50 {}, p99 {}; all {}",
            self.times.len(),
            self.targeted,
            if statuses.is_empty() { "none".to_owned() } else { statuses.join(", ") },
            ms(percentile(&self.times, 50.0)),
            ms(percentile(&self.times, 99.0)),
            ms(self.times.iter().max().copied().filter(|_| self.times.len() == self.targeted)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(ticks_start: u64, ticks_end: u64, rss_kib: u64) -> ProcessReading {
        ProcessReading { ticks_start, ticks_end, rss_kib, pss_kib: rss_kib / 2 }
    }

    fn cost(rss_mib: f64, cpu_percent: f64) -> SiteCost {
        SiteCost { rss_mib, pss_mib: rss_mib / 2.0, cpu_percent }
    }

    #[test]
    fn a_site_costs_the_sum_of_its_processes_over_the_window() {
        let cases = [
            (vec![], 10, cost(0.0, 0.0)),
            (vec![reading(100, 150, 2048)], 10, cost(2.0, 5.0)),
            (vec![reading(0, 100, 1024), reading(50, 150, 3072)], 20, cost(4.0, 10.0)),
            // A counter that went backwards (a reused pid) counts no CPU, its memory still counts.
            (vec![reading(500, 10, 1024)], 10, cost(1.0, 0.0)),
            (vec![reading(0, 100, 1024)], 0, cost(1.0, 0.0)),
        ];
        for (processes, secs, wanted) in cases {
            assert_eq!(site_cost(&processes, Duration::from_secs(secs), 100.0), wanted, "{processes:?} over {secs} s");
        }
    }

    #[test]
    fn the_fleet_cost_is_the_mean_and_the_largest_of_its_sites() {
        assert_eq!(fleet_cost(&[]), None);
        let sites = [cost(10.0, 1.0), cost(30.0, 5.0)];
        let fleet = fleet_cost(&sites).unwrap();
        let wanted = FleetCost {
            sites: 2,
            rss_mean_mib: 20.0,
            rss_max_mib: 30.0,
            pss_mean_mib: 10.0,
            cpu_mean_percent: 3.0,
            cpu_max_percent: 5.0,
        };
        assert_eq!(fleet, wanted);
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        let cases: [(&[u64], f64, Option<u64>); 6] = [
            (&[], 50.0, None),
            (&[7], 99.0, Some(7)),
            (&[30, 10, 20], 50.0, Some(20)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50.0, Some(5)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99.0, Some(10)),
            (&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.0, Some(1)),
        ];
        for (values, p, wanted) in cases {
            assert_eq!(percentile(&ms(values), p), wanted.map(Duration::from_millis), "p{p} of {values:?}");
        }
    }

    #[test]
    fn a_campaign_line_counts_statuses_and_gives_the_last_time_only_when_every_core_reported() {
        let mut campaign = Campaign {
            times: vec![Duration::from_millis(1500), Duration::from_millis(2500)],
            statuses: BTreeMap::from([("SUCCEEDED".to_owned(), 2)]),
            targeted: 3,
        };
        assert_eq!(campaign.line(), "2/3 cores (SUCCEEDED 2); per core p50 1.5 s, p99 2.5 s; all –");
        campaign.targeted = 2;
        assert_eq!(campaign.line(), "2/2 cores (SUCCEEDED 2); per core p50 1.5 s, p99 2.5 s; all 2.5 s");
    }
}
