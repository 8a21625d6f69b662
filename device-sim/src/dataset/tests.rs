use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::{Args as _, FromArgMatches as _};
use pump_features::Features;
use pump_map::Measurement;

use super::plan::{CLASSES, Split};
use super::*;

/// Parses `dataset` flags as the binary does.
fn args(flags: &[&str]) -> Result<DatasetArgs, clap::Error> {
    let cmd = DatasetArgs::augment_args(clap::Command::new("dataset"));
    let matches = cmd.try_get_matches_from(std::iter::once("dataset").chain(flags.iter().copied()))?;
    DatasetArgs::from_arg_matches(&matches)
}

/// A small dataset: 15 runs of 3 minutes with a 60-reading window (the analyzer's default).
fn small(seed: u64) -> DatasetOptions {
    DatasetOptions::new(
        &args(&["--out", "x", "--hours", "0.75", "--run-minutes", "3", "--seed", &seed.to_string(), "--stride", "5"])
            .unwrap(),
    )
    .unwrap()
}

struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

fn read_csv(path: &Path) -> Csv {
    let text = fs::read_to_string(path).unwrap();
    let mut lines = text.lines().map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>());
    let header = lines.next().unwrap();
    Csv { header, rows: lines.collect() }
}

fn generated(seed: u64) -> (tempfile::TempDir, Manifest) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = generate(&small(seed), &dir.path().join("ds")).unwrap();
    (dir, manifest)
}

#[test]
fn splits_hold_disjoint_runs_and_every_class() {
    let (dir, manifest) = generated(7);
    let mut seen: BTreeMap<u32, Split> = BTreeMap::new();
    for split in Split::ALL {
        let csv = read_csv(&dir.path().join("ds").join(format!("{0}/{0}.csv", split.name())));
        let labels: BTreeSet<&str> = csv.rows.iter().map(|r| r[2].as_str()).collect();
        assert_eq!(labels, CLASSES.iter().copied().collect(), "{split:?} lacks a class");
        for row in &csv.rows {
            let run: u32 = row[0].parse().unwrap();
            let before = seen.insert(run, split);
            assert!(before.is_none() || before == Some(split), "run {run} is in {before:?} and {split:?}");
        }
    }
    assert_eq!(seen.len(), manifest.runs.len(), "every run has rows");
    for run in &manifest.runs {
        assert_eq!(seen[&run.run_id], run.split, "the manifest's split of run {}", run.run_id);
    }
}

#[test]
fn the_same_seed_gives_identical_files_and_another_seed_does_not() {
    let (a, ma) = generated(3);
    let (b, mb) = generated(3);
    let (c, mc) = generated(4);
    assert_eq!(ma, mb);
    for name in ["manifest.json", "train/train.csv", "validation/validation.csv", "test/test.csv"] {
        let read = |d: &tempfile::TempDir| fs::read(d.path().join("ds").join(name)).unwrap();
        assert_eq!(read(&a), read(&b), "{name}");
        if name != "manifest.json" {
            assert_ne!(read(&a), read(&c), "{name} with another seed");
        }
    }
    assert_ne!(ma.rows.training_digest, mc.rows.training_digest);
}

#[test]
fn rows_carry_the_fault_once_the_newest_reading_follows_its_onset() {
    let (dir, manifest) = generated(11);
    let runs: BTreeMap<u32, &RunPlan> = manifest.runs.iter().map(|r| (r.run_id, r)).collect();
    let mut checked = BTreeSet::new();
    for split in Split::ALL {
        let csv = read_csv(&dir.path().join("ds").join(format!("{0}/{0}.csv", split.name())));
        for row in &csv.rows {
            let run = runs[&row[0].parse::<u32>().unwrap()];
            let t_s: f64 = row[1].parse().unwrap();
            let want = match run.fault {
                Some(f) if t_s > f.onset_s => f.kind.name(),
                _ => "normal",
            };
            assert_eq!(row[2], want, "run {} at {t_s} s ({:?})", run.run_id, run.fault);
            checked.insert((run.fault.is_some(), row[2].clone() == "normal"));
        }
    }
    // Fault runs have rows on both sides of the onset; normal runs only normal rows.
    assert_eq!(checked, BTreeSet::from([(true, true), (true, false), (false, true)]));
}

#[test]
fn the_label_rule_is_strict_at_the_onset() {
    let (_dir, manifest) = generated(1);
    let run = manifest.runs.iter().find(|r| r.fault.is_some()).unwrap();
    let onset = run.fault.unwrap().onset_s;
    assert_eq!(run.label_at(onset), "normal", "the reading at the onset was taken before the injection");
    assert_eq!(run.label_at(onset + 1.0), run.fault.unwrap().kind.name());
    let normal = manifest.runs.iter().find(|r| r.fault.is_none()).unwrap();
    assert_eq!(normal.label_at(1e9), "normal");
}

