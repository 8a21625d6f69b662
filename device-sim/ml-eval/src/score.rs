//! Scoring, pure: a confusion matrix and its per-class precision, recall and F1; which class a
//! window is predicted as when anomalies are active; detection delay and false alarms of one run
//! from its raise and clear events. No I/O; the replay ([`crate::replay`]) feeds it.

use serde::Serialize;

/// Rows (truth) by columns (prediction) over a fixed list of classes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: Vec<String>,
    /// `counts[truth][predicted]`.
    counts: Vec<Vec<u64>>,
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// The class.
    pub class: String,
    /// Of the windows predicted as this class, the share that are (0 when none is predicted).
    pub precision: f64,
    /// Of the windows of this class, the share predicted as it (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Windows of this class.
    pub support: u64,
    /// Windows predicted as this class.
    pub predicted: u64,
}

/// Everything a confusion matrix says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Windows scored.
    pub windows: u64,
    /// Share of windows predicted as their class.
    pub accuracy: f64,
    /// Unweighted mean of the classes' F1: every class counts the same, whatever its support.
    pub macro_f1: f64,
    /// Unweighted mean of the classes' precision.
    pub macro_precision: f64,
    /// Unweighted mean of the classes' recall.
    pub macro_recall: f64,
    /// Per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    /// The class order of `confusion`'s rows and columns.
    pub classes: Vec<String>,
    /// `confusion[truth][predicted]`: windows of class `truth` predicted as `predicted`.
    pub confusion: Vec<Vec<u64>>,
}

/// `num / den`, 0 when `den` is 0 (scikit-learn's `zero_division=0`).
fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

impl Confusion {
    /// An empty matrix over `classes`.
    pub fn new<S: AsRef<str>>(classes: &[S]) -> Self {
        let n = classes.len();
        Confusion { classes: classes.iter().map(|c| c.as_ref().to_owned()).collect(), counts: vec![vec![0; n]; n] }
    }

    /// Counts one window of class index `truth` predicted as class index `predicted`.
    ///
    /// # Panics
    /// When an index is not a class of the matrix: the caller maps classes, a wrong index is a
    /// bug.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// `counts[truth][predicted]`.
    pub fn count(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth][predicted]
    }

    /// Per-class precision, recall, F1 and support; macro averages; accuracy.
    pub fn metrics(&self) -> Metrics {
        let n = self.classes.len();
        let windows: u64 = self.counts.iter().flatten().sum();
        let correct: u64 = (0..n).map(|i| self.counts[i][i]).sum();
        let per_class: Vec<ClassMetrics> = (0..n)
            .map(|i| {
                let tp = self.counts[i][i];
                let support: u64 = self.counts[i].iter().sum();
                let predicted: u64 = self.counts.iter().map(|row| row[i]).sum();
                let precision = ratio(tp, predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassMetrics { class: self.classes[i].clone(), precision, recall, f1, support, predicted }
            })
            .collect();
        let mean = |f: fn(&ClassMetrics) -> f64| {
            if n == 0 { 0.0 } else { per_class.iter().map(f).sum::<f64>() / n as f64 }
        };
        Metrics {
            windows,
            accuracy: ratio(correct, windows),
            macro_f1: mean(|c| c.f1),
            macro_precision: mean(|c| c.precision),
            macro_recall: mean(|c| c.recall),
            classes: self.classes.clone(),
            confusion: self.counts.clone(),
            per_class,
        }
    }
}

/// The class a window is predicted as, from the anomalies active when its newest reading was
/// assessed, given as `(raised at, class index)`: normal (`normal_class`) when none is active,
/// otherwise the one raised first, and among those raised at the same time the lowest class
/// index. The first alarm is the one an operator acts on, and it does not change while it stays
/// active, so a window's prediction does not flip when a second anomaly joins.
pub fn decide(active: &[(f64, usize)], normal_class: usize) -> usize {
    active
        .iter()
        .copied()
        .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
        .map_or(normal_class, |(_, class)| class)
}

/// The index of the largest score; the lowest index among equal ones (as `argmax` does).
pub fn argmax(scores: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, s) in scores.iter().copied().enumerate() {
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// A raise or a clear, as the analyzer published it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Seconds from the run's start (the reading that caused it).
    pub t_s: f64,
    /// The detector that raised or cleared it (`rules`, `model`).
    pub detector: String,
    /// The anomaly kind's class name.
    pub kind: String,
    /// `true` for a raise, `false` for a clear.
    pub raised: bool,
}

/// The fault a run carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Its class name.
    pub kind: String,
    /// Seconds from the run's start; the fault is injected right after the reading at this time.
    pub onset_s: f64,
}

