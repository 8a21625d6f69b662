//! The model component's committed artifacts (`components/model/`) run in tract: parity with
//! onnxruntime's reference outputs, every refusal before loading, and the detector's findings;
//! every release beside it (`components/model/releases/`) fits the analyzer as it does.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use prost::Message as _;
use serde_json::Value;

use super::*;

const WINDOW: usize = 60;

/// The model component's directory: the artifacts a deployment stages.
fn component_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../model")
}

/// The committed model, loaded once for the whole test binary.
pub(crate) fn committed() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::load(&component_dir()).expect("the committed model loads"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// A copy of the model directory in a temporary directory, to break.
fn copy_of_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in [CARD_FILE, "model.onnx"] {
        std::fs::copy(component_dir().join(name), dir.path().join(name)).unwrap();
    }
    dir
}

/// A change to a model card.
type CardEdit = fn(&mut Value);

/// Rewrites the card in `dir` with `edit`.
fn edit_card(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let mut card = read_json(&dir.join(CARD_FILE));
    edit(&mut card);
    std::fs::write(dir.join(CARD_FILE), serde_json::to_vec_pretty(&card).unwrap()).unwrap();
}

/// Replaces the model file in `dir` and records its digest in the card, so that only what the
/// test changed is wrong.
fn replace_model(dir: &Path, bytes: &[u8]) {
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
    let digest = hex::encode(Sha256::digest(bytes));
    edit_card(dir, |card| card["model"]["sha256"] = Value::String(digest));
}

#[test]
fn tract_matches_onnxruntime_on_every_test_vector() {
    let model = committed();
    let vectors = read_json(&component_dir().join("test-vectors.json"));
    assert_eq!(vectors["model_sha256"].as_str(), Some(model.sha256()), "the vectors belong to this model");
    let tolerance = vectors["tolerance_abs"].as_f64().unwrap();
    assert!(tolerance <= 1e-5, "the issue asks for 1e-5 at most, the vectors say {tolerance}");
    let vectors = vectors["vectors"].as_array().unwrap();
    let mut classes_seen = std::collections::BTreeSet::new();
    for (i, v) in vectors.iter().enumerate() {
        let input: Vec<f32> = v["input"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let got = model.infer(&input).unwrap_or_else(|e| panic!("vector {i} ({}): {e}", v["source"]));
        assert_eq!(got.label, v["label"].as_i64().unwrap(), "vector {i} ({}): label", v["source"]);
        let want: Vec<f64> = v["probabilities"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(got.probabilities.len(), want.len(), "vector {i}");
        for (k, (g, w)) in got.probabilities.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(*g) - w).abs() <= tolerance,
                "vector {i} ({}), class {k}: tract {g}, onnxruntime {w}",
                v["source"]
            );
        }
        classes_seen.insert(v["class"].as_str().unwrap().to_owned());
    }
    assert_eq!(classes_seen.len(), model.classes().len(), "the vectors cover every class");
}

#[test]
fn verify_model_reports_parity_load_time_and_latency() {
    let report = crate::verify::verify(&component_dir(), 50).unwrap();
    let parity = report.parity.expect("the component directory has test vectors");
    assert!(parity.ok(), "{parity:?}");
    assert!(parity.vectors >= 5 && parity.max_abs_diff <= 1e-5, "{parity:?}");
    assert_eq!((report.version.as_str(), report.latency.runs), (committed().version(), 50));
    assert!(report.load_ms > 0.0 && report.latency.p50_us > 0.0 && report.latency.p99_us >= report.latency.p50_us);
}