#[test]
fn a_fault_changes_nothing_before_its_onset_and_shows_after_it() {
    // The plant draws the same noise whatever its state, so each fault run has a healthy twin
    // (same plan without the fault) whose rows must be identical up to the onset.
    let options = small(5);
    let runs = plan::plan(&options);
    let suction = Features::names().iter().position(|n| n == "suction_pressure_kpa.mean").unwrap();
    for run in runs.iter().filter(|r| r.fault.is_some()) {
        let onset = run.fault.unwrap().onset_s;
        let faulted = simulate::simulate(run, &options).unwrap();
        let twin = simulate::simulate(&RunPlan { fault: None, ..run.clone() }, &options).unwrap();
        assert_eq!(faulted.len(), twin.len());
        for (f, h) in faulted.iter().zip(&twin) {
            if f.t_s <= onset {
                assert_eq!(f.features, h.features, "run {} at {} s, before the onset {onset}", run.run_id, f.t_s);
            }
        }
        let (f, h) = (faulted.last().unwrap(), twin.last().unwrap());
        assert_ne!(f.features, h.features, "run {}: {:?} left no trace", run.run_id, run.fault);
        if run.fault.unwrap().kind.name() == "cavitation" {
            let drop = h.features[suction] - f.features[suction];
            assert!(drop > 1.0, "run {}: cavitation lowered the suction mean by only {drop} kPa", run.run_id);
        }
    }
}

#[test]
fn a_stopped_run_stops_and_starts_again_at_its_planned_times() {
    let options = small(5);
    let run = RunPlan {
        fault: None,
        change: Some(plan::PlannedChange { at_s: 20.0, change: plan::Change::StopS(60.0) }),
        ..plan::plan(&options)[0].clone()
    };
    let running: Vec<(f64, bool)> =
        simulate::readings(&run, &options).map(|p| p.map(|p| (p.t_s, p.reading.running)).unwrap()).collect();
    let state_at = |t: f64| running.iter().find(|(t_s, _)| *t_s == t).unwrap().1;
    assert!(state_at(20.0), "running up to the stop");
    assert!(!state_at(50.0) && !state_at(80.0), "stopped while the coil is off");
    assert!(running.iter().rev().take(60).all(|(_, on)| *on), "running again at the end");
}

