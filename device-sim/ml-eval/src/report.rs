//! The report: what was evaluated and the scores, as JSON (the record) and as markdown tables
//! (for `docs/ml.md`). Built from the replay's results; rendering is pure and deterministic.

use device_sim::dataset::plan::{CLASSES, Split};
use pump_analyzer::config::{Config, ModelConfig};
use pump_analyzer::model::Model;
use serde::Serialize;

use crate::replay::{Dataset, Replayed};
use crate::score::{Detection, Metrics, RunOutcome, summarize};

/// The report's format; a change of its shape raises it.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// How a window's prediction is decided (also in the README and `docs/ml.md`).
pub const DECISION_RULE: &str = "a row is the window that ends with the reading at t_s, labelled by the dataset's \
label rule; it is predicted as the anomaly kind the analyzer has active after assessing that reading (normal when \
none is); when several are active, the one raised first, and among those raised by the same reading the first in \
class order";

/// How detection delay and false alarms are counted.
pub const DELAY_RULE: &str = "per fault run: seconds from the onset (the fault is injected right after the reading \
at onset_s) to the first raise of the fault's kind after it (0 when that kind is still raised from before the \
onset); a run where it is never raised is a miss. False alarms: raises in normal runs and raises before the onset \
in fault runs; raises of another kind after the onset are counted apart";

/// The dataset evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    /// What wrote it.
    pub generator: String,
    /// Its seed.
    pub seed: u64,
    /// Its simulated hours.
    pub hours: f64,
    /// Minutes per run.
    pub run_minutes: f64,
    /// Readings per window.
    pub window_samples: usize,
    /// Milliseconds between readings.
    pub poll_period_ms: u64,
    /// Readings between rows.
    pub stride_samples: usize,
    /// The manifest's training digest.
    pub training_digest: String,
    /// The split evaluated.
    pub split: String,
    /// Runs replayed.
    pub runs: usize,
    /// Rows (windows) scored.
    pub windows: usize,
}

/// The model evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Its card's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The model file's SHA-256.
    pub sha256: String,
    /// The training digest its card records (equal to the dataset's when trained on it).
    pub training_digest: Option<String>,
}

/// The analyzer settings common to every detector setting.
#[derive(Debug, Clone, Serialize)]
pub struct AnalyzerInfo {
    /// `windowSamples`.
    pub window_samples: usize,
    /// `raiseAfter`.
    pub raise_after: u32,
    /// `clearAfter`.
    pub clear_after: u32,
    /// `model.*`.
    pub model: ModelConfig,
}

/// One detector setting's scores.
#[derive(Debug, Clone, Serialize)]
pub struct Result {
    /// `rules`, `model`, `both`, or `raw_model` (argmax per window, no hysteresis).
    pub detector: String,
    /// Per-window scores.
    pub windows: Metrics,
    /// Detection delay and false alarms (not for the raw model, which raises nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
    /// Per run (not for the raw model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<RunOutcome>>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// `ml-eval`.
    pub tool: &'static str,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// The model.
    pub model: ModelInfo,
    /// The analyzer's settings.
    pub analyzer: AnalyzerInfo,
    /// [`DECISION_RULE`].
    pub decision_rule: &'static str,
    /// [`DELAY_RULE`].
    pub delay_rule: &'static str,
    /// Per setting (`rules`, `model`, `both`), then `raw_model`.
    pub results: Vec<Result>,
}

/// Builds the report of a replay.
/// `card_training_digest` is the training digest the model card records, when it has one.
pub fn build(
    dataset: &Dataset,
    split: Split,
    model: &Model,
    card_training_digest: Option<String>,
    config: &Config,
    replayed: &Replayed,
) -> Report {
    let faults: Vec<&str> = CLASSES[1..].to_vec();
    let mut results: Vec<Result> = replayed
        .settings
        .iter()
        .map(|s| Result {
            detector: s.choice.as_str().to_owned(),
            windows: s.confusion.metrics(),
            detection: Some(summarize(&s.outcomes, &faults)),
            runs: Some(s.outcomes.clone()),
        })
        .collect();
    results.push(Result {
        detector: "raw_model".to_owned(),
        windows: replayed.raw_model.metrics(),
        detection: None,
        runs: None,
    });
    let o = &dataset.options;
    Report {
        format_version: REPORT_FORMAT_VERSION,
        tool: "ml-eval",
        dataset: DatasetInfo {
            generator: dataset.generator.clone(),
            seed: dataset.seed,
            hours: dataset.hours,
            run_minutes: o.run_minutes,
            window_samples: o.window,
            poll_period_ms: o.poll_ms,
            stride_samples: o.stride,
            training_digest: dataset.training_digest.clone(),
            split: split.name().to_owned(),
            runs: replayed.runs,
            windows: replayed.rows,
        },
        model: ModelInfo {
            name: model.card().name.clone(),
            version: model.version().to_owned(),
            sha256: model.sha256().to_owned(),
            training_digest: card_training_digest,
        },
        analyzer: AnalyzerInfo {
            window_samples: config.window_samples,
            raise_after: config.raise_after,
            clear_after: config.clear_after,
            model: config.model.clone(),
        },
        decision_rule: DECISION_RULE,
        delay_rule: DELAY_RULE,
        results,
    }
}

