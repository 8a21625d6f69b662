//! The replay: a dataset's manifest read back, every run of one split simulated again reading by
//! reading with the generator's own code ([`device_sim::dataset::simulate::readings`]), and each
//! reading fed to the analyzer's pure core ([`Analyzer`], hysteresis included) once per detector
//! setting. What the analyzers have active at each row's reading, the events they publish and the
//! raw model's scores go to the scoring ([`crate::score`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use device_sim::dataset::plan::{CLASSES, RunPlan, Split};
use device_sim::dataset::simulate::{Polled, readings};
use device_sim::dataset::{DatasetArgs, DatasetError, DatasetOptions, FORMAT_VERSION};
use pump_analyzer::analyzer::Analyzer;
use pump_analyzer::config::{Config, DetectorChoice};
use pump_analyzer::detector::kind_name;
use pump_analyzer::model::{Model, ModelError, class_name};
use pump_features::Window;
use serde::Deserialize;

use crate::score::{self, Confusion, Event, Fault, RunOutcome};

/// The detector settings the evaluation runs, in report order.
pub const SETTINGS: [DetectorChoice; 3] = [DetectorChoice::Rules, DetectorChoice::Model, DetectorChoice::Both];

/// Why an evaluation could not be made, sorted by what the caller fixes.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The dataset has no readable manifest: point `--dataset` at a directory `device-sim dataset`
    /// wrote (it writes `manifest.json` last, so a directory without one is incomplete).
    #[error("cannot read the dataset manifest {}: {source}", path.display())]
    ManifestUnreadable {
        /// The manifest's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is not one this tool can replay: regenerate the dataset.
    #[error("the dataset manifest {} is invalid: {reason}", path.display())]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model is refused by the analyzer's checks, or does not fit the dataset.
    #[error("the model in {} is refused: {reason}", dir.display())]
    Model {
        /// The model directory.
        dir: PathBuf,
        /// The analyzer's reason.
        reason: String,
    },
    /// The replay does not reproduce the dataset's rows: the dataset was written by another
    /// version of the generator (or the plant model changed); regenerate it.
    #[error("the replay does not reproduce the dataset: {0}; regenerate the dataset with this version of device-sim")]
    Mismatch(String),
    /// The simulation or the analyzer failed where it never should: a bug, report it.
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Deserialize)]
struct ManifestDoc {
    format_version: u32,
    generator: String,
    seed: u64,
    hours: f64,
    run_minutes: f64,
    window_samples: usize,
    poll_period_ms: u64,
    stride_samples: usize,
    schema: SchemaDoc,
    splits: BTreeMap<String, SplitDoc>,
    training_digest: String,
    runs: Vec<RunPlan>,
}

#[derive(Debug, Deserialize)]
struct SchemaDoc {
    classes: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct SplitDoc {
    runs: usize,
    rows: usize,
    classes: BTreeMap<String, usize>,
}

/// A dataset as its manifest describes it.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The generator that wrote it.
    pub generator: String,
    /// The plan's seed.
    pub seed: u64,
    /// Simulated hours asked for.
    pub hours: f64,
    /// The manifest's training digest (what the model's card records).
    pub training_digest: String,
    /// The generator's options, checked as the generator checks them.
    pub options: DatasetOptions,
    /// Every run's plan.
    pub runs: Vec<RunPlan>,
    /// Per split name: rows per class, as the generator wrote them.
    split_classes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Per split name: runs and rows.
    split_sizes: BTreeMap<String, (usize, usize)>,
}

