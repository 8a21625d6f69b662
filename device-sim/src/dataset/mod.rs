//! `device-sim dataset`: labeled feature windows from simulated plant runs, for training and
//! evaluating the analyzer's model.
//!
//! Every run is a [`PlantModel`](crate::plant::PlantModel) with its own seed, speed, bypass,
//! ambient temperature and lift, sometimes an operating change, and (four runs in five) one
//! injected fault with its own onset and severity. The plant is polled as the sensor polls it and
//! the readings go through the analyzer's own feature window (the `pump-features` crate), so the
//! rows hold exactly the feature vector the analyzer computes at the edge.
//!
//! The schema, the label rule and the split rule are in the project's `docs/ml.md` and in
//! `device-sim dataset --help` ([`SCHEMA_HELP`]).
//!
//! # Layout
//! - [`plan`]: the runs and their splits (pure, seeded).
//! - [`simulate`]: one run's rows.
//! - [`landing`]: rows from a fleet's landing zone and incidents (the retraining pipeline's
//!   processing step), and a sample of such data.
//! - this module: the options, the files and the manifest.

pub mod landing;
pub mod plan;
pub mod simulate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use pump_features::Features;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use plan::{CLASSES, MIN_RUNS_PER_CLASS, RunPlan, Split};

/// The manifest's format; a change of the files' layout or of the manifest's shape raises it.
pub const FORMAT_VERSION: u32 = 1;
/// The columns every row has before the features.
pub const META_COLUMNS: [&str; 3] = ["run_id", "t_s", "label"];

/// The file layout and row schema, shown after `device-sim dataset --help`.
pub const SCHEMA_HELP: &str = "\
Output (DIR must be new or empty):
  train/train.csv, validation/validation.csv, test/test.csv   one file per split
  manifest.json   seed, hours, options, schema, per-split run and row counts per class,
                  SHA-256 of every file, training_digest, and every run's plan

Each CSV row is one window of the analyzer's features (pump-features), with a header:
  run_id   integer: the simulated run (a run's rows are all in one split)
  t_s      seconds from the run's start to the window's newest reading
  label    normal | bearing_wear | cavitation | overheating | stuck_sensor
  then the 114 features in Features::names() order: speed_rpm.mean, speed_rpm.std, ...,
  vibration_mm_s.unchanged (12 measurements x mean, std, min, max, slope, rate, last,
  fit_last, unchanged), then all.unchanged_max (the longest run of unchanged readings among
  the measurements whose latest value is neither 0 nor at a range end), speed_rpm.rise,
  shaft_power_kw.rise, bearing_temp_c.rise, motor_temp_c.rise (the fitted latest value over
  a 300 s slow average of every reading) and motor_minus_bearing (fitted temperatures)

Label rule: a row carries its run's fault when the window's newest reading was taken after
the fault was injected (t_s > onset_s), and normal before that and in runs without a fault.
Runs: run i has class i mod 5 (normal, bearing_wear, cavitation, overheating, stuck_sensor).
Operating changes (a speed step or the bypass toggled, 7 runs in 10; in normal runs, instead,
sometimes a stop by the run coil and a start-up) are in the manifest's run plans.
Splits are by run: each class's runs are shuffled with the seed, 20% (at least one) go to
test, as many to validation, the rest to train. A row is written every --stride readings once
the window holds --window readings. The same options give byte-identical files.";

/// `device-sim dataset` options.
#[derive(Debug, Clone, clap::Args)]
#[command(after_long_help = SCHEMA_HELP)]
pub struct DatasetArgs {
    /// Output directory; created, and refused when it exists and is not empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the run plan (conditions, faults, splits) and, through it, of every plant's noise.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated hours in total, cut into runs of --run-minutes.
    #[arg(long, value_name = "H")]
    pub hours: f64,
    /// Simulated minutes per run (at least two windows).
    #[arg(long, value_name = "M", default_value_t = 8.0)]
    pub run_minutes: f64,
    /// Readings per window: the analyzer's `windowSamples`.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub window: usize,
    /// Milliseconds between readings: the sensor's `pollPeriodMs`.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// Readings between two rows.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub stride: usize,
}

/// Checked dataset options.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetOptions {
    /// Seed of the plan.
    pub seed: u64,
    /// Simulated hours in total.
    pub hours: f64,
    /// Simulated minutes per run.
    pub run_minutes: f64,
    /// Readings per window.
    pub window: usize,
    /// Milliseconds between readings.
    pub poll_ms: u64,
    /// Readings between two rows.
    pub stride: usize,
}