fn f3(x: f64) -> String {
    format!("{x:.3}")
}

fn secs(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_owned(), |s| format!("{s:.0}"))
}

/// The report as markdown: a summary table, then per setting the per-class table (with detection
/// delays) and its confusion matrix.
pub fn markdown(report: &Report) -> String {
    let d = &report.dataset;
    let a = &report.analyzer;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "Evaluation of the `{}` split of `device-sim dataset --seed {} --hours {}` ({} runs, {} windows) with model \
         {} {} (SHA-256 `{}`); analyzer defaults: windowSamples {}, raiseAfter {}, clearAfter {}, raiseScore {}, \
         sustainScore {}.",
        d.split,
        d.seed,
        d.hours,
        d.runs,
        d.windows,
        report.model.name,
        report.model.version,
        report.model.sha256,
        a.window_samples,
        a.raise_after,
        a.clear_after,
        a.model.raise_score,
        a.model.sustain_score
    ));
    line(String::new());
    let mut head = "| detector | macro F1 | accuracy |".to_owned();
    let mut rule = "| --- | ---: | ---: |".to_owned();
    for c in CLASSES {
        head.push_str(&format!(" F1 {c} |"));
        rule.push_str(" ---: |");
    }
    head.push_str(" false alarms |");
    rule.push_str(" ---: |");
    line(head);
    line(rule);
    for r in &report.results {
        let mut row = format!("| {} | **{}** | {} |", r.detector, f3(r.windows.macro_f1), f3(r.windows.accuracy));
        for c in &r.windows.per_class {
            row.push_str(&format!(" {} |", f3(c.f1)));
        }
        let alarms = r.detection.as_ref().map_or_else(
            || "–".to_owned(),
            |det| (det.false_alarms.in_normal_runs + det.false_alarms.before_onset).to_string(),
        );
        row.push_str(&format!(" {alarms} |"));
        line(row);
    }
    for r in &report.results {
        line(String::new());
        line(format!("### `{}`", r.detector));
        line(String::new());
        line("| class | precision | recall | F1 | support | detected runs | median delay (s) | max delay (s) |".into());
        line("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into());
        for c in &r.windows.per_class {
            let delay = r.detection.as_ref().and_then(|det| det.per_class.iter().find(|s| s.class == c.class));
            let (detected, median, max) = match delay {
                Some(s) => (format!("{}/{}", s.detected, s.runs), secs(s.median_s), secs(s.max_s)),
                None => ("–".to_owned(), "–".to_owned(), "–".to_owned()),
            };
            line(format!(
                "| {} | {} | {} | {} | {} | {detected} | {median} | {max} |",
                c.class,
                f3(c.precision),
                f3(c.recall),
                f3(c.f1),
                c.support
            ));
        }
        let w = &r.windows;
        line(format!(
            "| **macro** | {} | {} | **{}** | {} | | | |",
            f3(w.macro_precision),
            f3(w.macro_recall),
            f3(w.macro_f1),
            w.windows
        ));
        if let Some(det) = &r.detection {
            let fa = &det.false_alarms;
            line(String::new());
            line(format!(
                "False alarms: {} raises in {} of {} normal runs, {} before a fault's onset; {} raises of another \
                 kind after the onset.",
                fa.in_normal_runs, fa.normal_runs_alarmed, fa.normal_runs, fa.before_onset, fa.wrong_kind
            ));
        }
        line(String::new());
        line("Confusion (rows: true class, columns: predicted):".into());
        line(String::new());
        let mut head = "| true \\ predicted |".to_owned();
        let mut rule = "| --- |".to_owned();
        for c in &w.classes {
            head.push_str(&format!(" {c} |"));
            rule.push_str(" ---: |");
        }
        line(head);
        line(rule);
        for (class, counts) in w.classes.iter().zip(&w.confusion) {
            let cells: Vec<String> = counts.iter().map(u64::to_string).collect();
            line(format!("| {class} | {} |", cells.join(" | ")));
        }
    }
    out
}
