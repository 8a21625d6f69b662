//! The trained fault classifier (`com.example.pump.Model`), run with tract-onnx, and the
//! [`ModelDetector`] that puts it behind the [`Detector`] trait.
//!
//! A model directory holds `model-card.json` and the ONNX file it names (`model.onnx`), as
//! `cloud/training/train.py` writes them (the project's `docs/ml.md`). Before anything is run,
//! [`Model::load`] checks, in this order:
//!
//! 1. the card parses and names a plain file in the same directory;
//! 2. the file's SHA-256 equals the card's `model.sha256` (a truncated, corrupted or swapped
//!    file stops here);
//! 3. the card's input contract is this analyzer's: `float32 [N, F]` named features equal to
//!    [`Features::names`] in order, no scaling (the window length, which the configuration may
//!    change, is checked by [`Model::check_window`] before the model runs);
//! 4. every class is `normal` (exactly once) or an [`AnomalyKind`], without duplicates;
//! 5. the ONNX graph itself declares that input (name, element type, rank, width) and the two
//!    outputs (`label` int64, `probabilities` float32 `[N, classes]`);
//! 6. tract builds an optimized plan, and one run on a zero vector yields outputs of those shapes.
//!
//! Any failure is a [`ModelError`] naming what to fix; the caller keeps whatever detector it ran
//! before. Loading reads files; [`Model::infer`] and the detector do no I/O and read no clock.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use pump_map::Measurement;
use pump_types::{AnomalyKind, Reading};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use crate::config::ModelConfig;
use crate::detector::{ALL_KINDS, Detector, Evidence, Finding, kind_name};
use crate::features::Features;

/// The model card's file name in a model directory.
pub const CARD_FILE: &str = "model-card.json";
/// The card format this analyzer reads (`format_version`).
pub const CARD_FORMAT_VERSION: u64 = 1;
/// The class name of a healthy pump; every other class is an [`AnomalyKind`].
pub const NORMAL_CLASS: &str = "normal";

/// Why a model was refused. Every variant means the same to the caller (keep the previous
/// detector, report the reason); they differ in what must be fixed.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file of the model directory cannot be read (missing, permissions): the deployment did
    /// not stage the model component.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The model card is not valid JSON of the expected shape.
    #[error("the model card {} is invalid: {reason}", path.display())]
    Card {
        /// The card's path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model file is not the one the card describes (corrupted, truncated or replaced).
    #[error("{file}: SHA-256 {actual} ({bytes} bytes) does not match the model card's {expected}")]
    Digest {
        /// The model file's name.
        file: String,
        /// The card's digest (hex).
        expected: String,
        /// The file's digest (hex).
        actual: String,
        /// The file's size.
        bytes: usize,
    },
    /// The model's contract is not this analyzer's (features, shape, classes, window).
    #[error("the model does not fit this analyzer: {0}")]
    Schema(String),
    /// tract cannot load or run the ONNX graph (not ONNX, unsupported operator).
    #[error("the ONNX graph cannot be run: {0}")]
    Onnx(String),
}

/// What the analyzer reads of `model-card.json` (the card carries more; the rest is ignored).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelCard {
    /// [`CARD_FORMAT_VERSION`].
    pub format_version: u64,
    /// The model's name (`pump-fault-classifier`).
    pub name: String,
    /// The model's version, reported with every status and event reason.
    pub version: String,
    /// The model file.
    pub model: CardModel,
    /// The input contract.
    pub input: CardInput,
    /// The output contract.
    pub output: CardOutput,
}