#[test]
fn the_parity_check_fails_on_other_reference_outputs() {
    let path = component_dir().join(crate::verify::TEST_VECTORS_FILE);
    let good: crate::verify::TestVectors = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut shifted = good.clone();
    shifted.vectors[3].probabilities[1] += 2e-5;
    let report = crate::verify::parity(committed(), &shifted);
    assert_eq!(report.mismatches.len(), 1, "{report:?}");
    assert!(report.mismatches[0].starts_with(&good.vectors[3].source), "{report:?}");
    let mut relabelled = good.clone();
    relabelled.vectors[0].label = (relabelled.vectors[0].label + 1) % 5;
    assert!(!crate::verify::parity(committed(), &relabelled).ok());
    let other_model = crate::verify::TestVectors { model_sha256: "ab".repeat(32), ..good };
    let report = crate::verify::parity(committed(), &other_model);
    assert!(!report.ok() && report.mismatches[0].contains("the vectors are for model"), "{report:?}");
}

#[test]
fn the_committed_model_maps_its_classes_to_anomaly_kinds() {
    let model = committed();
    assert_eq!(model.classes()[0], None, "class 0 is normal");
    for kind in ALL_KINDS {
        assert!(model.classes().contains(&Some(kind)), "{kind:?}");
    }
    assert_eq!(model.card().input.features, Features::names());
}

/// The released versions shipped beside the current one: `components/model/releases/{version}/`,
/// each a component directory of its own (`recipe.yaml`, `model.onnx`, `model-card.json`).
fn releases() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(component_dir().join("releases"))
        .expect("components/model/releases exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn version_of(dir: &Path) -> &str {
    dir.file_name().and_then(|n| n.to_str()).unwrap()
}

#[test]
fn every_release_fits_the_analyzer_exactly_as_the_committed_model() {
    let current = committed();
    let releases = releases();
    assert!(!releases.is_empty(), "components/model/releases holds no release");
    for dir in &releases {
        let version = version_of(dir);
        let model = Model::load(dir).unwrap_or_else(|e| panic!("release {version}: {e}"));
        assert_eq!(model.version(), version, "the card's version names its directory");
        let (card, want) = (model.card(), current.card());
        assert_eq!(card.name, want.name, "release {version}");
        assert_eq!(card.input.features, want.input.features, "release {version}: features");
        assert_eq!(card.input.shape, want.input.shape, "release {version}: input shape");
        assert_eq!(card.output.classes, want.output.classes, "release {version}: classes");
        assert_eq!(model.classes(), current.classes(), "release {version}");
        assert_eq!(card.input.poll_period_ms, want.input.poll_period_ms, "release {version}");
        model.check_window(want.input.window_samples).unwrap();
        // The same input gives an output of the same shape.
        let zeros = vec![0.0; want.input.features.len()];
        assert_eq!(model.infer(&zeros).unwrap().probabilities.len(), current.classes().len());
    }
}

#[test]
fn every_release_recipe_is_the_committed_recipe_with_its_version_and_digests() {
    use base64::Engine as _;
    use device_sim::recipe::RecipeLoader;

    let read_yaml = |path: &Path| -> Value { serde_yaml_ng::from_slice(&std::fs::read(path).unwrap()).unwrap() };
    let base = read_yaml(&component_dir().join("recipe.yaml"));
    let base_version = base["ComponentVersion"].as_str().unwrap().to_owned();
    let loader = RecipeLoader::discover(None).unwrap();
    assert_eq!(loader.schema_warning(), None, "the GDK recipe schema is needed to check the releases");
    for dir in releases() {
        let version = version_of(&dir);
        let path = dir.join("recipe.yaml");
        let loaded = loader.load_file(&path).unwrap_or_else(|e| panic!("release {version}: {e}"));
        assert_eq!(loaded.recipe.version.to_string(), version, "the recipe's version names its directory");

        // Only the version, the URIs' version segment and the digests differ from the current recipe.
        let mut want = base.clone();
        want["ComponentVersion"] = Value::String(version.to_owned());
        for manifest in want["Manifests"].as_array_mut().unwrap() {
            for artifact in manifest["Artifacts"].as_array_mut().unwrap() {
                let uri =
                    artifact["URI"].as_str().unwrap().replace(&format!("/{base_version}/"), &format!("/{version}/"));
                let file = dir.join(uri.rsplit('/').next().unwrap());
                let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&bytes));
                artifact["URI"] = Value::String(uri);
                artifact["Digest"] = Value::String(digest);
            }
        }
        assert_eq!(read_yaml(&path), want, "release {version}: recipe.yaml");
    }
}

