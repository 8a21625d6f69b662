//! The plan of a fleet, pure: which sites, their thing names, their plants' seeds, and when each
//! plant gets which fault. Everything follows from `--seed`, so a run is reproduced exactly.

use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::plant::FaultKind;

/// The most sites one fleet runs (one machine holds far fewer; the bound catches a typo).
pub const MAX_SITES: usize = 10_000;

/// The kinds of fault the fleet injects: those that change the physics (a stuck transmitter
/// needs a chosen measurement and only freezes a number).
pub const INJECTED: [FaultKind; 3] = [FaultKind::BearingWear, FaultKind::Cavitation, FaultKind::Overheating];

/// A fault of one plant: when it starts, how long it lasts, how bad it is.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// After the fleet started.
    pub at: Duration,
    /// How long until it is cleared.
    pub lasts: Duration,
    /// What.
    pub kind: FaultKind,
    /// In 0..=1.
    pub severity: f64,
}

/// One site of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct SitePlan {
    /// 0-based position in the fleet.
    pub index: usize,
    /// The core device's thing name (the claim's `ThingName` template parameter).
    pub thing: String,
    /// The plant's noise seed.
    pub seed: u64,
    /// The plant's faults, in time order.
    pub faults: Vec<ScheduledFault>,
}

/// How faults are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultRate {
    /// Mean faults per site per hour (0: none).
    pub per_hour: f64,
    /// Faults are drawn for this long after the start.
    pub horizon: Duration,
    /// Shortest and longest duration of a fault.
    pub lasts: (Duration, Duration),
}

impl Default for FaultRate {
    /// Two faults per site per hour over a day, each lasting one to five minutes.
    fn default() -> Self {
        FaultRate {
            per_hour: 2.0,
            horizon: Duration::from_secs(24 * 3600),
            lasts: (Duration::from_secs(60), Duration::from_secs(300)),
        }
    }
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// The number of sites is out of range.
    #[error("--sites {0}: a fleet has 1 to {MAX_SITES} sites")]
    Sites(usize),
    /// The group name cannot be part of a thing name.
    #[error("--group {0:?}: a thing group name is 1 to 100 of [a-zA-Z0-9:_-]")]
    Group(String),
    /// The fault rate is not a finite number of faults per hour, or the durations are inverted.
    #[error(
        "fault rate {0}: faults per hour must be finite and not negative, the shortest fault not longer than the longest"
    )]
    Rate(String),
}

/// The thing name of site `index` of `group`.
pub fn thing_name(group: &str, index: usize) -> String {
    format!("{group}-site-{index:04}")
}