impl DatasetOptions {
    /// Checks `args`: every limit is the caller's to fix, and the message says how.
    pub fn new(args: &DatasetArgs) -> Result<Self, DatasetError> {
        let bad = |msg: String| Err(DatasetError::InvalidOptions(msg));
        if !(args.hours.is_finite() && args.hours > 0.0 && args.hours <= 10_000.0) {
            return bad(format!("--hours {} must be more than 0 and at most 10000", args.hours));
        }
        if !(args.run_minutes.is_finite() && args.run_minutes > 0.0 && args.run_minutes <= 24.0 * 60.0) {
            return bad(format!("--run-minutes {} must be more than 0 and at most 1440", args.run_minutes));
        }
        check_windowing(args.window, args.poll_ms, args.stride).map_err(DatasetError::InvalidOptions)?;
        let options = DatasetOptions {
            seed: args.seed,
            hours: args.hours,
            run_minutes: args.run_minutes,
            window: args.window,
            poll_ms: args.poll_ms,
            stride: args.stride,
        };
        if options.run_s() < 2.0 * options.window_s() {
            return bad(format!(
                "--run-minutes {} is shorter than two windows ({} readings every {} ms = {} s each): \
                 raise --run-minutes or lower --window",
                args.run_minutes,
                args.window,
                args.poll_ms,
                options.window_s()
            ));
        }
        let runs = plan::run_count(&options);
        let needed = MIN_RUNS_PER_CLASS * CLASSES.len();
        if runs < needed {
            return bad(format!(
                "--hours {} in runs of {} minutes makes {runs} runs; the splits by run need at least {needed} \
                 ({MIN_RUNS_PER_CLASS} per class): raise --hours to {:.3} or lower --run-minutes",
                args.hours,
                args.run_minutes,
                needed as f64 * options.run_s() / 3600.0
            ));
        }
        Ok(options)
    }

    /// Seconds per run.
    pub fn run_s(&self) -> f64 {
        self.run_minutes * 60.0
    }

    /// Seconds a window spans when full.
    pub fn window_s(&self) -> f64 {
        self.window as f64 * self.poll_ms as f64 / 1000.0
    }
}

/// Checks the window, poll period and stride options of a command that writes rows.
pub(crate) fn check_windowing(window: usize, poll_ms: u64, stride: usize) -> Result<(), String> {
    if !(3..=3600).contains(&window) {
        return Err(format!("--window {window} must be 3..=3600 (the analyzer's windowSamples)"));
    }
    if !(10..=3_600_000).contains(&poll_ms) {
        return Err(format!("--poll-ms {poll_ms} must be 10..=3600000 (the sensor's pollPeriodMs)"));
    }
    if !(1..=3600).contains(&stride) {
        return Err(format!("--stride {stride} must be 1..=3600"));
    }
    Ok(())
}

/// Why a dataset was not written, sorted by what the caller does next.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The options are out of range: fix the command line.
    #[error("{0}")]
    InvalidOptions(String),
    /// The output directory exists and holds files: choose a new or empty one (stale CSV files
    /// would be read as part of a split).
    #[error("the output directory {} is not empty; choose a new or empty directory", .0.display())]
    OutputNotEmpty(PathBuf),
    /// A file or directory could not be written: check the path and its permissions.
    #[error("cannot write {}", path.display())]
    Write {
        /// What was being written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The simulation produced something it never should: a bug, report it.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DatasetError {
    /// Whether the caller's input is at fault (the command exits with `EX_CONFIG`).
    pub fn is_configuration(&self) -> bool {
        matches!(self, DatasetError::InvalidOptions(_) | DatasetError::OutputNotEmpty(_))
    }
}

/// One written file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileEntry {
    /// Relative to the dataset directory, `/`-separated.
    pub path: String,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Data rows (the header not counted).
    pub rows: usize,
}

/// What one split holds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitSummary {
    /// Its files.
    pub files: Vec<FileEntry>,
    /// Runs in it.
    pub runs: usize,
    /// Rows in it.
    pub rows: usize,
    /// Rows per class, every class listed.
    pub classes: BTreeMap<&'static str, usize>,
}