/// The card's `model` section.
#[derive(Debug, Clone, Deserialize)]
pub struct CardModel {
    /// The ONNX file's name, in the card's directory.
    pub file: String,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// The card's `input` section.
#[derive(Debug, Clone, Deserialize)]
pub struct CardInput {
    /// The graph input's name.
    pub name: String,
    /// Its element type (`float32`).
    pub dtype: String,
    /// Its shape; `null` for the batch dimension.
    pub shape: Vec<Option<i64>>,
    /// The feature names, in input order.
    pub features: Vec<String>,
    /// The window length the features were computed over, readings.
    pub window_samples: usize,
    /// The poll period the features assume, ms.
    pub poll_period_ms: u64,
    /// The scaling applied before the model (`kind: none` is the only one this analyzer applies).
    pub scaling: CardScaling,
}

/// The card's `input.scaling`.
#[derive(Debug, Clone, Deserialize)]
pub struct CardScaling {
    /// `none`.
    pub kind: String,
}

/// The card's `output` section.
#[derive(Debug, Clone, Deserialize)]
pub struct CardOutput {
    /// The class names, in output order.
    pub classes: Vec<String>,
    /// The predicted class index.
    pub label: CardTensor,
    /// The per-class probabilities.
    pub probabilities: CardTensor,
}

/// A named output tensor of the card.
#[derive(Debug, Clone, Deserialize)]
pub struct CardTensor {
    /// The graph output's name.
    pub name: String,
    /// Its element type.
    pub dtype: String,
}

/// One model output for one feature vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The index of the predicted class (the graph's `label` output).
    pub label: i64,
    /// Per class, in [`Model::classes`] order.
    pub probabilities: Vec<f32>,
}

/// A class of the model: normal, or a kind of anomaly.
pub type Class = Option<AnomalyKind>;

/// A checked, loaded model: its card, its classes and tract's optimized plan (shared; cloning is
/// cheap). Built for one feature vector per run.
pub struct Model {
    card: ModelCard,
    sha256: String,
    classes: Vec<Class>,
    plan: Arc<TypedRunnableModel>,
    /// tract's run state, kept between runs: `SimplePlan::run` would build one (a slot per node
    /// of the graph, each op asked for its state) and tear it down on every call. Taken out while
    /// a run uses it, so concurrent runs each get their own, and dropped when a run fails.
    state: Mutex<Option<TypedSimpleState>>,
    label_output: usize,
    probabilities_output: usize,
}

impl Clone for Model {
    /// Shares the plan; the clone builds its own run state when it first runs.
    fn clone(&self) -> Self {
        Model {
            card: self.card.clone(),
            sha256: self.sha256.clone(),
            classes: self.classes.clone(),
            plan: Arc::clone(&self.plan),
            state: Mutex::new(None),
            label_output: self.label_output,
            probabilities_output: self.probabilities_output,
        }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.card.name)
            .field("version", &self.card.version)
            .field("sha256", &self.sha256)
            .field("classes", &self.classes)
            .finish()
    }
}

fn schema(reason: impl Into<String>) -> ModelError {
    ModelError::Schema(reason.into())
}

fn onnx(e: impl std::fmt::Display) -> ModelError {
    ModelError::Onnx(e.to_string())
}

/// The class name of `kind` or normal.
pub fn class_name(class: Class) -> &'static str {
    class.map_or(NORMAL_CLASS, kind_name)
}

/// Maps the card's class names to classes: `normal` exactly once, the rest anomaly kinds, no
/// duplicates.
fn map_classes(names: &[String]) -> Result<Vec<Class>, ModelError> {
    let mut classes = Vec::with_capacity(names.len());
    for name in names {
        let class = if name == NORMAL_CLASS {
            None
        } else {
            let kind = ALL_KINDS.into_iter().find(|k| kind_name(*k) == name).ok_or_else(|| {
                let known: Vec<&str> = ALL_KINDS.iter().map(|k| kind_name(*k)).collect();
                schema(format!(
                    "class `{name}` is neither `{NORMAL_CLASS}` nor a known anomaly kind ({})",
                    known.join(", ")
                ))
            })?;
            Some(kind)
        };
        if classes.contains(&class) {
            return Err(schema(format!("class `{name}` appears twice")));
        }
        classes.push(class);
    }
    if !classes.contains(&None) {
        return Err(schema(format!("no `{NORMAL_CLASS}` class")));
    }
    if classes.len() < 2 {
        return Err(schema("fewer than two classes"));
    }
    Ok(classes)
}

/// The element type and dimensions (`None`: symbolic or absent) a graph value declares.
fn declared(value: &pb::ValueInfoProto) -> Option<(i32, Vec<Option<i64>>)> {
    let Some(pb::type_proto::Value::TensorType(tensor)) = value.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    let dims = tensor
        .shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) => Some(v),
            _ => None,
        })
        .collect();
    Some((tensor.elem_type, dims))
}

const ONNX_FLOAT: i32 = pb::tensor_proto::DataType::Float as i32;
const ONNX_INT64: i32 = pb::tensor_proto::DataType::Int64 as i32;