impl Dataset {
    /// Reads and checks `dir/manifest.json`.
    pub fn load(dir: &Path) -> Result<Dataset, EvalError> {
        let path = dir.join("manifest.json");
        let text =
            std::fs::read(&path).map_err(|source| EvalError::ManifestUnreadable { path: path.clone(), source })?;
        let bad = |reason: String| EvalError::Manifest { path: path.clone(), reason };
        let doc: ManifestDoc = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        if doc.format_version != FORMAT_VERSION {
            return Err(bad(format!("format_version {} (this tool reads {FORMAT_VERSION})", doc.format_version)));
        }
        if doc.schema.classes != CLASSES {
            return Err(bad(format!("classes {:?} (expected {CLASSES:?})", doc.schema.classes)));
        }
        let args = DatasetArgs {
            out: dir.to_owned(),
            seed: doc.seed,
            hours: doc.hours,
            run_minutes: doc.run_minutes,
            window: doc.window_samples,
            poll_ms: doc.poll_period_ms,
            stride: doc.stride_samples,
        };
        let options = DatasetOptions::new(&args).map_err(|e| bad(e.to_string()))?;
        for split in Split::ALL {
            let Some(s) = doc.splits.get(split.name()) else {
                return Err(bad(format!("no `{}` split", split.name())));
            };
            let planned = doc.runs.iter().filter(|r| r.split == split).count();
            if planned != s.runs || planned == 0 {
                return Err(bad(format!("the `{}` split lists {} runs, the plans {planned}", split.name(), s.runs)));
            }
        }
        Ok(Dataset {
            generator: doc.generator,
            seed: doc.seed,
            hours: doc.hours,
            training_digest: doc.training_digest,
            options,
            runs: doc.runs,
            split_classes: doc.splits.iter().map(|(k, s)| (k.clone(), s.classes.clone())).collect(),
            split_sizes: doc.splits.iter().map(|(k, s)| (k.clone(), (s.runs, s.rows))).collect(),
        })
    }

    /// The runs of `split`, by run id.
    pub fn runs_of(&self, split: Split) -> Vec<&RunPlan> {
        let mut runs: Vec<&RunPlan> = self.runs.iter().filter(|r| r.split == split).collect();
        runs.sort_by_key(|r| r.run_id);
        runs
    }

    /// Runs and rows of `split` as the manifest lists them.
    pub fn split_size(&self, split: Split) -> (usize, usize) {
        self.split_sizes.get(split.name()).copied().unwrap_or_default()
    }
}

/// Loads the model in `dir` with the analyzer's checks, and checks that its features were computed
/// as the dataset's (window length and poll period).
pub fn load_model(dir: &Path, dataset: &Dataset) -> Result<Model, EvalError> {
    let refused = |reason: String| EvalError::Model { dir: dir.to_owned(), reason };
    let model = Model::load(dir).map_err(|e: ModelError| refused(e.to_string()))?;
    model.check_window(dataset.options.window).map_err(|e| refused(format!("{e} (the dataset's window)")))?;
    let poll = model.card().input.poll_period_ms;
    if poll != dataset.options.poll_ms {
        return Err(refused(format!(
            "model {} was trained on readings every {poll} ms, the dataset's are every {} ms",
            model.version(),
            dataset.options.poll_ms
        )));
    }
    Ok(model)
}

/// The analyzer's configuration for one setting: the component's defaults (`Config::default()`,
/// which the analyzer's tests keep equal to its recipe's `DefaultConfiguration`), the setting's
/// detector, and the dataset's window length.
pub fn config_for(choice: DetectorChoice, dataset: &Dataset) -> Config {
    Config { detector: choice, window_samples: dataset.options.window, ..Config::default() }
}

/// What one detector setting did over the split.
#[derive(Debug, Clone)]
pub struct SettingResult {
    /// The setting.
    pub choice: DetectorChoice,
    /// Rows by true and predicted class.
    pub confusion: Confusion,
    /// Per run: delay and false alarms.
    pub outcomes: Vec<RunOutcome>,
}

/// What the replay of a split gives.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// Per setting, in [`SETTINGS`] order.
    pub settings: Vec<SettingResult>,
    /// The raw model's argmax at every row, without hysteresis or the running check.
    pub raw_model: Confusion,
    /// Runs replayed.
    pub runs: usize,
    /// Rows scored.
    pub rows: usize,
}

fn class_index(name: &str) -> Result<usize, EvalError> {
    CLASSES.iter().position(|c| *c == name).ok_or_else(|| EvalError::Internal(format!("unknown class {name}")))
}