/// How one run went for one detector setting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutcome {
    /// The run.
    pub run_id: u32,
    /// Its class (`normal` or the fault's kind).
    pub class: String,
    /// The fault's onset, seconds; absent in a normal run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onset_s: Option<f64>,
    /// Seconds from the onset to the first raise of the fault's kind after it; 0 when that kind
    /// was already raised at the onset (its raise is then a false alarm); absent when the fault
    /// was never raised (a miss) and in normal runs.
    pub delay_s: Option<f64>,
    /// Raises of any kind in a normal run, or before the onset in a fault run.
    pub false_alarms: u32,
    /// Raises of another kind than the fault's, after the onset.
    pub wrong_kind: u32,
}

/// Scores one run's events (in time order): detection delay, misses, false alarms.
pub fn outcome(run_id: u32, fault: Option<&Fault>, events: &[Event]) -> RunOutcome {
    let class = fault.map_or_else(|| "normal".to_owned(), |f| f.kind.clone());
    let Some(fault) = fault else {
        let false_alarms = events.iter().filter(|e| e.raised).count() as u32;
        return RunOutcome { run_id, class, onset_s: None, delay_s: None, false_alarms, wrong_kind: 0 };
    };
    let before = |e: &&Event| e.t_s <= fault.onset_s;
    let after = |e: &&Event| e.t_s > fault.onset_s;
    let false_alarms = events.iter().filter(before).filter(|e| e.raised).count() as u32;
    let wrong_kind = events.iter().filter(after).filter(|e| e.raised && e.kind != fault.kind).count() as u32;
    // Whether some detector still had the fault's kind raised when the fault began.
    let mut detectors: Vec<&str> = events.iter().map(|e| e.detector.as_str()).collect();
    detectors.sort_unstable();
    detectors.dedup();
    let active_at_onset = detectors.iter().any(|d| {
        events
            .iter()
            .rev()
            .filter(|e| e.t_s <= fault.onset_s)
            .find(|e| e.detector == *d && e.kind == fault.kind)
            .is_some_and(|e| e.raised)
    });
    let delay_s = if active_at_onset {
        Some(0.0)
    } else {
        events.iter().filter(after).find(|e| e.raised && e.kind == fault.kind).map(|e| e.t_s - fault.onset_s)
    };
    RunOutcome { run_id, class, onset_s: Some(fault.onset_s), delay_s, false_alarms, wrong_kind }
}

/// Detection of one fault class over its runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DelaySummary {
    /// The fault class.
    pub class: String,
    /// Runs with this fault.
    pub runs: usize,
    /// Runs in which it was raised after its onset.
    pub detected: usize,
    /// Runs in which it never was.
    pub missed: usize,
    /// Median delay of the detected runs, seconds (mean of the middle two for an even count).
    pub median_s: Option<f64>,
    /// Largest delay of the detected runs, seconds.
    pub max_s: Option<f64>,
    /// Mean delay of the detected runs, seconds.
    pub mean_s: Option<f64>,
}

/// False alarms over all runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FalseAlarms {
    /// Normal runs.
    pub normal_runs: usize,
    /// Normal runs with at least one raise.
    pub normal_runs_alarmed: usize,
    /// Raises in normal runs.
    pub in_normal_runs: u32,
    /// Raises in fault runs before the onset.
    pub before_onset: u32,
    /// Raises of another kind than the fault's after the onset.
    pub wrong_kind: u32,
}

/// Detection over every run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// Per fault class, in the order given.
    pub per_class: Vec<DelaySummary>,
    /// False alarms.
    pub false_alarms: FalseAlarms,
}

/// The median of `values` (sorted or not); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Summarizes run outcomes per fault class (`fault_classes`, in order) and counts false alarms.
pub fn summarize(outcomes: &[RunOutcome], fault_classes: &[&str]) -> Detection {
    let per_class = fault_classes
        .iter()
        .map(|class| {
            let runs: Vec<&RunOutcome> = outcomes.iter().filter(|o| o.class == *class && o.onset_s.is_some()).collect();
            let delays: Vec<f64> = runs.iter().filter_map(|o| o.delay_s).collect();
            DelaySummary {
                class: (*class).to_owned(),
                runs: runs.len(),
                detected: delays.len(),
                missed: runs.len() - delays.len(),
                median_s: median(&delays),
                max_s: delays.iter().copied().reduce(f64::max),
                mean_s: (!delays.is_empty()).then(|| delays.iter().sum::<f64>() / delays.len() as f64),
            }
        })
        .collect();
    let normal: Vec<&RunOutcome> = outcomes.iter().filter(|o| o.onset_s.is_none()).collect();
    let false_alarms = FalseAlarms {
        normal_runs: normal.len(),
        normal_runs_alarmed: normal.iter().filter(|o| o.false_alarms > 0).count(),
        in_normal_runs: normal.iter().map(|o| o.false_alarms).sum(),
        before_onset: outcomes.iter().filter(|o| o.onset_s.is_some()).map(|o| o.false_alarms).sum(),
        wrong_kind: outcomes.iter().map(|o| o.wrong_kind).sum(),
    };
    Detection { per_class, false_alarms }
}

#[cfg(test)]
mod tests;