#[test]
fn a_model_whose_digest_differs_from_its_card_is_refused() {
    let dir = copy_of_model();
    edit_card(dir.path(), |card| card["model"]["sha256"] = Value::String("00".repeat(32)));
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("does not match the model card"), "{err}");
}

#[test]
fn a_truncated_model_file_is_refused_by_its_digest() {
    let dir = copy_of_model();
    let bytes = std::fs::read(dir.path().join("model.onnx")).unwrap();
    std::fs::write(dir.path().join("model.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(&err, ModelError::Digest { bytes: b, .. } if *b == bytes.len() / 2), "{err}");
}

#[test]
fn a_truncated_model_file_with_a_matching_card_is_refused_as_not_onnx() {
    let dir = copy_of_model();
    let bytes = std::fs::read(dir.path().join("model.onnx")).unwrap();
    replace_model(dir.path(), &bytes[..bytes.len() / 2]);
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Onnx(_)), "{err}");
}

#[test]
fn a_graph_with_another_input_width_is_refused() {
    let dir = copy_of_model();
    let mut proto = pb::ModelProto::decode(std::fs::read(dir.path().join("model.onnx")).unwrap().as_slice()).unwrap();
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(pb::type_proto::Value::TensorType(tensor)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("a tensor input")
    };
    tensor.shape.as_mut().unwrap().dim[1].value = Some(pb::tensor_shape_proto::dimension::Value::DimValue(100));
    replace_model(dir.path(), &proto.encode_to_vec());
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Schema(_)), "{err}");
    assert!(err.to_string().contains("has shape [N, 100] (expected [N, 114])"), "{err}");
}

#[test]
fn a_graph_with_another_input_type_is_refused() {
    let dir = copy_of_model();
    let mut proto = pb::ModelProto::decode(std::fs::read(dir.path().join("model.onnx")).unwrap().as_slice()).unwrap();
    let input = &mut proto.graph.as_mut().unwrap().input[0];
    let Some(pb::type_proto::Value::TensorType(tensor)) = input.r#type.as_mut().unwrap().value.as_mut() else {
        panic!("a tensor input")
    };
    tensor.elem_type = pb::tensor_proto::DataType::Double as i32;
    replace_model(dir.path(), &proto.encode_to_vec());
    let err = Model::load(dir.path()).unwrap_err();
    assert!(err.to_string().contains("element type"), "{err}");
}

