//! The retraining pipeline's processing step: feature rows from what a fleet leaves in the cloud,
//! and a sample of such data for tests and benchmarks.
//!
//! `device-sim landing-rows` reads a copy of the landing bucket (the raw telemetry batches the
//! `pump_telemetry` rule writes under `telemetry/date=YYYY-MM-DD/thing={thing}/`, and the anomaly
//! windows analyzers put under `{thing}/anomalies/`) and the incidents table's rows (as JSON), puts
//! each thing's readings in time order, feeds them to the analyzer's own feature window
//! (`pump-features`, as `device-sim dataset` does), labels each window from the operators'
//! confirmations, and writes the rows in the dataset's CSV schema with a manifest that `train.py`
//! reads. The label and split rules are in the project's `docs/ml.md` ("Retraining from the
//! fleet's data").
//!
//! `device-sim landing-sample` simulates the runs of a dataset plan as a fleet of things would
//! send them (one telemetry batch of 15 readings per object, under the rule's keys) and writes
//! the truth (each run's fault and onset) next to them, for a test to turn into incidents.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use pump_features::{Features, Window};
use pump_types::Reading;
use serde::{Deserialize, Serialize};

use super::plan::{self, CLASSES, Split};
use super::{
    DatasetArgs, DatasetError, DatasetOptions, FORMAT_VERSION, RowFiles, SplitSummary, check_windowing, prepare_output,
    schema, simulate, splits_digest, write_atomically, write_json, write_split,
};

/// The cause an operator gives a raise that was no fault: its windows are `normal`.
pub const FALSE_ALARM: &str = "false_alarm";
/// Readings per telemetry batch in [`sample`] (what the sensor's 5 KiB batches hold).
pub const SAMPLE_BATCH_READINGS: usize = 15;
/// Simulated seconds between two runs of one thing in [`sample`] (the sensor was restarted).
const SAMPLE_GAP_S: u64 = 60;

/// `device-sim landing-rows` options.
#[derive(Debug, Clone, clap::Args)]
pub struct LandingRowsArgs {
    /// A copy of the landing bucket: `telemetry/date=*/thing=*/*.json` batches and
    /// `*/anomalies/*/*.json` windows.
    #[arg(long, value_name = "DIR")]
    pub landing: PathBuf,
    /// The incidents table's rows as a JSON array of plain objects (`thing`, `at`, `id`, `ts`,
    /// `kind`, `active`, `confirmedCause`).
    #[arg(long, value_name = "FILE")]
    pub incidents: PathBuf,
    /// Output directory; created, and refused when it exists and is not empty.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Readings per window (the analyzer's `windowSamples`), the model card's `window_samples`.
    #[arg(long, value_name = "N", default_value_t = 60)]
    pub window: usize,
    /// The fleet sensors' `pollPeriodMs`, the model card's `poll_period_ms`.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub poll_ms: u64,
    /// A row every this many readings of a segment.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub stride: usize,
    /// Share of the data's time span, at its end, held out for the test split.
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Share of the time span before the test split's that goes to validation.
    #[arg(long, value_name = "F", default_value_t = 0.2)]
    pub validation_fraction: f64,
    /// Seconds before a raise whose windows are left out (a fault starts before it is raised).
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub guard_s: u64,
}

/// `device-sim landing-sample` options: a dataset plan, and the things its runs are spread over.
#[derive(Debug, Clone, clap::Args)]
pub struct LandingSampleArgs {
    /// The plan (`--out` is where the landing bucket's copy and `truth.json` go).
    #[command(flatten)]
    pub plan: DatasetArgs,
    /// Things the runs are spread over (run i goes to thing `pump-{i mod things}`).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub things: u32,
    /// Epoch milliseconds of the first reading.
    #[arg(long, value_name = "MS", default_value_t = 1_796_000_000_000)]
    pub start_ms: u64,
}

/// A telemetry batch as the rule stores it: the sensor's payload plus `thing`.
#[derive(Debug, Deserialize)]
struct Batch {
    readings: Vec<Reading>,
}