#[test]
fn manifest_counts_and_digests_match_the_files() {
    let (dir, manifest) = generated(2);
    let root = dir.path().join("ds");
    let on_disk: serde_json::Value = serde_json::from_slice(&fs::read(root.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk["seed"], 2);
    assert_eq!(on_disk["hours"], 0.75);
    assert_eq!(on_disk["window_samples"], 60);
    let mut pairs = Vec::new();
    for split in Split::ALL {
        let summary = &manifest.rows.splits[split.name()];
        let file = &summary.files[0];
        assert_eq!(file.sha256, sha256_file(&root.join(&file.path)).unwrap());
        let csv = read_csv(&root.join(&file.path));
        assert_eq!(file.rows, csv.rows.len());
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &csv.rows {
            *counts.entry(CLASSES.iter().find(|c| **c == row[2]).unwrap()).or_default() += 1;
        }
        assert_eq!(summary.classes, counts, "{split:?}");
        let runs: BTreeSet<&String> = csv.rows.iter().map(|r| &r[0]).collect();
        assert_eq!(summary.runs, runs.len());
        assert_eq!(on_disk["splits"][split.name()]["files"][0]["sha256"], file.sha256.as_str());
        if split != Split::Test {
            pairs.push((file.path.clone(), file.sha256.clone()));
        }
    }
    let text: String = pairs.iter().map(|(p, h)| format!("{p} {h}\n")).collect();
    assert_eq!(manifest.rows.training_digest, hex(&Sha256::digest(text.as_bytes())));
}

#[test]
fn columns_are_the_metadata_then_the_features_in_the_feature_crate_order() {
    let (dir, manifest) = generated(1);
    let csv = read_csv(&dir.path().join("ds/train/train.csv"));
    let mut want: Vec<String> = META_COLUMNS.iter().map(|s| s.to_string()).collect();
    want.extend(Features::names());
    assert_eq!(csv.header, want);
    assert!(csv.rows.iter().all(|r| r.len() == want.len()));
    assert_eq!(manifest.rows.schema.features, Features::names());
    assert_eq!(manifest.rows.schema.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>(), want);
    assert_eq!(manifest.rows.schema.classes, CLASSES);
}

#[test]
fn a_plan_varies_conditions_and_faults_within_their_ranges() {
    let options = DatasetOptions::new(&args(&["--out", "x", "--hours", "20", "--seed", "9"]).unwrap()).unwrap();
    let runs = plan::plan(&options);
    assert_eq!(runs.len(), 150);
    let mut sensors = BTreeSet::new();
    for r in &runs {
        assert!((1700.0..=3000.0).contains(&r.speed_rpm), "{r:?}");
        assert!(r.plant_seed < 1 << 53, "a JSON number holds the seed exactly: {r:?}");
        if let Some(f) = r.fault {
            assert!(f.onset_s >= options.window_s() && f.onset_s <= 0.6 * options.run_s(), "{r:?}");
            assert!((0.15..=1.0).contains(&f.severity), "{r:?}");
            sensors.extend(f.sensor);
        }
    }
    assert!(runs.iter().any(|r| r.bypass_open) && runs.iter().any(|r| !r.bypass_open));
    assert!(runs.iter().any(|r| r.change.is_some()) && runs.iter().any(|r| r.change.is_none()));
    // Stops are normal runs' only, and the pump is back at speed with most of the run to go.
    let stops: Vec<_> = runs
        .iter()
        .filter_map(|r| match r.change {
            Some(plan::PlannedChange { at_s, change: plan::Change::StopS(for_s) }) => Some((r, at_s, for_s)),
            _ => None,
        })
        .collect();
    assert!(stops.len() >= 3, "{} runs stop", stops.len());
    for (r, at_s, for_s) in stops {
        assert!(r.fault.is_none() && for_s > 0.0 && at_s + for_s <= 0.61 * options.run_s(), "{r:?}");
    }
    assert!(sensors.len() >= 6, "stuck sensors vary: {sensors:?}");
    assert!(sensors.iter().all(|s| Measurement::ALL.contains(s)));
    let count = |s: Split| runs.iter().filter(|r| r.split == s).count();
    assert_eq!((count(Split::Train), count(Split::Validation), count(Split::Test)), (90, 30, 30));
}

#[test]
fn out_of_range_options_are_refused_with_what_to_change() {
    let cases: &[(&[&str], &str)] = &[
        (&["--hours", "0"], "--hours 0 must be more than 0"),
        (&["--hours=-2"], "--hours -2 must be more than 0"),
        (&["--hours", "NaN"], "--hours NaN must be more than 0"),
        (&["--hours", "inf"], "--hours inf must be more than 0"),
        (&["--hours", "1"], "makes 8 runs; the splits by run need at least 15"),
        (&["--hours", "1", "--run-minutes", "1"], "shorter than two windows"),
        (&["--hours", "1", "--window", "2"], "--window 2 must be 3..=3600"),
        (&["--hours", "1", "--stride", "0"], "--stride 0 must be 1..=3600"),
        (&["--hours", "1", "--poll-ms", "5"], "--poll-ms 5 must be 10..=3600000"),
    ];
    for (flags, want) in cases {
        let mut all = vec!["--out", "x"];
        all.extend_from_slice(flags);
        let err = DatasetOptions::new(&args(&all).unwrap()).unwrap_err();
        assert!(err.is_configuration(), "{flags:?}");
        assert!(err.to_string().contains(want), "{flags:?}: {err}");
    }
    assert!(args(&["--out", "x"]).is_err(), "--hours is required");
    assert!(args(&["--out", "x", "--hours", "six"]).is_err());
}

#[test]
fn an_unwritable_or_non_empty_output_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    // Under a regular file no directory can be created, whatever the user's privileges.
    let file = dir.path().join("a-file");
    fs::write(&file, "keep").unwrap();
    let err = generate(&small(1), &file.join("ds")).unwrap_err();
    assert!(matches!(err, DatasetError::Write { .. }) && !err.is_configuration(), "{err:?}");
    assert_eq!(err.to_string(), format!("cannot write {}", file.join("ds").display()));
    assert!(std::error::Error::source(&err).is_some(), "the OS error is the cause");

    let full = dir.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("old.csv"), "stale").unwrap();
    let err = generate(&small(1), &full).unwrap_err();
    assert!(matches!(err, DatasetError::OutputNotEmpty(_)) && err.is_configuration(), "{err:?}");
    assert!(err.to_string().contains("is not empty"), "{err}");
    assert_eq!(fs::read_to_string(full.join("old.csv")).unwrap(), "stale");
    assert_eq!(fs::read_dir(&full).unwrap().count(), 1, "nothing was written");

    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    generate(&small(1), &empty).unwrap();
    assert!(empty.join("manifest.json").is_file(), "an existing empty directory is fine");
}

#[test]
fn help_documents_the_schema_and_the_label_rule() {
    let mut cmd = DatasetArgs::augment_args(clap::Command::new("dataset"));
    let help = cmd.render_long_help().to_string();
    for needle in ["manifest.json", "run_id", "t_s", "Features::names()", "Label rule", "t_s > onset_s", "--hours"] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    let a = args(&["--out", "d", "--hours", "6"]).unwrap();
    assert_eq!((a.seed, a.run_minutes, a.window, a.poll_ms, a.stride), (1, 8.0, 60, 1000, 2));
}