/// One column of the CSV files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// Header name.
    pub name: String,
    /// `integer`, `number` or `string`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// What it holds.
    pub description: String,
}

/// The rows' schema.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schema {
    /// Every column, in file order.
    pub columns: Vec<Column>,
    /// The label column's name.
    pub label_column: &'static str,
    /// The label's values, in the order models number them.
    pub classes: Vec<&'static str>,
    /// The feature columns, in `Features::names()` order: a model's input.
    pub features: Vec<String>,
    /// The rule that gave each row its label.
    pub label_rule: &'static str,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// What wrote it.
    pub generator: &'static str,
    /// The plan's seed.
    pub seed: u64,
    /// Simulated hours asked for.
    pub hours: f64,
    /// Simulated seconds actually run (whole runs).
    pub simulated_s: f64,
    /// Simulated minutes per run.
    pub run_minutes: f64,
    /// The files, their schema and the options they were computed with.
    #[serde(flatten)]
    pub rows: RowFiles,
    /// Every run's plan: enough to simulate it again.
    pub runs: Vec<RunPlan>,
}

/// What a manifest says about its row files, shared by every writer of rows in this schema
/// (`device-sim dataset`, `device-sim landing-rows`): the keys a training job reads.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowFiles {
    /// Readings per window (the analyzer's `windowSamples` a model trained on this needs).
    pub window_samples: usize,
    /// Milliseconds between readings (the sensor's `pollPeriodMs`).
    pub poll_period_ms: u64,
    /// Readings between two rows.
    pub stride_samples: usize,
    /// The rows' schema.
    pub schema: Schema,
    /// Per split: files, runs (or segments), rows, rows per class.
    pub splits: BTreeMap<&'static str, SplitSummary>,
    /// SHA-256 (hex) of the lines `"{path} {sha256}\n"` of the train and validation files,
    /// sorted by path: what a training job sees, recomputable from its channels alone.
    pub training_digest: String,
}

/// Writes one split's CSV file (`{split}/{split}.csv` under `out`): the header, then what `fill`
/// writes, which returns the rows it wrote. Returns the file's entry.
pub(crate) fn write_split(
    out: &Path,
    split: Split,
    header: &str,
    fill: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<usize>,
) -> Result<FileEntry, DatasetError> {
    let rel = format!("{0}/{0}.csv", split.name());
    let dir = out.join(split.name());
    fs::create_dir_all(&dir).map_err(|source| DatasetError::Write { path: dir.clone(), source })?;
    let path = out.join(&rel);
    let mut rows = 0;
    let bytes = write_atomically(&path, |w| {
        writeln!(w, "{header}")?;
        rows = fill(w)?;
        Ok(())
    })?;
    let sha256 = sha256_file(&path)?;
    Ok(FileEntry { path: rel, sha256, bytes, rows })
}

/// The training digest of `splits`' train and validation files.
pub(crate) fn splits_digest(splits: &BTreeMap<&'static str, SplitSummary>) -> String {
    training_digest(
        splits
            .iter()
            .filter(|(name, _)| **name != Split::Test.name())
            .flat_map(|(_, s)| s.files.iter().map(|f| (f.path.as_str(), f.sha256.as_str()))),
    )
}

/// Generates the dataset into `out` (which must be new or empty) and returns its manifest.
pub fn generate(options: &DatasetOptions, out: &Path) -> Result<Manifest, DatasetError> {
    prepare_output(out)?;
    let runs = plan::plan(options);
    let names = Features::names();
    let mut header: Vec<&str> = META_COLUMNS.to_vec();
    header.extend(names.iter().map(String::as_str));
    let header = header.join(",");

    let mut splits = BTreeMap::new();
    for split in Split::ALL {
        let mut classes: BTreeMap<&'static str, usize> = CLASSES.iter().map(|c| (*c, 0)).collect();
        let mut run_count = 0;
        let file = write_split(out, split, &header, |w| {
            let mut rows = 0;
            for run in runs.iter().filter(|r| r.split == split) {
                run_count += 1;
                let run_rows = simulate::simulate(run, options).map_err(std::io::Error::other)?;
                for row in run_rows {
                    write!(w, "{},{},{}", run.run_id, row.t_s, row.label)?;
                    for v in &row.features {
                        write!(w, ",{v}")?;
                    }
                    writeln!(w)?;
                    *classes.entry(row.label).or_default() += 1;
                    rows += 1;
                }
            }
            Ok(rows)
        })?;
        let rows = file.rows;
        splits.insert(split.name(), SplitSummary { files: vec![file], runs: run_count, rows, classes });
    }

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        generator: "device-sim dataset",
        seed: options.seed,
        hours: options.hours,
        simulated_s: runs.len() as f64 * options.run_s(),
        run_minutes: options.run_minutes,
        rows: RowFiles {
            window_samples: options.window,
            poll_period_ms: options.poll_ms,
            stride_samples: options.stride,
            schema: schema(names),
            training_digest: splits_digest(&splits),
            splits,
        },
        runs,
    };
    // The manifest goes last: a directory with a manifest is a complete dataset.
    write_json(&out.join("manifest.json"), &manifest)?;
    Ok(manifest)
}