#[test]
fn a_card_with_another_input_shape_or_feature_order_is_refused() {
    let cases: [(&str, CardEdit); 4] = [
        ("shape", |c| c["input"]["shape"] = serde_json::json!([null, 107])),
        ("position 0", |c| c["input"]["features"].as_array_mut().unwrap().swap(0, 1)),
        // A 1.x card: the 109 features before the thermal summaries.
        ("109 vs 114", |c| {
            c["input"]["features"].as_array_mut().unwrap().truncate(109);
        }),
        ("dtype", |c| c["input"]["dtype"] = "float64".into()),
    ];
    for (want, edit) in cases {
        let dir = copy_of_model();
        edit_card(dir.path(), edit);
        let err = Model::load(dir.path()).unwrap_err();
        assert!(matches!(err, ModelError::Schema(_)), "{want}: {err}");
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

#[test]
fn classes_must_be_normal_once_and_known_anomaly_kinds() {
    let cases: [(&str, CardEdit); 3] = [
        ("`leak` is neither", |c| c["output"]["classes"][4] = "leak".into()),
        ("appears twice", |c| c["output"]["classes"][4] = "cavitation".into()),
        ("no `normal` class", |c| {
            c["output"]["classes"].as_array_mut().unwrap().remove(0);
        }),
    ];
    for (want, edit) in cases {
        let dir = copy_of_model();
        edit_card(dir.path(), edit);
        let err = Model::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
}

#[test]
fn a_model_trained_on_another_window_does_not_fit() {
    let err = committed().check_window(30).unwrap_err();
    assert!(err.to_string().contains("windows of 60 readings, the analyzer's windowSamples is 30"), "{err}");
    assert!(committed().check_window(WINDOW).is_ok());
}

#[test]
fn missing_files_and_malformed_cards_are_refused_with_their_path() {
    let empty = tempfile::tempdir().unwrap();
    let err = Model::load(empty.path()).unwrap_err();
    assert!(matches!(err, ModelError::Unreadable { .. }) && err.to_string().contains(CARD_FILE), "{err}");

    let dir = copy_of_model();
    std::fs::remove_file(dir.path().join("model.onnx")).unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Unreadable { .. }) && err.to_string().contains("model.onnx"), "{err}");

    let dir = copy_of_model();
    std::fs::write(dir.path().join(CARD_FILE), b"{\"name\": ").unwrap();
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Card { .. }), "{err}");

    let dir = copy_of_model();
    edit_card(dir.path(), |c| c["model"]["file"] = "../model.onnx".into());
    let err = Model::load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Card { .. }) && err.to_string().contains("file name"), "{err}");
}

#[test]
fn a_feature_vector_of_the_wrong_length_is_an_error_not_a_panic() {
    assert!(matches!(committed().infer(&[0.0; 3]), Err(ModelError::Schema(_))));
}