impl Model {
    /// Loads and checks the model in `dir` (see the module documentation for every check; the
    /// window length is checked by [`Model::check_window`] whenever the configuration changes).
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        // A model file must never take the analyzer down: a panic inside tract on a file it
        // cannot handle is a refusal like any other.
        std::panic::catch_unwind(|| Model::load_unguarded(dir))
            .unwrap_or_else(|panic| Err(ModelError::Onnx(format!("tract panicked: {}", panic_message(&panic)))))
    }

    fn load_unguarded(dir: &Path) -> Result<Model, ModelError> {
        let card_path = dir.join(CARD_FILE);
        let card =
            std::fs::read(&card_path).map_err(|source| ModelError::Unreadable { path: card_path.clone(), source })?;
        let card: ModelCard = serde_json::from_slice(&card)
            .map_err(|e| ModelError::Card { path: card_path.clone(), reason: e.to_string() })?;
        let file = &card.model.file;
        // The card may only name a file beside it: a card is data, not a path to anywhere.
        if file.is_empty() || file.contains(['/', '\\']) || file == "." || file == ".." {
            return Err(ModelError::Card {
                path: card_path,
                reason: format!("model.file {file:?} must be a file name in the card's directory"),
            });
        }
        let model_path = dir.join(file);
        let bytes = std::fs::read(&model_path).map_err(|source| ModelError::Unreadable { path: model_path, source })?;
        Model::from_parts(card, &bytes)
    }

    /// Checks a parsed card and the model file's bytes (steps 2–6 of the module documentation).
    pub fn from_parts(card: ModelCard, bytes: &[u8]) -> Result<Model, ModelError> {
        let actual = hex::encode(Sha256::digest(bytes));
        if !actual.eq_ignore_ascii_case(card.model.sha256.trim()) {
            return Err(ModelError::Digest {
                file: card.model.file.clone(),
                expected: card.model.sha256.clone(),
                actual,
                bytes: bytes.len(),
            });
        }
        if card.format_version != CARD_FORMAT_VERSION {
            return Err(schema(format!(
                "model card format_version {} (this analyzer reads {CARD_FORMAT_VERSION})",
                card.format_version
            )));
        }
        let names = Features::names();
        let width = names.len();
        let input = &card.input;
        if input.dtype != "float32" {
            return Err(schema(format!("input dtype {} (expected float32)", input.dtype)));
        }
        if input.shape.len() != 2 || input.shape[1] != Some(width as i64) {
            return Err(schema(format!("input shape {:?} (expected [N, {width}])", input.shape)));
        }
        if input.features != names {
            let at =
                input.features.iter().zip(&names).position(|(a, b)| a != b).unwrap_or(width.min(input.features.len()));
            return Err(schema(format!(
                "input features differ from this analyzer's at position {at}: model {:?}, analyzer {:?} ({} vs {width} features)",
                input.features.get(at),
                names.get(at),
                input.features.len()
            )));
        }
        if input.scaling.kind != "none" {
            return Err(schema(format!(
                "input scaling `{}` (this analyzer feeds the raw vector: none)",
                input.scaling.kind
            )));
        }
        let classes = map_classes(&card.output.classes)?;
        if card.output.label.dtype != "int64" || card.output.probabilities.dtype != "float32" {
            return Err(schema(format!(
                "outputs {} {} and {} {} (expected int64 and float32)",
                card.output.label.name,
                card.output.label.dtype,
                card.output.probabilities.name,
                card.output.probabilities.dtype
            )));
        }

        let model = {
            let framework = tract_onnx::onnx();
            let proto = framework
                .proto_model_for_read(&mut Cursor::new(bytes))
                .map_err(|e| ModelError::Onnx(format!("not an ONNX model: {e:#}")))?;
            check_graph(&proto, &card, width, classes.len())?;
            // The protobuf and the operator register go before the optimization allocates: a
            // lower peak of resident memory (the footprint's VmHWM).
            framework.model_for_proto_model(&proto).map_err(|e| onnx(format!("{e:#}")))?
        };
        let output_index = |name: &str| -> Result<usize, ModelError> {
            let outlets = model.output_outlets().map_err(onnx)?;
            outlets
                .iter()
                .position(|o| model.outlet_label(*o) == Some(name) || model.node(o.node).name == name)
                .ok_or_else(|| schema(format!("the graph has no output `{name}`")))
        };
        let label_output = output_index(&card.output.label.name)?;
        let probabilities_output = output_index(&card.output.probabilities.name)?;
        // One row per run: a concrete shape lets tract plan for it once.
        let plan = model
            .with_input_fact(0, f32::fact([1, width]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| onnx(format!("{e:#}")))?;
        let loaded =
            Model { sha256: actual, classes, plan, state: Mutex::new(None), label_output, probabilities_output, card };
        // A graph that loads but does not answer in the declared shape is refused now, not at the
        // first reading.
        loaded.infer(&vec![0.0; width])?;
        Ok(loaded)
    }

    /// Whether the model's features were computed over windows of `window_samples` readings, as
    /// the analyzer's are (`windowSamples`).
    pub fn check_window(&self, window_samples: usize) -> Result<(), ModelError> {
        let trained = self.card.input.window_samples;
        if trained == window_samples {
            Ok(())
        } else {
            Err(schema(format!(
                "model {} was trained on windows of {trained} readings, the analyzer's windowSamples is {window_samples}",
                self.card.version
            )))
        }
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The model's version (the card's `version`).
    pub fn version(&self) -> &str {
        &self.card.version
    }

    /// The model file's SHA-256, hex (checked against the card).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The classes, in output order.
    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// Runs the model on one feature vector ([`Features::vector`] as `f32`).
    pub fn infer(&self, features: &[f32]) -> Result<Prediction, ModelError> {
        let width = self.card.input.features.len();
        if features.len() != width {
            return Err(schema(format!("{} features given, the model takes {width}", features.len())));
        }
        let input = Tensor::from_shape(&[1, width], features).map_err(onnx)?;
        let reused = self.state.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut state = match reused {
            Some(state) => state,
            None => self.plan.spawn().map_err(|e| onnx(format!("{e:#}")))?,
        };
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.run(tvec!(input.into_tvalue()))))
            .map_err(|panic| onnx(format!("tract panicked: {}", panic_message(&panic))))?
            .map_err(|e| onnx(format!("{e:#}")))?;
        // Only a state whose run succeeded is kept: a failed run may have left values behind.
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
        let (Some(label), Some(probabilities)) =
            (outputs.get(self.label_output), outputs.get(self.probabilities_output))
        else {
            return Err(onnx(format!("{} outputs, expected the label and the probabilities", outputs.len())));
        };
        let label = label.cast_to::<i64>().map_err(onnx)?;
        let label = *label
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<i64>())
            .map_err(onnx)?
            .first()
            .ok_or_else(|| onnx("an empty label output"))?;
        let probabilities =
            probabilities.try_as_plain_ram().and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec)).map_err(onnx)?;
        if probabilities.len() != self.classes.len() {
            return Err(onnx(format!("{} probabilities for {} classes", probabilities.len(), self.classes.len())));
        }
        Ok(Prediction { label, probabilities })
    }
}