/// The plan of `sites` sites of `group`, drawn from `seed`.
pub fn plan(sites: usize, seed: u64, group: &str, rate: FaultRate) -> Result<Vec<SitePlan>, PlanError> {
    if !(1..=MAX_SITES).contains(&sites) {
        return Err(PlanError::Sites(sites));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-');
    if group.is_empty() || group.len() > 100 || !group.chars().all(valid) {
        return Err(PlanError::Group(group.to_owned()));
    }
    if !rate.per_hour.is_finite() || rate.per_hour < 0.0 || rate.lasts.0 > rate.lasts.1 {
        return Err(PlanError::Rate(format!("{rate:?}")));
    }
    let mut fleet = Xoshiro256PlusPlus::seed_from_u64(seed);
    Ok((0..sites)
        .map(|index| {
            let plant_seed = fleet.random::<u64>();
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(fleet.random::<u64>());
            SitePlan { index, thing: thing_name(group, index), seed: plant_seed, faults: faults(&mut rng, rate) }
        })
        .collect())
}

/// Faults as a Poisson process of `rate.per_hour` up to the horizon.
fn faults(rng: &mut Xoshiro256PlusPlus, rate: FaultRate) -> Vec<ScheduledFault> {
    let mut out = Vec::new();
    if rate.per_hour == 0.0 {
        return out;
    }
    let mean_gap_s = 3600.0 / rate.per_hour;
    let mut at_s = 0.0;
    loop {
        // Exponential inter-arrival times: -ln(U) * mean, U in (0, 1].
        let u: f64 = 1.0 - rng.random::<f64>();
        at_s += -u.ln() * mean_gap_s;
        if at_s >= rate.horizon.as_secs_f64() {
            return out;
        }
        let kind = INJECTED[rng.random_range(0..INJECTED.len())];
        let severity = (rng.random_range(0.3..=1.0_f64) * 100.0).round() / 100.0;
        let lasts = rng.random_range(rate.lasts.0.as_secs_f64()..=rate.lasts.1.as_secs_f64());
        out.push(ScheduledFault {
            at: Duration::from_secs_f64(at_s),
            lasts: Duration::from_secs_f64(lasts),
            kind,
            severity,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fleet_and_another_seed_another() {
        let a = plan(5, 42, "pumps", FaultRate::default()).unwrap();
        assert_eq!(a, plan(5, 42, "pumps", FaultRate::default()).unwrap());
        let b = plan(5, 43, "pumps", FaultRate::default()).unwrap();
        assert_ne!(a.iter().map(|s| s.seed).collect::<Vec<_>>(), b.iter().map(|s| s.seed).collect::<Vec<_>>());
        // A bigger fleet begins with the same sites: adding sites does not reshuffle the others.
        assert_eq!(a[..], plan(8, 42, "pumps", FaultRate::default()).unwrap()[..5]);
    }

    #[test]
    fn sites_are_named_in_order_with_distinct_seeds() {
        let sites = plan(3, 7, "g", FaultRate::default()).unwrap();
        let names: Vec<&str> = sites.iter().map(|s| s.thing.as_str()).collect();
        assert_eq!(names, ["g-site-0000", "g-site-0001", "g-site-0002"]);
        let mut seeds: Vec<u64> = sites.iter().map(|s| s.seed).collect();
        seeds.dedup();
        assert_eq!(seeds.len(), 3);
    }

    #[test]
    fn faults_stay_in_the_horizon_in_order_and_in_range_and_come_at_about_the_rate() {
        let rate = FaultRate { per_hour: 6.0, horizon: Duration::from_secs(100 * 3600), ..FaultRate::default() };
        let sites = plan(4, 1, "g", rate).unwrap();
        for site in &sites {
            assert!(site.faults.windows(2).all(|w| w[0].at <= w[1].at), "{site:?}");
            for f in &site.faults {
                assert!(f.at < rate.horizon && INJECTED.contains(&f.kind));
                assert!((0.3..=1.0).contains(&f.severity) && (rate.lasts.0..=rate.lasts.1).contains(&f.lasts));
            }
        }
        // 4 sites × 100 h × 6/h = 2,400 expected; a Poisson count stays within ±10 % here.
        let total: usize = sites.iter().map(|s| s.faults.len()).sum();
        assert!((2160..=2640).contains(&total), "{total}");
        let none = FaultRate { per_hour: 0.0, ..rate };
        assert!(plan(2, 1, "g", none).unwrap().iter().all(|s| s.faults.is_empty()));
    }

    #[test]
    fn bad_input_is_refused_with_what_is_wrong() {
        let rate = FaultRate::default();
        let cases = [
            (0, "g", rate, PlanError::Sites(0)),
            (MAX_SITES + 1, "g", rate, PlanError::Sites(MAX_SITES + 1)),
            (1, "", rate, PlanError::Group(String::new())),
            (1, "bad group", rate, PlanError::Group("bad group".into())),
        ];
        for (sites, group, rate, wanted) in cases {
            assert_eq!(plan(sites, 1, group, rate).unwrap_err(), wanted);
        }
        let nan = FaultRate { per_hour: f64::NAN, ..rate };
        assert!(matches!(plan(1, 1, "g", nan), Err(PlanError::Rate(_))));
        let inverted = FaultRate { lasts: (Duration::from_secs(2), Duration::from_secs(1)), ..rate };
        assert!(matches!(plan(1, 1, "g", inverted), Err(PlanError::Rate(_))));
    }
}