/// Writes `value` as pretty JSON with a final newline, atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<u64, DatasetError> {
    write_atomically(path, |w| {
        serde_json::to_writer_pretty(&mut *w, value)?;
        writeln!(w)
    })
}

/// The `device-sim dataset` command: generates, then prints a one-line JSON summary on stdout.
pub fn run(args: DatasetArgs) -> anyhow::Result<()> {
    let options = DatasetOptions::new(&args)?;
    let started = std::time::Instant::now();
    let manifest = generate(&options, &args.out)?;
    let summary = serde_json::json!({
        "out": args.out,
        "runs": manifest.runs.len(),
        "rows": manifest.rows.splits.iter().map(|(k, s)| (*k, s.rows)).collect::<BTreeMap<_, _>>(),
        "training_digest": manifest.rows.training_digest,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    println!("{summary}");
    Ok(())
}

/// The training digest of `(path, sha256)` pairs: SHA-256 of `"{path} {sha256}\n"`, sorted.
pub fn training_digest<'a>(files: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<String> = files.map(|(p, h)| format!("{p} {h}\n")).collect();
    lines.sort();
    hex(&Sha256::digest(lines.concat().as_bytes()))
}

pub(crate) fn schema(features: Vec<String>) -> Schema {
    let mut columns = vec![
        Column {
            name: "run_id".into(),
            kind: "integer",
            description: "the simulated run; every row of a run is in one split (manifest `runs` has its plan)".into(),
        },
        Column {
            name: "t_s".into(),
            kind: "number",
            description: "simulated seconds from the run's start to the window's newest reading".into(),
        },
        Column { name: "label".into(), kind: "string", description: format!("one of {}", CLASSES.join(", ")) },
    ];
    columns.extend(features.iter().map(|name| Column {
        name: name.clone(),
        kind: "number",
        description: "pump-features statistic `{measurement}.{stat}` of the window".into(),
    }));
    Schema {
        columns,
        label_column: "label",
        classes: CLASSES.to_vec(),
        features,
        label_rule: "the run's fault kind when t_s > the fault's onset_s (the window's newest reading was taken after \
                     the injection); normal before that and in runs without a fault",
    }
}

pub(crate) fn prepare_output(out: &Path) -> Result<(), DatasetError> {
    match fs::read_dir(out) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(DatasetError::OutputNotEmpty(out.to_owned()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(|source| DatasetError::Write { path: out.to_owned(), source })
        }
        Err(source) => Err(DatasetError::Write { path: out.to_owned(), source }),
    }
}

/// Writes through a temporary file in the same directory, syncs, renames: a reader never sees
/// half a file under the final name. Returns the size.
pub(crate) fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<fs::File>) -> std::io::Result<()>,
) -> Result<u64, DatasetError> {
    let tmp = path.with_extension("tmp");
    let wrap = |source| DatasetError::Write { path: path.to_owned(), source };
    let result = (|| {
        let mut w = BufWriter::new(fs::File::create(&tmp)?);
        fill(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        fs::rename(&tmp, path)?;
        Ok(bytes)
    })();
    result.map_err(|e: std::io::Error| {
        let _ = fs::remove_file(&tmp);
        // A simulation failure travels through the writer as an I/O error: give it back as it was.
        match e.downcast::<DatasetError>() {
            Ok(inner) => inner,
            Err(e) => wrap(e),
        }
    })
}

fn sha256_file(path: &Path) -> Result<String, DatasetError> {
    let mut file = fs::File::open(path).map_err(|source| DatasetError::Write { path: path.to_owned(), source })?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|source| DatasetError::Write { path: path.to_owned(), source })?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