/// The message a panic carried, when it is text.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_owned(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    }
}

/// Checks what the ONNX graph itself declares against the card and the analyzer.
fn check_graph(proto: &pb::ModelProto, card: &ModelCard, width: usize, classes: usize) -> Result<(), ModelError> {
    let graph = proto.graph.as_ref().ok_or_else(|| onnx("the file holds no graph"))?;
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> =
        graph.input.iter().filter(|i| !initializers.contains(&i.name.as_str())).collect();
    let [input] = inputs.as_slice() else {
        return Err(schema(format!("the graph takes {} inputs (expected one, `{}`)", inputs.len(), card.input.name)));
    };
    if input.name != card.input.name {
        return Err(schema(format!("the graph's input is `{}`, the card's `{}`", input.name, card.input.name)));
    }
    match declared(input) {
        Some((ONNX_FLOAT, dims)) if dims.len() == 2 && dims[1] == Some(width as i64) => {}
        Some((ONNX_FLOAT, dims)) => {
            return Err(schema(format!(
                "the graph's input `{}` has shape {} (expected [N, {width}])",
                input.name,
                show_dims(&dims)
            )));
        }
        Some((other, _)) => {
            return Err(schema(format!(
                "the graph's input `{}` has element type {other} (expected float32)",
                input.name
            )));
        }
        None => return Err(schema(format!("the graph's input `{}` declares no tensor shape", input.name))),
    }
    let output = |name: &str| graph.output.iter().find(|o| o.name == name);
    let label = output(&card.output.label.name)
        .ok_or_else(|| schema(format!("the graph has no output `{}`", card.output.label.name)))?;
    let probabilities = output(&card.output.probabilities.name)
        .ok_or_else(|| schema(format!("the graph has no output `{}`", card.output.probabilities.name)))?;
    if !matches!(declared(label), Some((ONNX_INT64, _)) | None) {
        return Err(schema(format!("the graph's output `{}` is not int64", label.name)));
    }
    match declared(probabilities) {
        None => {}
        Some((ONNX_FLOAT, dims)) if dims.len() == 2 && dims[1].is_none_or(|d| d == classes as i64) => {}
        Some((_, dims)) => {
            return Err(schema(format!(
                "the graph's output `{}` is {} (expected float32 [N, {classes}])",
                probabilities.name,
                show_dims(&dims)
            )));
        }
    }
    Ok(())
}