/// An anomaly window as the analyzer uploads it; only its readings are read here.
#[derive(Debug, Deserialize)]
struct AnomalyWindowDoc {
    thing: String,
    readings: Vec<Reading>,
}

/// One incident row, as the pipeline exports the table.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incident {
    thing: String,
    at: String,
    id: String,
    ts: u64,
    active: bool,
    #[serde(default)]
    confirmed_cause: Option<String>,
}

/// What a window's label came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Class(&'static str),
    /// Left out: an unconfirmed raise covers it.
    Unconfirmed,
    /// Left out: confirmed raises with different causes cover it.
    Conflict,
    /// Left out: just before a raise.
    Guard,
}

/// A raise's span with what an operator said about it.
#[derive(Debug, Clone)]
struct Span {
    from: u64,
    through: u64,
    cause: Option<&'static str>,
}

/// Counts of what the labels came from, for the manifest.
#[derive(Debug, Default, Serialize)]
pub struct LabelSummary {
    /// Rows labelled by a confirmed fault.
    pub confirmed_fault_rows: usize,
    /// Rows labelled `normal` because an operator called the raise a false alarm.
    pub false_alarm_rows: usize,
    /// Rows labelled `normal` because no raise covers them.
    pub quiet_rows: usize,
    /// Windows left out: an unconfirmed raise covers them.
    pub unconfirmed_windows: usize,
    /// Windows left out: confirmed causes disagree.
    pub conflicting_windows: usize,
    /// Windows left out: within the guard before a raise.
    pub guard_windows: usize,
}

/// What was read.
#[derive(Debug, Default, Serialize)]
pub struct InputSummary {
    /// Telemetry batch objects.
    pub batches: usize,
    /// Anomaly window objects.
    pub anomaly_windows: usize,
    /// Distinct readings.
    pub readings: usize,
    /// Readings seen twice (a window's copy of a batch's reading, a batch delivered twice).
    pub duplicates: usize,
    /// Incident rows.
    pub incidents: usize,
    /// Raises an operator confirmed.
    pub confirmed: usize,
    /// Things.
    pub things: usize,
}

/// One unbroken stretch of a thing's readings in one split: its windows never reach outside it.
#[derive(Debug, Serialize)]
pub struct Segment {
    /// The rows' `run_id`.
    pub run_id: u32,
    /// The thing.
    pub thing: String,
    /// Its split.
    pub split: Split,
    /// First and last reading, epoch ms.
    pub first_ts: u64,
    /// Last reading, epoch ms.
    pub last_ts: u64,
    /// Readings in it.
    pub readings: usize,
}

/// The processed data's `manifest.json` (the keys `train.py` reads are the dataset's).
#[derive(Debug, Serialize)]
pub struct LandingManifest {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// What wrote it.
    pub generator: &'static str,
    /// No plan seed: the data are the fleet's.
    pub seed: Option<u64>,
    /// Hours from the first to the last reading.
    pub hours: f64,
    /// The files, their schema and options: the keys `train.py` reads, as the dataset's.
    #[serde(flatten)]
    pub rows: RowFiles,
    /// Readings at or after this time (epoch ms) are validation, …
    pub validation_from_ms: u64,
    /// … and at or after this one test.
    pub test_from_ms: u64,
    /// Every segment.
    pub segments: Vec<Segment>,
    /// Where the labels came from.
    pub labels: LabelSummary,
    /// What was read.
    pub inputs: InputSummary,
}

/// Why the landing zone could not be processed: the input is at fault unless it is a write.
#[derive(Debug, thiserror::Error)]
pub enum LandingError {
    /// Bad options, or input that is not what the fleet writes: the message names the object.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
}

impl LandingError {
    /// Whether the caller's input is at fault (the command exits with `EX_CONFIG`).
    pub fn is_configuration(&self) -> bool {
        match self {
            LandingError::Input(_) => true,
            LandingError::Dataset(e) => e.is_configuration(),
        }
    }
}

