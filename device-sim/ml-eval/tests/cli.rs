//! The `ml-eval` command end to end: a small dataset generated here, the committed model, and the
//! errors a user meets (bad options, no manifest, a broken manifest, a refused model, a dataset
//! the replay does not reproduce).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use device_sim::dataset::{DatasetArgs, DatasetOptions, generate};

/// The committed model component (`components/model`).
fn model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../components/model")
}

/// A small dataset: 15 runs of 3 minutes (3 test runs), the analyzer's 60-reading window.
fn small_dataset(dir: &Path) -> PathBuf {
    let out = dir.join("ds");
    let args =
        DatasetArgs { out: out.clone(), seed: 5, hours: 0.75, run_minutes: 3.0, window: 60, poll_ms: 1000, stride: 5 };
    generate(&DatasetOptions::new(&args).unwrap(), &out).unwrap();
    out
}

fn ml_eval(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ml-eval")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Copies the committed model into `dir` for a test to damage.
fn model_copy(dir: &Path) -> PathBuf {
    let copy = dir.join("model");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["model.onnx", "model-card.json"] {
        std::fs::copy(model_dir().join(f), copy.join(f)).unwrap();
    }
    copy
}

#[test]
fn a_report_scores_every_setting_on_the_test_rows_and_is_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small_dataset(tmp.path());
    let (json, md) = (tmp.path().join("r.json"), tmp.path().join("r.md"));
    let run = || {
        let o = ml_eval(&[
            "--dataset".as_ref(),
            ds.as_os_str(),
            "--model-dir".as_ref(),
            model_dir().as_os_str(),
            "--out".as_ref(),
            json.as_os_str(),
            "--markdown".as_ref(),
            md.as_os_str(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        (std::fs::read(&json).unwrap(), std::fs::read_to_string(&md).unwrap())
    };
    let (first, first_md) = run();
    let (second, second_md) = run();
    assert_eq!(first, second, "the same inputs give the same report");
    assert_eq!(first_md, second_md);

    let report: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ds.join("manifest.json")).unwrap()).unwrap();
    let test_rows = manifest["splits"]["test"]["rows"].as_u64().unwrap();
    assert_eq!(report["dataset"]["windows"].as_u64(), Some(test_rows));
    assert_eq!(report["dataset"]["runs"], manifest["splits"]["test"]["runs"]);
    let detectors: Vec<&str> =
        report["results"].as_array().unwrap().iter().map(|r| r["detector"].as_str().unwrap()).collect();
    assert_eq!(detectors, ["rules", "model", "both", "raw_model"]);
    for r in report["results"].as_array().unwrap() {
        let w = &r["windows"];
        assert_eq!(w["windows"].as_u64(), Some(test_rows), "{}", r["detector"]);
        // Every true class's support is the manifest's row count of that class.
        for c in w["per_class"].as_array().unwrap() {
            let class = c["class"].as_str().unwrap();
            assert_eq!(c["support"], manifest["splits"]["test"]["classes"][class], "{class}");
        }
        let f1 = w["macro_f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
        if r["detector"] != "raw_model" {
            let runs = r["runs"].as_array().unwrap();
            assert_eq!(runs.len() as u64, manifest["splits"]["test"]["runs"].as_u64().unwrap());
            assert_eq!(r["detection"]["per_class"].as_array().unwrap().len(), 4, "one entry per fault class");
        }
    }
    for needle in ["| rules |", "| model |", "| both |", "### `raw_model`", "| **macro** |"] {
        assert!(first_md.contains(needle), "the markdown lacks {needle}:\n{first_md}");
    }
}

#[test]
fn a_bad_command_line_exits_78() {
    let o = ml_eval(&["--dataset".as_ref(), "x".as_ref()]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    assert!(stderr(&o).contains("--model-dir"), "{}", stderr(&o));
    let o = ml_eval(&[
        "--dataset".as_ref(),
        "x".as_ref(),
        "--model-dir".as_ref(),
        "y".as_ref(),
        "--split".as_ref(),
        "train".as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
}

#[test]
fn a_dataset_without_a_manifest_exits_1_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let o = ml_eval(&["--dataset".as_ref(), tmp.path().as_os_str(), "--model-dir".as_ref(), model_dir().as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read the dataset manifest"), "{}", stderr(&o));
}

#[test]
fn a_broken_manifest_exits_1_and_says_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let ds = small_dataset(tmp.path());
    let path = ds.join("manifest.json");
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: [(&str, Edit); 4] = [
        ("is invalid", Box::new(|m| *m = serde_json::json!("not a manifest"))),
        ("format_version 9", Box::new(|m| m["format_version"] = 9.into())),
        ("--window 1", Box::new(|m| m["window_samples"] = 1.into())),
        ("does not reproduce the dataset", Box::new(|m| m["splits"]["test"]["classes"]["normal"] = 1.into())),
    ];
    for (want, edit) in cases {
        let mut m = original.clone();
        edit(&mut m);
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
        let o = ml_eval(&["--dataset".as_ref(), ds.as_os_str(), "--model-dir".as_ref(), model_dir().as_os_str()]);
        assert_eq!(o.status.code(), Some(1), "{want}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{want}: no report on failure");
    }
    std::fs::write(&path, b"{ truncated").unwrap();
    let o = ml_eval(&["--dataset".as_ref(), ds.as_os_str(), "--model-dir".as_ref(), model_dir().as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is invalid"), "{}", stderr(&o));
}

#[test]
fn a_model_the_analyzer_refuses_exits_1_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // The manifest is read first; the model is refused before any run is replayed.
    let ds = small_dataset(tmp.path());
    let corrupted = model_copy(tmp.path());
    let mut bytes = std::fs::read(corrupted.join("model.onnx")).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(corrupted.join("model.onnx"), bytes).unwrap();
    let missing = tmp.path().join("nowhere");
    for (dir, want) in [(&corrupted, "does not match the model card"), (&missing, "cannot read")] {
        let o = ml_eval(&["--dataset".as_ref(), ds.as_os_str(), "--model-dir".as_ref(), dir.as_os_str()]);
        assert_eq!(o.status.code(), Some(1), "{want}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("is refused") && err.contains(want), "{want}: {err}");
    }
}