/// The test vectors' inputs and onnxruntime's probabilities.
fn vector_pairs() -> Vec<(Vec<f32>, Vec<f64>)> {
    let vectors = read_json(&component_dir().join("test-vectors.json"));
    let as_f64 = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
    vectors["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (as_f64(&v["input"]).into_iter().map(|x| x as f32).collect::<Vec<f32>>(), as_f64(&v["probabilities"])))
        .collect()
}

#[test]
fn the_kept_run_state_carries_nothing_from_one_run_to_the_next() {
    // One model, its clone (its own state) and concurrent runs on both, interleaved with a
    // refused input: every answer is the reference's for its own input.
    let model = committed().clone();
    let pairs = vector_pairs();
    let clone = model.clone();
    std::thread::scope(|s| {
        for m in [&model, &clone, &model] {
            let pairs = &pairs;
            s.spawn(move || {
                for (input, want) in pairs.iter().chain(pairs.iter().rev()) {
                    assert!(m.infer(&input[..3]).is_err());
                    let got = m.infer(input).unwrap();
                    for (g, w) in got.probabilities.iter().zip(want) {
                        assert!((f64::from(*g) - w).abs() <= 1e-5, "{got:?} against {want:?}");
                    }
                }
            });
        }
    });
}

mod detector {
    use super::*;
    use crate::plant_sim::PlantSim;
    use device_sim::plant::FaultKind;

    fn detector() -> ModelDetector {
        ModelDetector::new(committed().clone(), ModelConfig::default())
    }

    /// Steps `sim` `n` readings through a window and the detector; returns the last findings.
    fn run(sim: &mut PlantSim, window: &mut crate::features::Window, d: &mut ModelDetector, n: usize) -> Vec<Finding> {
        let mut last = Vec::new();
        for _ in 0..n {
            let r = sim.next_reading();
            window.push(&r);
            last = d.assess(&window.features(), &r);
        }
        last
    }

    #[test]
    fn nothing_is_judged_before_the_window_is_full_or_while_the_pump_is_stopped() {
        let mut sim = PlantSim::new(5, 2900.0);
        let mut window = crate::features::Window::new(WINDOW);
        let mut d = detector();
        let findings = run(&mut sim, &mut window, &mut d, WINDOW - 1);
        assert_eq!(findings.len(), 4, "{findings:#?}");
        assert!(findings.iter().all(|f| f.evidence == Evidence::Inconclusive && f.reason == "window not full"));
        let r = sim.next_reading();
        window.push(&r);
        let stopped = Reading { running: false, ..r };
        let findings = d.assess(&window.features(), &stopped);
        assert!(findings.iter().all(|f| f.evidence == Evidence::Inconclusive && f.reason == "pump not running"));
    }

    #[test]
    fn a_healthy_pump_gives_no_raising_evidence_and_bearing_wear_does() {
        let mut sim = PlantSim::new(7, 2900.0);
        let mut window = crate::features::Window::new(WINDOW);
        let mut d = detector();
        let mut raises = 0;
        for _ in 0..300 {
            let r = sim.next_reading();
            window.push(&r);
            raises += d.assess(&window.features(), &r).iter().filter(|f| f.evidence == Evidence::Raise).count();
        }
        assert_eq!(raises, 0, "five healthy minutes at rated speed");
        sim.inject(FaultKind::BearingWear, 1.0, None);
        let findings = run(&mut sim, &mut window, &mut d, 90);
        let f = findings.iter().find(|f| f.kind == AnomalyKind::BearingWear).expect("bearing wear found");
        assert_eq!(f.evidence, Evidence::Raise, "{f:#?}");
        assert!(f.severity >= ModelConfig::default().raise_score && f.severity <= 1.0);
        assert!(f.reason.contains("P(bearing_wear)") && f.reason.contains(committed().version()), "{}", f.reason);
        assert_eq!(f.features.len(), committed().classes().len(), "every class's probability");
        assert_eq!(d.failures(), 0);
    }

    /// The controller's maintenance stop (the run coil off) and a stopped pump: through the
    /// analyzer with `detector: model`, nothing is raised while the pump slows down and a stopped
    /// pump has no active anomaly. (A restart still raises overheating while the cooled motor
    /// warms up at 2900 rpm, with model 2.0.0 too: `docs/ml.md`, "A stopped pump".)
    #[test]
    fn a_stop_and_a_stopped_pump_raise_nothing() {
        use crate::analyzer::Analyzer;
        use crate::config::{Config, DetectorChoice};
        use pump_map::Coil;

        for (seed, speed) in [(1, 2900.0), (7, 2000.0), (42, 1700.0)] {
            let mut sim = PlantSim::new(seed, speed);
            let mut a = Analyzer::new(Config { detector: DetectorChoice::Model, ..Config::default() }).unwrap();
            a.offer_model(Ok(committed().clone()), 0);
            let mut events = Vec::new();
            for (run_coil, secs) in [(true, 180), (false, 600)] {
                sim.plant.set_coil(Coil::Run, run_coil);
                for i in 0..secs {
                    let r = sim.next_reading();
                    events.extend(a.handle_reading(r.ts, &r).expect("a plant reading is accepted"));
                    if !run_coil && i >= 30 {
                        assert!(!r.running && a.active().is_empty(), "seed {seed}: stopped, {:#?}", a.active());
                    }
                }
            }
            assert!(events.is_empty(), "seed {seed}, {speed} rpm: {events:#?}");
        }
    }
}

#[test]
fn a_panic_is_reported_with_its_message() {
    // (The panics print to the test's stderr: the hook is process-wide, so it is left alone.)
    let text = std::panic::catch_unwind(|| panic!("bad node {}", 3)).unwrap_err();
    let literal = std::panic::catch_unwind(|| std::panic::panic_any("bad graph")).unwrap_err();
    let other = std::panic::catch_unwind(|| std::panic::panic_any(7_u8)).unwrap_err();
    assert_eq!(super::panic_message(&*text), "bad node 3");
    assert_eq!(super::panic_message(&*literal), "bad graph");
    assert_eq!(super::panic_message(&*other), "(no message)");
}