fn input(msg: impl Into<String>) -> LandingError {
    LandingError::Input(msg.into())
}

/// Every `*.json` file under `dir`, sorted, relative paths with `/`.
fn json_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), LandingError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(input(format!("cannot read {}: {e}", dir.display()))),
    };
    for entry in entries {
        let path = entry.map_err(|e| input(format!("cannot read {}: {e}", dir.display())))?.path();
        if path.is_dir() {
            json_files(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "json") {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
    out.sort();
    Ok(())
}

/// The thing a telemetry key names (`telemetry/date=…/thing={thing}/…`).
fn thing_of_key(key: &str) -> Option<&str> {
    key.split('/').find_map(|part| part.strip_prefix("thing="))
}

/// Reads the landing copy: every thing's readings, in time order, without duplicates.
fn read_landing(root: &Path, summary: &mut InputSummary) -> Result<BTreeMap<String, Vec<Reading>>, LandingError> {
    let mut keys = Vec::new();
    json_files(root, root, &mut keys)?;
    let mut by_thing: BTreeMap<String, BTreeMap<(u64, u64), Reading>> = BTreeMap::new();
    let mut add = |thing: &str, readings: Vec<Reading>, summary: &mut InputSummary| {
        let entry = by_thing.entry(thing.to_owned()).or_default();
        for r in readings {
            if entry.insert((r.ts, r.seq), r).is_some() {
                summary.duplicates += 1;
            }
        }
    };
    for key in &keys {
        let bytes = fs::read(root.join(key)).map_err(|e| input(format!("cannot read {key}: {e}")))?;
        if key.starts_with("telemetry/") {
            let thing = thing_of_key(key)
                .ok_or_else(|| input(format!("{key}: a telemetry key without thing=…: not the rule's layout")))?;
            let batch: Batch = pump_types::parse(&bytes).map_err(|e| {
                input(format!("{key}: not a telemetry batch ({e}); remove or fix it, nothing was written"))
            })?;
            add(thing, batch.readings, summary);
            summary.batches += 1;
        } else if key.split('/').nth(1) == Some("anomalies") {
            let doc: AnomalyWindowDoc = pump_types::parse(&bytes).map_err(|e| {
                input(format!("{key}: not an anomaly window ({e}); remove or fix it, nothing was written"))
            })?;
            if !key.starts_with(&format!("{}/", doc.thing)) {
                return Err(input(format!("{key}: holds thing {:?}, outside its prefix", doc.thing)));
            }
            add(&doc.thing, doc.readings, summary);
            summary.anomaly_windows += 1;
        }
    }
    if summary.batches == 0 {
        return Err(input(format!(
            "the landing zone {} holds no telemetry batch (telemetry/date=*/thing=*/*.json): nothing to learn from",
            root.display()
        )));
    }
    summary.things = by_thing.len();
    let things: BTreeMap<String, Vec<Reading>> =
        by_thing.into_iter().map(|(t, rs)| (t, rs.into_values().collect())).collect();
    summary.readings = things.values().map(Vec::len).sum();
    Ok(things)
}

/// The cause an operator may confirm: a fault class, or [`FALSE_ALARM`].
fn cause(name: &str) -> Option<&'static str> {
    CLASSES[1..].iter().copied().chain([FALSE_ALARM]).find(|c| *c == name)
}

/// Each thing's raise spans, from the incident rows.
fn spans(incidents: &[Incident], summary: &mut InputSummary) -> Result<BTreeMap<String, Vec<Span>>, LandingError> {
    let mut clears: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for i in incidents.iter().filter(|i| !i.active) {
        clears.insert((&i.thing, &i.id), i.ts);
    }
    let mut out: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for i in incidents.iter().filter(|i| i.active) {
        let cause = match &i.confirmed_cause {
            None => None,
            Some(name) => Some(cause(name).ok_or_else(|| {
                input(format!(
                    "incident {} {}: confirmed cause {name:?} is not one of {}, {FALSE_ALARM}; fix the row",
                    i.thing,
                    i.at,
                    CLASSES[1..].join(", ")
                ))
            })?),
        };
        summary.confirmed += usize::from(cause.is_some());
        let through = clears.get(&(i.thing.as_str(), i.id.as_str())).copied().unwrap_or(u64::MAX);
        out.entry(i.thing.clone()).or_default().push(Span { from: i.ts, through, cause });
    }
    Ok(out)
}

/// The label of the window whose newest reading was taken at `ts`.
fn label_at(spans: &[Span], ts: u64, guard_ms: u64) -> Label {
    let covering: Vec<&Span> = spans.iter().filter(|s| s.from <= ts && ts <= s.through).collect();
    let confirmed: BTreeSet<&str> = covering.iter().filter_map(|s| s.cause).collect();
    match confirmed.len() {
        1 => {
            let c = confirmed.into_iter().next().unwrap_or(FALSE_ALARM);
            return Label::Class(if c == FALSE_ALARM { CLASSES[0] } else { cause(c).unwrap_or(CLASSES[0]) });
        }
        0 => {}
        _ => return Label::Conflict,
    }
    if !covering.is_empty() {
        return Label::Unconfirmed;
    }
    let guarded = spans.iter().any(|s| s.cause != Some(FALSE_ALARM) && ts < s.from && s.from - ts <= guard_ms);
    if guarded { Label::Guard } else { Label::Class(CLASSES[0]) }
}

/// Checked options of `landing-rows`.
fn check(args: &LandingRowsArgs) -> Result<(), LandingError> {
    let f = |name: &str, v: f64| {
        if v.is_finite() && (0.0..0.5).contains(&v) && v > 0.0 {
            Ok(())
        } else {
            Err(input(format!("--{name} {v} must be more than 0 and less than 0.5")))
        }
    };
    f("test-fraction", args.test_fraction)?;
    f("validation-fraction", args.validation_fraction)?;
    check_windowing(args.window, args.poll_ms, args.stride).map_err(LandingError::Input)
}

/// Processes the landing copy and incidents into `args.out` and returns the manifest.
pub fn rows(args: &LandingRowsArgs) -> Result<LandingManifest, LandingError> {
    check(args)?;
    let mut inputs = InputSummary::default();
    let text = fs::read(&args.incidents)
        .map_err(|e| input(format!("cannot read the incidents {}: {e}", args.incidents.display())))?;
    let incidents: Vec<Incident> = serde_json::from_slice(&text)
        .map_err(|e| input(format!("{}: not a JSON array of incident rows: {e}", args.incidents.display())))?;
    inputs.incidents = incidents.len();
    let spans = spans(&incidents, &mut inputs)?;
    let things = read_landing(&args.landing, &mut inputs)?;
    prepare_output(&args.out)?;

    let first = things.values().filter_map(|r| r.first()).map(|r| r.ts).min().unwrap_or(0);
    let last = things.values().filter_map(|r| r.last()).map(|r| r.ts).max().unwrap_or(0);
    let span = (last - first) as f64;
    let test_from = last - (span * args.test_fraction) as u64;
    let validation_from = test_from - (span * args.validation_fraction) as u64;
    let split_of = |ts: u64| {
        if ts >= test_from {
            Split::Test
        } else if ts >= validation_from {
            Split::Validation
        } else {
            Split::Train
        }
    };

    let names = Features::names();
    let header = super::META_COLUMNS.iter().map(|s| (*s).to_owned()).chain(names.iter().cloned()).collect::<Vec<_>>();
    let mut lines: BTreeMap<Split, Vec<String>> = Split::ALL.iter().map(|s| (*s, Vec::new())).collect();
    let mut classes: BTreeMap<Split, BTreeMap<&'static str, usize>> =
        Split::ALL.iter().map(|s| (*s, CLASSES.iter().map(|c| (*c, 0)).collect())).collect();
    let mut labels = LabelSummary::default();
    let mut segments: Vec<Segment> = Vec::new();
    let no_spans = Vec::new();
    let guard_ms = args.guard_s * 1000;
    for (thing, readings) in &things {
        let thing_spans = spans.get(thing).unwrap_or(&no_spans);
        let mut window = Window::new(args.window);
        let mut prev: Option<&Reading> = None;
        let mut in_segment = 0usize;
        for reading in readings {
            let split = split_of(reading.ts);
            let unbroken = prev.is_some_and(|p| {
                reading.seq == p.seq + 1
                    && reading.ts > p.ts
                    && reading.ts - p.ts <= 2 * args.poll_ms
                    && split_of(p.ts) == split
            });
            if !unbroken {
                window.clear();
                in_segment = 0;
                segments.push(Segment {
                    run_id: segments.len() as u32,
                    thing: thing.clone(),
                    split,
                    first_ts: reading.ts,
                    last_ts: reading.ts,
                    readings: 0,
                });
            }
            prev = Some(reading);
            window.push(reading);
            in_segment += 1;
            let Some(segment) = segments.last_mut() else { continue };
            segment.last_ts = reading.ts;
            segment.readings += 1;
            if in_segment < args.window || !(in_segment - args.window).is_multiple_of(args.stride) {
                continue;
            }
            let class = match label_at(thing_spans, reading.ts, guard_ms) {
                Label::Class(c) => c,
                Label::Unconfirmed => {
                    labels.unconfirmed_windows += 1;
                    continue;
                }
                Label::Conflict => {
                    labels.conflicting_windows += 1;
                    continue;
                }
                Label::Guard => {
                    labels.guard_windows += 1;
                    continue;
                }
            };
            let covered = thing_spans.iter().any(|s| s.from <= reading.ts && reading.ts <= s.through);
            match (class == CLASSES[0], covered) {
                (false, _) => labels.confirmed_fault_rows += 1,
                (true, true) => labels.false_alarm_rows += 1,
                (true, false) => labels.quiet_rows += 1,
            }
            let features = window.features().vector();
            if let Some(bad) = features.iter().position(|v| !v.is_finite()) {
                return Err(input(format!(
                    "{thing} at {}: feature {} is {} (a reading out of range?)",
                    reading.ts, names[bad], features[bad]
                )));
            }
            let t_s = (reading.ts - segment.first_ts) as f64 / 1000.0;
            let mut line = format!("{},{t_s},{class}", segment.run_id);
            for v in &features {
                line.push_str(&format!(",{v}"));
            }
            lines.entry(split).or_default().push(line);
            *classes.entry(split).or_default().entry(class).or_default() += 1;
        }
    }
    let train_classes = &classes[&Split::Train];
    let missing: Vec<&str> = CLASSES.iter().copied().filter(|c| train_classes[c] == 0).collect();
    if !missing.is_empty() {
        let _ = fs::remove_dir_all(&args.out);
        return Err(input(format!(
            "the train split has no labelled window of {}: confirm incidents of these causes \
             (provision incidents confirm) or process a longer period",
            missing.join(", ")
        )));
    }

    let header = header.join(",");
    let mut splits = BTreeMap::new();
    for split in Split::ALL {
        let lines = &lines[&split];
        let file = write_split(&args.out, split, &header, |w| {
            for line in lines {
                writeln!(w, "{line}")?;
            }
            Ok(lines.len())
        })?;
        let runs = segments.iter().filter(|s| s.split == split).count();
        splits.insert(
            split.name(),
            SplitSummary { files: vec![file], runs, rows: lines.len(), classes: classes[&split].clone() },
        );
    }
    let mut schema = schema(names);
    schema.columns[0].description = "the segment: an unbroken stretch of one thing's readings in one split \
                                     (manifest `segments`)"
        .into();
    schema.columns[1].description = "seconds from the segment's first reading to the window's newest".into();
    schema.label_rule = "the cause an operator confirmed for the raise whose span (raise to clear) holds the \
                         window's newest reading (false_alarm: normal); normal where no raise is near; windows \
                         under an unconfirmed raise, under conflicting confirmations or within the guard \
                         before a raise are left out";
    let manifest = LandingManifest {
        format_version: FORMAT_VERSION,
        generator: "device-sim landing-rows",
        seed: None,
        hours: span / 3_600_000.0,
        rows: RowFiles {
            window_samples: args.window,
            poll_period_ms: args.poll_ms,
            stride_samples: args.stride,
            schema,
            training_digest: splits_digest(&splits),
            splits,
        },
        validation_from_ms: validation_from,
        test_from_ms: test_from,
        segments,
        labels,
        inputs,
    };
    write_json(&args.out.join("manifest.json"), &manifest)?;
    Ok(manifest)
}

/// `device-sim landing-rows`: processes, then prints a one-line JSON summary.
pub fn run_rows(args: LandingRowsArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let m = rows(&args)?;
    let summary = serde_json::json!({
        "out": args.out,
        "things": m.inputs.things,
        "readings": m.inputs.readings,
        "segments": m.segments.len(),
        "rows": m.rows.splits.iter().map(|(k, s)| (*k, s.rows)).collect::<BTreeMap<_, _>>(),
        "labels": m.labels,
        "training_digest": m.rows.training_digest,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    });
    println!("{summary}");
    Ok(())
}

/// The UTC day of `ts` (epoch ms), `YYYY-MM-DD`.
fn day(ts: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts) * 1_000_000)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_else(|_| "unknown-day".into())
}