fn show_dims(dims: &[Option<i64>]) -> String {
    let dims: Vec<String> = dims.iter().map(|d| d.map_or_else(|| "N".to_owned(), |d| d.to_string())).collect();
    format!("[{}]", dims.join(", "))
}

/// The model behind the [`Detector`] trait: every reading with a full window of a running pump
/// is classified; per anomaly class, a probability at or above `raiseScore` is `Raise` evidence,
/// at or above `sustainScore` `Sustain`, below that normal. The analyzer's hysteresis then
/// decides events, per detector, as for the rules.
#[derive(Debug)]
pub struct ModelDetector {
    model: Model,
    config: ModelConfig,
    /// Runs that failed (reported as inconclusive findings).
    failures: u64,
}

impl ModelDetector {
    /// A detector running `model` with `config`'s thresholds.
    pub fn new(model: Model, config: ModelConfig) -> Self {
        ModelDetector { model, config, failures: 0 }
    }

    /// The model it runs.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Inference runs that failed since it was created.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    fn kinds(&self) -> impl Iterator<Item = AnomalyKind> + '_ {
        self.model.classes.iter().filter_map(|c| *c)
    }

    fn inconclusive(&self, reason: &str) -> Vec<Finding> {
        self.kinds().map(|k| Finding::inconclusive(k, reason)).collect()
    }
}

impl Detector for ModelDetector {
    fn name(&self) -> &str {
        "model"
    }

    fn assess(&mut self, features: &Features, reading: &Reading) -> Vec<Finding> {
        // The model only saw full windows of a running pump; anything else is not its to judge.
        if !features.full {
            return self.inconclusive("window not full");
        }
        let min_speed = features.get(Measurement::SpeedRpm).min;
        if !reading.running || min_speed < self.config.min_running_rpm {
            return self.inconclusive("pump not running");
        }
        let vector: Vec<f32> = features.vector().into_iter().map(|x| x as f32).collect();
        let prediction = match self.model.infer(&vector) {
            Ok(p) => p,
            Err(e) => {
                self.failures += 1;
                return self.inconclusive(&format!("model {}: {e}", self.model.version()));
            }
        };
        let scores: BTreeMap<String, f64> = self
            .model
            .classes
            .iter()
            .zip(&prediction.probabilities)
            .map(|(c, p)| (format!("p.{}", class_name(*c)), f64::from(*p)))
            .collect();
        let mut findings = Vec::new();
        for (class, p) in self.model.classes.iter().zip(&prediction.probabilities) {
            let Some(kind) = *class else { continue };
            let p = f64::from(*p);
            let evidence = if p >= self.config.raise_score {
                Evidence::Raise
            } else if p >= self.config.sustain_score {
                Evidence::Sustain
            } else {
                continue;
            };
            let threshold =
                if evidence == Evidence::Raise { self.config.raise_score } else { self.config.sustain_score };
            findings.push(Finding {
                kind,
                evidence,
                severity: p,
                reason: format!(
                    "model {} {}: P({}) {p:.3} >= {threshold}",
                    self.model.card.name,
                    self.model.version(),
                    kind_name(kind)
                ),
                features: scores.clone(),
            });
        }
        findings
    }
}

#[cfg(test)]
pub(crate) mod tests;