/// Replays every run of `split` through one analyzer per setting and the raw model.
pub fn replay(dataset: &Dataset, split: Split, model: &Model) -> Result<Replayed, EvalError> {
    // The model's output order, as indices into CLASSES.
    let model_classes: Vec<usize> =
        model.classes().iter().map(|c| class_index(class_name(*c))).collect::<Result<_, _>>()?;
    let mut settings: Vec<SettingResult> = SETTINGS
        .iter()
        .map(|choice| SettingResult { choice: *choice, confusion: Confusion::new(&CLASSES), outcomes: Vec::new() })
        .collect();
    let mut raw_model = Confusion::new(&CLASSES);
    let mut rows_per_class: BTreeMap<String, usize> = CLASSES.iter().map(|c| ((*c).to_owned(), 0)).collect();
    let runs = dataset.runs_of(split);
    let mut rows = 0;
    for run in &runs {
        let mut analyzers = Vec::new();
        for choice in SETTINGS {
            let mut analyzer = Analyzer::new(config_for(choice, dataset))
                .map_err(|e| EvalError::Internal(format!("the default configuration is refused: {e}")))?;
            if choice != DetectorChoice::Rules {
                analyzer.offer_model(Ok(model.clone()), 0);
                if let Some(why) = analyzer.model_status(0).error {
                    return Err(EvalError::Internal(format!("the analyzer does not run the model: {why}")));
                }
            }
            analyzers.push((analyzer, Vec::<Event>::new()));
        }
        let mut window = Window::new(dataset.options.window);
        for polled in readings(run, &dataset.options) {
            let Polled { t_s, reading, row } = polled.map_err(|e: DatasetError| EvalError::Internal(e.to_string()))?;
            // Event times in ms from the run's start: an event's `ts` is then its run time.
            let now_ms = (t_s * 1000.0).round() as u64;
            let truth = if row { Some(class_index(run.label_at(t_s))?) } else { None };
            for ((analyzer, events), setting) in analyzers.iter_mut().zip(settings.iter_mut()) {
                let published = analyzer
                    .handle_reading(now_ms, &reading)
                    .map_err(|e| EvalError::Internal(format!("run {} at {t_s} s: {e}", run.run_id)))?;
                events.extend(published.iter().map(|e| Event {
                    t_s,
                    detector: e.detector.clone(),
                    kind: kind_name(e.kind).to_owned(),
                    raised: e.active,
                }));
                if let Some(truth) = truth {
                    let active: Vec<(f64, usize)> = analyzer
                        .active()
                        .iter()
                        .map(|e| Ok((e.ts as f64 / 1000.0, class_index(kind_name(e.kind))?)))
                        .collect::<Result<_, EvalError>>()?;
                    setting.confusion.add(truth, score::decide(&active, 0));
                }
            }
            window.push(&reading);
            if let Some(truth) = truth {
                let vector: Vec<f32> = window.features().vector().into_iter().map(|x| x as f32).collect();
                let prediction = model.infer(&vector).map_err(|e| {
                    EvalError::Internal(format!("run {} at {t_s} s: the model failed: {e}", run.run_id))
                })?;
                let best = score::argmax(&prediction.probabilities)
                    .ok_or_else(|| EvalError::Internal("the model returned no probabilities".into()))?;
                raw_model.add(truth, model_classes[best]);
                *rows_per_class.entry(CLASSES[truth].to_owned()).or_default() += 1;
                rows += 1;
            }
        }
        let fault = run.fault.map(|f| Fault { kind: f.kind.name().to_owned(), onset_s: f.onset_s });
        for ((_, events), setting) in analyzers.iter().zip(settings.iter_mut()) {
            setting.outcomes.push(score::outcome(run.run_id, fault.as_ref(), events));
        }
    }
    let listed = dataset.split_classes.get(split.name()).cloned().unwrap_or_default();
    if listed != rows_per_class {
        return Err(EvalError::Mismatch(format!(
            "the `{}` split's rows per class are {listed:?} in the manifest and {rows_per_class:?} replayed",
            split.name()
        )));
    }
    Ok(Replayed { settings, raw_model, runs: runs.len(), rows })
}