/// One run of the sample, as `truth.json` lists it.
#[derive(Debug, Serialize)]
pub struct SampleRun {
    /// The plan's run.
    pub run_id: u32,
    /// The thing that sent it.
    pub thing: String,
    /// Its first and last reading, epoch ms.
    pub first_ts: u64,
    /// Its last reading.
    pub last_ts: u64,
    /// The fault's class, or `normal`.
    pub class: &'static str,
    /// The first reading taken after the fault was injected, epoch ms.
    pub onset_ts: Option<u64>,
}

/// Writes the runs of `args.plan`'s dataset plan as the landing bucket would hold them, and
/// `truth.json`; returns the runs.
pub fn sample(args: &LandingSampleArgs) -> Result<Vec<SampleRun>, LandingError> {
    let options = DatasetOptions::new(&args.plan)?;
    if args.things == 0 {
        return Err(input("--things must be at least 1"));
    }
    let out = &args.plan.out;
    prepare_output(out)?;
    let mut next_start: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut runs = Vec::new();
    for run in plan::plan(&options) {
        let thing = format!("pump-{}", run.run_id % args.things);
        let (start, seq0) = next_start.get(&thing).copied().unwrap_or((args.start_ms, 0));
        let mut batch: Vec<Reading> = Vec::new();
        let mut first_ts = None;
        let mut last_ts = start;
        let mut last_seq = seq0;
        let mut onset_ts = None;
        let flush = |batch: &mut Vec<Reading>| -> Result<(), LandingError> {
            let Some(first) = batch.first() else { return Ok(()) };
            let key = format!("telemetry/date={}/thing={thing}/{}-{}.json", day(first.ts), first.ts, first.seq);
            let path = out.join(&key);
            let dir = path.parent().unwrap_or(out);
            fs::create_dir_all(dir).map_err(|source| DatasetError::Write { path: dir.to_owned(), source })?;
            let body = serde_json::json!({"v": pump_types::PAYLOAD_VERSION, "thing": thing, "readings": batch});
            write_atomically(&path, |w| serde_json::to_writer(&mut *w, &body).map_err(std::io::Error::other))?;
            batch.clear();
            Ok(())
        };
        for polled in simulate::readings(&run, &options) {
            let polled = polled?;
            let mut reading = polled.reading;
            // A reading's place in the thing's history; the sensor's counter goes on, one poll
            // lost between runs.
            reading.ts = start + (polled.t_s * 1000.0).round() as u64;
            reading.seq += seq0 + 1;
            first_ts.get_or_insert(reading.ts);
            last_ts = reading.ts;
            last_seq = reading.seq;
            if onset_ts.is_none() && run.label_at(polled.t_s) != CLASSES[0] {
                onset_ts = Some(reading.ts);
            }
            batch.push(reading);
            if batch.len() == SAMPLE_BATCH_READINGS {
                flush(&mut batch)?;
            }
        }
        flush(&mut batch)?;
        next_start.insert(thing.clone(), (last_ts + SAMPLE_GAP_S * 1000, last_seq + 1));
        runs.push(SampleRun {
            run_id: run.run_id,
            thing,
            first_ts: first_ts.unwrap_or(start),
            last_ts,
            class: run.fault.map_or(CLASSES[0], |f| f.kind.name()),
            onset_ts,
        });
    }
    write_json(&out.join("truth.json"), &serde_json::json!({"runs": runs}))?;
    Ok(runs)
}

/// `device-sim landing-sample`: writes, then prints a one-line JSON summary.
pub fn run_sample(args: LandingSampleArgs) -> anyhow::Result<()> {
    let runs = sample(&args)?;
    let summary = serde_json::json!({"out": args.plan.out, "runs": runs.len(), "things": args.things});
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(from: u64, through: u64, cause: Option<&'static str>) -> Span {
        Span { from, through, cause }
    }

    #[test]
    fn a_window_takes_the_confirmed_cause_and_unconfirmed_or_conflicting_spans_are_left_out() {
        let spans = [
            span(1_000, 2_000, Some("overheating")),
            span(5_000, 6_000, None),
            span(8_000, 9_000, Some(FALSE_ALARM)),
            span(10_000, 12_000, Some("cavitation")),
            span(11_000, 13_000, Some("bearing_wear")),
            span(14_000, 15_000, Some("cavitation")),
            span(14_500, 15_000, None),
        ];
        assert_eq!(label_at(&spans, 1_500, 100), Label::Class("overheating"));
        assert_eq!(label_at(&spans, 5_500, 100), Label::Unconfirmed);
        assert_eq!(label_at(&spans, 8_500, 100), Label::Class("normal"), "a false alarm is normal");
        assert_eq!(label_at(&spans, 11_500, 100), Label::Conflict);
        assert_eq!(label_at(&spans, 14_700, 100), Label::Class("cavitation"), "a confirmation wins");
        assert_eq!(label_at(&spans, 950, 100), Label::Guard, "just before a raise");
        assert_eq!(label_at(&spans, 7_950, 100), Label::Class("normal"), "no guard before a false alarm");
        assert_eq!(label_at(&spans, 3_000, 100), Label::Class("normal"));
    }

    #[test]
    fn a_cause_is_a_fault_class_or_a_false_alarm() {
        assert_eq!(cause("stuck_sensor"), Some("stuck_sensor"));
        assert_eq!(cause(FALSE_ALARM), Some(FALSE_ALARM));
        assert_eq!(cause("normal"), None);
        assert_eq!(cause("meltdown"), None);
    }

    #[test]
    fn a_raise_without_its_clear_spans_to_the_end_and_an_unknown_cause_is_refused() {
        let row = |at: &str, ts: u64, active: bool, cause: Option<&str>| Incident {
            thing: "pump-1".into(),
            at: at.into(),
            id: "model-x-1".into(),
            ts,
            active,
            confirmed_cause: cause.map(str::to_owned),
        };
        let mut summary = InputSummary::default();
        let open = spans(&[row("a", 10, true, Some("cavitation"))], &mut summary).unwrap();
        assert_eq!(open["pump-1"][0].through, u64::MAX);
        let closed = spans(&[row("a", 10, true, None), row("b", 20, false, None)], &mut summary).unwrap();
        assert_eq!((closed["pump-1"][0].from, closed["pump-1"][0].through), (10, 20));
        let err = spans(&[row("a", 10, true, Some("meltdown"))], &mut summary).unwrap_err();
        assert!(err.to_string().contains("\"meltdown\" is not one of"), "{err}");
    }
}
